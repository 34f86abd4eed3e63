"""Every kind of shared location the model names, and where each one lives.

A location is a tuple whose first element is its kind (``(VM_REFCNT, slot)``,
``(PTE, mm, vpn)``); the model builds them from the names below, and the
timed simulator's cost model prices a step by its location's kind
(:data:`KINDS`: which cache line it sits on, whether it is per-CPU data).
A kind that is not named here is a defect: ``tests/sim`` runs every built-in
workload and every checker scenario and fails on any kind missing from
:data:`KINDS`.

Placements follow the structures of Linux 7.0 (``include/linux/mm_types.h``:
``vm_refcnt`` on its own cache line under SMP, ``vm_lock_seq`` beside the
VMA's first fields; the mmap_lock's seqcount beside the rwsem's owner and wait
list in ``mm_struct``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final


class Placement(enum.Enum):
    """Where a location's data lives, which is what a step on it costs."""

    LINE = "its own cache line"
    VMA_LINE = "the VMA's first cache line"
    REFCNT_LINE = "its own cache line under SMP, the VMA's first line under SMP=n"
    MMAP_LOCK_LINE = "the mmap_lock's cache line"
    PTE_LINE = "a page-table line of eight 8-byte PTEs"
    PER_CPU = "per-CPU data (never transferred)"
    PCP = "per-CPU page lists, refilled from the zone under its lock every batch"
    PAGE_FRAME = "a page this CPU just cleared or mapped (a hit)"


@dataclass(frozen=True, slots=True)
class LocationKind:
    """One kind: its name (the tuple's first element), where it lives, and
    whether its second element is an mm (touching it puts the CPU in that
    mm's cpumask, which TLB shootdowns IPI) or a VMA slot (SLUB hands a new
    VMA out of the allocating CPU's freelist: its lines start local)."""

    name: str
    placement: Placement
    doc: str
    mm: bool = False
    vma: bool = False


# -- the VMA and its lock -------------------------------------------------
VMA: Final = "vma"
VM_REFCNT: Final = "vm_refcnt"
VM_LOCK_SEQ: Final = "vm_lock_seq"
VMA_WRITER_WAIT: Final = "vma_writer_wait"
# -- the mm ----------------------------------------------------------------
MMAP_LOCK: Final = "mmap_lock"
MM_LOCK_SEQ: Final = "mm_lock_seq"
MM_USERS: Final = "mm_users"
MM_COUNT: Final = "mm_count"
MAPLE: Final = "maple"
MAPLE_NODE: Final = "maple_node"
PAGE_TABLE_LOCK: Final = "page_table_lock"
PTE: Final = "pte"
PTL: Final = "ptl"
TLB: Final = "tlb"
MMU_NOTIFIERS: Final = "mmu_notifiers"
MMU_NOTIFIER_LOCK: Final = "mmu_notifier_lock"
MM_ALL_LOCKS_MUTEX: Final = "mm_all_locks_mutex"
MIRROR: Final = "mirror"
# -- pages, files, rmap ----------------------------------------------------
PAGE_FRAME: Final = "page"  # a page frame by pfn (its lock, counts and contents)
ZONE: Final = "zone"
LRU: Final = "lru"
PAGE_CACHE: Final = "page_cache"
I_SIZE: Final = "i_size"
I_MMAP_RWSEM: Final = "i_mmap_rwsem"
INVALIDATE_LOCK: Final = "invalidate_lock"
ANON_VMA: Final = "anon_vma"
ANON_VMA_REFCOUNT: Final = "anon_vma_refcount"
MEMPOLICY: Final = "mempolicy"
KMEM_CACHE: Final = "kmem_cache"
# -- RCU, tasks, userfaultfd -----------------------------------------------
RCU: Final = "rcu"
RCU_GP: Final = "rcu_gp"
SIGNAL: Final = "signal"
UFFD_CTX: Final = "uffd_ctx"
UFFD_WQH: Final = "uffd_wqh"
UFFD_EVT: Final = "uffd_evt"
UFFD_MAP_CHANGING_LOCK: Final = "uffd_map_changing_lock"

