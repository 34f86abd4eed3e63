"""madvise(2) (mm/madvise.c), with 7.x's per-VMA read-lock mode.

MADV_DONTNEED, MADV_DONTNEED_LOCKED and MADV_FREE run under the VMA read
lock when the range lies in one VMA of the caller's own mm (the previous
form of get_lock_mode(): guard install/remove still take mmap_lock for
read); if lock_vma_under_rcu fails or the checks fail they fall back to
mmap_read_lock, for the rest of the call.  Flag-changing advice takes the
mmap write lock and splits/merges like mprotect.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pervma.kernel.gup import Locked, PageBudget, faultin_page_range
from pervma.kernel.memory import zap_page_range
from pervma.kernel.mm import vm_flags_reset
from pervma.kernel.mm_types import PAGE_SIZE, VmFlags
from pervma.kernel.mmap_lock import (
    lock_vma_under_rcu,
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock_killable,
    mmap_write_unlock,
    vma_assert_locked,
    vma_end_read,
    vma_start_write,
)
from pervma.kernel.mmu_notifier import MMU_NOTIFY_CLEAR
from pervma.kernel.sites import call_site
from pervma.kernel.syscalls import ULONG_MAX, NotModelled, c_int, c_ulong
from pervma.kernel.vma import vma_modify_flags, vma_write_fields
from pervma.sched import work

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED = 0, 1, 2, 3, 4
MADV_FREE = 8
MADV_REMOVE = 9
MADV_DONTFORK, MADV_DOFORK = 10, 11
MADV_DONTDUMP, MADV_DODUMP = 16, 17
MADV_WIPEONFORK, MADV_KEEPONFORK = 18, 19
MADV_COLD, MADV_PAGEOUT = 20, 21
MADV_DONTNEED_LOCKED = 24
MADV_MERGEABLE, MADV_UNMERGEABLE = 12, 13
MADV_HUGEPAGE, MADV_NOHUGEPAGE = 14, 15
MADV_POPULATE_READ, MADV_POPULATE_WRITE = 22, 23
MADV_COLLAPSE = 25
MADV_HWPOISON, MADV_SOFT_OFFLINE = 100, 101
MADV_GUARD_INSTALL, MADV_GUARD_REMOVE = 102, 103

_FLAG_ADVICE = {
    MADV_NORMAL: (VmFlags.VM_NONE, VmFlags.VM_SEQ_READ | VmFlags.VM_RAND_READ),
    MADV_RANDOM: (VmFlags.VM_RAND_READ, VmFlags.VM_SEQ_READ),
    MADV_SEQUENTIAL: (VmFlags.VM_SEQ_READ, VmFlags.VM_RAND_READ),
    MADV_DONTFORK: (VmFlags.VM_DONTCOPY, VmFlags.VM_NONE),
    MADV_DOFORK: (VmFlags.VM_NONE, VmFlags.VM_DONTCOPY),
    MADV_DONTDUMP: (VmFlags.VM_DONTDUMP, VmFlags.VM_NONE),
    MADV_DODUMP: (VmFlags.VM_NONE, VmFlags.VM_DONTDUMP),
    MADV_WIPEONFORK: (VmFlags.VM_WIPEONFORK, VmFlags.VM_NONE),
    MADV_KEEPONFORK: (VmFlags.VM_NONE, VmFlags.VM_WIPEONFORK),
    MADV_HUGEPAGE: (VmFlags.VM_HUGEPAGE, VmFlags.VM_NOHUGEPAGE),  # hugepage_madvise()
    MADV_NOHUGEPAGE: (VmFlags.VM_NOHUGEPAGE, VmFlags.VM_HUGEPAGE),
    MADV_MERGEABLE: (VmFlags.VM_MERGEABLE, VmFlags.VM_NONE),  # ksm_madvise()
    MADV_UNMERGEABLE: (VmFlags.VM_NONE, VmFlags.VM_MERGEABLE),
}
# vma_ksm_compatible(): KSM leaves these alone (MADV_MERGEABLE is then ignored).
_KSM_INCOMPATIBLE = (VmFlags.VM_SHARED | VmFlags.VM_MAYSHARE | VmFlags.VM_PFNMAP | VmFlags.VM_IO
                     | VmFlags.VM_DONTEXPAND | VmFlags.VM_MIXEDMAP)
_VMA_READ_LOCK = (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE)
_MMAP_READ_LOCK = (MADV_WILLNEED, MADV_COLD, MADV_PAGEOUT, MADV_REMOVE)
# Valid on a 6.18 x86_64 kernel built with KSM, THP and MEMORY_FAILURE, not modelled.
_POPULATE = (MADV_POPULATE_READ, MADV_POPULATE_WRITE)
_NOT_MODELLED = (MADV_COLLAPSE, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE)
_MEMORY_FAILURE = (MADV_HWPOISON, MADV_SOFT_OFFLINE)


async def madvise_dontneed_free(vma: VmAreaStruct, start: int, end: int, advice: int) -> int:
    if vma.vm_flags & (VmFlags.VM_LOCKED | VmFlags.VM_PFNMAP) and advice != MADV_DONTNEED_LOCKED:
        return -errno.EINVAL
    if advice == MADV_FREE:
        if not vma.is_anonymous():
            return -errno.EINVAL
        return 0  # lazily freed: the bytes stay until reclaim, which pervma does not model
    await zap_page_range(vma.vm_mm, start, end, MMU_NOTIFY_CLEAR)  # zap_page_range_single_batched()
    return 0


async def madvise_update_vma(vma: VmAreaStruct, prev: VmAreaStruct | None, start: int, end: int,
                             advice: int) -> tuple[int, VmAreaStruct]:
    setf, clearf = _FLAG_ADVICE[advice]
    if advice == MADV_WIPEONFORK and (vma.vm_file is not None or vma.vm_flags & VmFlags.VM_SHARED):
        return -errno.EINVAL, vma
    if advice == MADV_DONTDUMP and vma.vm_flags & VmFlags.VM_IO:
        return -errno.EINVAL, vma
    if advice == MADV_MERGEABLE and vma.vm_flags & _KSM_INCOMPATIBLE:
        return 0, vma
    newflags = (vma.vm_flags | setf) & ~clearf
    if newflags == vma.vm_flags:
        return 0, vma
    r = await vma_modify_flags(prev, vma, start, end, newflags)
    if isinstance(r, int):
        return r, vma
    await vma_start_write(r)
    await vma_write_fields(r, "madvise_update_vma")
    vm_flags_reset(r, newflags)
    return 0, r


def madvise_behavior_valid(advice: int) -> bool:
    return (advice in _FLAG_ADVICE or advice in _VMA_READ_LOCK or advice in _MMAP_READ_LOCK
            or advice in _POPULATE or advice in _NOT_MODELLED or advice in _MEMORY_FAILURE)


def is_valid_madvise(start: int, len_in: int, advice: int) -> bool:
    """Models is_valid_madvise() (6.18): a known advice, an aligned start, a
    length that does not round up from the last page to 0, and a range that
    does not wrap the address space (all in ``unsigned long``)."""
    if not madvise_behavior_valid(advice):
        return False
    if start & (PAGE_SIZE - 1):
        return False
    length = (len_in + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1) & ULONG_MAX
    if len_in and not length:
        return False
    return (start + length) & ULONG_MAX >= start


@call_site("mm/madvise.c:try_vma_read_lock", pre_form="stub-fallback",
           pre_series="MADVISE_VMA_READ_LOCK advice (DONTNEED, DONTNEED_LOCKED, FREE) tries "
           "lock_vma_under_rcu() for a range in one VMA of the caller's mm, else takes "
           "mmap_read_lock for the walk",
           series="the same call, per-VMA locks in every config",
           scenarios=("madvise-dontneed-vs-munmap",),
           note="newer mm/madvise.c (with is_vma_lock_sufficient()) also runs guard "
           "install/remove under the VMA read lock; the model keeps them under mmap_read_lock")
async def do_madvise(mm: MmStruct, start: int, len_in: int, advice: int) -> int:
    """Models do_madvise() (6.18): madvise_should_skip() validates everything
    before any lock or VMA is touched (so a wrapping range is -EINVAL and
    nothing is zapped), an empty range succeeds, then the advice runs under
    its lock mode.  Memory-failure injection needs CAP_SYS_ADMIN (-EPERM for
    the model's tasks); other valid advice the model lacks raises
    NotModelled."""
    await work("syscall")
    if not is_valid_madvise(start, len_in, advice):
        return -errno.EINVAL
    end = start + ((len_in + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
    if end == start:
        return 0
    if advice in _MEMORY_FAILURE:
        return -errno.EPERM
    if advice in _NOT_MODELLED:
        raise NotModelled(f"madvise: advice {advice} is valid on Linux but not modelled")
    if advice in _POPULATE:
        return await madvise_populate(mm, start, end, advice == MADV_POPULATE_WRITE)
    if advice in _VMA_READ_LOCK:
        vma = await lock_vma_under_rcu(mm, start)
        if vma is not None:
            if end <= vma.vm_end and vma.vm_userfaultfd_ctx is None:
                vma_assert_locked(vma)
                ret = await madvise_dontneed_free(vma, start, end, advice)
                await vma_end_read(vma)
                return ret
            await vma_end_read(vma)
        await mmap_read_lock(mm)
        ret = await _walk(mm, start, end, advice)
        await mmap_read_unlock(mm)
        return ret
    if advice in _MMAP_READ_LOCK:
        await mmap_read_lock(mm)
        try:
            ret = await _walk(mm, start, end, advice)
        except NotModelled:  # MADV_REMOVE on shmem, before anything changed
            await mmap_read_unlock(mm)
            raise
        await mmap_read_unlock(mm)
        return ret
    if await mmap_write_lock_killable(mm):
        return -errno.EINTR
    ret = await _walk(mm, start, end, advice)
    await mmap_write_unlock(mm)
    return ret


async def madvise_populate(mm: MmStruct, start: int, end: int, write: bool) -> int:
    """Models madvise_populate() (7.0): under mmap_read_lock (madvise's lock
    mode for MADV_POPULATE_*), fault the range in with faultin_page_range()
    (``kernel/gup.py``): no VMA at the cursor is -ENOMEM, a VMA that cannot
    be read (or, for MADV_POPULATE_WRITE, written) or is VM_IO/VM_PFNMAP is
    -EINVAL, a fault that fails is -EFAULT; what came before stays populated.
    The lock is held from each check through its faults; a fault that drops
    it (a userfaultfd wait) has it taken again before the range goes on."""
    budget = PageBudget(mm)
    locked = Locked(True)
    await mmap_read_lock(mm)
    ret = 0
    while start < end:
        pages = await faultin_page_range(mm, start, end, write, locked, budget)
        if not locked.held:
            await mmap_read_lock(mm)
            locked.held = True
        if pages < 0:
            ret = pages
            break
        start += pages * PAGE_SIZE
    await mmap_read_unlock(mm)
    return ret


async def sys_madvise(mm: MmStruct, start: int, len_in: int, advice: int) -> int:
    """SYSCALL_DEFINE3(madvise), the model's syscall entry: ``advice`` is a C int."""
    return await do_madvise(mm, c_ulong(start), c_ulong(len_in), c_int(advice))


def madvise_remove(vma: VmAreaStruct) -> int:
    """Models madvise_remove()'s checks: only a shared writable file mapping
    may have a hole punched (which the model does not do)."""
    if vma.vm_flags & VmFlags.VM_LOCKED:
        return -errno.EINVAL
    if vma.vm_file is None:
        return -errno.EINVAL
    if (vma.vm_flags & (VmFlags.VM_SHARED | VmFlags.VM_MAYWRITE)) != VmFlags.VM_SHARED | VmFlags.VM_MAYWRITE:
        return -errno.EACCES
    raise NotModelled("madvise: MADV_REMOVE (punching a hole in a file) is not modelled")


async def _walk(mm: MmStruct, start: int, end: int, advice: int) -> int:
    """madvise_walk_vmas(): apply to each VMA piece; a hole gives -ENOMEM
    after the mapped parts were handled."""
    unmapped_error = 0
    vma = mm.mm_mt.find(start)
    prev = None
    if vma is not None:
        prev, _ = mm.mm_mt.prev_next(vma.vm_start, vma.vm_end)
        if start > vma.vm_start:
            prev = vma
    while vma is not None and vma.vm_start < end:
        if start < vma.vm_start:
            unmapped_error = -errno.ENOMEM
            start = vma.vm_start
        tmp = min(vma.vm_end, end)
        if advice in _FLAG_ADVICE:
            err, vma = await madvise_update_vma(vma, prev, start, tmp, advice)
        elif advice in _VMA_READ_LOCK:
            err = await madvise_dontneed_free(vma, start, tmp, advice)
        elif advice == MADV_REMOVE:
            err = madvise_remove(vma)
        elif advice in (MADV_COLD, MADV_PAGEOUT):
            # can_madv_lru_vma(): locked and PFN-mapped VMAs are not on the LRU.
            err = -errno.EINVAL if vma.vm_flags & (VmFlags.VM_LOCKED | VmFlags.VM_PFNMAP) else 0
        else:
            err = 0
        if err:
            return err
        prev = vma
        start = tmp
        if start >= end:
            break
        vma = mm.mm_mt.find(start)
    if start < end:
        unmapped_error = -errno.ENOMEM
    return unmapped_error
