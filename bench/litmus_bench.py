"""Cost of ``pervma litmus`` on the kernel's litmus tests: per file the verdict,
agreement with its ``Result:`` line, candidate executions checked and CPU
seconds (best of N runs, default 3), then the totals per directory.

    python bench/litmus_bench.py                  # tests/litmus/{lkmm,doc,pervma,perfbook}
    python bench/litmus_bench.py --runs 5 FILE... # chosen files (or directories)

A file pervma cannot parse or run is listed with its one-line error (construct)
and counted apart; a ``Result:`` that is not a verdict (``Maybe``, ``Flag ...``)
or no ``Result:`` at all shows as ``-`` and is not checked.

Target (issue #17): the whole tools/memory-model/litmus-tests directory well
under 60 s of the test suite on two cores.  CPU time is ``time.process_time``
of this process, so other load on the machine does not count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pervma.litmus import parse_litmus, run_litmus
from pervma.litmus.syntax import LitmusError

HERE = Path(__file__).resolve().parent.parent / "tests" / "litmus"
DIRS = ("lkmm", "doc", "pervma", "perfbook")


def measure(path: Path, runs: int) -> tuple[str, str, bool, int, float]:
    lit = parse_litmus(path.read_text())
    best = float("inf")
    out = None
    for _ in range(runs):
        t0 = time.process_time()
        out = run_litmus(lit)
        best = min(best, time.process_time() - t0)
    assert out is not None
    expected = lit.expected or "-"
    if expected == "DEADLOCK":
        agree = out.positive == out.negative == 0
    else:
        agree = expected in ("-", out.verdict)
    return expected, out.verdict, agree, out.candidates, best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per file (default 3)")
    ap.add_argument("files", nargs="*", type=Path)
    args = ap.parse_args(argv)
    chosen: list[Path] = []
    for f in args.files:
        chosen += sorted(f.rglob("*.litmus")) if f.is_dir() else [f]
    groups = ({"chosen": chosen} if args.files else
              {d: sorted((HERE / d).rglob("*.litmus")) for d in DIRS})
    print(f"{'file':60} {'Result':>9} {'pervma':>9} {'cands':>7} {'CPU s':>7}")
    bad = 0
    for name, files in groups.items():
        total = 0.0
        cands = 0
        checked = agreed = failed = 0
        for f in files:
            try:
                expected, verdict, agree, n, cpu = measure(f, args.runs)
            except LitmusError as e:
                failed += 1
                print(f"{f.name[:60]:60} error: {e}")
                continue
            total += cpu
            cands += n
            bad += not agree
            checked += expected != "-"
            agreed += agree and expected != "-"
            mark = "" if agree else "  DISAGREES"
            print(f"{f.name[:60]:60} {expected:>9} {verdict:>9} {n:>7} {cpu:7.3f}{mark}")
        print(f"-- {name}: {len(files)} tests, {failed} not run (error), {checked} with a "
              f"verdict Result ({agreed} agree), {cands} candidate executions, "
              f"{total:.2f} s CPU (best of {args.runs} per test)\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
