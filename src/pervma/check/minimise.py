"""Counterexample minimisation: fewest preemptions, then fewest steps.

The minimiser is bounded by a number of executions, never by wall time, so
the counterexample it returns is the same on every machine and under any load.

1. Iterative deepening over the preemption bound ``b = 0, 1, ...`` below the
   found schedule's count: the first bound at which a search meets a
   violation of the same kind wins (a preemption-bounded DPOR first, which is
   cheap but not exhaustive, then a bounded DFS over every schedule); among
   the first few such executions the shortest is kept.
2. Greedy trimming: drop one run of consecutive same-thread steps at a time
   and keep the cut when the schedule still fails the same way with no more
   preemptions and fewer steps; a pass over every run that shrinks nothing
   ends the phase.
3. Re-verification: the result is replayed strictly from a fresh instance;
   only a schedule that reproduces is returned.

Phase 1 may spend ``max_executions`` executions (explored and pruned ones
count), phase 2 as many replays; when phase 1's budget runs out, phase 2 trims
the schedule found, and :class:`Minimised` says that the preemption count may
not be the least.
"""

from __future__ import annotations

from dataclasses import dataclass

from pervma.check import dpor
from pervma.check.engine import Execution, replay
from pervma.check.search import Budget, Found, Runner, Stats
from pervma.check.strategies import _dfs_bounded

#: Executions each phase of one minimisation may spend.  Of the catalogue, B16
#: and B18 (found with 3 preemptions) reach it in phase 1 (searching every
#: schedule with at most 2 preemptions would take far more); the other bugs
#: need at most 38 in all (bugs.csv of the report lists the figure per run).
MINIMISE_EXECUTIONS = 1000


@dataclass(frozen=True, slots=True)
class Minimised:
    """What :func:`minimise` returns: the counterexample, the executions it
    spent and whether it stopped because the budget ran out."""

    found: Found
    executions: int
    cut: bool
    budget: int = MINIMISE_EXECUTIONS


def _blocks(schedule: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(schedule) + 1):
        if i == len(schedule) or schedule[i] != schedule[start]:
            out.append((start, i))
            start = i
    return out


def minimise(runner: Runner, found: Found,
             max_executions: int = MINIMISE_EXECUTIONS) -> Minimised:
    """Return the minimised counterexample (see the module docstring)."""
    kind = found.kind
    trims = 0
    spent = 0
    cut = False
    best = found

    def want(run: Execution) -> bool:
        return run.violation is not None and run.violation.kind == kind

    for b in range(found.preemptions):
        collected: list[Execution] = []
        # First a preemption-bounded DPOR (cheap, not exhaustive), then a
        # bounded DFS over every schedule (exhaustive for the bound).
        for search in ("dpor", "dfs"):
            left = max_executions - spent
            if left <= 0:
                cut = True
                break
            if collected:
                break
            stats = Stats("minimise")
            budget = Budget(max_executions=left)
            if search == "dpor":
                dpor.explore(runner, budget, stats, max_preemptions=b, want=want,
                             collect=collected, collect_max=12)
            else:
                _dfs_bounded(runner, b, budget, stats, want, collected, collect_max=12)
            spent += stats.executions + stats.pruned
            if not collected and budget.exhausted(stats) is not None:
                cut = True
                break
        if collected:
            r = min(collected, key=lambda r: (r.preemptions, len(r.schedule)))
            assert r.violation is not None
            best = Found(r.violation.kind, r.violation.message, list(r.schedule), r.preemptions,
                         found.seed)
            break
        if cut:
            break

    # Greedy trimming of whole same-thread runs, until a pass shrinks nothing.
    improved = True
    while improved:
        improved = False
        for a, z in reversed(_blocks(best.schedule)):
            if trims >= max_executions:
                cut = True
                break
            cand = best.schedule[:a] + best.schedule[z:]
            res = replay(runner.instance(), runner.cfg, cand, strict=False,
                         max_steps=runner.max_steps)
            spent += 1
            trims += 1
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
        return Minimised(found, spent, cut, max_executions)
    return Minimised(Found(res.violation.kind, res.violation.message, res.schedule,
                           res.preemptions, found.seed), spent, cut, max_executions)
