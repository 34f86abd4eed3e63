"""MMU notifiers, mm_take_all_locks() and the secondary-MMU mirror (issue #13, item 5).

The regressions are one-line edits of the 7.0 logic made inside the test
(recompiled and monkeypatched in), never through bugs.py.
"""

from __future__ import annotations

import errno
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

import pervma.kernel.mprotect as mprotect_mod
import pervma.kernel.vma as vma_mod
from pervma import (
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE,
    PROT_READ,
    PROT_WRITE,
    Config,
    Killed,
    System,
)
from pervma.check import stateful
from pervma.check.scenario import get_scenario
from pervma.check.search import Budget, Runner
from pervma.errors import UsageError
from pervma.kernel import debug
from pervma.kernel.memory import put_page
from pervma.kernel.mmap_lock import mmap_write_lock, mmap_write_unlock
from pervma.kernel.mmu_notifier import (
    MMU_NOTIFY_NAMES,
    MmuNotifier,
    MmuNotifierRange,
    mmu_notifier_register,
)
from pervma.kernel.mremap import MREMAP_MAYMOVE
from pervma.sched import Violation, run_direct

PRESETS = ("legacy", "universal", "universal-up", "universal-up-nopreempt")
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
SCENARIOS = ("mirror-fault-vs-munmap", "mirror-fault-vs-mprotect", "mirror-vs-cow-after-fork",
             "mmu-register-vs-fault", "mmu-register-vs-munmap", "mirror-fault-vs-truncate",
             "mirror-fault-vs-mremap", "mirror-fault-vs-mbind-migrate", "mmu-register-vs-truncate")


def _edited(fn: Callable[..., Any], old: str, new: str) -> Callable[..., Any]:
    """``fn`` recompiled with the one line ``old`` replaced by ``new``."""
    src = textwrap.dedent(inspect.getsource(fn))
    assert src.count(old) == 1, f"{fn.__qualname__} no longer has the line {old!r}"
    namespace = dict(fn.__globals__)
    exec(compile(src.replace(old, new), inspect.getsourcefile(fn) or "<model>", "exec"), namespace)
    edited: Callable[..., Any] = namespace[fn.__name__]
    return edited


def _explore(name: str, preset: str) -> tuple[str | None, str, bool]:
    st = stateful.explore(Runner(get_scenario(name), Config.preset(preset)), Budget())
    if st.found is None:
        return None, "", st.complete
    return st.found.kind, st.found.message, st.complete


