"""Primitive operations: what a model thread yields to its driver.

Every shared-memory step of the model is an ``await`` of one of these
awaitables: an :class:`Op` itself, describing the step it is *about* to take,
which it yields; the driver resumes the coroutine when it chooses, and only then
does the step take effect (the code between two ``await`` points runs
atomically with the step that precedes it).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass
from typing import Any

from pervma.sched.order import Order


class OpKind(enum.IntEnum):
    """What a step does to its shared location (dependency for DPOR)."""

    READ = 0
    WRITE = 1
    RMW = 2  # read-modify-write (atomics)
    ACQUIRE = 3  # lock acquire (may be a blocking step)
    RELEASE = 4  # lock release
    BLOCK = 5  # wait until ``enabled()`` holds (rcuwait, grace period, I/O)
    LOCAL = 6  # a timed step that touches nothing shared (work, for the simulator)
    # The read side of an rw_semaphore: an RMW of the lock word (a write for
    # the cache), but the read-side acquisitions and releases of one lock
    # commute with each other, so the checker's dependency treats them as
    # reads of the location (``commutes``): they race with the write side and
    # with observers, never with each other.
    ACQUIRE_SHARED = 7  # down_read(), down_read_trylock()
    RELEASE_SHARED = 8  # up_read()
    # A step whose outcome depends on every holder of a lock: a read of the
    # lock word (rwsem_is_locked()), or a waiter's step on an rw_semaphore
    # (handed the lock, it goes on; killed first, it leaves the queue and may
    # hand the lock on).  A read for the cache, a write for the checker's
    # dependency: it races with the read side's shared steps.
    OBSERVE = 9

    @property
    def writes(self) -> bool:
        """The step writes its location (what the cache sees)."""
        return self in _PHYSICAL_WRITES

    @property
    def dependency_writes(self) -> bool:
        """The checker's dependency: the step conflicts with every access of
        its location, reads included (else only with such steps).  The
        physical writes except the read side of an rw_semaphore, plus
        observers of a lock word."""
        return (self in _PHYSICAL_WRITES and self not in _SHARED) or self is OpKind.OBSERVE


_PHYSICAL_WRITES = frozenset({OpKind.WRITE, OpKind.RMW, OpKind.ACQUIRE, OpKind.RELEASE,
                              OpKind.ACQUIRE_SHARED, OpKind.RELEASE_SHARED})
_SHARED = frozenset({OpKind.ACQUIRE_SHARED, OpKind.RELEASE_SHARED})


class WaitKind(enum.IntEnum):
    """How a step waits when its ``enabled()`` is false (or, for a sleeping
    local step, while it runs): drivers that keep time charge and report a
    wait by it, never by the step's label."""

    NONE = 0  # not a waiting step
    SPIN = 1  # busy-waits on its CPU (spinlock)
    RWSEM_READ = 2  # a reader queued on an rw_semaphore
    RWSEM_WRITE = 3  # a writer queued on an rw_semaphore
    EVENT = 4  # sleeps until a condition holds (rcuwait, grace period, folio lock, wait queue)
    IO = 5  # sleeps for I/O


Location = Hashable


class StepCache:
    """Steps a model object makes once per call site and awaits at every use
    (a speed-up of the hot paths, ``VmAreaStruct.read_step``,
    ``Atomic._rmw``), by label in ``ops``.  What it holds is a function of
    the sites used so far, not of anything a thread will do, so it is hidden
    from the state key: otherwise a state where one site has already run and
    one where it has not yet would never meet.  (A plain class, not a dict
    subclass: the checker's copier copies it field by field in C.)"""

    __slots__ = ("ops",)
    __statekey_hidden__ = True

    def __init__(self) -> None:
        self.ops: dict[str, Op] = {}


