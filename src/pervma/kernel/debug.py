"""The kernel's own checks: VM_BUG_ON/VM_WARN_ON, lockdep-style held-lock
tracking, KASAN-style use-after-free reports and validate_mm.

Everything reports through the one ``sched`` violation primitive.  These
checks never look at which bug switches are on: they state what must hold in
every kernel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pervma.kernel import lockdep
from pervma.kernel.task import HeldLock, TaskStruct, current_task
from pervma.sched import current_model, running_slot, violation

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct
    from pervma.kernel.slab import SlabObject

_running = running_slot()  # the driver's running-task stack: read here, never changed

def report(kind: str, message: str) -> None:
    """Report a broken rule (BUG, WARNING, KASAN, lockdep)."""
    violation(kind, message)


def VM_BUG_ON(cond: bool, what: str) -> None:  # noqa: N802 - the kernel's name
    if cond:
        report("kernel BUG", what)


def VM_WARN_ON_ONCE(cond: bool, what: str) -> None:  # noqa: N802 - the kernel's name
    if cond:
        report("WARNING", what)


# -- KASAN -------------------------------------------------------------------
def kasan_check(obj: SlabObject | None, where: str, what: str = "object") -> None:
    """An access to ``obj`` at ``where``: a use-after-free if it was freed."""
    if obj is not None and obj.freed:
        report(
            "KASAN: use-after-free",
            f"access to freed {what} #{obj.slot} in {where}; allocated at {obj.alloc_site}, "
            f"freed at {obj.free_site}",
        )


# -- lockdep -----------------------------------------------------------------
def _tracking() -> TaskStruct | None:
    tsk: TaskStruct | None = current_model()
    if tsk is None or tsk.system is None or not tsk.system.config.DEBUG_LOCK_ALLOC:
        return None
    return tsk


def lockdep_acquire(name: str, obj: Any, mode: str, trylock: bool = False) -> None:
    """lock_acquire(): recursion check, then (not for a trylock) the new
    dependencies held -> ``name`` with the cycle check (kernel/lockdep.py),
    then the lock joins the held list."""
    # _tracking(), inlined: every lock on the fault path passes here
    tsk: TaskStruct | None = _running[-1].model if _running else None
    if tsk is None or tsk.system is None or not tsk.system.config.DEBUG_LOCK_ALLOC:
        return
    held = tsk.held
    for h in held:
        if h.obj is obj and name != "vm_lock":
            lockdep.recursive(tsk, h, name, mode, lockdep.acquire_site())
    site, caller = lockdep.acquire_site()
    if mode == "read" and name == "vm_lock":
        # The VMA lock's readers take its lockdep map as a trylock in 7.0
        # (__vma_lockdep_acquire_read): a reader never waits for a writer.
        trylock = True
    if held and not trylock:
        lockdep.check_prevs_add(tsk, name, mode, (site, caller))
    held.append(HeldLock(name, obj, mode, trylock, site, caller))


def lockdep_release(name: str, obj: Any) -> None:
    # _tracking(), inlined: every unlock on the fault path passes here
    tsk: TaskStruct | None = _running[-1].model if _running else None
    if tsk is None or tsk.system is None or not tsk.system.config.DEBUG_LOCK_ALLOC:
        return
    for i in range(len(tsk.held) - 1, -1, -1):
        if tsk.held[i].obj is obj:
            del tsk.held[i]
            return
    report("lockdep: bad unlock balance", f"{tsk.comm} releases {name} it does not hold")


def lockdep_downgrade(name: str, obj: Any) -> None:
    tsk = _tracking()
    if tsk is None:
        return
    for h in tsk.held:
        if h.obj is obj:
            h.mode = "read"
            return


def might_sleep(where: str, func: str, arg: str = "") -> None:
    """might_sleep() in ``where`` (the kernel file), in ``func(arg)`` (a
    sleeping lock or wait; ``arg`` a lock name or a label): a bug in atomic
    context (kernel/lockdep.py).  Gated by DEBUG_LOCK_ALLOC, as lockdep is."""
    task = _running[-1] if _running else None
    if task is None:
        return
    tsk: TaskStruct | None = task.model
    if tsk is None or (not task.preempt_count and not tsk.rcu_depth):
        return  # the common case, decided first: nothing atomic
    if tsk.system is None or not tsk.system.config.DEBUG_LOCK_ALLOC:
        return
    lockdep.might_sleep(tsk, where, f"{func}({lockdep.class_name(arg)})")


def lock_is_held(obj: Any, mode: str | None = None) -> bool:
    tsk = current_task()
    return any(h.obj is obj and (mode is None or h.mode == mode) for h in tsk.held)


def check_no_locks_held(tsk: TaskStruct, where: str) -> None:
    """Return to user space holding nothing: lockdep_sys_exit() (7.0) at the
    end of every syscall and fault; lists the held locks as lockdep does."""
    if tsk.system is not None and tsk.system.config.DEBUG_LOCK_ALLOC and tsk.held:
        lines = [f"{tsk.comm}/{tsk.pid} is leaving the kernel with locks still held! (after {where})",
                 *lockdep.held_locks_text(tsk)]
        report("lockdep: lock held when returning to user space", "\n".join(lines))
    if tsk.rcu_depth:
        report("WARNING: rcu_read_lock held when returning to user space", f"{tsk.comm} after {where}")


# -- validate_mm ---------------------------------------------------------------
def validate_mm(mm: MmStruct) -> None:
    """mm/vma.c's validate_mm plus pervma's page-table checks, for a quiescent
    mm (no writer in progress): VMAs sorted and disjoint, map_count right,
    attached VMAs at vm_refcnt 1 without a write lock outstanding, no PTE
    outside a VMA, every mapped anon page reachable by rmap."""
    from pervma.kernel.mmap_lock import VM_REFCNT_EXCLUDE_READERS_FLAG

    vmas = mm.mm_mt.snapshot()
    prev_end = 0
    for vma in vmas:
        kasan_check(vma, "validate_mm", "vm_area_struct")
        if vma.vm_mm is not mm:
            report("validate_mm", f"VMA {vma} belongs to another mm")
        if vma.vm_start >= vma.vm_end or vma.vm_start < prev_end:
            report("validate_mm", f"VMAs not sorted and disjoint at {vma}")
        prev_end = vma.vm_end
        if mm.config.PER_VMA_LOCK:
            cnt = vma.vm_refcnt.counter
            if cnt != 1:
                report("validate_mm", f"attached {vma} has vm_refcnt {cnt:#x}, expected 1"
                       + (" (readers excluded flag left set)" if cnt & VM_REFCNT_EXCLUDE_READERS_FLAG else ""))
            if vma.vm_lock_seq == mm.mm_lock_seq.sequence and mm.mm_lock_seq.sequence & 1:
                report("validate_mm", f"{vma} still write-locked")
    if len(vmas) != mm.map_count:
        report("validate_mm", f"map_count {mm.map_count} but {len(vmas)} VMAs in the tree")
    if mm.config.PER_VMA_LOCK and mm.mm_lock_seq.sequence & 1 and not mm.mmap_lock.writer:
        report("validate_mm", "mm_lock_seq odd with mmap_lock not write-held")
    # Page tables: no PTE outside a VMA; anon pages reachable by rmap.
    for vpn, pte in mm.pgtable.items():
        addr = vpn << 12
        cover = mm.mm_mt.find_covering(addr)
        if cover is None:
            report("validate_mm", f"PTE for {addr:#x} outside every VMA")
            continue
        page = pte.page
        kasan_check(page, "validate_mm", "page")
        if page.anon_vma is not None and page.anon_vma not in cover.anon_vma_chain:
            report("rmap: anon page unreachable",
                   f"page {page.pfn} at {addr:#x} in {cover}: its anon_vma is not on the VMA's chain")


# -- user-visible memory across fork -----------------------------------------
def _memory_of(mm: MmStruct) -> dict[int, int]:
    """Every byte the mm's present pages hold (absent bytes read as 0)."""
    out: dict[int, int] = {}
    for vpn, pte in mm.pgtable.items():
        for off, val in pte.page.data.items():
            if val:
                out[(vpn << 12) + off] = val
    return out


