"""One check run spread over worker processes (``pervma check --jobs N``),
giving exactly the result of one process.

* DPOR: :func:`pervma.check.dpor.explore_roots` searches one subtree per
  runnable thread at the root, in order, sharing one budget.  Each worker
  searches one subtree with the whole budget; the parent then takes the
  subtrees in order as the single process would.  A subtree that would have
  crossed the budget where it stood in that order is searched again in the
  parent with the shared statistics, so the cut falls on the same execution.
  Subtrees after the first violation are dropped.
* Random walk and PCT: execution ``i`` is seeded by ``(seed, i)``
  (:func:`pervma.check.strategies.execution_rng`), so the ``N`` executions
  are cut into consecutive index ranges, one per worker; the parent takes
  the ranges in order and stops at the first violation.

Only the order of the results matters, never which worker finished first.

What the model's debug checks learn across executions (lockdep's graph, in
the run scope) is learnt per worker.  The parent adds the workers' scopes up
in the same order (``RunScope.absorb``); where a part's knowledge meets that of
the parts before it in a report neither made alone (an inversion whose two
orders fell in different workers), that part is searched again in the
parent, starting from the scope the single process would have had there, so
the report and its replay are the single process's.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Any

from pervma.check import dpor, strategies
from pervma.check.search import Budget, Runner, Stats
from pervma.config import Config
from pervma.sched import RunScope


def _runner(name: str, cfg: Config) -> Runner:
    from pervma.check.scenario import get_scenario

    return Runner(get_scenario(name), cfg)


def _subtree(name: str, cfg: Config, root: Any, max_executions: int | None,
             time_limit: float | None, trace_stats: bool = False) -> tuple[Stats, RunScope]:
    runner = _runner(name, cfg)
    st = dpor.explore(runner, Budget(max_executions, time_limit),
                      Stats("dpor", trace_stats=trace_stats), root=root)
    st.notes = []
    return st, runner.scope


def _sample_with(runner: Runner, strategy: str, seed: int, depth: int, first: int,
                 count: int, time_limit: float | None, stats: Stats) -> Stats:
    budget = Budget(count, time_limit)
    if strategy == "random":
        return strategies.explore_random(runner, budget, seed=seed, stats=stats, first=first)
    return strategies.explore_pct(runner, budget, seed=seed, depth=depth, stats=stats,
                                  first=first)


def _sample(name: str, cfg: Config, strategy: str, seed: int, depth: int, first: int,
            count: int, time_limit: float | None, trace_stats: bool = False
            ) -> tuple[Stats, RunScope]:
    runner = _runner(name, cfg)
    st = _sample_with(runner, strategy, seed, depth, first, count, time_limit,
                      Stats(strategy, trace_stats=trace_stats))
    return st, runner.scope


def _from(runner: Runner, scope: RunScope, stats: Stats) -> None:
    """Search the next part in the parent with the scope the single process
    would have had there."""
    runner.scope = scope
    scope.executions = stats.executions + stats.pruned


def _absorb(total: Stats, part: Stats) -> None:
    """Add a part searched on its own to the statistics of the whole."""
    total.executions += part.executions
    total.pruned += part.pruned
    total.steps += part.steps
    total.traces |= part.traces
    total.max_depth = max(total.max_depth, part.max_depth)
    total.conservative += part.conservative
    if total.found is None:
        total.found = part.found
    if total.livelock is None:
        total.livelock = part.livelock
    for reason in part.incomplete:
        if reason not in total.incomplete:
            total.incomplete.append(reason)


_CLASH_NOTE = ("a part was searched again in the parent: its lockdep graph and the ones "
               "before it closed a cycle neither closed alone")


def ranges(total: int, jobs: int) -> list[tuple[int, int]]:
    """``(first, count)`` of each worker's executions: consecutive, in order."""
    out = []
    first = 0
    for i in range(jobs):
        count = total // jobs + (1 if i < total % jobs else 0)
        if count:
            out.append((first, count))
        first += count
    return out


def explore(runner: Runner, budget: Budget, strategy: str, jobs: int, *, seed: int = 0,
            depth: int = 3, trace_stats: bool = False) -> Stats:
    """Run ``strategy`` (dpor, random or pct) over ``jobs`` processes; with
    ``trace_stats`` the parts also collect the distinct-trace keys."""
    name, cfg = runner.scenario.name, runner.cfg
    stats = Stats(strategy, trace_stats=trace_stats)
    if strategy == "dpor":
        roots = dpor.root_split(runner)
        if len(roots) <= 1:
            return dpor.explore_roots(runner, budget, stats, roots)
        with ProcessPoolExecutor(max_workers=min(jobs, len(roots))) as pool:
            futs = [pool.submit(_subtree, name, cfg, r, budget.max_executions, budget.time_limit,
                                trace_stats) for r in roots]
            parts = [f.result() for f in futs]
        budget.start()
        cap = budget.max_executions
        learnt = RunScope()  # the scope the single process would have after each part
        for i, (root, (part, scope)) in enumerate(zip(roots, parts, strict=True)):
            if i:
                reason = budget.exhausted(stats)
                if reason is not None:
                    stats.incomplete.append(reason)
                    break
            used = stats.executions + stats.pruned
            before = learnt.copy()
            clash = part.found is None and learnt.absorb(scope)
            if clash or (cap is not None and used + part.executions + part.pruned > cap):
                _from(runner, before, stats)
                dpor.explore(runner, budget, stats, root=root, restart=False)
                learnt = runner.scope.copy()
                if clash:
                    stats.notes.append(_CLASH_NOTE)
            else:
                _absorb(stats, part)
            if dpor.stopped(stats):
                break
        dpor.conservative_note(stats)
        stats.complete = not stats.incomplete
        stats.notes.append(f"DPOR split at the root over {len(roots)} subtrees (one per "
                           f"runnable thread), {min(jobs, len(roots))} worker processes")
    else:
        n = budget.max_executions if budget.max_executions is not None \
            else strategies.DEFAULT_SAMPLES
        chunks = ranges(n, jobs)
        with ProcessPoolExecutor(max_workers=len(chunks)) as pool:
            futs = [pool.submit(_sample, name, cfg, strategy, seed, depth, first, count,
                                budget.time_limit, trace_stats) for first, count in chunks]
            parts = [f.result() for f in futs]
        learnt = RunScope()
        for (first, count), (part, scope) in zip(chunks, parts, strict=True):
            before = learnt.copy()
            if part.found is None and learnt.absorb(scope):
                _from(runner, before, stats)
                again = _sample_with(runner, strategy, seed, depth, first, count,
                                     budget.time_limit, Stats(strategy, trace_stats=trace_stats))
                _absorb(stats, again)
                stats.notes.append(_CLASH_NOTE)
                learnt = runner.scope.copy()
            else:
                _absorb(stats, part)
            if stats.found is not None:
                break
        stats.notes = [*parts[0][0].notes, *(n for n in stats.notes if n == _CLASH_NOTE)]
        stats.notes.append(f"{len(chunks)} worker processes, executions "
                           + ", ".join(f"{a}..{a + c - 1}" for a, c in chunks))
    stats.stop_clock()
    return stats
