"""anon_vma in steps (issue #13, item 4): preparation, cloning on split,
forking, unlinking with their locks and failure paths; anon_vmas freed with
their last reference; the rmap walker's folio_lock_anon_vma_read().

The regressions are single-line edits made here (tests/kernel/test_oracles.py's
``_edited``), never through ``kernel/bugs.py``.
"""

from __future__ import annotations

import errno

import pytest
from tests.kernel.test_oracles import PRESETS, _anon_process, _edited, _explore, _patch

import pervma.kernel.mremap as mremap_mod
import pervma.kernel.rmap as rmap
import pervma.kernel.system as system_mod
import pervma.kernel.vma as vma_mod
from pervma import PAGE, PROT_READ
from pervma.check.scenario import get_scenario
from pervma.sched import Violation


def _tree(av: rmap.AnonVma) -> list[tuple[int, int]]:
    return [(v.vm_mm.id, v.vm_start) for v in av.rb_root]


def test_fault_prepares_one_anon_vma_and_fork_gives_the_child_its_own_under_the_same_root() -> None:
    kern, p, a = _anon_process()
    vma = p.mm.mm_mt.find_covering(a)
    av = vma.anon_vma
    assert av is not None and av.root is av and av.parent is av
    assert (av.refcount.counter, av.num_children, av.num_active_vmas) == (1, 1, 1)
    assert vma.anon_vma_chain == [av] and _tree(av) == [(p.mm.id, a)]
    assert kern.anon_vma_cachep.active == 1

    c = p.fork()
    cvma = c.mm.mm_mt.find_covering(a)
    cav = cvma.anon_vma
    assert cav is not None and cav is not av
    assert cav.root is av and cav.parent is av
    assert cvma.anon_vma_chain == [av, cav]  # the parent's first, then its own
    assert _tree(av) == [(p.mm.id, a), (c.mm.id, a)] and _tree(cav) == [(c.mm.id, a)]
    # the child pins the root; the root gained a child
    assert (av.refcount.counter, av.num_children, av.num_active_vmas) == (2, 2, 1)
    assert (cav.refcount.counter, cav.num_children, cav.num_active_vmas) == (1, 0, 1)
    assert kern.anon_vma_cachep.active == 2

    c.exit()
    assert cav.freed and not av.freed
    assert (av.refcount.counter, av.num_children) == (1, 1) and _tree(av) == [(p.mm.id, a)]
    p.munmap(a, PAGE)
    assert av.freed and kern.anon_vma_cachep.active == 0


def test_split_links_both_halves_to_the_anon_vma() -> None:
    _kern, p, a = _anon_process(2)
    av = p.mm.mm_mt.find_covering(a).anon_vma
    assert p.mprotect(a + PAGE, PAGE, PROT_READ) == 0
    lo, hi = p.mm.mm_mt.find_covering(a), p.mm.mm_mt.find_covering(a + PAGE)
    assert lo is not hi and lo.anon_vma is hi.anon_vma is av
    assert sorted(_tree(av)) == [(p.mm.id, a), (p.mm.id, a + PAGE)] and av.num_active_vmas == 2
    assert lo.anon_vma_chain == hi.anon_vma_chain == [av]


def test_a_fork_reuses_an_anon_vma_left_with_no_vma_and_one_child() -> None:
    # p -> c -> g; c exits: c's anon_vma keeps g's VMA in its tree but has no VMA of
    # its own and one child, so g's next fork reuses it instead of adding a level.
    kern, p, a = _anon_process()
    c = p.fork()
    cav = c.mm.mm_mt.find_covering(a).anon_vma
    g = c.fork()
    gav = g.mm.mm_mt.find_covering(a).anon_vma
    assert gav.parent is cav and cav.num_children == 1
    c.exit()
    assert not cav.freed and cav.num_active_vmas == 0 and _tree(cav) == [(g.mm.id, a)]
    before = kern.anon_vma_cachep.active
    h = g.fork()
    hvma = h.mm.mm_mt.find_covering(a)
    assert hvma.anon_vma is cav and cav.num_active_vmas == 1
    assert kern.anon_vma_cachep.active == before
    assert h.load(a) == 0x5A


