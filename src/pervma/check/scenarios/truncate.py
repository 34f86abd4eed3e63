"""Truncate scenarios (issue #13 item 3): ftruncate of a mapped file races a
fault on the mapping, munmap of part of it, and mremap moving it.

truncate reaches every mm's PTEs through the file's ``i_mmap`` under
``i_mmap_rwsem`` (read), holding neither mmap_lock nor a VMA lock; a fault
holds only its VMA lock (or mmap_lock on ``legacy``) and the folio lock;
munmap and mremap change ``i_mmap`` under ``i_mmap_rwsem`` (write).  Beside
validate_mm, each checks what the kernel guarantees once truncate returned:
no PTE of any mapping of the file maps a page beyond the new end (an access
there must raise SIGBUS), every file VMA of the mm is in the file's
``i_mmap`` and nothing else is, and a fault that lost the race got SIGBUS.
"""

from __future__ import annotations

from collections.abc import Callable

from pervma import MAP_FIXED, MAP_PRIVATE, MAP_SHARED, PAGE, Segfault
from pervma.check.scenarios.kernel import RW, A, World, _scenario
from pervma.kernel.fault import SIGBUS_FAULT
from pervma.kernel.interval_tree import vma_in_i_mmap
from pervma.kernel.mm_types import File
from pervma.kernel.mremap import MREMAP_FIXED, MREMAP_MAYMOVE
from pervma.kernel.system import Process, Thread
from pervma.sched import violation

B = A + 32 * PAGE  # mremap's destination: far from A


def file_rmap_check(w: World, f: File) -> Callable[[], None]:
    """The end state: no PTE beyond EOF in any mapping of ``f``; ``f``'s
    i_mmap holds exactly the live file VMAs of the scenario's processes."""
    def check() -> None:
        max_idx = (f.i_size + PAGE - 1) // PAGE
        live = []
        for _, p in w.procs:
            mm = p.mm
            if mm.freed:
                continue
            for vma in mm.mm_mt.snapshot():
                if vma.vm_file is not f:
                    continue
                live.append(vma)
                if not vma_in_i_mmap(vma):
                    violation("file rmap", f"{vma} of {mm} maps {f.path} but is not in its i_mmap")
                for vpn in range(vma.vm_start // PAGE, vma.vm_end // PAGE):
                    index = vma.vm_pgoff + vpn - vma.vm_start // PAGE
                    if vpn in mm.pgtable and index >= max_idx:
                        violation("mapping beyond EOF",
                                  f"{mm} still maps page {index} of {f.path} at {vpn * PAGE:#x} "
                                  f"after truncate to {f.i_size} bytes (an access must raise SIGBUS)")
        for vma in f.i_mmap:
            if all(vma is not v for v in live):
                violation("file rmap", f"i_mmap of {f.path} holds {vma}, which no mm maps")
    return check


def _sigbus_or(w: World, name: str, allowed: set[int]) -> Callable[[], None]:
    """``name`` (a load) returned one of ``allowed`` or got SIGBUS."""
    def check() -> None:
        r = w.results.get(name)
        if isinstance(r, Segfault):
            if r.code != SIGBUS_FAULT:
                violation("user-visible memory", f"{name}: {r}, expected SIGBUS")
        elif r not in allowed:
            violation("user-visible memory", f"{name}: returned {r!r}, allowed {sorted(allowed)} or SIGBUS")
    return check


def _mapped_file(w: World, pages: int, flags: int, resident: bool = True) -> tuple[Process, File]:
    """p maps a file of ``pages`` pages at A; page i holds i + 1.  The file is
    in the page cache (``resident``), or not: the first fault on each page
    then reads it in (a major fault)."""
    f = w.kern.create_file("/tmp/trunc", pages, resident=resident)
    for i in range(pages):
        f.contents[i] = {0: i + 1}
    w.p.mmap(A, pages * PAGE, RW, flags | MAP_FIXED, f, 0)
    return w.p, f


@_scenario("truncate-vs-fault", "ftruncate to one page races a read fault on the second page "
           "of a shared file mapping")
def _truncate_vs_fault(w: World) -> None:
    _fault_vs_truncate(w, *_mapped_file(w, 2, MAP_SHARED))


def _fault_vs_truncate(w: World, p: Process, f: File) -> None:
    """A load of the second page of ``f`` (mapped shared at A, two pages)
    races ftruncate to one page: the byte, or SIGBUS."""
    async def fault(t: Thread) -> int:
        return await t.load(A + PAGE)

    async def truncate(t: Thread) -> int:
        return await t.truncate(f, PAGE)

    w.thread("fault", p.thread(), fault)
    w.thread("truncate", p.thread(), truncate)
    w.checks.append(file_rmap_check(w, f))
    w.checks.append(_sigbus_or(w, "fault", {2}))


@_scenario("truncate-vs-cow-fault", "ftruncate to one page races a write fault copying the second "
           "page of a private file mapping (the copy must go too)")
def _truncate_vs_cow_fault(w: World) -> None:
    p, f = _mapped_file(w, 2, MAP_PRIVATE)
    p.store(A, 7)  # the VMA has its anon_vma: the COW fault stays on the VMA lock

    async def fault(t: Thread) -> None:
        await t.store(A + PAGE, 9)

    async def truncate(t: Thread) -> int:
        return await t.truncate(f, PAGE)

    w.thread("fault", p.thread(), fault)
    w.thread("truncate", p.thread(), truncate)
    w.checks.append(file_rmap_check(w, f))

    def stored_or_sigbus() -> None:
        r = w.results.get("fault")
        if isinstance(r, Segfault) and r.code != SIGBUS_FAULT:
            violation("user-visible memory", f"fault: {r}, expected SIGBUS")
    w.checks.append(stored_or_sigbus)


@_scenario("truncate-vs-munmap", "ftruncate to zero races munmap of the first page of a shared "
           "file mapping (a split, then the unlink from i_mmap)")
def _truncate_vs_munmap(w: World) -> None:
    p, f = _mapped_file(w, 2, MAP_SHARED)
    p.load(A)
    p.load(A + PAGE)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, PAGE)

    async def truncate(t: Thread) -> int:
        return await t.truncate(f, 0)

    w.thread("munmap", p.thread(), unmap)
    w.thread("truncate", p.thread(), truncate)
    w.checks.append(file_rmap_check(w, f))


