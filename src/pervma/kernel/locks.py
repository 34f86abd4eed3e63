"""spinlock_t, rw_semaphore and rcuwait.

Orderings (Linux 7.0): taking a lock is an acquire and dropping it a
release (kernel/locking/spinlock.c, rwsem.c: the rwsem fast paths are
atomic_long_try_cmpxchg_acquire() and atomic_long_add_return_release(); a
waiter handed the lock acquires it).  rcuwait (include/linux/rcuwait.h,
kernel/exit.c): the waiter's condition check follows set_current_state()'s
full barrier, the waker's smp_mb() precedes its load of the waiting task.

The rw_semaphore follows kernel/locking/rwsem.c (Linux 6.18).  A new reader
queues behind any waiter.  A release hands the lock to readers at the head of
the wait list (all queued readers at once: rwsem_mark_wake() is phase-fair),
but only *wakes* a writer there: until the woken writer runs and takes the
free lock, a writer (the slow path's first rwsem_try_write_lock(), or an
optimistic spinner) or a reader (rwsem_down_read_slowpath()'s optimistic
steal, when no other reader owns the lock) may steal it, and the woken writer
sleeps again.  A writer at the head that has waited RWSEM_WAIT_TIMEOUT (4 ms
of the driver's clock, :func:`pervma.sched.clock_ns`; drivers without a clock
never time out) sets the handoff bit, which stops stealing, and the next
release lets it in.  The optimistic spinning itself is the timed driver's
(pervma.sim.driver).

The read side commutes where it can: the kernel keeps a count of readers,
not who came first, so the model keeps its readers in pid order, and readers
queued one after another in pid order too (they are granted together,
whatever their order).  The fast paths (no writer, no waiter) and ``up_read``
are of the shared kinds (``OpKind.ACQUIRE_SHARED``, ``RELEASE_SHARED``) that
the checker does not count as racing each other: what they do depends on the
write side only (no reader is ever left at the head of the queue of a lock no
writer owns, so a release by a reader never changes the queue).  The read
slow path is a step of its own, an RMW that races every step on the lock:
whether a reader steals or queues depends on the other readers.  A waiter's
step is not shared either: granted or woken, it goes on; killed first, it
leaves the queue and may wake the next (``OpKind.OBSERVE``: it races them
all).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from pervma.kernel import debug
from pervma.kernel.task import TaskSet, TaskStruct, current_task, fatal_signal_pending, signal_loc
from pervma.sched import (
    WaitKind,
    acquire,
    acquire_shared,
    block,
    clock_ns,
    preempt_disable,
    preempt_enable,
    read,
    release,
    release_shared,
    rmw,
)
from pervma.sched.order import Order


class SpinLock:
    """spinlock_t: acquiring disables preemption; waiting is busy (not a sleep)."""

    __slots__ = ("_lock_op", "_unlock_op", "loc", "name", "owner")

    def __init__(self, loc: Hashable, name: str = "spinlock") -> None:
        self.loc = loc
        self.name = name
        self.owner: TaskStruct | None = None
        # The two steps are the same every time: made once, awaited at each use.
        self._lock_op = acquire(loc, f"spin_lock({name})", self._unlocked, sleeps=False,
                                order=Order.LOCK_ACQUIRE)
        self._unlock_op = release(loc, f"spin_unlock({name})", Order.LOCK_RELEASE)

    def _unlocked(self) -> bool:
        return self.owner is None

    async def lock(self) -> None:
        """spin_lock(): lockdep validates the acquisition before the lock is
        contended (as spin_acquire() precedes LOCK_CONTENDED)."""
        me = current_task()
        if self.owner is me:
            debug.report("BUG: spinlock recursion", f"{self.name} already held by {me.comm}")
        if me.system is not None and me.system.config.DEBUG_LOCK_ALLOC:  # lockdep's own gate, here
            debug.lockdep_acquire(self.name, self, "write")
        await self._lock_op
        self.owner = me
        preempt_disable()

    async def unlock(self) -> None:
        me = current_task()
        if self.owner is not me:
            debug.report("BUG: bad unlock balance", f"{self.name} not held by {me.comm}")
        await self._unlock_op
        self.owner = None
        if me.system is not None and me.system.config.DEBUG_LOCK_ALLOC:  # lockdep's own gate, here
            debug.lockdep_release(self.name, self)
        preempt_enable()


# RWSEM_WAIT_TIMEOUT: DIV_ROUND_UP(HZ, 250) jiffies, 4 ms at HZ=250 or 1000.
RWSEM_WAIT_TIMEOUT_NS = 4_000_000.0


@dataclass(eq=False, slots=True)
class _Waiter:
    task: TaskStruct
    write: bool
    timeout: float = 0.0  # clock_ns() after which a writer at the head may ask for the handoff
    granted: bool = False  # a reader: rwsem_mark_wake() gave it the lock (waiter.task = NULL)
    woken: bool = False  # a writer: rwsem_mark_wake() woke it to try the lock again
    handoff_set: bool = False  # a writer at the head set RWSEM_FLAG_HANDOFF


class RwSemaphore:
    """struct rw_semaphore: lock stealing, the handoff bit, killable waits,
    read trylock and downgrade (kernel/locking/rwsem.c, Linux 6.18)."""

    __slots__ = ("handoff", "loc", "name", "readers", "wait_list", "writer")

    def __init__(self, loc: Hashable, name: str = "rwsem") -> None:
        self.loc = loc
        self.name = name
        self.writer: TaskStruct | None = None
        self.readers = TaskSet()
        self.wait_list: list[_Waiter] = []
        self.handoff = False  # RWSEM_FLAG_HANDOFF

    # -- state queries (plain: used by enabled-conditions and assertions) --
    def is_locked(self) -> bool:
        return self.writer is not None or bool(self.readers)

    def is_write_locked_by(self, tsk: TaskStruct) -> bool:
        return self.writer is tsk

    def is_read_locked_by(self, tsk: TaskStruct) -> bool:
        return tsk in self.readers

    def has_waiters(self) -> bool:
        return bool(self.wait_list)

    def _nr_readers(self) -> int:
        """The readers owning the lock, as the count's reader field has them
        (what rwsem_rspin_threshold() reads; 0 when a writer owns it)."""
        return len(self.readers)

    def _add_reader(self, tsk: TaskStruct) -> None:
        """A reader joins (the lock's count has no order: a set of tasks)."""
        self.readers.add(tsk)

    def _queue(self, w: _Waiter) -> None:
        """Queue a waiter at the tail; readers queued one after another stay
        in pid order (the wake-up grants them all at once)."""
        wl = self.wait_list
        i = len(wl)
        if not w.write:
            while i and not wl[i - 1].write and wl[i - 1].task.pid > w.task.pid:
                i -= 1
        wl.insert(i, w)

    def _handoff_blocks(self, w: _Waiter | None) -> bool:
        """rwsem_try_write_lock(): the first waiter asked for the handoff and
        ``w`` is not it (``None``: a writer not queued yet)."""
        return self.handoff and self.wait_list[0].handoff_set and self.wait_list[0] is not w

    def _del_wake_waiter(self, w: _Waiter) -> None:
        """rwsem_del_wake_waiter(): a killed waiter leaves the queue; the last
        one out clears the handoff bit, and the new head is woken."""
        first = self.wait_list[0] is w
        self.wait_list.remove(w)
        if not self.wait_list:
            self.handoff = False
        elif first:
            self._mark_wake()

    def _mark_wake(self) -> None:
        """rwsem_mark_wake() of a lock no writer owns.  A reader at the head:
        every queued reader is granted the lock at once (phase-fair), and the
        handoff bit clears.  A writer at the head is only woken, and only
        when the lock is free: until it runs and takes it, any writer or a
        reader can steal the lock."""
        if self.writer is not None or not self.wait_list:
            return
        head = self.wait_list[0]
        if head.write:
            if not self.readers:
                head.woken = True
            return
        keep = []
        for w in self.wait_list:
            if w.write:
                keep.append(w)
            else:
                w.granted = True
                self._add_reader(w.task)
        self.wait_list = keep
        self.handoff = False

    async def _read_slowpath(self, me: TaskStruct, killable: bool) -> int:
        """rwsem_down_read_slowpath().  Behind a writer that owns the lock the
        reader queues in the step that found it (which depends on the write
        side alone); with the lock not write-owned but waiters queued, what it
        does depends on the other readers, so that is a step of its own (an
        RMW: it races every step on the lock)."""
        if self.writer is None:
            await rmw(self.loc, f"rwsem_down_read_slowpath({self.name})", Order.LOCK_ACQUIRE)
        if self.writer is None and (not self.wait_list or (not self.readers and not self.handoff)):
            # the queue emptied meanwhile, or the optimistic steal of a free
            # lock whose woken writer has not run yet; the first reader in
            # brings the readers queued at the head along
            self._add_reader(me)
            self._mark_wake()
            return 0
        w = _Waiter(me, False, clock_ns() + RWSEM_WAIT_TIMEOUT_NS)
        self._queue(w)
        self._mark_wake()  # rwsem_cond_wake_waiter()
        if w.granted:
            return 0
        cond: Callable[[], bool]
        if killable:
            def cond() -> bool:
                return w.granted or me.fatal_signal
        else:
            def cond() -> bool:
                return w.granted
        await block(self.loc, f"down_read({self.name}) wait", cond,
                    also=signal_loc(me) if killable else None, order=Order.LOCK_ACQUIRE,
                    wait=WaitKind.RWSEM_READ, observe=True)
        if w.granted:
            return 0
        self._del_wake_waiter(w)
        return -errno.EINTR

    async def _write_slowpath(self, me: TaskStruct, killable: bool) -> int:
        """rwsem_down_write_slowpath() after its first rwsem_try_write_lock()
        failed: wait to be woken, try again; a writer at the head that has
        waited RWSEM_WAIT_TIMEOUT sets the handoff bit, which stops stealing."""
        w = _Waiter(me, True, clock_ns() + RWSEM_WAIT_TIMEOUT_NS)
        self._queue(w)
        self._mark_wake()  # rwsem_cond_wake_waiter()
        cond: Callable[[], bool]
        if killable:
            def cond() -> bool:
                return w.woken or me.fatal_signal
        else:
            def cond() -> bool:
                return w.woken
        label = f"down_write({self.name}) wait"
        also = signal_loc(me) if killable else None
        while True:
            await block(self.loc, label, cond, also=also, order=Order.LOCK_ACQUIRE,
                        wait=WaitKind.RWSEM_WRITE, observe=True, readers=self._nr_readers)
            w.woken = False
            if self.writer is None and not self.readers and not self._handoff_blocks(w):
                self.wait_list.remove(w)
                self.writer = me
                self.handoff = False
                return 0
            if (self.wait_list[0] is w and not self.handoff
                    and clock_ns() > w.timeout):
                self.handoff = w.handoff_set = True
            if killable and me.fatal_signal:
                self._del_wake_waiter(w)
                return -errno.EINTR

    async def down_read(self, killable: bool = False) -> int:
        """down_read[_killable](): might_sleep(), then lockdep records the
        acquisition before the wait (a killed wait releases it again).  The
        fast path (no writer, no waiter) is a read-side step: read-side
        steps commute (module docstring)."""
        me = current_task()
        debug.might_sleep("kernel/locking/rwsem.c", "down_read", self.name)
        debug.lockdep_acquire(self.name, self, "read")
        await acquire_shared(self.loc, f"down_read({self.name})", Order.LOCK_ACQUIRE)
        if self.writer is None and not self.wait_list:
            self._add_reader(me)
            ret = 0
        else:
            ret = await self._read_slowpath(me, killable)
        if ret:
            debug.lockdep_release(self.name, self)
        return ret

    async def down_read_trylock(self) -> bool:
        me = current_task()
        await acquire_shared(self.loc, f"down_read_trylock({self.name})", Order.LOCK_ACQUIRE)
        if self.writer is None and not self.wait_list:
            self._add_reader(me)
            debug.lockdep_acquire(self.name, self, "read", trylock=True)
            return True
        return False

    async def down_write(self, killable: bool = False) -> int:
        """down_write[_killable](): as down_read().  One step takes a free lock
        (the fast path, or the slow path's first rwsem_try_write_lock(),
        which steals it from a woken writer that has not run yet unless that
        writer asked for the handoff); else the writer queues."""
        me = current_task()
        debug.might_sleep("kernel/locking/rwsem.c", "down_write", self.name)
        debug.lockdep_acquire(self.name, self, "write")
        await acquire(self.loc, f"down_write({self.name})", sleeps=False, order=Order.LOCK_ACQUIRE)
        if self.writer is None and not self.readers and not (
                self.wait_list and self._handoff_blocks(None)):
            self.writer = me
            if self.wait_list:
                self.handoff = False
            ret = 0
        else:
            ret = await self._write_slowpath(me, killable)
        if ret:
            debug.lockdep_release(self.name, self)
        return ret

    async def up_read(self) -> None:
        me = current_task()
        if me not in self.readers:
            debug.report("BUG: bad unlock balance", f"up_read({self.name}) by {me.comm}, not a reader")
        await release_shared(self.loc, f"up_read({self.name})", Order.LOCK_RELEASE)
        self.readers.remove(me)
        debug.lockdep_release(self.name, self)
        if not self.readers:
            self._mark_wake()

    async def up_write(self) -> None:
        me = current_task()
        if self.writer is not me:
            debug.report("BUG: bad unlock balance", f"up_write({self.name}) by {me.comm}, not the owner")
        await release(self.loc, f"up_write({self.name})", Order.LOCK_RELEASE)
        self.writer = None
        debug.lockdep_release(self.name, self)
        self._mark_wake()

    async def downgrade_write(self) -> None:
        me = current_task()
        if self.writer is not me:
            debug.report("BUG: bad unlock balance", f"downgrade_write({self.name}) by {me.comm}")
        await release(self.loc, f"downgrade_write({self.name})", Order.LOCK_RELEASE)
        self.writer = None
        self._add_reader(me)
        debug.lockdep_downgrade(self.name, self)
        # rwsem_downgrade_wake(): only readers may join a downgraded lock
        self._mark_wake()


class RcuWait:
    """struct rcuwait: a single-waiter slot.

    The waiter loops: publish itself, check the condition (a step on the
    condition's location), sleep until woken.  Only ``wake_up`` ends the sleep,
    so a missing wake-up shows as a deadlock, not as progress.
    """

    __slots__ = ("loc", "task", "woken")

    def __init__(self, loc: Hashable) -> None:
        self.loc = loc
        self.task: TaskStruct | None = None
        self.woken = False

    async def wait_event(self, cond: Callable[[], bool], cond_loc: Hashable, killable: bool,
                         label: str) -> int:
        """rcuwait_wait_event(): 0 once ``cond`` holds, -EINTR on a fatal
        signal when ``killable``."""
        me = current_task()
        debug.might_sleep("include/linux/rcuwait.h", "rcuwait_wait_event", label)
        if self.task is not None and self.task is not me:
            debug.report("WARNING: rcuwait", f"second waiter {me.comm} on {self.loc!r}")
        while True:
            await read(cond_loc, f"{label}: check", Order.MB_ONCE)  # after set_current_state()
            self.task = me
            if cond():
                self.task = None  # finish_rcuwait(): also back to TASK_RUNNING,
                self.woken = False  # so no wake-up is left over for the next wait
                return 0
            if killable and fatal_signal_pending(me):
                self.task = None
                self.woken = False
                return -errno.EINTR
            self.woken = False
            await block(self.loc, f"{label}: sleep",
                        lambda: self.woken or (killable and me.fatal_signal),
                        also=signal_loc(me) if killable else None,
                        order=Order.ACQUIRE)  # woken: ordered after the waker (try_to_wake_up)

    async def wake_up(self, label: str = "rcuwait_wake_up") -> None:
        await rmw(self.loc, label, Order.MB_ONCE)  # smp_mb(); rcu_dereference(w->task)
        if self.task is not None:
            self.woken = True
