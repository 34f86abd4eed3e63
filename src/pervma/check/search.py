"""What every strategy shares: the budget, the statistics and a found violation."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pervma.check import checkpoint, template
from pervma.check.checkpoint import Checkpoint
from pervma.check.engine import DEFAULT_MAX_STEPS, Execution, close_executor
from pervma.check.scenario import Instance, Scenario
from pervma.check.template import Sharing, WorldTemplate
from pervma.config import Config
from pervma.sched import RunScope, run_scope_active


@dataclass(slots=True)
class Found:
    """A violating execution: the primitive-step schedule that reproduces it."""

    kind: str
    message: str
    schedule: list[int]
    preemptions: int
    seed: int | None = None
    # The run-level scope as it was when found (lockdep's graph holds the
    # other chain of an inversion): a run that found it in another process
    # adopts it, so that the counterexample replays here too.
    run: RunScope | None = None


@dataclass(slots=True)
class Stats:
    """Counters every run reports.

    ``executions`` counts maximal executions (run to the end, a violation,
    a deadlock or the livelock bound); ``pruned`` counts executions cut short
    because every runnable thread was in the sleep set (DPOR) or beyond the
    preemption bound (bounded).  Only with ``trace_stats`` does ``traces``
    hold one canonical key per distinct Mazurkiewicz trace among the
    executions (:meth:`Execution.trace_key`, a cost per execution that only
    the statistic needs); without it ``traces`` stays empty and ``distinct``
    and ``redundancy`` are None.
    """

    strategy: str
    executions: int = 0
    pruned: int = 0
    steps: int = 0
    trace_stats: bool = False
    traces: set[tuple[int, ...]] = field(default_factory=set)
    complete: bool = False
    incomplete: list[str] = field(default_factory=list)
    found: Found | None = None
    livelock: str | None = None
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    elapsed: float = 0.0
    max_depth: int = 0
    conservative: int = 0  # DPOR backtrack points added for a thread not runnable there
    states: int | None = None  # states stored (stateful search only)
    revisits: int = 0  # executions stopped at a stored state (stateful search only)
    variants: int = 0  # under LKMM: older writes a weak read was made to read (branches)

    @property
    def distinct(self) -> int | None:
        """Distinct Mazurkiewicz traces; None when not asked for."""
        return len(self.traces) if self.trace_stats else None

    @property
    def redundancy(self) -> float | None:
        """Executions per distinct trace; None when not asked for."""
        if not self.trace_stats:
            return None
        return self.executions / len(self.traces) if self.traces else 1.0

    def stop_clock(self) -> None:
        self.elapsed = time.perf_counter() - self.started


@dataclass(slots=True)
class Budget:
    """Limits of one run; hitting one makes the run incomplete.

    ``max_executions`` counts explored executions, pruned ones included: a
    run bounded by it explores the same executions on every machine.
    ``time_limit`` is only ever set by an explicit ``pervma check --time``:
    a run it cuts depends on the machine's speed and load."""

    max_executions: int | None = None
    time_limit: float | None = None
    progress: Callable[[Stats], None] | None = None
    every: int = 64  # executions (pruned ones included) between two calls of ``progress``
    _deadline: float | None = None

    def start(self) -> None:
        if self.time_limit is not None:
            self._deadline = time.perf_counter() + self.time_limit

    def exhausted(self, stats: Stats) -> str | None:
        if self.max_executions is not None and stats.executions + stats.pruned >= self.max_executions:
            return f"stopped at --max-executions {self.max_executions}"
        if self._deadline is not None and time.perf_counter() >= self._deadline:
            return f"stopped at --time {self.time_limit:g}s"
        return None

    def tick(self, stats: Stats) -> None:
        if self.progress is not None and (stats.executions + stats.pruned) % self.every == 0:
            self.progress(stats)


