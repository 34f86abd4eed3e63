"""mremap(2) scenarios beside the two moves in ``kernel`` (``fault-vs-mremap``,
``mremap-dontunmap-vs-fault``): resizing in place and moving onto a mapping.

``mremap-shrink-vs-fault`` shrinks a VMA in place (mremap_at(), shrink_vma()
with the lock dropped by the munmap: do_vmi_munmap() downgrades mmap_lock
and zaps under the read lock) while a store faults on the part that goes.
``mremap-expand-vs-fault`` grows a VMA in place (expand_vma(),
vma_merge_extend()) while a store faults just above its old end: SIGSEGV
before, the byte lands after.  ``mremap-move-middle-vs-fault`` moves the
middle page of a three-page VMA over another mapping (remap_move(),
mremap_to(): the target unmapped first, unmap_source_vma() keeping
VM_ACCOUNT on the pieces either side) while a load reads the target: the
old byte or the moved one, never SIGSEGV (a fault that finds the target
gone under RCU retries under mmap_lock).  ``mremap-fixed-shrink-vs-fault``
moves and shrinks at once (mremap_to() with shrink_vma() keeping the lock).
``rmap-walk-vs-mremap-merge`` moves a page back beside the VMA it came from:
copy_vma() merges the destination into that VMA, which an rmap walk of the
anon_vma visits before the source, so the PTEs move under the anon_vma lock
(need_rmap_locks) or the walk can miss the page.
"""

from __future__ import annotations

from pervma import PAGE, Segfault
from pervma.check.scenarios.kernel import ANON, RW, A, World, _expect_byte, _rmap_walker, _scenario
from pervma.kernel.mm_types import VmFlags
from pervma.kernel.mremap import MREMAP_FIXED, MREMAP_MAYMOVE
from pervma.kernel.system import Thread
from pervma.sched import violation


def _expect_vmas(w: World, lo: int, hi: int, want: list[tuple[int, int]], what: str) -> None:
    """After the run, the VMAs meeting [lo, hi) are exactly ``want`` (start,
    end pairs) and each is still charged (VM_ACCOUNT: a private writable
    mapping keeps its charge wherever mremap put it)."""
    def check() -> None:
        vmas = w.p.mm.mm_mt.overlapping(lo, hi)
        got = [(v.vm_start, v.vm_end) for v in vmas]
        if got != want:
            violation("mremap", f"{what}: VMAs {[(hex(s), hex(e)) for s, e in got]}, expected "
                      f"{[(hex(s), hex(e)) for s, e in want]}")
        for v in vmas:
            if not v.vm_flags & VmFlags.VM_ACCOUNT:
                violation("mremap", f"{what}: {v} lost VM_ACCOUNT")
    w.checks.append(check)


def _expect_result(w: World, name: str, want: int) -> None:
    def check() -> None:
        if w.results.get(name) != want:
            violation("mremap", f"mremap returned {w.results.get(name)!r}, expected {want:#x}")
    w.checks.append(check)


@_scenario("mremap-shrink-vs-fault", "mremap shrinks a three-page VMA to one page in place "
           "while a store faults on the second page: the store lands before and is unmapped, or "
           "gets SIGSEGV after")
def _shrink_vs_fault(w: World) -> None:
    p = w.p
    p.mmap(A, 3 * PAGE, RW, ANON)
    p.store(A, 1)
    p.store(A + 2 * PAGE, 3)

    async def shrink(t: Thread) -> int:
        return await t.mremap(A, 3 * PAGE, PAGE)

    async def store(t: Thread) -> int | None:
        return await t.store(A + PAGE, 5)

    w.thread("mremap", p.thread(), shrink)
    w.thread("store", p.thread(), store)
    _expect_result(w, "mremap", A)
    _expect_vmas(w, A, A + 4 * PAGE, [(A, A + PAGE)], "after the shrink")
    w.checks.append(_expect_byte(w, p, A, {1}, "the page the shrink keeps"))


@_scenario("mremap-expand-vs-fault", "mremap grows a one-page VMA to three pages in place "
           "while a store faults on the third: SIGSEGV before the growth, the byte after")