def test_failed_chain_allocations_undo_the_split_and_the_fork_and_leak_nothing() -> None:
    kern, p, a = _anon_process(2)
    av = p.mm.mm_mt.find_covering(a).anon_vma
    kern.fail_avc_alloc = 2  # anon_vma_clone's GFP_NOWAIT attempt, then GFP_KERNEL
    with pytest.raises(OSError) as err:
        p.mprotect(a + PAGE, PAGE, PROT_READ)
    assert err.value.errno == errno.ENOMEM
    vma = p.mm.mm_mt.find_covering(a)
    assert (vma.vm_start, vma.vm_end) == (a, a + 2 * PAGE) and p.mm.map_count == 2  # + stack
    assert _tree(av) == [(p.mm.id, a)] and av.num_active_vmas == 1
    kern.fail_avc_alloc = 2  # anon_vma_fork -> anon_vma_clone fails both attempts
    committed = kern.vm_committed_as
    with pytest.raises(OSError) as exc:
        p.fork()
    assert exc.value.errno == errno.ENOMEM
    assert kern.vm_committed_as == committed  # dup_mmap's fail_nomem uncharged the failed VMA
    assert _tree(av) == [(p.mm.id, a)]
    assert (av.refcount.counter, av.num_children, av.num_active_vmas) == (1, 1, 1)
    assert kern.anon_vma_cachep.active == 1
    assert p.load(a) == 0x5A


@pytest.mark.parametrize("preset", PRESETS)
def test_the_rmap_scenarios_are_complete_and_clean(preset: str) -> None:
    for name in ("rmap-walk-vs-munmap", "rmap-walk-vs-fork"):
        assert _explore(get_scenario(name), preset) == (None, "", True), (name, preset)


def test_clone_linking_without_the_root_lock_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # anon_vma_clone() without lock_anon_vma_root(): the tree changes under walkers.
    bad = _edited(rmap.anon_vma_clone, "root = await _lock_anon_vma_root(root, av)", "root = None")
    _patch(monkeypatch, rmap.anon_vma_clone, bad, rmap, vma_mod, mremap_mod)
    _kern, p, a = _anon_process(2)
    with pytest.raises(Violation) as exc:
        p.mprotect(a + PAGE, PAGE, PROT_READ)
    assert exc.value.kind == "WARNING: anon_vma tree changed without its lock"
    assert exc.value.message.startswith("anon_vma_chain_link: anon_vma #0's interval tree changed")


def test_an_anon_vma_cache_without_typesafe_by_rcu_is_a_use_after_free_in_the_walker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # kmem_cache_create("anon_vma", ...) without SLAB_TYPESAFE_BY_RCU: the walker's
    # lock of an anon_vma that munmap freed under it is a use-after-free.
    bad = _edited(system_mod.System.__init__, 'KmemCache("anon_vma", _anon_vma, typesafe_by_rcu=True)',
                  'KmemCache("anon_vma", _anon_vma, typesafe_by_rcu=False)')
    monkeypatch.setattr(system_mod.System, "__init__", bad)
    kind, message, _ = _explore(get_scenario("rmap-walk-vs-munmap"))
    assert kind == "KASAN: use-after-free"
    assert message.startswith("access to freed anon_vma #0 in folio_lock_anon_vma_read: down_read_trylock")
    assert message.endswith("allocated at anon_vma_alloc, freed at anon_vma_free")


def test_a_pin_that_is_not_inc_not_zero_revives_a_dying_anon_vma(monkeypatch: pytest.MonkeyPatch) -> None:
    # atomic_inc() where folio_lock_anon_vma_read() needs atomic_inc_not_zero(): the walker
    # pins an anon_vma whose last reference is gone, and frees it a second time.
    bad = _edited(rmap.folio_lock_anon_vma_read,
                  'if not await av.refcount.add_unless(1, 0, "folio_lock_anon_vma_read: atomic_inc_not_zero"):',
                  'if not await av.refcount.add_return(1, "folio_lock_anon_vma_read: atomic_inc"):')
    _patch(monkeypatch, rmap.folio_lock_anon_vma_read, bad, rmap)
    kind, message, _ = _explore(get_scenario("rmap-walk-vs-munmap"))
    assert kind == "KASAN: double-free"
    assert message == ("anon_vma object 0 freed at anon_vma_free, already freed at anon_vma_free "
                       "(allocated at anon_vma_alloc)")



@pytest.mark.parametrize("preset", PRESETS)
def test_a_fault_whose_anon_vma_cannot_be_allocated_is_an_oom_fault_with_no_lock_left(
        preset: str) -> None:
    # __vmf_anon_prepare(): __anon_vma_prepare() failing is VM_FAULT_OOM, and
    # the mmap_read_trylock() taken for it under the VMA lock is dropped (the
    # model returned -ENOMEM as a vm_fault_t, whose bits read as RETRY: the
    # fault left with the VMA lock and mmap_lock held)
    from pervma import Config, Segfault, System
    from pervma.kernel.fault import OOM_FAULT

    kern = System(Config.preset(preset))
    p = kern.spawn()
    a = p.mmap(0, PAGE, PROT_READ | 2, 0x22)  # PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS
    kern.fail_avc_alloc = 1
    with pytest.raises(Segfault) as exc:
        p.store(a, 1)
    assert exc.value.code == OOM_FAULT
    assert p.mm.mm_mt.find_covering(a).anon_vma is None and not p.mm.mmap_lock.is_locked()
    p.store(a, 1)  # the allocation works again
    assert p.load(a) == 1
