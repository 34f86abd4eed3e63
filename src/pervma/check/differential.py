"""The stateful search against the stateless one: what each reaches.

Both searches run to the end without stopping at the first violation (every
violating execution is collected) and record the key
(:func:`pervma.sched.statekey.state_key`) of every final state an execution
ends in.  The stateful search is sound when, on the same scenario and config,
it reports the same violations and the same set of final states as the
stateless one (``tests/check/test_stateful.py``; the whole matrix of kernel
scenarios x presets x bug switches: ``bench/stateful_bench.py --differential``).

Both share one dependency relation (the model's ``Op`` locations and the
effects the checker recovers), so they cannot show a dependency the model
fails to declare.  :func:`exhaustive` can: it enumerates every reachable state
of the same transition system with no partial-order reduction at all (a
depth-first search over state keys, replaying each state's path), so a final
state or violation it reaches and DPOR does not is a dependency DPOR was not
told about (``tests/check/test_exhaustive.py``; ``bench/stateful_bench.py
--exhaustive``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pervma.check import dpor, stateful
from pervma.check.engine import Execution, close_executor
from pervma.check.scenario import Scenario
from pervma.check.search import Budget, Runner, Stats
from pervma.check.symmetry import orbit_key
from pervma.config import Config
from pervma.sched.statekey import state_key


class FinalStates(Runner):
    """A runner whose executions record the key of every final state they end in."""

    def __init__(self, scenario: Scenario, cfg: Config) -> None:
        super().__init__(scenario, cfg)
        self.finals: set[int] = set()

    def execution(self, snapshots: bool = False) -> Execution:
        run = super().execution(snapshots)
        end = run.end
        finals = self.finals

        def recording_end() -> str:
            if run.violation is None and run.livelock is None and not run.runnable():
                finals.add(self.final_key(run))
            return end()

        run.end = recording_end  # type: ignore[method-assign]
        return run

    def final_key(self, run: Execution) -> int:
        """A final state's key; with groups of interchangeable threads, the
        same for every permutation of it (the stateful search reaches one
        state of each such orbit)."""
        groups = self._symmetry or ()
        return orbit_key(run.ex.tasks, groups) if groups else state_key(run.ex.tasks)


@dataclass
class Reached:
    """What one search reached: its statistics, every (kind, message) of a
    violation, and the keys of the final states."""

    stats: Stats
    violations: set[tuple[str, str]]
    finals: set[int]


def reached(scenario: Scenario, cfg: Config, stateless: bool, symmetric: bool = True) -> Reached:
    """Run one search over everything (no stop at a violation).  Final
    states are keyed up to permutations of interchangeable threads, and
    violations name each such thread by its group's first
    (:func:`violation_names`), whichever search runs: the stateless one
    and, with ``symmetric`` off, the stateful one reach every permutation,
    the stateful one with it on one of each."""
    runner = FinalStates(scenario, cfg)
    runner.symmetric = symmetric
    got: list[Execution] = []
    if stateless:
        st = dpor.explore(runner, Budget(), want=lambda run: True, collect=got,
                          collect_max=1 << 40)
    else:
        st = stateful.explore_roots(runner, Budget(), collect=got)
    names = violation_names(runner)
    violations = {(run.violation.kind, _renamed(run.violation.message, names))
                  for run in got if run.violation is not None}
    return Reached(st, violations, runner.finals)


def violation_names(runner: Runner) -> dict[str, str]:
    """Each interchangeable thread's name and pid, as a violation message
    names it (``comm`` and ``comm/pid``), to its group's first thread's."""
    run = runner.execution()
    models = [t.model for t in run.ex.tasks]
    close_executor(run.ex)
    out: dict[str, str] = {}
    for g in runner._symmetry or ():
        first = models[g[0]]
        for t in g:
            m = models[t]
            if m is None or first is None:
                continue
            out[f"{m.comm}/{m.pid}"] = f"{first.comm}/{first.pid}"
            out[m.comm] = first.comm
    return out


def _renamed(message: str, names: dict[str, str]) -> str:
    """``message`` with every interchangeable thread named as its group's
    first (longest names first: ``fault1/3`` before ``fault1``)."""
    if not names:
        return message
    pattern = re.compile("|".join(re.escape(k) for k in sorted(names, key=len, reverse=True)))
    return pattern.sub(lambda m: names[m.group(0)], message)


@dataclass
class Exhaustive:
    """What the search without reduction reached: every (kind, message) of
    a violation, the keys of the final states, the number of states, and
    whether it finished within its state budget."""

    violations: set[tuple[str, str]]
    finals: set[int]
    states: int
    complete: bool


def exhaustive(scenario: Scenario, cfg: Config, max_states: int | None = None) -> Exhaustive:
    """Every state reachable by the checker's transitions, with no
    partial-order reduction: from each new state every runnable thread is
    taken.  A violating execution is a leaf, as in the searches it checks; a
    state met again (a cycle included) is not expanded twice.  The budget is
    a count of states, so the same input gives the same answer."""
    runner = Runner(scenario, cfg)
    seen: set[int] = set()
    finals: set[int] = set()
    violations: set[tuple[str, str]] = set()
    todo: list[tuple[int, ...]] = [()]
    complete = True
    while todo:
        path = todo.pop()
        run = runner.execution()
        for t in path:
            run.take(t)
        if run.violation is not None or run.livelock is not None:
            run.end()
            if run.violation is not None:
                violations.add((run.violation.kind, run.violation.message))
            continue
        key = state_key(run.ex.tasks)
        if key in seen:
            close_executor(run.ex)
            continue
        if max_states is not None and len(seen) >= max_states:
            close_executor(run.ex)
            complete = False
            break
        seen.add(key)
        enabled = run.runnable()
        if not enabled:
            finals.add(key)
            run.end()
            if run.violation is not None:
                violations.add((run.violation.kind, run.violation.message))
            continue
        close_executor(run.ex)
        todo.extend(path + (t,) for t in reversed(enabled))
    return Exhaustive(violations, finals, len(seen), complete)
