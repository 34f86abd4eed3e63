"""Cost of one state key (issue #12), the C walk against the Python one.

    python bench/statekey_bench.py                 # both tables
    python bench/statekey_bench.py --keys-only     # µs per key on a few states
    python bench/statekey_bench.py --run-only --scenario spin-2f-m --preset universal

First table: µs per key (CPU time, median of --blocks blocks of --repeat keys)
of ``pervma.sched._statekey.state_key`` and of the Python reference
``statekey._py_state_key`` on a few states reached by a fixed random schedule,
with the walk's size (rows; frames among them) and the ratio.

Second table: one stateful exploration
(``stateful.explore_roots(Runner(scenario, preset), Budget(N))``) per walk,
each in a fresh interpreter (``PERVMA_PURE_STATEKEY=1`` for the Python one):
states, executions, pruned, CPU seconds of the run, keys computed and the
CPU seconds spent computing them.  CPU times are ``time.process_time()``;
figures vary with the machine and its load, so nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

STATES = [("spin-2f-m-r", 0), ("spin-2f-m-r", 25), ("spin-2f-m-r", 200), ("spin-3f-m-r", 20),
          ("vma-reuse-by-another-mm", 20), ("fault-vs-munmap", 10)]


def _state(name: str, steps: int, preset: str) -> tuple[Any, int]:
    """The tasks of ``name`` after ``steps`` transitions of a fixed random
    schedule (fewer if it ends first), and the transitions taken."""
    from pervma.check.scenario import get_scenario
    from pervma.check.search import Runner
    from pervma.config import Config

    run = Runner(get_scenario(name), Config.preset(preset)).execution()
    rng = random.Random(7)
    taken = 0
    while taken < steps:
        enabled = run.runnable()
        if not enabled:
            break
        run.take(rng.choice(enabled))
        taken += 1
    return run, taken


def _us_per_key(fn: Callable[[Any], int], tasks: Any, repeat: int, blocks: int) -> float:
    times = []
    for _ in range(blocks):
        t0 = time.process_time()
        for _ in range(repeat):
            fn(tasks)
        times.append((time.process_time() - t0) / repeat)
    return statistics.median(times) * 1e6


def keys_table(preset: str, repeat: int, blocks: int) -> None:
    from pervma.sched import statekey

    if statekey._c is None:
        print("statekey_bench: the C walk is not available (not built, or "
              "PERVMA_PURE_STATEKEY=1)", file=sys.stderr)
        raise SystemExit(2)
    print(f"== µs per state key, preset {preset}: CPU, median of {blocks} x {repeat} keys")
    print(f"{'state':32} {'rows':>5} {'frames':>6} {'C µs':>8} {'Python µs':>10} {'ratio':>6}")
    for name, steps in STATES:
        run, taken = _state(name, steps, preset)
        tasks = run.ex.tasks
        assert statekey._c.state_key(tasks) == statekey._py_state_key(tasks)
        rows = statekey._rows(tasks)
        frames = sum(1 for r in rows if isinstance(r, tuple) and r
                     and type(r[0]).__name__ == "code")
        c = _us_per_key(statekey._c.state_key, tasks, repeat, blocks)
        py = _us_per_key(statekey._py_state_key, tasks, max(repeat // 8, 1), blocks)
        label = f"{name} @{taken}"
        print(f"{label:32} {len(rows):5} {frames:6} {c:8.1f} {py:10.1f} {py / c:6.1f}")


def _child(scenario: str, preset: str, max_executions: int) -> None:
    """One stateful exploration; a JSON line on stdout."""
    from pervma.check import stateful
    from pervma.check.scenario import get_scenario
    from pervma.check.search import Budget, Runner
    from pervma.config import Config
    from pervma.sched import statekey

    key = stateful.state_key
    spent = [0.0, 0]

    def timed(tasks: Any) -> int:
        t0 = time.process_time()
        k = key(tasks)
        spent[0] += time.process_time() - t0
        spent[1] += 1
        return k

    stateful.state_key = timed  # type: ignore[assignment]
    runner = Runner(get_scenario(scenario), Config.preset(preset))
    t0 = time.process_time()
    st = stateful.explore_roots(runner, Budget(max_executions))
    cpu = time.process_time() - t0
    print(json.dumps({"walk": statekey.IMPLEMENTATION, "complete": st.complete,
                      "states": st.states, "executions": st.executions, "pruned": st.pruned,
                      "cpu": cpu, "keys": spent[1], "key_cpu": spent[0]}))


def run_table(scenario: str, preset: str, max_executions: int) -> None:
    print(f"== stateful exploration of {scenario}, preset {preset}, "
          f"Budget({max_executions}): CPU seconds")
    print(f"{'walk':7} {'complete':>8} {'states':>7} {'executions':>10} {'pruned':>7} "
          f"{'cpu s':>7} {'keys':>7} {'key cpu s':>9} {'µs/key':>7}")
    for pure in (False, True):
        env = dict(os.environ)
        env.pop("PERVMA_PURE_STATEKEY", None)
        if pure:
            env["PERVMA_PURE_STATEKEY"] = "1"
        out = subprocess.run([sys.executable, __file__, "--child", "--scenario", scenario,
                              "--preset", preset, "--max-executions", str(max_executions)],
                             env=env, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"statekey_bench: the {'Python' if pure else 'C'} run failed:\n{out.stderr}",
                  file=sys.stderr)
            raise SystemExit(1)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        per = r["key_cpu"] / r["keys"] * 1e6 if r["keys"] else 0.0
        print(f"{r['walk']:7} {'yes' if r['complete'] else 'no':>8} {r['states']:7} "
              f"{r['executions']:10} {r['pruned']:7} {r['cpu']:7.2f} {r['keys']:7} "
              f"{r['key_cpu']:9.2f} {per:7.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="spin-2f-m", help="the stateful run's scenario")
    ap.add_argument("--preset", default="universal")
    ap.add_argument("--max-executions", type=int, default=400000)
    ap.add_argument("--repeat", type=int, default=400, help="C keys per block (default 400)")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--keys-only", action="store_true")
    ap.add_argument("--run-only", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from pervma.errors import PervmaError

    try:
        if args.child:
            _child(args.scenario, args.preset, args.max_executions)
            return 0
        if not args.run_only:
            keys_table(args.preset, max(args.repeat, 1), max(args.blocks, 1))
        if not args.keys_only:
            run_table(args.scenario, args.preset, args.max_executions)
    except PervmaError as exc:
        print(f"statekey_bench: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