class Recorder(MmuNotifier):
    """A subscriber that records each callback: (callback, event, start, end)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, int]] = []

    async def invalidate_range_start(self, rng: MmuNotifierRange) -> int:
        self.calls.append(("start", MMU_NOTIFY_NAMES[rng.event], rng.start, rng.end))
        return 0

    async def invalidate_range_end(self, rng: MmuNotifierRange) -> None:
        self.calls.append(("end", MMU_NOTIFY_NAMES[rng.event], rng.start, rng.end))

    async def release(self, mm: Any) -> None:
        self.calls.append(("release", "", 0, 0))


def _register(p: Any, sub: MmuNotifier) -> int:
    return int(p._run(mmu_notifier_register(sub, p.mm)))


# -- mm_take_all_locks / mm_drop_all_locks ------------------------------------------
@pytest.mark.parametrize("preset", ["universal", "legacy"])
def test_mm_take_all_locks_takes_every_vma_file_and_anon_vma_lock_once(preset: str) -> None:
    kern = System(Config.preset(preset))
    p = kern.spawn()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.store(a, 1)
    p.mprotect(a + PAGE, PAGE, PROT_READ)  # two VMAs sharing one anon_vma
    f = kern.create_file("/tmp/f", 4, resident=True)
    b = p.mmap(0, PAGE, PROT_READ, MAP_SHARED, f, 0)
    c = p.mmap(0, PAGE, PROT_READ, MAP_SHARED, f, PAGE)  # a second VMA of the same file
    assert c != b
    mm, me = p.mm, p.main.task
    vmas = mm.mm_mt.snapshot()
    av = mm.mm_mt.find_covering(a).anon_vma
    seen: dict[str, Any] = {}

    async def body() -> int:
        await mmap_write_lock(mm)
        ret = await vma_mod.mm_take_all_locks(mm)
        seen["ret"] = ret
        seen["mutex"] = kern.mm_all_locks_mutex.writer is me
        seen["i_mmap"] = (f.i_mmap_rwsem.writer is me, f.as_mm_all_locks)
        seen["anon_vma"] = (av.rwsem.writer is me, av.mm_all_locks_mark)
        seen["held"] = sorted(h.name for h in me.held if h.name in ("i_mmap_rwsem", "anon_vma"))
        seen["write_locked"] = [v.vm_lock_seq == mm.mm_lock_seq.sequence for v in vmas]
        await vma_mod.mm_drop_all_locks(mm)
        seen["after"] = (kern.mm_all_locks_mutex.writer, f.i_mmap_rwsem.writer, av.rwsem.writer,
                         f.as_mm_all_locks, av.mm_all_locks_mark)
        await mmap_write_unlock(mm)
        return ret

    assert run_direct(body(), model=me) == 0
    assert seen["mutex"] is True
    assert seen["i_mmap"] == (True, True) and seen["anon_vma"] == (True, True)
    assert seen["held"] == ["anon_vma", "i_mmap_rwsem"]  # each taken once
    if preset == "universal":
        assert seen["write_locked"] == [True] * len(vmas)
    assert seen["after"] == (None, None, None, False, False)
    debug.validate_mm(mm)


def test_mm_take_all_locks_returns_eintr_on_a_fatal_signal_and_drops_what_it_took() -> None:
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    a = p.mmap(0, PAGE, RW, ANON)
    p.store(a, 1)
    av = p.mm.mm_mt.find_covering(a).anon_vma
    me = p.main.task

    async def body() -> tuple[int, Any, Any, int]:
        await mmap_write_lock(p.mm)
        me.fatal_signal = True
        ret = await vma_mod.mm_take_all_locks(p.mm)
        state = (ret, kern.mm_all_locks_mutex.writer, av.rwsem.writer, len(me.held))
        await mmap_write_unlock(p.mm)
        return state

    assert run_direct(body(), model=me) == (-errno.EINTR, None, None, 1)  # only mmap_lock


@pytest.mark.parametrize("preset", ["universal", "legacy"])
def test_mm_take_all_locks_without_the_mmap_write_lock_is_a_bug(preset: str) -> None:
    kern = System(Config.preset(preset))
    p = kern.spawn()
    with pytest.raises(Violation) as exc:
        run_direct(vma_mod.mm_take_all_locks(p.mm), model=p.main.task)
    assert (exc.value.kind, exc.value.message) == ("WARNING: mmap_assert_write_locked",
                                                   "mm#0 mmap_lock not write-held")
    assert kern.mm_all_locks_mutex.writer is None


def test_register_interrupted_by_a_fatal_signal_publishes_nothing() -> None:
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    p.mmap(0, PAGE, RW, ANON)
    p.main.task.fatal_signal = True
    with pytest.raises(Killed):
        p.mmu_notifier_register()
    assert p.mm.notifier_subscriptions is None
    assert kern.mm_all_locks_mutex.writer is None and not p.mm.mmap_lock.is_locked()
    sub = Recorder()
    assert run_direct(mmu_notifier_register(sub, p.mm), model=p.main.task) == -errno.EINTR
    assert sub.mm is None and p.mm.notifier_subscriptions is None


# -- the events the core mm sends ------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_each_pte_change_is_bracketed_with_the_kernels_event(preset: str) -> None:
    kern = System(Config.preset(preset))
    p = kern.spawn()
    a = p.mmap(0, 4 * PAGE, RW, ANON)
    p.store(a, 1)
    sub = Recorder()
    assert _register(p, sub) == 0
    assert sub.mm is p.mm and p.mm.mm_count.counter == 2  # the subscription pins the mm

    def events(call: Callable[[], Any]) -> list[tuple[str, str, int, int]]:
        sub.calls.clear()
        call()
        return sub.calls

    assert events(lambda: p.madvise(a + PAGE, PAGE, MADV_DONTNEED)) == [
        ("start", "MMU_NOTIFY_CLEAR", a + PAGE, a + 2 * PAGE), ("end", "MMU_NOTIFY_CLEAR", a + PAGE, a + 2 * PAGE)]
    assert events(lambda: p.fork()) == [
        ("start", "MMU_NOTIFY_PROTECTION_PAGE", a, a + 4 * PAGE),
        ("end", "MMU_NOTIFY_PROTECTION_PAGE", a, a + 4 * PAGE)]
    assert events(lambda: p.store(a, 2)) == [  # wp_page_copy after fork
        ("start", "MMU_NOTIFY_CLEAR", a, a + PAGE), ("end", "MMU_NOTIFY_CLEAR", a, a + PAGE)]
    assert events(lambda: p.mprotect(a, PAGE, PROT_READ)) == [
        ("start", "MMU_NOTIFY_PROTECTION_VMA", a, a + PAGE), ("end", "MMU_NOTIFY_PROTECTION_VMA", a, a + PAGE)]
    assert events(lambda: p.munmap(a + 3 * PAGE, PAGE)) == [
        ("start", "MMU_NOTIFY_UNMAP", a + 3 * PAGE, a + 4 * PAGE), ("end", "MMU_NOTIFY_UNMAP", a + 3 * PAGE, a + 4 * PAGE)]
    assert events(lambda: p.exit())[0] == ("release", "", 0, 0)
    assert sub.calls[1:] == []  # unhashed at release: the exit's zaps reach nobody
    assert p.mm.notifier_subscriptions.list == []


def test_mremap_moving_ptes_is_an_unmap_of_the_old_range() -> None:
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    a = p.mmap(0, PAGE, RW, ANON)
    p.store(a, 1)
    p.mmap(a + PAGE, PAGE, PROT_READ, ANON | 0x10)  # MAP_FIXED neighbour: the move is forced
    sub = Recorder()
    _register(p, sub)
    new = p.mremap(a, PAGE, 2 * PAGE, MREMAP_MAYMOVE)
    assert new != a
    # move_page_tables(), then the unmap of the old range (its PTEs already gone)
    assert sub.calls == [("start", "MMU_NOTIFY_UNMAP", a, a + PAGE), ("end", "MMU_NOTIFY_UNMAP", a, a + PAGE)] * 2


def test_without_a_subscription_the_hooks_take_no_step() -> None:
    """mm_has_notifiers() is a plain load: a COW fault and a munmap take no
    notifier step when nothing is registered."""
    from pervma.sched import Executor

    kern = System(Config.preset("universal"))
    p = kern.spawn()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.store(a, 1)
    c = p.fork()

    async def body(t: Any) -> None:
        await t.store(a, 2)  # wp_page_copy
        await t.munmap(a, 2 * PAGE)  # zap

    ex = Executor([p.main.start(body)], models=[p.main.task])
    while ex.runnable():
        ex.step(ex.runnable()[0])
    labels = [op.label for _, op in ex.trace]
    assert "wp_page_copy" in labels and "zap_pte_range" in labels
    assert not [lb for lb in labels if "mn_hlist" in lb or "mirror" in lb]
    c.exit()


# -- the mirror: user API and the stale-PTE oracle --------------------------------------
def test_mirror_reads_and_writes_through_its_table_and_drops_entries_on_invalidate() -> None:
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.store(a, 42)
    m = p.mmu_notifier_register()
    assert m.load(a) == 42
    pfn = p.mm.pgtable[a // PAGE].page.pfn
    assert m.entries() == {a: (pfn, True)}
    m.store(a + PAGE, 7)  # faults the page in for the device
    assert p.load(a + PAGE) == 7 and len(m.entries()) == 2
    p.mprotect(a, PAGE, PROT_READ)
    assert list(m.entries()) == [a + PAGE]
    with pytest.raises(OSError) as exc:
        m.store(a, 1)  # GUP for write on a read-only VMA
    assert exc.value.errno == errno.EFAULT
    p.munmap(a, 2 * PAGE)
    assert m.entries() == {}
    with pytest.raises(OSError) as exc:
        m.load(a)
    assert exc.value.errno == errno.EFAULT
    with pytest.raises(OSError) as exc:
        m.fault(-PAGE)
    assert exc.value.errno == errno.EFAULT


def test_mirror_is_used_from_threads_of_its_own_mm_only() -> None:
    kern = System(Config.preset("universal"))
    p, q = kern.spawn(), kern.spawn()
    m = p.mmu_notifier_register()
    assert m.on(p.thread()).mirror is m.mirror
    with pytest.raises(UsageError, match="mirror#0 mirrors mm#0, not mm#1"):
        m.on(q.main)


def test_a_stale_mirror_entry_is_reported_by_validate_mm() -> None:
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    a = p.mmap(0, PAGE, RW, ANON)
    p.store(a, 1)
    m = p.mmu_notifier_register()
    m.load(a)
    old = p.mm.pgtable[a // PAGE].page
    del p.mm.pgtable[a // PAGE]  # a PTE cleared behind the notifier's back
    old.mapcount -= 1
    put_page(p.mm, old, "test: zap without notifier")
    with pytest.raises(Violation) as exc:
        debug.validate_mm(p.mm)
    assert exc.value.kind == "BUG: mmu_notifier"
    assert exc.value.message == (
        f"stale secondary PTE after invalidate_range_end: mirror#0 maps {a:#x} to pfn {old.pfn} "
        "writable, but no primary PTE in mm#0 (a PTE changed without "
        "mmu_notifier_invalidate_range_start)")


# -- the scenarios and the regressions they catch -------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", SCENARIOS)
def test_scenarios_are_complete_and_clean(name: str, preset: str) -> None:
    assert _explore(name, preset) == (None, "", True)


def test_mm_take_all_locks_skipping_vma_start_write_lets_a_cow_fault_slip_past_registration(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The VMA write locks are what make registration wait for a fault that
    # holds only the VMA lock: without them the fault's wp_page_copy saw no
    # notifier at range_start and finds one at range_end.
    bad = _edited(vma_mod.mm_take_all_locks, "        await vma_start_write(vma)", "        pass")
    monkeypatch.setattr(vma_mod, "mm_take_all_locks", bad)
    kind, msg, _ = _explore("mmu-register-vs-fault", "universal")
    assert kind == "WARNING: mmu_notifier"
    assert msg == ("mirror#0: invalidate_range_end for MMU_NOTIFY_CLEAR [0x10000000-0x10001000) "
                   "without invalidate_range_start")
    # Without per-VMA locks the fault holds mmap_lock: nothing to slip past.
    assert _explore("mmu-register-vs-fault", "legacy") == (None, "", True)


def test_mprotect_notifying_an_empty_range_leaves_a_writable_mirror_entry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _edited(mprotect_mod.mprotect_fixup,
                  "rng = mmu_notifier_range_init(MMU_NOTIFY_PROTECTION_VMA, 0, mm, start, end)",
                  "rng = mmu_notifier_range_init(MMU_NOTIFY_PROTECTION_VMA, 0, mm, start, start)")
    monkeypatch.setattr(mprotect_mod, "mprotect_fixup", bad)
    kind, msg, _ = _explore("mirror-fault-vs-mprotect", "universal")
    assert kind == "BUG: mmu_notifier"
    assert msg == ("stale secondary PTE after invalidate_range_end: mirror#0 maps 0x10000000 to pfn 1 "
                   "writable, but the primary PTE is read-only in mm#0 (a PTE changed without "
                   "mmu_notifier_invalidate_range_start)")


def test_mprotect_not_calling_invalidate_range_start_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _edited(mprotect_mod.mprotect_fixup, "    await mmu_notifier_invalidate_range_start(rng)", "    pass")
    monkeypatch.setattr(mprotect_mod, "mprotect_fixup", bad)
    kind, msg, _ = _explore("mirror-fault-vs-mprotect", "universal")
    assert kind == "WARNING: mmu_notifier"
    assert msg == ("mirror#0: invalidate_range_end for MMU_NOTIFY_PROTECTION_VMA [0x10000000-0x10001000) "
                   "without invalidate_range_start")


@pytest.mark.parametrize("preset", ["universal", "legacy"])
def test_wp_page_copy_notifying_an_empty_range_keeps_the_old_page_in_the_mirror(
        monkeypatch: pytest.MonkeyPatch, preset: str) -> None:
    import pervma.kernel.memory as memory

    bad = _edited(memory.do_wp_page,
                  "    rng = mmu_notifier_range_init(MMU_NOTIFY_CLEAR, 0, mm, vmf.vpn << PAGE_SHIFT, "
                  "(vmf.vpn + 1) << PAGE_SHIFT)",
                  "    rng = mmu_notifier_range_init(MMU_NOTIFY_CLEAR, 0, mm, vmf.vpn << PAGE_SHIFT, "
                  "vmf.vpn << PAGE_SHIFT)")
    monkeypatch.setattr(memory, "do_wp_page", bad)
    kind, msg, _ = _explore("mirror-vs-cow-after-fork", preset)
    assert kind == "BUG: mmu_notifier"
    assert msg == ("stale secondary PTE after invalidate_range_end: mirror#0 maps 0x10000000 to pfn 1 "
                   "read-only, but the primary PTE maps pfn 2 in mm#0 (a PTE changed without "
                   "mmu_notifier_invalidate_range_start)")


def test_truncate_zapping_without_invalidate_range_start_leaves_a_stale_mirror_entry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # zap_page_range_single() (truncate's unmap_mapping_range) skipping the
    # start: the mirror keeps the page the file no longer has
    import pervma.kernel.memory as memory

    bad = _edited(memory.zap_page_range_single, "    await mmu_notifier_invalidate_range_start(rng)\n",
                  "\n")
    monkeypatch.setattr(memory, "zap_page_range_single", bad)
    kind, msg, _ = _explore("mirror-fault-vs-truncate", "universal")
    assert kind == "WARNING: mmu_notifier"
    assert msg == ("mirror#0: invalidate_range_end for MMU_NOTIFY_CLEAR [0x10001000-0x10002000) "
                   "without invalidate_range_start")


@pytest.mark.parametrize("preset", PRESETS)
def test_mremap_moving_ptes_without_invalidate_range_end_leaves_the_mirror_blocked(
        monkeypatch: pytest.MonkeyPatch, preset: str) -> None:
    import pervma.kernel.memory as memory
    import pervma.kernel.mremap as mremap_mod

    bad = _edited(memory.move_page_tables, "    await mmu_notifier_invalidate_range_end(rng)\n", "\n")
    monkeypatch.setattr(mremap_mod, "move_page_tables", bad)
    kind, msg, _ = _explore("mirror-fault-vs-mremap", preset)
    assert kind == "BUG: mmu_notifier"
    assert msg == "mirror#0: 1 invalidate_range_start without invalidate_range_end"


@pytest.mark.parametrize("preset", ["universal", "legacy"])
def test_migration_without_invalidate_range_start_leaves_the_old_page_in_the_mirror(
        monkeypatch: pytest.MonkeyPatch, preset: str) -> None:
    # migrate_pages() as the model had it before the twenty-second session:
    # the PTE moves to the new page and the mirror is never told
    import pervma.kernel.mempolicy as mempolicy

    bad = _edited(mempolicy.migrate_pages, "        await mmu_notifier_invalidate_range_start(rng)\n",
                  "\n")
    monkeypatch.setattr(mempolicy, "migrate_pages", bad)
    kind, msg, _ = _explore("mirror-fault-vs-mbind-migrate", preset)
    assert kind == "WARNING: mmu_notifier"
    assert msg == ("mirror#0: invalidate_range_end for MMU_NOTIFY_CLEAR [0x10000000-0x10001000) "
                   "without invalidate_range_start")


def test_wp_page_copy_ending_its_range_under_the_pte_lock_sleeps_in_atomic_context(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # mmu_notifier_invalidate_range_end() may sleep once the start made the
    # range blockable (include/linux/mmu_notifier.h, 7.0): not under the PTL
    import pervma.kernel.memory as memory

    bad = _edited(memory.do_wp_page,
                  '"wp_page_copy")\n    await ptl.unlock()\n    await mmu_notifier_invalidate_range_end(rng)\n',
                  '"wp_page_copy")\n    await mmu_notifier_invalidate_range_end(rng)\n    await ptl.unlock()\n')
    monkeypatch.setattr(memory, "do_wp_page", bad)
    kind, msg, _ = _explore("mirror-vs-cow-after-fork", "universal")
    assert kind == "BUG: sleeping function called from invalid context"
    assert msg.startswith("at include/linux/mmu_notifier.h, in mmu_notifier_invalidate_range_end()\n"
                          "in_atomic(): 1,")


@pytest.mark.parametrize("preset", ["universal", "legacy"])
def test_registration_not_locking_file_mappings_lets_truncate_end_an_unstarted_range(
        monkeypatch: pytest.MonkeyPatch, preset: str) -> None:
    # mm_take_all_locks() without i_mmap_rwsem of the mm's files: a truncate
    # that began its zap before the mirror existed ends it after
    bad = _edited(vma_mod.mm_take_all_locks, "await vm_lock_mapping(mm, f)", "pass")
    monkeypatch.setattr(vma_mod, "mm_take_all_locks", bad)  # imported at each registration
    kind, msg, _ = _explore("mmu-register-vs-truncate", preset)
    assert kind == "WARNING: mmu_notifier"
    assert msg == ("mirror#0: invalidate_range_end for MMU_NOTIFY_CLEAR [0x10001000-0x10002000) "
                   "without invalidate_range_start")


def test_clear_refs_soft_dirty_invalidates_the_mirror_before_write_protecting() -> None:
    """clear_refs 4 write-protects every PTE (soft-dirty tracking) inside an
    MMU_NOTIFY_SOFT_DIRTY invalidation of the whole space, as 7.0
    clear_refs_write() does: a device that mapped a page writable loses that
    entry, and the next device write faults (the fuzzer's finding on the
    correct model: universal-up-nopreempt, seed 2026 program 5434, a writable
    mirror entry over a read-only PTE)."""
    kern = System(Config.preset("universal-up-nopreempt"))
    p = kern.spawn()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.store(a, 5)
    m = p.mmu_notifier_register()
    assert m.load(a) == 5
    pfn = p.mm.pgtable[a // PAGE].page.pfn
    assert m.entries() == {a: (pfn, True)}
    assert p.clear_refs(4) == 1
    assert not p.mm.pgtable[a // PAGE].writable
    assert m.entries() == {}
    debug.validate_mm(p.mm)  # no stale secondary PTE
    m.store(a, 6)  # GUP for write: do_wp_page reuses the page, the mirror maps it again
    assert p.load(a) == 6 and m.entries() == {a: (pfn, True)}
