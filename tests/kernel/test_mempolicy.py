"""mempolicy and the page-table walker (issue #13 item 6): System(nodes=N),
struct mempolicy's lifetime, mbind(2) (split and merge by policy, page
queueing and migration, the kernel's errno for bad arguments before anything
changes), the fault choosing a node by the VMA's policy, walk_page_range's
lock modes, the mbind scenarios, realistic regressions, and a differential
test against the running kernel."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from pathlib import Path
from typing import Any

import pytest
from forkrun import run_in_child
from test_oracles import _edited, _explore, _patch

import pervma.kernel.mempolicy as mempolicy
from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE,
    PROT_NONE,
    Config,
    System,
)
from pervma.check import stateful
from pervma.check.scenario import Instance, Scenario, get_scenario
from pervma.check.scenarios.kernel import ANON, RW, A
from pervma.check.search import Budget, Runner
from pervma.errors import UsageError
from pervma.kernel.mempolicy import (
    MPOL_BIND,
    MPOL_DEFAULT,
    MPOL_F_RELATIVE_NODES,
    MPOL_F_STATIC_NODES,
    MPOL_INTERLEAVE,
    MPOL_LOCAL,
    MPOL_MF_MOVE,
    MPOL_MF_MOVE_ALL,
    MPOL_MF_STRICT,
    MPOL_PREFERRED,
    Mempolicy,
)
from pervma.kernel.mm_types import VmFlags
from pervma.kernel.mmap_lock import (
    lock_vma_under_rcu,
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
    vma_end_read,
)
from pervma.kernel.mremap import MREMAP_FIXED, MREMAP_MAYMOVE
from pervma.kernel.pagewalk import (
    PGWALK_RDLOCK,
    PGWALK_VMA_RDLOCK_VERIFY,
    PGWALK_WRLOCK,
    PGWALK_WRLOCK_VERIFY,
    MmWalk,
    MmWalkOps,
    walk_page_range,
    walk_page_vma,
)
from pervma.kernel.pagewalk import PageWalkLock as WalkLock
from pervma.sched import Violation

PRESETS = ("legacy", "universal", "universal-up", "universal-up-nopreempt")


def _proc(preset: str = "universal", nodes: int = 2, pages: int = 4) -> tuple[System, Any]:
    kern = System(Config.preset(preset), nodes=nodes)
    p = kern.spawn()
    p.mmap(A, pages * PAGE, RW, ANON)
    return kern, p


def _ranges(p: Any) -> list[tuple[int, int]]:
    return [((v.vm_start - A) // PAGE, (v.vm_end - A) // PAGE) for v in p.mm.mm_mt.snapshot()
            if A <= v.vm_start < A + 64 * PAGE]


def _pol(p: Any, page: int) -> tuple[int, int] | None:
    v = p.mm.mm_mt.find_covering(A + page * PAGE)
    pol = v.vm_policy
    return None if pol is None else (pol.mode, pol.nodes)


def _node(p: Any, page: int) -> int:
    return int(p.mm.pgtable[(A + page * PAGE) // PAGE].page.nid)


# -- System(nodes=N), the fault's node --------------------------------------------------
def test_system_nodes_defaults_to_one_and_refuses_nonsense() -> None:
    assert System().nodes == 1
    for bad in (0, -1, 2000, True, 1.5):
        with pytest.raises(UsageError, match=r"System\(nodes="):
            System(nodes=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("preset", PRESETS)
def test_faults_allocate_on_the_node_the_vma_policy_picks(preset: str) -> None:
    kern, p = _proc(preset, nodes=2, pages=8)
    assert p.mbind(A, 2 * PAGE, MPOL_BIND, 0b10) == 0
    assert p.mbind(A + 2 * PAGE, 2 * PAGE, MPOL_PREFERRED, 0b11) == 0  # its first node: 0
    assert p.mbind(A + 4 * PAGE, 4 * PAGE, MPOL_INTERLEAVE, 0b11) == 0
    for i in range(8):
        p.store(A + i * PAGE, i + 1)
    # interleave index = vm_pgoff + page offset; anonymous vm_pgoff = A >> PAGE_SHIFT (even)
    assert [_node(p, i) for i in range(8)] == [1, 1, 0, 0, 0, 1, 0, 1]
    assert [p.load(A + i * PAGE) for i in range(8)] == list(range(1, 9))


class _Counting:
    """A coroutine proxy that records the label of every step it yields."""

    def __init__(self, coro: Any) -> None:
        self.coro, self.labels = coro, []

    def send(self, value: Any) -> Any:
        op = self.coro.send(value)
        self.labels.append(op.label)
        return op

    def throw(self, *exc: Any) -> Any:
        return self.coro.throw(*exc)

    def close(self) -> None:
        self.coro.close()


def _fault_steps(policy: bool) -> list[str]:
    from pervma.kernel.fault import handle_user_fault
    from pervma.sched import run_direct

    kern, p = _proc(nodes=2, pages=2)
    p.store(A + PAGE, 1)  # the anon_vma exists
    if policy:
        p.mbind(A, 2 * PAGE, MPOL_BIND, 0b10)
    c = _Counting(p.main._guard(handle_user_fault(p.mm, A, True)))
    assert run_direct(c, model=p.main.task) == 0  # type: ignore[arg-type]
    assert _node(p, 0) == (1 if policy else 0)
    return c.labels


def test_a_vma_without_policy_costs_the_fault_no_step() -> None:
    without, with_policy = _fault_steps(False), _fault_steps(True)
    assert "get_vma_policy: pol->mode" not in without
    assert [x for x in with_policy if x != "get_vma_policy: pol->mode"] == without
    assert with_policy.count("get_vma_policy: pol->mode") == 1


# -- mbind: layouts, policies, lifetime -----------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_mbind_splits_by_policy_and_merges_equal_policies_back(preset: str) -> None:
    kern, p = _proc(preset)
    assert p.mbind(A + PAGE, PAGE, MPOL_BIND, 0b10) == 0
    assert _ranges(p) == [(0, 1), (1, 2), (2, 4)]
    assert [_pol(p, i) for i in (0, 1, 2)] == [None, (MPOL_BIND, 0b10), None]
    # an equal policy in another object merges (mpol_equal compares contents)
    assert p.mbind(A + 2 * PAGE, PAGE, MPOL_BIND, 0b10) == 0
    assert _ranges(p) == [(0, 1), (1, 3), (3, 4)]
    assert p.mbind(A, 4 * PAGE, MPOL_DEFAULT) == 0
    assert _ranges(p) == [(0, 4)] and _pol(p, 0) is None
    assert kern.policy_cachep.active == 0  # every replaced policy was put and freed


def test_each_vma_owns_its_policy_through_split_fork_mremap_and_munmap() -> None:
    kern, p = _proc(pages=4)
    p.mbind(A, 4 * PAGE, MPOL_BIND, 0b10)
    p.mprotect(A + PAGE, PAGE, PROT_NONE)  # splits in three: vma_dup_policy for each new half
    pols = [v.vm_policy for v in p.mm.mm_mt.snapshot() if v.vm_policy is not None]
    assert len(pols) == 3 and len({id(x) for x in pols}) == 3
    assert all(isinstance(x, Mempolicy) and x.refcnt == 1 and x.nodes == 0b10 for x in pols)
    c = p.fork()
    assert kern.policy_cachep.active == 6
    c.exit()
    assert kern.policy_cachep.active == 3
    p.mprotect(A + PAGE, PAGE, RW)  # merges back: two policies put
    assert _ranges(p) == [(0, 4)] and kern.policy_cachep.active == 1
    old = p.mm.mm_mt.find_covering(A).vm_policy
    # a move: copy_vma()'s vma_dup_policy() gives the new VMA its own copy,
    # the unmap of the source puts the old one
    p.mremap(A, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, A + 8 * PAGE)
    moved = p.mm.mm_mt.find_covering(A + 8 * PAGE).vm_policy
    assert isinstance(moved, Mempolicy) and moved is not old and not moved.freed
    assert (moved.mode, moved.nodes, moved.refcnt, kern.policy_cachep.active) == (MPOL_BIND, 0b10, 1, 1)
    p.store(A + 8 * PAGE, 1)
    assert _node(p, 8) == 1
    p.munmap(A + 8 * PAGE, 4 * PAGE)
    assert kern.policy_cachep.active == 0


@pytest.mark.parametrize("preset", PRESETS)
def test_mbind_move_migrates_misplaced_pages_keeping_their_bytes(preset: str) -> None:
    kern, p = _proc(preset, pages=4)
    for i in range(4):
        p.store(A + i * PAGE, 0x40 + i)
    assert p.mbind(A + PAGE, 2 * PAGE, MPOL_BIND, 0b10, MPOL_MF_MOVE | MPOL_MF_STRICT) == 0
    assert [_node(p, i) for i in range(4)] == [0, 1, 1, 0]
    assert [p.load(A + i * PAGE) for i in range(4)] == [0x40, 0x41, 0x42, 0x43]
    assert kern.page_cachep.active == 1 + 4  # the zero page and four pages: the old ones freed


def test_mbind_strict_without_move_is_eio_for_a_misplaced_page_but_applies_nothing() -> None:
    kern, p = _proc(pages=2)
    p.store(A, 1)
    with pytest.raises(OSError) as exc:
        p.mbind(A, 2 * PAGE, MPOL_BIND, 0b10, MPOL_MF_STRICT)
    assert exc.value.errno == errno.EIO
    assert _pol(p, 0) is None and _ranges(p) == [(0, 2)] and _node(p, 0) == 0


def test_mbind_leaves_a_page_mapped_twice_in_place_unless_move_all() -> None:
    kern, p = _proc(pages=1)
    p.store(A, 9)
    c = p.fork()
    assert p.mbind(A, PAGE, MPOL_BIND, 0b10, MPOL_MF_MOVE) == 0
    assert _node(p, 0) == 0 and c.load(A) == 9


# -- bad arguments: the kernel's errno, before anything changes --------------------------
@pytest.mark.parametrize(("args", "err"), [
    ((A + 1, PAGE, MPOL_BIND, 0b01, 0), errno.EINVAL),  # unaligned start
    ((A, PAGE, MPOL_BIND, 0b01, 0x80), errno.EINVAL),  # unknown flag
    ((A, PAGE, MPOL_BIND, 0b01, MPOL_MF_MOVE_ALL), errno.EPERM),  # no CAP_SYS_NICE
    ((A, PAGE, 7, 0b01, 0), errno.EINVAL),  # mode >= MPOL_MAX
    ((A, PAGE, MPOL_BIND | MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES, 0b01, 0), errno.EINVAL),
    ((A, PAGE, MPOL_DEFAULT, 0b01, 0), errno.EINVAL),  # DEFAULT takes no nodes
    ((A, PAGE, MPOL_LOCAL, 0b01, 0), errno.EINVAL),
    ((A, PAGE, MPOL_BIND, 0, 0), errno.EINVAL),  # empty mask
    ((A, PAGE, MPOL_BIND, 0b100, 0), errno.EINVAL),  # only an offline node
    ((A, PAGE, MPOL_BIND, 1 << 1100, 0), errno.EINVAL),  # beyond MAX_NUMNODES
    ((A, -PAGE, MPOL_BIND, 0b01, 0), errno.EINVAL),  # wraps
    ((A + 8 * PAGE, PAGE, MPOL_BIND, 0b01, 0), errno.EFAULT),  # nothing mapped
    ((A + 3 * PAGE, 2 * PAGE, MPOL_BIND, 0b01, 0), errno.EFAULT),  # a hole at the tail
])
@pytest.mark.parametrize("preset", ("legacy", "universal"))
def test_mbind_refuses_bad_arguments_before_changing_anything(args: tuple[int, ...], err: int,
                                                              preset: str) -> None:
    kern, p = _proc(preset, pages=4)
    p.store(A, 1)
    before = (p.maps(), kern.policy_cachep.active, p.mm.mm_lock_seq.sequence)
    with pytest.raises(OSError) as exc:
        p.mbind(*args)
    assert exc.value.errno == err
    assert (p.maps(), kern.policy_cachep.active) == before[:2]


def test_mbind_of_an_empty_range_or_default_over_holes_succeeds() -> None:
    kern, p = _proc(pages=4)
    assert p.mbind(A, 0, MPOL_BIND, 0b01) == 0
    p.munmap(A + PAGE, PAGE)
    assert p.mbind(A, 4 * PAGE, MPOL_DEFAULT) == 0  # DISCONTIG_OK for the default policy
    with pytest.raises(UsageError, match="nodemask"):
        p.mbind(A, PAGE, MPOL_BIND, -1)


# -- walk_page_range's lock modes ---------------------------------------------------------
async def _noop_pmd(walk: MmWalk, addr: int, end: int) -> int:
    return 0


def _walk(p: Any, lock: WalkLock, how: str) -> None:
    mm = p.mm
    ops = MmWalkOps(walk_lock=lock, pmd_entry=_noop_pmd)

    async def body() -> None:
        if how == "mmap-read":
            await mmap_read_lock(mm)
            await walk_page_range(mm, A, A + PAGE, ops)
            await mmap_read_unlock(mm)
        elif how == "mmap-write":
            await mmap_write_lock(mm)
            await walk_page_range(mm, A, A + PAGE, ops)
            await mmap_write_unlock(mm)
        else:
            # a walker holding only the VMA lock walks that VMA (walk_page_vma()):
            # walk_page_range() looks the VMAs up with find_vma()
            vma = await lock_vma_under_rcu(mm, A)
            assert vma is not None
            if how == "vma-read":
                await walk_page_vma(vma, ops)
            else:
                await walk_page_range(mm, A, A + PAGE, ops)
            await vma_end_read(vma)
    p._run(body(), validate=False)


@pytest.mark.parametrize(("lock", "how", "kind"), [
    (PGWALK_RDLOCK, "mmap-read", None),
    (PGWALK_WRLOCK, "mmap-write", None),
    (PGWALK_VMA_RDLOCK_VERIFY, "vma-read", None),
    (PGWALK_WRLOCK, "mmap-read", "WARNING: mmap_assert_write_locked"),
    (PGWALK_WRLOCK_VERIFY, "mmap-write", "WARNING: vma_assert_write_locked"),
    (PGWALK_RDLOCK, "vma-read", "WARNING: mmap_assert_locked"),
    (PGWALK_VMA_RDLOCK_VERIFY, "vma-read-range", "WARNING: suspicious RCU usage"),
])
def test_walk_page_range_asserts_the_lock_mode_as_the_kernel_does(lock: WalkLock, how: str,
                                                                 kind: str | None) -> None:
    kern, p = _proc(pages=1)
    p.store(A, 1)
    if kind is None:
        _walk(p, lock, how)
        return
    with pytest.raises(Violation) as exc:
        _walk(p, lock, how)
    assert exc.value.kind == kind


# -- the scenarios, and the regressions they catch -----------------------------------------
def _without_user_checks(sc: Scenario) -> Scenario:
    """``sc`` with its finish checks off (the kernel's own checks report during the steps)."""
    def build(cfg: Config) -> Instance:
        inst = sc.build(cfg)
        inst.finish = None
        return inst
    return Scenario(sc.name, sc.doc, build)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", ["mbind-vs-fault", "mbind-split-vs-fault"])
def test_the_mbind_scenarios_are_complete_and_clean(name: str, preset: str) -> None:
    assert _explore(get_scenario(name), preset) == (None, "", True)


def test_mbind_freeing_the_old_policy_without_the_vma_write_lock_is_a_use_after_free(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The 6.5 bug ("mm/mempolicy: Take VMA lock before replacing policy"): mbind's walk
    # did not write-lock the VMAs, and vma_replace_policy() had no assert.
    monkeypatch.setattr(mempolicy, "queue_pages_lock_vma_walk_ops", mempolicy.queue_pages_walk_ops)
    bad = _edited(mempolicy.vma_replace_policy, "vma_assert_write_locked(vma)", "pass")
    _patch(monkeypatch, mempolicy.vma_replace_policy, bad, mempolicy)
    # With the scenario's checks on, the search first meets a page the unlocked walk missed:
    kind, message, _ = _explore(get_scenario("mbind-vs-fault"), "universal")
    assert (kind, message) == ("mempolicy", f"the faulted page (allocated on, or moved to, node 1): "
                               f"the page at {A:#x} is on node 0, expected node 1")
    # and the kernel's own check, the freed policy under the fault, is among the
    # violations a search run to its end collects (which one a search meets
    # first depends on its order):
    got: list[Any] = []
    st = stateful.explore(Runner(_without_user_checks(get_scenario("mbind-vs-fault")),
                                 Config.preset("universal")), Budget(), collect=got)
    assert st.complete
    kasan = [r.violation.message for r in got if r.violation.kind == "KASAN: use-after-free"]
    assert kasan and all(m.startswith("access to freed mempolicy #") and m.endswith(
        "in get_vma_policy; allocated at __mpol_dup, freed at vma_replace_policy") for m in kasan)
    # without per-VMA locks the fault holds mmap_lock, which mbind takes for write
    assert _explore(get_scenario("mbind-vs-fault"), "legacy") == (None, "", True)


def test_mbind_walking_with_the_read_lock_mode_trips_vma_replace_policys_assert(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A walk with the wrong lock mode: PGWALK_RDLOCK where do_mbind asks for MPOL_MF_WRLOCK.
    bad = _edited(mempolicy.do_mbind, "qp = QueuePages(flags | MPOL_MF_INVERT | MPOL_MF_WRLOCK, nmask, start, end)",
                  "qp = QueuePages(flags | MPOL_MF_INVERT, nmask, start, end)")
    _patch(monkeypatch, mempolicy.do_mbind, bad, mempolicy)
    kern, p = _proc(pages=2)
    with pytest.raises(Violation) as exc:
        p.mbind(A, 2 * PAGE, MPOL_BIND, 0b10)
    assert exc.value.kind == "WARNING: vma_assert_write_locked"
    assert exc.value.message.startswith("VM_WARN_ON_ONCE_VMA(!__is_vma_write_locked(vma)): vma#")


# -- differential: the running kernel --------------------------------------------------------
_NR = {"x86_64": {"mbind": 237}, "aarch64": {"mbind": 235}}
_NAMES = {MPOL_DEFAULT: "default", MPOL_PREFERRED: "prefer", MPOL_BIND: "bind",
          MPOL_INTERLEAVE: "interleave", MPOL_LOCAL: "local"}
N = 16  # pages of the region, between two guard pages


def _host_nodes() -> int | None:
    try:
        text = Path("/sys/devices/system/node/online").read_text().strip()
    except OSError:
        return None
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def _skip_reason() -> str | None:
    if platform.system() != "Linux" or platform.machine() not in _NR:
        return f"needs Linux on x86_64 or aarch64 (this is {platform.system()} {platform.machine()})"
    if not Path("/proc/self/numa_maps").exists():
        return "the running kernel has no /proc/self/numa_maps (CONFIG_NUMA=n: mbind is ENOSYS)"
    if _host_nodes() != 1:
        return "the running machine has more than one NUMA node: where a page lands depends on its CPU"
    return None


#: (offset, length, mode, nodemask, flags) in pages, the same on both sides
_MBIND_CALLS = [
    (4, 2, MPOL_BIND, 0b1, 0),
    (5, 1, MPOL_PREFERRED, 0b1, 0),
    (4, 2, MPOL_BIND, 0b1, 0),  # merges back
    (0, 4, MPOL_INTERLEAVE, 0b1, MPOL_MF_MOVE | MPOL_MF_STRICT),
    (2, 1, MPOL_LOCAL, 0, 0),
    (1, 1, MPOL_BIND, 0b10, 0),  # node 1 is offline: EINVAL
    (1, 1, MPOL_DEFAULT, 0b1, 0),  # EINVAL
    (1, 1, 9, 0b1, 0),  # EINVAL
    (8, 5, MPOL_BIND, 0b1, 0),  # a hole at page 10: EFAULT
    (0, N, MPOL_DEFAULT, 0, 0),
    (12, 2, MPOL_BIND, 0b1, MPOL_MF_STRICT),
]


def _region_view(base: int, maps: str, numa: str) -> list[tuple[int, int, str, str]]:
    """(first page, end page, perms, policy) of each VMA of the region."""
    policy = {}
    for line in numa.splitlines():
        addr, pol = line.split()[:2]
        policy[int(addr, 16)] = pol
    out = []
    for line in maps.splitlines():
        rng, perms = line.split()[:2]
        s, e = (int(x, 16) for x in rng.split("-"))
        if base <= s < base + N * PAGE:
            out.append(((s - base) // PAGE, (e - base) // PAGE, perms, policy.get(s, "?")))
    return out


def _real(wfd: int) -> None:  # pragma: no cover - runs in the forked child
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.mmap.restype = ctypes.c_void_p
    nr = _NR[platform.machine()]["mbind"]

    def mbind(addr: int, length: int, mode: int, nodes: int, flags: int) -> int:
        mask = ctypes.c_ulong(nodes)
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(nr), ctypes.c_ulong(addr), ctypes.c_ulong(length),
                         ctypes.c_ulong(mode), ctypes.byref(mask), ctypes.c_ulong(nodes.bit_length() + 1),
                         ctypes.c_uint(flags))
        return -ctypes.get_errno() if r == -1 else int(r)

    raw = libc.mmap(None, (N + 2) * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    for g in (raw, raw + (N + 1) * PAGE):
        libc.mmap(ctypes.c_void_p(g), PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
    base = raw + PAGE
    libc.mmap(ctypes.c_void_p(base), N * PAGE, RW, ANON, -1, 0)
    for i in range(4):
        ctypes.memset(base + i * PAGE, 0x30 + i, 1)
    libc.munmap(ctypes.c_void_p(base + 10 * PAGE), PAGE)
    results, view = [], []
    for o, n, m, nodes, f in _MBIND_CALLS:
        results.append(mbind(base + o * PAGE, n * PAGE, m, nodes, f))
        view.append(_region_view(base, Path("/proc/self/maps").read_text(),
                                 Path("/proc/self/numa_maps").read_text()))
    data = [ctypes.string_at(base + i * PAGE, 1)[0] for i in range(4)]
    os.write(wfd, __import__("pickle").dumps(("ok", (results, view, data))))


def _model() -> tuple[list[int], list[list[tuple[int, int, str, str]]], list[int]]:
    kern = System(Config.preset("universal"), nodes=1)
    p = kern.spawn()
    p.mmap(A - PAGE, PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    p.mmap(A + N * PAGE, PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    p.mmap(A, N * PAGE, RW, ANON)
    for i in range(4):
        p.store(A + i * PAGE, 0x30 + i)
    p.munmap(A + 10 * PAGE, PAGE)
    results, views = [], []
    for o, n, m, nodes, f in _MBIND_CALLS:
        try:
            results.append(p.mbind(A + o * PAGE, n * PAGE, m, nodes, f))
        except OSError as e:
            results.append(-e.errno)
        view = []
        for v in p.mm.mm_mt.snapshot():
            if A <= v.vm_start < A + N * PAGE:
                pol = v.vm_policy
                name = "default" if pol is None else _NAMES[pol.mode] + ("" if pol.mode == MPOL_LOCAL else ":0")
                perms = p.maps().split(f"{v.vm_start:x}-{v.vm_end:x} ")[1][:4]
                view.append(((v.vm_start - A) // PAGE, (v.vm_end - A) // PAGE, perms, name))
        views.append(view)
    return results, views, [p.load(A + i * PAGE) for i in range(4)]


@pytest.mark.skipif(_skip_reason() is not None, reason=f"differential mbind: {_skip_reason()}")
def test_mbind_matches_the_running_kernel() -> None:
    (real,) = run_in_child(_real, 30.0)
    assert _model() == real


# -- /proc/pid/clear_refs: the third walk user ----------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_clear_refs_soft_dirty_write_protects_and_the_next_store_faults(preset: str) -> None:
    kern, p = _proc(preset, nodes=1, pages=2)
    p.store(A, 5)
    p.store(A + PAGE, 6)
    p.mm.mm_mt.find_covering(A).vm_flags |= VmFlags.VM_SOFTDIRTY  # as a soft-dirty kernel's mmap sets it
    assert p.clear_refs(4) == 1
    assert [pte.writable for _, pte in sorted(p.mm.pgtable.items())][-2:] == [False, False]
    assert not p.mm.mm_mt.find_covering(A).vm_flags & VmFlags.VM_SOFTDIRTY
    faults = kern.vmstat()["pgfault"]
    p.store(A, 7)
    assert kern.vmstat()["pgfault"] == faults + 1  # do_wp_page reuses the page
    assert (p.load(A), p.load(A + PAGE)) == (7, 6)
    assert p.clear_refs(" 1\n") == 3 and p.clear_refs(5) == 1


@pytest.mark.parametrize("value", [0, 6, -1, "x", "", "0x4", 1 << 40])
def test_clear_refs_refuses_anything_but_1_to_5(value: Any) -> None:
    kern, p = _proc(nodes=1, pages=1)
    p.store(A, 1)
    with pytest.raises(OSError) as exc:
        p.clear_refs(value)
    assert exc.value.errno == errno.EINVAL
    assert [pte.writable for pte in p.mm.pgtable.values()] == [True]


@pytest.mark.parametrize("preset", PRESETS)
def test_the_clear_refs_scenario_is_complete_and_clean(preset: str) -> None:
    assert _explore(get_scenario("clear-refs-vs-fault"), preset) == (None, "", True)
