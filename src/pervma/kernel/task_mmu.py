"""/proc/pid/maps and /proc/pid/clear_refs (fs/proc/task_mmu.c).

``show_map_vma`` formats one line exactly as the kernel does.  The reader
``proc_maps_read`` walks the VMAs the 6.17+ way: under RCU, taking each VMA's
read lock with lock_next_vma() (which falls back to mmap_lock when a writer
is active); with PER_VMA_LOCK off it is the pre-series reader under
mmap_read_lock.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pervma.kernel import debug
from pervma.kernel.memory import flush_tlb, present_vpns, set_pte_at
from pervma.kernel.mm import vm_flags_clear
from pervma.kernel.mm_types import PAGE_SHIFT, PAGE_SIZE, TASK_SIZE, Pte, VmFlags
from pervma.kernel.mmap_lock import (
    lock_next_vma,
    mmap_read_lock,
    mmap_read_lock_killable,
    mmap_read_unlock,
    mmap_write_lock_killable,
    mmap_write_unlock,
    vma_end_read,
)
from pervma.kernel.mmu_notifier import (
    MMU_NOTIFY_SOFT_DIRTY,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
    mmu_notifier_range_init,
)
from pervma.kernel.pagewalk import PGWALK_WRLOCK, MmWalk, MmWalkOps, walk_page_range
from pervma.kernel.rcu import rcu_read_lock, rcu_read_unlock
from pervma.kernel.sites import call_site
from pervma.sched import Op, OpKind, work
from pervma.sched.locations import VMA
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

_WIDTH = 25 + 8 * 6 - 1


def show_map_vma(vma: VmAreaStruct) -> str:
    """One /proc/pid/maps line (without the newline)."""
    mm = vma.vm_mm
    f = vma.vm_flags
    perms = (("r" if f & VmFlags.VM_READ else "-") + ("w" if f & VmFlags.VM_WRITE else "-")
             + ("x" if f & VmFlags.VM_EXEC else "-") + ("s" if f & VmFlags.VM_MAYSHARE else "p"))
    pgoff, dev, ino, name = 0, "00:00", 0, ""
    file = vma.vm_file
    if file is not None:
        pgoff = vma.vm_pgoff << PAGE_SHIFT
        dev, ino, name = file.dev, file.inode, file.path
    elif mm is not None and vma.vm_start <= mm.brk and vma.vm_end >= mm.start_brk:
        name = "[heap]"
    elif mm is not None and vma.vm_start <= mm.start_stack <= vma.vm_end:
        name = "[stack]"
    elif vma.anon_name is not None:
        name = f"[anon:{vma.anon_name}]"
    line = f"{vma.vm_start:08x}-{vma.vm_end:08x} {perms} {pgoff:08x} {dev} {ino} "
    if name:
        line = line.ljust(_WIDTH) + " " + name
    return line


def maps_text(mm: MmStruct) -> str:
    """The whole file for a quiescent mm (the synchronous API)."""
    return "".join(show_map_vma(v) + "\n" for v in mm.mm_mt.snapshot())


@call_site("fs/proc/task_mmu.c:m_start", pre_form="ifdef",
           pre_series="#ifdef CONFIG_PER_VMA_LOCK: lock_vma_range()/get_next_vma() take each "
           "VMA with lock_next_vma() under RCU; #else mmap_read_lock_killable for the read",
           series="the per-VMA branch in every config (no #else)",
           scenarios=("maps-reader-vs-munmap",), version="6.17+/7.0")
async def proc_maps_read(mm: MmStruct) -> list[str]:
    """Read /proc/pid/maps as a concurrent reader: lock_vma_range per VMA.
    The lines are checked against what was mapped during the read
    (debug.maps_read_begin/end)."""
    lines: list[str] = []
    log = debug.maps_read_begin(mm)
    ranges: list[tuple[int, int]] = []
    if not mm.config.PER_VMA_LOCK:
        if await mmap_read_lock_killable(mm):
            debug.maps_read_end(mm, log, ranges, complete=False)
            return lines
        addr = 0
        while True:
            vma = await mm.mm_mt.mas_find(addr, "m_next: find_vma")
            if vma is None:
                break
            lines.append(show_map_vma(vma))
            ranges.append((vma.vm_start, vma.vm_end))
            addr = vma.vm_end
        await mmap_read_unlock(mm)
        debug.maps_read_end(mm, log, ranges, complete=True)
        return lines
    addr = 0
    complete = True
    rcu_read_lock()
    while True:
        found = await lock_next_vma(mm, addr)
        if found is None or isinstance(found, int):
            complete = found is None
            break
        vma = found
        await Op(OpKind.READ, (VMA, vma.slot), "show_map_vma", order=Order.PLAIN)
        debug.kasan_check(vma, "show_map_vma", "vm_area_struct")
        if vma.vm_mm is not mm:
            debug.report("BUG: /proc/pid/maps shows a VMA of another mm", f"{vma} of {vma.vm_mm}")
        lines.append(show_map_vma(vma))
        ranges.append((vma.vm_start, vma.vm_end))
        addr = vma.vm_end
        await vma_end_read(vma)
    rcu_read_unlock()
    debug.maps_read_end(mm, log, ranges, complete)
    return lines


# ---------------------------------------------------------------------------
# PROCMAP_QUERY: the ioctl on /proc/pid/maps (fs/proc/task_mmu.c, 6.18+)
# ---------------------------------------------------------------------------
PROCMAP_QUERY = 0xC0686611  # _IOWR('f', 17, struct procmap_query)
PROCMAP_QUERY_VMA_READABLE = 0x01
PROCMAP_QUERY_VMA_WRITABLE = 0x02
PROCMAP_QUERY_VMA_EXECUTABLE = 0x04
PROCMAP_QUERY_VMA_SHARED = 0x08
PROCMAP_QUERY_COVERING_OR_NEXT_VMA = 0x10
PROCMAP_QUERY_FILE_BACKED_VMA = 0x20
PROCMAP_QUERY_VMA_FLAGS = 0x0F
PROCMAP_QUERY_VALID_FLAGS_MASK = 0x3F
PROCMAP_QUERY_SIZE = 104  # sizeof(struct procmap_query)
_QUERY_ADDR_END = 24  # offsetofend(struct procmap_query, query_addr)
PATH_MAX = 4096


@dataclass(eq=False, slots=True)
class ProcMapsLockingCtx:
    """struct proc_maps_locking_ctx: the VMA read-locked, or mmap_lock held."""

    mm: MmStruct
    locked_vma: VmAreaStruct | None = None
    mmap_locked: bool = False


async def unlock_ctx_vma(lock_ctx: ProcMapsLockingCtx) -> None:
    if lock_ctx.locked_vma is not None:
        vma, lock_ctx.locked_vma = lock_ctx.locked_vma, None
        await vma_end_read(vma)


async def query_vma_setup(lock_ctx: ProcMapsLockingCtx) -> int:
    """Per-VMA locks: nothing to take yet.  Without them: mmap_read_lock_killable."""
    if lock_ctx.mm.config.PER_VMA_LOCK:
        lock_ctx.locked_vma, lock_ctx.mmap_locked = None, False
        return 0
    return await mmap_read_lock_killable(lock_ctx.mm)


async def query_vma_teardown(lock_ctx: ProcMapsLockingCtx) -> None:
    if not lock_ctx.mm.config.PER_VMA_LOCK or lock_ctx.mmap_locked:
        lock_ctx.mmap_locked = False
        await mmap_read_unlock(lock_ctx.mm)
    else:
        await unlock_ctx_vma(lock_ctx)


@call_site("fs/proc/task_mmu.c:query_vma_find_by_addr", pre_form="ifdef",
           pre_series="#ifdef CONFIG_PER_VMA_LOCK: PROCMAP_QUERY takes each candidate with "
           "lock_next_vma() (mmap_read_lock for the rest only on -EAGAIN); #else "
           "query_vma_setup() holds mmap_read_lock_killable throughout",
           series="the per-VMA branch in every config (no #else)",
           scenarios=("procmap-query-vs-munmap", "procmap-query-vs-mprotect-split"),
           version="6.18+/7.0")
async def query_vma_find_by_addr(lock_ctx: ProcMapsLockingCtx, addr: int) -> VmAreaStruct | None | int:
    """Models query_vma_find_by_addr() (6.18): drop the VMA locked for the
    previous candidate, take the next one read-locked with lock_next_vma()
    under RCU; lock_next_vma() itself falls back to mmap_lock when a writer
    is active, and only a reader-count overflow (-EAGAIN) makes the query
    hold mmap_read_lock for the rest of its walk."""
    mm = lock_ctx.mm
    if not mm.config.PER_VMA_LOCK or lock_ctx.mmap_locked:
        return mm.mm_mt.find(addr)
    await unlock_ctx_vma(lock_ctx)
    rcu_read_lock()
    vma = await lock_next_vma(mm, addr)
    rcu_read_unlock()
    if vma is None:
        return None
    if not isinstance(vma, int):
        lock_ctx.locked_vma = vma
        return vma
    if vma == -errno.EAGAIN:
        await mmap_read_lock(mm)
        lock_ctx.mmap_locked = True
        return mm.mm_mt.find(addr)
    return vma


async def query_matching_vma(lock_ctx: ProcMapsLockingCtx, addr: int, flags: int) -> VmAreaStruct | int:
    """Models query_matching_vma(): the VMA covering addr (or, with
    PROCMAP_QUERY_COVERING_OR_NEXT_VMA, the first one after it) that has the
    asked permissions and, with PROCMAP_QUERY_FILE_BACKED_VMA, a file."""
    while True:
        vma = await query_vma_find_by_addr(lock_ctx, addr)
        if isinstance(vma, int):
            return vma
        if vma is None:
            return -errno.ENOENT
        skip = bool(flags & PROCMAP_QUERY_FILE_BACKED_VMA) and vma.vm_file is None
        if not skip and flags & PROCMAP_QUERY_VMA_FLAGS:
            perm = VmFlags.VM_NONE
            if flags & PROCMAP_QUERY_VMA_READABLE:
                perm |= VmFlags.VM_READ
            if flags & PROCMAP_QUERY_VMA_WRITABLE:
                perm |= VmFlags.VM_WRITE
            if flags & PROCMAP_QUERY_VMA_EXECUTABLE:
                perm |= VmFlags.VM_EXEC
            if flags & PROCMAP_QUERY_VMA_SHARED:
                perm |= VmFlags.VM_MAYSHARE
            skip = (vma.vm_flags & perm) != perm
        if not skip and (flags & PROCMAP_QUERY_COVERING_OR_NEXT_VMA or vma.vm_start <= addr):
            return vma
        addr = vma.vm_end
        if not flags & PROCMAP_QUERY_COVERING_OR_NEXT_VMA:
            return -errno.ENOENT


def get_vma_name(vma: VmAreaStruct) -> str | None:
    """get_vma_name(): the file's path, [heap], [stack] or [anon:name]."""
    mm = vma.vm_mm
    if vma.vm_file is not None:
        return vma.vm_file.path
    if vma.vm_start <= mm.brk and vma.vm_end >= mm.start_brk:
        return "[heap]"
    if vma.vm_start <= mm.start_stack <= vma.vm_end:
        return "[stack]"
    if vma.anon_name is not None:
        return f"[anon:{vma.anon_name}]"
    return None


