"""The cost of exploring under LKMM against sequential consistency.

    python bench/lkmm_bench.py                      # the issue's three scenarios + B12's, legacy and universal
    python bench/lkmm_bench.py --preset universal --scenario fault-vs-munmap
    python bench/lkmm_bench.py --skip-slow          # leave out the runs that take minutes
    python bench/lkmm_bench.py --reference fault-vs-munmap:universal uffd-register-vs-fault:universal:B12

For each scenario and preset: ``pervma check`` (stateful DPOR) under
``--memory-model sc`` and ``lkmm``: executions + pruned, states stored, plans
of weak reads (lkmm), CPU seconds and the verdict, then B12 found under lkmm
and not under sc.  ``--reference SCENARIO:PRESET[:BUG...]`` compares the one
search that branches on each weak read (``check/lkmm.py``'s ``explore``) with
the plans explored one by one (``explore_plans``): both run to the end (no
stop at a violation) and must reach the same violations and final states.  CPU seconds (``time.process_time``) are the machine's
figures; the counts are the search's own.
"""

from __future__ import annotations

import argparse
import time

from pervma.check.api import find_bug, run_check

SCENARIOS = ("fault-vs-munmap", "detach-vs-transient-reader", "vma-reuse-by-another-mm",
             "uffd-register-vs-fault")
PRESETS = ("legacy", "universal")
#: Runs that take minutes under lkmm (left out with --skip-slow).
SLOW = {("vma-reuse-by-another-mm", "universal")}


def _row(name: str, preset: str, model: str, **kw: object) -> str:
    t = time.process_time()
    r = run_check(name, preset, memory_model=model, **kw)  # type: ignore[arg-type]
    cpu = time.process_time() - t
    plans = next((n.split("one search, ")[1].split(" branch")[0] for n in r.notes
                  if n.startswith("memory model lkmm: one search")), "-")
    verdict = ("VIOLATION" if r.violation else "complete, clean" if r.complete
               else "incomplete")
    return (f"{name:28} {preset:10} {model:5} {r.executions + r.pruned:>8} {r.states or 0:>8} "
            f"{plans:>6} {cpu:>8.2f}  {verdict}")


def reference(runs: list[str]) -> None:
    """The one search against the plans one by one, on each run given."""
    import functools

    from pervma.check import lkmm, stateful
    from pervma.check.differential import FinalStates
    from pervma.check.scenario import get_scenario
    from pervma.check.search import Budget, Stats
    from pervma.config import Config

    for arg in runs:
        name, preset, *bugs = arg.split(":")
        cells = []
        seen = []
        for how in (lkmm.explore, lkmm.explore_plans):
            runner = FinalStates(get_scenario(name), Config.preset(preset).with_bugs(*bugs))
            got: list = []
            t = time.process_time()
            st = how(runner, Budget(), Stats("dpor"),
                     search=functools.partial(stateful.explore_roots, collect=got))
            cpu = time.process_time() - t
            bad = {(r.violation.kind, r.violation.message) for r in got if r.violation}
            seen.append((bad, runner.finals, st.complete))
            cells.append(f"{st.executions + st.pruned:>8} runs {len(runner.finals):>4} finals "
                         f"{len(bad):>2} violations {cpu:>8.2f} CPU s")
        same = "same" if seen[0] == seen[1] else "DIFFERENT"
        print(f"{arg}\n  one search: {cells[0]}\n  plan by plan: {cells[1]}\n  -> {same}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", choices=PRESETS)
    ap.add_argument("--scenario", action="append", choices=SCENARIOS)
    ap.add_argument("--skip-slow", action="store_true")
    ap.add_argument("--reference", nargs="+", metavar="SCENARIO:PRESET[:BUG]")
    args = ap.parse_args()
    if args.reference:
        reference(args.reference)
        return
    print(f"{'scenario':28} {'preset':10} {'model':5} {'runs':>8} {'states':>8} {'branch':>6} "
          f"{'CPU s':>8}  verdict")
    for name in args.scenario or SCENARIOS:
        for preset in args.preset or PRESETS:
            for model in ("sc", "lkmm"):
                if model == "lkmm" and args.skip_slow and (name, preset) in SLOW:
                    print(f"{name:28} {preset:10} {model:5} (slow: skipped)")
                    continue
                print(_row(name, preset, model), flush=True)
    for model in ("sc", "lkmm"):
        t = time.process_time()
        r = find_bug("B12", memory_model=model)
        print(f"B12 under {model}: {'found' if r.violation else 'not found'} "
              f"({r.executions + r.pruned} runs, {time.process_time() - t:.2f} CPU s)")


if __name__ == "__main__":
    main()
