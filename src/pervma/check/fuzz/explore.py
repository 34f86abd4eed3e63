"""Explore one program: source-DPOR up to an execution budget, then PCT samples.

The program becomes a :class:`~pervma.check.scenario.Scenario` of its own (not
registered in the library) and goes through the checker's own searches: the
stateful DPOR of ``pervma check`` (:func:`pervma.check.stateful.explore_roots`)
bounded by ``dpor_executions``; if that does not finish the program's
interleavings, ``pct_executions`` PCT(3) samples (:func:`pervma.check.strategies.explore_pct`).
Every execution is judged by every check the model makes (lockdep, KASAN,
the VMA assertions, validate_mm at the end) and by the serial-order oracle.
A violation is minimised (:mod:`pervma.check.minimise`) and shown as the
checker's counterexample table.  Budgets are counts, never seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pervma.check import stateful, strategies
from pervma.check.engine import replay
from pervma.check.fuzz.coverage import CoverageRunner
from pervma.check.fuzz.oracle import OracleStats, SerialOracle
from pervma.check.fuzz.program import Program
from pervma.check.fuzz.world import FuzzWorld
from pervma.check.minimise import minimise as _minimise
from pervma.check.output import table
from pervma.check.scenario import Instance, Scenario
from pervma.check.search import Budget, Found, Runner, Stats
from pervma.config import Config
from pervma.sched import Violation

DPOR_EXECUTIONS = 1000
PCT_EXECUTIONS = 50


@dataclass
class ProgramResult:
    """What exploring one program gave."""

    executions: int = 0
    pruned: int = 0
    complete: bool = False  # DPOR explored every interleaving within its budget
    violation: tuple[str, str] | None = None
    counterexample: str = ""
    schedule: list[int] = field(default_factory=list)
    strategy: str = "dpor"
    oracle: OracleStats = field(default_factory=OracleStats)
    elapsed: float = 0.0
    coverage: set[tuple[str, bool, bool]] = field(default_factory=set)  # racing pairs (coverage.py)
    run_scope: dict[str, Any] = field(default_factory=dict)  # RunScope.replay of the violation

    def summary(self) -> str:
        state = ("VIOLATION" if self.violation else "complete, clean" if self.complete
                 else "clean (DPOR budget reached, then PCT samples)")
        o = self.oracle
        return (f"{state}; {self.executions} executions, {self.pruned} pruned; serial-order "
                f"oracle: {o.judged} judged, {o.skipped} skipped (overlapping non-atomic calls), "
                f"{o.undecided} undecided, {o.serial_runs} serial runs; "
                f"{len(self.coverage)} racing pairs; {self.elapsed:.2f}s")


def program_scenario(prog: Program, oracle: SerialOracle | None) -> Scenario:
    def build(cfg: Config) -> Instance:
        return FuzzWorld(prog, cfg).instance(oracle)

    return Scenario("program", "a generated program", build)


def explore_program(prog: Program, cfg: Config, *, dpor_executions: int = DPOR_EXECUTIONS,
                    pct_executions: int = PCT_EXECUTIONS, seed: int = 0,
                    minimise: bool = True, serial_oracle: bool = True) -> ProgramResult:
    """Explore ``prog`` under ``cfg`` (see the module docstring)."""
    t0 = time.perf_counter()
    oracle = SerialOracle(prog, cfg) if serial_oracle else None
    res = ProgramResult()
    runner = CoverageRunner(program_scenario(prog, oracle), cfg, res.coverage)
    try:
        stats = stateful.explore_roots(runner, Budget(max_executions=dpor_executions),
                                       Stats("dpor"))
        res.executions, res.pruned, res.complete = stats.executions, stats.pruned, stats.complete
        found = stats.found
        if found is None and not stats.complete and pct_executions > 0:
            res.strategy = "dpor+pct"
            pst = strategies.explore_pct(runner, Budget(max_executions=pct_executions), seed=seed,
                                         stats=Stats("pct"))
            res.executions += pst.executions
            found = pst.found
            if found is not None:
                res.strategy = "pct"
    except Violation as v:  # raised while the setup ran (the first build)
        res.violation = (str(v.kind), str(v.message))
        res.counterexample = f"BUG: {v.kind}: {v.message}\n(raised while the setup ran)"
        res.elapsed = time.perf_counter() - t0
        if oracle is not None:
            res.oracle = oracle.stats
        return res
    runner.flush()
    if found is not None:
        _show(res, runner, found, cfg, minimise)
    if oracle is not None:
        res.oracle = oracle.stats
    res.elapsed = time.perf_counter() - t0
    return res


def _show(res: ProgramResult, runner: Runner, found: Found, cfg: Config, minimise: bool) -> None:
    runner.adopt(found)
    if minimise:
        found = _minimise(runner, found).found
    rep = replay(runner.instance(), cfg, found.schedule, strict=True, snapshots=True,
                 max_steps=runner.max_steps)
    v = rep.violation
    kind, msg = (v.kind, v.message) if v is not None else (found.kind, found.message)
    res.violation = (str(kind), str(msg))
    res.schedule = list(rep.schedule)
    res.run_scope = dict(runner.scope.replay)  # e.g. lockdep's other chain, for a replay file
    res.counterexample = table(rep, [t.name for t in rep.ex.tasks], f"BUG: {kind}: {msg}",
                               f"generated program, preset {cfg.name}, {res.strategy}; "
                               f"{rep.preemptions} preemption(s), {len(rep.schedule)} steps")
