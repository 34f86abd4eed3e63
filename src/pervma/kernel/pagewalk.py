"""The generic page-table walker (mm/pagewalk.c, include/linux/pagewalk.h).

Followed: mm/pagewalk.c of kernel-patches/bpf ``1129ddff`` (7.x, the same
locking as 7.0): ``walk_page_range()`` first checks how the caller holds
mmap_lock (process_mm_walk_lock: PGWALK_RDLOCK needs it held, every other
mode but PGWALK_VMA_RDLOCK_VERIFY needs it write-held), then, VMA by VMA,
applies the mode's VMA lock rule (process_vma_walk_lock): PGWALK_WRLOCK
write-locks each VMA it enters (vma_start_write), PGWALK_WRLOCK_VERIFY and
PGWALK_VMA_RDLOCK_VERIFY only assert that the caller did
(vma_assert_write_locked, vma_assert_locked).  The asserts are the kernel's
own, so a user that walks with the wrong mode is reported as the kernel's
VM_WARN would report it.

The model's page table is flat (vpn -> PTE): a "PMD" is the 512-PTE page a
split page-table lock covers (``MmStruct.ptl``), and it is "none" when it
maps nothing.  ``pmd_entry`` gets such a range with nothing locked (it takes
the PTL itself, as queue_folios_pte_range() and mlock_pte_range() do);
``pte_entry`` is called for each present PTE with the PTL held by the
walker.  Huge pages, hugetlb and ``install_pte`` are not modelled.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pervma.kernel.mm_types import PAGE_SHIFT, PMD_SHIFT, VmFlags
from pervma.kernel.mmap_lock import (
    mmap_assert_locked,
    mmap_assert_write_locked,
    vma_assert_locked,
    vma_assert_write_locked,
    vma_start_write,
)

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, Pte, VmAreaStruct

PMD_SIZE = 1 << PMD_SHIFT


class PageWalkLock(enum.Enum):
    """enum page_walk_lock (include/linux/pagewalk.h)."""

    PGWALK_RDLOCK = 0  # mmap_lock held for read, the VMAs are not locked
    PGWALK_WRLOCK = 1  # mmap_lock held for write: the walker write-locks each VMA
    PGWALK_WRLOCK_VERIFY = 2  # mmap_lock and every VMA already write-locked by the caller
    PGWALK_VMA_RDLOCK_VERIFY = 3  # the caller holds the VMA lock (read or write) only


PGWALK_RDLOCK = PageWalkLock.PGWALK_RDLOCK
PGWALK_WRLOCK = PageWalkLock.PGWALK_WRLOCK
PGWALK_WRLOCK_VERIFY = PageWalkLock.PGWALK_WRLOCK_VERIFY
PGWALK_VMA_RDLOCK_VERIFY = PageWalkLock.PGWALK_VMA_RDLOCK_VERIFY

# ->pmd_entry(walk, addr, next) and ->pte_hole(walk, addr, next): 0 goes on, < 0 stops the walk
RangeEntry = Callable[["MmWalk", int, int], Awaitable[int]]
# ->pte_entry(walk, pte, addr): called with the PTE page's lock held
PteEntry = Callable[["MmWalk", "Pte", int], Awaitable[int]]
# ->test_walk(walk, start, end): 0 walks the VMA, 1 skips it, < 0 stops the walk
TestWalk = Callable[["MmWalk", int, int], int]


@dataclass(frozen=True, slots=True)
class MmWalkOps:
    """struct mm_walk_ops: the callbacks the model's users set."""

    walk_lock: PageWalkLock
    pmd_entry: RangeEntry | None = None
    pte_entry: PteEntry | None = None
    pte_hole: RangeEntry | None = None
    test_walk: TestWalk | None = None


@dataclass(eq=False, slots=True)
class MmWalk:
    """struct mm_walk: what the callbacks see."""

    ops: MmWalkOps
    mm: MmStruct
    vma: VmAreaStruct | None = None
    private: Any = None


def process_mm_walk_lock(mm: MmStruct, walk_lock: PageWalkLock) -> None:
    if walk_lock is PGWALK_RDLOCK:
        mmap_assert_locked(mm)
    elif walk_lock is not PGWALK_VMA_RDLOCK_VERIFY:
        mmap_assert_write_locked(mm)


async def process_vma_walk_lock(vma: VmAreaStruct, walk_lock: PageWalkLock) -> None:
    """The VMA half of the lock mode (7.x: no #ifdef, the !PER_VMA_LOCK stubs
    make vma_start_write a no-op and the asserts mmap_lock asserts)."""
    if walk_lock is PGWALK_WRLOCK:
        await vma_start_write(vma)
    elif walk_lock is PGWALK_WRLOCK_VERIFY:
        vma_assert_write_locked(vma)
    elif walk_lock is PGWALK_VMA_RDLOCK_VERIFY:
        vma_assert_locked(vma)


