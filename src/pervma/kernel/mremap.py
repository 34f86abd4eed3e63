"""mremap(2) (mm/mremap.c): shrink, grow in place, MREMAP_MAYMOVE,
MREMAP_FIXED and MREMAP_DONTUNMAP."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pervma.kernel.memory import move_page_tables
from pervma.kernel.mempolicy import mpol_put, vma_dup_policy
from pervma.kernel.mm import vm_flags_clear, vm_flags_set
from pervma.kernel.mm_types import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, VM_LOCKED_MASK, VmFlags
from pervma.kernel.mmap import MAP_FIXED, __get_unmapped_area, do_vmi_munmap, mlock_future_ok
from pervma.kernel.mmap_lock import mmap_write_lock_killable, mmap_write_unlock, vma_start_write
from pervma.kernel.rmap import anon_vma_clone, unlink_anon_vmas
from pervma.kernel.syscalls import ULONG_MAX, c_int_as_ulong, c_ulong
from pervma.kernel.userfaultfd import mremap_userfaultfd_complete, mremap_userfaultfd_prep
from pervma.kernel.util import security_vm_enough_memory_mm, vm_unacct_memory
from pervma.kernel.vma import (
    VmaMergeStruct,
    vma_link,
    vma_merge_extend,
    vma_merge_new_range,
    vma_set_range,
    vma_write_fields,
)
from pervma.kernel.vma_init import vm_area_dup, vm_area_free
from pervma.sched import work

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4


def PAGE_ALIGN(x: int) -> int:  # noqa: N802 - the kernel's name
    """Rounds up in an ``unsigned long``: a length in the last page wraps to 0."""
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1) & ULONG_MAX


async def copy_vma(vma: VmAreaStruct, addr: int, length: int, pgoff: int
                   ) -> tuple[VmAreaStruct | None, bool]:
    """Models copy_vma(): merge the destination with a neighbour if possible
    (the source as copied_from), else duplicate and link a new VMA.  Also
    returns need_rmap_locks: a merged destination whose vm_pgoff is not
    above the source's may come first in an rmap walk (i_mmap is ordered by
    vm_pgoff), so the PTE move must hold the rmap locks; a new VMA is linked
    after the source."""
    mm = vma.vm_mm
    if vma.is_anonymous() and vma.anon_vma is None:
        pgoff = addr >> PAGE_SHIFT
    prev, nxt = mm.mm_mt.prev_next(addr, addr + length)
    vmg = VmaMergeStruct(mm=mm, start=addr, end=addr + length, pgoff=pgoff, flags=vma.vm_flags,
                         file=vma.vm_file, anon_vma=vma.anon_vma, policy=vma.vm_policy,
                         uffd_ctx=vma.vm_userfaultfd_ctx, anon_name=vma.anon_name, prev=prev, next=nxt,
                         copied_from=vma)
    vma_start = vma.vm_start
    new = await vma_merge_new_range(vmg)
    if new is not None:
        if new.vm_start <= vma_start < new.vm_end:
            vma = new
        return new, new.vm_pgoff <= vma.vm_pgoff
    new = vm_area_dup(vma)
    vma_dup_policy(vma, new)
    vma_set_range(new, addr, addr + length, pgoff)
    if await anon_vma_clone(new, vma):
        mpol_put(mm, new.vm_policy, "copy_vma: anon_vma_clone failed")  # out_free_mempol
        vm_area_free(new, "copy_vma: anon_vma_clone failed")
        return None, False
    await vma_link(mm, new)
    return new, False


@dataclass(eq=False)
class VmaRemapStruct:
    """struct vma_remap_struct (7.0): one mremap() threaded through its steps."""

    mm: MmStruct
    addr: int
    old_len: int
    new_len: int
    flags: int
    new_addr: int
    vma: VmAreaStruct | None = None
    delta: int = 0
    remap_type: str = "invalid"  # MREMAP_NO_RESIZE / SHRINK / EXPAND
    mmap_locked: bool = False
    charged: int = 0
    uf: Any = None  # the vm_userfaultfd_ctx of a UFFD_EVENT_REMAP (mremap_userfaultfd_prep)

    def set_delta(self) -> None:
        """vrm_set_delta() and vrm_remap_type()."""
        self.delta = abs(self.old_len - self.new_len)
        if self.delta == 0:
            self.remap_type = "no_resize"
        elif self.old_len > self.new_len:
            self.remap_type = "shrink"
        else:
            self.remap_type = "expand"

    def implies_new_addr(self) -> bool:
        return bool(self.flags & (MREMAP_FIXED | MREMAP_DONTUNMAP))

    def will_map_new(self) -> bool:
        return self.remap_type == "expand" or self.implies_new_addr()

    def move_only(self) -> bool:
        return bool(self.flags & MREMAP_FIXED) and self.old_len == self.new_len

    def overlaps(self) -> bool:
        end_old = (self.addr + self.old_len) & ULONG_MAX
        end_new = (self.new_addr + self.new_len) & ULONG_MAX
        return self.addr < end_new and self.new_addr < end_old

    def charge(self, pages: int) -> bool:
        """vrm_calc_charge(): an accounted VMA is charged for the growth (the
        whole new length with MREMAP_DONTUNMAP, which keeps the old range)."""
        assert self.vma is not None
        if not self.vma.vm_flags & VmFlags.VM_ACCOUNT or not pages:
            return True
        if security_vm_enough_memory_mm(self.mm, pages):
            return False
        self.charged = pages
        return True

    def uncharge(self) -> None:
        if self.charged:
            vm_unacct_memory(self.mm.system, self.charged)
            self.charged = 0


def __check_map_count_against_split(mm: MmStruct, before_unmaps: bool) -> bool:
    """Room for the worst case: the copy and the source unmap add two VMAs,
    and a FIXED destination unmap or a shrink before them two more."""
    return mm.map_count + (2 if before_unmaps else 0) + 2 <= mm.config.max_map_count


async def unmap_source_vma(vrm: VmaRemapStruct) -> None:
    """Models unmap_source_vma(): VM_ACCOUNT is cleared on the source before
    the munmap (the destination was charged already) and set again on the
    remnants either side, so that what is left of the source keeps merging
    like an accounted private mapping."""
    mm = vrm.mm
    vma = vrm.vma
    assert vma is not None
    addr, length = vrm.addr, vrm.old_len
    accountable = bool(vma.vm_flags & VmFlags.VM_ACCOUNT) and not vrm.flags & MREMAP_DONTUNMAP
    vm_start = vm_end = 0
    if accountable:
        # vm_flags_clear() write-locks the VMA itself; locking first puts
        # the store's step after the lock's.
        await vma_start_write(vma)
        await vma_write_fields(vma, "vm_flags_clear(VM_ACCOUNT)")
        await vm_flags_clear(vma, VmFlags.VM_ACCOUNT)
        vm_start, vm_end = vma.vm_start, vma.vm_end
    err = await do_vmi_munmap(mm, addr, length, unlock=False)
    vrm.vma = None
    if err or not accountable:
        return
    remnants = []
    if vm_start < addr:
        remnants.append(mm.mm_mt.find_covering(addr - PAGE_SIZE))
    if vm_end > addr + length:
        remnants.append(mm.mm_mt.find(addr + length))
    for r in remnants:
        assert r is not None
        await vma_start_write(r)
        await vma_write_fields(r, "vm_flags_set(VM_ACCOUNT)")
        await vm_flags_set(r, VmFlags.VM_ACCOUNT)


async def move_vma(vrm: VmaRemapStruct) -> int:
    """Models move_vma(): write-lock the source before copying, copy the VMA,
    move the PTEs, then unmap the old range (or, with DONTUNMAP, keep it as a
    fresh empty mapping whose anon_vma is unlinked).  copy_vma() may merge
    the source itself into the destination's VMA (an unfaulted anonymous
    source next to its destination): the source is then that VMA."""
    mm = vrm.mm
    vma = vrm.vma
    assert vma is not None
    if not __check_map_count_against_split(mm, before_unmaps=False):  # prep_move_vma()
        return -errno.ENOMEM
    grow = vrm.new_len if vrm.flags & MREMAP_DONTUNMAP else max(vrm.new_len - vrm.old_len, 0)
    if not vrm.charge(grow >> PAGE_SHIFT):
        return -errno.ENOMEM
    await vma_start_write(vma)
    vma_start = vma.vm_start
    new_pgoff = vma.vm_pgoff + ((vrm.addr - vma.vm_start) >> PAGE_SHIFT)
    new_vma, need_rmap_locks = await copy_vma(vma, vrm.new_addr, vrm.new_len, new_pgoff)
    if new_vma is None:
        vrm.uncharge()
        return -errno.ENOMEM
    if new_vma.vm_start <= vma_start < new_vma.vm_end:
        vma = vrm.vma = new_vma
    await move_page_tables(vma, vrm.addr, new_vma, vrm.new_addr, vrm.old_len, need_rmap_locks)
    vrm.uf = await mremap_userfaultfd_prep(new_vma)
    mm.total_vm += vrm.new_len >> PAGE_SHIFT
    if vrm.flags & MREMAP_DONTUNMAP:
        # dontunmap_complete()
        await vma_write_fields(vma, "mremap: dontunmap_complete")
        await vm_flags_clear(vma, VM_LOCKED_MASK)
        if new_vma is not vma and vma.vm_start == vrm.addr and vma.vm_end == vrm.addr + vrm.old_len:
            await unlink_anon_vmas(vma)
        return vrm.new_addr
    await unmap_source_vma(vrm)
    return vrm.new_addr


def vma_expandable(vma: VmAreaStruct, delta: int) -> bool:
    """Models vma_expandable(): nothing may intersect the growth, and the
    whole range must pass get_unmapped_area(MAP_FIXED) (no guard-gap check)."""
    mm = vma.vm_mm
    end = vma.vm_end + delta
    if end < vma.vm_end or end > TASK_SIZE:
        return False
    return not mm.mm_mt.overlapping(vma.vm_end, end)


def check_mremap_params(vrm: VmaRemapStruct) -> int:
    """Models check_mremap_params() (7.0): everything that needs no VMA, checked
    before mmap_lock is taken; an overlapping FIXED destination is EINVAL even
    where nothing is mapped."""
    if vrm.flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
        return -errno.EINVAL
    if vrm.addr & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if not vrm.new_len or vrm.new_len > TASK_SIZE:
        return -errno.EINVAL
    if not vrm.implies_new_addr():
        return 0
    if vrm.new_addr > TASK_SIZE - vrm.new_len:
        return -errno.EINVAL
    if vrm.new_addr & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if not vrm.flags & MREMAP_MAYMOVE:
        return -errno.EINVAL
    if vrm.flags & MREMAP_DONTUNMAP and vrm.old_len != vrm.new_len:
        return -errno.EINVAL
    if vrm.overlaps():
        return -errno.EINVAL
    return 0


def check_prep_vma(vrm: VmaRemapStruct) -> int:
    """Models check_prep_vma() and resize_is_valid() (7.0).  Only a call that maps something new
    (growth, or a move) is checked against the VMA's end: an in-place
    shrink may unmap across VMAs and holes, and a same-size call without a
    move is a no-op that succeeds whatever lies at addr + old_len."""
    vma = vrm.vma
    if vma is None:
        return -errno.EFAULT
    vrm.set_delta()
    if not vrm.implies_new_addr():
        vrm.new_addr = vrm.addr
    if not vrm.will_map_new():
        return 0
    old_len, new_len = vrm.old_len, vrm.new_len
    if not old_len and not vma.vm_flags & (VmFlags.VM_SHARED | VmFlags.VM_MAYSHARE):
        return -errno.EINVAL
    if vrm.flags & MREMAP_DONTUNMAP and vma.vm_flags & (VmFlags.VM_DONTEXPAND | VmFlags.VM_PFNMAP):
        return -errno.EINVAL
    if vrm.remap_type == "shrink":
        old_len = new_len  # crossing the end is fine for the part being unmapped
    if old_len > vma.vm_end - vrm.addr:
        return -errno.EFAULT
    if new_len == old_len:
        return 0
    # resize_is_valid(): the growth's offset must not wrap; an mlock()ed VMA
    # may grow only within RLIMIT_MEMLOCK (-EAGAIN).
    pgoff = vma.vm_pgoff + ((vrm.addr - vma.vm_start) >> PAGE_SHIFT)
    if (pgoff + (new_len >> PAGE_SHIFT)) & ULONG_MAX < pgoff:
        return -errno.EINVAL
    if vma.vm_flags & (VmFlags.VM_DONTEXPAND | VmFlags.VM_PFNMAP):
        return -errno.EFAULT
    if not mlock_future_ok(vrm.mm, vma.vm_flags, vrm.delta):
        return -errno.EAGAIN
    return 0


async def shrink_vma(vrm: VmaRemapStruct, drop_lock: bool) -> int:
    """Models shrink_vma(): unmap [addr + new_len, addr + old_len); with
    drop_lock the munmap releases mmap_lock on success."""
    mm = vrm.mm
    res = await do_vmi_munmap(mm, vrm.addr + vrm.new_len, vrm.delta, unlock=drop_lock)
    vrm.vma = None
    if res:
        return res
    if drop_lock:
        vrm.mmap_locked = False
    else:
        vrm.vma = mm.mm_mt.find_covering(vrm.addr)
        if vrm.vma is None:
            return -errno.EFAULT
    return 0


def vrm_set_new_addr(vrm: VmaRemapStruct) -> int:
    """vrm_set_new_addr(): MAP_FIXED placement for MREMAP_FIXED, a hint for
    DONTUNMAP, else anywhere."""
    new_addr = vrm.new_addr if vrm.implies_new_addr() else 0
    res = __get_unmapped_area(vrm.mm, new_addr, vrm.new_len, MAP_FIXED if vrm.flags & MREMAP_FIXED else 0)
    if res < 0:
        return res
    vrm.new_addr = res
    return 0


async def mremap_to(vrm: VmaRemapStruct) -> int:
    """Models mremap_to(): unmap the destination first (MREMAP_FIXED), look
    the source up again (the unmap may have split it), shrink, then move."""
    mm = vrm.mm
    if vrm.flags & MREMAP_FIXED:
        err = await do_vmi_munmap(mm, vrm.new_addr, vrm.new_len, unlock=False)
        vrm.vma = None
        if err:
            return err
        vrm.vma = mm.mm_mt.find_covering(vrm.addr)
        if vrm.vma is None:
            return -errno.EFAULT
    if vrm.remap_type == "shrink":
        err = await shrink_vma(vrm, drop_lock=False)
        if err:
            return err
        vrm.old_len = vrm.new_len
    err = vrm_set_new_addr(vrm)
    if err:
        return err
    return await move_vma(vrm)


async def expand_vma(vrm: VmaRemapStruct) -> int:
    """Models expand_vma(): in place when [addr, addr + old_len) ends the VMA
    and the growth is free, else move (MREMAP_MAYMOVE) or -ENOMEM."""
    vma = vrm.vma
    assert vma is not None
    if vma.vm_end - vrm.addr == vrm.old_len and vma_expandable(vma, vrm.delta):
        if not vrm.charge(vrm.delta >> PAGE_SHIFT):  # expand_vma_in_place()
            return -errno.ENOMEM
        merged = await vma_merge_extend(vma, vrm.delta)
        if merged is None:
            vrm.uncharge()
            return -errno.ENOMEM
        vrm.vma = merged
        vrm.mm.total_vm += vrm.delta >> PAGE_SHIFT
        return vrm.addr
    if not vrm.flags & MREMAP_MAYMOVE:
        return -errno.ENOMEM
    err = vrm_set_new_addr(vrm)
    if err:
        return err
    return await move_vma(vrm)


async def mremap_at(vrm: VmaRemapStruct) -> int:
    if vrm.remap_type == "no_resize":
        return vrm.addr
    if vrm.remap_type == "shrink":
        res = await shrink_vma(vrm, drop_lock=True)
        return res if res else vrm.addr
    return await expand_vma(vrm)


async def remap_move(vrm: VmaRemapStruct) -> int:
    """Models remap_move() (6.17+): a same-size MREMAP_FIXED move may span
    several VMAs; each is moved in turn, the gaps between them kept.  A hole
    at the start is -EFAULT; an error part-way leaves the earlier VMAs moved."""
    mm = vrm.mm
    start, end = vrm.addr, (vrm.addr + vrm.old_len) & ULONG_MAX
    target_addr = vrm.new_addr
    res = -errno.EFAULT
    seen_vma = False
    last_end = 0
    cursor = start
    while True:
        vma = mm.mm_mt.find(cursor)
        if vma is None or vma.vm_start >= end:
            break
        addr = max(vma.vm_start, start)
        length = min(end, vma.vm_end) - addr
        if not seen_vma and start < vma.vm_start:
            return -errno.EFAULT
        offset = vma.vm_start - last_end if seen_vma else 0
        last_end = vma.vm_end
        cursor = vma.vm_end
        vrm.vma, vrm.addr = vma, addr
        vrm.new_addr = target_addr + offset
        vrm.old_len = vrm.new_len = length
        res_vma = check_prep_vma(vrm)
        if not res_vma:
            res_vma = await mremap_to(vrm)
        if res_vma < 0:
            return res_vma
        if not seen_vma:
            res = res_vma
        seen_vma = True
        target_addr = res_vma + vrm.new_len
    return res


async def do_mremap(mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int,
                    new_addr: int) -> int:
    """Models do_mremap() (7.0; the running 6.18 kernel agrees on every case
    the differential test drives): lengths page-aligned, parameters checked
    without the lock, then a same-size MREMAP_FIXED is remap_move() and
    anything else looks up the VMA at addr and resizes in place
    (mremap_at()) or moves (mremap_to())."""
    await work("syscall")
    vrm = VmaRemapStruct(mm, addr, PAGE_ALIGN(old_len), PAGE_ALIGN(new_len), flags, new_addr)
    res = check_mremap_params(vrm)
    if res:
        return res
    if await mmap_write_lock_killable(mm):
        return -errno.EINTR
    vrm.mmap_locked = True
    res = await _mremap_locked(vrm)
    if vrm.mmap_locked:
        await mmap_write_unlock(mm)
    # notify_uffd(): the remap event, with mmap_lock dropped
    await mremap_userfaultfd_complete(vrm.uf, vrm.addr, vrm.new_addr, vrm.old_len, res < 0)
    return res


async def _mremap_locked(vrm: VmaRemapStruct) -> int:
    """The part of do_mremap() under the mmap write lock (no await in a
    finally block: a driver may stop a thread at any step)."""
    mm = vrm.mm
    if not __check_map_count_against_split(mm, before_unmaps=True):
        return -errno.ENOMEM
    if vrm.move_only():
        return await remap_move(vrm)
    vrm.vma = mm.mm_mt.find_covering(vrm.addr)
    res = check_prep_vma(vrm)
    if res:
        return res
    return await (mremap_to(vrm) if vrm.implies_new_addr() else mremap_at(vrm))


async def sys_mremap(mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int, new_addr: int) -> int:
    """SYSCALL_DEFINE5(mremap), the model's syscall entry: every argument an
    ``unsigned long``, ``flags`` the C int glibc takes, sign-extended."""
    return await do_mremap(mm, c_ulong(addr), c_ulong(old_len), c_ulong(new_len), c_int_as_ulong(flags),
                           c_ulong(new_addr))
