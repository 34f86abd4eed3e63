"""mlock(2), mlock2(2) and munlock(2): mm/mlock.c, with __mm_populate()
from mm/gup.c.

Followed: mm/mlock.c of linux-next ``ea85fbbc`` (7.0-era: vma_modify_flags,
mlock_vma_pages_range walking with PGWALK_WRLOCK_VERIFY) and mm/gup.c's
__mm_populate.

``do_mlock`` takes mmap_lock for write (killable: -EINTR), checks
RLIMIT_MEMLOCK (the model's tasks lack CAP_IPC_LOCK; pages already locked in
the range are not counted twice), and ``apply_vma_lock_flags`` runs
``mlock_fixup`` on each VMA of the range: VM_SPECIAL VMAs are left alone,
others are merged or split by ``vma_modify_flags`` and get the new flags
through ``mlock_vma_pages_range``: write-lock, set the flags (with VM_IO for
the duration of the walk, as the kernel does so that rmap walkers see a
VM_LOCKED VMA is still being set up), walk the present pages with
PGWALK_WRLOCK_VERIFY, clear VM_IO.  A hole is -ENOMEM.  After mmap_lock is
dropped, mlock populates the range (``__mm_populate``, ``kernel/gup.py``):
under mmap_read_lock, VMA by VMA, each page faulted in by GUP under that lock,
skipping VM_IO/VM_PFNMAP and VM_LOCKONFAULT VMAs; a fault that fails is
-ENOMEM (-EFAULT turned into the POSIX error), running out of memory
-EAGAIN.

Not modelled: the LRU side (PG_mlocked, mlock_count, the unevictable list):
the walk visits each present page under its PTE lock and changes nothing;
mm->locked_vm is computed from the VMAs, as mmap.py's mlock_future_ok() does;
mlockall/munlockall.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.gup import __mm_populate
from pervma.kernel.mm import vm_flags_reset, vm_flags_reset_once
from pervma.kernel.mm_types import PAGE_SHIFT, PAGE_SIZE, VM_LOCKED_MASK, VM_SPECIAL, VmFlags
from pervma.kernel.mmap import RLIMIT_MEMLOCK
from pervma.kernel.mmap_lock import (
    mmap_write_lock_killable,
    mmap_write_unlock,
    vma_start_write,
)
from pervma.kernel.pagewalk import PGWALK_WRLOCK_VERIFY, MmWalk, MmWalkOps, walk_page_range
from pervma.kernel.syscalls import ULONG_MAX, c_int, c_ulong
from pervma.kernel.vma import vma_modify_flags, vma_write_fields
from pervma.sched import work
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

MLOCK_ONFAULT = 0x01
VM_LOCKED = VmFlags.VM_LOCKED
VM_LOCKONFAULT = VmFlags.VM_LOCKONFAULT


async def mlock_pte_range(walk: MmWalk, addr: int, end: int) -> int:
    """Models mlock_pte_range(): under the PTE page's lock, each present
    normal page would be mlock_folio()ed or munlock_folio()ed (the LRU
    state is not modelled: the page is only looked at)."""
    mm = walk.mm
    ptl = mm.ptl(addr)
    await ptl.lock()
    for vpn in range(addr >> PAGE_SHIFT, end >> PAGE_SHIFT):
        pte = mm.pgtable.get(vpn)
        if pte is not None and pte.page.freed:
            debug.kasan_check(pte.page, "mlock_pte_range", "page")
    await ptl.unlock()
    return 0


mlock_walk_ops = MmWalkOps(walk_lock=PGWALK_WRLOCK_VERIFY, pmd_entry=mlock_pte_range)


async def mlock_vma_pages_range(vma: VmAreaStruct, start: int, end: int, newflags: VmFlags) -> None:
    """Models mlock_vma_pages_range() (7.0): VM_IO marks the VMA while its
    pages are walked, the walk verifies the VMA is write-locked."""
    if newflags & VM_LOCKED:
        newflags |= VmFlags.VM_IO
    await vma_start_write(vma)
    await vma_write_fields(vma, "mlock_vma_pages_range: vm_flags_reset_once", Order.ONCE)
    vm_flags_reset_once(vma, newflags)
    await walk_page_range(vma.vm_mm, start, end, mlock_walk_ops)
    if newflags & VmFlags.VM_IO:
        newflags &= ~VmFlags.VM_IO
        await vma_write_fields(vma, "mlock_vma_pages_range: vm_flags_reset_once", Order.ONCE)
        vm_flags_reset_once(vma, newflags)


async def mlock_fixup(vma: VmAreaStruct, prev: VmAreaStruct | None, start: int, end: int,
                      newflags: VmFlags) -> tuple[int, VmAreaStruct]:
    """Models mlock_fixup(): (error, the new prev)."""
    oldflags = vma.vm_flags
    if newflags == oldflags or oldflags & VM_SPECIAL:
        return 0, vma
    r = await vma_modify_flags(prev, vma, start, end, newflags)
    if isinstance(r, int):
        return r, vma
    if newflags & VM_LOCKED and oldflags & VM_LOCKED:
        await vma_start_write(r)
        await vma_write_fields(r, "mlock_fixup: vm_flags_reset")
        vm_flags_reset(r, newflags)
    else:
        await mlock_vma_pages_range(r, start, end, newflags)
    return 0, r


async def apply_vma_lock_flags(mm: MmStruct, start: int, length: int, flags: VmFlags) -> int:
    """Models apply_vma_lock_flags(): every VMA of the range, which must have
    no hole (-ENOMEM, after the VMAs before the hole were changed)."""
    end = start + length
    if end > ULONG_MAX:
        return -errno.EINVAL
    if end == start:
        return 0
    vma = mm.mm_mt.find_covering(start)
    if vma is None:
        return -errno.ENOMEM
    prev, _ = mm.mm_mt.prev_next(vma.vm_start, vma.vm_end)
    if start > vma.vm_start:
        prev = vma
    nstart = start
    tmp = vma.vm_start
    cur: VmAreaStruct | None = vma
    while cur is not None and cur.vm_start < end:
        if cur.vm_start != tmp:
            return -errno.ENOMEM
        newflags = (cur.vm_flags & ~VM_LOCKED_MASK) | flags
        tmp = min(cur.vm_end, end)
        err, prev = await mlock_fixup(cur, prev, nstart, tmp, newflags)
        if err:
            return err
        tmp = prev.vm_end
        nstart = tmp
        cur = mm.mm_mt.find(tmp)
    if tmp < end:
        return -errno.ENOMEM
    return 0


def count_mm_mlocked_page_nr(mm: MmStruct, start: int, length: int) -> int:
    """Pages of [start, start + len) that are already VM_LOCKED."""
    end = min(start + length, ULONG_MAX)
    count = 0
    for v in mm.mm_mt.overlapping(start, end):
        if v.vm_flags & VM_LOCKED:
            count += min(end, v.vm_end) - max(start, v.vm_start)
    return count >> PAGE_SHIFT


def locked_vm(mm: MmStruct) -> int:
    """mm->locked_vm, computed from the VMAs (as mmap.py's mlock_future_ok())."""
    return sum(v.pages() for v in mm.mm_mt.snapshot() if v.vm_flags & VM_LOCKED)


def __mlock_posix_error_return(retval: int) -> int:
    if retval == -errno.EFAULT:
        return -errno.ENOMEM
    if retval == -errno.ENOMEM:
        return -errno.EAGAIN
    return retval


async def do_mlock(mm: MmStruct, start: int, length: int, flags: VmFlags) -> int:
    """Models do_mlock() (7.0); the model's tasks may mlock (RLIMIT_MEMLOCK
    is not 0) but lack CAP_IPC_LOCK."""
    length = (length + (start & (PAGE_SIZE - 1)) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1) & ULONG_MAX
    start &= ~(PAGE_SIZE - 1)
    lock_limit = RLIMIT_MEMLOCK >> PAGE_SHIFT
    locked = length >> PAGE_SHIFT
    if await mmap_write_lock_killable(mm):
        return -errno.EINTR
    locked += locked_vm(mm)
    if locked > lock_limit:
        locked -= count_mm_mlocked_page_nr(mm, start, length)
    error = -errno.ENOMEM
    if locked <= lock_limit:
        error = await apply_vma_lock_flags(mm, start, length, flags)
    await mmap_write_unlock(mm)
    if error:
        return error
    error = await __mm_populate(mm, start, length, False)
    return __mlock_posix_error_return(error) if error else 0


async def sys_mlock(mm: MmStruct, start: int, length: int) -> int:
    await work("syscall")
    return await do_mlock(mm, c_ulong(start), c_ulong(length), VM_LOCKED)


async def sys_mlock2(mm: MmStruct, start: int, length: int, flags: int) -> int:
    """SYSCALL_DEFINE3(mlock2): ``flags`` is an int; only MLOCK_ONFAULT."""
    await work("syscall")
    flags = c_int(flags)
    if flags & ~MLOCK_ONFAULT:
        return -errno.EINVAL
    vm_flags = VM_LOCKED | (VM_LOCKONFAULT if flags & MLOCK_ONFAULT else VmFlags.VM_NONE)
    return await do_mlock(mm, c_ulong(start), c_ulong(length), vm_flags)


async def sys_munlock(mm: MmStruct, start: int, length: int) -> int:
    """SYSCALL_DEFINE2(munlock): no limit check and no populate."""
    await work("syscall")
    start, length = c_ulong(start), c_ulong(length)
    length = (length + (start & (PAGE_SIZE - 1)) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1) & ULONG_MAX
    start &= ~(PAGE_SIZE - 1)
    if await mmap_write_lock_killable(mm):
        return -errno.EINTR
    ret = await apply_vma_lock_flags(mm, start, length, VmFlags.VM_NONE)
    await mmap_write_unlock(mm)
    return ret


__all__ = ["MLOCK_ONFAULT", "do_mlock", "mlock_fixup", "sys_mlock", "sys_mlock2", "sys_munlock"]