_P = Placement
KINDS: Final[dict[str, LocationKind]] = {k.name: k for k in (
    LocationKind(VMA, _P.VMA_LINE, "a VMA's fields (vm_start, vm_end, vm_mm, anon_vma...)",
                 vma=True),
    LocationKind(VM_REFCNT, _P.REFCNT_LINE, "the VMA lock's reference count", vma=True),
    LocationKind(VM_LOCK_SEQ, _P.VMA_LINE, "the VMA's write-lock sequence number", vma=True),
    LocationKind(VMA_WRITER_WAIT, _P.LINE, "mm->vma_writer_wait, the rcuwait of a VMA writer"),
    LocationKind(MMAP_LOCK, _P.LINE, "mm->mmap_lock (count, owner, wait list)", mm=True),
    LocationKind(MM_LOCK_SEQ, _P.MMAP_LOCK_LINE, "mm->mm_lock_seq", mm=True),
    LocationKind(MM_USERS, _P.LINE, "mm->mm_users"),
    LocationKind(MM_COUNT, _P.LINE, "mm->mm_count"),
    LocationKind(MAPLE, _P.LINE, "the maple tree's root (mm->mm_mt)", mm=True),
    LocationKind(MAPLE_NODE, _P.LINE, "one maple node, by mm and node slot"),
    LocationKind(PAGE_TABLE_LOCK, _P.LINE, "mm->page_table_lock"),
    LocationKind(PTE, _P.PTE_LINE, "a PTE, by mm and virtual page number", mm=True),
    LocationKind(PTL, _P.LINE, "a page-table page's split lock", mm=True),
    LocationKind(TLB, _P.LINE, "the mm's TLB (flush_tlb_mm_range work)", mm=True),
    LocationKind(MMU_NOTIFIERS, _P.LINE, "mm->notifier_subscriptions"),
    LocationKind(MMU_NOTIFIER_LOCK, _P.LINE, "the subscriptions' spinlock"),
    LocationKind(MM_ALL_LOCKS_MUTEX, _P.LINE, "mm_all_locks_mutex (mm_take_all_locks)"),
    LocationKind(MIRROR, _P.LINE, "a secondary MMU's page table (an mmu notifier user)"),
    LocationKind(PAGE_FRAME, _P.PAGE_FRAME, "a page frame by pfn: folio lock, counts, data"),
    LocationKind(ZONE, _P.PCP, "the page allocator (per-CPU lists over the zone)"),
    LocationKind(LRU, _P.PCP, "the per-CPU LRU batches"),
    LocationKind(PAGE_CACHE, _P.LINE, "a file's page-cache slot, by mapping and index"),
    LocationKind(I_SIZE, _P.LINE, "inode->i_size"),
    LocationKind(I_MMAP_RWSEM, _P.LINE, "mapping->i_mmap_rwsem"),
    LocationKind(INVALIDATE_LOCK, _P.LINE, "mapping->invalidate_lock"),
    LocationKind(ANON_VMA, _P.LINE, "anon_vma->rwsem"),
    LocationKind(ANON_VMA_REFCOUNT, _P.LINE, "anon_vma->refcount"),
    LocationKind(MEMPOLICY, _P.LINE, "a struct mempolicy"),
    LocationKind(KMEM_CACHE, _P.LINE, "a slab cache's freelist (hidden writes only)"),
    LocationKind(RCU, _P.PER_CPU, "the RCU read-side nesting and grace-period wait"),
    LocationKind(RCU_GP, _P.PER_CPU, "grace-period state (hidden reads and writes only)"),
    LocationKind(SIGNAL, _P.LINE, "a task's pending signals"),
    LocationKind(UFFD_CTX, _P.LINE, "a userfaultfd context"),
    LocationKind(UFFD_WQH, _P.LINE, "a userfaultfd context's fault wait queue"),
    LocationKind(UFFD_EVT, _P.LINE, "a userfaultfd context's event wait queue"),
    LocationKind(UFFD_MAP_CHANGING_LOCK, _P.LINE, "ctx->map_changing_lock"),
)}


def kind_of(loc: object) -> str | None:
    """The kind of a location (None for a location that is not a tuple)."""
    if isinstance(loc, tuple) and loc and isinstance(loc[0], str):
        return loc[0]
    return None