def walk_page_test(walk: MmWalk, start: int, end: int) -> int:
    ops = walk.ops
    if ops.test_walk is not None:
        return ops.test_walk(walk, start, end)
    assert walk.vma is not None
    if walk.vma.vm_flags & VmFlags.VM_PFNMAP:
        return 1  # no struct pages behind it (the model's users set no ->pte_hole for it)
    return 0


def _pmd_present(mm: MmStruct, addr: int, nxt: int) -> bool:
    """The model's pmd_none(): no PTE is present in [addr, next) of one PTE page."""
    table = mm.pgtable
    lo, hi = addr >> PAGE_SHIFT, nxt >> PAGE_SHIFT
    if hi - lo <= len(table):
        return any(v in table for v in range(lo, hi))
    return any(lo <= v < hi for v in table)


async def walk_pte_range(walk: MmWalk, addr: int, end: int) -> int:
    """pte_offset_map_lock() over one PTE page, ->pte_entry for each present PTE."""
    mm = walk.mm
    pte_entry = walk.ops.pte_entry
    assert pte_entry is not None
    ptl = mm.ptl(addr)
    await ptl.lock()
    err = 0
    table = mm.pgtable
    for vpn in range(addr >> PAGE_SHIFT, end >> PAGE_SHIFT):
        pte = table.get(vpn)
        if pte is None:
            continue
        err = await pte_entry(walk, pte, vpn << PAGE_SHIFT)
        if err:
            break
    await ptl.unlock()
    return err


async def walk_pgd_range(walk: MmWalk, start: int, end: int) -> int:
    """walk_pgd_range() down to walk_pmd_range(): one PTE page at a time."""
    ops = walk.ops
    addr = start
    err = 0
    while addr < end:
        nxt = min((addr & ~(PMD_SIZE - 1)) + PMD_SIZE, end)
        if not _pmd_present(walk.mm, addr, nxt):
            if ops.pte_hole is not None:
                err = await ops.pte_hole(walk, addr, nxt)
        else:
            if ops.pmd_entry is not None:
                err = await ops.pmd_entry(walk, addr, nxt)
            if not err and ops.pte_entry is not None:
                err = await walk_pte_range(walk, addr, nxt)
        if err:
            break
        addr = nxt
    return err


async def walk_page_range(mm: MmStruct, start: int, end: int, ops: MmWalkOps,
                          private: Any = None) -> int:
    """Models walk_page_range() / walk_page_range_mm_unsafe() (7.x): the
    mmap_lock check once, then each VMA of [start, end) gets its lock-mode
    treatment before the test and the walk of its part of the range; a hole
    goes to ->pte_hole.  Returns 0, or the first non-zero callback result
    (a positive ->test_walk result only skips that VMA)."""
    if start >= end:
        return -errno.EINVAL
    walk = MmWalk(ops, mm, None, private)
    process_mm_walk_lock(mm, ops.walk_lock)
    vma = mm.mm_mt.find(start)
    err = 0
    while start < end:
        if vma is None:
            walk.vma = None
            nxt = end
            if ops.pte_hole is not None:
                err = await ops.pte_hole(walk, start, nxt)
        elif start < vma.vm_start:
            walk.vma = None
            nxt = min(end, vma.vm_start)
            if ops.pte_hole is not None:
                err = await ops.pte_hole(walk, start, nxt)
        else:
            await process_vma_walk_lock(vma, ops.walk_lock)
            walk.vma = vma
            nxt = min(end, vma.vm_end)
            vma = mm.mm_mt.find(vma.vm_end)
            err = walk_page_test(walk, start, nxt)
            if err > 0:
                err = 0
                start = nxt
                continue
            if err < 0:
                break
            err = await walk_pgd_range(walk, start, nxt)
        if err:
            break
        start = nxt
    return err


async def walk_page_vma(vma: VmAreaStruct, ops: MmWalkOps, private: Any = None) -> int:
    """Models walk_page_vma(): the whole of one VMA, with the same lock checks."""
    walk = MmWalk(ops, vma.vm_mm, vma, private)
    process_mm_walk_lock(vma.vm_mm, ops.walk_lock)
    await process_vma_walk_lock(vma, ops.walk_lock)
    err = walk_page_test(walk, vma.vm_start, vma.vm_end)
    if err > 0:
        return 0
    if err < 0:
        return err
    return await walk_pgd_range(walk, vma.vm_start, vma.vm_end)


__all__ = ["PGWALK_RDLOCK", "PGWALK_VMA_RDLOCK_VERIFY", "PGWALK_WRLOCK", "PGWALK_WRLOCK_VERIFY",
           "MmWalk", "MmWalkOps", "PageWalkLock", "walk_page_range", "walk_page_vma"]
