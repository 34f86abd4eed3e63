"""Model threads and the per-thread state drivers are allowed to see."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pervma.sched.ops import Op


class RunScope:
    """What a driver keeps for the model across the executions of one run.

    A checker run explores many executions, each from a fresh instance; some
    of the kernel's debug checks (lockdep's dependency graph) accumulate
    knowledge over all of them.  The driver owns one scope per run and hands
    it to every thread it starts (``Task.run``); model code reads it with
    :func:`run_scope`.  It is reporting data, never state: the state key
    does not walk it, so two executions still merge.  ``executions`` counts
    the executions started with it (the driver bumps it before each one's
    setup); ``data`` is the model's, by key.  ``replay`` is plain JSON data
    (dicts, lists, strings, ints) the model leaves for a later replay of the
    execution that reported a violation (the other chain of a lockdep
    inversion): a driver that saves a counterexample saves it too, and
    hands it back in the scope of the replay."""

    __slots__ = ("data", "executions", "replay")

    #: How the model combines what two scopes learnt, by ``data`` key: a
    #: function that adds the second's knowledge to the first's and returns
    #: True when together they report what neither did alone (two lockdep
    #: graphs whose union has a cycle).  Registered by model code.
    mergers: dict[str, Callable[[Any, Any], bool]] = {}

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.executions = 0
        self.replay: dict[str, Any] = {}

    def absorb(self, other: RunScope) -> bool:
        """Add what ``other`` learnt (a worker's scope) to this one; True when
        the union reports something neither scope did (see ``mergers``).  A
        driver that splits one run over processes calls it so that knowledge
        gathered in different workers still meets."""
        import copy

        clash = False
        for key, theirs in other.data.items():
            mine = self.data.get(key)
            merge = RunScope.mergers.get(key)
            if mine is None or merge is None:
                if mine is None:
                    self.data[key] = copy.deepcopy(theirs)
                continue
            clash |= merge(mine, theirs)
        return clash

    def copy(self) -> RunScope:
        import copy

        new = RunScope()
        new.data = copy.deepcopy(self.data)
        new.executions = self.executions
        new.replay = copy.deepcopy(self.replay)
        return new


class Violation(BaseException):  # noqa: N818 - it is raised, not handled, by model code
    """A broken rule found by model code (assertion, use-after-free, deadlock...).

    A ``BaseException`` so that no ``except Exception`` in model code can
    swallow it.  ``kind`` is a short tag (``"KASAN: use-after-free"``), ``message``
    the headline.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(eq=False)
class Task:
    """A model thread as drivers see it.

    ``preempt_count`` > 0 marks a non-preemptible region (spinlock, RCU read
    section on PREEMPT=n, irq-off): one-CPU drivers do not switch away there.
    ``model`` is the model's own per-thread state (its task_struct), opaque
    to drivers.
    """

    tid: int
    name: str
    coro: Coroutine[Any, Any, Any]
    pending: Op | None = None
    done: bool = False
    result: Any = None
    preempt_count: int = 0
    steps: int = 0
    model: Any = None
    cpu: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    run: RunScope | None = None  # the driver's run-level scope (not state)

    @property
    def preemptible(self) -> bool:
        return self.preempt_count == 0

    def runnable(self) -> bool:
        return not self.done and (self.pending is None or self.pending.is_enabled())


_current: list[Task] = []
_ambient: list[RunScope] = []
_touched: list[Hashable] = []
_tracking = [False]


class OutsideDriver(RuntimeError):
    """Model code ran with no driver running it: a bug in a driver or a
    test, or a dropped thread's coroutine being closed with no driver
    running, by the garbage collector or a driver's explicit close (its
    ``finally`` blocks, which unlock and leave RCU, have no task to run
    as)."""


def current() -> Task:
    """The model thread the driver is running now (like the kernel's ``current``)."""
    if not _current:
        raise OutsideDriver("model code called outside a driver")
    return _current[-1]


def has_current() -> bool:
    return bool(_current)


def running_slot() -> list[Task]:
    """The driver protocol's stack of running tasks (the top is ``current()``).

    A driver resumes a task with it on top: it pushes the task, sends, and
    pops (``Executor.step``).  A driver that resumes tasks in a tight loop may
    push once, replace the top (``slot[-1] = task``) before each resume, and
    pop when it stops."""
    return _current


def current_model() -> Any:
    """The running thread's ``model`` state, or None outside a driver (the
    fast path of the model's ``current``)."""
    return _current[-1].model if _current else None


def run_scope() -> RunScope | None:
    """The running thread's run-level scope (None: its driver keeps none)."""
    return _current[-1].run if _current else None


@contextmanager
def run_scope_active(scope: RunScope) -> Iterator[None]:
    """Threads the direct runner starts inside this block (a scenario's
    setup, built by a checker run) get ``scope`` unless given one."""
    _ambient.append(scope)
    try:
        yield
    finally:
        _ambient.pop()


def violation(kind: str, message: str) -> None:
    """The one primitive through which model code reports a broken rule."""
    raise Violation(kind, message)


def preempt_disable() -> None:
    """Enter a non-preemptible region (plain call: it touches nothing shared)."""
    (_current[-1] if _current else current()).preempt_count += 1


def preempt_enable() -> None:
    t = _current[-1] if _current else current()
    if t.preempt_count <= 0:
        violation("BUG", f"preempt_count underflow in {t.name}")
    t.preempt_count -= 1


def touch(loc: Hashable) -> None:
    """Declare a hidden write of the step in progress: an effect on a location
    the step's ``Op`` does not name (a slab free inside an RCU callback, an
    object recycled by an allocation, a page's counts).  Drivers that track
    dependencies turn recording on with :func:`track_touches` and take the
    locations with :func:`drain_touched` after each step."""
    if _tracking[0] and _current:
        _touched.append(loc)


class ReadOf:
    """A hidden read recorded by :func:`touch_read` (what :func:`drain_touched`
    returns for it, beside plain locations for hidden writes)."""

    __slots__ = ("loc",)

    def __init__(self, loc: Hashable) -> None:
        self.loc = loc

    def __repr__(self) -> str:
        return f"ReadOf({self.loc!r})"


def touch_read(loc: Hashable) -> None:
    """Declare a hidden read of the step in progress: state the step's ``Op``
    does not name but whose value decides what the step does (a reader
    entering or leaving an RCU read-side section decides which grace periods
    wait for it, and whether queued callbacks run now)."""
    if _tracking[0] and _current:
        _touched.append(ReadOf(loc))


def track_touches(on: bool) -> None:
    _tracking[0] = on
    _touched.clear()


def touches_recorded() -> bool:
    """Whether :func:`touch` records now (a driver that switched it on and
    did not switch it off again leaves it on for the next driver)."""
    return _tracking[0]


def drain_touched() -> list[Hashable]:
    out = list(_touched)
    _touched.clear()
    return out


_clock: list[Callable[[], float]] = []


def clock_ns() -> float:
    """The driver's time in ns (what the kernel reads as jiffies or
    sched_clock()), 0 where the driver keeps no time (the checker, the direct
    runner): there no timeout the model computes from it ever expires."""
    return _clock[-1]() if _clock else 0.0


@contextmanager
def clock_source(now: Callable[[], float]) -> Iterator[None]:
    """A timed driver gives the model its clock while it runs model code."""
    _clock.append(now)
    try:
        yield
    finally:
        _clock.pop()
