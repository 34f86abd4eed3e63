"""userfaultfd write-protect mode (kernel/userfaultfd.py, userfaultfd_mm.py):
UFFDIO_WRITEPROTECT setting and resolving the uffd-wp PTE bit, the write
fault on a uffd-wp PTE sleeping in handle_userfault() with
UFFD_PAGEFAULT_FLAG_WP, UFFDIO_WAKE, and what the writers (mprotect, fork,
mremap, UFFDIO_MOVE, unregister) do to the bit — checked against 7.0's
mm/userfaultfd.c, fs/userfaultfd.c, mm/memory.c (do_wp_page) and
mm/mprotect.c (can_change_pte_writable)."""

from __future__ import annotations

import errno

import pytest
from test_userfaultfd import PRESETS, RW, A, blocked_in, executor, run, setup

from pervma import (
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE,
    PROT_READ,
    UFFD_EVENT_PAGEFAULT,
    UFFD_PAGEFAULT_FLAG_WP,
    UFFD_PAGEFAULT_FLAG_WRITE,
    UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
    UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
    UFFDIO_WRITEPROTECT_MODE_WP,
    Process,
    Thread,
)
from pervma.kernel.system import Userfaultfd

WP = UFFDIO_REGISTER_MODE_WP
MISSING = UFFDIO_REGISTER_MODE_MISSING
SLEEP = "handle_userfault: schedule()"


