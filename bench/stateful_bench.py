"""The stateful search's own figures, and its whole soundness matrix.

    python bench/stateful_bench.py                 # states, executions, CPU per scenario, both searches
    python bench/stateful_bench.py --differential  # every kernel scenario of the test x preset x bug switch
    python bench/stateful_bench.py --exhaustive [--max-states N] [--bugs]  # DPOR against no reduction

Default: every scenario of ``pervma check --all`` under ``--preset`` (default
universal), stateful and stateless, complete runs: states stored, executions
+ pruned and CPU seconds of each.

``--differential``: ``fault-vs-munmap``, ``vma-reuse-by-another-mm`` and
``detach-vs-transient-reader`` x the four presets of the sweeps x {no bug,
each catalogued bug switch}, both searches run to the end without stopping at
a violation (``pervma.check.differential``): a row per run, ``OK`` when the
violations and the set of final states are the same, ``BAD`` otherwise (exit
1).  The test suite runs all of it but fourteen slow runs
(``tests/check/test_stateful.py``).

``--exhaustive``: every scenario of ``pervma check --all`` (with ``--bugs``,
also each catalogued bug switch) x the four presets, the stateless DPOR
against :func:`pervma.check.differential.exhaustive` -- every reachable state
of the same transitions with no partial-order reduction, up to
``--max-states`` (default 20,000) states.  Where the enumeration completes, a
final state or violation it reaches that DPOR does not is a dependency the
model does not declare: ``MISSED`` (exit 1).  ``cap`` rows are too big to
enumerate within the budget.
"""

from __future__ import annotations

import argparse
import sys
import time

from pervma.check.api import run_check
from pervma.check.catalogue import CATALOGUE
from pervma.check.differential import exhaustive, reached
from pervma.check.scenario import all_scenarios, get_scenario
from pervma.config import SWEEP_PRESETS, Config

KERNEL = ["fault-vs-munmap", "vma-reuse-by-another-mm", "detach-vs-transient-reader"]


def differential() -> int:
    bad = 0
    print(f"{'scenario':28} {'preset':24} {'bug':4} {'viol':>5} {'finals':>6} "
          f"{'stateless s':>11} {'stateful s':>10}  verdict")
    for name in KERNEL:
        sc = get_scenario(name)
        for preset in SWEEP_PRESETS:
            for bug in [None, *sorted(CATALOGUE)]:
                cfg = Config.preset(preset)
                if bug is not None:
                    cfg = cfg.with_bugs(bug)
                c0 = time.process_time()
                a = reached(sc, cfg, stateless=True)
                c1 = time.process_time()
                b = reached(sc, cfg, stateless=False)
                c2 = time.process_time()
                ok = (a.violations == b.violations and a.finals == b.finals
                      and a.stats.complete and b.stats.complete)
                bad += not ok
                print(f"{name:28} {preset:24} {bug or '-':4} {len(a.violations):5} "
                      f"{len(a.finals):6} {c1 - c0:11.2f} {c2 - c1:10.2f}  "
                      f"{'OK' if ok else 'BAD'}", flush=True)
    print(f"{'all OK' if not bad else f'{bad} BAD'}")
    return 1 if bad else 0


def exhaustive_sweep(max_states: int, bugs: bool) -> int:
    missed = 0
    print(f"{'scenario':36} {'preset':24} {'bug':4} {'states':>7} {'finals':>6} {'viol':>4} "
          f"{'s':>6}  verdict")
    for sc in all_scenarios():
        for preset in SWEEP_PRESETS:
            if preset not in sc.presets:
                continue
            for bug in [None, *(sorted(CATALOGUE) if bugs else [])]:
                cfg = Config.preset(preset)
                if bug is not None:
                    cfg = cfg.with_bugs(bug)
                c0 = time.process_time()
                e = exhaustive(sc, cfg, max_states)
                if not e.complete:
                    verdict = "cap"
                else:
                    r = reached(sc, cfg, stateless=True)
                    lost = len(e.finals - r.finals) + len(e.violations - r.violations)
                    verdict = "OK" if not lost else f"MISSED {lost}"
                    missed += bool(lost)
                    if lost:
                        for v in sorted(e.violations - r.violations):
                            print(f"    missed violation: {v[0]}: {v[1]}")
                print(f"{sc.name:36} {preset:24} {bug or '-':4} {e.states:7,} {len(e.finals):6} "
                      f"{len(e.violations):4} {time.process_time() - c0:6.1f}  {verdict}",
                      flush=True)
    print("no dependency missed" if not missed else f"{missed} run(s) MISSED")
    return 1 if missed else 0


def figures(preset: str) -> int:
    print(f"{'scenario':36} {'states':>8} {'stateful exec+pruned':>21} {'s':>6} "
          f"{'stateless exec+pruned':>22} {'s':>6}")
    for sc in all_scenarios():
        if preset not in sc.presets:
            continue
        c0 = time.process_time()
        a = run_check(sc.name, preset)
        c1 = time.process_time()
        b = run_check(sc.name, preset, stateless=True)
        c2 = time.process_time()
        print(f"{sc.name:36} {a.states or 0:8,} {a.executions + a.pruned:21,} {c1 - c0:6.2f} "
              f"{b.executions + b.pruned:22,} {c2 - c1:6.2f}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--differential", action="store_true")
    ap.add_argument("--exhaustive", action="store_true")
    ap.add_argument("--max-states", type=int, default=20_000)
    ap.add_argument("--bugs", action="store_true")
    ap.add_argument("--preset", default="universal", choices=SWEEP_PRESETS)
    args = ap.parse_args(argv)
    if args.exhaustive:
        return exhaustive_sweep(args.max_states, args.bugs)
    return differential() if args.differential else figures(args.preset)


if __name__ == "__main__":
    sys.exit(main())