def fork_snapshot_begin(parent: MmStruct) -> None:
    """Start recording the parent's stores while fork copies it."""
    parent.fork_log = [(_memory_of(parent), [])]


def record_store(mm: MmStruct, addr: int, value: int) -> None:
    log = mm.fork_log
    if log:
        log[-1][1].append((addr, value))


def fork_snapshot_end(parent: MmStruct, child: MmStruct) -> None:
    """The child's memory must equal the parent's at one moment during the
    fork: the memory before it plus some prefix of the stores the parent's
    threads made meanwhile (in their global order).  Only addresses mapped in
    the child are compared; a page the child did not get reads as zero."""
    log = parent.fork_log
    parent.fork_log = None
    if not log:
        return
    before, stores = log[0]
    child_mem = _memory_of(child)
    mapped = {vpn for vpn in child.pgtable}
    touched = {a for a, _ in stores} | set(before)
    addrs = [a for a in sorted(touched) if (a >> 12) in mapped]
    state = dict(before)
    for i in range(len(stores) + 1):
        if i:
            a, v = stores[i - 1]
            state[a] = v
        if all(child_mem.get(a, 0) == state.get(a, 0) for a in addrs):
            return
    diffs = ", ".join(f"{a:#x}={child_mem.get(a, 0)}" for a in addrs[:4])
    report("fork snapshot broken",
           f"the child's memory ({diffs}) matches no moment of the parent's during fork")
