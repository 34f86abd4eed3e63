"""File rmap and truncate (issue #13 item 3): i_mmap follows every VMA
change under i_mmap_rwsem, ``kern.truncate`` / ``t.truncate`` unmaps and
drops the page cache beyond the new end, an access there raises SIGBUS, bad
arguments are refused before anything changes, lockdep knows the order, and
the truncate scenarios catch one-line regressions made here (monkeypatch,
never a bug switch)."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from pervma import (
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE,
    PROT_READ,
    PROT_WRITE,
    Segfault,
    System,
)
from pervma.check.api import run_check
from pervma.config import Config
from pervma.kernel import filemap, memory
from pervma.kernel import truncate as truncate_mod
from pervma.kernel.fault import SIGBUS_FAULT
from pervma.kernel.mremap import MREMAP_FIXED, MREMAP_MAYMOVE
from pervma.kernel.task import current_task
from pervma.kernel.truncate import EXT4_MAX_SIZE
from pervma.sched import Violation

RW = PROT_READ | PROT_WRITE
PRESETS = ("legacy", "universal", "universal-up", "universal-up-nopreempt")
A = 0x10000000
CIRCULAR = "WARNING: possible circular locking dependency detected"


def _file(kern: System, pages: int = 4, resident: bool = False) -> Any:
    f = kern.create_file("/tmp/t", pages, resident=resident)
    for i in range(pages):
        f.contents[i] = {10: i + 1, 100: 0x40 + i}
    return f


def _sigbus(fn: Any, *args: Any) -> bool:
    try:
        fn(*args)
    except Segfault as sf:
        assert sf.code == SIGBUS_FAULT, sf
        return True
    return False


def _i_mmap(f: Any) -> list[tuple[int, int, int]]:
    return [(v.vm_start, v.vm_end, v.vm_pgoff) for v in f.i_mmap]


# -- truncate ---------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_truncate_gives_sigbus_beyond_eof_and_keeps_the_rest(preset: str) -> None:
    kern = System(Config.preset(preset))
    f = _file(kern)
    p = kern.spawn("p")
    a = p.mmap(A, 4 * PAGE, RW, MAP_SHARED | MAP_FIXED, f, 0)
    b = p.mmap(A + 8 * PAGE, 4 * PAGE, RW, MAP_PRIVATE | MAP_FIXED, f, 0)
    for i in range(4):
        assert p.load(a + i * PAGE + 10) == i + 1
    p.store(b + 3 * PAGE, 9)  # a private COW copy beyond the coming EOF
    p.store(a + PAGE + 4000, 0x55)  # a shared store beyond the coming partial end
    maps = p.maps()
    kern.truncate(f, PAGE + 200)
    assert f.i_size == PAGE + 200 and sorted(f.pages) == [0, 1]
    assert p.maps() == maps  # truncate leaves the VMAs alone
    # The partial last page stays mapped; everything from the next page on goes,
    # the private COW copy included.
    assert [vpn for vpn in sorted(p.mm.pgtable) if A // PAGE <= vpn < A // PAGE + 16] == [A // PAGE,
                                                                                       A // PAGE + 1]
    for addr in (a + 2 * PAGE, a + 3 * PAGE + 10, b + 3 * PAGE, b + 2 * PAGE):
        assert _sigbus(p.load, addr), hex(addr)
    assert _sigbus(p.store, a + 2 * PAGE, 1)
    assert p.load(a + 10) == 1 and p.load(b + PAGE + 100) == 0x41
    assert p.load(a + PAGE + 10) == 2 and p.load(a + PAGE + 4000) == 0  # zeroed tail
    # Growing again: the pages beyond the old end read as zeroes.
    kern.truncate(f, 4 * PAGE)
    assert p.load(a + 3 * PAGE + 10) == 0 and p.load(b + 3 * PAGE) == 0
    assert p.load(b + 10) == 1


@pytest.mark.parametrize("preset", PRESETS)
def test_truncate_from_a_model_thread_returns_zero(preset: str) -> None:
    kern = System(Config.preset(preset))
    f = _file(kern, resident=True)
    p = kern.spawn("p")
    a = p.mmap(0, 4 * PAGE, PROT_READ, MAP_SHARED, f, 0)
    assert p.load(a + 3 * PAGE + 10) == 4
    assert p._run(p.main.truncate(f, 0)) == 0
    assert _sigbus(p.load, a)
    assert f.pages == {} and f.contents == {}


def test_truncate_frees_the_removed_pages() -> None:
    kern = System(Config.preset("universal"))
    f = _file(kern)
    p = kern.spawn("p")
    a = p.mmap(0, 4 * PAGE, PROT_READ, MAP_SHARED, f, 0)
    for i in range(4):
        p.load(a + i * PAGE)
    pages = [f.pages[i] for i in range(4)]
    assert [pg.refcount for pg in pages] == [2] * 4  # the cache's and the PTE's
    kern.truncate(f, 2 * PAGE)
    assert [pg.freed for pg in pages] == [False, False, True, True]
    assert [pg.refcount for pg in pages[:2]] == [2, 2]
    assert not f.invalidate_lock.is_locked() and not f.i_mmap_rwsem.is_locked()


@pytest.mark.parametrize("length, err", [(-1, errno.EINVAL), (1 << 64, 0), ((1 << 64) - 1, errno.EINVAL),
                                         (EXT4_MAX_SIZE + 1, errno.EFBIG)])
def test_bad_lengths_are_refused_before_anything_changes(length: int, err: int) -> None:
    kern = System(Config.preset("universal"))
    f = _file(kern)
    p = kern.spawn("p")
    a = p.mmap(0, 4 * PAGE, PROT_READ, MAP_SHARED, f, 0)
    p.load(a + 3 * PAGE)
    if not err:  # off_t: 2**64 is 0 as the register holds it
        kern.truncate(f, length)
        assert f.i_size == 0
        return
    with pytest.raises(OSError) as exc:
        kern.truncate(f, length)
    assert exc.value.errno == err
    assert f.i_size == 4 * PAGE and sorted(f.pages) == [3] and p.load(a + 3 * PAGE + 10) == 4


def test_truncate_of_something_not_a_file_is_a_usage_error() -> None:
    from pervma.errors import UsageError

    kern = System(Config.preset("universal"))
    with pytest.raises(UsageError, match=r"^truncate\(file='/tmp/t'\): need a File \(System.create_file\(\)\)$"):
        kern.truncate("/tmp/t", 0)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"^truncate\(length=1.5\): need a whole number of bytes$"):
        kern.truncate(_file(kern), 1.5)  # type: ignore[arg-type]


def test_truncate_of_a_device_is_einval() -> None:
    kern = System(Config.preset("universal"))
    dev = kern.create_device("binder")
    with pytest.raises(OSError) as exc:
        kern.truncate(dev, 0)
    assert exc.value.errno == errno.EINVAL and dev.i_size == 1 << 32


def test_truncate_of_a_shared_anonymous_mapping() -> None:
    """shmem: the same path (shmem_setattr), SIGBUS beyond the end."""
    kern = System(Config.preset("universal"))
    p = kern.spawn("p")
    a = p.mmap(0, 2 * PAGE, RW, MAP_SHARED | 0x20)
    p.store(a + PAGE, 3)
    f = p.mm.mm_mt.overlapping(a, a + 1)[0].vm_file
    kern.truncate(f, PAGE)
    assert _sigbus(p.load, a + PAGE) and p.load(a) == 0


# -- i_mmap ------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_i_mmap_follows_split_merge_move_fork_and_exit(preset: str) -> None:
    kern = System(Config.preset(preset))
    f = _file(kern, pages=8)
    p = kern.spawn("p")
    p.mmap(A, 4 * PAGE, RW, MAP_SHARED | MAP_FIXED, f, 0)
    assert _i_mmap(f) == [(A, A + 4 * PAGE, 0)]
    p.mprotect(A + PAGE, PAGE, PROT_READ)  # split in three
    assert _i_mmap(f) == [(A, A + PAGE, 0), (A + PAGE, A + 2 * PAGE, 1), (A + 2 * PAGE, A + 4 * PAGE, 2)]
    p.mprotect(A + PAGE, PAGE, RW)  # merged back
    assert _i_mmap(f) == [(A, A + 4 * PAGE, 0)]
    p.munmap(A + PAGE, PAGE)
    assert _i_mmap(f) == [(A, A + PAGE, 0), (A + 2 * PAGE, A + 4 * PAGE, 2)]
    B = A + 32 * PAGE
    p.mremap(A + 2 * PAGE, 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, B)
    assert _i_mmap(f) == [(A, A + PAGE, 0), (B, B + 2 * PAGE, 2)]
    c = p.fork()  # each child VMA right after its parent's (vma_interval_tree_insert_after)
    assert _i_mmap(f) == [(A, A + PAGE, 0), (A, A + PAGE, 0), (B, B + 2 * PAGE, 2), (B, B + 2 * PAGE, 2)]
    assert [v.vm_mm for v in f.i_mmap] == [p.mm, c.mm, p.mm, c.mm]
    c.exit()
    assert _i_mmap(f) == [(A, A + PAGE, 0), (B, B + 2 * PAGE, 2)]
    assert all(v.vm_mm is p.mm for v in f.i_mmap)
    p.exit()
    assert f.i_mmap == [] and not f.i_mmap_rwsem.is_locked()


def test_interval_tree_orders_by_pgoff_and_equal_keys_by_insertion() -> None:
    kern = System(Config.preset("universal"))
    f = _file(kern, pages=8)
    p = kern.spawn("p")
    p.mmap(A + 16 * PAGE, PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, f, 4 * PAGE)
    p.mmap(A, PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, f, 2 * PAGE)
    p.mmap(A + 8 * PAGE, PAGE, PROT_READ, MAP_SHARED | MAP_FIXED, f, 2 * PAGE)
    assert _i_mmap(f) == [(A, A + PAGE, 2), (A + 8 * PAGE, A + 9 * PAGE, 2),
                          (A + 16 * PAGE, A + 17 * PAGE, 4)]


def test_a_vma_freed_while_still_in_i_mmap_is_a_use_after_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression: munmap's free_pgtables() forgets the file unlink
    (unlink_file_vma_batch_add() returns at once); truncate's walk then
    meets the freed VMA."""
    from pervma.kernel import vma as vma_mod

    async def unlink_nothing(vb: Any, vma: Any) -> None:
        return None

    monkeypatch.setattr(vma_mod, "unlink_file_vma_batch_add", unlink_nothing)
    kern = System(Config.preset("universal"))
    f = _file(kern)
    p = kern.spawn("p")
    a = p.mmap(0, 2 * PAGE, PROT_READ, MAP_SHARED, f, 0)
    p.munmap(a, 2 * PAGE)
    with pytest.raises(Violation) as exc:
        kern.truncate(f, 0)
    assert exc.value.kind == "KASAN: use-after-free"
    assert "vma_interval_tree_foreach" in exc.value.message


