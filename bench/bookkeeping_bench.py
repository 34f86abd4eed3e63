"""Where the checker's time goes: the model against the engine's bookkeeping.

    python bench/bookkeeping_bench.py                    # the three default scenarios
    python bench/bookkeeping_bench.py --trace-stats      # also the distinct-trace keys
    python bench/bookkeeping_bench.py --scenarios fault-vs-munmap --max-executions 500

Runs each scenario's DPOR search (``dpor.explore_roots``, what ``pervma check``
runs) under cProfile and splits the profile's self time into

* model: ``src/pervma/kernel`` and ``src/pervma/sched`` (the steps themselves),
* bookkeeping: the engine's records of each transition (vector clocks in
  ``Execution._record``, the dependence and access helpers), DPOR's race
  analysis (``_races``, ``_reverse``, ``_blocked_rule``, ``_add``) and the
  distinct-trace keys (``Execution.trace_key``, ``search.settle``),
* driver: the rest of the engine and the search (``Execution.take``'s step
  loop, ``explore``'s stack and sleep sets),
* scenario: building each execution's world and the scenario bodies,
* other: everything else.

Builtins, comprehensions and generator expressions are charged to the
function that called them (by cProfile's per-caller time).  The ratio
bookkeeping/model is the bookkeeping cost per primitive step in units of the
model's own cost per step (issue #12's target: at most 2); eng/model counts
the driver in as well.  cProfile's
per-call overhead inflates small Python functions (the model's most of all),
so the same searches run a second time with timers instead of the profiler
(``--timers``): ``time.perf_counter_ns`` around the model's step
(``Executor.step``), the building of each execution (``Runner.execution``:
the scenario's world and the threads up to their first step) and the
bookkeeping entry points (``Execution._record``, ``Execution.trace_key``,
``dpor._races``, ``dpor._blocked_rule``, ``dpor.dependent``); the driver is
the rest of the search's wall time.  The wrappers' own cost, calibrated on an
empty function, is taken off.  The timers read the wall clock (a CPU
clock costs more per call than what it would time), so run this on a quiet
machine: the load average is printed with the tables.  Both tables print
per-step costs in microseconds and the ratio bookkeeping/model.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pervma.check import dpor
from pervma.check.scenario import get_scenario
from pervma.check.search import Budget, Runner, Stats
from pervma.config import Config

DEFAULT_SCENARIOS = ["vma-reuse-by-another-mm", "maps-reader-vs-munmap", "two-faults-vs-writer"]
CATEGORIES = ["model", "bookkeeping", "driver", "scenario", "other"]

PKG = Path(__import__("pervma").__file__).resolve().parent

BOOKKEEPING = {
    ("check/engine.py", name) for name in
    ("_record", "trace_key", "op_access", "dependent", "pending_access", "thread_clock",
     "last_dependent", "clock_of")
} | {
    ("check/dpor.py", name) for name in ("_races", "_reverse", "_blocked_rule", "_add")
} | {("check/search.py", "settle")}

Func = tuple[str, int, str]


def _own_category(func: Func) -> str | None:
    """The category of a function by its file, or None when it is charged to
    its callers (builtins, comprehensions, generated dataclass methods)."""
    path, _line, name = func
    if name.startswith("<") and name != "<module>":  # <genexpr>, <listcomp>, <lambda>
        return None
    try:
        rel = Path(path).resolve().relative_to(PKG).as_posix()
    except ValueError:
        return None if path in ("~", "<string>") else "other"
    if (rel, name) in BOOKKEEPING:
        return "bookkeeping"
    if rel.startswith(("kernel/", "sched/")):
        return "model"
    if rel.startswith("check/scenario"):
        return "scenario"
    if rel.startswith(("check/engine.py", "check/dpor.py", "check/search.py")):
        return "driver"
    return "other"


def split(st: pstats.Stats) -> tuple[dict[str, float], dict[str, float]]:
    """Self time per category, and per bookkeeping function."""
    raw: dict[Func, Any] = st.stats  # type: ignore[attr-defined]
    memo: dict[Func, dict[str, float]] = {}

    def shares(func: Func, depth: int = 0) -> dict[str, float]:
        """How ``func``'s self time divides over categories (fractions)."""
        if func in memo:
            return memo[func]
        own = _own_category(func)
        if own is not None:
            memo[func] = {own: 1.0}
            return memo[func]
        memo[func] = {"other": 1.0}  # a cycle through unclassified callers
        callers = raw[func][4] if func in raw else {}
        total = sum(c[2] for c in callers.values()) or sum(c[1] for c in callers.values())
        out: dict[str, float] = {}
        if depth < 20 and total > 0:
            for caller, c in callers.items():
                weight = (c[2] if sum(x[2] for x in callers.values()) else c[1]) / total
                for cat, f in shares(caller, depth + 1).items():
                    out[cat] = out.get(cat, 0.0) + weight * f
        memo[func] = out or {"other": 1.0}
        return memo[func]

    cats = dict.fromkeys(CATEGORIES, 0.0)
    per_fn: dict[str, float] = {}
    for func, (_cc, _nc, tt, _ct, callers) in raw.items():
        own = _own_category(func)
        if own is not None:
            cats[own] += tt
            if own == "bookkeeping":
                per_fn[func[2]] = per_fn.get(func[2], 0.0) + tt
            continue
        if not callers:  # a root of the profile (the profiler's own disable())
            cats["other"] += tt
            continue
        # Charged to callers: by each caller's share of this function's time.
        total = sum(c[2] for c in callers.values())
        for caller, c in callers.items():
            part = tt * (c[2] / total if total else 1.0 / len(callers))
            for cat, f in shares(caller).items():
                cats[cat] += part * f
                if cat == "bookkeeping":
                    name = caller[2] if _own_category(caller) == "bookkeeping" else "(nested)"
                    per_fn[name] = per_fn.get(name, 0.0) + part * f
    return cats, per_fn


