"""The cost of exploring under LKMM against sequential consistency.

    python bench/lkmm_bench.py                      # the issue's three scenarios + B12's, legacy and universal
    python bench/lkmm_bench.py --preset universal --scenario fault-vs-munmap
    python bench/lkmm_bench.py --skip-slow          # leave out the runs that take minutes

For each scenario and preset: ``pervma check`` (stateful DPOR) under
``--memory-model sc`` and ``lkmm``: executions + pruned, states stored, plans
of weak reads (lkmm), CPU seconds and the verdict, then B12 found under lkmm
and not under sc.  CPU seconds (``time.process_time``) are the machine's
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
SLOW = {("detach-vs-transient-reader", "universal"), ("vma-reuse-by-another-mm", "universal")}


def _row(name: str, preset: str, model: str, **kw: object) -> str:
    t = time.process_time()
    r = run_check(name, preset, memory_model=model, **kw)  # type: ignore[arg-type]
    cpu = time.process_time() - t
    plans = next((n.split(":")[1].split(" plan")[0].strip() for n in r.notes
                  if n.startswith("memory model lkmm")), "-")
    verdict = ("VIOLATION" if r.violation else "complete, clean" if r.complete
               else "incomplete")
    return (f"{name:28} {preset:10} {model:5} {r.executions + r.pruned:>8} {r.states or 0:>8} "
            f"{plans:>6} {cpu:>8.2f}  {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", choices=PRESETS)
    ap.add_argument("--scenario", action="append", choices=SCENARIOS)
    ap.add_argument("--skip-slow", action="store_true")
    args = ap.parse_args()
    print(f"{'scenario':28} {'preset':10} {'model':5} {'runs':>8} {'states':>8} {'plans':>6} "
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
