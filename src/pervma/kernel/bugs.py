"""The catalogue of historical per-VMA locking bugs (bugs.md).

Each bug is a switch in ``Config.bugs``; turning it on changes one code site
of the model (drop, reorder or weaken one step).  Every site asks
``config.bug("Bxx")`` (an id outside this catalogue is an assertion failure)
in one branch of the mainline function: a switch that drops a step guards
it, and a historical alternate body lives in its own function beside the
mainline one, named after it with the bug id (``_vma_refcount_put_b16``,
``_expand_downwards_store_b02``), so the mainline reads as 7.0.  The model's
invariants (``debug.py``) never look at these switches.  Where Linux 7.0 no
longer has the historical site, the switch re-creates the historical code at
the nearest 7.0 site; ``site`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bug:
    id: str
    title: str
    fixed_in: str
    site: str
    mutation: str
    invariant: str
    scenario: str


BUGS: tuple[Bug, ...] = (
    Bug("B02", "StackRot (CVE-2023-3269): stack expansion under mmap_lock read, maple node freed by RCU "
        "under a reader that holds only mmap_read_lock", "6.5 (9471f1f2f502, 8d7071af8907)",
        "mmap_lock.py lock_mm_and_find_vma(): the stack is expanded without upgrading to the write "
        "lock; as in 6.1-6.4 expand_downwards() then takes no VMA write lock",
        "stack expansion takes mmap_lock for read instead of write",
        "KASAN use-after-free of a maple node (I4, I5)", "stack-growth-vs-fault"),
    Bug("B04", "fork: parent VMAs not write-locked while their page tables are copied (the 6.4 corruption)",
        "6.5-rc1 / 6.4.2 (fb49c455323f)",
        "mmap.py dup_mmap(): vma_start_write_killable(mpnt) dropped",
        "dup_mmap omits vma_start_write on each parent VMA before copying it",
        "fork snapshot: the child's memory matches no moment of the parent's (I11)", "fork-vs-fault"),
    Bug("B05", "A newly mapped VMA published in the tree, then still modified",
        "6.5-rc1 / 6.4.2 (33313a747e81)",
        "mmap.py __mmap_new_vma(): the VMA is stored without vma_start_write(); 6.4's tree store had no "
        "attach-time write-lock assertion, so vma_mark_attached() skips it under this switch",
        "mmap_region stores the VMA into the tree without vma_start_write",
        "a VMA modified while a fault holds its read lock (I1)", "mmap-vs-fault"),
    Bug("B09", "lock_vma_under_rcu() judged vma->anon_vma before taking the VMA lock",
        "6.5-rc4 / 6.4.9 (657b5146955e)",
        "mmap_lock.py lock_vma_under_rcu(): the anon_vma precondition is read before vma_start_read(); "
        "as in 6.4 the fault then prepares an anon_vma without mmap_lock (memory.py vmf_anon_prepare)",
        "evaluate the anon_vma precondition before vma_start_read",
        "anon_vma prepared without mmap_lock: find_mergeable_anon_vma's mmap_assert_locked (I3)",
        "mremap-dontunmap-vs-fault"),
    Bug("B12", "mm_lock_seq/vm_lock_seq without release/acquire: a reader that sees the write session "
        "ended may still see the VMA as it was (Jann Horn, 2023)",
        "6.5 (b1f02b95758d, \"mm: fix memory ordering for mm_lock_seq and vm_lock_seq\")",
        "mmap_lock.py mm_lock_seqcount_end(): the sequence bumped with WRITE_ONCE() (no smp_wmb() "
        "before it); vma_start_read(): the late check reads it with READ_ONCE() instead of "
        "raw_read_seqcount()'s acquire",
        "the seqcount write-end release and the late check's acquire weakened to ONCE",
        "fault served on a VMA that no longer covers the address (stale vm_start/vm_end, I10); "
        "only under --memory-model lkmm",
        "uffd-register-vs-fault"),
    Bug("B13", "vma_start_read() could succeed on a VMA detached while it was being locked",
        "6.5 (Suren Baghdasaryan, June 2023)",
        "mmap_lock.py vma_start_read(): the bounded increment does not refuse a zero count",
        "taking the read lock does not fail on a detached VMA",
        "fault served on a detached VMA (I3, I6)", "fault-vs-munmap"),
    Bug("B16", "A reader's refcount put woke the writer through a recycled vma->vm_mm (CVE-2025-38554)",
        "6.17-rc1 / 6.16.1 / 6.15.10 (9bbffee67ffd)",
        "mmap_lock.py vma_refcount_put()/vma_start_read(): vm_mm read after the decrement and the foreign "
        "mm not pinned with mmgrab()",
        "vma_refcount_put dereferences vma->vm_mm after the decrement",
        "KASAN use-after-free of a foreign mm_struct (I4)", "vma-reuse-by-another-mm"),
    Bug("B17", "SLAB_TYPESAFE_BY_RCU identity re-validation: no vm_mm check after locking",
        "folded into the 6.15 series (3104138517fc)",
        "mmap_lock.py vma_start_read(): the vm_mm == mm check dropped",
        "lock_vma_under_rcu omits the vm_mm == mm check after locking",
        "fault served on a VMA of another mm (I6)", "vma-reuse-same-address"),
    Bug("B18", "vma_mark_detached() must wait for transient readers (refcount design, 6.15)",
        "6.15 development (vma_mark_detached -> __vma_enter_locked)",
        "mmap_lock.py vma_mark_detached(): returns after the decrement without excluding readers",
        "vma_mark_detached decrements the refcount without waiting for it to drain",
        "refcount corruption on a reused VMA / fault on a detached VMA (I4, I8)", "detach-vs-transient-reader"),
)

BUG_IDS = tuple(b.id for b in BUGS)


def get_bug(bug_id: str) -> Bug:
    for b in BUGS:
        if b.id == bug_id.upper():
            return b
    raise KeyError(bug_id)
