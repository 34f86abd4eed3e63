"""Architecture page-fault handlers (arch/x86/mm/fault.c, arch/arm64/mm/fault.c).

Both try the per-VMA lock first for user-mode faults, fall back to
mmap_lock (lock_mm_and_find_vma) on a failed lookup or a RETRY, and count
the VMA_LOCK_* events exactly where 7.0 does.  They differ in one place: x86
re-judges an access error under mmap_lock (no counter), arm64 decides it
under the VMA lock and counts SUCCESS.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from pervma.kernel.memory import (
    FAULT_FLAG_DEFAULT,
    FAULT_FLAG_INSTRUCTION,
    FAULT_FLAG_TRIED,
    FAULT_FLAG_USER,
    FAULT_FLAG_VMA_LOCK,
    FAULT_FLAG_WRITE,
    VM_FAULT_COMPLETED,
    VM_FAULT_ERROR,
    VM_FAULT_MAJOR,
    VM_FAULT_OOM,
    VM_FAULT_RETRY,
    VM_FAULT_SIGBUS,
    handle_mm_fault,
)
from pervma.kernel.mm_types import VM_ACCESS_FLAGS, VmFlags
from pervma.kernel.mmap_lock import (
    lock_mm_and_find_vma,
    lock_vma_under_rcu,
    mmap_read_unlock,
    vma_end_read,
)
from pervma.kernel.sites import call_site
from pervma.kernel.task import current_task, fatal_signal_pending
from pervma.kernel.vmstat import count_vm_event, count_vm_vma_lock_event
from pervma.sched import work

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

_TRAP = work("trap")

SEGV_MAPERR = 1
SEGV_ACCERR = 2
SIGBUS_FAULT = 7  # pervma's code for a SIGBUS result
OOM_FAULT = 12


_VM_WRITE = VmFlags.VM_WRITE


def x86_access_error(write: bool, exec_: bool, vma: VmAreaStruct) -> bool:
    if write:
        return not vma.vm_flags & _VM_WRITE
    return not vma.vm_flags & VM_ACCESS_FLAGS


def arm64_vm_flags(write: bool, exec_: bool) -> VmFlags:
    if exec_:
        return VmFlags.VM_EXEC
    if write:
        return VmFlags.VM_WRITE
    return VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_EXEC


def _result(fault: int) -> int:
    if fault & VM_FAULT_OOM:
        return OOM_FAULT
    if fault & VM_FAULT_SIGBUS:
        return SIGBUS_FAULT
    if fault & VM_FAULT_ERROR:
        return SEGV_ACCERR
    return 0


def _fault_flags(write: bool, exec_: bool, user: bool) -> int:
    flags = FAULT_FLAG_DEFAULT
    if write:
        flags |= FAULT_FLAG_WRITE
    if exec_:
        flags |= FAULT_FLAG_INSTRUCTION
    if user:
        flags |= FAULT_FLAG_USER
    return flags


@call_site("arch/arm64/mm/fault.c:do_page_fault", pre_form="stub-fallback",
           pre_series="user faults try lock_vma_under_rcu() (no #ifdef since 6.6), a permission "
           "miss is decided under the VMA lock; else lock_mm_and_find_vma() under mmap_lock",
           series="the same code, now with per-VMA locks in every config (SMP=n included)",
           scenarios=("fault-vs-munmap", "fault-vs-mprotect-split", "fault-vs-mremap",
                      "fork-vs-fault"), arch="arm64")
@call_site("arch/x86/mm/fault.c:do_user_addr_fault", pre_form="stub-fallback",
           pre_series="user faults try lock_vma_under_rcu() (the #ifdef went in 6.6; x86 "
           "selects ARCH_SUPPORTS_PER_VMA_LOCK since 6.4), an access error or RETRY goes on "
           "to lock_mm_and_find_vma() under mmap_lock",
           series="the same code in every config, SMP=n included (the series' x86 patch is "
           "unseen: pervma follows 7.0)",
           scenarios=("fault-vs-munmap", "fault-vs-mprotect-split", "fork-vs-fault",
                      "mremap-dontunmap-vs-fault", "fault-vs-mremap", "stack-growth-vs-fault",
                      "fault-vs-merge", "mmap-vs-fault", "two-faults-vs-writer",
                      "vma-reuse-by-another-mm", "vma-reuse-same-address",
                      "detach-vs-transient-reader", "killable-write-lock-abort",
                      "mmap-write-downgrade", "exit-vs-fault", "brk-vs-fault"))
async def _arch_fault(mm: MmStruct, address: int, write: bool, exec_: bool, user: bool,
                      arm64: bool) -> int:
    """The shape x86 and arm64 share: trap, per-VMA fast path for user-mode
    faults, then mmap_lock.  The fast path is inline, as in the kernel's
    handlers: a failed lookup, an x86 access error or a RETRY goes on to
    mmap_lock; anything else delivers its si_code (0: done)."""
    flags = _fault_flags(write, exec_, user)
    await _TRAP
    count_vm_event(mm, "pgfault")
    if flags & FAULT_FLAG_USER:
        vma = await lock_vma_under_rcu(mm, address)
        if vma is not None:
            if arm64 and not vma.vm_flags & arm64_vm_flags(write, exec_):
                # arm64 decides permission faults under the VMA lock.
                await vma_end_read(vma)
                count_vm_vma_lock_event(mm, "vma_lock_success")
                return SEGV_ACCERR
            if not arm64 and x86_access_error(write, exec_, vma):
                # x86 re-judges access errors under mmap_lock, uncounted.
                await vma_end_read(vma)
            else:
                fault = await handle_mm_fault(vma, address, flags | FAULT_FLAG_VMA_LOCK)
                if not fault & (VM_FAULT_RETRY | VM_FAULT_COMPLETED):
                    await vma_end_read(vma)
                if not fault & VM_FAULT_RETRY:
                    count_vm_vma_lock_event(mm, "vma_lock_success")
                    return _result(fault)
                count_vm_vma_lock_event(mm, "vma_lock_retry")
                if fault & VM_FAULT_MAJOR:
                    flags |= FAULT_FLAG_TRIED
                if fatal_signal_pending(current_task()):
                    return 0
    return await _lock_mmap(mm, address, flags, write, exec_, arm64)


def do_user_addr_fault(mm: MmStruct, address: int, write: bool, exec_: bool = False,
                       user: bool = True) -> Coroutine[Any, Any, int]:
    """Models do_user_addr_fault() (x86, 7.x).  Returns 0 when the access
    may be retried, else the si_code of the signal (SEGV_MAPERR/ACCERR)."""
    return _arch_fault(mm, address, write, exec_, user, False)


def do_page_fault(mm: MmStruct, address: int, write: bool, exec_: bool = False,
                  user: bool = True) -> Coroutine[Any, Any, int]:
    """Models do_page_fault() (arm64, 7.x): a missing permission is decided
    under the VMA lock and counted as SUCCESS."""
    return _arch_fault(mm, address, write, exec_, user, True)


async def _lock_mmap(mm: MmStruct, address: int, flags: int, write: bool, exec_: bool,
                     arm64: bool) -> int:
    tsk = current_task()
    while True:
        vma = await lock_mm_and_find_vma(mm, address)
        if vma is None:
            return SEGV_MAPERR
        if arm64:
            bad = not vma.vm_flags & arm64_vm_flags(write, exec_)
        else:
            bad = x86_access_error(write, exec_, vma)
        if bad:
            await mmap_read_unlock(mm)
            return SEGV_ACCERR
        fault = await handle_mm_fault(vma, address, flags)
        if fault & VM_FAULT_RETRY and fatal_signal_pending(tsk):
            return 0
        if fault & VM_FAULT_COMPLETED:
            return 0
        if fault & VM_FAULT_RETRY:
            flags |= FAULT_FLAG_TRIED
            continue
        await mmap_read_unlock(mm)
        return _result(fault)


def handle_user_fault(mm: MmStruct, address: int, write: bool,
                      exec_: bool = False) -> Coroutine[Any, Any, int]:
    """The architecture's handler, chosen by Config.arch."""
    if mm.config.arch == "arm64":
        return do_page_fault(mm, address, write, exec_)
    return do_user_addr_fault(mm, address, write, exec_)
