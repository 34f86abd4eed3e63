"""spinlock_t, rw_semaphore and rcuwait.

Orderings (Linux 7.0): taking a lock is an acquire and dropping it a
release (kernel/locking/spinlock.c, rwsem.c: the rwsem fast paths are
atomic_long_try_cmpxchg_acquire() and atomic_long_add_return_release(); a
waiter handed the lock acquires it).  rcuwait (include/linux/rcuwait.h,
kernel/exit.c): the waiter's condition check follows set_current_state()'s
full barrier, the waker's smp_mb() precedes its load of the waiting task.

The rw_semaphore is writer-preferring with handoff: a new reader queues
behind any waiter, and a release grants the lock to the head of the wait list
(all queued readers at once when the head is a reader), so a woken waiter
owns the lock and nobody can steal it.  Optimistic spinning is not modelled.

The read side commutes: the kernel keeps a count of readers, not who came
first, so the model keeps its readers in pid order, and readers queued one
after another in pid order too (they are granted together, whatever their
order).  Two read-side steps then reach the same state in either order, and
their steps are of the shared kinds (``OpKind.ACQUIRE_SHARED``,
``RELEASE_SHARED``) that the checker does not count as racing each other.
A waiter's step is not of them: granted, it goes on; killed first, it leaves
the queue and may hand the lock on, so what it does depends on every
holder's release (``OpKind.OBSERVE``: it races them all).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from pervma.kernel import debug
from pervma.kernel.task import TaskStruct, current_task, fatal_signal_pending, signal_loc
from pervma.sched import (
    WaitKind,
    acquire,
    acquire_shared,
    block,
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


@dataclass(eq=False, slots=True)
class _Waiter:
    task: TaskStruct
    write: bool
    granted: bool = False


class RwSemaphore:
    """struct rw_semaphore with writer preference, handoff, killable waits,
    read trylock and downgrade."""

    __slots__ = ("loc", "name", "readers", "wait_list", "writer")

    def __init__(self, loc: Hashable, name: str = "rwsem") -> None:
        self.loc = loc
        self.name = name
        self.writer: TaskStruct | None = None
        self.readers: list[TaskStruct] = []
        self.wait_list: list[_Waiter] = []

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
        """A reader joins (kept in pid order: the lock's count has no order)."""
        readers = self.readers
        i = len(readers)
        while i and readers[i - 1].pid > tsk.pid:
            i -= 1
        readers.insert(i, tsk)

    def _queue(self, w: _Waiter) -> None:
        """Queue a waiter at the tail; readers queued one after another stay
        in pid order (the wake-up grants them all at once)."""
        wl = self.wait_list
        i = len(wl)
        if not w.write:
            while i and not wl[i - 1].write and wl[i - 1].task.pid > w.task.pid:
                i -= 1
        wl.insert(i, w)

    def _wake(self) -> None:
        """Hand the lock to the head of the wait list (rwsem_mark_wake)."""
        if self.writer is not None or not self.wait_list:
            return
        head = self.wait_list[0]
        if head.write:
            if not self.readers:
                head.granted = True
                self.writer = head.task
                self.wait_list.pop(0)
            return
        keep = []
        for w in self.wait_list:
            if w.write:
                keep.append(w)
            else:
                w.granted = True
                self._add_reader(w.task)
        self.wait_list = keep

    async def _slowpath(self, me: TaskStruct, write: bool, killable: bool) -> int:
        w = _Waiter(me, write)
        self._queue(w)
        kind = "write" if write else "read"
        cond: Callable[[], bool]
        if killable:
            def cond() -> bool:
                return w.granted or me.fatal_signal
        else:
            def cond() -> bool:
                return w.granted
        await block(self.loc, f"down_{kind}({self.name}) wait", cond,
                    also=signal_loc(me) if killable else None, order=Order.LOCK_ACQUIRE,
                    wait=WaitKind.RWSEM_WRITE if write else WaitKind.RWSEM_READ, observe=True,
                    readers=self._nr_readers if write else None)
        if not w.granted:
            self.wait_list.remove(w)
            self._wake()
            return -errno.EINTR
        return 0

    async def down_read(self, killable: bool = False) -> int:
        """down_read[_killable](): might_sleep(), then lockdep records the
        acquisition before the wait (a killed wait releases it again)."""
        me = current_task()
        debug.might_sleep("kernel/locking/rwsem.c", "down_read", self.name)
        debug.lockdep_acquire(self.name, self, "read")
        await acquire_shared(self.loc, f"down_read({self.name})", Order.LOCK_ACQUIRE)
        if self.writer is None and not self.wait_list:
            self._add_reader(me)
            ret = 0
        else:
            ret = await self._slowpath(me, False, killable)
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
        """down_write[_killable](): as down_read()."""
        me = current_task()
        debug.might_sleep("kernel/locking/rwsem.c", "down_write", self.name)
        debug.lockdep_acquire(self.name, self, "write")
        await acquire(self.loc, f"down_write({self.name})", sleeps=False, order=Order.LOCK_ACQUIRE)
        if self.writer is None and not self.readers and not self.wait_list:
            self.writer = me
            ret = 0
        else:
            ret = await self._slowpath(me, True, killable)
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
        self._wake()

    async def up_write(self) -> None:
        me = current_task()
        if self.writer is not me:
            debug.report("BUG: bad unlock balance", f"up_write({self.name}) by {me.comm}, not the owner")
        await release(self.loc, f"up_write({self.name})", Order.LOCK_RELEASE)
        self.writer = None
        debug.lockdep_release(self.name, self)
        self._wake()

    async def downgrade_write(self) -> None:
        me = current_task()
        if self.writer is not me:
            debug.report("BUG: bad unlock balance", f"downgrade_write({self.name}) by {me.comm}")
        await release(self.loc, f"downgrade_write({self.name})", Order.LOCK_RELEASE)
        self.writer = None
        self._add_reader(me)
        debug.lockdep_downgrade(self.name, self)
        # Only readers may join a downgraded lock.
        if self.wait_list and not self.wait_list[0].write:
            self._wake()


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
                self.task = None
                return 0
            if killable and fatal_signal_pending(me):
                self.task = None
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
