"""Coverage of a program's exploration (issue #15 item 3, a start): the racing
step pairs the executions contained, by the locations they race on.

A race is what DPOR reverses: an event ``c`` of one thread that an event ``i``
of another depends on directly, with nothing ordering ``c`` before ``i``'s
thread's previous event (the rule of :func:`pervma.check.dpor._races`, read off
each finished execution's events).  A pair is named by the shared location's
kind (``"vm_refcnt"``, ``"mmap_lock"``, ``"pte"``, ...) and whether each side
writes it, so that it means the same in every program; the set is what a
program adds to a campaign's coverage.  :class:`CoverageRunner` collects it
from every execution a search makes (the searches all take their executions
from ``Runner.execution``); it lives beside the runner, never in a model
thread's reach, so the stateful search's states do not grow with it.
"""

from __future__ import annotations

from collections.abc import Hashable

from pervma.check.engine import Execution
from pervma.check.scenario import Scenario
from pervma.check.search import Runner
from pervma.config import Config

Pair = tuple[str, bool, bool]


def _kind(loc: Hashable) -> str:
    return str(loc[0]) if isinstance(loc, tuple) and loc else str(loc)


def races(run: Execution) -> set[Pair]:
    """The directly racing pairs of one finished execution."""
    events = run.events
    out: set[Pair] = set()
    for e in events:
        deps = e.deps
        if not deps:
            continue
        order = sorted(set(deps))
        pc, tid = e.pclock, e.tid
        for k, c in enumerate(order):
            ec = events[c]
            t0, s0 = ec.tid, ec.seq
            if t0 == tid or pc[t0] >= s0:
                continue
            if any(events[c2].clock[t0] >= s0 for c2 in order[k + 1:]):
                continue
            for loc, wc in ec.acc.items():
                wi = e.acc.get(loc)
                if wi is not None and (wc or wi):
                    out.add((_kind(loc), bool(wc), bool(wi)))
    return out


class CoverageRunner(Runner):
    """A :class:`Runner` that folds every finished execution's races into ``cover``."""

    def __init__(self, scenario: Scenario, cfg: Config, cover: set[Pair]) -> None:
        super().__init__(scenario, cfg)
        self.cover = cover
        self._last: Execution | None = None

    def execution(self, snapshots: bool = False) -> Execution:
        self.flush()
        run = super().execution(snapshots)
        self._last = run
        return run

    def flush(self) -> None:
        """Account the last execution (the searches end it before asking for the next)."""
        if self._last is not None:
            self.cover |= races(self._last)
            self._last = None
