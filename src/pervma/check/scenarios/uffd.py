"""userfaultfd, PROCMAP_QUERY and BPF stack map scenarios (issue #14): each
races one of the common-code users of per-VMA locks against a writer that
matters (munmap, mremap, mprotect split, fork, exit) or against the fault that
sleeps in handle_userfault().  Both forms run: with per-VMA locks the fills lock the
destination with uffd_lock_vma() and PROCMAP_QUERY walks with lock_next_vma();
on ``legacy`` both hold mmap_read_lock.

Beside validate_mm (no PTE outside a VMA, VMA locks released), each checks
what the user sees: the bytes a fill leaves, the fill's result, the answer a
query gives.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PAGE,
    PROT_EXEC,
    PROT_READ,
    UFFD_EVENT_REMAP,
    UFFD_EVENT_UNMAP,
    UFFD_FEATURE_EVENT_REMAP,
    UFFD_FEATURE_EVENT_UNMAP,
    UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
    UFFDIO_WRITEPROTECT_MODE_WP,
)
from pervma.check.scenarios.kernel import ANON, RW, A, World, _expect_byte, _scenario
from pervma.kernel.mremap import MREMAP_FIXED, MREMAP_MAYMOVE
from pervma.kernel.stackmap import BPF_STACK_BUILD_ID_IP, BPF_STACK_BUILD_ID_VALID
from pervma.kernel.system import AsyncUserfaultfd, Process, Thread
from pervma.sched import Op, OpKind, violation

MISSING = UFFDIO_REGISTER_MODE_MISSING
SRC_BYTE = 0x5A


def _registered(w: World, pages: int = 2, first: int = 0, npages: int = 1,
                prep_anon: bool = True) -> tuple[Process, Any, int]:
    """p maps ``pages`` RW pages at A and registers [first, first+npages) in
    missing mode; a source page holds SRC_BYTE.  ``prep_anon``: fault a page
    outside the registered range first so that the VMA has an anon_vma (the
    fill then takes the per-VMA fast path of uffd_lock_vma)."""
    p = w.p
    p.mmap(A, pages * PAGE, RW, ANON)
    if prep_anon:
        p.store(A + (pages - 1) * PAGE, 1)
    src = p.mmap(0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(src, SRC_BYTE)
    u = p.userfaultfd()
    u.api()
    u.register(A + first * PAGE, npages * PAGE, MISSING)
    return p, u, src


def _errno_of(w: World, name: str) -> int | None:
    r = w.results.get(name)
    return r.errno if isinstance(r, OSError) else None


@_scenario("uffd-fault-vs-copy", "a fault on a registered missing page races UFFDIO_COPY of "
           "that page: the fault sees the page or sleeps and is woken (no lost wake-up)")
def _fault_vs_copy(w: World) -> None:
    p, u, src = _registered(w)

    async def fault(t: Thread) -> int:
        return await t.load(A)

    async def copy(t: Thread) -> int:
        return await u.on(t).copy(A, src, PAGE)

    w.thread("fault", p.thread(), fault)
    w.thread("copy", p.thread(), copy)

    def check() -> None:
        if w.results.get("fault") != SRC_BYTE or w.results.get("copy") != PAGE:
            violation("userfaultfd", f"fault read {w.results.get('fault')!r}, copy returned "
                      f"{w.results.get('copy')!r}; expected {SRC_BYTE} and {PAGE}")
    w.checks.append(check)


@_scenario("uffd-copy-vs-munmap", "UFFDIO_COPY into a registered VMA races munmap of it: "
           "the copy fills before the unmap or finds no VMA (ENOENT)")
def _copy_vs_munmap(w: World) -> None:
    p, u, src = _registered(w)

    async def copy(t: Thread) -> int:
        return await u.on(t).copy(A, src, PAGE)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, 2 * PAGE)

    w.thread("copy", p.thread(), copy)
    w.thread("munmap", p.thread(), unmap)

    def check() -> None:
        if w.results.get("copy") != PAGE and _errno_of(w, "copy") != errno.ENOENT:
            violation("userfaultfd", f"copy returned {w.results.get('copy')!r}")
    w.checks.append(check)


@_scenario("uffd-copy-vs-mprotect-split", "UFFDIO_COPY into the middle page of a registered "
           "VMA races mprotect splitting it in three")
def _copy_vs_split(w: World) -> None:
    p, u, src = _registered(w, pages=3, first=0, npages=3)

    async def copy(t: Thread) -> int:
        return await u.on(t).copy(A + PAGE, src, PAGE)

    async def split(t: Thread) -> int:
        return await t.mprotect(A + PAGE, PAGE, PROT_READ)

    w.thread("copy", p.thread(), copy)
    w.thread("mprotect", p.thread(), split)
    w.checks.append(_expect_byte(w, p, A + PAGE, {SRC_BYTE}, "the copied page"))


@_scenario("uffd-move-vs-mremap", "UFFDIO_MOVE of a page into a registered VMA races mremap "
           "moving the source VMA away (uffd_move_lock: both VMAs read-locked)")
def _move_vs_mremap(w: World) -> None:
    p, u, _ = _registered(w, pages=1, prep_anon=False)
    p.mmap(A + 4 * PAGE, PAGE, RW, ANON)
    p.store(A + 4 * PAGE, 0x77)

    async def move(t: Thread) -> int:
        return await u.on(t).move(A, A + 4 * PAGE, PAGE)

    async def remap(t: Thread) -> int:
        return await t.mremap(A + 4 * PAGE, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, A + 8 * PAGE)

    w.thread("move", p.thread(), move)
    w.thread("mremap", p.thread(), remap)

    def check() -> None:
        moved = w.results.get("move") == PAGE
        if not moved and _errno_of(w, "move") != errno.ENOENT:
            violation("userfaultfd", f"move returned {w.results.get('move')!r}")
        where = A if moved else A + 8 * PAGE
        _expect_byte(w, p, where, {0x77}, "the moved page")()
    w.checks.append(check)


@_scenario("uffd-register-vs-fault", "UFFDIO_REGISTER of one page (split, then "
           "userfaultfd_set_ctx write-locks the VMA) races a fault on the neighbouring page")
def _register_vs_fault(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A, 1)
    u = p.userfaultfd()
    u.api()

    async def register(t: Thread) -> int:
        return await u.on(t).register(A, PAGE, MISSING)

    async def fault(t: Thread) -> None:
        await t.store(A + PAGE, 2)

    w.thread("register", p.thread(), register)
    w.thread("fault", p.thread(), fault)
    w.checks.append(_expect_byte(w, p, A + PAGE, {2}, "the unregistered neighbour"))


@_scenario("uffd-copy-vs-fork", "UFFDIO_COPY races fork, which write-locks the registered VMA "
           "and gives the child an unregistered copy")
def _copy_vs_fork(w: World) -> None:
    p, u, src = _registered(w)

    async def copy(t: Thread) -> int:
        return await u.on(t).copy(A, src, PAGE)

    async def fork(t: Thread) -> Any:
        return await t.fork()

    w.thread("copy", p.thread(), copy)
    w.thread("fork", p.thread(), fork)
    w.checks.append(_expect_byte(w, p, A, {SRC_BYTE}, "the parent's copied page"))

    def check() -> None:
        child = w.results.get("fork")
        if isinstance(child, Process):
            for v in child.mm.mm_mt.snapshot():
                if v.vm_userfaultfd_ctx is not None:
                    violation("userfaultfd", f"fork child {v} still registered")
    w.checks.append(check)


@_scenario("uffd-close-vs-fault", "close of the userfaultfd (userfaultfd_release) races a "
           "fault on a registered page: the fault is woken or sees it released")
def _close_vs_fault(w: World) -> None:
    p, u, _ = _registered(w)

    async def fault(t: Thread) -> int:
        # A load: a store would allocate a page before each userfault check,
        # so the fault's retries (released, VMA not yet unregistered) would
        # never repeat a state and the search could not close the cycle.
        return await t.load(A)

    async def close(t: Thread) -> None:
        await u.on(t).close()

    w.thread("fault", p.thread(), fault)
    w.thread("close", p.thread(), close)

    def check() -> None:
        vma = p.mm.mm_mt.find_covering(A)
        if w.results.get("fault") != 0 or vma is None or vma.vm_userfaultfd_ctx is not None:
            violation("userfaultfd", f"after close: load {w.results.get('fault')!r}, VMA still registered?")
    w.checks.append(check)


@_scenario("uffd-copy-vs-exit", "a handler in another process copies into a registered page "
           "while the faulting process exits (mmget_not_zero: ESRCH or a fill)")
def _copy_vs_exit(w: World) -> None:
    p, u, _ = _registered(w)
    h = w.process("handler")
    hsrc = h.mmap(0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    h.store(hsrc, SRC_BYTE)
    mgr: AsyncUserfaultfd = u.on(h.main)

    async def copy(t: Thread) -> int:
        return await mgr.copy(A, hsrc, PAGE)

    async def leave(t: Thread) -> None:
        await t.exit()

    w.thread("copy", h.main, copy)
    w.thread("exit", p.main, leave)

    def check() -> None:
        if w.results.get("copy") != PAGE and _errno_of(w, "copy") not in (errno.ESRCH, errno.ENOENT):
            violation("userfaultfd", f"copy returned {w.results.get('copy')!r}")
    w.checks.append(check)


# -- write-protect mode ----------------------------------------------------------------
WP = UFFDIO_REGISTER_MODE_WP


def _wp_registered(w: World, pages: int = 2, protect: bool = True) -> tuple[Process, Any]:
    """p maps ``pages`` RW pages at A, writes each (exclusive anonymous
    pages: 1, 2, ...), registers them in write-protect mode and, with
    ``protect``, write-protects them (UFFDIO_WRITEPROTECT_MODE_WP)."""
    p = w.p
    p.mmap(A, pages * PAGE, RW, ANON)
    for i in range(pages):
        p.store(A + i * PAGE, i + 1)
    u = p.userfaultfd()
    u.api()
    u.register(A, pages * PAGE, WP)
    if protect:
        u.writeprotect(A, pages * PAGE, UFFDIO_WRITEPROTECT_MODE_WP)
    return p, u


def _wp_ptes(p: Process, first: int, pages: int, want: bool, what: str) -> Callable[[], None]:
    """A check for after the run: every present PTE of the pages has
    uffd-wp == want (and a uffd-wp PTE is never writable)."""
    def check() -> None:
        if p.mm.freed:
            return
        for i in range(first, first + pages):
            pte = p.mm.pgtable.get(A // PAGE + i)
            if pte is None:
                continue
            if pte.uffd_wp != want or (pte.uffd_wp and pte.writable):
                violation("userfaultfd-wp", f"{what}: page {i} uffd_wp={pte.uffd_wp} "
                          f"writable={pte.writable}, expected uffd_wp={want}")
    return check


@_scenario("uffd-wp-fault-vs-resolve", "a write to a uffd-wp page sleeps in handle_userfault "
           "(do_wp_page, UFFD_PAGEFAULT_FLAG_WP) while the manager reads the message and "
           "resolves it with UFFDIO_WRITEPROTECT mode 0: the write lands, no lost wake-up")
def _wp_fault_vs_resolve(w: World) -> None:
    p, u = _wp_registered(w, pages=1)

    async def write(t: Thread) -> int:
        await t.store(A + 5, 0x42)
        return await t.load(A + 5)

    async def resolve(t: Thread) -> int:
        m = u.on(t)
        msg = await m.read()
        await m.writeprotect(msg["address"], PAGE, 0)
        return int(msg["flags"])

    w.thread("write", p.thread(), write)
    w.thread("resolve", p.thread(), resolve)

    def check() -> None:
        if w.results.get("write") != 0x42 or w.results.get("resolve") != 3:
            violation("userfaultfd-wp", f"write read back {w.results.get('write')!r}, message "
                      f"flags {w.results.get('resolve')!r}; expected 0x42 and WRITE|WP (3)")
    w.checks.append(check)
    w.checks.append(_expect_byte(w, p, A, {1}, "the resolved page's first byte"))


@_scenario("uffd-writeprotect-vs-munmap", "UFFDIO_WRITEPROTECT of a registered VMA races munmap "
           "of it (mmap_read_lock against the write lock): it protects first or finds no VMA")
def _writeprotect_vs_munmap(w: World) -> None:
    p, u = _wp_registered(w, protect=False)

    async def protect(t: Thread) -> int:
        return await u.on(t).writeprotect(A, 2 * PAGE, UFFDIO_WRITEPROTECT_MODE_WP)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, 2 * PAGE)

    w.thread("writeprotect", p.thread(), protect)
    w.thread("munmap", p.thread(), unmap)

    def check() -> None:
        if w.results.get("writeprotect") != 0 and _errno_of(w, "writeprotect") != errno.ENOENT:
            violation("userfaultfd-wp", f"writeprotect returned {w.results.get('writeprotect')!r}")
    w.checks.append(check)


@_scenario("uffd-writeprotect-vs-mprotect-split", "UFFDIO_WRITEPROTECT of three registered pages "
           "races mprotect splitting the middle one off: every page ends write-protected")
def _writeprotect_vs_split(w: World) -> None:
    p, u = _wp_registered(w, pages=3, protect=False)

    async def protect(t: Thread) -> int:
        return await u.on(t).writeprotect(A, 3 * PAGE, UFFDIO_WRITEPROTECT_MODE_WP)

    async def split(t: Thread) -> int:
        return await t.mprotect(A + PAGE, PAGE, PROT_READ)

    w.thread("writeprotect", p.thread(), protect)
    w.thread("mprotect", p.thread(), split)
    w.checks.append(_wp_ptes(p, 0, 3, True, "after writeprotect and the split"))


@_scenario("uffd-writeprotect-vs-fork", "UFFDIO_WRITEPROTECT races fork (which write-locks the "
           "registered VMA and wrprotects it for COW): the parent's pages end uffd-wp, the "
           "unregistered child's never")
def _writeprotect_vs_fork(w: World) -> None:
    p, u = _wp_registered(w, protect=False)

    async def protect(t: Thread) -> int:
        return await u.on(t).writeprotect(A, 2 * PAGE, UFFDIO_WRITEPROTECT_MODE_WP)

    async def fork(t: Thread) -> Any:
        return await t.fork()

    w.thread("writeprotect", p.thread(), protect)
    w.thread("fork", p.thread(), fork)
    w.checks.append(_wp_ptes(p, 0, 2, True, "the parent"))

    def check() -> None:
        child = w.results.get("fork")
        if isinstance(child, Process):
            _wp_ptes(child, 0, 2, False, "the fork child")()
            _expect_byte(w, child, A + PAGE, {2}, "the child's copy")()
    w.checks.append(check)


@_scenario("uffd-writeprotect-vs-mremap", "UFFDIO_WRITEPROTECT of a page races mremap moving it "
           "(no EVENT_REMAP: the moved VMA is unregistered and its PTE loses the bit)")
def _writeprotect_vs_mremap(w: World) -> None:
    p, u = _wp_registered(w, pages=1, protect=False)

    async def protect(t: Thread) -> int:
        return await u.on(t).writeprotect(A, PAGE, UFFDIO_WRITEPROTECT_MODE_WP)

    async def remap(t: Thread) -> int:
        return await t.mremap(A, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, A + 8 * PAGE)

    w.thread("writeprotect", p.thread(), protect)
    w.thread("mremap", p.thread(), remap)
    w.checks.append(_wp_ptes(p, 8, 1, False, "the moved page"))

    def check() -> None:
        if w.results.get("writeprotect") != 0 and _errno_of(w, "writeprotect") != errno.ENOENT:
            violation("userfaultfd-wp", f"writeprotect returned {w.results.get('writeprotect')!r}")
    w.checks.append(check)
    w.checks.append(_expect_byte(w, p, A + 8 * PAGE, {1}, "the moved page"))


@_scenario("uffd-writeprotect-vs-exit", "a handler in another process resolves a uffd-wp page "
           "while the registered process exits (mmget_not_zero: ESRCH, or the resolution)")
def _writeprotect_vs_exit(w: World) -> None:
    p, u = _wp_registered(w, pages=1)
    h = w.process("handler")
    mgr: AsyncUserfaultfd = u.on(h.main)

    async def resolve(t: Thread) -> int:
        return await mgr.writeprotect(A, PAGE, 0)

    async def leave(t: Thread) -> None:
        await t.exit()

    w.thread("resolve", h.main, resolve)
    w.thread("exit", p.main, leave)

    def check() -> None:
        if w.results.get("resolve") != 0 and _errno_of(w, "resolve") not in (errno.ESRCH, errno.ENOENT):
            violation("userfaultfd-wp", f"writeprotect returned {w.results.get('resolve')!r}")
    w.checks.append(check)


def _query_answer(w: World, name: str, allowed: set[Any]) -> None:
    def check() -> None:
        r = w.results.get(name)
        got = r.errno if isinstance(r, OSError) else r
        if got not in allowed:
            violation("PROCMAP_QUERY", f"answer {got!r}, allowed {sorted(map(str, allowed))}")
    w.checks.append(check)


async def _query(t: Thread, addr: int) -> tuple[int, int]:
    q = await t.procmap_query(addr)
    return (q["vma_start"] - A) // PAGE, (q["vma_end"] - A) // PAGE


@_scenario("procmap-query-vs-munmap", "PROCMAP_QUERY (lock_next_vma) for an address in a VMA "
           "that munmap removes: the whole VMA or ENOENT")
def _query_vs_munmap(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)

    async def query(t: Thread) -> tuple[int, int]:
        return await _query(t, A + PAGE)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, 2 * PAGE)

    w.thread("query", p.thread(), query)
    w.thread("munmap", p.thread(), unmap)
    _query_answer(w, "query", {(0, 2), errno.ENOENT})


@_scenario("procmap-query-vs-mprotect-split", "PROCMAP_QUERY of the middle page races "
           "mprotect splitting its VMA in three: the old VMA or the new middle one")
def _query_vs_split(w: World) -> None:
    p = w.p
    p.mmap(A, 3 * PAGE, RW, ANON)

    async def query(t: Thread) -> tuple[int, int]:
        return await _query(t, A + PAGE)

    async def split(t: Thread) -> int:
        return await t.mprotect(A + PAGE, PAGE, PROT_READ)

    w.thread("query", p.thread(), query)
    w.thread("mprotect", p.thread(), split)
    _query_answer(w, "query", {(0, 3), (1, 2)})


# -- non-cooperative events --------------------------------------------------------------
async def _observe_mmap_changing(ctx: Any) -> int:
    """The scenario looks at ctx->mmap_changing (as /proc/pid/fdinfo would):
    a READ step on its location, so the search orders it against the events'
    increments and decrements."""
    await Op(OpKind.READ, ctx.evt_loc, "scenario: observe mmap_changing")
    return int(ctx.mmap_changing)


@_scenario("uffd-remap-event-vs-copy", "mremap of a registered VMA with UFFD_FEATURE_EVENT_REMAP "
           "(mmap_changing raised under map_changing_lock, the event awaited with mmap_lock "
           "dropped) races UFFDIO_COPY into it and the manager reading the event: the copy fills, "
           "finds no VMA, or gets EAGAIN; the mremap always completes")
def _remap_event_vs_copy(w: World) -> None:
    p = w.p
    p.mmap(A, PAGE, RW, ANON)
    src = p.mmap(0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(src, SRC_BYTE)
    u = p.userfaultfd()
    u.api(UFFD_FEATURE_EVENT_REMAP)
    u.register(A, PAGE, MISSING)
    new = A + 8 * PAGE

    async def remap(t: Thread) -> int:
        return await t.mremap(A, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, new)

    async def manager(t: Thread) -> dict[str, int]:
        return await u.on(t).read()

    async def copy(t: Thread) -> int:
        pending = await _observe_mmap_changing(u.ctx)
        n = await u.on(t).copy(new, src, PAGE)
        if pending and await _observe_mmap_changing(u.ctx):  # raised throughout, yet it filled
            violation("userfaultfd event", "UFFDIO_COPY filled a page while mmap_changing was raised")
        return n

    w.thread("mremap", p.thread(), remap)
    w.thread("manager", p.thread(), manager)
    w.thread("copy", p.thread(), copy)

    def check() -> None:
        msg = {"event": UFFD_EVENT_REMAP, "from": A, "to": new, "len": PAGE}
        if w.results.get("mremap") != new or w.results.get("manager") != msg:
            violation("userfaultfd event", f"mremap returned {w.results.get('mremap')!r}, the "
                      f"manager read {w.results.get('manager')!r}")
        if w.results.get("copy") != PAGE and _errno_of(w, "copy") not in (errno.EAGAIN, errno.ENOENT):
            violation("userfaultfd event", f"copy returned {w.results.get('copy')!r}")
        if u.ctx.mmap_changing or u.ctx.event_wqh:
            violation("userfaultfd event", f"after the event: mmap_changing {u.ctx.mmap_changing}, "
                      f"{len(u.ctx.event_wqh)} event(s) queued")
        want = {SRC_BYTE} if w.results.get("copy") == PAGE else {0}
        _expect_byte(w, p, new, want, "the moved VMA's page")()
    w.checks.append(check)


@_scenario("uffd-unmap-event-vs-copy", "munmap of a registered VMA with UFFD_FEATURE_EVENT_UNMAP "
           "(userfaultfd_unmap_prep under the mmap write lock, the event after it is dropped) "
           "races UFFDIO_COPY into another registered VMA and the manager reading the event: "
           "the copy fills or gets EAGAIN, never while the event stays pending")
def _unmap_event_vs_copy(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    src = p.mmap(0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(src, SRC_BYTE)
    u = p.userfaultfd()
    u.api(UFFD_FEATURE_EVENT_UNMAP)
    u.register(A, PAGE, MISSING)
    u.register(A + PAGE, PAGE, MISSING | WP)  # different flags: its own VMA

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, PAGE)

    async def manager(t: Thread) -> dict[str, int]:
        return await u.on(t).read()

    async def copy(t: Thread) -> int:
        pending = await _observe_mmap_changing(u.ctx)
        n = await u.on(t).copy(A + PAGE, src, PAGE)
        if pending and await _observe_mmap_changing(u.ctx):  # raised throughout, yet it filled
            violation("userfaultfd event", "UFFDIO_COPY filled a page while mmap_changing was raised")
        return n

    w.thread("munmap", p.thread(), unmap)
    w.thread("manager", p.thread(), manager)
    w.thread("copy", p.thread(), copy)

    def check() -> None:
        msg = {"event": UFFD_EVENT_UNMAP, "start": A, "end": A + PAGE}
        if w.results.get("munmap") != 0 or w.results.get("manager") != msg:
            violation("userfaultfd event", f"munmap returned {w.results.get('munmap')!r}, the "
                      f"manager read {w.results.get('manager')!r}")
        if w.results.get("copy") != PAGE and _errno_of(w, "copy") != errno.EAGAIN:
            violation("userfaultfd event", f"copy returned {w.results.get('copy')!r}")
        if u.ctx.mmap_changing or u.ctx.event_wqh:
            violation("userfaultfd event", f"after the event: mmap_changing {u.ctx.mmap_changing}, "
                      f"{len(u.ctx.event_wqh)} event(s) queued")
        want = {SRC_BYTE} if w.results.get("copy") == PAGE else {0}
        _expect_byte(w, p, A + PAGE, want, "the other VMA's page")()
    w.checks.append(check)


# -- the BPF stack map's build-ID lookup (kernel/stackmap.py) ----------------------------
IP = A + PAGE + 0x10  # an instruction pointer in the middle page of the text mapping


def _text_mapping(w: World) -> tuple[Process, int]:
    """p maps three pages of a resident file at A, read+exec, private (a
    text segment); returns the process and the file's inode (its model build ID)."""
    p = w.p
    f = w.kern.create_file("/usr/bin/prog", 3, resident=True)
    p.mmap(A, 3 * PAGE, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED, f, 0)
    return p, f.inode


