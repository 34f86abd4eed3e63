"""A binder-like kernel user of VMA locks (drivers/android/binder_alloc.c).

binder maps a buffer into the receiving process; it installs pages into that
VMA from the sender's context and a shrinker frees them under memory
pressure.  Both forms exist, chosen by ``Config.SERIES_CALLERS``:

* pre-series (7.0): install tries lock_vma_under_rcu() and falls back to
  mmap_read_lock + vma_lookup; the shrinker uses mmap_read_trylock and skips
  the page if that fails.
* series (patches 2 and 4): install uses the wait-for-writers lookup and has
  no fallback; the shrinker relies solely on the per-VMA lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.memory import alloc_page, flush_tlb, put_page, set_pte_at
from pervma.kernel.mm_types import PAGE_SHIFT, Pte, VmOperations
from pervma.kernel.mmap_lock import (
    lock_vma_under_rcu,
    lock_vma_under_rcu_wait,
    mmap_read_lock,
    mmap_read_trylock,
    mmap_read_unlock,
    vma_end_read,
)
from pervma.kernel.mmu_notifier import (
    MMU_NOTIFY_CLEAR,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
    mmu_notifier_range_init,
)
from pervma.kernel.sites import call_site

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, Page, VmAreaStruct

binder_vm_ops = VmOperations("binder_vm_ops", has_map_pages=False, special="binder")


@dataclass(eq=False)
class BinderAlloc:
    """struct binder_alloc: the receiving process's buffer."""

    mm: MmStruct
    buffer: int
    npages: int
    pages: dict[int, Page] = field(default_factory=dict)


def _vma_ok(alloc: BinderAlloc, vma: VmAreaStruct | None) -> bool:
    return vma is not None and vma.vm_ops is binder_vm_ops and vma.vm_start == alloc.buffer


async def _insert_page(alloc: BinderAlloc, vma: VmAreaStruct, addr: int) -> int:
    """vm_insert_page(): install the page under the page-table lock."""
    mm = alloc.mm
    debug.kasan_check(vma, "binder vm_insert_page", "vm_area_struct")
    if vma.vm_mm is not mm or not (vma.vm_start <= addr < vma.vm_end):
        debug.report("BUG: binder installs into the wrong VMA", f"{addr:#x} not in {vma} of {mm}")
    page = await alloc_page(mm)
    ptl = mm.ptl(addr)
    await ptl.lock()
    if (addr >> PAGE_SHIFT) in mm.pgtable:
        await ptl.unlock()
        put_page(mm, page, "binder: raced")
        return 0
    page.mapcount = 1
    await set_pte_at(mm, addr >> PAGE_SHIFT, Pte(page, writable=False), "binder vm_insert_page")
    await ptl.unlock()
    alloc.pages[addr] = page
    return 0


@call_site("drivers/android/binder_alloc.c:binder_page_insert", pre_form="stub-fallback",
           pre_series="lock_vma_under_rcu(), else mmap_read_lock + vma_lookup",
           series="the wait-for-writers lookup (patch 2), no mmap_lock fallback",
           scenarios=("binder-shrinker-vs-munmap", "binder-shrinker-vs-munmap-pre-series"),
           note="the kernel's binder_install_single_page() calls binder_page_insert(); the "
           "model folds the two, and the scenarios install in their setup only")
async def binder_install_single_page(alloc: BinderAlloc, addr: int) -> int:
    """Install the buffer page at addr; -ESRCH if the mapping is gone."""
    mm = alloc.mm
    if mm.config.SERIES_CALLERS:
        vma = await lock_vma_under_rcu_wait(mm, addr)
        if not _vma_ok(alloc, vma):
            if vma is not None:
                await vma_end_read(vma)
            return -3
        assert vma is not None
        ret = await _insert_page(alloc, vma, addr)
        await vma_end_read(vma)
        return ret
    vma = await lock_vma_under_rcu(mm, addr)
    if vma is not None:
        if not _vma_ok(alloc, vma):
            await vma_end_read(vma)
            return -3
        ret = await _insert_page(alloc, vma, addr)
        await vma_end_read(vma)
        return ret
    await mmap_read_lock(mm)
    vma = mm.mm_mt.find_covering(addr)
    if not _vma_ok(alloc, vma):
        await mmap_read_unlock(mm)
        return -3
    assert vma is not None
    ret = await _insert_page(alloc, vma, addr)
    await mmap_read_unlock(mm)
    return ret


@call_site("drivers/android/binder_alloc.c:binder_alloc_free_page", pre_form="stub-fallback",
           pre_series="the shrinker tries lock_vma_under_rcu(), else mmap_read_trylock + "
           "vma_lookup, skipping the page when that fails",
           series="the per-VMA lock alone (patch 4): skip the page when it cannot be had",
           scenarios=("binder-shrinker-vs-munmap", "binder-shrinker-vs-munmap-pre-series"),
           note="the model's pre-series shrinker takes mmap_read_trylock only (the older form); "
           "binder_alloc.c as read (the binder_page_insert() era, 6.14+) tries the per-VMA "
           "lock first")
async def binder_alloc_free_page(alloc: BinderAlloc, addr: int) -> bool:
    """The shrinker callback: unmap and free one buffer page, or skip it
    (return False) if the lock cannot be had without waiting."""
    mm = alloc.mm
    if mm.config.SERIES_CALLERS:
        vma = await lock_vma_under_rcu(mm, addr)
        if vma is None:
            return False
        unlock_vma = True
    else:
        if not await mmap_read_trylock(mm):
            return False
        vma = mm.mm_mt.find_covering(addr)
        unlock_vma = False
    if _vma_ok(alloc, vma):
        assert vma is not None
        debug.kasan_check(vma, "binder shrinker zap", "vm_area_struct")
        # zap_page_range_single(): a secondary MMU drops the page first
        rng = mmu_notifier_range_init(MMU_NOTIFY_CLEAR, 0, mm, addr, addr + (1 << PAGE_SHIFT))
        await mmu_notifier_invalidate_range_start(rng)
        ptl = mm.ptl(addr)
        await ptl.lock()
        pte = mm.pgtable.get(addr >> PAGE_SHIFT)
        if pte is not None:
            await set_pte_at(mm, addr >> PAGE_SHIFT, None, "binder shrinker: zap_page_range_single")
            pte.page.mapcount -= 1
            put_page(mm, pte.page, "binder shrinker")
        await ptl.unlock()
        await flush_tlb(mm, "binder shrinker: flush")
        await mmu_notifier_invalidate_range_end(rng)
        alloc.pages.pop(addr, None)
    if unlock_vma:
        assert vma is not None
        await vma_end_read(vma)
    else:
        await mmap_read_unlock(mm)
    return True