@_scenario("truncate-vs-mremap", "ftruncate to one page races mremap moving a shared file "
           "mapping whose pages are mapped")
def _truncate_vs_mremap(w: World) -> None:
    p, f = _mapped_file(w, 2, MAP_SHARED)
    p.load(A)
    p.load(A + PAGE)

    async def move(t: Thread) -> int:
        return await t.mremap(A, 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, B)

    async def truncate(t: Thread) -> int:
        return await t.truncate(f, PAGE)

    w.thread("mremap", p.thread(), move)
    w.thread("truncate", p.thread(), truncate)
    w.checks.append(file_rmap_check(w, f))


@_scenario("truncate-vs-mremap-merge", "ftruncate to one page races mremap moving the file's second "
           "page next to its first, where it merges (the PTE move holds i_mmap_rwsem)")
def _truncate_vs_mremap_merge(w: World) -> None:
    f = w.kern.create_file("/tmp/trunc", 2, resident=True)
    for i in range(2):
        f.contents[i] = {0: i + 1}
    p = w.p
    p.mmap(A, PAGE, RW, MAP_SHARED | MAP_FIXED, f, 0)
    p.mmap(B, PAGE, RW, MAP_SHARED | MAP_FIXED, f, PAGE)
    p.load(A)
    p.load(B)

    async def move(t: Thread) -> int:
        return await t.mremap(B, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, A + PAGE)

    async def truncate(t: Thread) -> int:
        return await t.truncate(f, PAGE)

    w.thread("mremap", p.thread(), move)
    w.thread("truncate", p.thread(), truncate)
    w.checks.append(file_rmap_check(w, f))


@_scenario("major-fault-vs-truncate", "a read fault on the second page of a shared mapping of "
           "a file not in the page cache drops its VMA lock for the read and retries, while "
           "ftruncate to one page removes that page")
def _major_fault_vs_truncate(w: World) -> None:
    _fault_vs_truncate(w, *_mapped_file(w, 2, MAP_SHARED, resident=False))


@_scenario("major-fault-vs-munmap", "a read fault on a private mapping of a file not in the "
           "page cache drops its VMA lock for the read and retries, while munmap removes the "
           "VMA: the retry finds no VMA (SIGSEGV) or maps the page read in")
def _major_fault_vs_munmap(w: World) -> None:
    p, f = _mapped_file(w, 2, MAP_PRIVATE, resident=False)

    async def fault(t: Thread) -> int:
        return await t.load(A)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, 2 * PAGE)

    w.thread("fault", p.thread(), fault)
    w.thread("munmap", p.thread(), unmap)
    w.checks.append(file_rmap_check(w, f))

    def check() -> None:
        r = w.results.get("fault")
        if isinstance(r, Segfault):
            if r.code == SIGBUS_FAULT:
                violation("user-visible memory", f"fault: {r}, expected the byte or SIGSEGV")
        elif r != 1:
            violation("user-visible memory", f"fault: returned {r!r}, expected 1 or SIGSEGV")
        if f.npages != 2 or any(f.pages[i].data.get(0) != i + 1 for i in f.pages):
            violation("file contents", f"{f.path}: the page cache holds {sorted(f.pages)} "
                      "with contents other than the file's")
    w.checks.append(check)
