"""What building worlds once and keeping checkpoints save a search (issue #12).

    python bench/checkpoint_bench.py [--scenarios a,b] [--preset P] [--repeat N]

For each scenario, the stateful search (``pervma check``'s default) runs
three ways in this process: rebuilding the world and replaying every prefix
(``PERVMA_NO_TEMPLATE=1 PERVMA_NO_CHECKPOINT=1``: the search before this
work), with the world built once and copied (templates), and with templates
and checkpoints every ``checkpoint.EVERY`` levels (the default).  It prints
the CPU time of each (best of --repeat), the model steps taken (replays
included) and the copies made; the explored figures must be equal.
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default="spin-1f-m-r,spin-2f-m,vma-reuse-by-another-mm")
    ap.add_argument("--preset", default="universal")
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
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
