"""Reverse mapping (mm/rmap.c): anon_vma preparation, cloning on split,
merge and fork, unlinking, and an rmap walker (the kind reclaim and
migration run) that finds every PTE mapping an anonymous page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.mm_types import VM_ACCESS_FLAGS, AnonVma, VmFlags
from pervma.kernel.mmap_lock import mmap_assert_locked
from pervma.sched import Op, OpKind

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, Page, VmAreaStruct


def anon_vma_alloc(mm: MmStruct) -> AnonVma:
    av = mm.system.anon_vma_cachep.alloc("anon_vma_alloc")
    av.root = av
    av.degree = 1
    av.was_cloned = av.was_unlinked = False
    return av


def anon_vma_compatible(a: VmAreaStruct, b: VmAreaStruct) -> bool:
    return (a.vm_end == b.vm_start and a.vm_policy is b.vm_policy and a.vm_file is b.vm_file
            and not ((a.vm_flags ^ b.vm_flags) & ~(VM_ACCESS_FLAGS | VmFlags.VM_SOFTDIRTY))
            and b.vm_pgoff == a.vm_pgoff + ((b.vm_start - a.vm_start) >> 12))


def reusable_anon_vma(old: VmAreaStruct, a: VmAreaStruct, b: VmAreaStruct) -> AnonVma | None:
    debug.kasan_check(old, "reusable_anon_vma", "vm_area_struct")
    if anon_vma_compatible(a, b):
        av = old.anon_vma
        if av is not None and len(old.anon_vma_chain) == 1:
            return av
    return None


def find_mergeable_anon_vma(vma: VmAreaStruct) -> AnonVma | None:
    """Looks at the neighbouring VMAs, which only mmap_lock protects: the
    reason anon_vma preparation needs mmap_lock even under a VMA lock."""
    mm = vma.vm_mm
    mmap_assert_locked(mm)
    prev, nxt = mm.mm_mt.prev_next(vma.vm_start, vma.vm_end)
    if nxt is not None:
        av = reusable_anon_vma(nxt, vma, nxt)
        if av is not None:
            return av
    if prev is not None:
        return reusable_anon_vma(prev, prev, vma)
    return None


async def __anon_vma_prepare(vma: VmAreaStruct) -> int:
    """Attach an anon_vma to vma, reusing a neighbour's when compatible; the
    pointer is published under mm->page_table_lock so that two faulting
    threads agree on one anon_vma."""
    mm = vma.vm_mm
    av = find_mergeable_anon_vma(vma)
    allocated = av is None
    if av is None:
        av = anon_vma_alloc(mm)
    await mm.page_table_lock.lock()
    await Op(OpKind.WRITE, ("vma", vma.slot), "__anon_vma_prepare: vma->anon_vma")
    if vma.anon_vma is None:
        vma.anon_vma = av
        vma.anon_vma_chain.append(av)
        allocated = False
    await mm.page_table_lock.unlock()
    if allocated:
        mm.system.anon_vma_cachep.free(av, "__anon_vma_prepare: lost race")
    return 0


def anon_vma_clone(dst: VmAreaStruct, src: VmAreaStruct) -> int:
    """Link dst to every anon_vma src is linked to (split, merge, copy_vma)."""
    if src.anon_vma is None:
        return 0
    dst.anon_vma_chain = list(src.anon_vma_chain)
    src.anon_vma.was_cloned = True
    return 0


def anon_vma_fork(child: VmAreaStruct, parent: VmAreaStruct) -> int:
    """The child is linked to every anon_vma of the parent, plus a new one of
    its own whose root is the parent's."""
    if parent.anon_vma is None:
        child.anon_vma = None
        child.anon_vma_chain = []
        return 0
    child.anon_vma = None
    child.anon_vma_chain = list(parent.anon_vma_chain)
    av = anon_vma_alloc(child.vm_mm)
    av.root = parent.anon_vma.root
    child.anon_vma = av
    child.anon_vma_chain.append(av)
    return 0


def unlink_anon_vmas(vma: VmAreaStruct) -> None:
    if vma.anon_vma is not None:
        vma.anon_vma.was_unlinked = True
    vma.anon_vma_chain = []
    vma.anon_vma = None


# ---------------------------------------------------------------------------
# The rmap walker
# ---------------------------------------------------------------------------
async def rmap_walk_anon(system: object, page: Page) -> list[tuple[VmAreaStruct, int]]:
    """An rmap walk as reclaim runs it: under the anon_vma lock (a step on the
    anon_vma's root) visit every VMA linked to the page's anon_vma and check
    its PTE under the page-table lock.  It takes neither mmap_lock nor a VMA
    lock: it relies on the chain being complete (fork's parent VMA lock)."""
    av = page.anon_vma
    if av is None:
        return []
    root = av.root or av
    await Op(OpKind.ACQUIRE, ("anon_vma", root.slot), "anon_vma_lock_read")
    vmas = [v for v in system.all_vmas() if av in v.anon_vma_chain]  # type: ignore[attr-defined]
    found = []
    for vma in vmas:
        debug.kasan_check(vma, "rmap_walk_anon", "vm_area_struct")
        addr = vma.vm_start + ((page.index - vma.vm_pgoff) << 12)
        if not (vma.vm_start <= addr < vma.vm_end):
            continue
        ptl = vma.vm_mm.ptl(addr)
        await ptl.lock()
        pte = vma.vm_mm.pgtable.get(addr >> 12)
        if pte is not None and pte.page is page:
            found.append((vma, addr))
        await ptl.unlock()
    await Op(OpKind.RELEASE, ("anon_vma", root.slot), "anon_vma_unlock_read")
    return found
