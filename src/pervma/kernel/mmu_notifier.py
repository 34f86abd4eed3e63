"""MMU notifiers (mm/mmu_notifier.c, include/linux/mmu_notifier.h, Linux 7.0).

A secondary MMU (KVM's shadow page tables, an HMM device) copies PTEs of an
mm into a table of its own.  The core mm tells it, through a subscription on
``mm->notifier_subscriptions``, before and after it changes or removes
present PTEs: ``mmu_notifier_invalidate_range_start()`` /
``_end()`` around zap (munmap, MADV_DONTNEED, exit), COW (``wp_page_copy``,
fork's write-protection in ``copy_page_range``), protection changes
(mprotect's ``change_protection``) and page-table moves (mremap), each with
the kernel's ``mmu_notifier_event``; ``mmu_notifier_release()`` when the mm
is torn down.

Registration publishes the subscriptions under ``mm_take_all_locks()``
(mm/vma.c): with the mmap write lock, every VMA write lock, every
i_mmap_rwsem and anon_vma lock held, no invalidation, fault or rmap walk on
the mm can be half-way through while the list changes, so every later
change of a PTE is seen by the new subscriber.  ``mm_has_notifiers()`` is a
plain load, as in the kernel: when no notifier is registered the hooks cost
no step at all.

Modelled: the hlist subscriptions (``struct mmu_notifier`` with
``invalidate_range_start/end`` and ``release``), their lock and the
lockdep map ``__mmu_notifier_invalidate_range_start_map`` (acquired only
when the mm has notifiers, to keep the cost zero otherwise; the kernel
takes it always under CONFIG_LOCKDEP).  Not modelled: interval notifiers
(``mmu_interval_notifier``; the mirror in ``mmu_mirror.py`` uses KVM's
invalidate counter instead of ``mmu_interval_read_begin/retry``),
``mmu_notifier_unregister``/``_put`` (a subscription lives as long as its
mm), SRCU (the list only grows while the mm has users), the
clear/test_young callbacks and the non-blocking start.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.locks import SpinLock
from pervma.kernel.mmap_lock import (
    mmap_assert_write_locked,
    mmap_write_lock,
    mmap_write_unlock,
    mmgrab,
)
from pervma.sched import Op, OpKind
from pervma.sched.locations import MMU_NOTIFIER_LOCK, MMU_NOTIFIERS
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct

# enum mmu_notifier_event (include/linux/mmu_notifier.h)
MMU_NOTIFY_UNMAP = 0
MMU_NOTIFY_CLEAR = 1
MMU_NOTIFY_PROTECTION_VMA = 2
MMU_NOTIFY_PROTECTION_PAGE = 3
MMU_NOTIFY_SOFT_DIRTY = 4
MMU_NOTIFY_RELEASE = 5
MMU_NOTIFY_MIGRATE = 6
MMU_NOTIFY_EXCLUSIVE = 7

MMU_NOTIFY_NAMES = ("MMU_NOTIFY_UNMAP", "MMU_NOTIFY_CLEAR", "MMU_NOTIFY_PROTECTION_VMA",
                    "MMU_NOTIFY_PROTECTION_PAGE", "MMU_NOTIFY_SOFT_DIRTY", "MMU_NOTIFY_RELEASE",
                    "MMU_NOTIFY_MIGRATE", "MMU_NOTIFY_EXCLUSIVE")

MMU_NOTIFIER_RANGE_BLOCKABLE = 1 << 0

#: The lockdep class of the map every invalidate_range_start runs its callbacks under.
RANGE_START_MAP = "mmu_notifier_invalidate_range_start"


class LockdepMap:
    """A static ``struct lockdep_map`` (a lock class with no lock behind it):
    one object, so lockdep finds it in a held list by identity."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


#: __mmu_notifier_invalidate_range_start_map (mm/mmu_notifier.c).
range_start_map = LockdepMap(RANGE_START_MAP)


@dataclass(eq=False, slots=True)
class MmuNotifierRange:
    """struct mmu_notifier_range."""

    mm: MmStruct
    start: int
    end: int
    event: int
    flags: int = 0

    def __str__(self) -> str:
        return f"{MMU_NOTIFY_NAMES[self.event]} [{self.start:#x}-{self.end:#x})"


