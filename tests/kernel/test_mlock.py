"""mlock(2)/munlock(2) (issue #13 item 6): VM_LOCKED set and cleared by
mlock_fixup with splits and merges, populate, RLIMIT_MEMLOCK, holes, the
PGWALK_WRLOCK_VERIFY walk and its assert, the mlock-vs-munmap scenario, and a
differential test against the running kernel (return values, maps, the
``lo`` VmFlag and ``Locked:`` of /proc/self/smaps, page contents)."""

from __future__ import annotations

import ctypes
import errno
import os
import pickle
import platform
from pathlib import Path
from typing import Any

import pytest
from forkrun import run_in_child
from test_oracles import _edited, _explore, _patch

import pervma.kernel.mlock as mlock_mod
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
from pervma.check.scenario import get_scenario
from pervma.check.scenarios.kernel import ANON, RW, A
from pervma.kernel.mm_types import VmFlags
from pervma.kernel.mmap import RLIMIT_MEMLOCK
from pervma.kernel.mremap import MREMAP_DONTUNMAP, MREMAP_MAYMOVE
from pervma.sched import Violation

PRESETS = ("legacy", "universal", "universal-up", "universal-up-nopreempt")
LOCKED = VmFlags.VM_LOCKED


def _proc(preset: str = "universal", pages: int = 8) -> tuple[System, Any]:
    kern = System(Config.preset(preset))
    p = kern.spawn()
    p.mmap(A, pages * PAGE, RW, ANON)
    return kern, p


