"""mremap(2) (mm/mremap.c): shrink, grow in place, MREMAP_MAYMOVE,
MREMAP_FIXED and MREMAP_DONTUNMAP."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pervma.kernel.memory import move_page_tables
from pervma.kernel.mm_types import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, VM_LOCKED_MASK, VmFlags
from pervma.kernel.mmap import do_vmi_munmap, get_unmapped_area, vm_start_gap
from pervma.kernel.mmap_lock import mmap_write_lock_killable, mmap_write_unlock, vma_start_write
from pervma.kernel.rmap import anon_vma_clone, unlink_anon_vmas
from pervma.kernel.vma import (
    VmaMergeStruct,
    vma_link,
    vma_merge_extend,
    vma_merge_new_range,
    vma_write_fields,
)
from pervma.kernel.vma_init import vm_area_dup
from pervma.sched import work

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4


def PAGE_ALIGN(x: int) -> int:  # noqa: N802 - the kernel's name
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


async def copy_vma(vma: VmAreaStruct, addr: int, length: int, pgoff: int) -> VmAreaStruct | None:
    """Models copy_vma(): merge the destination with a neighbour if possible
    (the source as copied_from), else duplicate and link a new VMA."""
    mm = vma.vm_mm
    if vma.is_anonymous() and vma.anon_vma is None:
        pgoff = addr >> PAGE_SHIFT
    prev, nxt = mm.mm_mt.prev_next(addr, addr + length)
    vmg = VmaMergeStruct(mm=mm, start=addr, end=addr + length, pgoff=pgoff, flags=vma.vm_flags,
                         file=vma.vm_file, anon_vma=vma.anon_vma, policy=vma.vm_policy,
                         uffd_ctx=vma.vm_userfaultfd_ctx, anon_name=vma.anon_name, prev=prev, next=nxt,
                         copied_from=vma)
    new = await vma_merge_new_range(vmg)
    if new is not None:
        return new
    new = vm_area_dup(vma)
    new.vm_start, new.vm_end, new.vm_pgoff = addr, addr + length, pgoff
    anon_vma_clone(new, vma)
    await vma_link(mm, new)
    return new


async def move_vma(vma: VmAreaStruct, old_addr: int, old_len: int, new_len: int, new_addr: int,
                   flags: int) -> int:
    """Models move_vma(): write-lock the source before copying, copy the VMA,
    move the PTEs, then unmap the old range (or, with DONTUNMAP, keep it as a
    fresh empty mapping whose anon_vma is unlinked)."""
    mm = vma.vm_mm
    if mm.map_count >= mm.config.max_map_count - 3:
        return -errno.ENOMEM
    await vma_start_write(vma)
    new_pgoff = vma.vm_pgoff + ((old_addr - vma.vm_start) >> PAGE_SHIFT)
    new_vma = await copy_vma(vma, new_addr, new_len, new_pgoff)
    if new_vma is None:
        return -errno.ENOMEM
    await move_page_tables(vma, old_addr, new_vma, new_addr, old_len)
    if flags & MREMAP_DONTUNMAP:
        await vma_write_fields(vma, "mremap: dontunmap_complete")
        vma.vm_flags &= ~VM_LOCKED_MASK
        if new_vma is not vma and vma.vm_start == old_addr and vma.vm_end == old_addr + old_len:
            unlink_anon_vmas(vma)
        return new_addr
    if vma.vm_flags & VmFlags.VM_ACCOUNT:
        vma.vm_flags &= ~VmFlags.VM_ACCOUNT
    err = await do_vmi_munmap(mm, old_addr, old_len, unlock=False)
    if err:
        return err
    return new_addr


def vma_expandable(vma: VmAreaStruct, delta: int) -> bool:
    mm = vma.vm_mm
    end = vma.vm_end + delta
    if end < vma.vm_end or end > TASK_SIZE:
        return False
    nxt = mm.mm_mt.find(vma.vm_end)
    return nxt is None or vm_start_gap(nxt) >= end


async def do_mremap(mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int,
                    new_addr: int) -> int:
    await work("syscall")
    if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
        return -errno.EINVAL
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        return -errno.EINVAL
    if flags & MREMAP_DONTUNMAP and (not flags & MREMAP_MAYMOVE or old_len != new_len):
        return -errno.EINVAL
    if addr & (PAGE_SIZE - 1):
        return -errno.EINVAL
    old_len, new_len = PAGE_ALIGN(old_len), PAGE_ALIGN(new_len)
    if not new_len:
        return -errno.EINVAL
    if flags & MREMAP_FIXED:
        if new_addr & (PAGE_SIZE - 1):
            return -errno.EINVAL
        if new_len > TASK_SIZE or new_addr > TASK_SIZE - new_len:
            return -errno.EINVAL
        if addr + old_len > new_addr and new_addr + new_len > addr:
            return -errno.EINVAL
    if await mmap_write_lock_killable(mm):
        return -errno.EINTR
    try:
        return await _mremap_locked(mm, addr, old_len, new_len, flags, new_addr)
    finally:
        await mmap_write_unlock(mm)


async def _mremap_locked(mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int,
                         new_addr: int) -> int:
    vma = mm.mm_mt.find_covering(addr)
    if vma is None:
        return -errno.EFAULT
    if not old_len and not vma.vm_flags & (VmFlags.VM_SHARED | VmFlags.VM_MAYSHARE):
        return -errno.EINVAL
    if flags & MREMAP_FIXED:
        err = await do_vmi_munmap(mm, new_addr, new_len, unlock=False)
        if err:
            return err
        vma = mm.mm_mt.find_covering(addr)
        if vma is None:
            return -errno.EFAULT
        if old_len > new_len:
            err = await do_vmi_munmap(mm, addr + new_len, old_len - new_len, unlock=False)
            if err:
                return err
            old_len = new_len
            vma = mm.mm_mt.find_covering(addr)
            assert vma is not None
        if old_len > vma.vm_end - addr:
            return -errno.EFAULT
        if new_len > old_len and vma.vm_flags & (VmFlags.VM_DONTEXPAND | VmFlags.VM_PFNMAP):
            return -errno.EFAULT
        if mm.map_count >= mm.config.max_map_count - 2:
            return -errno.ENOMEM
        return await move_vma(vma, addr, old_len, new_len, new_addr, flags)
    if old_len > vma.vm_end - addr:
        return -errno.EFAULT
    if flags & MREMAP_DONTUNMAP:
        addr2 = get_unmapped_area(mm, 0, new_len, 0)
        if addr2 < 0:
            return addr2
        return await move_vma(vma, addr, old_len, new_len, addr2, flags)
    if old_len >= new_len:
        if old_len > new_len:
            err = await do_vmi_munmap(mm, addr + new_len, old_len - new_len, unlock=False)
            if err:
                return err
        return addr
    if new_len > old_len and vma.vm_flags & (VmFlags.VM_DONTEXPAND | VmFlags.VM_PFNMAP):
        return -errno.EFAULT
    if addr + old_len == vma.vm_end and vma_expandable(vma, new_len - old_len):
        if await vma_merge_extend(vma, new_len - old_len) is None:
            return -errno.ENOMEM
        mm.total_vm += (new_len - old_len) >> PAGE_SHIFT
        return addr
    if not flags & MREMAP_MAYMOVE:
        return -errno.ENOMEM
    if mm.map_count >= mm.config.max_map_count - 2:
        return -errno.ENOMEM
    dest = get_unmapped_area(mm, 0, new_len, 0)
    if dest < 0:
        return dest
    return await move_vma(vma, addr, old_len, new_len, dest, flags)