class MmuNotifier:
    """struct mmu_notifier with its ops: a driver subclasses it and overrides
    the callbacks it has (the base ones do nothing, like a NULL op)."""

    mm: MmStruct | None = None
    users: int = 0

    async def invalidate_range_start(self, rng: MmuNotifierRange) -> int:
        return 0

    async def invalidate_range_end(self, rng: MmuNotifierRange) -> None:
        return None

    async def release(self, mm: MmStruct) -> None:
        return None


@dataclass(eq=False, slots=True)
class MmuNotifierSubscriptions:
    """struct mmu_notifier_subscriptions: the subscribers (``list``, newest
    first as hlist_add_head puts them) and the lock that serialises changes
    of the list."""

    lock: SpinLock
    list: list[MmuNotifier] = field(default_factory=list)
    invalidate_seq: int = 2  # for interval notifiers (not modelled): starts even, at 2


def subscriptions_loc(mm: MmStruct) -> tuple[str, int]:
    """Where the list of subscribers lives: readers walk it, register writes it."""
    return (MMU_NOTIFIERS, mm.id)


def mm_has_notifiers(mm: MmStruct) -> bool:
    """mm_has_notifiers(): an unlocked load of the subscriptions pointer.  Its
    callers hold a lock mm_take_all_locks() takes (mmap_lock, a VMA lock, an
    rmap lock), so registration cannot be half-way through."""
    return mm.notifier_subscriptions is not None


def mmu_notifier_range_init(event: int, flags: int, mm: MmStruct, start: int, end: int
                            ) -> MmuNotifierRange:
    return MmuNotifierRange(mm, start, end, event, flags)


# ---------------------------------------------------------------------------
# Invalidation
# ---------------------------------------------------------------------------
async def mmu_notifier_invalidate_range_start(rng: MmuNotifierRange) -> None:
    """Models mmu_notifier_invalidate_range_start() (7.0): may sleep, with
    notifiers or without (its might_sleep() comes first); with notifiers,
    mark the range blockable and call every subscriber's
    invalidate_range_start under the lockdep map."""
    debug.might_sleep("include/linux/mmu_notifier.h", "mmu_notifier_invalidate_range_start")
    mm = rng.mm
    if mm.notifier_subscriptions is None:
        return
    debug.lockdep_acquire(RANGE_START_MAP, range_start_map, "write")
    rng.flags |= MMU_NOTIFIER_RANGE_BLOCKABLE
    await __mmu_notifier_invalidate_range_start(rng)
    debug.lockdep_release(RANGE_START_MAP, range_start_map)


async def __mmu_notifier_invalidate_range_start(rng: MmuNotifierRange) -> int:
    """mn_hlist_invalidate_range_start(): walk the list (under SRCU) and call
    each subscriber; a blockable range cannot fail (the kernel WARNs)."""
    subs = rng.mm.notifier_subscriptions
    assert subs is not None
    await Op(OpKind.READ, subscriptions_loc(rng.mm), "mn_hlist_invalidate_range_start", order=Order.RCU_DEREFERENCE)
    ret = 0
    for sub in list(subs.list):
        r = await sub.invalidate_range_start(rng)
        if r:
            debug.report("WARNING: mmu_notifier", f"{type(sub).__name__} failed a blockable "
                         f"invalidate_range_start ({r}) for {rng}")
            ret = r
    return ret


async def mmu_notifier_invalidate_range_end(rng: MmuNotifierRange) -> None:
    """Models mmu_notifier_invalidate_range_end() (7.0): may sleep if its
    start made the range blockable (it does when the mm has notifiers);
    every subscriber's invalidate_range_end, under the same lockdep map."""
    if rng.flags & MMU_NOTIFIER_RANGE_BLOCKABLE:
        debug.might_sleep("include/linux/mmu_notifier.h", "mmu_notifier_invalidate_range_end")
    mm = rng.mm
    if mm.notifier_subscriptions is None:
        return
    debug.lockdep_acquire(RANGE_START_MAP, range_start_map, "write")
    subs = mm.notifier_subscriptions
    await Op(OpKind.READ, subscriptions_loc(mm), "mn_hlist_invalidate_end", order=Order.RCU_DEREFERENCE)
    for sub in list(subs.list):
        await sub.invalidate_range_end(rng)
    debug.lockdep_release(RANGE_START_MAP, range_start_map)


