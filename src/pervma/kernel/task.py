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


@dataclass(eq=False, slots=True)
class TaskStruct:
    pid: int
    tgid: int
    comm: str
    mm: MmStruct | None
    system: Any = None
    rcu_depth: int = 0
    fatal_signal: bool = False  # a SIGKILL is pending
    held: list[HeldLock] = field(default_factory=list)


def current_task() -> TaskStruct:
    """The model's ``current``.  The model's most frequent call, so it reads
    the running task itself (what sched.current_model() returns), in one call."""
    model: TaskStruct | None = _running[-1].model if _running else None
    if model is None:
        current()  # raises outside a driver
        raise RuntimeError("model thread started without a task_struct (use Thread.start)")
    return model


def signal_loc(tsk: TaskStruct) -> tuple[str, int]:
    """Where a fatal signal is delivered: the kill is a step on it."""
    return (SIGNAL, tsk.pid)


def fatal_signal_pending(tsk: TaskStruct) -> bool:
    """A read of the signal state inside the step in progress (declared as a
    hidden access so that dependency tracking orders it with the kill)."""
    touch(signal_loc(tsk))
    return tsk.fatal_signal
