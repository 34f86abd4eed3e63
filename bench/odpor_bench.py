"""Source-DPOR (check/dpor.py) against Optimal-DPOR with wakeup trees
(check/odpor.py): executions, sleep-set-blocked ("pruned") executions and
wall seconds per scenario, each search capped at --cap executions + pruned.

    python bench/odpor_bench.py                      # every scenario of --all, preset universal
    python bench/odpor_bench.py --preset universal-up --only fault-vs-munmap,mmap-vs-fault
    python bench/odpor_bench.py --split              # the root split `pervma check` runs
    python bench/odpor_bench.py --json out.json

"same" says whether both searches found the same set of Mazurkiewicz traces
and the same verdict, when both are complete; else "+N/-M": N traces only
Optimal-DPOR explored, M only source-DPOR did.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from pervma.check import dpor, odpor
from pervma.check.scenario import all_scenarios, get_scenario
from pervma.check.search import Budget, Runner, Stats
from pervma.config import Config
from pervma.errors import PervmaError

Explore = Callable[[Runner, Budget], Stats]


def _run(fn: Explore, runner: Runner, cap: int) -> Stats:
    return fn(runner, Budget(max_executions=cap))


def bench(preset: str, names: list[str], cap: int, split: bool) -> list[dict[str, Any]]:
    cfg = Config.preset(preset)
    scenarios = [get_scenario(n) for n in names]
    plain: tuple[Explore, Explore] = (dpor.explore, odpor.explore)
    roots: tuple[Explore, Explore] = (dpor.explore_roots, odpor.explore_roots)
    fd, fo = roots if split else plain
    print(f"== source-DPOR vs Optimal-DPOR ({preset}, cap {cap:,} executions + pruned"
          f"{', root split' if split else ''})")
    print(f"{'scenario':34} {'dpor exec':>9} {'pruned':>7} {'s':>7}   {'odpor exec':>10} "
          f"{'pruned':>7} {'s':>7}  complete  same")
    rows = []
    for sc in scenarios:
        name = sc.name
        d = _run(fd, Runner(sc, cfg), cap)
        o = _run(fo, Runner(sc, cfg), cap)
        complete = d.complete and o.complete
        verdict = (d.found.kind if d.found else None) == (o.found.kind if o.found else None)
        extra, lost = len(o.traces - d.traces), len(d.traces - o.traces)
        same = ("-" if not complete else "yes" if not extra and not lost and verdict
                else f"+{extra}/-{lost}" + ("" if verdict else " verdict"))
        print(f"{name:34} {d.executions:9} {d.pruned:7} {d.elapsed:7.2f}   {o.executions:10} "
              f"{o.pruned:7} {o.elapsed:7.2f}  {'yes' if complete else 'no':8}  {same}",
              flush=True)
        rows.append(dict(scenario=name, preset=preset, dpor_executions=d.executions,
                         dpor_pruned=d.pruned, dpor_seconds=d.elapsed, dpor_complete=d.complete,
                         odpor_executions=o.executions, odpor_pruned=o.pruned,
                         odpor_seconds=o.elapsed, odpor_complete=o.complete,
                         distinct=o.distinct, same=same))
    tot = {k: sum(r[k] for r in rows) for k in ("dpor_executions", "dpor_pruned",
                                                "odpor_executions", "odpor_pruned")}
    print(f"{'total':34} {tot['dpor_executions']:9} {tot['dpor_pruned']:7} {'':7}   "
          f"{tot['odpor_executions']:10} {tot['odpor_pruned']:7}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--preset", default="universal")
    ap.add_argument("--cap", type=int, default=200_000,
                    help="executions + pruned per search (default 200,000)")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--split", action="store_true",
                    help="explore_roots (one subtree per runnable thread) instead of explore")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or [s.name for s in all_scenarios()]
    try:
        rows = bench(args.preset, names, args.cap, args.split)
    except PervmaError as exc:
        print(f"odpor_bench: {exc}", file=sys.stderr)
        return 2
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
