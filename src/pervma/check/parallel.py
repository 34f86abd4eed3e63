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
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Any

from pervma.check import dpor, strategies
from pervma.check.search import Budget, Runner, Stats
from pervma.config import Config


def _runner(name: str, cfg: Config) -> Runner:
    from pervma.check.scenario import get_scenario

    return Runner(get_scenario(name), cfg)


def _subtree(name: str, cfg: Config, root: Any, max_executions: int | None,
             time_limit: float | None, trace_stats: bool = False) -> Stats:
    st = dpor.explore(_runner(name, cfg), Budget(max_executions, time_limit),
                      Stats("dpor", trace_stats=trace_stats), root=root)
    st.notes = []
    return st


def _sample(name: str, cfg: Config, strategy: str, seed: int, depth: int, first: int,
            count: int, time_limit: float | None, trace_stats: bool = False) -> Stats:
    runner = _runner(name, cfg)
    budget = Budget(count, time_limit)
    stats = Stats(strategy, trace_stats=trace_stats)
    if strategy == "random":
        return strategies.explore_random(runner, budget, seed=seed, stats=stats, first=first)
    return strategies.explore_pct(runner, budget, seed=seed, depth=depth, stats=stats,
                                  first=first)


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
        for i, (root, part) in enumerate(zip(roots, parts, strict=True)):
            if i:
                reason = budget.exhausted(stats)
                if reason is not None:
                    stats.incomplete.append(reason)
                    break
            used = stats.executions + stats.pruned
            if cap is not None and used + part.executions + part.pruned > cap:
                dpor.explore(runner, budget, stats, root=root, restart=False)
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
        for part in parts:
            _absorb(stats, part)
            if stats.found is not None:
                break
        stats.notes = list(parts[0].notes)
        stats.notes.append(f"{len(chunks)} worker processes, executions "
                           + ", ".join(f"{a}..{a + c - 1}" for a, c in chunks))
    stats.stop_clock()
    return stats
