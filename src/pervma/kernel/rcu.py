"""RCU: read-side sections, grace periods, synchronize_rcu and call_rcu.

A grace period started at some moment ends once every task that was inside a
read-side section at that moment has left it.  Callbacks queued by
``call_rcu`` run as soon as their grace period has ended (checked when a
reader leaves its outermost section, and at once if nobody was reading).
With PREEMPT=n (tiny RCU) a read-side section is also a non-preemptible
region.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pervma.kernel import debug
from pervma.kernel.task import TaskSet, TaskStruct, current_task
from pervma.sched import block, current_model, preempt_disable, preempt_enable, touch, touch_read
from pervma.sched.locations import RCU, RCU_GP
from pervma.sched.order import Order

#: The grace-period state as the checker's dependency relation sees it.  A
#: reader entering or leaving its outermost section reads it (readers never
#: conflict with each other); ``call_rcu`` and ``synchronize_rcu`` write it
#: (they snapshot the readers a new grace period waits for).  Without it the
#: order of a ``call_rcu`` and a reader's ``rcu_read_lock``/``rcu_read_unlock``
#: -- which decides whether the callback waits for that reader and which step
#: runs it -- would be invisible to DPOR: both happen inside steps that name
#: other locations.
RCU_GP_LOC = (RCU_GP,)


@dataclass(eq=False, slots=True)
class GracePeriod:
    """A grace period: the tasks that were inside a read-side section when
    it started and have not left that section yet (each leaves the list at
    its outermost ``rcu_read_unlock``).  It is over once the list is empty.
    No counter names a section: two states that differ only in how many
    sections a task has been through are the same state."""

    waits_for: TaskSet
    callback: Callable[[], None] | None = None

    def done(self) -> bool:
        return not self.waits_for


@dataclass(eq=False, slots=True)
class RcuState:
    preempt: bool = True
    # The tasks inside a read-side section now (a set: see rcu_read_lock)
    readers: TaskSet = field(default_factory=TaskSet)
    pending: list[GracePeriod] = field(default_factory=list)  # started, not over

    def start(self, callback: Callable[[], None] | None = None) -> GracePeriod:
        """A grace period starting now (queued until it is over)."""
        gp = GracePeriod(TaskSet(self.readers), callback)
        self.pending.append(gp)
        self.run_callbacks()
        return gp

    def reader_left(self, tsk: TaskStruct) -> None:
        """``tsk`` left its outermost read-side section: no grace period
        waits for it any more."""
        for gp in self.pending:
            if tsk in gp.waits_for:
                gp.waits_for.remove(tsk)
        self.run_callbacks()

    def run_callbacks(self) -> None:
        if all(gp.waits_for for gp in self.pending):
            return
        ready = [gp for gp in self.pending if not gp.waits_for]
        self.pending = [gp for gp in self.pending if gp.waits_for]
        for gp in ready:
            if gp.callback is not None:
                gp.callback()


def _rcu(tsk: TaskStruct) -> RcuState:
    state: RcuState = tsk.system.rcu
    return state


def rcu_read_lock() -> None:
    """Enter a read-side section (a per-CPU operation: not a shared step)."""
    tsk = current_task()
    if tsk.rcu_depth == 0:
        touch_read(RCU_GP_LOC)
        rcu: RcuState = tsk.system.rcu
        # a set: the state must not remember which task began reading first
        rcu.readers.add(tsk)
        if not rcu.preempt:
            preempt_disable()
    tsk.rcu_depth += 1


def rcu_read_unlock() -> None:
    tsk = current_task()
    if tsk.rcu_depth <= 0:
        debug.report("WARNING: rcu_read_unlock", f"unbalanced rcu_read_unlock in {tsk.comm}")
        return
    tsk.rcu_depth -= 1
    if tsk.rcu_depth == 0:
        touch_read(RCU_GP_LOC)
        rcu: RcuState = tsk.system.rcu
        rcu.readers.remove(tsk)
        if not rcu.preempt:
            preempt_enable()
        if rcu.pending:
            rcu.reader_left(tsk)


def kasan_grace_period() -> GracePeriod:
    """The grace period a free of a SLAB_TYPESAFE_BY_RCU object starts (an
    object nobody may touch any more outside a model thread)."""
    tsk: TaskStruct | None = current_model()
    if tsk is None or tsk.system is None:
        return GracePeriod(TaskSet())
    touch(RCU_GP_LOC)
    return _rcu(tsk).start()


def rcu_read_lock_held() -> bool:
    return current_task().rcu_depth > 0


def call_rcu(callback: Callable[[], None]) -> None:
    """Queue ``callback`` to run after a grace period."""
    rcu = _rcu(current_task())
    touch(RCU_GP_LOC)
    rcu.start(callback)


async def synchronize_rcu() -> None:
    """Wait for a full grace period (a blocking step)."""
    tsk = current_task()
    if tsk.rcu_depth:
        debug.report("BUG: synchronize_rcu", "called inside an RCU read-side section")
    debug.might_sleep("kernel/rcu/tree.c", "synchronize_rcu")
    rcu = _rcu(tsk)
    touch(RCU_GP_LOC)
    gp = rcu.start()
    await block((RCU,), "synchronize_rcu", gp.done, order=Order.SYNC_RCU)
