"""NUMA memory policies: mm/mempolicy.c, include/linux/mempolicy.h and the
uapi include/uapi/linux/mempolicy.h.

Followed: mm/mempolicy.c of kernel-patches/bpf ``307ec36f`` (7.0-era: folios,
MPOL_MF_WRLOCK, queue_folios_pte_range) and include/linux/pagewalk.h of 7.x.

What is modelled:

- ``struct mempolicy`` objects in their own plain kmem_cache ("numa_policy"):
  ``mpol_new``, ``mpol_get``/``mpol_put`` (the last put frees and poisons, so
  KASAN sees a later use), ``mpol_dup`` (a copy with refcnt 1: every VMA owns
  its policy, as vma_dup_policy() gives each half of a split or a fork its
  own), ``mpol_equal`` for the merge checks.
- ``vma->vm_policy`` read by the fault path under the fault's lock (the VMA
  read lock, or mmap_lock) in ``get_vma_policy`` to choose the node a new
  anonymous page comes from (``policy_node``, the node folio_alloc_mpol()
  picks: PREFERRED its node, BIND and PREFERRED_MANY the local node 0 if
  allowed else the first allowed, INTERLEAVE by the interleave index).  A
  VMA without a policy costs the fault no step (the task policy is the
  default: the model's tasks do not call set_mempolicy and run on node 0).
- ``mbind(2)``: ``kernel_mbind`` (sanitize_mpol_flags, get_nodes) and
  ``do_mbind`` in the kernel's order: every argument check before any lock;
  mmap_lock for write; ``queue_pages_range`` walks with PGWALK_WRLOCK (the
  walker write-locks each VMA before its pages are looked at, and before
  vma_replace_policy() frees the old policy); ``mbind_range`` splits and
  merges through ``vma_modify_policy`` (mm/vma.c) and ``vma_replace_policy``
  swaps in a duplicate and puts the old one; MPOL_MF_MOVE migrates the queued
  pages after mmap_lock is dropped.

Not modelled: set_mempolicy/get_mempolicy, shared (shmem) policies
(``->set_policy``/``->get_policy``: the VMA keeps the policy, page-cache
pages stay on node 0), cpusets (every node is allowed), weighted interleave
weights (all 1), MPOL_F_RELATIVE_NODES remapping (the mask is taken as given)
and migration of page-cache pages (they cannot be isolated here: counted as
failures, so MPOL_MF_STRICT reports -EIO where Linux would move them).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.mm_types import PAGE_SHIFT, PAGE_SIZE, Page, Pte, VmFlags
from pervma.kernel.mmap_lock import (
    mmap_write_lock,
    mmap_write_unlock,
    vma_assert_write_locked,
)
from pervma.kernel.mmu_notifier import (
    MMU_NOTIFY_CLEAR,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
    mmu_notifier_range_init,
)
from pervma.kernel.pagewalk import PGWALK_RDLOCK, PGWALK_WRLOCK, MmWalk, MmWalkOps, walk_page_range
from pervma.kernel.slab import SlabObject
from pervma.kernel.syscalls import ULONG_MAX, c_ulong
from pervma.sched import Op, OpKind, touch, work
from pervma.sched.locations import MEMPOLICY, PAGE_FRAME, VMA
from pervma.sched.order import Order

if TYPE_CHECKING:
    from collections.abc import Hashable

    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

# include/uapi/linux/mempolicy.h
MPOL_DEFAULT = 0
MPOL_PREFERRED = 1
MPOL_BIND = 2
MPOL_INTERLEAVE = 3
MPOL_LOCAL = 4
MPOL_PREFERRED_MANY = 5
MPOL_WEIGHTED_INTERLEAVE = 6
MPOL_MAX = 7
MPOL_F_STATIC_NODES = 1 << 15
MPOL_F_RELATIVE_NODES = 1 << 14
MPOL_F_NUMA_BALANCING = 1 << 13
MPOL_MODE_FLAGS = MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES | MPOL_F_NUMA_BALANCING
MPOL_MF_STRICT = 1 << 0
MPOL_MF_MOVE = 1 << 1
MPOL_MF_MOVE_ALL = 1 << 2
MPOL_MF_LAZY = 1 << 3
MPOL_MF_INTERNAL = 1 << 4
MPOL_MF_VALID = MPOL_MF_STRICT | MPOL_MF_MOVE | MPOL_MF_MOVE_ALL
MPOL_F_MOF = 1 << 3
MPOL_F_MORON = 1 << 4
# mm/mempolicy.c's internal flags
MPOL_MF_DISCONTIG_OK = MPOL_MF_INTERNAL << 0
MPOL_MF_INVERT = MPOL_MF_INTERNAL << 1
MPOL_MF_WRLOCK = MPOL_MF_INTERNAL << 2

NUMA_NO_NODE = -1
MAX_NUMNODES = 1 << 10  # x86_64's CONFIG_NODES_SHIFT=10 (distribution kernels)
BITS_PER_LONG = 64

_READ = OpKind.READ


@dataclass(eq=False, slots=True)
class Mempolicy(SlabObject):
    """struct mempolicy: ``nodes`` and ``user_nodemask`` are node bitmasks."""

    refcnt: int = 0
    mode: int = MPOL_DEFAULT
    flags: int = 0
    home_node: int = NUMA_NO_NODE
    nodes: int = 0
    user_nodemask: int = 0

    def locations(self) -> tuple[Hashable, ...]:
        return ((MEMPOLICY, self.slot),)

    def __str__(self) -> str:
        return f"mempolicy#{self.slot}(mode {self.mode} nodes {self.nodes:#x})"


# -- lifetime (include/linux/mempolicy.h and the slow paths) ---------------------
def mpol_new(mm: MmStruct, mode: int, flags: int, nodes: int) -> Mempolicy | None | int:
    """Models mpol_new(): None for MPOL_DEFAULT, -EINVAL for a mode/mask
    mismatch, else a new policy with refcnt 1 (its nodes are set by
    mpol_set_nodemask)."""
    if mode == MPOL_DEFAULT:
        return -errno.EINVAL if nodes else None
    if mode == MPOL_PREFERRED:
        if not nodes:
            if flags & (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES):
                return -errno.EINVAL
            mode = MPOL_LOCAL
    elif mode == MPOL_LOCAL:
        if nodes or flags & (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES):
            return -errno.EINVAL
    elif not nodes:
        return -errno.EINVAL
    pol: Mempolicy = mm.system.policy_cachep.alloc("mpol_new")
    pol.refcnt, pol.mode, pol.flags, pol.home_node = 1, mode, flags, NUMA_NO_NODE
    pol.nodes = pol.user_nodemask = 0
    return pol


def mpol_set_nodemask(mm: MmStruct, pol: Mempolicy | None, nodes: int) -> int:
    """Models mpol_set_nodemask(): the mask meets the nodes with memory (no
    cpusets: all of them); BIND/INTERLEAVE/PREFERRED_MANY keep the
    intersection, PREFERRED its first node; an empty result is -EINVAL."""
    if pol is None or pol.mode == MPOL_LOCAL:
        return 0
    online = (1 << mm.system.nodes) - 1
    mask = nodes & online
    if pol.flags & (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES):
        pol.user_nodemask = nodes
    if not mask:
        return -errno.EINVAL
    pol.nodes = mask & -mask if pol.mode == MPOL_PREFERRED else mask
    return 0


def mpol_get(pol: Mempolicy | None) -> None:
    if pol is not None:
        pol.refcnt += 1
        touch((MEMPOLICY, pol.slot))


def mpol_put(mm: MmStruct, pol: Mempolicy | None, site: str) -> None:
    """mpol_put() / __mpol_put(): the last reference frees the policy."""
    if pol is None:
        return
    if pol.freed:
        debug.kasan_check(pol, site, "mempolicy")
        return
    pol.refcnt -= 1
    touch((MEMPOLICY, pol.slot))
    if pol.refcnt == 0:
        mm.system.policy_cachep.free(pol, site)


def mpol_dup(mm: MmStruct, old: Mempolicy | None) -> Mempolicy | None:
    """mpol_dup() / __mpol_dup(): a copy with its own reference."""
    if old is None:
        return None
    if old.freed:
        debug.kasan_check(old, "__mpol_dup", "mempolicy")
    new: Mempolicy = mm.system.policy_cachep.alloc("__mpol_dup")
    new.refcnt, new.mode, new.flags, new.home_node = 1, old.mode, old.flags, old.home_node
    new.nodes, new.user_nodemask = old.nodes, old.user_nodemask
    return new


def vma_dup_policy(src: VmAreaStruct, dst: VmAreaStruct) -> int:
    """vma_dup_policy(): the new VMA (a split half, a copy, a fork child)
    owns a duplicate of the source's policy."""
    dst.vm_policy = mpol_dup(src.vm_mm, src.vm_policy)
    return 0


