"""The non-DPOR strategies: preemption bounding, random walk and PCT.

* ``bounded``: stateless DFS over every schedule with at most ``b``
  preemptions (a switch away from a thread that could go on), for
  ``b = 0, 1, 2, ...`` (iterative deepening, CHESS).  Complete only when the
  last round cut no schedule at its bound.
* ``random``: each transition picks a runnable thread uniformly.  Seeded;
  never complete.
* ``pct``: Burckhardt et al.'s PCT(d): random distinct thread priorities and
  ``d-1`` priority-change points over ``k`` transitions; each execution finds
  a bug of depth ``d`` with probability at least ``1/(n*k^(d-1))``, printed
  as a note.  Seeded; never complete.

Random walk and PCT draw every execution from its own generator, seeded by
``(seed, index of the execution)``: execution ``i`` is the same whoever runs
it, so ``--jobs N`` can hand out ranges of indices and the combined run is the
one a single process makes.

All strategies run transitions through :class:`~pervma.check.engine.Execution`,
so on one-CPU presets they switch only where the model allows.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from pervma.check.engine import Execution
from pervma.check.search import Budget, Runner, Stats, settle


@dataclass(slots=True)
class _Choice:
    options: list[int]
    index: int
    preemptions_before: int


def _dfs_bounded(runner: Runner, bound: int, budget: Budget, stats: Stats,
                 want: Callable[[Execution], bool] | None = None,
                 collect: list[Execution] | None = None, collect_max: int = 0) -> tuple[bool, bool]:
    """One round: every schedule with at most ``bound`` preemptions.

    Returns ``(finished, cut)``: whether the round ended (not the budget) and
    whether any schedule was cut at the bound.  With ``want``, violating
    executions it accepts go to ``collect`` and the round stops after
    ``collect_max`` of them (minimisation); otherwise the first violation stops.
    """
    stack: list[_Choice] = []
    cut = False
    while True:
        run = runner.execution()
        for ch in stack:
            run.take(ch.options[ch.index])
        while True:
            ready = run.runnable()
            if not ready:
                break
            cur = run.cur
            # Non-preemptive choices first (stay on the running thread).
            if cur is not None and cur in ready:
                options = [cur] + [t for t in ready if t != cur]
                if run.preemptions >= bound:
                    if len(options) > 1:
                        cut = True
                    options = [cur]
            else:
                options = ready
            stack.append(_Choice(options, 0, run.preemptions))
            run.take(options[0])
        outcome = run.end()
        if want is not None:
            stats.executions += 1
            stats.steps += len(run.schedule)
            if outcome == "violation" and want(run):
                assert collect is not None
                collect.append(run)
                if len(collect) >= collect_max:
                    return False, cut
        else:
            settle(stats, run, outcome)
            if outcome == "livelock" and "livelock" not in stats.incomplete:
                stats.incomplete.append("livelock")
            if stats.found is not None:
                return False, cut
        budget.tick(stats)
        while stack and stack[-1].index + 1 >= len(stack[-1].options):
            stack.pop()
        if not stack:
            return True, cut
        stack[-1].index += 1
        if budget.exhausted(stats) is not None:
            return False, cut


def explore_bounded(runner: Runner, budget: Budget, max_bound: int = 3,
                    stats: Stats | None = None) -> Stats:
    stats = stats or Stats("bounded")
    budget.start()
    for b in range(max_bound + 1):
        finished, cut = _dfs_bounded(runner, b, budget, stats)
        if stats.found is not None:
            stats.incomplete.append("stopped at the first violation")
            break
        if not finished:
            stats.incomplete.append(budget.exhausted(stats) or "stopped")
            break
        stats.notes.append(f"preemption bound {b}: explored"
                           + ("" if cut else " (no schedule reached the bound: exhaustive)"))
        if not cut:
            break
    else:
        stats.incomplete.append(f"preemption bound {max_bound} reached (schedules with more "
                                "preemptions were not explored)")
    stats.complete = not stats.incomplete
    stats.stop_clock()
    return stats


#: Executions of a random or PCT run when no ``--max-executions`` is given.
DEFAULT_SAMPLES = 1000


def execution_rng(seed: int, index: int) -> random.Random:
    """The generator of execution ``index`` of a run seeded ``seed``."""
    return random.Random((seed << 32) ^ index)


def explore_random(runner: Runner, budget: Budget, seed: int = 0,
                   stats: Stats | None = None, first: int = 0) -> Stats:
    """Random walk over executions ``first, first + 1, ...`` until the budget."""
    stats = stats or Stats("random")
    budget.start()
    if budget.max_executions is None and budget.time_limit is None:
        budget.max_executions = DEFAULT_SAMPLES
    while budget.exhausted(stats) is None:
        rng = execution_rng(seed, first + stats.executions)
        run = runner.execution()
        while True:
            ready = run.runnable()
            if not ready:
                break
            run.take(ready[rng.randrange(len(ready))] if len(ready) > 1 else ready[0])
        outcome = run.end()
        settle(stats, run, outcome, seed)
        budget.tick(stats)
        if stats.found is not None:
            break
    stats.incomplete.append("random walk is a sample, never complete")
    stats.notes.append(f"seed {seed}")
    stats.complete = False
    stats.stop_clock()
    return stats


def pct_bound(n: int, k: int, d: int) -> float:
    """PCT's per-execution lower bound on finding a depth-``d`` bug."""
    return 1.0 / (n * k ** (d - 1))


def pct_k(runner: Runner) -> tuple[int, int]:
    """``(n, k)`` for PCT: threads, and transitions of the run without
    preemptions (the length PCT spreads its change points over)."""
    probe = runner.execution()
    while probe.runnable():
        ready = probe.runnable()
        probe.take(probe.cur if probe.cur in ready else ready[0])
    probe.end()
    return probe.n, max(1, len(probe.events))


def explore_pct(runner: Runner, budget: Budget, seed: int = 0, depth: int = 3,
                stats: Stats | None = None, first: int = 0) -> Stats:
    """PCT(d) over executions ``first, first + 1, ...`` until the budget.  ``k``
    is fixed by one run without preemptions, so every execution's priorities
    and change points depend only on its index."""
    stats = stats or Stats("pct")
    budget.start()
    if budget.max_executions is None and budget.time_limit is None:
        budget.max_executions = DEFAULT_SAMPLES
    n, k = pct_k(runner)
    while budget.exhausted(stats) is None:
        rng = execution_rng(seed, first + stats.executions)
        run = runner.execution()
        prio = list(range(depth, depth + n))
        rng.shuffle(prio)
        changes = {rng.randint(1, k): j for j in range(1, depth)}
        i = 0
        while True:
            ready = run.runnable()
            if not ready:
                break
            i += 1
            tid = max(ready, key=lambda t: prio[t])
            if i in changes:
                prio[tid] = depth - changes[i]
                tid = max(ready, key=lambda t: prio[t])
            run.take(tid)
        outcome = run.end()
        settle(stats, run, outcome, seed)
        budget.tick(stats)
        if stats.found is not None:
            break
    p = pct_bound(n, k, depth)
    stats.notes.append(f"PCT(d={depth}) with n={n} threads, k={k} transitions (the run without "
                       f"preemptions): each execution of about that length finds a depth-{depth} "
                       f"bug with probability >= 1/(n*k^(d-1)) = {p:.3g}; seed {seed}")
    stats.incomplete.append("PCT is a sample, never complete")
    stats.complete = False
    stats.stop_clock()
    return stats
