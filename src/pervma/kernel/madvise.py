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

from pervma.kernel.memory import zap_page_range
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
}
_VMA_READ_LOCK = (MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE)
_MMAP_READ_LOCK = (MADV_WILLNEED, MADV_COLD, MADV_PAGEOUT, MADV_REMOVE)


async def madvise_dontneed_free(vma: VmAreaStruct, start: int, end: int, advice: int) -> int:
    if vma.vm_flags & (VmFlags.VM_LOCKED | VmFlags.VM_PFNMAP) and advice != MADV_DONTNEED_LOCKED:
        return -errno.EINVAL
    if advice == MADV_FREE:
        if not vma.is_anonymous():
            return -errno.EINVAL
        return 0  # lazily freed: the bytes stay until reclaim, which pervma does not model
    await zap_page_range(vma.vm_mm, start, end)
    return 0


async def madvise_update_vma(vma: VmAreaStruct, prev: VmAreaStruct | None, start: int, end: int,
                             advice: int) -> tuple[int, VmAreaStruct]:
    setf, clearf = _FLAG_ADVICE[advice]
    if advice == MADV_WIPEONFORK and (vma.vm_file is not None or vma.vm_flags & VmFlags.VM_SHARED):
        return -errno.EINVAL, vma
    if advice == MADV_DONTDUMP and vma.vm_flags & VmFlags.VM_IO:
        return -errno.EINVAL, vma
    newflags = (vma.vm_flags | setf) & ~clearf
    if newflags == vma.vm_flags:
        return 0, vma
    r = await vma_modify_flags(prev, vma, start, end, newflags)
    if isinstance(r, int):
        return r, vma
    await vma_start_write(r)
    await vma_write_fields(r, "madvise_update_vma")
    r.vm_flags = newflags
    return 0, r


def madvise_behavior_valid(advice: int) -> bool:
    return advice in _FLAG_ADVICE or advice in _VMA_READ_LOCK or advice in _MMAP_READ_LOCK


async def do_madvise(mm: MmStruct, start: int, len_in: int, advice: int) -> int:
    await work("syscall")
    if not madvise_behavior_valid(advice):
        return -errno.EINVAL
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL
    length = (len_in + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    if len_in and not length:
        return -errno.EINVAL
    end = start + length
    if end < start:
        return -errno.EINVAL
    if end == start:
        return 0
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
        ret = await _walk(mm, start, end, advice)
        await mmap_read_unlock(mm)
        return ret
    if await mmap_write_lock_killable(mm):
        return -errno.EINTR
    ret = await _walk(mm, start, end, advice)
    await mmap_write_unlock(mm)
    return ret


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