def profile(scenario: str, preset: str, max_executions: int | None,
            make_stats: Callable[[], Stats]) -> tuple[Stats, pstats.Stats, float]:
    runner = Runner(get_scenario(scenario), Config.preset(preset))
    stats = make_stats()
    prof = cProfile.Profile()
    t0 = time.process_time()
    prof.enable()
    dpor.explore_roots(runner, Budget(max_executions=max_executions), stats)
    prof.disable()
    cpu = time.process_time() - t0
    return stats, pstats.Stats(prof), cpu


TIMED = {
    "model": [("pervma.sched.runner", "Executor", "step")],
    "setup": [("pervma.check.search", "Runner", "execution")],
    "bookkeeping": [("pervma.check.engine", "Execution", "_record"),
                    ("pervma.check.engine", "Execution", "trace_key"),
                    ("pervma.check.dpor", None, "_races"),
                    ("pervma.check.dpor", None, "_blocked_rule"),
                    ("pervma.check.dpor", None, "dependent")],
}


def _engine(t: dict[str, float]) -> float:
    """The whole engine (bookkeeping and driver) per unit of model time."""
    return (t["bookkeeping"] + t["driver"]) / (t["model"] or 1)


class _Timers:
    """Wall-clock time and calls per category of the wrapped functions; a
    call nested in another wrapped call counts for the outer one only."""

    def __init__(self) -> None:
        self.spent: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.depth = 0

    def wrap(self, cat: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        clock = time.perf_counter_ns
        self.spent.setdefault(cat, 0)
        self.calls.setdefault(cat, 0)

        def timed_fn(*a: Any, **kw: Any) -> Any:
            if self.depth:
                return fn(*a, **kw)
            self.depth = 1
            t0 = clock()
            try:
                return fn(*a, **kw)
            finally:
                self.spent[cat] += clock() - t0
                self.calls[cat] += 1
                self.depth = 0
        return timed_fn


def _overhead(n: int = 200_000) -> tuple[float, float]:
    """Seconds a wrapped call adds inside its timed region, and in all."""
    def noop() -> None:
        return None

    timers = _Timers()
    wrapped = timers.wrap("x", noop)
    t0 = time.perf_counter()
    for _ in range(n):
        noop()
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n):
        wrapped()
    full = time.perf_counter() - t0
    return timers.spent["x"] / 1e9 / n, max(full - plain, 0.0) / n


def timed(scenario: str, preset: str, max_executions: int | None,
          make_stats: Callable[[], Stats]) -> tuple[Stats, dict[str, float], float]:
    """The search with wall-clock counters around the :data:`TIMED` functions
    (seconds per category, less the counters' own calibrated cost; ``driver``
    is the rest of the wall time) and its whole CPU time."""
    import importlib

    timers = _Timers()
    saved: list[tuple[Any, str, Any]] = []
    for cat, names in TIMED.items():
        for mod_name, cls_name, attr in names:
            owner: Any = importlib.import_module(mod_name)
            if cls_name is not None:
                owner = getattr(owner, cls_name)
            fn = getattr(owner, attr, None)
            if fn is None:
                continue
            saved.append((owner, attr, fn))
            setattr(owner, attr, timers.wrap(cat, fn))
    try:
        runner = Runner(get_scenario(scenario), Config.preset(preset))
        stats = make_stats()
        t0, c0 = time.perf_counter(), time.process_time()
        dpor.explore_roots(runner, Budget(max_executions=max_executions), stats)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        for owner, attr, fn in reversed(saved):
            setattr(owner, attr, fn)
    inside, full = _overhead()
    out = {cat: max(ns / 1e9 - timers.calls[cat] * inside, 0.0)
           for cat, ns in timers.spent.items()}
    wall = max(wall - sum(timers.calls.values()) * full, 0.0)
    out["driver"] = max(wall - sum(out.values()), 0.0)
    out["wall"] = wall
    return stats, out, cpu


