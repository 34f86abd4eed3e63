"""madvise(2) scenarios beside ``madvise-dontneed-vs-munmap`` (in ``kernel``):
the advice that changes VMA flags and the advice that populates.

``madvise-fork-flags-vs-fault`` splits a VMA three ways by flag-changing
advice (madvise_update_vma(): vma_modify_flags(), then the VMA write lock
and vm_flags_reset()), then changes the middle VMA's flags whole (no split,
so nothing but madvise_update_vma() write-locks it), while a fault on the
middle page runs under the VMA read lock; then it forks: the child must not
get the MADV_DONTFORK page, must get the MADV_WIPEONFORK page empty, and
the faulted page as the parent had it at fork time.
``madvise-populate-vs-munmap`` races MADV_POPULATE_WRITE (mmap_read_lock,
faultin_page_range()) and then MADV_COLD (an mmap_read_lock walk of the
VMAs) against munmap of the middle page: populate succeeds and every page
still mapped is present and writable, or it stops at the hole with -ENOMEM
after the first page.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable
from typing import Any

from pervma import PAGE
from pervma.check.scenarios.kernel import (
    ANON,
    RW,
    A,
    World,
    _byte_at,
    _expect_byte,
    _failed_with,
    _scenario,
)
from pervma.kernel.madvise import (
    MADV_COLD,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_POPULATE_WRITE,
    MADV_WIPEONFORK,
)
from pervma.kernel.mm_types import VmFlags
from pervma.kernel.system import Thread
from pervma.sched import violation


async def _errno(call: Awaitable[int]) -> int | OSError:
    """A system call's result, or the error it raised (the thread goes on)."""
    try:
        return await call
    except OSError as e:
        return e


@_scenario("madvise-fork-flags-vs-fault", "MADV_DONTFORK and MADV_WIPEONFORK split a VMA "
           "around a page a fault is storing to, MADV_DONTDUMP marks the middle VMA whole, then "
           "fork: the child lacks the first page, has the third empty and the middle one as it "
           "was at fork")
def _madvise_fork_flags(w: World) -> None:
    p = w.p
    p.mmap(A, 3 * PAGE, RW, ANON)
    p.store(A, 1)
    p.store(A + 2 * PAGE, 3)

    async def advise_fork(t: Thread) -> Any:
        r1 = await t.madvise(A, PAGE, MADV_DONTFORK)
        r2 = await t.madvise(A + 2 * PAGE, PAGE, MADV_WIPEONFORK)
        r3 = await t.madvise(A + PAGE, PAGE, MADV_DONTDUMP)
        child = await t.fork()
        return r1, r2, r3, child

    async def fault(t: Thread) -> None:
        await t.store(A + PAGE, 9)

    w.thread("advise-fork", p.thread(), advise_fork)
    w.thread("fault", p.thread(), fault)

    def check() -> None:
        got = w.results.get("advise-fork")
        if not isinstance(got, tuple):
            violation("madvise", f"madvise/fork thread ended with {got!r}")
            return
        *rets, child = got
        if rets != [0, 0, 0]:
            violation("madvise", f"madvise returned {rets}, expected 0 three times")
        mm = w.p.mm
        marks = (VmFlags.VM_DONTCOPY, VmFlags.VM_DONTDUMP, VmFlags.VM_WIPEONFORK)
        layout = [(v.vm_start, v.vm_end, *(bool(v.vm_flags & f) for f in marks))
                  for v in mm.mm_mt.overlapping(A, A + 3 * PAGE)]
        want = [(A, A + PAGE, True, False, False), (A + PAGE, A + 2 * PAGE, False, True, False),
                (A + 2 * PAGE, A + 3 * PAGE, False, False, True)]
        if layout != want:
            violation("madvise", f"parent's VMAs after the advice: {layout}, expected {want}")
        cmm = child.mm
        if cmm.mm_mt.find_covering(A) is not None:
            violation("madvise", "the child inherited the MADV_DONTFORK page")
        for addr in (A + PAGE, A + 2 * PAGE):
            if cmm.mm_mt.find_covering(addr) is None:
                violation("madvise", f"the child lacks the page at {addr:#x}")
        if _byte_at(cmm, A + 2 * PAGE) != 0:
            violation("madvise", "the child's MADV_WIPEONFORK page kept the parent's byte "
                      f"{_byte_at(cmm, A + 2 * PAGE)}")
        if _byte_at(cmm, A + PAGE) not in (0, 9):
            violation("madvise", f"the child's middle page holds {_byte_at(cmm, A + PAGE)}")
    w.checks += [check, _expect_byte(w, p, A, {1}, "the parent's DONTFORK page"),
                 _expect_byte(w, p, A + PAGE, {9}, "the faulted page"),
                 _expect_byte(w, p, A + 2 * PAGE, {3}, "the parent's WIPEONFORK page")]


@_scenario("madvise-populate-vs-munmap", "MADV_POPULATE_WRITE of three pages races munmap "
           "of the middle one: 0 with every mapped page populated writable, or -ENOMEM at the "
           "hole with the first page populated and the last not")
def _populate_vs_munmap(w: World) -> None:
    p = w.p
    p.mmap(A, 3 * PAGE, RW, ANON)

    async def populate(t: Thread) -> tuple[Any, Any]:
        r = await _errno(t.madvise(A, 3 * PAGE, MADV_POPULATE_WRITE))
        return r, await _errno(t.madvise(A, 3 * PAGE, MADV_COLD))

    async def unmap(t: Thread) -> int:
        return await t.munmap(A + PAGE, PAGE)

    w.thread("populate", p.thread(), populate)
    w.thread("munmap", p.thread(), unmap)

    def check() -> None:
        mm = w.p.mm
        got = w.results.get("populate")
        if not isinstance(got, tuple):
            violation("madvise", f"the madvise thread ended with {got!r}")
            return
        r, cold = got
        if r != 0 and not _failed_with(r, errno.ENOMEM):
            violation("madvise", f"MADV_POPULATE_WRITE returned {r!r}, expected 0 or ENOMEM")
            return
        if cold != 0 and not _failed_with(cold, errno.ENOMEM):
            violation("madvise", f"MADV_COLD returned {cold!r}, expected 0 or ENOMEM (the hole)")
        if mm.mm_mt.find_covering(A + PAGE) is not None or A // PAGE + 1 in mm.pgtable:
            violation("madvise", "the middle page is still mapped after munmap")
        want = {A: True, A + 2 * PAGE: r == 0}
        for addr, populated in want.items():
            pte = mm.pgtable.get(addr // PAGE)
            if (pte is not None) != populated or (pte is not None and not pte.writable):
                violation("madvise", f"after MADV_POPULATE_WRITE returned {r!r} the page at "
                          f"{addr:#x} is {'absent' if pte is None else 'present'}"
                          f"{'' if pte is None or pte.writable else ' read-only'}, expected "
                          f"{'present and writable' if populated else 'absent'}")
    w.checks.append(check)
