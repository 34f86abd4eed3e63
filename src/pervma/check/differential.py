"""The stateful search against the stateless one: what each reaches.

Both searches run to the end without stopping at the first violation (every
violating execution is collected) and record the key
(:func:`pervma.sched.statekey.state_key`) of every final state an execution
ends in.  The stateful search is sound when, on the same scenario and config,
it reports the same violations and the same set of final states as the
stateless one (``tests/check/test_stateful.py``; the whole matrix of kernel
scenarios x presets x bug switches: ``bench/stateful_bench.py --differential``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pervma.check import dpor, stateful
from pervma.check.engine import Execution
from pervma.check.scenario import Scenario
from pervma.check.search import Budget, Runner, Stats
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
                finals.add(state_key(run.ex.tasks))
            return end()

        run.end = recording_end  # type: ignore[method-assign]
        return run


@dataclass
class Reached:
    """What one search reached: its statistics, every (kind, message) of a
    violation, and the keys of the final states."""

    stats: Stats
    violations: set[tuple[str, str]]
    finals: set[int]


def reached(scenario: Scenario, cfg: Config, stateless: bool) -> Reached:
    """Run one search over everything (no stop at a violation)."""
    runner = FinalStates(scenario, cfg)
    got: list[Execution] = []
    if stateless:
        st = dpor.explore(runner, Budget(), want=lambda run: True, collect=got,
                          collect_max=1 << 40)
    else:
        st = stateful.explore_roots(runner, Budget(), collect=got)
    violations = {(run.violation.kind, run.violation.message)
                  for run in got if run.violation is not None}
    return Reached(st, violations, runner.finals)