async def do_procmap_query(mm: MmStruct, usize: int, query_flags: int, query_addr: int,
                           vma_name_size: int = 0, build_id_size: int = 0) -> dict[str, Any] | int:
    """Models do_procmap_query() (6.18+, the per-VMA-lock form; the
    mmap_read_lock form without PER_VMA_LOCK): the argument checks in the
    kernel's order, then the lookup, the answer read while the VMA (or
    mmap_lock) is held, and the unlock before anything is copied out.
    Returns the struct's fields (plus ``vma_name``), else -errno.  The
    model's files carry no ELF build ID: a requested one comes back with
    build_id_size 0, as for the kernel when parsing fails."""
    from pervma.kernel.mmap import mmput
    from pervma.kernel.userfaultfd_mm import mmget_not_zero

    if usize > PAGE_SIZE:
        return -errno.E2BIG
    if usize < _QUERY_ADDR_END:
        return -errno.EINVAL
    if query_flags & ~PROCMAP_QUERY_VALID_FLAGS_MASK:
        return -errno.EINVAL
    if not await mmget_not_zero(mm):
        return -errno.ESRCH
    lock_ctx = ProcMapsLockingCtx(mm)
    err = await query_vma_setup(lock_ctx)
    if err:
        await mmput(mm)
        return err
    found = await query_matching_vma(lock_ctx, query_addr, query_flags)
    out: dict[str, Any] | int
    if isinstance(found, int):
        out = found
    else:
        await Op(OpKind.READ, (VMA, found.slot), "do_procmap_query: read the VMA", order=Order.PLAIN)
        if found.vm_mm is not mm:
            debug.report("BUG: PROCMAP_QUERY answers with a VMA of another mm", f"{found} of {found.vm_mm}")
        out = _procmap_answer(found, usize, query_flags, query_addr, vma_name_size)
    await query_vma_teardown(lock_ctx)
    await mmput(mm)
    return out