def print_timers(names: list[str], preset: str, max_executions: int | None,
                 make_stats: Callable[[], Stats]) -> None:
    cats = ["model", "bookkeeping", "driver", "setup"]
    print(f"== timers (no profiler), dpor, preset {preset}; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    head = (f"{'scenario':26} {'steps':>8} " + " ".join(f"{c:>11}" for c in cats)
            + f" {'bk us/step':>10} {'model us/st':>11} {'bk/model':>8} {'eng/model':>9} {'wall s':>6} {'cpu s':>6}")
    print(head)
    print("-" * len(head))
    tot = dict.fromkeys(cats, 0.0)
    steps_total = 0
    for name in names:
        stats, t, cpu = timed(name, preset, max_executions, make_stats)
        steps = max(stats.steps, 1)
        steps_total += stats.steps
        for c in cats:
            tot[c] += t[c]
        print(f"{name:26} {stats.steps:8} "
              + " ".join(f"{t[c]:6.2f}s{100 * t[c] / (t['wall'] or 1):3.0f}%" for c in cats)
              + f" {1e6 * t['bookkeeping'] / steps:10.2f} {1e6 * t['model'] / steps:11.2f}"
              f" {t['bookkeeping'] / (t['model'] or 1):8.2f} {_engine(t):9.2f}"
              f" {t['wall']:6.2f} {cpu:6.2f}",
              flush=True)
    print("-" * len(head))
    all_cpu = sum(tot.values()) or 1.0
    print(f"{'all':26} {steps_total:8} "
          + " ".join(f"{tot[c]:6.2f}s{100 * tot[c] / all_cpu:3.0f}%" for c in cats)
          + f" {1e6 * tot['bookkeeping'] / max(steps_total, 1):10.2f}"
          f" {1e6 * tot['model'] / max(steps_total, 1):11.2f}"
          f" {tot['bookkeeping'] / (tot['model'] or 1):8.2f} {_engine(tot):9.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS))
    ap.add_argument("--preset", default="universal")
    ap.add_argument("--max-executions", type=int, default=None,
                    help="cap each search at N executions + pruned (default: complete)")
    ap.add_argument("--trace-stats", action="store_true",
                    help="also compute the distinct-trace statistic")
    ap.add_argument("--only", choices=("profile", "timers"), default=None,
                    help="only the cProfile split or only the timers (default: both)")
    args = ap.parse_args(argv)
    names = args.scenarios.split(",")

    def make_stats() -> Stats:
        try:
            return Stats("dpor", trace_stats=args.trace_stats)  # type: ignore[call-arg]
        except TypeError:  # the Stats of before --trace-stats: always computed
            return Stats("dpor")

    if args.only != "timers":
        print_profile(names, args.preset, args.max_executions, make_stats, args.trace_stats)
    if args.only != "profile":
        print_timers(names, args.preset, args.max_executions, make_stats)
    return 0


def print_profile(names: list[str], preset: str, max_executions: int | None,
                  make_stats: Callable[[], Stats], trace_stats: bool) -> None:
    print(f"== self time under cProfile, dpor, preset {preset}"
          + (", with trace statistics" if trace_stats else "") + "; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    head = (f"{'scenario':26} {'exec':>6} {'pruned':>6} {'steps':>8} "
            + " ".join(f"{c:>11}" for c in CATEGORIES)
            + f" {'bk us/step':>10} {'model us/st':>11} {'bk/model':>8} {'eng/model':>9} {'cpu s':>6}")
    print(head)
    print("-" * len(head))
    totals = dict.fromkeys(CATEGORIES, 0.0)
    fns_total: dict[str, float] = {}
    steps_total = 0
    for name in names:
        stats, st, cpu = profile(name, preset, max_executions, make_stats)
        cats, fns = split(st)
        all_self = sum(cats.values()) or 1.0
        steps = stats.steps or 1
        steps_total += stats.steps
        for c in CATEGORIES:
            totals[c] += cats[c]
        for f, t in fns.items():
            fns_total[f] = fns_total.get(f, 0.0) + t
        print(f"{name:26} {stats.executions:6} {stats.pruned:6} {stats.steps:8} "
              + " ".join(f"{cats[c]:6.2f}s{100 * cats[c] / all_self:3.0f}%" for c in CATEGORIES)
              + f" {1e6 * cats['bookkeeping'] / steps:10.2f} {1e6 * cats['model'] / steps:11.2f}"
              f" {cats['bookkeeping'] / (cats['model'] or 1):8.2f} {_engine(cats):9.2f}"
              f" {cpu:6.2f}", flush=True)
    all_self = sum(totals.values()) or 1.0
    print("-" * len(head))
    print(f"{'all':26} {'':6} {'':6} {steps_total:8} "
          + " ".join(f"{totals[c]:6.2f}s{100 * totals[c] / all_self:3.0f}%" for c in CATEGORIES)
          + f" {1e6 * totals['bookkeeping'] / max(steps_total, 1):10.2f}"
          f" {1e6 * totals['model'] / max(steps_total, 1):11.2f}"
          f" {totals['bookkeeping'] / (totals['model'] or 1):8.2f} {_engine(totals):9.2f}")
    print("bookkeeping by function (profiled self time, s): "
          + ", ".join(f"{f} {t:.2f}" for f, t in sorted(fns_total.items(), key=lambda x: -x[1])))
    print("cpu s: the profiled search's CPU time")


if __name__ == "__main__":
    raise SystemExit(main())
