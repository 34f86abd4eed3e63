"""Reverse mapping (mm/rmap.c): anon_vmas and the chains that link them to
VMAs, in steps with their locks, and an rmap walker (the kind reclaim and
migration run) that finds every PTE mapping an anonymous page.

Followed: mm/rmap.c of 6.2-6.18 (``num_children``/``num_active_vmas``, the
interval tree, SLAB_TYPESAFE_BY_RCU anon_vmas freed by their last
reference), which 7.0 keeps in substance.  An anon_vma_chain is modelled as
the pair it links: ``vma.anon_vma_chain`` lists the anon_vmas (oldest link
first, so the kernel's newest-first walks go in reverse) and
``anon_vma.rb_root`` the VMAs.  Every change of an anon_vma's tree happens
under its root's rwsem held for writing, which is what lets a walker see a
clone half done but never a tree in mid-update.

``System.fail_avc_alloc`` fails that many anon_vma_chain allocations from
now on (the ``-ENOMEM`` paths, as failslab would).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.mm_types import VM_ACCESS_FLAGS, AnonVma, VmFlags
from pervma.kernel.mmap_lock import mmap_assert_locked
from pervma.kernel.rcu import rcu_read_lock, rcu_read_unlock
from pervma.kernel.task import current_task
from pervma.sched import Op, OpKind
from pervma.sched.locations import PAGE_FRAME, VMA
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, Page, VmAreaStruct

ENOMEM = 12


# ---------------------------------------------------------------------------
# Allocation, references, locking
# ---------------------------------------------------------------------------
def anon_vma_alloc(mm: MmStruct) -> AnonVma:
    """A new anon_vma, its own root and parent, one reference (the caller's),
    no children and no VMAs yet; private until linked, so no step."""
    av: AnonVma = mm.system.anon_vma_cachep.alloc("anon_vma_alloc")
    av.refcount.counter = 1
    av.num_children = av.num_active_vmas = 0
    av.parent = av.root = av
    av.rb_root = []
    av.was_cloned = av.was_unlinked = False
    return av


def _avc_alloc(mm: MmStruct) -> bool:
    """anon_vma_chain_alloc(): False when the allocation fails."""
    system = mm.system
    if system is not None and system.fail_avc_alloc > 0:
        system.fail_avc_alloc -= 1
        return False
    return True


async def anon_vma_lock_write(av: AnonVma) -> None:
    assert av.root is not None
    await av.root.rwsem.down_write()


async def anon_vma_unlock_write(av: AnonVma) -> None:
    assert av.root is not None
    await av.root.rwsem.up_write()


async def anon_vma_lock_read(av: AnonVma) -> None:
    assert av.root is not None
    await av.root.rwsem.down_read()


async def anon_vma_unlock_read(av: AnonVma) -> None:
    assert av.root is not None
    await av.root.rwsem.up_read()


async def get_anon_vma(av: AnonVma) -> None:
    await av.refcount.add_return(1, "get_anon_vma")


async def anon_vma_free(av: AnonVma) -> None:
    """Wait out a walker that pinned the anon_vma and holds its root's lock
    (folio_lock_anon_vma_read: if the root's rwsem is held, take and drop it
    for writing), then free it to its SLAB_TYPESAFE_BY_RCU cache."""
    debug.might_sleep("mm/rmap.c", "anon_vma_free")
    root = av.root
    assert root is not None
    await Op(OpKind.OBSERVE, root.rwsem.loc, "anon_vma_free: rwsem_is_locked", order=Order.ONCE)
    if root.rwsem.is_locked():
        await anon_vma_lock_write(av)
        await anon_vma_unlock_write(av)
    current_task().system.anon_vma_cachep.free(av, "anon_vma_free")


async def __put_anon_vma(av: AnonVma) -> None:
    """The last reference is gone: free it, then drop the reference a child
    holds on its root (freeing the root too if that was the last)."""
    root = av.root
    await anon_vma_free(av)
    if root is not None and root is not av:
        if await root.refcount.add_return(-1, "__put_anon_vma: root") == 0:
            await anon_vma_free(root)


async def put_anon_vma(av: AnonVma) -> None:
    if await av.refcount.add_return(-1, "put_anon_vma") == 0:
        await __put_anon_vma(av)


def anon_vma_chain_link(vma: VmAreaStruct, av: AnonVma) -> None:
    """Link vma and av both ways (the chain on the VMA, the interval tree on
    the anon_vma).  The tree is the walkers': it changes only under the
    root's rwsem held for writing."""
    _assert_tree_locked(av, "anon_vma_chain_link")
    vma.anon_vma_chain.append(av)
    _anon_vma_interval_tree_insert(vma, av)


def _anon_vma_interval_tree_insert(vma: VmAreaStruct, av: AnonVma) -> None:
    """anon_vma_interval_tree_insert(): the tree is keyed by each VMA's first
    page offset; an insert goes after the VMAs with an equal key, as the
    rbtree insert walks right on equal keys (a fork's child after its
    parent).  A walk meets the VMAs in that order, which is what
    copy_vma()'s need_rmap_locks reasons about."""
    tree = av.rb_root
    i = len(tree)
    while i > 0 and tree[i - 1].vm_pgoff > vma.vm_pgoff:
        i -= 1
    tree.insert(i, vma)


def anon_vma_interval_tree_pre_update_vma(vma: VmAreaStruct) -> None:
    """Out of each of its anon_vmas' trees while its range or vm_pgoff
    changes (vma_prepare(), under the anon_vma write lock)."""
    for av in vma.anon_vma_chain:
        _assert_tree_locked(av, "anon_vma_interval_tree_pre_update_vma")
        av.rb_root.remove(vma)


def anon_vma_interval_tree_post_update_vma(vma: VmAreaStruct) -> None:
    """Back in, at the place of its new key (vma_complete())."""
    for av in vma.anon_vma_chain:
        _anon_vma_interval_tree_insert(vma, av)


def _assert_tree_locked(av: AnonVma, where: str) -> None:
    root = av.root
    if root is not None and root.rwsem.writer is None:
        debug.report("WARNING: anon_vma tree changed without its lock",
                         f"{where}: anon_vma #{av.slot}'s interval tree changed without "
                         f"anon_vma->root->rwsem (#{root.slot}) held for writing")


# ---------------------------------------------------------------------------
# Preparing, cloning, forking, unlinking
# ---------------------------------------------------------------------------
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
    """Attach an anon_vma to vma, reusing a neighbour's when compatible: the
    link is made under the anon_vma's lock, and the pointer published under
    mm->page_table_lock so that two faulting threads agree on one anon_vma
    (the loser drops the one it allocated)."""
    mm = vma.vm_mm
    debug.might_sleep("mm/rmap.c", "__anon_vma_prepare")
    if not _avc_alloc(mm):
        return -ENOMEM
    av = find_mergeable_anon_vma(vma)
    allocated = None
    if av is None:
        av = allocated = anon_vma_alloc(mm)
        av.num_children += 1  # the new root's link to itself
    await anon_vma_lock_write(av)
    await mm.page_table_lock.lock()
    await Op(OpKind.WRITE, (VMA, vma.slot), "__anon_vma_prepare: vma->anon_vma", order=Order.PLAIN)
    if vma.anon_vma is None:
        vma.anon_vma = av
        anon_vma_chain_link(vma, av)
        av.num_active_vmas += 1
        allocated = None
    await mm.page_table_lock.unlock()
    await anon_vma_unlock_write(av)
    if allocated is not None:
        await put_anon_vma(allocated)
    return 0


async def _lock_anon_vma_root(root: AnonVma | None, av: AnonVma) -> AnonVma:
    """lock_anon_vma_root(): one write lock for a run of anon_vmas sharing a
    root, switching locks when the root changes."""
    new_root = av.root
    assert new_root is not None
    if new_root is not root:
        if root is not None:
            await root.rwsem.up_write()
        await new_root.rwsem.down_write()
    return new_root


async def _unlock_anon_vma_root(root: AnonVma | None) -> None:
    if root is not None:
        await root.rwsem.up_write()


async def anon_vma_clone(dst: VmAreaStruct, src: VmAreaStruct) -> int:
    """Link dst to every anon_vma src is linked to (split, merge, copy_vma,
    fork), oldest first, under each root's lock.  On fork (dst->anon_vma
    cleared by the caller) an anon_vma with no VMA and at most one child is
    reused as dst's own, so that a forking loop does not grow the hierarchy
    without end."""
    mm = dst.vm_mm
    if src.anon_vma is not None:
        src.anon_vma.was_cloned = True
    root: AnonVma | None = None
    for av in list(src.anon_vma_chain):
        if not _avc_alloc(mm):
            # the GFP_NOWAIT attempt failed: drop the lock, try GFP_KERNEL
            await _unlock_anon_vma_root(root)
            root = None
            if not _avc_alloc(mm):
                dst.anon_vma = None
                await unlink_anon_vmas(dst)
                return -ENOMEM
        root = await _lock_anon_vma_root(root, av)
        anon_vma_chain_link(dst, av)
        if (dst.anon_vma is None and src.anon_vma is not None and av.num_children < 2
                and av.num_active_vmas == 0):
            dst.anon_vma = av
    if dst.anon_vma is not None:
        dst.anon_vma.num_active_vmas += 1
    await _unlock_anon_vma_root(root)
    return 0


async def anon_vma_fork(vma: VmAreaStruct, pvma: VmAreaStruct) -> int:
    """The child VMA is linked to every anon_vma of the parent's, then gets
    an anon_vma of its own (unless clone reused one) whose root is the
    parent's and which pins that root."""
    mm = vma.vm_mm
    vma.anon_vma_chain = []
    if pvma.anon_vma is None:
        vma.anon_vma = None
        return 0
    vma.anon_vma = None
    ret = await anon_vma_clone(vma, pvma)
    if ret:
        return ret
    if vma.anon_vma is not None:
        return 0
    av = anon_vma_alloc(mm)
    av.num_active_vmas += 1
    if not _avc_alloc(mm):
        await put_anon_vma(av)
        await unlink_anon_vmas(vma)
        return -ENOMEM
    parent = pvma.anon_vma
    assert parent.root is not None
    av.root = parent.root
    av.parent = parent
    await get_anon_vma(av.root)
    vma.anon_vma = av
    await anon_vma_lock_write(av)
    anon_vma_chain_link(vma, av)
    parent.num_children += 1
    await anon_vma_unlock_write(av)
    return 0


async def unlink_anon_vmas(vma: VmAreaStruct) -> None:
    """Unlink vma from each of its anon_vmas, newest first, under the roots'
    locks; those left with no VMA lose their parent link and, once the lock
    is dropped, the chain's reference (which frees them when it was the
    last: the root last of all)."""
    if vma.anon_vma is not None:
        vma.anon_vma.was_unlinked = True
    root: AnonVma | None = None
    empty: list[AnonVma] = []
    kept: list[AnonVma] = []
    for av in reversed(vma.anon_vma_chain):
        root = await _lock_anon_vma_root(root, av)
        _assert_tree_locked(av, "unlink_anon_vmas")
        if vma in av.rb_root:
            av.rb_root.remove(vma)
        if not av.rb_root:
            assert av.parent is not None
            av.parent.num_children -= 1
            empty.append(av)
        else:
            kept.append(av)
    if vma.anon_vma is not None:
        vma.anon_vma.num_active_vmas -= 1
        vma.anon_vma = None
    await _unlock_anon_vma_root(root)
    vma.anon_vma_chain = [av for av in vma.anon_vma_chain if av in empty]
    for av in empty:
        if av.num_children or av.num_active_vmas:
            debug.report("WARNING: mm/rmap.c unlink_anon_vmas",
                         f"anon_vma #{av.slot} has no VMA left but num_children {av.num_children}, "
                         f"num_active_vmas {av.num_active_vmas}")
        await put_anon_vma(av)
        vma.anon_vma_chain.remove(av)


# ---------------------------------------------------------------------------
# The rmap walker
# ---------------------------------------------------------------------------
async def folio_lock_anon_vma_read(page: Page) -> AnonVma | None:
    """The anon_vma of a page off the LRU, read-locked, or None.  Nothing
    stops the page being unmapped meanwhile, so: under RCU (the anon_vma
    cache is SLAB_TYPESAFE_BY_RCU) try the root's lock, and re-check that
    the page is still mapped; on contention pin the anon_vma with
    atomic_inc_not_zero, re-check, sleep on the lock, and if the pin was the
    last reference free it here."""
    rcu_read_lock()
    try:
        await Op(OpKind.READ, (PAGE_FRAME, page.pfn), "folio_lock_anon_vma_read: folio->mapping", order=Order.ONCE)
        av = page.anon_vma
        if av is None or page.mapcount <= 0:
            return None
        debug.kasan_check(av, "folio_lock_anon_vma_read", "anon_vma")
        root = av.root
        assert root is not None
        locked = await root.rwsem.down_read_trylock()
        if root.freed:
            debug.kasan_check(root, "folio_lock_anon_vma_read: down_read_trylock", "anon_vma")
        if locked:
            await Op(OpKind.READ, (PAGE_FRAME, page.pfn), "folio_lock_anon_vma_read: folio_mapped", order=Order.ONCE)
            if page.mapcount <= 0:
                await root.rwsem.up_read()
                return None
            return av
        if not await av.refcount.add_unless(1, 0, "folio_lock_anon_vma_read: atomic_inc_not_zero"):
            return None
        await Op(OpKind.READ, (PAGE_FRAME, page.pfn), "folio_lock_anon_vma_read: folio_mapped", order=Order.ONCE)
        mapped = page.mapcount > 0
    finally:
        rcu_read_unlock()
    if not mapped:
        await put_anon_vma(av)
        return None
    await anon_vma_lock_read(av)
    if await av.refcount.add_return(-1, "folio_lock_anon_vma_read: atomic_dec_and_test") == 0:
        await anon_vma_unlock_read(av)
        await __put_anon_vma(av)
        return None
    return av


async def rmap_walk_anon(system: object, page: Page) -> list[tuple[VmAreaStruct, int]]:
    """An rmap walk as reclaim runs it: folio_lock_anon_vma_read(), then
    visit every VMA in the anon_vma's interval tree that covers the page's
    index and check its PTE under the page-table lock.  It takes neither
    mmap_lock nor a VMA lock: it relies on the tree being complete (fork
    links the child under the anon_vma lock before copying a PTE)."""
    av = await folio_lock_anon_vma_read(page)
    if av is None:
        return []
    debug.check_rmap_walk(av, page, "rmap_walk_anon")
    found = []
    for vma in list(av.rb_root):
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
    await anon_vma_unlock_read(av)
    return found
