"""The kernel's own checks as oracles (issue #13, item 1): validate_mm's page
checks, KASAN on every access to a VMA, the fault-address check and the
/proc/pid/maps guarantees.

Each oracle meets one realistic regression: a single-line edit of the 7.0
logic made here, in the test (``_edited`` recompiles one model function with
one line changed and the test monkeypatches it in), never through
``kernel/bugs.py``.  The edited kernel trips the oracle with the message a
kernel developer knows; the unedited one stays clean on the same scenario.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import pytest

import pervma.kernel.fault as fault_mod
import pervma.kernel.memory as memory
import pervma.kernel.mmap as mmap_mod
import pervma.kernel.mmap_lock as mmap_lock
import pervma.kernel.mprotect as mprotect_mod
import pervma.kernel.rcu as rcu_mod
import pervma.kernel.rmap as rmap
import pervma.kernel.system as system_mod
import pervma.kernel.task_mmu as task_mmu
import pervma.kernel.vma as vma_mod
from pervma import MAP_ANONYMOUS, MAP_PRIVATE, PAGE, PROT_READ, PROT_WRITE, Config, System
from pervma.check import stateful
from pervma.check.api import run_check
from pervma.check.scenario import Scenario, all_scenarios, get_scenario
from pervma.check.scenarios.kernel import ANON, RW, A, World
from pervma.check.search import Budget, Runner
from pervma.kernel import debug
from pervma.kernel.rcu import call_rcu, rcu_read_lock, rcu_read_unlock
from pervma.kernel.slab import KmemCache, SlabObject
from pervma.sched import Violation, run_direct

PRESETS = ("legacy", "universal", "universal-up", "universal-up-nopreempt")


def _edited(fn: Callable[..., Any], old: str, new: str) -> Callable[..., Any]:
    """``fn`` recompiled with the one line ``old`` replaced by ``new`` (the
    line must occur exactly once: a model that changed fails loudly here)."""
    src = textwrap.dedent(inspect.getsource(fn))
    assert src.count(old) == 1, f"{fn.__qualname__} no longer has the line {old!r}"
    namespace = dict(fn.__globals__)
    exec(compile(src.replace(old, new), inspect.getsourcefile(fn) or "<model>", "exec"), namespace)
    edited: Callable[..., Any] = namespace[fn.__name__]
    return edited


def _patch(monkeypatch: pytest.MonkeyPatch, fn: Callable[..., Any], edited: Callable[..., Any],
           *modules: ModuleType) -> None:
    """Put ``edited`` in place of ``fn`` wherever the model imported it."""
    for mod in modules:
        assert getattr(mod, fn.__name__) is fn
        monkeypatch.setattr(mod, fn.__name__, edited)


def _explore(scenario: Scenario, preset: str = "universal") -> tuple[str | None, str, bool]:
    """The stateful search to its end or the first violation: (kind, message, complete)."""
    st = stateful.explore(Runner(scenario, Config.preset(preset)), Budget())
    if st.found is None:
        return None, "", st.complete
    return st.found.kind, st.found.message, st.complete


def _anon_process(npages: int = 1) -> tuple[System, Any, int]:
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    a = p.mmap(0, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    for i in range(npages):
        p.store(a + i * PAGE, 0x5A)
    return kern, p, a


# -- validate_mm: PTEs against vm_flags, CoW, rmap, page counts --------------------
def test_validate_mm_is_clean_after_mprotect_fork_cow_and_munmap() -> None:
    kern, p, a = _anon_process(2)
    p.mprotect(a, PAGE, PROT_READ)
    c = p.fork()
    p.store(a + PAGE, 1)  # breaks CoW in the parent
    c.store(a + PAGE, 2)  # and in the child
    assert (p.load(a + PAGE), c.load(a + PAGE), c.load(a)) == (1, 2, 0x5A)
    c.munmap(a, 2 * PAGE)
    debug.validate_mm(p.mm)
    pages = [pg for pg in kern.page_cachep.live.values() if not pg.zero_page]
    assert sorted((pg.mapcount, pg.refcount) for pg in pages) == [(1, 1), (1, 1)]


def test_mprotect_leaving_the_write_bit_is_a_pte_beyond_vm_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    # change_pte_range() without the write-protect: the PTE keeps its write bit.
    bad = _edited(memory.change_protection,
                  "writable = pte.writable and bool(newflags & VmFlags.VM_WRITE)",
                  "writable = pte.writable")
    _patch(monkeypatch, memory.change_protection, bad, memory, mprotect_mod)
    _kern, p, a = _anon_process()
    with pytest.raises(Violation) as exc:
        p.mprotect(a, PAGE, PROT_READ)
    assert exc.value.kind == "validate_mm: PTE allows more than vm_flags"
    # vm_flags: VM_ACCOUNT | VM_MAY{READ,WRITE,EXEC} | VM_READ
    assert exc.value.message == (f"PTE for {a:#x} in vma#1[{a:#x}-{a + PAGE:#x}] is writable but "
                                 "the VMA lacks VM_WRITE (vm_flags 0x100071)")


def test_fork_not_write_protecting_the_parent_is_caught_by_page_table_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # copy_present_pte() without the wrprotect of the parent's PTE: both map the page, one writably.
    bad = _edited(memory.copy_page_range, "if cow and pte.writable:", "if False:")
    _patch(monkeypatch, memory.copy_page_range, bad, memory, mmap_mod)
    _kern, p, a = _anon_process()
    with pytest.raises(Violation) as exc:
        p.fork()
    assert exc.value.kind == "kernel BUG at mm/page_table_check.c"
    assert f"mapped writable at {a:#x}" in exc.value.message
    assert exc.value.message.endswith("while it has 2 mappings (a CoW page must be write-protected)")


def test_fork_not_linking_the_parents_anon_vma_leaves_pages_unreachable_by_rmap(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # anon_vma_fork() without anon_vma_clone(): the child's chain lacks the parent's anon_vma.
    bad = _edited(rmap.anon_vma_fork, "ret = await anon_vma_clone(vma, pvma)", "ret = 0")
    _patch(monkeypatch, rmap.anon_vma_fork, bad, rmap, mmap_mod)
    _kern, p, a = _anon_process()
    with pytest.raises(Violation) as exc:
        p.fork()
    assert exc.value.kind == "rmap: anon page unreachable"
    assert f"at {a:#x} in vma#" in exc.value.message
    assert exc.value.message.endswith("its anon_vma is not on the VMA's chain")


def test_zap_forgetting_the_page_reference_leaks_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    # zap_pte_range() without the put of an anonymous page: nothing maps it, nothing frees it.
    bad = _edited(memory.zap_present_page, 'put_page(mm, page, "zap_pte_range")', "pass")
    _patch(monkeypatch, memory.zap_present_page, bad, memory)
    _kern, p, a = _anon_process()
    with pytest.raises(Violation) as exc:
        p.munmap(a, PAGE)
    assert exc.value.kind == "BUG: Bad page state"
    assert exc.value.message.endswith("_refcount 1, but 0 mappings and 0 page-cache reference: leaked")


def test_fork_forgetting_the_page_reference_will_free_a_mapped_page(monkeypatch: pytest.MonkeyPatch) -> None:
    # copy_present_pte() without its get_page(): two mappings hold one reference.
    bad = _edited(memory.copy_page_range, "page.refcount += 1", "pass")
    _patch(monkeypatch, memory.copy_page_range, bad, memory, mmap_mod)
    _kern, p, _a = _anon_process()
    with pytest.raises(Violation) as exc:
        p.fork()
    assert exc.value.kind == "BUG: Bad page state"
    assert exc.value.message.endswith("_refcount 1, but 2 mappings and 0 page-cache reference: "
                                      "will be freed while still in use")


def test_zap_forgetting_the_mapcount_is_a_bad_page_map(monkeypatch: pytest.MonkeyPatch) -> None:
    # zap_pte_range() without the rmap removal (folio_remove_rmap_pte) of a CoW-shared page.
    bad = _edited(memory.zap_present_page, "page.mapcount -= 1", "pass")
    _patch(monkeypatch, memory.zap_present_page, bad, memory)
    _kern, p, a = _anon_process()
    c = p.fork()
    with pytest.raises(Violation) as exc:
        c.munmap(a, PAGE)
    assert exc.value.kind == "BUG: Bad page map"
    assert exc.value.message.endswith("_mapcount 2, but 1 PTEs map it")


def test_a_killed_fork_tears_its_child_down() -> None:
    # copy_process() after a fatal signal: the child's copy of the page tables goes again.
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    p.mmap(A, PAGE, RW, ANON)
    p.store(A, 1)
    t = p.thread()
    t.task.fatal_signal = True
    result = run_direct(t._guard(t.fork()), model=t.task)
    assert type(result).__name__ == "Killed"
    debug.validate_mm(p.mm)
    page = p.mm.pgtable[A // PAGE].page
    assert (page.mapcount, page.refcount) == (1, 1)
    assert len(kern.processes) == 1 and kern.mm_cachep.active == 1


def test_a_fork_failing_half_way_tears_its_child_down_and_uncharges_it_once() -> None:
    # dup_mm() after dup_mmap() failed: the first VMA (and its page) was copied already.
    kern = System(Config.preset("universal"), mem_pages=20000, overcommit_memory=2, overcommit_ratio=100)
    p = kern.spawn()
    p.mmap(A, PAGE, RW, ANON)
    p.store(A, 1)
    p.mmap(2 * A, 12000 * PAGE, RW, ANON)  # its child copy exceeds the commit limit
    committed = kern.vm_committed_as
    with pytest.raises(OSError) as exc:
        p.fork()
    assert exc.value.errno == 12
    assert kern.vm_committed_as == committed
    assert kern.mm_cachep.active == 1
    page = p.mm.pgtable[A // PAGE].page
    assert (page.mapcount, page.refcount) == (1, 1)


# -- KASAN ------------------------------------------------------------------------
def _typesafe_cache() -> KmemCache[SlabObject]:
    return KmemCache("vm_area_struct", lambda slot: SlabObject(), typesafe_by_rcu=True)


def test_kasan_lets_a_typesafe_by_rcu_reader_in_until_its_grace_period_ends() -> None:
    kern = System(Config.preset("universal"))
    task = kern.spawn().main.task
    cache = _typesafe_cache()
    seen: list[str] = []

    async def reader() -> None:
        rcu_read_lock()
        obj = cache.alloc("test")
        cache.free(obj, "test free")
        debug.kasan_check(obj, "inside the section that saw the free", "vm_area_struct")  # legal
        seen.append("inside")
        rcu_read_unlock()  # the grace period ends
        rcu_read_lock()
        debug.kasan_check(obj, "a later section", "vm_area_struct")

    with pytest.raises(Violation) as exc:
        run_direct(reader(), model=task)
    assert seen == ["inside"]
    assert exc.value.kind == "KASAN: use-after-free"
    assert exc.value.message.startswith("access to freed vm_area_struct #0 in a later section "
                                        "(SLAB_TYPESAFE_BY_RCU: no RCU read-side section")


def test_a_grace_period_waits_for_the_readers_of_its_start_and_forgets_them() -> None:
    """A grace period lists the tasks inside a read-side section when it
    starts; each leaves the list at its outermost rcu_read_unlock, the
    callback runs when the last one leaves, and RCU keeps no trace of a
    reader after its section (no section counter, no registry of past
    readers: two states that differ only in past sections are one state)."""
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    t1, t2 = p.main.task, p.thread().task
    ran: list[str] = []

    async def enter() -> None:
        rcu_read_lock()
        rcu_read_lock()  # nested: only the outermost unlock counts

    async def leave() -> None:
        rcu_read_unlock()

    run_direct(enter(), model=t1)
    run_direct(enter(), model=t2)

    async def queue() -> None:
        call_rcu(lambda: ran.append("callback"))

    run_direct(queue(), model=t1)
    (gp,) = kern.rcu.pending
    assert gp.waits_for == [t1, t2] and ran == []
    run_direct(leave(), model=t2)
    run_direct(leave(), model=t2)
    assert gp.waits_for == [t1] and ran == []
    run_direct(leave(), model=t1)
    assert gp.waits_for == [t1]  # still inside its outer section
    run_direct(leave(), model=t1)
    assert (gp.waits_for, ran, kern.rcu.pending, kern.rcu.readers) == ([], ["callback"], [], [])
    assert not hasattr(t1, "rcu_section")


def test_kasan_does_not_report_a_reused_typesafe_object() -> None:
    kern = System(Config.preset("universal"))
    task = kern.spawn().main.task
    cache = _typesafe_cache()

    async def body() -> int:
        obj = cache.alloc("first")
        cache.free(obj, "test free")
        again = cache.alloc("second")  # the same object, a new identity
        debug.kasan_check(obj, "stale pointer to a reused object", "vm_area_struct")
        return int(again is obj) + obj.generation

    assert run_direct(body(), model=task) == 3


def test_a_vma_cache_without_typesafe_by_rcu_is_a_use_after_free_in_vma_start_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # kmem_cache_create("vm_area_struct", ...) without SLAB_TYPESAFE_BY_RCU (and no call_rcu
    # in vm_area_free): the lockless reader reads a freed VMA.
    bad = _edited(system_mod.System.__init__, "\n        typesafe_by_rcu=True)",
                  "\n        typesafe_by_rcu=False)")
    monkeypatch.setattr(system_mod.System, "__init__", bad)
    kind, message, _ = _explore(get_scenario("fault-vs-munmap"))
    assert kind == "KASAN: use-after-free"
    assert message.startswith("access to freed vm_area_struct #")
    assert " in vma_start_read: " in message
    assert message.endswith("allocated at __mmap_new_vma, freed at remove_vma")


def test_fault_vs_munmap_is_clean_with_the_typesafe_by_rcu_cache() -> None:
    assert _explore(get_scenario("fault-vs-munmap")) == (None, "", True)


# -- a fault never handles an address outside the VMA it locked ---------------------
def _fault_vs_head_split(w: World) -> None:
    p = w.p
    p.mmap(A, 3 * PAGE, RW, ANON)

    async def fault(t: Any) -> int:
        return int(await t.load(A + 2 * PAGE))  # a read fault: allowed in the head too

    async def split(t: Any) -> int:
        return int(await t.mprotect(A, PAGE, PROT_READ))  # the VMA object keeps [A, A+PAGE)

    w.thread("fault", p.thread(), fault)
    w.thread("mprotect", p.thread(), split)


FAULT_VS_HEAD_SPLIT = Scenario(
    "test-fault-vs-head-split", "a read fault on the tail page races mprotect splitting off the head",
    lambda cfg: _build(cfg, _fault_vs_head_split))


def _build(cfg: Config, fill: Callable[[World], None]) -> Any:
    w = World(cfg)
    fill(w)
    return w.instance()


def test_lock_vma_under_rcu_without_its_range_check_faults_outside_the_vma(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # lock_vma_under_rcu() without "the VMA may have changed before we locked it".
    bad = _edited(mmap_lock.lock_vma_under_rcu, "if not (start <= address < end):",
                  "if False:")
    _patch(monkeypatch, mmap_lock.lock_vma_under_rcu, bad, mmap_lock, fault_mod)
    kind, message, _ = _explore(FAULT_VS_HEAD_SPLIT)
    assert kind == "BUG: fault outside its VMA"
    assert message == f"handle_mm_fault: {A + 2 * PAGE:#x} not in vma#1[{A:#x}-{A + PAGE:#x}]"


@pytest.mark.parametrize("preset", PRESETS)
def test_the_fault_vs_head_split_race_is_clean(preset: str) -> None:
    assert _explore(FAULT_VS_HEAD_SPLIT, preset) == (None, "", True)


# -- a thread's end and the mm_structs' lifetimes -------------------------------------
def test_a_thread_ending_with_mmap_lock_read_held_still_has_locks_held(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # lock_vma_under_rcu_wait() forgetting the unlock of its fallback: the
    # scenario's lookup calls it directly, so no syscall exit checks it, but
    # do_exit()'s debug_check_no_locks_held() does.
    import pervma.kernel.binder as binder

    bad = _edited(mmap_lock.lock_vma_under_rcu_wait, "    await mmap_read_unlock(mm)\n", "\n")
    _patch(monkeypatch, mmap_lock.lock_vma_under_rcu_wait, bad, mmap_lock, binder)
    kind, message, _ = _explore(get_scenario("lock-vma-under-rcu-wait"))
    assert kind == "WARNING: still has locks held"
    assert message.splitlines()[0] == "lookup/2 still has locks held!"
    assert "(&mm->mmap_lock){read}" in message


def test_a_thread_ending_inside_rcu_read_lock_is_reported_at_its_exit() -> None:
    def fill(w: World) -> None:
        async def reader(t: Any) -> None:
            rcu_read_lock()

        w.thread("reader", w.p.thread(), reader)

    kind, message, _ = _explore(Scenario("test-rcu-at-exit", "a thread ends in an RCU read "
                                         "section", lambda cfg: _build(cfg, fill)))
    assert kind == "WARNING: rcu_read_lock held at task exit"
    assert message == "reader/2 exits with rcu_read_lock nesting 1"


def test_vma_start_read_without_its_mmdrop_leaks_the_other_mm(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the reuse check pins the VMA's new mm around its refcount put; without
    # the mmdrop() the exited mm is never freed
    bad = _edited(mmap_lock.vma_start_read, "            await mmdrop(other)\n", "\n")
    _patch(monkeypatch, mmap_lock.vma_start_read, bad, mmap_lock)
    kind, message, _ = _explore(get_scenario("vma-reuse-by-another-mm"))
    assert kind == "BUG: mm_count leak"
    assert message.startswith("2 mm_count references on the machine's mm_structs, 1 expected")
    assert message.endswith("mm#0 mm_count 1 mm_users 3, mm#1 mm_count 1 mm_users 0")


def test_an_mmdrop_that_never_frees_leaks_the_mm_struct(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _edited(mmap_lock.mmdrop, '        mm.system.free_mm(mm, "__mmdrop")', "        pass")
    _patch(monkeypatch, mmap_lock.mmdrop, bad, mmap_lock, mmap_mod)
    kind, message, _ = _explore(get_scenario("exit-vs-fault"))
    assert kind == "BUG: mm_struct leak"
    assert message == "mm#1 has mm_count 0 but was not freed (__mmdrop() must free it)"


def test_remove_vma_without_its_free_leaks_the_vm_area_struct(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _edited(vma_mod.remove_vma, '    vm_area_free(vma, "remove_vma")', "    pass")
    _patch(monkeypatch, vma_mod.remove_vma, bad, vma_mod, mmap_mod)
    kind, message, _ = _explore(get_scenario("fault-vs-munmap"))
    assert kind == "kmemleak: unreferenced object"
    assert message == ("1 vm_area_struct(s) allocated but in no live mm's tree "
                       "(2 allocated, 1 in trees)")


def test_munmap_without_unlink_anon_vmas_leaks_the_anon_vma(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _edited(vma_mod.unlink_vmas_rmap, "        await unlink_anon_vmas(v)\n", "\n")
    _patch(monkeypatch, vma_mod.unlink_vmas_rmap, bad, vma_mod, mmap_mod)
    kind, message, _ = _explore(get_scenario("fault-vs-munmap"))
    assert kind == "kmemleak: unreferenced object"
    assert message == "1 anon_vma(s) allocated but reached from no live VMA (1 allocated, 0 reached)"


def test_a_merge_without_unlink_anon_vmas_leaves_a_freed_vma_in_the_anon_vma_tree(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the VMA a merge absorbs is freed but still listed by the anon_vma the
    # merged VMA keeps: the next rmap walk reads freed memory
    bad = _edited(vma_mod._vma_complete_remove, "    await unlink_anon_vmas(vma)\n", "\n")
    _patch(monkeypatch, vma_mod._vma_complete_remove, bad, vma_mod)
    kind, message, _ = _explore(get_scenario("uffd-close-vs-fault"))
    assert kind == "rmap: anon_vma tree holds a VMA no mm maps"
    assert message == (f"anon_vma #0 still lists vma#1[{A:#x}-{A + PAGE:#x}] (freed: True): the "
                       "next rmap walk reads it (unlink_anon_vmas() missed)")


def test_a_put_page_that_never_frees_leaks_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _edited(memory.put_page, "        mm.system.page_cachep.free(page, site)", "        pass")
    _patch(monkeypatch, memory.put_page, bad, memory)
    kind, message, _ = _explore(get_scenario("fault-vs-munmap"))
    assert kind == "BUG: Bad page state"
    assert message == ("page 1 (allocated at alloc_pages): _refcount 0 but not freed (the last "
                       "put_page() must free it): leaked")


def test_an_anonymous_page_allocated_under_the_pte_lock_sleeps_in_atomic_context(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the page allocated after the page-table lock is taken instead of before:
    # a GFP_HIGHUSER_MOVABLE allocation may sleep, under a spinlock
    bad = _edited(memory.do_anonymous_page,
                  "    page = await vma_alloc_folio(vma, vmf.address)\n    await ptl.lock()\n",
                  "    await ptl.lock()\n    page = await vma_alloc_folio(vma, vmf.address)\n")
    _patch(monkeypatch, memory.do_anonymous_page, bad, memory)
    kind, message, _ = _explore(get_scenario("fault-vs-munmap"))
    assert kind == "BUG: sleeping function called from invalid context"
    assert message.startswith("at mm/page_alloc.c, in prepare_alloc_pages(might_alloc)\n"
                              "in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 2, name: fault\n"
                              "preempt_count: 1, expected: 0\n")
    assert "#1: (ptlock_ptr(ptdesc)){write}, at: do_anonymous_page()" in message


def test_a_pte_installed_after_its_lock_is_dropped_is_reported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # finish_fault() unlocking before set_pte_at(): another fault that found
    # the PTE empty under the lock may install its own page over this one
    bad = _edited(memory.finish_fault,
                  '    await set_pte_at(mm, vmf.vpn, Pte(page, writable=writable, dirty=writable), '
                  '"finish_fault: set_pte_at")\n    await ptl.unlock()\n',
                  '    await ptl.unlock()\n    await set_pte_at(mm, vmf.vpn, Pte(page, writable=writable, '
                  'dirty=writable), "finish_fault: set_pte_at")\n')
    _patch(monkeypatch, memory.finish_fault, bad, memory)
    kind, message, _ = _explore(get_scenario("truncate-vs-fault"))
    assert kind == "BUG: PTE changed without its page-table lock"
    assert message == f"finish_fault: set_pte_at: mm#0 address {A + PAGE:#x}"


def test_munmap_forgetting_to_uncharge_is_an_overcommit_accounting_bug(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # vms_complete_munmap_vmas() without its vm_unacct_memory(): the two pages
    # munmap removes stay charged to vm_committed_as for good
    bad = _edited(vma_mod.vms_complete_munmap_vmas,
                  "        vm_unacct_memory(mm.system, vms.nr_accounted)\n", "        pass\n")
    _patch(monkeypatch, vma_mod.vms_complete_munmap_vmas, bad, vma_mod)
    kind, message, _ = _explore(get_scenario("fault-vs-munmap"))
    assert kind == "BUG: overcommit accounting"
    assert message == ("vm_committed_as 35 pages but the live mms' VM_ACCOUNT mappings hold 33 "
                       "(a charge without its uncharge, or the reverse)")


def test_a_failed_munmap_that_does_not_reattach_leaves_a_detached_vma_in_the_tree(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # vms_gather_munmap_vmas() failing its second split without reattach_vmas():
    # the part it had detached stays in the tree (a fault that locks it is
    # "BUG: fault on a detached VMA"; the first execution the search ends
    # meets validate_mm's check of every VMA in the tree)
    bad = _edited(vma_mod.vms_gather_munmap_vmas, "                await reattach_vmas(vms)\n",
                  "                pass\n")
    _patch(monkeypatch, vma_mod.vms_gather_munmap_vmas, bad, vma_mod)
    kind, message, _ = _explore(get_scenario("munmap-enomem-vs-fault"))
    assert kind == "validate_mm"
    assert message == f"attached vma#1[{A + PAGE:#x}-{A + 2 * PAGE:#x}] has vm_refcnt 0x0, expected 1"


def test_munmap_unlinking_the_rmap_before_zapping_hides_a_mapping_from_a_walk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # vms_complete_munmap_vmas() with free_pgtables()'s unlink before the zap:
    # a reclaim walk under the anon_vma lock meets the page still mapped by a
    # VMA that is no longer in the tree
    bad = _edited(vma_mod.vms_complete_munmap_vmas,
                  "    await zap_page_range(mm, vms.start, vms.end)\n    await unlink_vmas_rmap(vms.vmas)\n",
                  "    await unlink_vmas_rmap(vms.vmas)\n    await zap_page_range(mm, vms.start, vms.end)\n")
    _patch(monkeypatch, vma_mod.vms_complete_munmap_vmas, bad, vma_mod)
    kind, message, _ = _explore(get_scenario("rmap-walk-vs-munmap"))
    assert kind == "rmap: walk misses a mapping"
    assert message.startswith(f"rmap_walk_anon: mm#0 maps page 1 at {A:#x} but no VMA in "
                              "anon_vma #0's tree covers it")


def test_a_reader_leaving_without_reporting_its_quiescent_state_stalls_rcu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # rcu_read_unlock() no longer crosses the reader off the grace periods
    # that wait for it: the grace period of the VMA munmap freed under the
    # fault's lookup never ends
    bad = _edited(rcu_mod.RcuState.reader_left, "gp.waits_for.remove(tsk)", "pass")
    monkeypatch.setattr(rcu_mod.RcuState, "reader_left", bad)
    kind, message, _ = _explore(get_scenario("fault-vs-munmap"))
    assert kind == "INFO: rcu detected stall"
    assert message == ("a grace period still waits for fault/2, which left its read-side section "
                       "(rcu_read_unlock() did not report the quiescent state)")


def test_rcu_callbacks_that_never_run_leak_the_replaced_maple_nodes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _edited(rcu_mod.RcuState.run_callbacks, "gp.callback()", "pass")
    monkeypatch.setattr(rcu_mod.RcuState, "run_callbacks", bad)
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    with pytest.raises(Violation) as exc:
        p.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert exc.value.kind == "kmemleak: unreferenced object"
    assert str(exc.value).endswith("2 maple_node(s) allocated but in no live tree and in no "
                                   "pending RCU callback (3 allocated, 1 accounted for)")


def test_the_maple_nodes_of_an_exited_mm_are_all_freed() -> None:
    kern, p, a = _anon_process(2)
    nodes = kern.maple_node_cachep.active
    q = kern.spawn()
    q.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert kern.maple_node_cachep.active > nodes
    q.exit()
    assert q.mm.freed and kern.maple_node_cachep.active == nodes
    assert p.load(a) == 0x5A


# -- /proc/pid/maps ---------------------------------------------------------------
# the library's maps-vs-split race: the VMA object keeps the middle of the three
MAPS_VS_MIDDLE_SPLIT = get_scenario("maps-reader-vs-mprotect-split")


def test_lock_next_vma_without_the_gap_recheck_misses_a_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    # lock_next_vma() trusting a VMA above from_addr without checking that the gap stayed empty.
    bad = _edited(mmap_lock.lock_next_vma, "if from_addr < vma.vm_start:", "if False:")
    _patch(monkeypatch, mmap_lock.lock_next_vma, bad, mmap_lock, task_mmu)
    kind, message, _ = _explore(MAPS_VS_MIDDLE_SPLIT)
    assert kind == "/proc/pid/maps: a mapping missed"
    assert message.startswith(f"{A:#x}-{A + PAGE:#x} stayed mapped for the entire read but no line covers it")


def test_a_maps_reader_listing_a_vma_it_never_locked_shows_a_phantom(monkeypatch: pytest.MonkeyPatch) -> None:
    # proc_maps_read() printing the range it asked for instead of the VMA's.
    bad = _edited(task_mmu.proc_maps_read, "ranges.append((vma.vm_start, vma.vm_end))\n        addr",
                  "ranges.append((addr, vma.vm_end))\n        addr")
    monkeypatch.setattr(task_mmu, "proc_maps_read", bad)
    monkeypatch.setattr(system_mod, "proc_maps_read", bad)
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    p.mmap(A, PAGE, RW, ANON)
    t = p.main
    with pytest.raises(Violation) as exc:
        run_direct(t._guard(t.read_maps()), model=t.task)
    assert exc.value.kind == "/proc/pid/maps: a range never mapped during the read"
    assert exc.value.message.startswith(f"line 0x0-{A + PAGE:#x}; mapped at some moment of the read: "
                                        f"{A:#x}-{A + PAGE:#x} ")


@pytest.mark.parametrize("preset", PRESETS)
def test_the_maps_vs_split_race_is_clean(preset: str) -> None:
    assert _explore(MAPS_VS_MIDDLE_SPLIT, preset) == (None, "", True)


def test_a_quiet_maps_read_lists_every_vma_and_leaves_no_log() -> None:
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    p.mmap(A, PAGE, RW, ANON)
    t = p.main
    text = run_direct(t._guard(t.read_maps()), model=t.task)
    assert text == p.maps() and text.count("\n") == 2
    assert p.mm.mm_mt.maps_log is None


# -- the library stays clean under every preset -----------------------------------
@pytest.mark.parametrize("name", [s.name for s in all_scenarios()])
@pytest.mark.parametrize("preset", PRESETS)
def test_the_scenario_library_stays_clean_under_the_new_oracles(name: str, preset: str) -> None:
    assert preset in get_scenario(name).presets
    res = run_check(name, preset, minimise=False)
    assert res.violation is None and res.complete, res.violation


def test_a_range_changed_but_not_stored_is_a_vma_mas_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    # commit_merge() (here under vma_expand()) growing the VMA without storing the new
    # range in the tree when it removes no neighbour: lockless walkers go by the
    # tree's pivots, not the VMA.
    bad = _edited(vma_mod.commit_merge,
                  'await vma_iter_update(mm, remove=removed, label="commit_merge: store")',
                  'removed and await vma_iter_update(mm, remove=removed, label="commit_merge: store")')
    _patch(monkeypatch, vma_mod.commit_merge, bad, vma_mod)
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    a = p.mmap(A, PAGE, PROT_READ | PROT_WRITE, ANON)
    with pytest.raises(Violation) as exc:
        p.mmap(a + PAGE, PAGE, PROT_READ | PROT_WRITE, ANON)  # merges: expands the first VMA
    assert exc.value.kind == "validate_mm"
    assert exc.value.message == (f"vma_mas mismatch: vma#1[{a:#x}-{a + 2 * PAGE:#x}] but the tree "
                                 f"holds it at [{a:#x}-{a + PAGE:#x}]")


def test_maps_lines_may_overlap_a_replaced_vma_but_never_end_below_the_position() -> None:
    # lock_next_vma() refuses only a VMA ending at or below the reader's position:
    # a replacement of the VMA just shown that starts below the position is
    # printed, overlapping the last line (the kernel's behaviour, which fuzzing
    # found the first version of this oracle rejected); a line ending at or below
    # the last one would be the reader going back.
    _kern, p, a = _anon_process(3)
    rest = [(v.vm_start, v.vm_end) for v in p.mm.mm_mt.snapshot() if v.vm_start > a]
    log = debug.maps_read_begin(p.mm)
    debug.maps_read_end(p.mm, log, [(a, a + 2 * PAGE), (a + PAGE, a + 3 * PAGE), *rest], complete=True)
    log = debug.maps_read_begin(p.mm)
    with pytest.raises(Violation) as exc:
        debug.maps_read_end(p.mm, log, [(a, a + 3 * PAGE), (a, a + PAGE), *rest], complete=True)
    assert exc.value.kind == "/proc/pid/maps: lines go backwards"
    assert exc.value.message == f"{a:#x}-{a + PAGE:#x} listed after a line ending at {a + 3 * PAGE:#x}"


def test_a_madvise_walk_before_its_mmap_lock_is_suspicious_rcu_usage(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # do_madvise() walking the VMAs of an mmap_read_lock advice (MADV_COLD)
    # before it takes the lock: find_vma()'s assertion (lockdep's view: the
    # walker, not any task, must hold mmap_lock or be in an RCU section)
    import pervma.kernel.madvise as madvise_mod

    bad = _edited(madvise_mod.do_madvise,
                  "        await mmap_read_lock(mm)\n        try:\n"
                  "            ret = await _walk(mm, start, end, advice)\n",
                  "        ret = await _walk(mm, start, end, advice)\n"
                  "        await mmap_read_lock(mm)\n        try:\n            pass\n")
    _patch(monkeypatch, madvise_mod.do_madvise, bad, madvise_mod)
    kind, message, _ = _explore(get_scenario("madvise-populate-vs-munmap"))
    assert kind == "WARNING: suspicious RCU usage"
    assert message == ("find_vma: populate/2 walks mm 0's VMA tree holding neither mmap_lock "
                       "nor rcu_read_lock")


def test_the_vma_tree_may_be_walked_under_mmap_lock_or_rcu_only() -> None:
    """The plain walks (find_vma(), the VMA iterator) of a model thread need
    mmap_lock held by that thread, for read or write, or an RCU read-side
    section; the harness reading the tree from outside any thread (setup,
    final checks) is not the kernel and is not checked."""
    kern, p, a = _anon_process(2)
    mm, t1, t2 = p.mm, p.main.task, p.thread().task
    tree = mm.mm_mt
    assert tree.find(a) is tree.find_covering(a)  # outside a thread: no check

    async def walk() -> None:
        tree.find(a)
        tree.prev_next(a, a + PAGE)
        tree.overlapping(a, a + 2 * PAGE)

    async def under(lock: Callable[[Any], Awaitable[None]], unlock: Callable[[Any], Awaitable[None]]
                    ) -> None:
        await lock(mm)
        await walk()
        await unlock(mm)

    async def under_rcu() -> None:
        rcu_read_lock()
        await walk()
        rcu_read_unlock()

    run_direct(under(mmap_lock.mmap_read_lock, mmap_lock.mmap_read_unlock), model=t1)
    run_direct(under(mmap_lock.mmap_write_lock, mmap_lock.mmap_write_unlock), model=t1)
    run_direct(under_rcu(), model=t1)

    async def held_by_another() -> None:
        await walk()

    run_direct(mmap_lock.mmap_read_lock(mm), model=t1)
    with pytest.raises(Violation) as exc:
        run_direct(held_by_another(), model=t2)
    assert exc.value.kind == "WARNING: suspicious RCU usage"
    assert exc.value.message == ("find_vma: proc-t1/2 walks mm 0's VMA tree holding neither "
                                 "mmap_lock nor rcu_read_lock")
    run_direct(mmap_lock.mmap_read_unlock(mm), model=t1)
    assert not mm.mmap_lock.is_locked()


def test_mmap_assert_locked_wants_the_caller_to_hold_mmap_lock() -> None:
    # lockdep's rwsem_assert_held(): a lock another task holds does not count
    kern, p, a = _anon_process(1)
    mm, t1, t2 = p.mm, p.main.task, p.thread().task

    async def check() -> None:
        mmap_lock.mmap_assert_locked(mm)

    run_direct(mmap_lock.mmap_read_lock(mm), model=t1)
    run_direct(check(), model=t1)
    with pytest.raises(Violation) as exc:
        run_direct(check(), model=t2)
    assert (exc.value.kind, exc.value.message) == (
        "WARNING: mmap_assert_locked", f"{mm} mmap_lock not held by proc-t1/2 (another task holds it)")
    run_direct(mmap_lock.mmap_read_unlock(mm), model=t1)
    with pytest.raises(Violation) as exc:
        run_direct(check(), model=t1)
    assert exc.value.message == f"{mm} mmap_lock not held"


def test_a_merging_mremap_without_the_rmap_locks_lets_a_walk_miss_the_page(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # move_vma() ignoring copy_vma()'s need_rmap_locks: the walk visits the
    # VMA the copy merged into before the PTE arrives there, then the source
    # after it left (the race "mm: fix rmap_walk race with mremap" closed)
    import pervma.kernel.mremap as mremap_mod

    bad = _edited(mremap_mod.move_vma,
                  "vrm.old_len, need_rmap_locks)", "vrm.old_len, False)")
    _patch(monkeypatch, mremap_mod.move_vma, bad, mremap_mod)
    kind, message, _ = _explore(get_scenario("rmap-walk-vs-mremap-merge"))
    assert kind == "rmap walk"
    assert message == (f"the walk found [] of a page mapped throughout at one of "
                       f"['{A + 5 * PAGE:#x}', '{A + PAGE:#x}']")
