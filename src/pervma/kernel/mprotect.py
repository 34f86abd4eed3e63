"""mprotect(2) (mm/mprotect.c)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pervma.kernel.memory import change_protection
from pervma.kernel.mm_types import PAGE_SIZE, VmFlags
from pervma.kernel.mmap import (
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_READ,
    PROT_WRITE,
    calc_vm_prot_bits,
)
from pervma.kernel.mmap_lock import mmap_write_lock_killable, mmap_write_unlock, vma_start_write
from pervma.kernel.vma import vma_modify_flags, vma_write_fields
from pervma.sched import work

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

VM_ACCESS = VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_EXEC


async def mprotect_fixup(vma: VmAreaStruct, prev: VmAreaStruct | None, start: int, end: int,
                         newflags: VmFlags) -> tuple[int, VmAreaStruct]:
    """Models mprotect_fixup(): account, split/merge via vma_modify_flags,
    write-lock the VMA, store the flags, update the PTEs."""
    oldflags = vma.vm_flags
    if newflags == oldflags:
        return 0, vma
    if newflags & VmFlags.VM_WRITE:
        if not oldflags & (VmFlags.VM_ACCOUNT | VmFlags.VM_WRITE | VmFlags.VM_SHARED | VmFlags.VM_NORESERVE):
            newflags |= VmFlags.VM_ACCOUNT
    elif oldflags & VmFlags.VM_ACCOUNT and vma.is_anonymous() and vma.anon_vma is None:
        newflags &= ~VmFlags.VM_ACCOUNT
    r = await vma_modify_flags(prev, vma, start, end, newflags)
    if isinstance(r, int):
        return r, vma
    vma = r
    await vma_start_write(vma)
    await vma_write_fields(vma, "vm_flags_reset_once")
    vma.vm_flags = newflags
    await change_protection(vma, start, end, newflags)
    return 0, vma


async def do_mprotect_pkey(mm: MmStruct, start: int, length: int, prot: int) -> int:
    await work("syscall")
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN | PROT_GROWSUP | 0x8):
        return -errno.EINVAL
    grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
    if grows == (PROT_GROWSDOWN | PROT_GROWSUP):
        return -errno.EINVAL
    if not length:
        return 0
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    end = start + length
    if end <= start:
        return -errno.ENOMEM
    if await mmap_write_lock_killable(mm):
        return -errno.EINTR
    try:
        vma = mm.mm_mt.find(start)
        if vma is None:
            return -errno.ENOMEM
        if grows & PROT_GROWSDOWN:
            if vma.vm_start >= end:
                return -errno.ENOMEM
            start = vma.vm_start
            if not vma.vm_flags & VmFlags.VM_GROWSDOWN:
                return -errno.EINVAL
        elif vma.vm_start > start:
            return -errno.ENOMEM
        prev, _ = mm.mm_mt.prev_next(vma.vm_start, vma.vm_end)
        if start > vma.vm_start:
            prev = vma
        nstart, tmp = start, vma.vm_start
        reqprot = calc_vm_prot_bits(prot & (PROT_READ | PROT_WRITE | PROT_EXEC))
        error = 0
        while vma is not None and vma.vm_start < end:
            if vma.vm_start != tmp:
                error = -errno.ENOMEM
                break
            newflags = reqprot | (vma.vm_flags & ~VM_ACCESS)
            if (newflags & ~VmFlags(int(newflags) >> 4)) & VM_ACCESS:
                error = -errno.EACCES
                break
            tmp = min(vma.vm_end, end)
            error, vma = await mprotect_fixup(vma, prev, nstart, tmp, newflags)
            if error:
                break
            prev = vma
            nstart = tmp
            vma = mm.mm_mt.find(tmp) if tmp < end else None
        if not error and tmp < end:
            error = -errno.ENOMEM
        return error
    finally:
        await mmap_write_unlock(mm)
