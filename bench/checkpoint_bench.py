"""What building worlds once and keeping checkpoints save a search (issue #12).

    python bench/checkpoint_bench.py [--scenarios a,b] [--preset P] [--repeat N]

For each scenario, the stateful search (``pervma check``'s default) runs
three ways in this process: rebuilding the world and replaying every prefix
(``PERVMA_NO_TEMPLATE=1 PERVMA_NO_CHECKPOINT=1``: the search before this
work), with the world built once and copied (templates), and with templates
and checkpoints every ``checkpoint.EVERY`` levels (the default).  It prints
the CPU time of each (best of --repeat), the model steps taken (replays
included) and the copies made; the explored figures must be equal.

    python bench/checkpoint_bench.py --restore [--preset P] [--count N]

prints what one restore of a checkpoint costs with the drop of the execution
it gives (``Checkpoint.restore`` + ``Execution.drop``: a copy of the whole
execution, its threads' coroutines abandoned and the copy broken up), in µs
of CPU (median of 5 blocks of N), on states of the SPIN shapes reached by a
fixed schedule, and how many instances the copy made.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from pervma.check import checkpoint, stateful
from pervma.check.scenario import get_scenario
from pervma.check.search import Budget, Runner, Stats
from pervma.config import Config

MODES = (("rebuild+replay", {"PERVMA_NO_TEMPLATE": "1", "PERVMA_NO_CHECKPOINT": "1"}),
         ("template", {"PERVMA_NO_TEMPLATE": "0", "PERVMA_NO_CHECKPOINT": "1"}),
         ("template+checkpoints", {"PERVMA_NO_TEMPLATE": "0", "PERVMA_NO_CHECKPOINT": "0"}))


def one(name: str, preset: str, env: dict[str, str]) -> tuple[float, tuple[int, ...], int]:
    os.environ.update(env)
    r = Runner(get_scenario(name), Config.preset(preset))
    t = time.process_time()
    st = stateful.explore_roots(r, Budget(max_executions=10**9), Stats("dpor"))
    cpu = time.process_time() - t
    copies = r.template.copies if r.template is not None else 0
    return cpu, (st.executions, st.pruned, st.states), copies


RESTORE_STATES = (("spin-2f-m-r", 20), ("spin-3f-m-r", 20), ("spin-3f-m-r", 40))


def restore_table(preset: str, count: int) -> None:
    """µs of CPU per restore + drop on a few states."""
    print(f"== restore + drop of a checkpoint, preset {preset}: CPU µs, median of 5 x {count}")
    print(f"{'state':24} {'events':>6} {'instances':>9} {'µs':>7}")
    for name, steps in RESTORE_STATES:
        r = Runner(get_scenario(name), Config.preset(preset))
        run = r.execution()
        for _ in range(steps):  # a fixed schedule: the threads in turn
            en = run.runnable()
            if not en:
                break
            run.take(en[len(run.events) % len(en)])
        ck = r.save(run)
        if ck is None:
            raise SystemExit(f"checkpoint_bench: {name} could not be copied")
        probe = r.resume(ck)
        made = len(probe.owned or ())
        probe.drop()
        blocks = []
        for _ in range(5):
            t = time.process_time()
            for _ in range(count):
                r.resume(ck).drop()
            blocks.append((time.process_time() - t) / count * 1e6)
        print(f"{name + ' @' + str(steps):24} {len(run.events):6} {made:9} "
              f"{statistics.median(blocks):7.1f}")
        run.drop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default="spin-1f-m-r,spin-2f-m,vma-reuse-by-another-mm")
    ap.add_argument("--preset", default="universal")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--restore", action="store_true", help="the restore + drop table only")
    ap.add_argument("--count", type=int, default=2000, help="restores per block (--restore)")
    a = ap.parse_args()
    if a.restore:
        restore_table(a.preset, a.count)
        return
    print(f"checkpoint every {checkpoint.EVERY} levels; preset {a.preset}; best of {a.repeat}")
    print(f"{'scenario':28} {'mode':22} {'cpu s':>7} {'x':>5}  executions/pruned/states")
    for name in a.scenarios.split(","):
        base = None
        for label, env in MODES:
            runs = [one(name, a.preset, env) for _ in range(a.repeat)]
            cpu = min(c for c, _, _ in runs)
            figs = runs[0][1]
            base = base or cpu
            print(f"{name:28} {label:22} {cpu:7.2f} {base / cpu:5.2f}  {figs}")


if __name__ == "__main__":
    main()
