"""Counterexample minimisation: fewest preemptions, then fewest steps.

1. Iterative deepening over the preemption bound ``b = 0, 1, ...`` below the
   found schedule's count: the first bound at which a search meets a
   violation of the same kind wins (a preemption-bounded DPOR first, which is
   cheap but not exhaustive, then a bounded DFS over every schedule); among
   the first few such executions the shortest is kept.
2. Greedy trimming: drop one run of consecutive same-thread steps at a time
   and keep the cut when the schedule still fails the same way with no more
   preemptions and fewer steps.
3. Re-verification: the result is replayed strictly from a fresh instance;
   only a schedule that reproduces is returned.
"""

from __future__ import annotations

import time

from pervma.check import dpor
from pervma.check.engine import Execution, replay
from pervma.check.search import Budget, Found, Runner, Stats
from pervma.check.strategies import _dfs_bounded


def _blocks(schedule: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(schedule) + 1):
        if i == len(schedule) or schedule[i] != schedule[start]:
            out.append((start, i))
            start = i
    return out


def minimise(runner: Runner, found: Found, time_limit: float = 2.5,
             max_executions: int = 20000) -> tuple[Found, int]:
    """Return the minimised counterexample and the executions spent."""
    deadline = time.perf_counter() + time_limit
    kind = found.kind
    spent = 0
    best = found

    def want(run: Execution) -> bool:
        return run.violation is not None and run.violation.kind == kind

    for b in range(found.preemptions):
        collected: list[Execution] = []
        # First a preemption-bounded DPOR (cheap, not exhaustive), then a
        # bounded DFS over every schedule (exhaustive for the bound).
        for search in ("dpor", "dfs"):
            left = deadline - time.perf_counter()
            if left <= 0 or collected:
                break
            stats = Stats("minimise")
            budget = Budget(max_executions=max_executions, time_limit=left / (2 if search == "dpor" else 1))
            budget.start()
            if search == "dpor":
                dpor.explore(runner, budget, stats, max_preemptions=b, want=want,
                             collect=collected, collect_max=12)
            else:
                _dfs_bounded(runner, b, budget, stats, want, collected, collect_max=12)
            spent += stats.executions
        if collected:
            r = min(collected, key=lambda r: (r.preemptions, len(r.schedule)))
            assert r.violation is not None
            best = Found(r.violation.kind, r.violation.message, list(r.schedule), r.preemptions,
                         found.seed)
            break

    # Greedy trimming of whole same-thread runs.
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        for a, z in reversed(_blocks(best.schedule)):
            if time.perf_counter() >= deadline:
                break
            cand = best.schedule[:a] + best.schedule[z:]
            res = replay(runner.instance(), runner.cfg, cand, strict=False,
                         max_steps=runner.max_steps)
            spent += 1
            v = res.violation
            if (v is not None and v.kind == kind and res.preemptions <= best.preemptions
                    and len(res.schedule) < len(best.schedule)):
                best = Found(v.kind, v.message, res.schedule, res.preemptions, found.seed)
                improved = True
                break

    # Re-verify from scratch, strictly.
    res = replay(runner.instance(), runner.cfg, best.schedule, strict=True,
                 max_steps=runner.max_steps)
    spent += 1
    if res.violation is None or res.violation.kind != kind:
        return found, spent
    return Found(res.violation.kind, res.violation.message, res.schedule, res.preemptions,
                 found.seed), spent