class Runner:
    """Builds fresh executions of one scenario under one config.

    ``scope`` is the run-level scope every instance shares, its setup
    included: what the model's debug checks learn across executions
    (lockdep's dependency graph), never part of a state."""

    def __init__(self, scenario: Scenario, cfg: Config) -> None:
        self.scenario = scenario
        self.cfg = cfg
        self.max_steps = scenario.max_steps or DEFAULT_MAX_STEPS
        self.scope = RunScope()
        self.template: WorldTemplate | None = None
        self._templated = not template.enabled()  # tried (or not to be tried)
        # Under LKMM (pervma.check.lkmm) every instance gets a memory layer
        # made by this factory; None: sequential consistency.
        self.memory: Callable[[], object] | None = None
        self.plan: dict[tuple[int, int], int] = {}  # the plan of the memory layer's choices
        # Whether the stateful search branches on the choices (else the plan is fixed).
        self.branch_weak = True
        # The scenario's groups of interchangeable threads (pervma.check.symmetry),
        # known once an instance is built; the stateful search keys states by
        # them unless ``symmetric`` is off.
        self.symmetric = True
        self._symmetry: tuple[tuple[int, ...], ...] | None = None
        self.thread_names: list[str] = []

    def instance(self) -> Instance:
        """A fresh instance: the scenario's world built once, then copied
        (:mod:`pervma.check.template`), or built every time when it cannot
        be copied."""
        self.scope.executions += 1
        with run_scope_active(self.scope):
            if self.template is not None:
                owned: list[object] = []
                inst = self.template.copy(owned).instance()
                inst.owned = owned
            else:
                inst = self.scenario.build(self.cfg)
                if not self._templated:
                    self._templated = True
                    if inst.world is not None:
                        # what copies of this run's worlds and executions share
                        sharing = Sharing((self.scope, self.cfg))
                        self.template = WorldTemplate.make(inst.world, sharing)
        inst.run = self.scope
        if self._symmetry is None:
            self._symmetry = inst.symmetry
            self.thread_names = list(inst.names)
        if self.memory is not None:
            inst.memory = self.memory()
        return inst

    @property
    def symmetry(self) -> tuple[tuple[int, ...], ...]:
        """The groups of interchangeable threads the stateful search may
        permute (none when ``symmetric`` is off)."""
        if not self.symmetric:
            return ()
        if self._symmetry is None:
            close_executor(self.execution().ex)  # built once: the groups are the scenario's
        assert self._symmetry is not None
        return self._symmetry

    @property
    def checkpoints(self) -> bool:
        """Whether searches may keep checkpoints of this runner's executions
        (:mod:`pervma.check.checkpoint`): when coroutines can be copied here,
        and not for a runner that wraps its executions (a subclass that
        overrides :meth:`execution` sees every execution it makes; a restored
        one would pass it by)."""
        return (checkpoint.enabled() and type(self).execution is Runner.execution
                and self.memory is None)  # a checkpoint does not copy the memory layer

    def save(self, run: Execution) -> Checkpoint | None:
        """A checkpoint of ``run`` (None if it cannot be copied).  Only an
        execution of a world the runner keeps a template of: such a world
        holds everything its run records (a kernel scenario's results and
        checks), while an instance without one (a toy) may record into
        objects outside it, which a copy would duplicate."""
        if self.template is None:
            return None
        return Checkpoint.save(run, self.template.sharing)

    def resume(self, ck: Checkpoint) -> Execution:
        """A live execution in the state ``ck`` saved: what :meth:`execution`
        and the saved prefix's steps would give, without taking them."""
        self.scope.executions += 1  # it counts as an execution of the run, as a replay would
        return ck.restore()

    def adopt(self, found: Found) -> None:
        """Continue with the scope a violation was found with (a worker's)."""
        if found.run is not None:
            self.scope = found.run

    def execution(self, snapshots: bool = False) -> Execution:
        return Execution(self.instance(), self.cfg, self.max_steps, snapshots)


def settle(stats: Stats, run: Execution, outcome: str, seed: int | None = None) -> None:
    """Account one finished execution."""
    stats.executions += 1
    stats.steps += len(run.schedule)
    if len(run.events) > stats.max_depth:
        stats.max_depth = len(run.events)
    if stats.trace_stats:
        stats.traces.add(run.trace_key())
    if outcome == "violation" and stats.found is None:
        v = run.violation
        assert v is not None
        stats.found = Found(v.kind, v.message, list(run.schedule), run.preemptions, seed,
                            run.inst.run)
    elif outcome == "livelock" and stats.livelock is None:
        assert run.livelock is not None
        name, steps = run.livelock
        stats.livelock = (f"{name} took more than {run.max_steps} steps in one execution "
                          f"(livelock bound {run.max_steps})")
