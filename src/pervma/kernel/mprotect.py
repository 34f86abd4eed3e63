"""mprotect(2) (mm/mprotect.c)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pervma.kernel.memory import change_protection
from pervma.kernel.mm import vm_flags_reset_once
from pervma.kernel.mm_types import PAGE_SHIFT, PAGE_SIZE, VmFlags
from pervma.kernel.mmap import (
    PROT_EXEC,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_READ,
    PROT_WRITE,
    calc_vm_prot_bits,
)
from pervma.kernel.mmap_lock import mmap_write_lock_killable, mmap_write_unlock, vma_start_write
from pervma.kernel.mmu_notifier import (
    MMU_NOTIFY_PROTECTION_VMA,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
    mmu_notifier_range_init,
)
from pervma.kernel.syscalls import ULONG_MAX, c_int_as_ulong, c_ulong
from pervma.kernel.util import security_vm_enough_memory_mm, vm_unacct_memory
from pervma.kernel.vma import vma_modify_flags, vma_write_fields
from pervma.sched import work
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

PROT_SEM = 0x8
VM_ACCESS = VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_EXEC


async def mprotect_fixup(vma: VmAreaStruct, prev: VmAreaStruct | None, start: int, end: int,
                         newflags: VmFlags) -> tuple[int, VmAreaStruct]:
    """Models mprotect_fixup() (6.18): a private mapping that becomes
    writable is charged (and may be refused, -ENOMEM) before anything
    changes; an unfaulted anonymous one that stops being writable is
    uncharged once the change is made; then split/merge via
    vma_modify_flags, write-lock the VMA, store the flags, update the PTEs."""
    oldflags = vma.vm_flags
    if newflags == oldflags:
        return 0, vma
    mm = vma.vm_mm
    nrpages = (end - start) >> PAGE_SHIFT
    charged = 0
    if newflags & VmFlags.VM_WRITE:
        if not oldflags & (VmFlags.VM_ACCOUNT | VmFlags.VM_WRITE | VmFlags.VM_SHARED | VmFlags.VM_NORESERVE):
            charged = nrpages
            if security_vm_enough_memory_mm(mm, charged):
                return -errno.ENOMEM, vma
            newflags |= VmFlags.VM_ACCOUNT
    elif oldflags & VmFlags.VM_ACCOUNT and vma.is_anonymous() and vma.anon_vma is None:
        newflags &= ~VmFlags.VM_ACCOUNT
    r = await vma_modify_flags(prev, vma, start, end, newflags)
    if isinstance(r, int):
        if charged:
            vm_unacct_memory(mm.system, charged)
        return r, vma
    vma = r
    if oldflags & VmFlags.VM_ACCOUNT and not newflags & VmFlags.VM_ACCOUNT:
        vm_unacct_memory(mm.system, nrpages)
    await vma_start_write(vma)
    await vma_write_fields(vma, "vm_flags_reset_once", Order.ONCE)
    vm_flags_reset_once(vma, newflags)
    # change_pmd_range() brackets the PTE updates with the notifier
    rng = mmu_notifier_range_init(MMU_NOTIFY_PROTECTION_VMA, 0, mm, start, end)
    await mmu_notifier_invalidate_range_start(rng)
    await change_protection(vma, start, end, newflags)
    await mmu_notifier_invalidate_range_end(rng)
    return 0, vma


async def do_mprotect_pkey(mm: MmStruct, start: int, length: int, prot: int) -> int:
    """Models do_mprotect_pkey() (6.18/7.0).  The argument checks come in the
    kernel's order (a zero length succeeds before the prot bits are
    validated; a range that wraps the address space is -ENOMEM; a
    PROT_GROWSUP request is -EINVAL on x86, which has no VM_GROWSUP).  After each mprotect_fixup() the walk resumes at the end of
    the VMA the iterator is left on (vma_iter_end()): when the changed range
    merged into the next VMA that is beyond the range just changed, and the
    walk must not look for a VMA starting inside the merged one."""
    await work("syscall")
    grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
    prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
    if grows == (PROT_GROWSDOWN | PROT_GROWSUP):
        return -errno.EINVAL
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if not length:
        return 0
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1) & ULONG_MAX
    end = (start + length) & ULONG_MAX
    if end <= start:
        return -errno.ENOMEM
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM):  # arch_validate_prot()
        return -errno.EINVAL
    if await mmap_write_lock_killable(mm):
        return -errno.EINTR
    # the simulator's price of the syscall's own work under the lock (the
    # lookups, checks and merge attempts the model does between steps)
    await work("mprotect_work")
    error = await _mprotect_locked(mm, start, end, prot, grows)
    await mmap_write_unlock(mm)
    return error


async def _mprotect_locked(mm: MmStruct, start: int, end: int, prot: int, grows: int) -> int:
    """The part of do_mprotect_pkey() under the mmap write lock (no await in
    a finally block: a driver may stop a thread at any step)."""
    vma = mm.mm_mt.find(start)
    if vma is None:
        return -errno.ENOMEM
    if grows & PROT_GROWSDOWN:
        if vma.vm_start >= end:
            return -errno.ENOMEM
        start = vma.vm_start
        if not vma.vm_flags & VmFlags.VM_GROWSDOWN:
            return -errno.EINVAL
    else:
        if vma.vm_start > start:
            return -errno.ENOMEM
        if grows & PROT_GROWSUP:
            return -errno.EINVAL  # no VMA is VM_GROWSUP on x86
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
        tmp = vma.vm_end  # vma_iter_end(): the merged VMA may reach further
        nstart = tmp
        vma = mm.mm_mt.find(tmp) if tmp < end else None
    if not error and tmp < end:
        error = -errno.ENOMEM
    return error


async def sys_mprotect(mm: MmStruct, start: int, length: int, prot: int) -> int:
    """SYSCALL_DEFINE3(mprotect), the model's syscall entry: ``prot`` is the
    C int glibc takes, sign-extended into the kernel's ``unsigned long``."""
    return await do_mprotect_pkey(mm, c_ulong(start), c_ulong(length), c_int_as_ulong(prot))
