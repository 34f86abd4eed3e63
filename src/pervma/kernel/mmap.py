"""Address-space syscalls (mm/mmap.c, mm/vma.c): mmap_region, munmap, brk,
stack expansion, fork's dup_mmap and exit_mmap.

Each takes the locks of kernel-protocol.md §4: mmap_lock for write, and a
VMA write lock on every VMA before it changes.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from pervma.kernel import debug
from pervma.kernel.filemap import i_mmap_lock_write, i_mmap_unlock_write
from pervma.kernel.gup import __mm_populate
from pervma.kernel.interval_tree import vma_interval_tree_insert_after
from pervma.kernel.memory import copy_page_range, zap_page_range
from pervma.kernel.mempolicy import mpol_put, vma_dup_policy
from pervma.kernel.mm import vm_flags_clear, vm_flags_init
from pervma.kernel.mm_types import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, VM_LOCKED_MASK, File, VmFlags
from pervma.kernel.mmap_lock import (
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_lock_killable,
    mmap_write_unlock,
    mmdrop,
    vma_mark_attached,
    vma_mark_detached,
    vma_start_write,
    vma_start_write_killable,
)
from pervma.kernel.mmu_notifier import mmu_notifier_release
from pervma.kernel.rmap import (
    __anon_vma_prepare,
    anon_vma_fork,
    anon_vma_interval_tree_post_update_vma,
    anon_vma_interval_tree_pre_update_vma,
    anon_vma_lock_write,
    anon_vma_unlock_write,
)
from pervma.kernel.syscalls import (
    IS_ERR_VALUE,
    ULONG_MAX,
    NotModelled,
    c_int_as_ulong,
    c_ulong,
    err_value,
)
from pervma.kernel.userfaultfd import dup_userfaultfd, userfaultfd_unmap_complete
from pervma.kernel.util import OVERCOMMIT_NEVER, security_vm_enough_memory_mm, vm_unacct_memory
from pervma.kernel.vma import (
    VmaMergeStruct,
    VmaMunmapStruct,
    do_vmi_align_munmap,
    reattach_vmas,
    remove_vma,
    unlink_vmas_rmap,
    vma_iter_store_new,
    vma_iter_update,
    vma_link_file,
    vma_merge_new_range,
    vma_set_range,
    vma_write_fields,
    vms_complete_munmap_vmas,
    vms_gather_munmap_vmas,
)
from pervma.kernel.vma_init import vm_area_alloc, vm_area_dup, vm_area_free
from pervma.sched import work
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

PROT_READ, PROT_WRITE, PROT_EXEC, PROT_NONE = 0x1, 0x2, 0x4, 0x0
PROT_GROWSDOWN, PROT_GROWSUP = 0x01000000, 0x02000000
MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE = 0x01, 0x02, 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_GROWSDOWN = 0x0100
MAP_DENYWRITE = 0x0800
MAP_EXECUTABLE = 0x1000
MAP_LOCKED = 0x2000
MAP_NORESERVE = 0x4000
MAP_POPULATE = 0x8000
MAP_NONBLOCK = 0x10000
MAP_STACK = 0x20000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_FIXED_NOREPLACE = 0x100000
MAP_DROPPABLE = 0x08
MAP_UNINITIALIZED = 0x4000000
MAP_32BIT = 0x40  # x86
MAP_HUGE_SHIFT = 26
# The flags a MAP_SHARED_VALIDATE file mapping may carry without -EOPNOTSUPP.
LEGACY_MAP_MASK = (MAP_SHARED | MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_DENYWRITE | MAP_EXECUTABLE
                   | MAP_UNINITIALIZED | MAP_GROWSDOWN | MAP_LOCKED | MAP_NORESERVE | MAP_POPULATE
                   | MAP_NONBLOCK | MAP_STACK | MAP_HUGETLB | MAP_32BIT | (21 << MAP_HUGE_SHIFT)
                   | (30 << MAP_HUGE_SHIFT))

STACK_GUARD_GAP = 256 << PAGE_SHIFT
RLIMIT_STACK = 8 << 20
RLIMIT_MEMLOCK = 8 << 20  # systemd's and the kernel's default since 5.16 (MLOCK_LIMIT)
MMAP_MIN_ADDR = 0x10000


def PAGE_ALIGN(x: int) -> int:  # noqa: N802 - the kernel's name
    """Rounds up in an ``unsigned long``: a length in the last page wraps to 0."""
    return (x + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1) & ULONG_MAX


def calc_vm_prot_bits(prot: int) -> VmFlags:
    f = VmFlags.VM_NONE
    if prot & PROT_READ:
        f |= VmFlags.VM_READ
    if prot & PROT_WRITE:
        f |= VmFlags.VM_WRITE
    if prot & PROT_EXEC:
        f |= VmFlags.VM_EXEC
    return f


def vm_start_gap(vma: VmAreaStruct) -> int:
    if vma.vm_flags & VmFlags.VM_GROWSDOWN:
        return max(vma.vm_start - STACK_GUARD_GAP, 0)
    return vma.vm_start


def get_unmapped_area(mm: MmStruct, addr: int, length: int, flags: int) -> int:
    """arch_get_unmapped_area_topdown() (x86, 6.18): a MAP_FIXED address is
    returned unchecked; a hint (already page-aligned by round_hint_to_min())
    is used if that range is free, else the highest gap below mmap_base that
    fits."""
    if length > TASK_SIZE:
        return -errno.ENOMEM
    if flags & MAP_FIXED:
        return addr
    if addr:
        addr &= ~(PAGE_SIZE - 1)
        if TASK_SIZE - length >= addr >= MMAP_MIN_ADDR:  # mmap_address_hint_valid()
            vma = mm.mm_mt.find(addr)
            prev, _ = mm.mm_mt.prev_next(addr, addr + length)
            if (vma is None or addr + length <= vm_start_gap(vma)) and (prev is None or addr >= prev.vm_end):
                return addr
    low, high = MMAP_MIN_ADDR, mm.mmap_base
    upper = TASK_SIZE
    for vma in (*reversed(mm.mm_mt.snapshot()), None):
        gap_start = vma.vm_end if vma is not None else 0
        s, e = max(gap_start, low), min(upper, high)
        if e - s >= length:
            return e - length
        if vma is None:
            break
        upper = vm_start_gap(vma)
        if upper <= low:
            break
    return -errno.ENOMEM


def hugetlb_get_unmapped_area(mm: MmStruct, file: File, addr: int, length: int, flags: int) -> int:
    """hugetlbfs's get_unmapped_area: a length and a MAP_FIXED address must
    be multiples of the huge page size (-EINVAL); a hint is rounded up to one."""
    hmask = (1 << file.hugetlb_shift) - 1
    if length & hmask:
        return -errno.EINVAL
    if flags & MAP_FIXED:
        return -errno.EINVAL if addr & hmask else addr
    if addr:
        addr = (addr + hmask) & ~hmask & ULONG_MAX
    return get_unmapped_area(mm, addr, length, flags)


def __get_unmapped_area(mm: MmStruct, addr: int, length: int, flags: int, file: File | None = None) -> int:
    """Models __get_unmapped_area() (6.18): the arch's answer, then the checks
    every answer must pass.  A MAP_FIXED address in the last page of the
    address space *is* an error value (mmap(2**64 - 1, ..., MAP_FIXED)
    returns -EPERM), and an address below mmap_min_addr is refused by
    security_mmap_addr() (the model's tasks lack CAP_SYS_RAWIO)."""
    if length > TASK_SIZE:
        return -errno.ENOMEM
    if file is not None and file.hugetlb_shift:
        addr = hugetlb_get_unmapped_area(mm, file, addr, length, flags)
    else:
        addr = get_unmapped_area(mm, addr, length, flags)
    if addr < 0:
        return addr
    if IS_ERR_VALUE(addr):
        return err_value(addr)
    if addr > TASK_SIZE - length:
        return -errno.ENOMEM
    if addr & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if addr < MMAP_MIN_ADDR:  # security_mmap_addr() -> cap_mmap_addr()
        return -errno.EPERM
    return addr


def accountable_mapping(flags: VmFlags) -> bool:
    return not flags & VmFlags.VM_NORESERVE and (flags & (VmFlags.VM_SHARED | VmFlags.VM_WRITE)) == VmFlags.VM_WRITE


async def mmap_region(mm: MmStruct, file: File | None, addr: int, length: int, vm_flags: VmFlags,
                      pgoff: int) -> int:
    """Models __mmap_region() (7.0): unmap what MAP_FIXED covers (gather and
    detach), charge an accountable mapping (__mmap_prepare(): only the pages
    the VMAs it replaces had not charged already), try to merge with a
    neighbour, else allocate a VMA, write-lock it *before* it becomes
    visible, insert it, and finish it off."""
    end = addr + length
    vms = VmaMunmapStruct(mm, addr, end)
    overlap = mm.mm_mt.overlapping(addr, end)
    if overlap:
        err = await vms_gather_munmap_vmas(vms, overlap[0])
        if err:
            return err
    charged = 0
    replaced_accounted = vms.nr_accounted
    if accountable_mapping(vm_flags) and not (file is not None and file.hugetlb_shift):
        charged = (length >> PAGE_SHIFT) - vms.nr_accounted
        if charged and security_vm_enough_memory_mm(mm, charged):
            return await _mmap_abort(vms, -errno.ENOMEM)
        vms.nr_accounted = 0
        vm_flags |= VmFlags.VM_ACCOUNT
    elif file is not None and file.shmem and not vm_flags & VmFlags.VM_NORESERVE:
        # shmem_zero_setup() -> shmem_acct_size(): a shared anonymous mapping
        # is checked like a private one.  The model does not keep the shmem
        # object's charge (it has no inode lifetime to uncharge it at).
        pages = length >> PAGE_SHIFT
        if security_vm_enough_memory_mm(mm, pages):
            return await _mmap_abort(vms, -errno.ENOMEM)
        vm_unacct_memory(mm.system, pages)
    remaining = [v for v in mm.mm_mt.snapshot() if v not in vms.vmas]
    prev = next((v for v in reversed(remaining) if v.vm_end <= addr), None)
    nxt = next((v for v in remaining if v.vm_start >= end), None)
    if mm.map_count - len(vms.vmas) + 1 > mm.config.max_map_count:
        if charged:
            vm_unacct_memory(mm.system, charged)
        return await _mmap_abort(vms, -errno.ENOMEM)
    err = file_mmap_refuses(file, vm_flags)
    if err:
        # A file mapping's ->mmap runs after vms_clean_up_area() cleared what
        # MAP_FIXED replaces, so vms_abort_munmap_vmas() cannot put it back:
        # the range is left unmapped (as 6.18 does).  The replaced VMAs'
        # charge, handed to the new mapping, goes with them.
        if vm_flags & VmFlags.VM_ACCOUNT and charged + replaced_accounted:
            vm_unacct_memory(mm.system, charged + replaced_accounted)
        if vms.vmas:
            await vma_iter_update(mm, remove=vms.vmas, label="vms_abort_munmap_vmas")
            await vms_complete_munmap_vmas(vms)
        return err
    merged: VmAreaStruct | None = None
    if vms.vmas:
        await vma_iter_update(mm, remove=vms.vmas, label="vms_clear_ptes: clear tree")
    if file is None:
        vmg = VmaMergeStruct(mm=mm, start=addr, end=end, pgoff=pgoff, flags=vm_flags, prev=prev, next=nxt)
        merged = await vma_merge_new_range(vmg)
    if merged is not None:
        vma = merged
    else:
        new = await __mmap_new_vma(mm, file, addr, end, vm_flags, pgoff, prev, nxt)
        if isinstance(new, int):
            if charged:
                vm_unacct_memory(mm.system, charged)
            return new
        vma = new
    # __mmap_complete()
    if vms.vmas:
        await zap_page_range(mm, addr, end)
        await unlink_vmas_rmap(vms.vmas)
        for v in vms.vmas:
            await remove_vma(v)
        mm.map_count -= len(vms.vmas)
        mm.total_vm -= sum(v.pages() for v in vms.vmas)
        if vms.nr_accounted:
            vm_unacct_memory(mm.system, vms.nr_accounted)
    mm.total_vm += length >> PAGE_SHIFT
    await vma_write_fields(vma, "vma_set_page_prot", Order.ONCE)
    return addr


def file_mmap_refuses(file: File | None, vm_flags: VmFlags) -> int:
    """The errors of the model's files' ->mmap: hugetlbfs finds no huge page
    to reserve on the model's machine (-ENOMEM); a regular disk file is not
    DAX, so it cannot honour MAP_SYNC (ext4/xfs: -EOPNOTSUPP)."""
    if file is None:
        return 0
    if file.hugetlb_shift:
        return -errno.ENOMEM
    regular = not file.shmem and file.vm_ops is not None and file.vm_ops.special is None
    if vm_flags & VmFlags.VM_SYNC and regular:
        return -errno.EOPNOTSUPP
    return 0


async def _mmap_abort(vms: VmaMunmapStruct, err: int) -> int:
    """vms_abort_munmap_vmas(): the VMAs a failed MAP_FIXED gathered go back."""
    if vms.vmas:
        await reattach_vmas(vms)
    return err


async def __mmap_new_vma(mm: MmStruct, file: File | None, addr: int, end: int, vm_flags: VmFlags,
                         pgoff: int, prev: VmAreaStruct | None, nxt: VmAreaStruct | None) -> VmAreaStruct | int:
    vma = vm_area_alloc(mm, "__mmap_new_vma")
    vma_set_range(vma, addr, end, pgoff)
    vm_flags_init(vma, vm_flags)
    await work("vma_alloc")
    if file is not None:
        vma.vm_file = file
        vma.vm_ops = file.vm_ops
        if file.vm_ops is not None and file.vm_ops.special is not None:
            # The driver's ->mmap: binder and TCP mappings are special (never
            # merged).  Drivers use vm_flags_set/mod(), whose vma_start_write()
            # only stamps a VMA not yet in the tree; pervma stores directly.
            special = VmFlags.VM_MIXEDMAP | VmFlags.VM_DONTEXPAND
            if file.vm_ops.special == "binder":
                special |= VmFlags.VM_DONTCOPY
            vm_flags_init(vma, vma.vm_flags | special)
        # A file mapping may still merge once ->mmap ran (mmap_prepare).
        vmg = VmaMergeStruct(mm=mm, start=addr, end=end, pgoff=pgoff, flags=vm_flags, file=file,
                             prev=prev, next=nxt)
        merged = await vma_merge_new_range(vmg)
        if merged is not None:
            mm.system.vm_area_cachep.free(vma, "__mmap_new_vma: merged")
            return merged
    if not mm.config.bug("B05"):  # historical 6.4 (B05): published without the write lock
        await vma_start_write(vma)
    await vma_iter_store_new(mm, vma)
    mm.map_count += 1
    await vma_link_file(vma)
    return vma


def round_hint_to_min(hint: int) -> int:
    """A hint below mmap_min_addr becomes mmap_min_addr (page-aligned)."""
    hint &= ~(PAGE_SIZE - 1)
    if hint and hint < MMAP_MIN_ADDR:
        return PAGE_ALIGN(MMAP_MIN_ADDR)
    return hint


def calc_vm_flag_bits(flags: int) -> VmFlags:
    """The MAP_* flags that become vm_flags (MAP_STACK: VM_NOHUGEPAGE, 6.7+
    with THP; MAP_SYNC: VM_SYNC whatever the mapping, so an anonymous one
    no longer merges with its neighbours)."""
    f = VmFlags.VM_NONE
    if flags & MAP_GROWSDOWN:
        f |= VmFlags.VM_GROWSDOWN
    if flags & MAP_LOCKED:
        f |= VmFlags.VM_LOCKED
    if flags & MAP_SYNC:
        f |= VmFlags.VM_SYNC
    if flags & MAP_STACK:
        f |= VmFlags.VM_NOHUGEPAGE
    return f


def mlock_future_ok(mm: MmStruct, vm_flags: VmFlags, length: int) -> bool:
    """Models mlock_future_ok(): locked pages stay within RLIMIT_MEMLOCK (the
    model's tasks lack CAP_IPC_LOCK)."""
    if not vm_flags & VmFlags.VM_LOCKED:
        return True
    locked_vm = sum(v.pages() for v in mm.mm_mt.snapshot() if v.vm_flags & VmFlags.VM_LOCKED)
    return locked_vm + (length >> PAGE_SHIFT) <= RLIMIT_MEMLOCK >> PAGE_SHIFT


MAX_LFS_FILESIZE = (1 << 63) - 1


def file_mmap_ok(pgoff: int, length: int) -> bool:
    """file_mmap_ok() for a regular file (maximum size MAX_LFS_FILESIZE)."""
    maxsize = MAX_LFS_FILESIZE
    if length > maxsize:
        return False
    return pgoff <= (maxsize - length) >> PAGE_SHIFT


async def do_mmap(mm: MmStruct, file: File | None, addr: int, length: int, prot: int, flags: int,
                  pgoff: int) -> tuple[int, int]:
    """Models do_mmap() (6.18), under the mmap write lock: every check in the
    kernel's order before anything changes, then mmap_region().  Returns the
    address (or -errno) and how many bytes to populate once the lock is
    dropped (MAP_POPULATE without MAP_NONBLOCK, or VM_LOCKED)."""
    if not length:
        return -errno.EINVAL, 0
    if flags & MAP_FIXED_NOREPLACE:
        flags |= MAP_FIXED
    if not flags & MAP_FIXED:
        addr = round_hint_to_min(addr)
    length = PAGE_ALIGN(length)
    if not length:
        return -errno.ENOMEM, 0
    if (pgoff + (length >> PAGE_SHIFT)) & ULONG_MAX < pgoff:
        return -errno.EOVERFLOW, 0
    if mm.map_count > mm.config.max_map_count:
        return -errno.ENOMEM, 0
    vm_flags = (calc_vm_prot_bits(prot) | calc_vm_flag_bits(flags)
                | VmFlags.VM_MAYREAD | VmFlags.VM_MAYWRITE | VmFlags.VM_MAYEXEC)
    addr = __get_unmapped_area(mm, addr, length, flags, file)
    if addr < 0:
        return addr, 0
    if flags & MAP_FIXED_NOREPLACE and mm.mm_mt.overlapping(addr, addr + length):
        return -errno.EEXIST, 0
    # MAP_LOCKED: can_do_mlock() holds (RLIMIT_MEMLOCK is not 0).
    if not mlock_future_ok(mm, vm_flags, length):
        return -errno.EAGAIN, 0
    maptype = flags & MAP_TYPE
    if file is not None:
        if not file_mmap_ok(pgoff, length):
            return -errno.EOVERFLOW, 0
        if maptype == MAP_SHARED:
            flags &= LEGACY_MAP_MASK
        if maptype in (MAP_SHARED, MAP_SHARED_VALIDATE):
            if flags & ~LEGACY_MAP_MASK:
                return -errno.EOPNOTSUPP, 0
            vm_flags |= VmFlags.VM_SHARED | VmFlags.VM_MAYSHARE
        elif maptype != MAP_PRIVATE:
            return -errno.EINVAL, 0
        if vm_flags & VmFlags.VM_GROWSDOWN:
            return -errno.EINVAL, 0
    elif maptype == MAP_SHARED:
        if vm_flags & VmFlags.VM_GROWSDOWN:
            return -errno.EINVAL, 0
        pgoff = 0
        vm_flags |= VmFlags.VM_SHARED | VmFlags.VM_MAYSHARE
    elif maptype == MAP_DROPPABLE:
        # Neither locked nor huge, nor a stack (6.11+).
        if flags & (MAP_LOCKED | MAP_HUGETLB) or vm_flags & VmFlags.VM_GROWSDOWN:
            return -errno.EINVAL, 0
        raise NotModelled("mmap: MAP_DROPPABLE is valid on Linux but not modelled")
    elif maptype == MAP_PRIVATE:
        pgoff = addr >> PAGE_SHIFT
    else:
        return -errno.EINVAL, 0
    if flags & MAP_NORESERVE:
        if mm.system.overcommit_memory != OVERCOMMIT_NEVER:
            vm_flags |= VmFlags.VM_NORESERVE
        if file is not None and file.hugetlb_shift:
            vm_flags |= VmFlags.VM_NORESERVE
            raise NotModelled("mmap: MAP_HUGETLB | MAP_NORESERVE (huge pages faulted on demand) "
                              "is valid on Linux but not modelled")
    if file is None and vm_flags & VmFlags.VM_SHARED:
        file = mm.system.shmem_zero_setup(length)
    addr = await mmap_region(mm, file, addr, length, vm_flags, pgoff)
    populate = 0
    if addr >= 0 and (vm_flags & VmFlags.VM_LOCKED or flags & (MAP_POPULATE | MAP_NONBLOCK) == MAP_POPULATE):
        populate = length
    return addr, populate


async def mm_populate(mm: MmStruct, start: int, length: int) -> None:
    """Models mm_populate(): __mm_populate() with errors ignored
    (``kernel/gup.py``), after do_mmap() dropped the write lock: a VMA whose
    faults fail (PROT_NONE) or a populate out of memory leaves the rest as
    it is, and the mmap still succeeds."""
    await __mm_populate(mm, start, length, True)


async def vm_mmap_pgoff(mm: MmStruct, file: File | None, addr: int, length: int, prot: int, flags: int,
                        pgoff: int) -> int:
    """Models vm_mmap_pgoff(): do_mmap() under the mmap write lock, then the
    populate outside it."""
    if await mmap_write_lock_killable(mm):
        return -errno.EINTR
    try:
        ret, populate = await do_mmap(mm, file, addr, length, prot, flags, pgoff)
    except NotModelled:
        await mmap_write_unlock(mm)  # raised before anything changed
        raise
    await mmap_write_unlock(mm)
    if populate:
        await mm_populate(mm, ret, populate)
    return ret


async def ksys_mmap_pgoff(mm: MmStruct, addr: int, length: int, prot: int, flags: int, file: File | None,
                          pgoff: int) -> int:
    """Models ksys_mmap_pgoff(): a file mapping needs a file (the model's
    stand-in for the fd; -EBADF without one); an anonymous one ignores it."""
    if not flags & MAP_ANONYMOUS:
        if file is None:
            return -errno.EBADF
        if flags & MAP_HUGETLB:  # not a hugetlbfs file
            return -errno.EINVAL
    else:
        file = None
        if flags & MAP_HUGETLB:
            # hstate_sizelog(): the default (2 MiB), 2 MiB or 1 GiB huge pages.
            size_log = (flags >> MAP_HUGE_SHIFT) & 0x3F
            if size_log not in (0, 21, 30):
                return -errno.EINVAL
            shift = size_log or 21
            length = (length + (1 << shift) - 1) & ~((1 << shift) - 1) & ULONG_MAX
            file = mm.system.hugetlb_file_setup(length, shift)
    return await vm_mmap_pgoff(mm, file, addr, length, prot, flags, pgoff)


async def sys_mmap(mm: MmStruct, addr: int, length: int, prot: int, flags: int, file: File | None,
                   offset: int) -> int:
    """Models SYSCALL_DEFINE6(mmap) (arch/x86/kernel/sys_x86_64.c, 6.18), the
    model's syscall entry: the arguments become what a C caller of glibc's
    mmap() hands the kernel (``prot`` and ``flags`` are C ints, sign-extended;
    the rest unsigned longs), then an offset that is not page-aligned is
    -EINVAL before anything else."""
    addr, length, offset = c_ulong(addr), c_ulong(length), c_ulong(offset)
    prot, flags = c_int_as_ulong(prot), c_int_as_ulong(flags)
    await work("syscall")
    if offset & (PAGE_SIZE - 1):
        return -errno.EINVAL
    return await ksys_mmap_pgoff(mm, addr, length, prot, flags, file, offset >> PAGE_SHIFT)


async def do_vmi_munmap(mm: MmStruct, start: int, length: int, unlock: bool,
                        uf: list[Any] | None = None) -> int:
    """Models do_vmi_munmap(): on success with ``unlock`` the mmap_lock has
    been released (after a downgrade); otherwise it is still write-held."""
    if start & (PAGE_SIZE - 1) or start > TASK_SIZE or length > TASK_SIZE - start:
        return -errno.EINVAL
    end = start + PAGE_ALIGN(length)
    if end == start:
        return -errno.EINVAL
    vma = mm.mm_mt.find(start)
    if vma is None or vma.vm_start >= end:
        if unlock:
            await mmap_write_unlock(mm)
        return 0
    return await do_vmi_align_munmap(mm, vma, start, end, unlock, uf)


async def sys_munmap(mm: MmStruct, addr: int, length: int) -> int:
    """Models SYSCALL_DEFINE2(munmap) -> __vm_munmap(): the lock, then every
    check in do_vmi_munmap()."""
    addr, length = c_ulong(addr), c_ulong(length)
    await work("syscall")
    if await mmap_write_lock_killable(mm):
        return -errno.EINTR
    uf: list[Any] = []
    ret = await do_vmi_munmap(mm, addr, length, unlock=True, uf=uf)
    if ret:
        await mmap_write_unlock(mm)
    await userfaultfd_unmap_complete(uf)
    return ret


# ---------------------------------------------------------------------------
# brk
# ---------------------------------------------------------------------------
async def do_brk_flags(mm: MmStruct, vma: VmAreaStruct | None, addr: int, length: int) -> int:
    """Models do_brk_flags(): extend the heap VMA if it ends at addr and is
    compatible, else insert a new VMA (write-locked before it is stored)."""
    flags = (VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_MAYREAD | VmFlags.VM_MAYWRITE
             | VmFlags.VM_MAYEXEC | VmFlags.VM_ACCOUNT)
    if mm.map_count > mm.config.max_map_count:
        return -errno.ENOMEM
    if security_vm_enough_memory_mm(mm, length >> PAGE_SHIFT):
        return -errno.ENOMEM
    if vma is not None and vma.vm_end == addr:
        _, nxt = mm.mm_mt.prev_next(addr, addr + length)
        vmg = VmaMergeStruct(mm=mm, start=addr, end=addr + length, pgoff=addr >> PAGE_SHIFT, flags=flags,
                             prev=vma, next=nxt, just_expand=True)
        vmg.anon_vma = vma.anon_vma
        if await vma_merge_new_range(vmg) is not None:
            mm.total_vm += length >> PAGE_SHIFT
            return 0
    new = vm_area_alloc(mm, "do_brk_flags")
    vma_set_range(new, addr, addr + length, addr >> PAGE_SHIFT)
    vm_flags_init(new, flags)
    await vma_start_write(new)
    await vma_iter_store_new(mm, new)
    mm.map_count += 1
    mm.total_vm += length >> PAGE_SHIFT
    return 0


def check_brk_limits(mm: MmStruct, addr: int, length: int) -> int:
    """Models check_brk_limits(): the new heap must be a valid MAP_FIXED
    placement (a wrapped or huge length is -ENOMEM)."""
    mapped_addr = __get_unmapped_area(mm, addr, length, MAP_FIXED)
    if mapped_addr < 0:
        return mapped_addr
    return 0


async def sys_brk(mm: MmStruct, brk: int) -> int:
    """Models SYSCALL_DEFINE1(brk) (6.18): returns the new break, or the old
    one on failure.  Shrinking needs the heap VMA to be there (a break whose
    heap was unmapped stays put); growing must pass check_brk_limits() and
    keep a page and the stack guard gap before the next VMA."""
    brk = c_ulong(brk)
    await work("syscall")
    if await mmap_write_lock_killable(mm):
        return -errno.EINTR
    origbrk = mm.brk
    min_brk = mm.start_brk
    if brk < min_brk:
        await mmap_write_unlock(mm)
        return origbrk
    newbrk, oldbrk = PAGE_ALIGN(brk), PAGE_ALIGN(mm.brk)
    if oldbrk == newbrk:
        mm.brk = brk
        await mmap_write_unlock(mm)
        return brk
    if brk <= mm.brk:
        vma = mm.mm_mt.find(newbrk)
        if vma is None or vma.vm_start >= oldbrk:
            await mmap_write_unlock(mm)
            return origbrk
        mm.brk = brk
        ret = await do_vmi_align_munmap(mm, vma, newbrk, oldbrk, unlock=True)
        if ret:
            mm.brk = origbrk
            await mmap_write_unlock(mm)
            return origbrk
        return brk
    if check_brk_limits(mm, oldbrk, (newbrk - oldbrk) & ULONG_MAX):
        await mmap_write_unlock(mm)
        return origbrk
    nxt = mm.mm_mt.find(oldbrk)
    if nxt is not None and newbrk + PAGE_SIZE > vm_start_gap(nxt):
        await mmap_write_unlock(mm)
        return origbrk
    brkvma = mm.mm_mt.find_covering(oldbrk - 1) if oldbrk > mm.start_brk else None
    if await do_brk_flags(mm, brkvma, oldbrk, newbrk - oldbrk):
        await mmap_write_unlock(mm)
        return origbrk
    mm.brk = brk
    await mmap_write_unlock(mm)
    return brk


# ---------------------------------------------------------------------------
# Stack growth
# ---------------------------------------------------------------------------
async def expand_downwards(vma: VmAreaStruct, address: int, write_locked: bool = True) -> int:
    """Models expand_downwards() (7.0): only the growing VMA is write-locked
    (the neighbour is read for the guard-gap check under the mmap write
    lock); the range changes under the anon_vma write lock (the VMA leaves
    and re-enters the anon_vma's tree, whose key is vm_pgoff) and
    page_table_lock."""
    mm = vma.vm_mm
    address &= ~(PAGE_SIZE - 1)
    if address < MMAP_MIN_ADDR:
        return -errno.EPERM
    if vma.vm_end - address > RLIMIT_STACK:
        return -errno.ENOMEM  # acct_stack_growth()
    prev, _ = mm.mm_mt.prev_next(vma.vm_start, vma.vm_end)
    if prev is not None and prev.vm_end > address - STACK_GUARD_GAP and prev.vm_flags & VM_ACCESS_ANY:
        return -errno.ENOMEM
    if vma.anon_vma is None and await __anon_vma_prepare(vma):
        return -errno.ENOMEM  # anon_vma_prepare() failed
    if write_locked:
        await vma_start_write(vma)
    av = vma.anon_vma
    assert av is not None
    await anon_vma_lock_write(av)  # the VMA's place in the anon_vma tree changes
    ret = 0
    if address < vma.vm_start:
        grow = (vma.vm_start - address) >> PAGE_SHIFT
        if vma.vm_flags & VmFlags.VM_ACCOUNT and security_vm_enough_memory_mm(mm, grow):
            ret = -errno.ENOMEM  # acct_stack_growth()
        else:
            await mm.page_table_lock.lock()
            anon_vma_interval_tree_pre_update_vma(vma)
            await vma_write_fields(vma, "vma_set_range")
            if write_locked:
                vma_set_range(vma, address, vma.vm_end, vma.vm_pgoff - grow)
            else:
                _expand_downwards_store_b02(vma, address, grow)
            anon_vma_interval_tree_post_update_vma(vma)
            await mm.page_table_lock.unlock()
            mm.total_vm += grow
            await vma_iter_update(mm, label="expand_downwards: store")
    await anon_vma_unlock_write(av)
    return ret


def _expand_downwards_store_b02(vma: VmAreaStruct, address: int, grow: int) -> None:
    """Historical (B02, 6.1-6.4): the stack's start stored under mmap_lock
    read, as code that had neither a VMA write lock nor an assertion to meet
    (7.0 stores it right after vma_start_write(); vma_set_range() checks)."""
    vma.vm_start = address
    vma.vm_pgoff -= grow


VM_ACCESS_ANY = VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_EXEC


async def expand_stack_locked(vma: VmAreaStruct, address: int, write_locked: bool = True) -> int:
    if not vma.vm_flags & VmFlags.VM_GROWSDOWN:
        return -errno.EFAULT
    return await expand_downwards(vma, address, write_locked)


# ---------------------------------------------------------------------------
# fork and exit
# ---------------------------------------------------------------------------
async def dup_mmap(mm: MmStruct, oldmm: MmStruct) -> int:
    """Models dup_mmap(): with oldmm write-locked, write-lock each parent VMA
    as the loop reaches it (the 6.4 fork fix; killable since 6.19), duplicate
    it, link the child to the parent's anon_vmas, copy its page tables."""
    if await mmap_write_lock_killable(oldmm):
        return -errno.EINTR
    await mmap_write_lock(mm)
    debug.fork_snapshot_begin(oldmm)
    mm.mmap_base, mm.start_brk, mm.brk, mm.start_stack = oldmm.mmap_base, oldmm.start_brk, oldmm.brk, oldmm.start_stack
    children = []
    ret = 0
    for mpnt in list(oldmm.mm_mt.snapshot()):
        if not oldmm.config.bug("B04"):  # historical 6.4 (B04): the parent VMA not write-locked
            ret = await vma_start_write_killable(mpnt)
            if ret:
                break
        if mpnt.vm_flags & VmFlags.VM_DONTCOPY:
            continue
        charge = mpnt.pages() if mpnt.vm_flags & VmFlags.VM_ACCOUNT else 0
        if charge and security_vm_enough_memory_mm(oldmm, charge):
            ret = -errno.ENOMEM
            break
        tmp = vm_area_dup(mpnt, mm)
        tmp.vm_mm = mm
        vma_dup_policy(mpnt, tmp)
        dup_userfaultfd(tmp)
        if mpnt.vm_flags & VmFlags.VM_WIPEONFORK:
            tmp.anon_vma = None
            tmp.anon_vma_chain = []
        else:
            ret = await anon_vma_fork(tmp, mpnt)
            if ret:
                mpol_put(mm, tmp.vm_policy, "dup_mmap: anon_vma_fork failed")  # fail_nomem_anon_vma_fork
                vm_area_free(tmp, "dup_mmap: anon_vma_fork failed")
                vm_unacct_memory(mm.system, charge)  # fail_nomem: this VMA's charge
                break
        # vm_flags_clear() write-locks tmp, which only stamps its vm_lock_seq
        # (tmp is detached), as vma_mark_attached() requires.
        await vm_flags_clear(tmp, VM_LOCKED_MASK)
        await vma_mark_attached(tmp)
        children.append(tmp)
        file = tmp.vm_file
        if file is not None:  # the child's VMA goes right after the parent's in i_mmap
            await i_mmap_lock_write(file)
            vma_interval_tree_insert_after(tmp, mpnt, file)
            await i_mmap_unlock_write(file)
        mm.map_count += 1
        mm.total_vm += tmp.pages()
        if not mpnt.vm_flags & VmFlags.VM_WIPEONFORK:
            await copy_page_range(tmp, mpnt)
    if ret:
        # The half-built child is torn down (exit_mmap uncharges its VMAs).
        vm_unacct_memory(mm.system, sum(c.pages() for c in children if c.vm_flags & VmFlags.VM_ACCOUNT))
    await mm.mm_mt.publish(children, "vma_iter_bulk_store")
    debug.fork_snapshot_end(oldmm, mm)
    await mmap_write_unlock(mm)
    await mmap_write_unlock(oldmm)
    return ret


async def exit_mmap(mm: MmStruct) -> None:
    """Models exit_mmap() (6.18/7.0): unmap everything under the read lock,
    then under the write lock write-lock each VMA (free_pgtables, never
    killable), detach and free it, destroy the tree.  mmu_notifier_release()
    comes first: secondary MMUs drop everything before any page is freed."""
    await mmu_notifier_release(mm)
    await mmap_read_lock(mm)
    for vma in mm.mm_mt.snapshot():
        await zap_page_range(mm, vma.vm_start, vma.vm_end)
    await mmap_read_unlock(mm)
    await mmap_write_lock(mm)
    vmas = list(mm.mm_mt.snapshot())
    vm_unacct_memory(mm.system, sum(v.pages() for v in vmas if v.vm_flags & VmFlags.VM_ACCOUNT))
    for vma in vmas:
        await vma_start_write(vma)
    await unlink_vmas_rmap(vmas)  # free_pgtables()
    for vma in vmas:
        await vma_mark_detached(vma)
        await remove_vma(vma)
    mm.map_count = 0
    mm.mm_mt.destroy()
    mm.exited = True
    await mmap_write_unlock(mm)


async def mmput(mm: MmStruct) -> None:
    """Drop a user of mm: the last one tears the address space down, then
    drops the mm_count reference the users held."""
    if await mm.mm_users.add_return(-1, "mmput") == 0:
        await exit_mmap(mm)
        await mmdrop(mm)


__all__ = [
    "MAP_ANONYMOUS", "MAP_FIXED", "MAP_FIXED_NOREPLACE", "MAP_GROWSDOWN", "MAP_PRIVATE",
    "MAP_SHARED", "PROT_EXEC", "PROT_NONE", "PROT_READ", "PROT_WRITE", "dup_mmap", "exit_mmap",
    "mmput", "sys_brk", "sys_mmap", "sys_munmap",
]