async def mmu_notifier_release(mm: MmStruct) -> None:
    """Models mmu_notifier_release() -> mn_hlist_release() (exit_mmap, before
    any page is freed): call every ->release, then unhash every subscriber
    under the lock, so that later invalidations of the dying mm reach nobody."""
    subs = mm.notifier_subscriptions
    if subs is None:
        return
    await Op(OpKind.READ, subscriptions_loc(mm), "mn_hlist_release", order=Order.RCU_DEREFERENCE)
    for sub in list(subs.list):
        await sub.release(mm)
    await subs.lock.lock()
    await Op(OpKind.WRITE, subscriptions_loc(mm), "mn_hlist_release: hlist_del_init_rcu", order=Order.ONCE)
    subs.list.clear()
    await subs.lock.unlock()


# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------
async def __mmu_notifier_register(subscription: MmuNotifier, mm: MmStruct) -> int:
    """Models __mmu_notifier_register() (7.0): the caller holds the mmap write
    lock.  The subscriptions are allocated before mm_take_all_locks() (no
    allocation under it), published with a release store under it, and the
    subscriber linked under the subscriptions' lock; -EINTR if a signal
    interrupted mm_take_all_locks()."""
    from pervma.kernel.vma import mm_drop_all_locks, mm_take_all_locks

    mmap_assert_write_locked(mm)
    if mm.mm_users.counter <= 0:
        debug.report("kernel BUG at mm/mmu_notifier.c", f"__mmu_notifier_register on {mm} with no users")
    subscriptions = None
    if mm.notifier_subscriptions is None:
        subscriptions = MmuNotifierSubscriptions(SpinLock((MMU_NOTIFIER_LOCK, mm.id), "mmu_notifier_lock"))
    ret = await mm_take_all_locks(mm)
    if ret:
        return ret
    if subscriptions is not None:
        await Op(OpKind.WRITE, subscriptions_loc(mm), "__mmu_notifier_register: smp_store_release", order=Order.RELEASE)
        mm.notifier_subscriptions = subscriptions
    await mmgrab(mm)
    subscription.mm = mm
    subscription.users = 1
    subs = mm.notifier_subscriptions
    assert subs is not None
    await subs.lock.lock()
    await Op(OpKind.WRITE, subscriptions_loc(mm), "__mmu_notifier_register: hlist_add_head_rcu", order=Order.RCU_ASSIGN)
    subs.list.insert(0, subscription)
    await subs.lock.unlock()
    await mm_drop_all_locks(mm)
    return 0


async def mmu_notifier_register(subscription: MmuNotifier, mm: MmStruct) -> int:
    """Models mmu_notifier_register(): __mmu_notifier_register() under
    mmap_write_lock (not killable: a fatal signal is seen by
    mm_take_all_locks, which returns -EINTR)."""
    if subscription.mm is not None:
        return -errno.EBUSY  # pervma: a subscription is registered once (the kernel BUGs)
    await mmap_write_lock(mm)
    ret = await __mmu_notifier_register(subscription, mm)
    await mmap_write_unlock(mm)
    return ret


__all__ = [
    "MMU_NOTIFIER_RANGE_BLOCKABLE", "MMU_NOTIFY_CLEAR", "MMU_NOTIFY_PROTECTION_PAGE",
    "MMU_NOTIFY_PROTECTION_VMA", "MMU_NOTIFY_RELEASE", "MMU_NOTIFY_UNMAP", "MmuNotifier",
    "MmuNotifierRange", "MmuNotifierSubscriptions", "mm_has_notifiers", "mmu_notifier_invalidate_range_end",
    "mmu_notifier_invalidate_range_start", "mmu_notifier_range_init", "mmu_notifier_register",
    "mmu_notifier_release",
]