def mpol_equal(a: Mempolicy | None, b: Mempolicy | None) -> bool:
    """mpol_equal() / __mpol_equal(): the same pointer, or the same mode,
    flags, home node and nodes (the user mask too for STATIC/RELATIVE)."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    if a.mode != b.mode or a.flags != b.flags or a.home_node != b.home_node:
        return False
    if a.flags & MPOL_MODE_FLAGS and a.user_nodemask != b.user_nodemask:
        return False
    return a.mode == MPOL_LOCAL or a.nodes == b.nodes


# -- the policy the fault path uses ------------------------------------------------
def __get_vma_policy(vma: VmAreaStruct) -> Mempolicy | None:
    """__get_vma_policy() without ->get_policy (shared policies are not modelled)."""
    pol: Mempolicy | None = vma.vm_policy
    return pol


async def get_vma_policy(vma: VmAreaStruct, addr: int) -> tuple[Mempolicy | None, int]:
    """Models get_vma_policy() (7.0): the VMA's policy (NULL: the task's,
    which for the model's tasks is the default local policy) and the
    interleave index.  The caller holds the VMA stable (the fault's VMA read
    lock or mmap_lock): reading the policy's fields is a step of its own, so
    a policy freed under a reader that lacks that protection is a KASAN
    use-after-free here."""
    pol = __get_vma_policy(vma)
    if pol is None:
        return None, 0
    await Op(_READ, (MEMPOLICY, pol.slot), "get_vma_policy: pol->mode", order=Order.PLAIN)
    if pol.freed:
        debug.kasan_check(pol, "get_vma_policy", "mempolicy")
    ilx = 0
    if pol.mode in (MPOL_INTERLEAVE, MPOL_WEIGHTED_INTERLEAVE):
        ilx = vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT)
    return pol, ilx


def _first_node(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def interleave_nid(pol: Mempolicy, ilx: int) -> int:
    """The ilx'th node of the policy's mask, wrapping (weights are all 1)."""
    nodes = [n for n in range(pol.nodes.bit_length()) if pol.nodes >> n & 1]
    return nodes[ilx % len(nodes)] if nodes else 0


def policy_node(pol: Mempolicy | None, ilx: int) -> int:
    """The node folio_alloc_mpol() allocates from for ``pol`` (policy_nodemask()
    and the zonelist walk from the local node, node 0 for the model's tasks)."""
    if pol is None or pol.mode == MPOL_LOCAL:
        return 0
    if pol.mode == MPOL_PREFERRED:
        return _first_node(pol.nodes)
    if pol.mode in (MPOL_INTERLEAVE, MPOL_WEIGHTED_INTERLEAVE):
        return interleave_nid(pol, ilx)
    preferred = pol.home_node if pol.home_node != NUMA_NO_NODE else 0
    return preferred if pol.nodes >> preferred & 1 else _first_node(pol.nodes)


def vma_migratable(vma: VmAreaStruct) -> bool:
    return not vma.vm_flags & (VmFlags.VM_IO | VmFlags.VM_PFNMAP)


# -- queue_pages_range(): the walk mbind makes --------------------------------------
@dataclass(eq=False)
class QueuePages:
    """struct queue_pages; ``pagelist`` holds (page, vpn) of isolated pages."""

    flags: int
    nmask: int
    start: int
    end: int
    pagelist: list[tuple[Page, int]] = field(default_factory=list)
    first: VmAreaStruct | None = None
    nr_failed: int = 0


def strictly_unmovable(flags: int) -> bool:
    return flags & (MPOL_MF_STRICT | MPOL_MF_MOVE | MPOL_MF_MOVE_ALL) == MPOL_MF_STRICT


def queue_folio_required(page: Page, qp: QueuePages) -> bool:
    return bool(qp.nmask >> page.nid & 1) == (not qp.flags & MPOL_MF_INVERT)


def migrate_folio_add(page: Page, vpn: int, qp: QueuePages) -> bool:
    """Isolate the page for migration: an anonymous page not mapped elsewhere
    (MOVE_ALL: even then); a shared one is left alone, which is no failure.
    Page-cache pages cannot be isolated in the model."""
    if qp.flags & MPOL_MF_MOVE_ALL or page.mapcount <= 1:
        if page.anon_vma is None or any(p is page for p, _ in qp.pagelist):
            return False
        page.refcount += 1  # folio_isolate_lru() takes a reference
        touch((PAGE_FRAME, page.pfn))
        qp.pagelist.append((page, vpn))
    return True


async def queue_folios_pte_range(walk: MmWalk, addr: int, end: int) -> int:
    """Models queue_folios_pte_range(): under the PTE page's lock, each
    present normal page on a node outside the policy is queued (or counted
    as a failure); STRICT without MOVE stops at the first one, -EIO."""
    mm, vma, qp = walk.mm, walk.vma, walk.private
    assert vma is not None and isinstance(qp, QueuePages)
    flags = qp.flags
    ptl = mm.ptl(addr)
    await ptl.lock()
    table = mm.pgtable
    for vpn in range(addr >> PAGE_SHIFT, end >> PAGE_SHIFT):
        pte = table.get(vpn)
        if pte is None or pte.page.zero_page:
            continue
        page = pte.page
        if page.freed:
            debug.kasan_check(page, "queue_folios_pte_range", "page")
        if not queue_folio_required(page, qp):
            continue
        if (not flags & (MPOL_MF_MOVE | MPOL_MF_MOVE_ALL) or not vma_migratable(vma)
                or not migrate_folio_add(page, vpn, qp)):
            qp.nr_failed += 1
            if strictly_unmovable(flags):
                break
    await ptl.unlock()
    if qp.nr_failed and strictly_unmovable(flags):
        return -errno.EIO
    return 0


def queue_pages_test_walk(walk: MmWalk, start: int, end: int) -> int:
    """Models queue_pages_test_walk(): a hole at the head, middle or tail of
    the range is -EFAULT unless DISCONTIG_OK; the pages are looked at only
    when STRICT or MOVE asks for it."""
    vma, qp = walk.vma, walk.private
    assert vma is not None and isinstance(qp, QueuePages)
    flags = qp.flags
    if qp.first is None:
        qp.first = vma
        if not flags & MPOL_MF_DISCONTIG_OK and qp.start < vma.vm_start:
            return -errno.EFAULT
    nxt = walk.mm.mm_mt.find(vma.vm_end)
    if (not flags & MPOL_MF_DISCONTIG_OK and vma.vm_end < qp.end
            and (nxt is None or vma.vm_end < nxt.vm_start)):
        return -errno.EFAULT
    if not vma_migratable(vma) and not flags & MPOL_MF_STRICT:
        return 1
    if flags & (MPOL_MF_STRICT | MPOL_MF_MOVE | MPOL_MF_MOVE_ALL):
        return 0
    return 1


queue_pages_walk_ops = MmWalkOps(walk_lock=PGWALK_RDLOCK, pmd_entry=queue_folios_pte_range,
                                 test_walk=queue_pages_test_walk)
queue_pages_lock_vma_walk_ops = MmWalkOps(walk_lock=PGWALK_WRLOCK, pmd_entry=queue_folios_pte_range,
                                          test_walk=queue_pages_test_walk)


async def queue_pages_range(mm: MmStruct, start: int, end: int, nodes: int, flags: int,
                            qp: QueuePages) -> int:
    """Models queue_pages_range(): -EFAULT for a range wholly in a hole, a
    callback's error, else the number of pages that could not be queued."""
    ops = queue_pages_lock_vma_walk_ops if flags & MPOL_MF_WRLOCK else queue_pages_walk_ops
    err = await walk_page_range(mm, start, end, ops, qp)
    if qp.first is None:
        err = -errno.EFAULT
    return err or qp.nr_failed


# -- applying the policy -----------------------------------------------------------
async def vma_replace_policy(vma: VmAreaStruct, pol: Mempolicy | None) -> int:
    """Models vma_replace_policy(): the VMA must be write-locked (readers in
    the fault path may be using the old policy until they drop the VMA
    lock); it gets a duplicate of ``pol`` and the old policy is put (freed,
    as it is the VMA's own)."""
    vma_assert_write_locked(vma)
    mm = vma.vm_mm
    new = mpol_dup(mm, pol)
    await Op(OpKind.WRITE, (VMA, vma.slot), "vma_replace_policy", order=Order.PLAIN)
    old = vma.vm_policy
    vma.vm_policy = new
    mpol_put(mm, old, "vma_replace_policy")
    return 0


async def mbind_range(vma: VmAreaStruct, prev: VmAreaStruct | None, start: int, end: int,
                      new_pol: Mempolicy | None) -> tuple[int, VmAreaStruct]:
    """Models mbind_range(): the part of ``vma`` in [start, end) takes the
    policy, merged with a neighbour of equal policy or split off
    (vma_modify_policy); returns (error, the new prev)."""
    from pervma.kernel.vma import vma_modify_policy

    vmend = min(end, vma.vm_end)
    if start > vma.vm_start:
        prev = vma
        vmstart = start
    else:
        vmstart = vma.vm_start
    if mpol_equal(vma.vm_policy, new_pol):
        return 0, vma
    r = await vma_modify_policy(prev, vma, vmstart, vmend, new_pol)
    if isinstance(r, int):
        return r, vma
    return await vma_replace_policy(r, new_pol), r


async def migrate_pages(mm: MmStruct, pagelist: list[tuple[Page, int, int | None]]) -> int:
    """migrate_pages() for the model's isolated anonymous pages, after
    mmap_lock is dropped: under the PTE lock, the PTE becomes a migration
    entry (not present: a racing access faults and waits for the PTL), the
    bytes go to a page on the target node, the PTE points at it.  A PTE that
    changed meanwhile (unmapped, COWed) leaves its page alone.  The
    isolation reference is dropped either way (putback_movable_pages(), also
    all that happens to a page whose target is None).  Secondary MMUs are
    told before the PTE changes, as try_to_migrate_one() does (an
    MMU_NOTIFY_CLEAR range around its walk; mm/rmap.c, 7.0).  Returns the
    pages not moved."""
    from pervma.kernel.memory import alloc_page, flush_tlb, put_page, set_pte_at

    failed = 0
    for page, vpn, nid in pagelist:
        if nid is None:
            put_page(mm, page, "putback_movable_pages")
            continue
        new = await alloc_page(mm, zero=False)
        new.nid = nid
        rng = mmu_notifier_range_init(MMU_NOTIFY_CLEAR, 0, mm, vpn << PAGE_SHIFT,
                                      (vpn + 1) << PAGE_SHIFT)
        await mmu_notifier_invalidate_range_start(rng)
        ptl = mm.ptl(vpn << PAGE_SHIFT)
        await ptl.lock()
        pte = mm.pgtable.get(vpn)
        if pte is None or pte.page is not page:
            await ptl.unlock()
            await mmu_notifier_invalidate_range_end(rng)
            put_page(mm, new, "migrate_pages: raced")
            failed += 1
        else:
            await set_pte_at(mm, vpn, None, "try_to_migrate_one: migration entry")
            await work("copy_page", "folio_migrate_copy")
            new.data = dict(page.data)
            new.anon_vma, new.index, new.mapcount = page.anon_vma, page.index, 1
            await set_pte_at(mm, vpn, Pte(new, pte.writable, pte.dirty, pte.readable),
                             "remove_migration_pte")
            page.mapcount -= 1
            touch((PAGE_FRAME, page.pfn))
            put_page(mm, page, "migrate_pages: unmapped")
            await ptl.unlock()
            await mmu_notifier_invalidate_range_end(rng)
            await flush_tlb(mm, "try_to_migrate: flush")
        put_page(mm, page, "putback_movable_pages")
    return failed


async def do_mbind(mm: MmStruct, start: int, length: int, mode: int, mode_flags: int, nmask: int,
                   flags: int) -> int:
    """Models do_mbind() (7.0): argument checks, mpol_new, mmap_write_lock,
    mpol_set_nodemask, queue_pages_range with MPOL_MF_WRLOCK (each VMA of the
    range write-locked before its pages are looked at), mbind_range on each
    VMA, then migration of the queued pages outside mmap_lock; an unmovable
    page with STRICT is -EIO.  The model's tasks lack CAP_SYS_NICE."""
    if flags & ~MPOL_MF_VALID:
        return -errno.EINVAL
    if flags & MPOL_MF_MOVE_ALL:
        return -errno.EPERM
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL
    if mode == MPOL_DEFAULT:
        flags &= ~MPOL_MF_STRICT
    length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1) & ULONG_MAX
    end = (start + length) & ULONG_MAX
    if end < start:
        return -errno.EINVAL
    if end == start:
        return 0
    new = mpol_new(mm, mode, mode_flags, nmask)
    if isinstance(new, int):
        return new
    if new is None:
        flags |= MPOL_MF_DISCONTIG_OK
    await mmap_write_lock(mm)
    err = mpol_set_nodemask(mm, new, nmask)
    if err:
        await mmap_write_unlock(mm)
        mpol_put(mm, new, "do_mbind: mpol_out")
        return err
    qp = QueuePages(flags | MPOL_MF_INVERT | MPOL_MF_WRLOCK, nmask, start, end)
    nr_failed = await queue_pages_range(mm, start, end, nmask, qp.flags, qp)
    targets: list[tuple[Page, int, int | None]] = []
    if nr_failed < 0:
        err, nr_failed = nr_failed, 0
    else:
        vma = mm.mm_mt.find(start)
        prev, _ = mm.mm_mt.prev_next(vma.vm_start, vma.vm_end) if vma is not None else (None, None)
        while vma is not None and vma.vm_start < end:
            err, prev = await mbind_range(vma, prev, start, end, new)
            if err:
                break
            vma = mm.mm_mt.find(prev.vm_end)
    for page, vpn in qp.pagelist:
        if err:  # putback_movable_pages(): the error path leaves the pages where they are
            targets.append((page, vpn, None))
            continue
        owner = mm.mm_mt.find_covering(vpn << PAGE_SHIFT)
        ilx = 0 if owner is None else owner.vm_pgoff + (vpn - (owner.vm_start >> PAGE_SHIFT))
        targets.append((page, vpn, policy_node(new, ilx)))
    await mmap_write_unlock(mm)
    if targets:
        nr_failed += await migrate_pages(mm, targets)
    if nr_failed and flags & MPOL_MF_STRICT:
        err = -errno.EIO
    mpol_put(mm, new, "do_mbind: mpol_out")
    return err