# -- lockdep -------------------------------------------------------------------------
def test_lockdep_knows_invalidate_lock_before_the_folio_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression: the fault takes invalidate_lock (shared) after it has
    locked the folio (filemap_fault's order turned round), against
    truncate's invalidate_lock -> folio lock."""
    real_folio_trylock = filemap.folio_trylock

    async def folio_trylock_then_invalidate_lock(folio: Any) -> bool:
        if not await real_folio_trylock(folio):
            return False
        await filemap.filemap_invalidate_lock_shared(folio.mapping)
        await filemap.filemap_invalidate_unlock_shared(folio.mapping)
        return True

    monkeypatch.setattr(memory, "folio_trylock", folio_trylock_then_invalidate_lock)
    kern = System(Config.preset("universal"))
    f = _file(kern, resident=True)
    p = kern.spawn("p")
    a = p.mmap(0, 2 * PAGE, PROT_READ, MAP_SHARED, f, 0)
    assert p.load(a + PAGE + 10) == 2
    with pytest.raises(Violation) as exc:
        kern.truncate(f, PAGE)
    v = exc.value
    assert v.kind == CIRCULAR
    assert v.message.startswith("truncate/2 is trying to acquire lock:\n (PG_locked){write}, at: "
                                "folio_lock() from truncate_inode_pages_range()"), v.message
    assert ("but task is already holding lock:\n (&mapping->invalidate_lock){write}, at: "
            "filemap_invalidate_lock() from do_sys_ftruncate()") in v.message
    assert "lock(PG_locked);" in v.message and "lock(&mapping->invalidate_lock);" in v.message


@pytest.mark.parametrize("preset", PRESETS)
def test_the_correct_order_gives_no_lockdep_report(preset: str) -> None:
    kern = System(Config.preset(preset))
    f = _file(kern)
    p = kern.spawn("p")
    a = p.mmap(0, 4 * PAGE, RW, MAP_SHARED, f, 0)
    b = p.mmap(0, 4 * PAGE, RW, MAP_PRIVATE, f, 0)
    for i in range(4):
        p.store(a + i * PAGE, i)
        p.store(b + i * PAGE, i)
    p.mprotect(a + PAGE, PAGE, PROT_READ)
    kern.truncate(f, PAGE + 1)
    p.munmap(a, 4 * PAGE)
    kern.truncate(f, 0)  # each call above raises Violation on a lockdep report
    assert f.i_size == 0 and f.pages == {} and _sigbus(p.load, b)


# -- the scenarios catch regressions -----------------------------------------------
def test_truncate_scenarios_are_clean_on_every_preset() -> None:
    for name in ("truncate-vs-fault", "truncate-vs-cow-fault", "truncate-vs-munmap", "truncate-vs-mremap",
                 "major-fault-vs-truncate", "major-fault-vs-munmap"):
        for preset in PRESETS:
            res = run_check(name, preset)
            assert res.violation is None and res.complete, (name, preset, res.violation)


def test_a_fault_that_does_not_recheck_i_size_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression: filemap_fault() keeps the i_size of its first check
    instead of reading it again under the folio lock."""
    real = memory.i_size_read
    first: dict[int, int] = {}

    async def i_size_read_once(inode: Any) -> int:
        size = await real(inode)
        return first.setdefault(current_task().pid, size)

    monkeypatch.setattr(memory, "i_size_read", i_size_read_once)
    res = run_check("truncate-vs-fault", "universal")
    assert res.violation is not None and res.violation[0] == "mapping beyond EOF", res.violation
    assert "still maps page 1 of /tmp/trunc" in res.violation[1]


def test_truncate_without_its_second_unmap_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression: truncate_pagecache() drops its second
    unmap_mapping_range(), which removes the private COW copy a fault made
    of a folio truncate was waiting to lock."""
    async def unmap_once(inode: Any, newsize: int) -> None:
        holebegin = (newsize + PAGE - 1) & ~(PAGE - 1)
        await truncate_mod.unmap_mapping_range(inode, holebegin, 0)
        await truncate_mod.truncate_inode_pages_range(inode, newsize)

    monkeypatch.setattr(truncate_mod, "truncate_pagecache", unmap_once)
    res = run_check("truncate-vs-cow-fault", "universal")
    assert res.violation is not None and res.violation[0] == "mapping beyond EOF", res.violation
    monkeypatch.undo()
    assert run_check("truncate-vs-cow-fault", "universal").violation is None


def test_unmap_mapping_range_missing_a_vma_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression: unmap_mapping_range_tree() skips the last VMA of the
    interval tree (an off-by-one in the walk)."""
    real = memory.vma_interval_tree_foreach
    monkeypatch.setattr(memory, "vma_interval_tree_foreach", lambda m, first, last: real(m, first, last)[:-1])
    res = run_check("truncate-vs-mremap", "universal")
    assert res.violation is not None and res.violation[0] == "mapping beyond EOF", res.violation


def test_mremap_merging_into_a_lower_pgoff_moves_ptes_under_i_mmap_rwsem(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """copy_vma() merged the moved page into the VMA that maps the page before
    it, which an rmap walk meets first: move_ptes() runs under i_mmap_rwsem
    (need_rmap_locks); a plain move to a new VMA does not."""
    held: list[bool] = []
    real_set_pte_at = memory.set_pte_at

    async def spy(mm: Any, vpn: int, pte: Any, label: str) -> None:
        if label.startswith("move_ptes"):
            held.append(f.i_mmap_rwsem.writer is current_task())
        await real_set_pte_at(mm, vpn, pte, label)

    monkeypatch.setattr(memory, "set_pte_at", spy)
    kern = System(Config.preset("universal"))
    f = _file(kern, pages=2, resident=True)
    p = kern.spawn("p")
    B = A + 32 * PAGE
    p.mmap(A, PAGE, RW, MAP_SHARED | MAP_FIXED, f, 0)
    p.mmap(B, PAGE, RW, MAP_SHARED | MAP_FIXED, f, PAGE)
    assert p.load(B + 10) == 2
    p.mremap(B, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, A + PAGE)
    assert held == [True, True] and _i_mmap(f) == [(A, A + 2 * PAGE, 0)]
    assert p.load(A + PAGE + 10) == 2
    held.clear()
    p.mremap(A, 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, B)
    assert held == [False, False] and _i_mmap(f) == [(B, B + 2 * PAGE, 0)]
