"""The kernel's own checks: VM_BUG_ON/VM_WARN_ON, lockdep-style held-lock
tracking, KASAN-style use-after-free reports (SLAB_TYPESAFE_BY_RCU as
CONFIG_SLUB_RCU_DEBUG sees it, 6.12+), validate_mm with the page-table,
page_table_check and page-count checks, the fork snapshot and the
/proc/pid/maps guarantees of Documentation/filesystems/proc.rst (7.0).

Everything reports through the one ``sched`` violation primitive.  These
checks never look at which bug switches are on: they state what must hold in
every kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pervma.kernel import lockdep
from pervma.kernel.task import HeldLock, TaskStruct, current_task
from pervma.sched import current_model, running_slot, violation

if TYPE_CHECKING:
    from pervma.kernel.locks import SpinLock
    from pervma.kernel.mm_types import MmStruct, Pte, VmAreaStruct
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
def _kasan_rcu_protected(obj: SlabObject) -> bool:
    """A freed SLAB_TYPESAFE_BY_RCU object is still accessible to a reader
    whose RCU read-side section began before the free (CONFIG_SLUB_RCU_DEBUG
    poisons it only after the grace period)."""
    gp = obj.kasan_free_gp
    if gp is None:
        return False
    tsk: TaskStruct | None = _running[-1].model if _running else None
    return tsk is not None and tsk.rcu_depth > 0 and tsk in gp.waits_for


def kasan_check(obj: SlabObject | None, where: str, what: str = "object") -> None:
    """An access to ``obj`` at ``where``: a use-after-free if it was freed
    (for a SLAB_TYPESAFE_BY_RCU object: and its grace period is over for
    the accessing task).  Callers on hot paths test ``obj.freed`` inline
    first and call this only then."""
    if obj is not None and obj.freed and not _kasan_rcu_protected(obj):
        rcu = ""
        if obj.kasan_free_gp is not None:
            rcu = " (SLAB_TYPESAFE_BY_RCU: no RCU read-side section from before the free covers it)"
        report(
            "KASAN: use-after-free",
            f"access to freed {what} #{obj.slot} in {where}{rcu}; allocated at {obj.alloc_site}, "
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


def debug_check_no_locks_held(tsk: TaskStruct) -> None:
    """A task ends holding nothing: lockdep's debug_check_no_locks_held()
    from do_exit() (7.0), and, as exit_rcu() warns for a task that dies
    inside an RCU read-side section, no rcu_read_lock() left open.  A model
    thread that calls kernel functions directly (no syscall, so no
    check_no_locks_held() on the way out) is checked here when it ends."""
    if tsk.system is not None and tsk.system.config.DEBUG_LOCK_ALLOC and tsk.held:
        lines = [f"{tsk.comm}/{tsk.pid} still has locks held!", *lockdep.held_locks_text(tsk)]
        report("WARNING: still has locks held", "\n".join(lines))
    if tsk.rcu_depth:
        report("WARNING: rcu_read_lock held at task exit",
               f"{tsk.comm}/{tsk.pid} exits with rcu_read_lock nesting {tsk.rcu_depth}")


def assert_pte_locked(ptl: SpinLock | None, mm: MmStruct, address: int, where: str) -> None:
    """A PTE changes only under the split page-table lock of its PTE page
    (``ptl``, None if that lock was never made): every kernel path that sets
    or clears one maps it with pte_offset_map_lock() or takes the lock itself
    (copy_pte_range() and move_ptes() take both tables' locks).  The kernel
    keeps the rule by construction, not by an assertion in set_pte_at(); the
    model checks it where a PTE is written, as assert_spin_locked() would."""
    if ptl is None or ptl.owner is not current_task():
        report("BUG: PTE changed without its page-table lock",
               f"{where}: mm#{mm.id} address {address:#x}")


def check_rmap_walk(av: Any, page: Any, where: str) -> None:
    """An rmap walk of an anon page, under its anon_vma's lock, finds every
    mapping of it: each PTE of a live mm that maps the page lies in a VMA of
    the anon_vma's interval tree at the page's index.  The kernel keeps this
    by ordering, not by a check: a VMA is linked before a PTE of it can map
    the page (the fault's anon_vma_prepare(), fork's anon_vma_fork() before
    copy_page_range(), mremap's copy_vma() before move_page_tables()) and
    unlinked only after its PTEs are gone (munmap and exit zap before
    free_pgtables()); range changes happen under this lock.  A walk that
    misses a mapping leaves it behind: reclaim frees a page still mapped,
    migration leaves the old page in place."""
    tsk = current_task()
    if tsk.system is None:
        return
    for m in _live_mms(tsk.system):
        for vpn, pte in m.pgtable.items():
            if pte.page is not page:
                continue
            addr = vpn << 12
            if not any(v.vm_mm is m and v.vm_start <= addr < v.vm_end
                       and v.vm_pgoff + ((addr - v.vm_start) >> 12) == page.index
                       for v in av.rb_root):
                report("rmap: walk misses a mapping",
                       f"{where}: mm#{m.id} maps page {page.pfn} at {addr:#x} but no VMA in "
                       f"anon_vma #{av.slot}'s tree covers it (a VMA unlinked before its PTEs "
                       "were zapped, or a PTE copied before its VMA was linked)")


# -- validate_mm ---------------------------------------------------------------
def validate_mm(mm: MmStruct) -> None:
    """mm/vma.c's validate_mm plus pervma's page-table checks, for a quiescent
    mm (no writer in progress: run after a synchronous call and at the end of
    an execution, never in the middle of an operation): VMAs sorted and
    disjoint, map_count right, attached VMAs at vm_refcnt 1 without a write
    lock outstanding; then every PTE (_validate_pte) and the machine's page
    counts (_validate_page_counts)."""
    from pervma.kernel.mm_types import VM_REFCNT_EXCLUDE_READERS_FLAG

    vmas = mm.mm_mt.snapshot()
    held = mm.mm_mt.entries()  # what the tree's leaves hold, in order
    if [v for _, _, v in held] != list(vmas):
        report("validate_mm", "the maple tree's leaves do not hold the VMAs its writer stored")
    prev_end = 0
    for (start, end, _), vma in zip(held, vmas, strict=False):
        kasan_check(vma, "validate_mm", "vm_area_struct")
        if (start, end) != (vma.vm_start, vma.vm_end):  # mm/vma.c's check
            report("validate_mm", f"vma_mas mismatch: {vma} but the tree holds it at "
                   f"[{start:#x}-{end:#x}]")
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
    mapped = _mappings(mm)
    for vpn, pte in mm.pgtable.items():
        addr = vpn << 12
        cover = mm.mm_mt.find_covering(addr)
        if cover is None:
            report("validate_mm", f"PTE for {addr:#x} outside every VMA")
            continue
        _validate_pte(cover, pte, addr, mapped)
    _validate_page_counts(mm, mapped)
    if mm.system is not None:
        _validate_mm_counts(mm.system)
        _validate_vma_objects(mm.system)
        _validate_anon_vmas(mm.system)
        _validate_committed(mm.system)
        _validate_rcu(mm.system)
        _validate_maple_nodes(mm.system)
    if mm.notifier_subscriptions is not None:
        validate_mmu_mirrors(mm)


def _live_mms(system: Any) -> list[MmStruct]:
    """The machine's mm_structs not freed, each once (a forked child's mm is
    its own; an exited process's mm may outlive its users)."""
    mms: dict[int, MmStruct] = {}
    for p in system.processes:
        if not p.mm.freed:
            mms[id(p.mm)] = p.mm
    return list(mms.values())


def _validate_vma_objects(system: Any) -> None:
    """kmemleak's view of the VMA cache once the machine is quiescent: every
    vm_area_struct allocated and not freed is in the tree of a live mm.  One
    more is an object no tree holds and nobody will free (a remove_vma() or
    vm_area_free() forgotten on some path, a copy made and dropped); one
    fewer, a VMA still in a tree after its free."""
    cache = system.vm_area_cachep
    in_trees = sum(len(m.mm_mt.snapshot()) for m in _live_mms(system))
    if cache.active > in_trees:
        report("kmemleak: unreferenced object",
               f"{cache.active - in_trees} vm_area_struct(s) allocated but in no live mm's tree "
               f"({cache.active} allocated, {in_trees} in trees)")
    elif cache.active < in_trees:
        report("BUG: vm_area_struct freed while in a tree",
               f"{in_trees} VMAs in the trees of live mms but {cache.active} allocated")


def _validate_anon_vmas(system: Any) -> None:
    """The rmap's side of the VMAs once the machine is quiescent.  Every
    anon_vma that a live VMA's chain reaches (directly, or as a root or a
    parent) lists only VMAs that some live mm maps: a VMA removed without
    unlink_anon_vmas() stays in the interval tree, freed, for the next rmap
    walk to read.  And the anon_vma cache holds no object beyond those: one
    more is an anon_vma whose last chain went without freeing it."""
    live: set[int] = set()
    todo: list[Any] = []
    for m in _live_mms(system):
        for v in m.mm_mt.snapshot():
            live.add(id(v))
            todo.extend(v.anon_vma_chain)
    reached: dict[int, Any] = {}
    while todo:
        av = todo.pop()
        if av is None or id(av) in reached:
            continue
        reached[id(av)] = av
        todo.append(av.root)
        todo.append(av.parent)
    for av in reached.values():
        for v in av.rb_root:
            if id(v) not in live:
                report("rmap: anon_vma tree holds a VMA no mm maps",
                       f"anon_vma #{av.slot} still lists {v} (freed: {v.freed}): the next rmap "
                       "walk reads it (unlink_anon_vmas() missed)")
    cache = system.anon_vma_cachep
    if cache.active > len(reached):
        report("kmemleak: unreferenced object",
               f"{cache.active - len(reached)} anon_vma(s) allocated but reached from no live "
               f"VMA ({cache.active} allocated, {len(reached)} reached)")


def _validate_committed(system: Any) -> None:
    """Overcommit accounting once the machine is quiescent: vm_committed_as
    holds exactly the pages of the VM_ACCOUNT mappings of the live mms (each
    charged before its VMA exists and uncharged when it goes, by munmap, exit,
    an mprotect that drops VM_ACCOUNT, or a failed fork or mmap undoing its
    charge: mm/util.c, 7.0).  The kernel's counter is per-CPU and never
    compared with the VMAs; the model's is exact, so a charge without its
    uncharge (or the reverse) on any path shows here."""
    from pervma.kernel.mm_types import VmFlags

    account = VmFlags.VM_ACCOUNT
    want = sum(v.pages() for m in _live_mms(system) for v in m.mm_mt.snapshot()
               if v.vm_flags & account)
    if system.vm_committed_as != want:
        report("BUG: overcommit accounting",
               f"vm_committed_as {system.vm_committed_as} pages but the live mms' VM_ACCOUNT "
               f"mappings hold {want} (a charge without its uncharge, or the reverse)")


def _validate_rcu(system: Any) -> None:
    """RCU's bookkeeping (kernel/rcu.py): a grace period waits only for
    tasks still inside the read-side section they were in when it began --
    one that left it without being crossed off would hold the grace period
    open forever (an RCU stall: its callbacks never run, and KASAN never
    poisons the SLAB_TYPESAFE_BY_RCU objects freed before it) -- and a grace
    period with nobody left to wait for has run its callback and is no
    longer pending.  Checked on the pending grace periods and on those the
    VMA and anon_vma caches' freed objects carry (KASAN's)."""
    rcu = system.rcu
    for gp in rcu.pending:
        if not gp.waits_for:
            report("BUG: RCU callback not invoked",
                   "a grace period with no reader left to wait for is still pending")
    gps = list(rcu.pending)
    for cache in (system.vm_area_cachep, system.anon_vma_cachep):
        gps.extend(o.kasan_free_gp for o in cache.freelist if o.kasan_free_gp is not None)
    for gp in gps:
        for t in gp.waits_for:
            if t.rcu_depth == 0:
                report("INFO: rcu detected stall",
                       f"a grace period still waits for {t.comm}/{t.pid}, which left its "
                       "read-side section (rcu_read_unlock() did not report the quiescent state)")
    for t in rcu.readers:
        if t.rcu_depth == 0:
            report("INFO: rcu detected stall",
                   f"{t.comm}/{t.pid} is counted as an RCU reader outside any read-side section")


def _validate_maple_nodes(system: Any) -> None:
    """kmemleak's view of the maple node cache: every node allocated and not
    freed is in the tree of a live mm, or replaced and waiting in an RCU
    callback for its grace period (mt_free_rcu()).  One more is a node no
    tree holds and no callback will free (a call_rcu() never queued, or its
    callback never run); one fewer, a node freed while a tree still holds
    it (a lockless walker would read freed memory: the StackRot class)."""
    want = sum(m.mm_mt.nodes() for m in _live_mms(system))
    for gp in system.rcu.pending:
        cb = gp.callback
        if getattr(getattr(cb, "func", None), "__name__", "") == "_mt_free_rcu":
            want += len(cb.args[1])  # type: ignore[union-attr]  # partial(_mt_free_rcu, cache, nodes)
    have = system.maple_node_cachep.active
    if have > want:
        report("kmemleak: unreferenced object",
               f"{have - want} maple_node(s) allocated but in no live tree and in no pending "
               f"RCU callback ({have} allocated, {want} accounted for)")
    elif have < want:
        report("BUG: maple_node freed while in a tree",
               f"{want} maple nodes in live trees or pending callbacks but {have} allocated")


def _validate_mm_counts(system: Any) -> None:
    """Every mm_count reference of the machine has a holder once it is
    quiescent: the one the users share while mm_users is above zero (dropped
    by mmput()), one per mmu_notifier subscription (mmgrab() in
    __mmu_notifier_register(); the model never unregisters) and one per live
    userfaultfd context (new_userfaultfd(); dropped by userfaultfd_ctx_put()).
    More is an mmgrab() without its mmdrop() -- the mm_struct is never
    freed -- fewer an mmdrop() without its mmgrab(); an mm_struct at
    mm_count 0 must be freed.  Counted over the whole
    machine, since a context does not say which mm it pins without walking
    the model's objects."""
    mms = _live_mms(system)
    for m in mms:
        if m.mm_count.counter == 0:
            report("BUG: mm_struct leak", f"{m} has mm_count 0 but was not freed (__mmdrop() "
                   "must free it)")
    have = sum(m.mm_count.counter for m in mms)
    want = system.userfaultfd_ctx_cachep.active
    for m in mms:
        want += m.mm_users.counter > 0
        if m.notifier_subscriptions is not None:
            want += len(m.notifier_subscriptions.list)
    if have != want:
        counts = ", ".join(f"{m} mm_count {m.mm_count.counter} mm_users {m.mm_users.counter}"
                           for m in mms)
        report("BUG: mm_count " + ("leak" if have > want else "underflow"),
               f"{have} mm_count references on the machine's mm_structs, {want} expected "
               f"(users, mmu_notifier subscriptions, userfaultfd contexts): {counts}")


def validate_mmu_mirrors(mm: MmStruct) -> None:
    """Every secondary MMU subscribed to mm (kernel/mmu_mirror.py) holds no
    stale entry once the core mm is quiescent: each entry maps the page the
    primary PTE maps, with no more access than it gives, and no invalidation
    is left open (invalidate_range_start without its _end)."""
    for sub in mm.notifier_subscriptions.list:
        sptes = getattr(sub, "spte", None)
        if sptes is None:
            continue
        if getattr(sub, "invalidate_in_progress", 0):
            report("BUG: mmu_notifier", f"{sub}: {sub.invalidate_in_progress} invalidate_range_start "
                   "without invalidate_range_end")
        for vpn, (page, writable) in sorted(sptes.items()):
            pte = mm.pgtable.get(vpn)
            if pte is None:
                now = "no primary PTE"
            elif pte.page is not page:
                now = f"the primary PTE maps pfn {pte.page.pfn}"
            elif not pte.readable or (writable and not pte.writable):
                now = f"the primary PTE is {'read-only' if pte.readable else 'PROT_NONE'}"
            else:
                continue
            report("BUG: mmu_notifier", f"stale secondary PTE after invalidate_range_end: {sub} maps "
                   f"{vpn << 12:#x} to pfn {page.pfn} {'writable' if writable else 'read-only'}, but "
                   f"{now} in {mm} (a PTE changed without mmu_notifier_invalidate_range_start)")


def _mappings(mm: MmStruct) -> dict[int, int]:
    """PTEs mapping each page (by pfn) in every live mm of the machine:
    what _mapcount must say (the zero page is not counted)."""
    mms = [mm]
    system = mm.system
    if system is not None:
        for p in system.processes:
            m = p.mm
            if not m.freed and all(m is not x for x in mms):
                mms.append(m)
    out: dict[int, int] = {}
    for m in mms:
        for pte in m.pgtable.values():
            pfn = pte.page.slot
            out[pfn] = out.get(pfn, 0) + 1
    return out


def _validate_pte(vma: VmAreaStruct, pte: Pte, addr: int, mapped: dict[int, int]) -> None:
    """A present PTE allows no more than its VMA's vm_flags; a writable PTE
    of a private mapping maps an exclusive anonymous page (CoW: the
    page_table_check rule that an anon page mapped writable has one mapping,
    and that the zero page is never writable); an anonymous page is
    reachable by rmap: its anon_vma is on the VMA's chain and its index
    gives back the address (rmap_walk_anon's vma_address())."""
    from pervma.kernel.mm_types import VmFlags

    page = pte.page
    kasan_check(page, "validate_mm", "page")
    flags = vma.vm_flags
    if pte.writable and not flags & VmFlags.VM_WRITE:
        report("validate_mm: PTE allows more than vm_flags",
               f"PTE for {addr:#x} in {vma} is writable but the VMA lacks VM_WRITE "
               f"(vm_flags {int(flags):#x})")
    if pte.readable and not flags & (VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_EXEC):
        report("validate_mm: PTE allows more than vm_flags",
               f"PTE for {addr:#x} in {vma} is accessible but the VMA is PROT_NONE "
               f"(vm_flags {int(flags):#x})")
    if pte.writable:
        if page.zero_page:
            report("kernel BUG at mm/page_table_check.c", f"the zero page is mapped writable at {addr:#x} in {vma}")
        elif not flags & VmFlags.VM_SHARED:
            if page.anon_vma is None and page.mapping is not None:
                report("validate_mm: CoW broken",
                       f"private {vma} maps page-cache page {page.pfn} of {page.mapping.path} writable "
                       f"at {addr:#x}: a store would reach the file")
            elif mapped.get(page.slot, 0) > 1:
                report("kernel BUG at mm/page_table_check.c",
                       f"anon page {page.pfn} mapped writable at {addr:#x} in {vma} while it has "
                       f"{mapped[page.slot]} mappings (a CoW page must be write-protected)")
    av = page.anon_vma
    if av is not None:
        kasan_check(av, "validate_mm: page->mapping", "anon_vma")
        if av not in vma.anon_vma_chain:
            report("rmap: anon page unreachable",
                   f"page {page.pfn} at {addr:#x} in {vma}: its anon_vma is not on the VMA's chain")
        elif vma not in av.rb_root:
            report("rmap: anon page unreachable",
                   f"page {page.pfn} at {addr:#x} in {vma}: the VMA is not in its anon_vma "
                   f"#{av.slot}'s interval tree")
        elif vma.vm_start + ((page.index - vma.vm_pgoff) << 12) != addr:
            report("rmap: anon page unreachable",
                   f"page {page.pfn} at {addr:#x} in {vma}: index {page.index:#x} with vm_pgoff "
                   f"{vma.vm_pgoff:#x} gives {vma.vm_start + ((page.index - vma.vm_pgoff) << 12):#x}")
    elif vma.is_anonymous() and not page.zero_page:
        report("rmap: anon page unreachable",
               f"page {page.pfn} at {addr:#x} in anonymous {vma} has no anon_vma")


def _validate_page_counts(mm: MmStruct, mapped: dict[int, int]) -> None:
    """Every allocated page's _mapcount equals the PTEs mapping it, and its
    _refcount equals those mappings plus the page cache's reference: a page
    with more references is leaked, one with fewer will be freed while still
    mapped; a page at _refcount 0 is freed.  Pages in flight do not exist
    here: the mm is quiescent."""
    system = mm.system
    cache = system.page_cachep if system is not None else None
    if cache is None or not cache.mem_map:
        return
    for pfn, page in cache.live.items():
        if page.zero_page:
            continue
        n = mapped.get(pfn, 0)
        if page.mapcount != n:
            report("BUG: Bad page map",
                   f"page {pfn} (allocated at {page.alloc_site}): _mapcount {page.mapcount}, "
                   f"but {n} PTEs map it")
        file = page.mapping
        cached = int(file is not None and file.pages.get(page.index) is page)
        want = n + cached
        if page.refcount == 0:
            report("BUG: Bad page state",
                   f"page {pfn} (allocated at {page.alloc_site}): _refcount 0 but not freed "
                   "(the last put_page() must free it): leaked")
        elif page.refcount != want:
            what = "leaked" if page.refcount > want else "will be freed while still in use"
            report("BUG: Bad page state",
                   f"page {pfn} (allocated at {page.alloc_site}): _refcount {page.refcount}, "
                   f"but {n} mappings and {cached} page-cache reference: {what}")


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


# -- /proc/pid/maps across mapping changes ------------------------------------
Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent [start, end)


@dataclass(eq=False, slots=True)
class MapsReadLog:
    """One /proc/pid/maps read being checked: the address ranges mapped at
    every moment since it began (``must``) and at some moment (``may``).
    It hangs on the mm's tree while the read runs (the tree's writer
    updates it on each store), so it costs nothing when no read runs."""

    must: Ranges
    may: Ranges


def _mapped_ranges(vmas: tuple[VmAreaStruct, ...] | list[VmAreaStruct]) -> Ranges:
    out: list[tuple[int, int]] = []
    for v in sorted(vmas, key=lambda v: v.vm_start):
        if out and v.vm_start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], v.vm_end))
        else:
            out.append((v.vm_start, v.vm_end))
    return tuple(out)