def sanitize_mpol_flags(mode: int) -> tuple[int, int, int]:
    """Models sanitize_mpol_flags(): (error, mode, mode flags)."""
    flags = mode & MPOL_MODE_FLAGS
    mode &= ~MPOL_MODE_FLAGS
    if mode & 0xFFFFFFFF >= MPOL_MAX:
        return -errno.EINVAL, mode, flags
    if flags & MPOL_F_STATIC_NODES and flags & MPOL_F_RELATIVE_NODES:
        return -errno.EINVAL, mode, flags
    if flags & MPOL_F_NUMA_BALANCING:
        if mode not in (MPOL_BIND, MPOL_PREFERRED_MANY):
            return -errno.EINVAL, mode, flags
        flags |= MPOL_F_MOF | MPOL_F_MORON
    return 0, mode, flags


def get_nodes(nmask: int, maxnode: int) -> tuple[int, int]:
    """Models get_nodes(): (error, nodes).  The mask is the caller's bitmap;
    ``maxnode - 1`` bits of it count, no more than a page of them, and bits
    at or above MAX_NUMNODES must be clear."""
    maxnode -= 1
    maxnode &= ULONG_MAX
    if maxnode == 0 or not nmask:
        return 0, 0
    if maxnode > PAGE_SIZE * 8:
        return -errno.EINVAL, 0
    nmask &= (1 << maxnode) - 1
    if nmask >> MAX_NUMNODES:
        return -errno.EINVAL, 0
    return 0, nmask