def _build_id_answer(w: World, inode: int) -> None:
    """The lookup gives the right (build ID, offset) or falls back to the IP;
    never a wrong offset."""
    def check() -> None:
        got = w.results.get("stackmap")
        allowed = ([(BPF_STACK_BUILD_ID_VALID, inode, IP - A)], [(BPF_STACK_BUILD_ID_IP, 0, IP)])
        if got not in allowed:
            violation("bpf stack map", f"build ID lookup gave {got!r}, allowed {allowed!r}")
    w.checks.append(check)


async def _stackmap(t: Thread) -> list[tuple[int, int, int]]:
    return await t.bpf_stack_build_id([IP])


@_scenario("stackmap-build-id-vs-mprotect-split", "a BPF user-stack build-ID lookup "
           "(stack_map_lock_vma: lock_vma_under_rcu, else mmap_read_trylock) races mprotect "
           "splitting the text mapping: the same file offset from either VMA, or the IP")
def _stackmap_vs_split(w: World) -> None:
    p, inode = _text_mapping(w)

    async def split(t: Thread) -> int:
        return await t.mprotect(A + PAGE, PAGE, PROT_READ)

    w.thread("stackmap", p.thread(), _stackmap)
    w.thread("mprotect", p.thread(), split)
    _build_id_answer(w, inode)