def _procmap_answer(vma: VmAreaStruct, usize: int, query_flags: int, query_addr: int,
                    vma_name_size: int) -> dict[str, Any] | int:
    debug.kasan_check(vma, "do_procmap_query", "vm_area_struct")
    f = vma.vm_flags
    flags = ((PROCMAP_QUERY_VMA_READABLE if f & VmFlags.VM_READ else 0)
             | (PROCMAP_QUERY_VMA_WRITABLE if f & VmFlags.VM_WRITE else 0)
             | (PROCMAP_QUERY_VMA_EXECUTABLE if f & VmFlags.VM_EXEC else 0)
             | (PROCMAP_QUERY_VMA_SHARED if f & VmFlags.VM_MAYSHARE else 0))
    file = vma.vm_file
    major, minor = (int(x, 16) for x in file.dev.split(":")) if file is not None else (0, 0)
    name = ""
    if vma_name_size:
        n = get_vma_name(vma)
        name_sz = len(n.encode()) + 1 if n is not None else 0
        if name_sz > min(PATH_MAX, vma_name_size):
            return -errno.ENAMETOOLONG
        vma_name_size, name = name_sz, n or ""
    return {
        "size": usize, "query_flags": query_flags, "query_addr": query_addr,
        "vma_start": vma.vm_start, "vma_end": vma.vm_end, "vma_flags": flags,
        "vma_page_size": PAGE_SIZE,
        "vma_offset": vma.vm_pgoff << PAGE_SHIFT if file is not None else 0,
        "inode": file.inode if file is not None else 0, "dev_major": major, "dev_minor": minor,
        "vma_name_size": vma_name_size, "build_id_size": 0, "vma_name": name,
    }