def wp_bits(p: Process, pages: int = 4) -> list[tuple[bool, bool] | None]:
    """Per page from A: (uffd_wp, writable) of its PTE, None if empty."""
    out: list[tuple[bool, bool] | None] = []
    for i in range(pages):
        pte = p.mm.pgtable.get(A // PAGE + i)
        out.append(None if pte is None else (pte.uffd_wp, pte.writable))
    return out


def protected(preset: str, pages: int = 3) -> tuple[Process, Userfaultfd]:
    """Pages 0 and 1 of 4 written (exclusive anon pages), the range registered
    in WP mode and write-protected."""
    _, p, _ = setup(preset)
    for i in range(pages - 1):
        p.store(A + i * PAGE, i + 1)
    u = p.userfaultfd()
    u.api()
    u.register(A, 4 * PAGE, WP)
    assert u.writeprotect(A, 4 * PAGE, UFFDIO_WRITEPROTECT_MODE_WP) == 0
    return p, u


@pytest.mark.parametrize("preset", PRESETS)
def test_writeprotect_marks_present_ptes_and_reads_still_work(preset: str) -> None:
    p, _ = protected(preset)
    assert wp_bits(p) == [(True, False), (True, False), None, None]  # no markers for anon
    assert p.load(A) == 1 and p.load(A + PAGE) == 2
    p.store(A + 3 * PAGE, 7)  # an empty PTE: an ordinary fault, no userfault
    assert wp_bits(p)[3] == (False, True) and p.load(A + 3 * PAGE) == 7


@pytest.mark.parametrize("preset", PRESETS)
def test_write_to_a_wp_pte_sleeps_until_resolved(preset: str) -> None:
    p, u = protected(preset)
    kern = p.system
    f, m = p.thread(), p.thread()
    mgr = u.on(m)

    async def writer(t: Thread) -> int:
        await t.store(A + PAGE + 9, 0x42)
        return await t.load(A + PAGE + 9)

    async def manager(t: Thread) -> dict[str, int]:
        msg = await mgr.read()
        await mgr.writeprotect(msg["address"], PAGE, 0)
        return msg

    ex = executor((f, writer), (m, manager))
    run(ex, lambda: blocked_in(ex, 0, SLEEP))
    # asleep in do_wp_page's userfault: no mmap_lock, no VMA lock held
    assert p.mm.mmap_lock.writer is None and not p.mm.mmap_lock.readers
    assert all(v.vm_refcnt.counter in (0, 1) for v in p.mm.mm_mt.snapshot())
    assert f.task.held == [] and len(u.ctx.fault_pending_wqh) == 1
    run(ex)
    assert ex.tasks[1].result == {"event": UFFD_EVENT_PAGEFAULT, "address": A + PAGE, "ptid": 0,
                                  "flags": UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP}
    assert ex.tasks[0].result == 0x42
    # resolved: the exclusive page became writable again (MM_CP_TRY_CHANGE_WRITABLE), the
    # other page is still protected
    assert wp_bits(p) == [(True, False), (False, True), None, None]
    stats = kern.vmstat()
    if preset == "legacy":
        assert "vma_lock_retry" not in stats
    else:  # the per-VMA attempt returned RETRY from handle_userfault, the retry succeeded
        assert stats["vma_lock_retry"] == 1


def test_dontwake_resolution_needs_uffdio_wake() -> None:
    p, u = protected("universal")
    f, m = p.thread(), p.thread()
    mgr = u.on(m)
    phase: list[str] = []

    async def writer(t: Thread) -> None:
        await t.store(A, 5)

    async def manager(t: Thread) -> None:
        msg = await mgr.read()
        await mgr.writeprotect(msg["address"], PAGE, UFFDIO_WRITEPROTECT_MODE_DONTWAKE)
        phase.append("resolved")
        await t.user("decide")
        await mgr.wake(A, PAGE)

    ex = executor((f, writer), (m, manager))
    run(ex, lambda: bool(phase))
    assert blocked_in(ex, 0, SLEEP) and wp_bits(p)[0] == (False, True)
    run(ex)
    assert ex.finished() and p.load(A) == 5


@pytest.mark.parametrize(("start", "length", "mode", "err"), [
    (A + 1, PAGE, 0, errno.EINVAL),
    (A, PAGE + 1, 0, errno.EINVAL),
    (A, 0, 0, errno.EINVAL),
    (A, PAGE, UFFDIO_WRITEPROTECT_MODE_WP | UFFDIO_WRITEPROTECT_MODE_DONTWAKE, errno.EINVAL),
    (A, PAGE, 4, errno.EINVAL),
    (A + 8 * PAGE, PAGE, UFFDIO_WRITEPROTECT_MODE_WP, errno.ENOENT),  # no VMA
    (A + 4 * PAGE, PAGE, UFFDIO_WRITEPROTECT_MODE_WP, errno.ENOENT),  # registered MISSING only
])
def test_writeprotect_errors_change_nothing(start: int, length: int, mode: int, err: int) -> None:
    _, p, _ = setup("universal", pages=6)
    p.store(A, 1)
    p.store(A + 4 * PAGE, 1)
    u = p.userfaultfd()
    u.api()
    u.register(A, 4 * PAGE, WP)
    u.register(A + 4 * PAGE, 2 * PAGE, MISSING)
    with pytest.raises(OSError) as e:
        u.writeprotect(start, length, mode)
    assert e.value.errno == err
    assert not any(pte.uffd_wp for pte in p.mm.pgtable.values())


def test_writeprotect_stops_at_the_first_vma_not_in_wp_mode() -> None:
    """for_each_vma_range(): the WP VMA before it is already protected when
    the missing-mode one ends the walk with -ENOENT."""
    _, p, _ = setup("universal", pages=6)
    p.store(A, 1)
    p.store(A + 4 * PAGE, 1)
    u = p.userfaultfd()
    u.api()
    u.register(A, 4 * PAGE, WP)
    u.register(A + 4 * PAGE, 2 * PAGE, MISSING)
    with pytest.raises(OSError) as e:
        u.writeprotect(A, 6 * PAGE, UFFDIO_WRITEPROTECT_MODE_WP)
    assert e.value.errno == errno.ENOENT
    assert p.mm.pgtable[A // PAGE].uffd_wp and not p.mm.pgtable[A // PAGE + 4].uffd_wp


def test_mprotect_keeps_the_bit_and_a_shared_page_stays_read_only_when_resolved() -> None:
    p, u = protected("universal")
    p.mprotect(A, PAGE, PROT_READ)
    p.mprotect(A, PAGE, RW)
    assert wp_bits(p)[0] == (True, False)  # change_pte_range() keeps uffd-wp
    child = p.fork()
    # the child's VMA is not registered (no EVENT_FORK): its PTEs lose the bit
    assert not any(pte.uffd_wp for pte in child.mm.pgtable.values())
    u.writeprotect(A, 4 * PAGE, 0)
    # the pages are COW-shared with the child: not exclusive, so still read-only
    assert wp_bits(p) == [(False, False), (False, False), None, None]
    p.store(A, 9)  # an ordinary COW fault now, no userfault
    assert p.load(A) == 9 and child.load(A) == 1


def test_mremap_drops_the_bit_and_move_keeps_it() -> None:
    p, u = protected("universal")
    new = p.mremap(A + PAGE, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, A + 16 * PAGE)
    pte = p.mm.pgtable[new // PAGE]
    assert not pte.uffd_wp and not pte.writable  # move_ptes(): need_clear_uffd_wp
    p.store(new, 3)  # reuses the exclusive page, no userfault
    assert p.load(new) == 3
    u.register(A + 2 * PAGE, PAGE, MISSING | WP)
    assert u.move(A + 2 * PAGE, A, PAGE) == PAGE
    assert wp_bits(p)[2] == (True, False)  # pte_uffd_wp(orig_src_pte) carried over


def test_unregister_resolves_the_range() -> None:
    p, u = protected("universal")
    u.unregister(A, 4 * PAGE)
    assert wp_bits(p) == [(False, True), (False, True), None, None]
    p.store(A, 8)
    assert p.load(A) == 8