@_scenario("stackmap-build-id-vs-munmap", "a BPF user-stack build-ID lookup races munmap of "
           "the text mapping and a new mapping of another file (which reuses the freed VMA at "
           "once): the offset, or the IP (no VMA, or mmap_lock busy: never blocks)")
def _stackmap_vs_munmap(w: World) -> None:
    p, inode = _text_mapping(w)
    other = w.kern.create_file("/usr/lib/other.so", 2, resident=True)

    async def unmap(t: Thread) -> int:
        await t.munmap(A, 3 * PAGE)
        return await t.mmap(A + 16 * PAGE, 2 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, other, 0)

    w.thread("stackmap", p.thread(), _stackmap)
    w.thread("munmap", p.thread(), unmap)
    _build_id_answer(w, inode)


@_scenario("stackmap-build-id-vs-mremap", "a BPF user-stack build-ID lookup races mremap "
           "moving the text mapping away: the offset read under the VMA lock, or the IP")
def _stackmap_vs_mremap(w: World) -> None:
    p, inode = _text_mapping(w)

    async def remap(t: Thread) -> int:
        return await t.mremap(A, 3 * PAGE, 3 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, A + 8 * PAGE)

    w.thread("stackmap", p.thread(), _stackmap)
    w.thread("mremap", p.thread(), remap)
    _build_id_answer(w, inode)