# -- /proc/pid/clear_refs ------------------------------------------------------------------
CLEAR_REFS_ALL = 1
CLEAR_REFS_ANON = 2
CLEAR_REFS_MAPPED = 3
CLEAR_REFS_SOFT_DIRTY = 4
CLEAR_REFS_MM_HIWATER_RSS = 5
CLEAR_REFS_LAST = 6


async def clear_refs_pte_range(walk: MmWalk, addr: int, end: int) -> int:
    """Models clear_refs_pte_range() under the PTE page's lock: for
    CLEAR_REFS_SOFT_DIRTY, clear_soft_dirty() write-protects each present PTE
    (the model has no soft-dirty bit: every PTE counts as dirty), so the next
    write faults (do_wp_page reuses the page).  The young/referenced bits the
    other types clear are not modelled: those walks only visit."""
    mm = walk.mm
    ptl = mm.ptl(addr)
    await ptl.lock()
    if walk.private == CLEAR_REFS_SOFT_DIRTY:
        for vpn in present_vpns(mm, addr, end):
            pte = mm.pgtable[vpn]
            if pte.writable:
                await set_pte_at(mm, vpn, Pte(pte.page, False, pte.dirty, pte.readable), "clear_soft_dirty")
    await ptl.unlock()
    return 0


def clear_refs_test_walk(walk: MmWalk, start: int, end: int) -> int:
    vma = walk.vma
    assert vma is not None
    if vma.vm_flags & VmFlags.VM_PFNMAP:
        return 1
    if walk.private == CLEAR_REFS_ANON and vma.vm_file is not None:
        return 1
    if walk.private == CLEAR_REFS_MAPPED and vma.vm_file is None:
        return 1
    return 0


clear_refs_walk_ops = MmWalkOps(walk_lock=PGWALK_WRLOCK, pmd_entry=clear_refs_pte_range,
                                test_walk=clear_refs_test_walk)


async def clear_refs_write(mm: MmStruct, buf: str) -> int:
    """Models clear_refs_write() (fs/proc/task_mmu.c, 7.0): the number parsed
    as kstrtoint() does (surrounding blanks stripped), 1-5 or -EINVAL; then
    under mmap_write_lock_killable: type 5 resets the RSS high-water mark
    (not modelled: nothing to do), type 4 clears VM_SOFTDIRTY of each VMA
    (vm_flags_clear write-locks it) and brackets the walk with an
    MMU_NOTIFY_SOFT_DIRTY invalidation of the whole space, and the walk (PGWALK_WRLOCK: every VMA
    write-locked as the walk enters it) runs over the whole address space.
    Returns the bytes written."""
    await work("syscall")
    count = len(buf)
    text = buf.strip()
    itype = int(text, 10) if re.fullmatch(r"[+-]?[0-9]+", text) else None
    if itype is None or not -(1 << 31) <= itype < 1 << 31:
        return -errno.EINVAL
    if itype < CLEAR_REFS_ALL or itype >= CLEAR_REFS_LAST:
        return -errno.EINVAL
    if await mmap_write_lock_killable(mm):
        return -errno.EINTR
    if itype != CLEAR_REFS_MM_HIWATER_RSS:
        rng = None
        if itype == CLEAR_REFS_SOFT_DIRTY:
            for vma in mm.mm_mt.snapshot():
                if vma.vm_flags & VmFlags.VM_SOFTDIRTY:
                    await vm_flags_clear(vma, VmFlags.VM_SOFTDIRTY)
            # the secondary MMUs drop their copies before the PTEs lose write
            rng = mmu_notifier_range_init(MMU_NOTIFY_SOFT_DIRTY, 0, mm, 0, TASK_SIZE)
            await mmu_notifier_invalidate_range_start(rng)
        await walk_page_range(mm, 0, TASK_SIZE, clear_refs_walk_ops, itype)
        if rng is not None:
            await mmu_notifier_invalidate_range_end(rng)
            await flush_tlb(mm, "clear_refs: flush_tlb_mm")
    await mmap_write_unlock(mm)
    return count