@dataclass(slots=True)
class Op:
    """One primitive step.

    ``loc`` names the shared location (``("vm_refcnt", slot)``), ``None`` for a
    purely local step.  ``enabled`` is evaluated by the driver for blocking
    steps: a thread whose pending op is not enabled is not runnable.
    ``work`` names a cost for the timed simulator (``"clear_page"``,
    ``"trap"``...) and ``sleeps`` marks steps at which a non-preemptible kernel
    may switch (a real sleep: I/O, a blocked lock).  ``order`` is the memory
    ordering the kernel gives the access (ignored under sequential consistency);
    ``wait`` says how the step waits when it blocks or sleeps (:class:`WaitKind`).
    ``readers`` (a blocked ``RWSEM_WRITE`` step): how many readers own the
    rw_semaphore now, 0 when a writer owns it, as a spinning writer sees the
    owner field; a timed driver bounds the spin on a reader-owned lock by it.
    """

    kind: OpKind
    loc: Location | None
    label: str
    enabled: Callable[[], bool] | None = None
    work: str | None = None
    sleeps: bool = False
    also: Location | None = None  # a second location the same step touches
    user: bool = False  # taken in user mode (an access, or the entry of a trap/syscall)
    order: Order = Order.UNSPECIFIED  # the kernel's memory ordering of the step (sched/order.py)
    wait: WaitKind = WaitKind.NONE  # how the step waits when it blocks
    readers: Callable[[], int] | None = None  # an rwsem writer's wait: the readers owning it


    def is_enabled(self) -> bool:
        return self.enabled is None or self.enabled()

    def dependent(self, other: Op) -> bool:
        """Two ops conflict when they touch the same location and one writes.

        BLOCK ops read their location (the waited-for condition)."""
        if not (self.kind.dependency_writes or other.kind.dependency_writes):
            return False
        mine = (self.loc, self.also)
        return any(x is not None and (x == other.loc or x == other.also) for x in mine)

    def __await__(self) -> Generator[Op, Any, None]:
        """``await op`` yields the op to the driver and returns when it resumes."""
        yield self


def step(op: Op) -> Op:
    """``await step(op)`` takes the step ``op`` (an :class:`Op` is itself awaitable)."""
    return op


_READ, _WRITE, _RMW = OpKind.READ, OpKind.WRITE, OpKind.RMW
_ACQUIRE, _RELEASE, _BLOCK, _LOCAL = OpKind.ACQUIRE, OpKind.RELEASE, OpKind.BLOCK, OpKind.LOCAL
_SPIN, _EVENT = WaitKind.SPIN, WaitKind.EVENT


def read(loc: Location, label: str, order: Order = Order.UNSPECIFIED) -> Op:
    return Op(_READ, loc, label, order=order)


def write(loc: Location, label: str, order: Order = Order.UNSPECIFIED) -> Op:
    return Op(_WRITE, loc, label, order=order)


def rmw(loc: Location, label: str, order: Order = Order.UNSPECIFIED) -> Op:
    return Op(_RMW, loc, label, order=order)


def acquire(loc: Location, label: str, enabled: Callable[[], bool] | None = None,
            sleeps: bool = True, order: Order = Order.UNSPECIFIED) -> Op:
    """A lock acquisition; while ``enabled()`` is false it sleeps (``sleeps``)
    or spins."""
    return Op(_ACQUIRE, loc, label, enabled, None, sleeps, None, False, order,
              _EVENT if sleeps else _SPIN)


def release(loc: Location, label: str, order: Order = Order.UNSPECIFIED) -> Op:
    return Op(_RELEASE, loc, label, order=order)


def acquire_shared(loc: Location, label: str, order: Order = Order.UNSPECIFIED) -> Op:
    """A read-side acquisition of an rw_semaphore (the step that takes it or
    queues the reader; the wait, if any, is a later ``block`` step)."""
    return Op(OpKind.ACQUIRE_SHARED, loc, label, None, None, False, None, False, order,
              _SPIN)


def release_shared(loc: Location, label: str, order: Order = Order.UNSPECIFIED) -> Op:
    """A read-side release of an rw_semaphore."""
    return Op(OpKind.RELEASE_SHARED, loc, label, order=order)


def block(loc: Location | None, label: str, enabled: Callable[[], bool],
          work: str | None = None, also: Location | None = None,
          order: Order = Order.UNSPECIFIED, wait: WaitKind = WaitKind.EVENT,
          observe: bool = False, readers: Callable[[], int] | None = None) -> Op:
    """Wait until ``enabled()`` holds; ``observe``: a waiter on a lock whose
    step depends on every holder (``OpKind.OBSERVE``); ``readers``: see :class:`Op`."""
    return Op(OpKind.OBSERVE if observe else _BLOCK, loc, label, enabled, work, True, also, False,
              order, wait, readers)


def work(name: str, label: str | None = None) -> Op:
    """A step of local work: no shared location, a cost for the simulator.
    ``trap``, ``syscall`` and ``user`` work starts in user mode."""
    return Op(_LOCAL, None, label or name, None, name, False, None, name in USER_WORK)


USER_WORK = frozenset({"trap", "syscall", "user"})