async def sys_mbind(mm: MmStruct, start: int, length: int, mode: int, nmask: int, maxnode: int,
                    flags: int) -> int:
    """SYSCALL_DEFINE6(mbind) -> kernel_mbind(): ``mode`` reaches
    sanitize_mpol_flags() as an int, ``flags`` is an unsigned int."""
    await work("syscall")
    lmode = int(mode) & 0xFFFFFFFF
    lmode = lmode - (1 << 32) if lmode & 0x80000000 else lmode
    err, lmode, mode_flags = sanitize_mpol_flags(lmode)
    if err:
        return err
    err, nodes = get_nodes(nmask, c_ulong(maxnode))
    if err:
        return err
    return await do_mbind(mm, c_ulong(start), c_ulong(length), lmode, mode_flags, nodes,
                          int(flags) & 0xFFFFFFFF)


__all__ = ["MPOL_BIND", "MPOL_DEFAULT", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES",
           "MPOL_INTERLEAVE", "MPOL_LOCAL", "MPOL_MF_MOVE", "MPOL_MF_MOVE_ALL", "MPOL_MF_STRICT",
           "MPOL_PREFERRED", "MPOL_PREFERRED_MANY", "Mempolicy", "do_mbind", "get_vma_policy",
           "mpol_equal", "mpol_put", "policy_node", "sys_mbind", "vma_dup_policy",
           "vma_replace_policy"]
