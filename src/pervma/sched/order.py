"""Memory orderings of primitive steps (the ``order`` of an :class:`~pervma.sched.ops.Op`).

Every shared access of the model says which ordering the kernel gives it, in
the vocabulary of the Linux-kernel memory model (tools/memory-model,
linux-kernel.def, Linux 7.0): a plain C access, ``READ_ONCE``/``WRITE_ONCE``,
acquire/release, the atomic forms (``_relaxed``, ``_acquire``, ``_release``,
fully ordered), the barriers a primitive carries with it (the ``smp_wmb()``
of a seqcount write section...), RCU publish and dereference, and lock
acquire/release.

Sequential consistency ignores orders: no driver that explores SC
interleavings looks at them, so they change nothing there.  They exist for
an exploration under LKMM, which turns one step into the LKMM events
:data:`LKMM_EVENTS` lists.  A step whose order was never declared is
:attr:`Order.UNSPECIFIED`, the default of every constructor, so a test can
find a shared access nobody classified.
"""

from __future__ import annotations

import enum


class Order(enum.IntEnum):
    """The ordering of one step (values are stable; they are part of Ops)."""

    UNSPECIFIED = 0  #: nobody said: a shared access must not keep this
    PLAIN = 1  #: a plain C access (data-racy unless a lock or the protocol excludes writers)
    ONCE = 2  #: READ_ONCE()/WRITE_ONCE(), atomic_read()/atomic_set(), refcount_read()/set()
    ACQUIRE = 3  #: smp_load_acquire(), an _acquire RMW (on success, for conditional ones)
    RELEASE = 4  #: smp_store_release(), an _release RMW, refcount_set_release()
    RELAXED = 5  #: an RMW with no ordering: atomic_inc(), atomic_*_relaxed(), refcount_inc()
    FULL = 6  #: a fully ordered RMW: value-returning atomics, xchg(), cmpxchg() (on success)
    CTRL = 7  #: refcount_inc/add_not_zero(): relaxed; later stores ordered by the success branch
    RELEASE_ACQUIRE = 8  #: refcount_dec/sub_and_test(): release; acquire when it reaches zero
    ONCE_WMB = 9  #: a store then smp_wmb(): seqcount write begin
    WMB_ONCE = 10  #: smp_wmb() then a store: seqcount write end
    RMB_ONCE = 11  #: smp_rmb() then READ_ONCE(): read_seqcount_retry()
    MB_ONCE = 12  #: smp_mb() then the access (set_current_state() before a wait condition)
    RCU_DEREFERENCE = 13  #: rcu_dereference(): a load ordering the loads its value addresses
    RCU_ASSIGN = 14  #: rcu_assign_pointer(): a release store publishing an object
    LOCK_ACQUIRE = 15  #: spin_lock(), down_read/write(), folio_lock(): acquire
    LOCK_RELEASE = 16  #: spin_unlock(), up_read/write(), folio_unlock(): release
    SYNC_RCU = 17  #: synchronize_rcu(): waits for a grace period (LKMM's sync-rcu fence)
    LOCKED = 18  #: a whole spinlock critical section taken as one step (lock ... unlock)
    ONCE_RMB = 19  #: a load then smp_rmb() (KVM's mmu_invalidate_seq snapshot)

    @property
    def declared(self) -> bool:
        return self is not Order.UNSPECIFIED


#: The LKMM events one step of each order stands for: (fence before, the
#: access's annotation, fence after), with linux-kernel.def's tag names
#: ("once", "acquire", "release", "mb", "rmb", "wmb", "sync-rcu"; "plain"
#: for an unannotated access).  A lock step is the lock's LKR/LKW or UL.
#: Conditional orderings (CTRL, RELEASE_ACQUIRE's acquire) apply on success.
#: LOCKED's "lock"/"unlock" stand for the critical section's LKR/LKW and UL.
LKMM_EVENTS: dict[Order, tuple[str, str, str]] = {
    Order.PLAIN: ("", "plain", ""),
    Order.ONCE: ("", "once", ""),
    Order.ACQUIRE: ("", "acquire", ""),
    Order.RELEASE: ("", "release", ""),
    Order.RELAXED: ("", "once", ""),
    Order.FULL: ("", "mb", ""),
    Order.CTRL: ("", "once", ""),
    Order.RELEASE_ACQUIRE: ("", "release", "rmb"),  # smp_acquire__after_ctrl_dep()
    Order.ONCE_WMB: ("", "once", "wmb"),
    Order.WMB_ONCE: ("wmb", "once", ""),
    Order.RMB_ONCE: ("rmb", "once", ""),
    Order.MB_ONCE: ("mb", "once", ""),
    Order.RCU_DEREFERENCE: ("", "once", ""),
    Order.RCU_ASSIGN: ("", "release", ""),
    Order.LOCK_ACQUIRE: ("", "lock", ""),
    Order.LOCK_RELEASE: ("", "unlock", ""),
    Order.SYNC_RCU: ("sync-rcu", "", ""),
    Order.LOCKED: ("lock", "once", "unlock"),
    Order.ONCE_RMB: ("", "once", "rmb"),
}
