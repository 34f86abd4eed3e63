"""Every shared access of the model declares the memory ordering Linux 7.0
gives it (``Op.order``, ``pervma.sched.order``), and the orderings of the
sites the per-VMA lock protocol relies on are the kernel's.

The recorder wraps ``Op.__await__``: every step any driver takes (the
checker's, the direct runner's) passes through it, and the frame awaiting
the step says whether kernel model code (``pervma/kernel/``) took it.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from pervma import MAP_ANONYMOUS, MAP_PRIVATE, PAGE, PROT_READ, PROT_WRITE, Config, System
from pervma.check import dpor
from pervma.check.catalogue import CATALOGUE
from pervma.check.scenario import all_scenarios, get_scenario
from pervma.check.search import Budget, Runner, Stats
from pervma.kernel.mmap_lock import mmdrop, mmgrab
from pervma.sched import Op, OpKind, read, rmw, run_direct, write
from pervma.sched.order import LKMM_EVENTS, Order

Site = tuple[str, OpKind, Order]


class _Recorder:
    """(label, kind, order) of every step kernel code awaited, with counts."""

    def __init__(self) -> None:
        self.sites: dict[Site, int] = {}
        self.by_loc: dict[tuple[str, OpKind], set[Order]] = {}  # (location kind, op kind)

    def orders(self, label: str) -> set[Order]:
        return {o for (lab, _, o) in self.sites if lab == label}

    def unspecified(self) -> list[Site]:
        return sorted((s for s in self.sites
                       if s[2] is Order.UNSPECIFIED and s[1] is not OpKind.LOCAL),
                      key=lambda s: (s[0], int(s[1])))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Recorder]:
    rec = _Recorder()
    sites, by_loc = rec.sites, rec.by_loc

    def recording_await(self: Op) -> Generator[Op, Any, None]:
        code = sys._getframe(1).f_code.co_filename
        if code.replace("\\", "/").endswith("pervma/sched/memory.py"):  # load()/store()
            code = sys._getframe(2).f_code.co_filename
        if "pervma/kernel/" in code.replace("\\", "/"):
            key = (self.label, self.kind, self.order)
            sites[key] = sites.get(key, 0) + 1
            if isinstance(self.loc, tuple) and self.loc:
                by_loc.setdefault((self.loc[0], self.kind), set()).add(self.order)
        yield self

    monkeypatch.setattr(Op, "__await__", recording_await)
    yield rec


def _explore(name: str, cfg: Config, executions: int) -> None:
    dpor.explore(Runner(get_scenario(name), cfg), Budget(max_executions=executions), Stats("dpor"))


# ---------------------------------------------------------------------------
# the whole model
# ---------------------------------------------------------------------------
def test_every_shared_access_in_the_model_declares_its_ordering(recorder: _Recorder) -> None:
    """Every scenario of the library (20 executions each on universal, 5 on
    legacy for the mmap_lock-only paths) and every catalogued bug's scenario
    with its switch on (its historical code paths): no step of kernel code
    on a shared location is left UNSPECIFIED."""
    for sc in all_scenarios():
        _explore(sc.name, Config.preset("universal"), 20)
        _explore(sc.name, Config.preset("legacy"), 5)
    for bug in CATALOGUE.values():
        _explore(bug.scenario, Config.preset(bug.preset).with_bugs(bug.id), 10)
    assert recorder.unspecified() == []
    # the walk really went through the protocol (a recorder that saw nothing passes nothing)
    labels = {lab for (lab, _, _) in recorder.sites}
    for site in ("vma_start_read: late seq check", "mm_lock_seqcount_end",
                 "__vma_start_write: WRITE_ONCE(vm_lock_seq)", "vma_mark_attached",
                 "mas_walk: root", "handle_pte_fault: read pte", "user store",
                 "mmap_lock_speculate_try_begin", "down_write(mmap_lock)"):
        assert site in labels, site
    assert len(labels) > 150


def test_one_site_has_one_ordering(recorder: _Recorder) -> None:
    """A label names one kernel site, and one site has one ordering (cached
    steps such as Atomic._rmw's rely on it)."""
    for sc in all_scenarios():
        _explore(sc.name, Config.preset("universal"), 5)
    by_label: dict[str, set[Order]] = {}
    for (lab, _, order) in recorder.sites:
        by_label.setdefault(lab, set()).add(order)
    assert {lab: o for lab, o in by_label.items() if len(o) > 1} == {}


# ---------------------------------------------------------------------------
# the sites the per-VMA lock protocol pairs
# ---------------------------------------------------------------------------
def _fault_fork_unmap(preset: str = "universal") -> None:
    kern = System(Config.preset(preset))
    p = kern.spawn()
    a = p.mmap(0, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(a, 1)  # lock_vma_under_rcu -> vma_start_read ... vma_end_read
    child = p.fork()  # dup_mmap: vma_mark_attached on the child's VMAs
    child.exit()
    p.munmap(a, PAGE)  # split, vma_start_write, vma_mark_detached, mmap_write_unlock


def test_seqcount_write_end_at_unlock_is_wmb_then_store(recorder: _Recorder) -> None:
    """mmap_write_unlock() -> vma_end_write_all() -> mm_lock_seqcount_end():
    do_raw_write_seqcount_end() is smp_wmb() then the increment, the write
    side of the pairing with vma_start_read()'s acquire (7.0 has no per-VMA
    write unlock: this store drops every VMA write lock of the session).
    The begin is the increment then smp_wmb()."""
    _fault_fork_unmap()
    assert recorder.orders("mm_lock_seqcount_end") == {Order.WMB_ONCE}
    assert LKMM_EVENTS[Order.WMB_ONCE] == ("wmb", "once", "")
    assert recorder.orders("mm_lock_seqcount_begin") == {Order.ONCE_WMB}
    assert LKMM_EVENTS[Order.ONCE_WMB] == ("", "once", "wmb")


def test_vm_lock_seq_store_is_write_once(recorder: _Recorder) -> None:
    """__vma_start_write(): WRITE_ONCE(vma->vm_lock_seq, mm_lock_seq), read
    racily by the early check; its ordering comes from the refcount
    exclusion around it, not from the store."""
    _fault_fork_unmap()
    assert recorder.orders("__vma_start_write: WRITE_ONCE(vm_lock_seq)") == {Order.ONCE}


def test_vma_start_read_checks(recorder: _Recorder) -> None:
    """The early check is two READ_ONCE()s, the late check reads mm_lock_seq
    with raw_read_seqcount() (smp_load_acquire() in 7.0's seqlock.h): ACQUIRE;
    the vm_mm re-check is a plain read."""
    _fault_fork_unmap()
    assert recorder.orders("vma_start_read: early seq check") == {Order.ONCE}
    assert recorder.orders("vma_start_read: late seq check") == {Order.ACQUIRE}
    assert recorder.orders("vma_start_read: vma->vm_mm check") == {Order.PLAIN}


def test_vm_refcnt_orderings_follow_refcount_vs_atomic(recorder: _Recorder) -> None:
    """refcount-vs-atomic.rst on vm_refcnt: the reader's
    __refcount_inc_not_zero_limited_acquire() is ACQUIRE on success;
    __refcount_dec_and_test()/refcount_sub_and_test() are RELEASE plus
    ACQUIRE on reaching zero; refcount_add_not_zero() (the writer's FLAG) is
    relaxed with a control dependency; refcount_set_release() at attach is
    RELEASE.  None is a full barrier."""
    _fault_fork_unmap()
    assert recorder.orders("vma_start_read: refcount_inc_not_zero_limited") == {Order.ACQUIRE}
    assert recorder.orders("vma_refcount_put: dec") == {Order.RELEASE_ACQUIRE}
    assert recorder.orders("vma_mark_detached: dec") == {Order.RELEASE_ACQUIRE}
    assert recorder.orders("__vma_start_exclude_readers: add FLAG") == {Order.CTRL}
    assert recorder.orders("__vma_end_exclude_readers: sub FLAG") == {Order.RELEASE_ACQUIRE}
    assert recorder.orders("vma_mark_attached") == {Order.RELEASE}
    refcnt_orders = {o for (lab, _, o) in recorder.sites
                     if lab.startswith(("vma_start_read: refcount", "vma_refcount_put",
                                        "vma_mark_", "__vma_start_exclude", "__vma_end_exclude"))}
    assert Order.FULL not in refcnt_orders


def test_maple_tree_publishes_with_rcu_assign_pointer(recorder: _Recorder) -> None:
    """mas_store in RCU mode: the new node is published with
    rcu_assign_pointer() (a release store); a walk reads root and slots with
    rcu_dereference()."""
    _fault_fork_unmap()
    published = (recorder.by_loc[("maple", OpKind.WRITE)]
                 | recorder.by_loc.get(("maple_node", OpKind.WRITE), set()))
    walks = recorder.by_loc[("maple", OpKind.READ)] | recorder.by_loc[("maple_node", OpKind.READ)]
    assert published == {Order.RCU_ASSIGN}
    assert LKMM_EVENTS[Order.RCU_ASSIGN] == ("", "release", "")
    assert walks == {Order.RCU_DEREFERENCE}
    assert recorder.orders("mas_walk: root") == {Order.RCU_DEREFERENCE}


def test_mm_count_is_an_atomic_t(recorder: _Recorder) -> None:
    """mmgrab() is atomic_inc() (relaxed), mmdrop() atomic_dec_and_test()
    (fully ordered): mm_count is an atomic_t in 7.0, not a refcount_t."""
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    run_direct(mmgrab(p.mm))
    run_direct(mmdrop(p.mm))
    assert p.mm.mm_count.counter == 1
    assert recorder.orders("mmgrab") == {Order.RELAXED}
    assert recorder.orders("mmdrop") == {Order.FULL}


# ---------------------------------------------------------------------------
# the vocabulary
# ---------------------------------------------------------------------------
def test_constructors_carry_the_order_and_default_to_unspecified() -> None:
    assert read(("x",), "r").order is Order.UNSPECIFIED
    assert Op(OpKind.READ, ("x",), "r").order is Order.UNSPECIFIED
    assert write(("x",), "w", Order.RELEASE).order is Order.RELEASE
    assert rmw(("x",), "a", order=Order.FULL).order is Order.FULL


def test_every_declared_order_maps_to_lkmm_events() -> None:
    declared = {o for o in Order if o.declared}
    assert set(LKMM_EVENTS) == declared
    assert not Order.UNSPECIFIED.declared
    tags = {"", "plain", "once", "acquire", "release", "mb", "rmb", "wmb", "sync-rcu",
            "lock", "unlock"}
    for before, access, after in LKMM_EVENTS.values():
        assert {before, access, after} <= tags
