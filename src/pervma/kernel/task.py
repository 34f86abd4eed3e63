"""The model's task_struct: per-thread state the kernel keeps for ``current``.

Drivers see only :class:`pervma.sched.Task`; its ``model`` slot holds this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pervma.sched import current, running_slot, touch
from pervma.sched.locations import SIGNAL

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct

_running = running_slot()  # the driver's running-task stack: read here, never changed

@dataclass(eq=False, slots=True)
class HeldLock:
    """lockdep's struct held_lock, reduced: one lock the task holds (or is
    waiting for: lockdep records a lock before the wait for it)."""

    name: str  # lock class: "mmap_lock", "vm_lock", "ptl", ... (kernel/lockdep.py)
    obj: Any  # the lock instance (identity matters)
    mode: str  # "read" or "write"
    trylock: bool = False  # taken by a trylock: it added no dependency into itself
    # Where it was taken (lockdep's acquire_ip): the function and its caller;
    # two plain strings, the cheapest values for the state key to walk.
    site: str = ""
    caller: str = ""


class TaskIdent(int):
    """A task's names: its pid (the int it is), thread-group id and
    ``comm``.  Labels, not state: nothing the model does depends on their
    values but the order it keeps sets of tasks in (:class:`TaskSet`), and a
    task's identity is its task_struct, which the state key numbers in the
    order of the threads.  Hidden from the state key, so that threads that
    run the same code are interchangeable (the checker's symmetry reduction,
    :mod:`pervma.check.symmetry`).

    Equal and hashed by pid, as an int is: a task's signal location names it
    by this (:func:`signal_loc`), and locations are compared across
    executions (each has its own copy) and are hashed at every step the
    checker records (an int's hash is C's; a method's was a Python call at
    each of them)."""

    __statekey_hidden__ = True
    tgid: int
    comm: str

    def __new__(cls, pid: int, tgid: int, comm: str) -> TaskIdent:
        self = super().__new__(cls, pid)
        self.tgid = tgid
        self.comm = comm
        return self

    @property
    def pid(self) -> int:
        return int(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskIdent, (int(self), self.tgid, self.comm))

    def __repr__(self) -> str:
        return f"{self.comm}/{self.pid}"


@dataclass(eq=False, slots=True)
class TaskStruct:
    ident: TaskIdent
    mm: MmStruct | None
    system: Any = None
    rcu_depth: int = 0
    fatal_signal: bool = False  # a SIGKILL is pending
    exited: bool = False  # went through do_exit() (the thread ran exit(2))
    held: list[HeldLock] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.ident.pid

    @property
    def tgid(self) -> int:
        return self.ident.tgid

    @property
    def comm(self) -> str:
        return self.ident.comm

    @comm.setter
    def comm(self, name: str) -> None:
        self.ident.comm = name


class TaskSet(list[TaskStruct]):
    """A set of tasks (an rwsem's readers, RCU's readers, the readers a grace
    period waits for), kept in pid order so that the model walks it in the
    same order however it was built.  The kernel keeps a count or per-CPU
    state here, not an order: the state key walks it as a set
    (``__statekey_unordered__``), which is what lets two states that differ
    only in which of two interchangeable threads is which be one state."""

    __slots__ = ()
    __statekey_unordered__ = True

    def add(self, tsk: TaskStruct) -> None:
        """Insert ``tsk`` at its place in pid order."""
        i = len(self)
        pid = tsk.pid
        while i and self[i - 1].pid > pid:
            i -= 1
        self.insert(i, tsk)


def current_task_or_none() -> TaskStruct | None:
    """``current`` when a model thread runs, None when the harness itself
    calls into the model (a scenario's setup, its final checks)."""
    return _running[-1].model if _running else None


def current_task() -> TaskStruct:
    """The model's ``current``.  The model's most frequent call, so it reads
    the running task itself (what sched.current_model() returns), in one call."""
    model: TaskStruct | None = _running[-1].model if _running else None
    if model is None:
        current()  # raises outside a driver
        raise RuntimeError("model thread started without a task_struct (use Thread.start)")
    return model


def signal_loc(tsk: TaskStruct) -> tuple[str, TaskIdent]:
    """Where a fatal signal is delivered: the kill is a step on it.  The task
    is named by its :class:`TaskIdent` (equal by pid, hidden from the state
    key: a wait's location is not what tells two states apart)."""
    return (SIGNAL, tsk.ident)


def fatal_signal_pending(tsk: TaskStruct) -> bool:
    """A read of the signal state inside the step in progress (declared as a
    hidden access so that dependency tracking orders it with the kill)."""
    touch(signal_loc(tsk))
    return tsk.fatal_signal
