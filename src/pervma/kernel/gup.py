"""Populating a range with GUP: mm/gup.c's __mm_populate(),
populate_vma_page_range() and faultin_page_range().

Followed: mm/gup.c of Linux 7.0 (as since 6.9, when MADV_POPULATE_(READ|WRITE)
moved onto FOLL_MADV_POPULATE).  What matters to the lock protocol: the
caller holds mmap_lock for read from the VMA lookup through the flags check
to the faults, which GUP takes with handle_mm_fault() under that lock (no VMA
lock, no fault-path fast path).  A fault may drop the lock (VM_FAULT_RETRY or
VM_FAULT_COMPLETED, e.g. a userfaultfd wait, since GUP passes
FAULT_FLAG_ALLOW_RETRY with FOLL_UNLOCKABLE); the caller then takes it again
and looks the VMA up afresh.

Modelled per page: ``__get_user_pages()``'s follow-then-fault loop is one
handle_mm_fault() per page (which reads the PTE and returns at once when it
is already there and good enough); the work is bounded by memory as the
model's other populates are: each page costs one free page of the budget
the caller passes, and an exhausted budget is -ENOMEM.  Not modelled: fatal
signals (-EINTR), FOLL_MLOCK's LRU side, gate areas.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pervma.kernel.memory import (
    FAULT_FLAG_ALLOW_RETRY,
    FAULT_FLAG_KILLABLE,
    FAULT_FLAG_TRIED,
    FAULT_FLAG_WRITE,
    VM_FAULT_COMPLETED,
    VM_FAULT_OOM,
    VM_FAULT_RETRY,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
    handle_mm_fault,
)
from pervma.kernel.mm_types import PAGE_SIZE, VmFlags
from pervma.kernel.mmap_lock import mmap_read_lock, mmap_read_unlock

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

VM_LOCKONFAULT = VmFlags.VM_LOCKONFAULT
_ACCESS = VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_EXEC


class PageBudget:
    """The free pages a populate may still use (the model's bound on its work)."""

    __slots__ = ("pages",)

    def __init__(self, mm: MmStruct) -> None:
        self.pages = mm.system.mem_pages - mm.system.page_cachep.active


class Locked:
    """GUP's ``int *locked``: whether the caller still holds mmap_lock for read."""

    __slots__ = ("held",)

    def __init__(self, held: bool) -> None:
        self.held = held


def vm_fault_to_errno(fault: int) -> int:
    """vm_fault_to_errno() for the model's fault codes (0: no error)."""
    if fault & VM_FAULT_OOM:
        return -errno.ENOMEM
    if fault & (VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV):
        return -errno.EFAULT
    return 0


async def faultin_pages(vma: VmAreaStruct, start: int, end: int, write: bool, locked: Locked,
                        budget: PageBudget, tried: bool = False) -> int:
    """__get_user_pages() over [start, end) of ``vma``, checked by the caller,
    with ``locked.held`` on entry: fault each page in under mmap_read_lock
    (the first with FAULT_FLAG_TRIED when ``tried``: a retry after a fault
    dropped the lock).  Returns the pages done, or a negative errno when the
    first one failed; stops early, with ``locked.held`` cleared, when a fault
    dropped the lock."""
    done = 0
    addr = start
    flags = FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE | (FAULT_FLAG_WRITE if write else 0)
    if tried:
        flags |= FAULT_FLAG_TRIED
    while addr < end:
        if budget.pages <= 0:
            return done or -errno.ENOMEM
        budget.pages -= 1
        fault = await handle_mm_fault(vma, addr, flags)
        if fault & (VM_FAULT_RETRY | VM_FAULT_COMPLETED):  # the lock is gone
            locked.held = False
            return done
        err = vm_fault_to_errno(fault)
        if err:
            return done or err
        done += 1
        addr += PAGE_SIZE
        flags &= ~FAULT_FLAG_TRIED
    return done


async def populate_vma_page_range(vma: VmAreaStruct, start: int, end: int, locked: Locked,
                                  budget: PageBudget) -> int:
    """populate_vma_page_range(): the range lies in ``vma`` and mmap_lock is
    held for read.  VM_LOCKONFAULT VMAs are left to fault later (all pages
    counted done); a write fault where the VMA is private and writable, else
    FOLL_FORCE reads where the VMA has any access; a PROT_NONE VMA is
    -EFAULT (check_vma_flags() without FOLL_FORCE)."""
    flags = vma.vm_flags
    if flags & VM_LOCKONFAULT:
        return (end - start) // PAGE_SIZE
    if not flags & _ACCESS:
        return -errno.EFAULT
    write = (flags & (VmFlags.VM_WRITE | VmFlags.VM_SHARED)) == VmFlags.VM_WRITE
    return await faultin_pages(vma, start, end, write, locked, budget)


async def __mm_populate(mm: MmStruct, start: int, length: int, ignore_errors: bool) -> int:
    """__mm_populate(): under mmap_read_lock (taken here, and again after a
    fault dropped it), fault [start, start + length) in VMA by VMA: VM_IO and
    VM_PFNMAP VMAs are skipped, an error ends the populate (or, with
    ``ignore_errors``, the VMA).  Returns 0 or a negative errno."""
    budget = PageBudget(mm)
    end = start + length
    locked = Locked(False)
    vma: VmAreaStruct | None = None
    nstart = start
    ret = 0
    while nstart < end:
        if not locked.held:
            await mmap_read_lock(mm)
            locked.held = True
            vma = _find_vma_intersection(mm, nstart, end)
        elif vma is not None and nstart >= vma.vm_end:
            vma = _find_vma_intersection(mm, vma.vm_end, end)
        if vma is None:
            break
        nend = min(end, vma.vm_end)
        if vma.vm_flags & (VmFlags.VM_IO | VmFlags.VM_PFNMAP):
            nstart = nend
            continue
        nstart = max(nstart, vma.vm_start)
        ret = await populate_vma_page_range(vma, nstart, nend, locked, budget)
        if ret < 0:
            if ignore_errors:
                ret = 0
                nstart = nend
                continue
            break
        nstart += ret * PAGE_SIZE
        ret = 0
    if locked.held:
        await mmap_read_unlock(mm)
    return ret


def _find_vma_intersection(mm: MmStruct, start: int, end: int) -> VmAreaStruct | None:
    """find_vma_intersection(): the first VMA that overlaps [start, end)."""
    vma = mm.mm_mt.find(start)
    return vma if vma is not None and vma.vm_start < end else None


async def faultin_page_range(mm: MmStruct, start: int, end: int, write: bool, locked: Locked,
                             budget: PageBudget) -> int:
    """faultin_page_range() with FOLL_MADV_POPULATE, mmap_lock held for read
    (``locked.held``): the VMA at each address must exist (-ENOMEM) and allow
    the access without FOLL_FORCE, and not be VM_IO/VM_PFNMAP (-EINVAL); a
    failed fault is -EFAULT, no memory -ENOMEM.  After a fault that dropped
    the lock, __get_user_pages_locked() takes it again and goes on (with
    FAULT_FLAG_TRIED).  Returns the pages done, or a negative errno when
    none was."""
    done = 0
    addr = start
    tried = False
    while addr < end:
        if not locked.held:
            await mmap_read_lock(mm)
            locked.held = tried = True
        vma = mm.mm_mt.find_covering(addr)
        if vma is None:
            return done or -errno.ENOMEM
        flags = vma.vm_flags
        if flags & (VmFlags.VM_IO | VmFlags.VM_PFNMAP) or not flags & (
                VmFlags.VM_WRITE if write else VmFlags.VM_READ):
            return done or -errno.EINVAL
        n = await faultin_pages(vma, addr, min(end, vma.vm_end), write, locked, budget, tried)
        tried = False
        if n < 0:
            return done or n
        done += n
        addr += n * PAGE_SIZE
    return done