def _intersect(a: Ranges, b: Ranges) -> Ranges:
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _union(a: Ranges, b: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(a + b):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return tuple(out)


def maps_read_begin(mm: MmStruct) -> MapsReadLog:
    """Start recording mm's mapping changes for a /proc/pid/maps read."""
    now = _mapped_ranges(mm.mm_mt.snapshot())
    log = MapsReadLog(now, now)
    tree = mm.mm_mt
    tree.maps_log = [*(tree.maps_log or ()), log]
    return log


def maps_record(logs: list[MapsReadLog], vmas: tuple[VmAreaStruct, ...]) -> None:
    """The tree of an mm being read changed: fold its ranges in."""
    now = _mapped_ranges(vmas)
    for log in logs:
        log.must = _intersect(log.must, now)
        log.may = _union(log.may, now)


def maps_read_end(mm: MmStruct, log: MapsReadLog, listed: list[tuple[int, int]], complete: bool) -> None:
    """The read's lines against the guarantees the 7.0 reader keeps: its
    position never goes backwards (each line ends above the one before:
    lock_next_vma() refuses a VMA ending at or below the last position, so a
    VMA that replaced the one just shown may start below it and overlap that
    line, as proc.rst's "never go backwards" reads in the code), and
    whatever was mapped for the entire read has a line; plus no line shows a
    range that was never mapped during the read.  An interrupted read
    (``complete`` false) is checked for the first and last rule only."""
    tree = mm.mm_mt
    rest = [x for x in tree.maps_log or () if x is not log]
    tree.maps_log = rest or None
    prev_end = 0
    for start, end in listed:
        if end <= prev_end:
            report("/proc/pid/maps: lines go backwards",
                   f"{start:#x}-{end:#x} listed after a line ending at {prev_end:#x}")
        prev_end = end
        if _intersect(((start, end),), log.may) != ((start, end),):
            report("/proc/pid/maps: a range never mapped during the read",
                   f"line {start:#x}-{end:#x}; mapped at some moment of the read: {_fmt(log.may)}")
    if not complete:
        return
    missing = _intersect(log.must, _complement(_union(tuple(listed), ())))
    if missing:
        lo, hi = missing[0]
        report("/proc/pid/maps: a mapping missed",
               f"{lo:#x}-{hi:#x} stayed mapped for the entire read but no line covers it "
               f"(lines: {_fmt(tuple(listed))})")


def _complement(a: Ranges) -> Ranges:
    out = []
    prev = 0
    for lo, hi in a:
        if lo > prev:
            out.append((prev, lo))
        prev = hi
    out.append((prev, 1 << 64))
    return tuple(out)


def _fmt(r: Ranges) -> str:
    return " ".join(f"{lo:#x}-{hi:#x}" for lo, hi in r) or "nothing"