def _expand_vs_fault(w: World) -> None:
    p = w.p
    p.mmap(A, PAGE, RW, ANON)
    p.store(A, 1)

    async def expand(t: Thread) -> int:
        return await t.mremap(A, PAGE, 3 * PAGE)

    async def store(t: Thread) -> int | None:
        return await t.store(A + 2 * PAGE, 7)

    w.thread("mremap", p.thread(), expand)
    w.thread("store", p.thread(), store)
    _expect_result(w, "mremap", A)
    _expect_vmas(w, A, A + 4 * PAGE, [(A, A + 3 * PAGE)], "after the growth")
    w.checks.append(_expect_byte(w, p, A, {1}, "the page the VMA had"))

    def check() -> None:
        landed = not isinstance(w.results.get("store"), Segfault)
        _expect_byte(w, p, A + 2 * PAGE, {7} if landed else {0},
                     f"the third page after a store that {'landed' if landed else 'got SIGSEGV'}")()
    w.checks.append(check)


def _moved_onto_target(w: World, src: int, length: int, new_len: int, dst: int, want: int) -> None:
    """A thread moves [src, src + length) to dst (resized to new_len, over the
    mapping already there) while another loads dst: the target's byte 7
    before, ``want`` after, and never SIGSEGV."""
    p = w.p
    p.mmap(dst, PAGE, RW, ANON)
    p.store(dst, 7)

    async def move(t: Thread) -> int:
        return await t.mremap(src, length, new_len, MREMAP_MAYMOVE | MREMAP_FIXED, dst)

    async def load(t: Thread) -> int:
        return await t.load(dst)

    w.thread("mremap", p.thread(), move)
    w.thread("load", p.thread(), load)
    _expect_result(w, "mremap", dst)
    w.checks.append(_expect_byte(w, p, dst, {want}, "the moved page"))

    def check() -> None:
        got = w.results.get("load")
        if got not in (7, want):
            violation("user-visible memory", f"a load of the target returned {got!r}, expected "
                      f"the old mapping's 7 or the moved page's {want}")
    w.checks.append(check)


@_scenario("mremap-move-middle-vs-fault", "mremap moves the middle page of a three-page VMA onto "
           "another mapping while a load reads the target: the old or the moved byte, never "
           "SIGSEGV; both pieces left behind stay charged")
def _move_middle(w: World) -> None:
    p = w.p
    p.mmap(A, 3 * PAGE, RW, ANON)
    for i in range(3):
        p.store(A + i * PAGE, i + 1)
    _moved_onto_target(w, A + PAGE, PAGE, PAGE, A + 5 * PAGE, 2)
    _expect_vmas(w, A, A + 3 * PAGE, [(A, A + PAGE), (A + 2 * PAGE, A + 3 * PAGE)],
                 "the pieces left behind")
    w.checks += [_expect_byte(w, p, A, {1}, "the piece below"),
                 _expect_byte(w, p, A + 2 * PAGE, {3}, "the piece above")]


@_scenario("mremap-fixed-shrink-vs-fault", "mremap moves a two-page VMA onto another mapping "
           "shrinking it to one page while a load reads the target: the old or the moved byte, "
           "never SIGSEGV")
def _fixed_shrink(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A, 1)
    p.store(A + PAGE, 2)
    _moved_onto_target(w, A, 2 * PAGE, PAGE, A + 4 * PAGE, 1)
    _expect_vmas(w, A, A + 4 * PAGE, [], "the source range")
    _expect_vmas(w, A + 4 * PAGE, A + 5 * PAGE, [(A + 4 * PAGE, A + 5 * PAGE)], "the target")


@_scenario("rmap-walk-vs-mremap-merge", "an rmap walker walks the anon_vma of a page while "
           "mremap moves it back beside the VMA it came from: the copy merges into that VMA, "
           "which the walk visits first, so the PTE moves under the anon_vma lock and the walk "
           "finds the page at one address or the other")
def _rmap_vs_mremap_merge(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A, 1)
    p.store(A + PAGE, 2)
    away = A + 5 * PAGE
    p.mremap(A + PAGE, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, away)  # pgoff kept
    _rmap_walker(w, expect_parent=False, at=away, mapped_at=(away, A + PAGE))

    async def back(t: Thread) -> int:
        return await t.mremap(away, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, A + PAGE)

    w.thread("mremap", p.thread(), back)
    _expect_result(w, "mremap", A + PAGE)
    _expect_vmas(w, A, A + 8 * PAGE, [(A, A + 2 * PAGE)], "after the move back (merged)")
    w.checks.append(_expect_byte(w, p, A + PAGE, {2}, "the page moved back"))
