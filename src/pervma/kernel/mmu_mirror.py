"""A secondary MMU that mirrors an mm: a small KVM-like user of MMU notifiers.

The mirror keeps its own table (vpn -> page, writable) under its own lock,
as KVM keeps shadow PTEs under ``kvm->mmu_lock`` (virt/kvm/kvm_main.c,
7.0).  It follows KVM's invalidate counter:

- ``invalidate_range_start`` (kvm_mmu_notifier_invalidate_range_start):
  under the lock, count an invalidation in progress and drop the entries in
  the range;
- ``invalidate_range_end``: under the lock, bump ``invalidate_seq`` and
  end the invalidation;
- a fault (kvm_faultin_pfn, then the retry check of the fault handler)
  samples ``invalidate_seq``, gets the page with a GUP that faults it in
  under mmap_read_lock (``get_user_pages_unlocked``: GUP takes no VMA
  lock), then installs the entry under the lock only if no invalidation
  started or ended meanwhile (``mmu_invalidate_retry``), else retries.

So an entry never outlives the primary PTE it copied: the core mm's
invalidate_range_start drops it before the PTE changes, and a copy made
before an invalidation that raced with it is never installed.  debug.py's
``validate_mmu_mirrors`` checks exactly that after each synchronous call
and at the end of each checked execution.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.locks import SpinLock
from pervma.kernel.memory import (
    FAULT_FLAG_WRITE,
    VM_FAULT_ERROR,
    VM_FAULT_RETRY,
    handle_mm_fault,
    put_page,
)
from pervma.kernel.mm_types import PAGE_SHIFT, Page, VmFlags
from pervma.kernel.mmap_lock import mmap_read_lock, mmap_read_unlock
from pervma.kernel.mmu_notifier import MmuNotifier, MmuNotifierRange
from pervma.sched import Op, OpKind, touch
from pervma.sched.locations import MIRROR, PAGE_FRAME
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct

FAULT_FLAG_REMOTE = 0x80  # include/linux/mm_types.h: a fault on behalf of another context


class MmuMirror(MmuNotifier):
    """The secondary MMU's state: its table, its lock and KVM's two
    invalidation counters."""

    def __init__(self, ident: int) -> None:
        self.id = ident
        self.lock = SpinLock((MIRROR, ident), "mirror_lock")
        self.invalidate_in_progress = 0  # kvm->mmu_invalidate_in_progress
        self.invalidate_seq = 0  # kvm->mmu_invalidate_seq
        self.spte: dict[int, tuple[Page, bool]] = {}  # vpn -> (page, writable)
        self.released = False

    def __str__(self) -> str:
        return f"mirror#{self.id}"

    @property
    def loc(self) -> tuple[str, int]:
        return (MIRROR, self.id)

    async def invalidate_range_start(self, rng: MmuNotifierRange) -> int:
        await self.lock.lock()
        self.invalidate_in_progress += 1
        lo, hi = rng.start >> PAGE_SHIFT, (rng.end + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT
        gone = [v for v in sorted(self.spte) if lo <= v < hi]
        if gone:
            await Op(OpKind.WRITE, self.loc, "mirror: kvm_unmap_gfn_range", order=Order.PLAIN)
            for v in gone:
                del self.spte[v]
        await self.lock.unlock()
        return 0

    async def invalidate_range_end(self, rng: MmuNotifierRange) -> None:
        await self.lock.lock()
        self.invalidate_seq += 1
        self.invalidate_in_progress -= 1
        if self.invalidate_in_progress < 0:  # KVM_BUG_ON() in kvm_mmu_invalidate_end()
            debug.report("WARNING: mmu_notifier", f"{self}: invalidate_range_end for {rng} without "
                         "invalidate_range_start")
        await self.lock.unlock()

    async def release(self, mm: MmStruct) -> None:
        """kvm_mmu_notifier_release(): drop every entry; no fault installs one
        afterwards."""
        await self.lock.lock()
        await Op(OpKind.WRITE, self.loc, "mirror: release", order=Order.PLAIN)
        self.spte.clear()
        self.released = True
        await self.lock.unlock()


async def mirror_gup(mm: MmStruct, address: int, write: bool) -> tuple[Page, bool] | int:
    """get_user_pages_unlocked() for one page: under mmap_read_lock, find the
    VMA, check its access, look the PTE up under its lock (taking a page
    reference) and fault it in with handle_mm_fault() until it is there.
    -EFAULT for a missing VMA, a missing permission or a failed fault."""
    vpn = address >> PAGE_SHIFT
    await mmap_read_lock(mm)
    while True:
        vma = mm.mm_mt.find_covering(address)
        if vma is None or not vma.vm_flags & (VmFlags.VM_WRITE if write else VmFlags.VM_READ):
            await mmap_read_unlock(mm)
            return -errno.EFAULT
        ptl = mm.ptl(address)
        await ptl.lock()
        pte = mm.pgtable.get(vpn)
        if pte is not None and pte.readable and (pte.writable or not write):
            page = pte.page
            if not page.zero_page:  # get_page()
                page.refcount += 1
                touch((PAGE_FRAME, page.pfn))
            writable = pte.writable
            await ptl.unlock()
            await mmap_read_unlock(mm)
            return page, writable
        await ptl.unlock()
        fault = await handle_mm_fault(vma, address, FAULT_FLAG_REMOTE | (FAULT_FLAG_WRITE if write else 0))
        if fault & VM_FAULT_RETRY:  # the lock was dropped (not with these flags, but as GUP does)
            await mmap_read_lock(mm)
            continue
        if fault & VM_FAULT_ERROR:
            await mmap_read_unlock(mm)
            return -errno.EFAULT


async def mirror_fault(mirror: MmuMirror, address: int, write: bool) -> int:
    """The mirror's fault: sample invalidate_seq, GUP the page, then install
    the entry under the mirror's lock unless an invalidation is in progress
    or ended since the sample (mmu_invalidate_retry: then start again)."""
    mm = mirror.mm
    if mm is None or mirror.released:
        return -errno.EFAULT
    vpn = address >> PAGE_SHIFT
    while True:
        await Op(OpKind.READ, mirror.loc, "mirror: read mmu_invalidate_seq", order=Order.ONCE_RMB)
        seq = mirror.invalidate_seq
        got = await mirror_gup(mm, address, write)
        if isinstance(got, int):
            return got
        page, writable = got
        await mirror.lock.lock()
        if mirror.invalidate_in_progress or mirror.invalidate_seq != seq:
            await mirror.lock.unlock()
            put_page(mm, page, "mirror: retry")
            continue
        ret = 0
        if mirror.released:
            ret = -errno.EFAULT
        else:
            await Op(OpKind.WRITE, mirror.loc, "mirror: install spte", order=Order.PLAIN)
            mirror.spte[vpn] = (page, writable)
        await mirror.lock.unlock()
        put_page(mm, page, "mirror: kvm_release_page")
        return ret


async def mirror_access(mirror: MmuMirror, address: int, write: bool, value: int = 0) -> int:
    """A device access through the mirror's table: a hit reads or writes the
    page it maps (one step, no lock: the table is the device's TLB); a miss
    or a write to a read-only entry faults first.  The byte read, 0 after a
    write, or -EFAULT."""
    vpn, off = address >> PAGE_SHIFT, address & ((1 << PAGE_SHIFT) - 1)
    while True:
        await Op(OpKind.WRITE if write else OpKind.READ, mirror.loc, "mirror: device access", order=Order.ONCE)
        entry = mirror.spte.get(vpn)
        if entry is not None and (entry[1] or not write):
            page = entry[0]
            touch((PAGE_FRAME, page.pfn))
            if write:
                page.data[off] = value & 0xFF
                if mirror.mm is not None and mirror.mm.fork_log:  # a device write is a store too
                    debug.record_store(mirror.mm, address, value & 0xFF)
                return 0
            return page.data.get(off, 0)
        ret = await mirror_fault(mirror, address, write)
        if ret:
            return ret


__all__ = ["MmuMirror", "mirror_access", "mirror_fault", "mirror_gup"]