def _layout(p: Any) -> list[tuple[int, int, bool]]:
    """(first page, end page, VM_LOCKED) of the VMAs around A."""
    return [((v.vm_start - A) // PAGE, (v.vm_end - A) // PAGE, bool(v.vm_flags & LOCKED))
            for v in p.mm.mm_mt.snapshot() if A <= v.vm_start < A + 64 * PAGE]


def _present(p: Any, first: int, end: int) -> list[bool]:
    return [(A // PAGE + i) in p.mm.pgtable for i in range(first, end)]


@pytest.mark.parametrize("preset", PRESETS)
def test_mlock_splits_locks_and_populates_and_munlock_merges_back(preset: str) -> None:
    kern, p = _proc(preset)
    p.store(A + 3 * PAGE, 0x33)
    assert p.mlock(A + 2 * PAGE, 3 * PAGE) == 0
    assert _layout(p) == [(0, 2, False), (2, 5, True), (5, 8, False)]
    assert _present(p, 0, 8) == [False, False, True, True, True, False, False, False]
    assert p.load(A + 3 * PAGE) == 0x33
    assert not any(v.vm_flags & VmFlags.VM_IO for v in p.mm.mm_mt.snapshot())  # VM_IO only during the walk
    assert p.mlock(A + 4 * PAGE, 2 * PAGE) == 0  # extends the locked VMA: merge
    assert _layout(p) == [(0, 2, False), (2, 6, True), (6, 8, False)]
    assert p.munlock(A, 8 * PAGE) == 0
    assert _layout(p) == [(0, 8, False)]
    assert _present(p, 2, 6) == [True] * 4  # munlock leaves the pages mapped


def test_mremap_dontunmap_leaves_the_old_range_unlocked_and_the_new_one_locked() -> None:
    # dontunmap_complete() (7.0): the pages moved, so the VMA left behind
    # cannot stay mlocked; the new VMA inherits VM_LOCKED with the pages
    kern, p = _proc(pages=2)
    p.store(A, 0x11)
    assert p.mlock(A, 2 * PAGE) == 0
    new = p.mremap(A, 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP)
    assert new != A
    old_vma, new_vma = p.mm.mm_mt.find_covering(A), p.mm.mm_mt.find_covering(new)
    assert (old_vma.vm_start, old_vma.vm_end) == (A, A + 2 * PAGE)
    assert not old_vma.vm_flags & LOCKED and new_vma.vm_flags & LOCKED
    assert _present(p, 0, 2) == [False, False] and p.load(new) == 0x11


def test_mlock_rounds_an_unaligned_start_and_length_to_pages() -> None:
    kern, p = _proc()
    assert p.mlock(A + PAGE + 100, 10) == 0
    assert _layout(p) == [(0, 1, False), (1, 2, True), (2, 8, False)]


def test_mlock_over_a_hole_locks_up_to_it_and_is_enomem() -> None:
    kern, p = _proc()
    p.munmap(A + 4 * PAGE, PAGE)
    with pytest.raises(OSError) as exc:
        p.mlock(A + 2 * PAGE, 4 * PAGE)
    assert exc.value.errno == errno.ENOMEM
    # apply_vma_lock_flags() changed the VMA before the hole, then found the hole
    assert _layout(p) == [(0, 2, False), (2, 4, True), (5, 8, False)]
    with pytest.raises(OSError) as exc:
        p.munlock(A + 4 * PAGE, PAGE)
    assert exc.value.errno == errno.ENOMEM


def test_mlock_of_prot_none_sets_vm_locked_but_populate_fails_enomem() -> None:
    kern, p = _proc()
    p.mprotect(A, PAGE, PROT_NONE)
    with pytest.raises(OSError) as exc:
        p.mlock(A, PAGE)
    assert exc.value.errno == errno.ENOMEM  # __mm_populate's -EFAULT, as POSIX wants it
    assert _layout(p)[0] == (0, 1, True) and _present(p, 0, 1) == [False]


def test_mlock_beyond_rlimit_memlock_is_enomem_before_anything_changes() -> None:
    limit = RLIMIT_MEMLOCK // PAGE
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    p.mmap(A, (limit + 2) * PAGE, RW, ANON)
    assert p.mlock(A, limit * PAGE) == 0
    before = p.maps(), _layout(p)
    with pytest.raises(OSError) as exc:
        p.mlock(A + limit * PAGE - PAGE, 2 * PAGE)  # one page already locked, one new: over
    assert exc.value.errno == errno.ENOMEM
    assert (p.maps(), _layout(p)) == before
    assert p.mlock(A, limit * PAGE) == 0  # already locked pages are not counted twice


@pytest.mark.parametrize(("call", "err"), [
    (("mlock", A + 8 * PAGE, PAGE), errno.ENOMEM),  # nothing mapped
    (("mlock", A, -PAGE), errno.ENOMEM),  # over the limit (the length wraps to huge)
    (("munlock", A - PAGE, 2 * PAGE), errno.ENOMEM),  # starts in a hole
])
def test_mlock_and_munlock_refuse_bad_ranges_before_changing_anything(call: tuple[Any, ...],
                                                                       err: int) -> None:
    kern, p = _proc()
    before = p.maps(), _layout(p)
    with pytest.raises(OSError) as exc:
        getattr(p, call[0])(*call[1:])
    assert exc.value.errno == err
    assert (p.maps(), _layout(p)) == before


def test_a_forked_child_does_not_inherit_vm_locked() -> None:
    kern, p = _proc()
    p.mlock(A, 8 * PAGE)
    c = p.fork()
    assert _layout(c) == [(0, 8, False)] and _layout(p) == [(0, 8, True)]


@pytest.mark.parametrize("preset", PRESETS)
def test_mlock_vs_munmap_is_complete_and_clean(preset: str) -> None:
    assert _explore(get_scenario("mlock-vs-munmap"), preset) == (None, "", True)


def test_mlock_setting_vm_locked_without_the_vma_write_lock_trips_the_walks_assert(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # mlock_vma_pages_range() without its vma_start_write(): the whole-VMA case, where
    # vma_modify_flags() neither splits nor merges, leaves the VMA unlocked.
    bad = _edited(mlock_mod.mlock_vma_pages_range, "    await vma_start_write(vma)\n", "\n")
    _patch(monkeypatch, mlock_mod.mlock_vma_pages_range, bad, mlock_mod)
    kern, p = _proc()
    with pytest.raises(Violation) as exc:
        p.mlock(A, 8 * PAGE)
    assert exc.value.kind == "WARNING: vma_assert_write_locked"
    assert exc.value.message.startswith("VM_WARN_ON_ONCE_VMA(!__is_vma_write_locked(vma)): vma#")


# -- differential: the running kernel --------------------------------------------------------
N = 16
_NR = {"x86_64": {"mlock": 149, "munlock": 150}, "aarch64": {"mlock": 228, "munlock": 229}}

#: (call, first page, pages or bytes) applied in order on both sides; page 10 is a hole
_CALLS: list[tuple[str, int, int]] = [
    ("mlock", 2, 2),
    ("mlock", 3, 3),  # merges
    ("munlock", 2, 1),
    ("mlock", 8, 4),  # hole at 10: ENOMEM after locking [8, 10)
    ("mprotect_none", 12, 1),
    ("mlock", 12, 1),  # PROT_NONE: ENOMEM, VM_LOCKED stays
    ("mlock_bytes", 14, 100),  # an unaligned start within page 14
    ("munlock", 0, N),  # ENOMEM at the hole, after unlocking [0, 10)
]


def _skip_reason() -> str | None:
    if platform.system() != "Linux" or platform.machine() not in _NR:
        return f"needs Linux on x86_64 or aarch64 (this is {platform.system()} {platform.machine()})"
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY and soft < 32 * PAGE and os.geteuid() != 0:
        return f"RLIMIT_MEMLOCK is {soft} bytes here: the kernel refuses these mlocks"
    return None


def _smaps_view(base: int, text: str) -> list[tuple[int, int, str, bool, int]]:
    """(first page, end page, perms, VmFlags has 'lo', Locked: kB) of the region's VMAs."""
    out: list[tuple[int, int, str, bool, int]] = []
    cur: list[Any] | None = None
    for line in text.splitlines():
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            s, e = (int(x, 16) for x in head[0].split("-"))
            cur = [(s - base) // PAGE, (e - base) // PAGE, head[1], False, 0] if base <= s < base + N * PAGE else None
            if cur is not None:
                out.append(cur)  # type: ignore[arg-type]
        elif cur is not None and head[0] == "Locked:":
            cur[4] = int(head[1])
        elif cur is not None and head[0] == "VmFlags:":
            cur[3] = "lo" in head[1:]
    return [tuple(x) for x in out]  # type: ignore[misc]


def _real(wfd: int) -> None:  # pragma: no cover - runs in the forked child
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.mmap.restype = ctypes.c_void_p
    nr = _NR[platform.machine()]

    def sc(name: str, addr: int, length: int) -> int:
        ctypes.set_errno(0)
        r = libc.syscall(ctypes.c_long(nr[name]), ctypes.c_ulong(addr), ctypes.c_ulong(length))
        return -ctypes.get_errno() if r == -1 else int(r)

    raw = libc.mmap(None, (N + 2) * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    for g in (raw, raw + (N + 1) * PAGE):
        libc.mmap(ctypes.c_void_p(g), PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
    base = raw + PAGE
    libc.mmap(ctypes.c_void_p(base), N * PAGE, RW, ANON, -1, 0)
    ctypes.memset(base + 3 * PAGE, 0x33, 1)
    libc.munmap(ctypes.c_void_p(base + 10 * PAGE), PAGE)
    results, view = [], []
    for name, first, n in _CALLS:
        if name == "mprotect_none":
            results.append(libc.mprotect(ctypes.c_void_p(base + first * PAGE), n * PAGE, PROT_NONE))
        elif name == "mlock_bytes":
            results.append(sc("mlock", base + first * PAGE + 100, n))
        else:
            results.append(sc(name, base + first * PAGE, n * PAGE))
        view.append(_smaps_view(base, Path("/proc/self/smaps").read_text()))
    data = [ctypes.string_at(base + i * PAGE, 1)[0] for i in (2, 3, 4)]
    os.write(wfd, pickle.dumps(("ok", (results, view, data))))


def _model() -> tuple[list[int], list[list[tuple[int, int, str, bool, int]]], list[int]]:
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    p.mmap(A - PAGE, PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    p.mmap(A + N * PAGE, PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    p.mmap(A, N * PAGE, RW, ANON)
    p.store(A + 3 * PAGE, 0x33)
    p.munmap(A + 10 * PAGE, PAGE)
    results, views = [], []
    for name, first, n in _CALLS:
        try:
            if name == "mprotect_none":
                results.append(p.mprotect(A + first * PAGE, n * PAGE, PROT_NONE))
            elif name == "mlock_bytes":
                results.append(p.mlock(A + first * PAGE + 100, n))
            else:
                results.append(getattr(p, name)(A + first * PAGE, n * PAGE))
        except OSError as e:
            results.append(-e.errno)
        views.append(_model_view(p))
    return results, views, [p.load(A + i * PAGE) for i in (2, 3, 4)]


def _model_view(p: Any) -> list[tuple[int, int, str, bool, int]]:
    """What _smaps_view() reads, from the model: Locked: is the locked VMA's resident pages."""
    view = []
    for v in p.mm.mm_mt.snapshot():
        if A <= v.vm_start < A + N * PAGE:
            perms = p.maps().split(f"{v.vm_start:x}-{v.vm_end:x} ")[1][:4]
            locked = bool(v.vm_flags & LOCKED)
            present = sum(1 for vpn in range(v.vm_start // PAGE, v.vm_end // PAGE) if vpn in p.mm.pgtable)
            view.append(((v.vm_start - A) // PAGE, (v.vm_end - A) // PAGE, perms, locked,
                         present * 4 if locked else 0))
    return view


@pytest.mark.skipif(_skip_reason() is not None, reason=f"differential mlock: {_skip_reason()}")
def test_mlock_and_munlock_match_the_running_kernel() -> None:
    (real,) = run_in_child(_real, 30.0)
    assert _model() == real
