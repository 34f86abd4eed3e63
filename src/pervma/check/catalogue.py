"""The bug catalogue as the checker sees it: each historical bug of
``bugs.md``, the scenario that exposes it and the preset it is run under.

The switches themselves live in the model (``kernel/bugs.py``, read from
``Config.bugs``); this table only says how to find each one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pervma.config import Config
from pervma.errors import UsageError

#: What a bug may need of the kernel configuration, with the one-line reason a
#: preset lacking it cannot show the bug.  The checker confirms each reason:
#: under such a preset the bug's scenario, switch on, explores completely and
#: cleanly (the report's bug x preset matrix shows it).
NEEDS: dict[str, tuple[Callable[[Config], bool], str]] = {
    "per-vma-lock": (lambda c: c.PER_VMA_LOCK,
                     "needs per-VMA locks (PER_VMA_LOCK=n: every fault and lookup takes "
                     "mmap_lock)"),
    "smp": (lambda c: c.SMP,
            "needs two CPUs (SMP=n: the one CPU sees every store in program order, so a weak "
            "read reads the latest write)"),
    "preemption": (lambda c: c.SMP or c.PREEMPT,
                   "needs preemption inside the kernel (SMP=n, PREEMPT=n: a thread gives up "
                   "the CPU only where it sleeps)"),
}


@dataclass(frozen=True, slots=True)
class BugEntry:
    """One catalogued bug; ``needs`` names the :data:`NEEDS` its race depends on."""

    id: str
    title: str
    affected: str
    fix: str
    mutation: str
    scenario: str
    preset: str = "universal"
    needs: tuple[str, ...] = ("per-vma-lock", "preemption")
    memory_model: str = "sc"  # "lkmm": a weak-memory bug, found only under LKMM

    def cannot_occur(self, cfg: Config) -> str | None:
        """Why this bug cannot occur under ``cfg``, or None when it must be found."""
        for need in self.needs:
            holds, why = NEEDS[need]
            if not holds(cfg):
                return why
        return None


CATALOGUE: dict[str, BugEntry] = {
    b.id: b
    for b in (
        BugEntry("B02", "StackRot (CVE-2023-3269): stack expansion replaces a maple node under "
                 "mmap_read_lock; a reader holding only mmap_read_lock uses the freed node",
                 "6.1-6.4.0", "8d7071af8907 mm: always expand the stack with the mmap write lock",
                 "expand_stack takes mmap_lock for read instead of write",
                 # the maple tree and mmap_read_lock only: legacy kernels have it too
                 "stack-growth-vs-fault", needs=("preemption",)),
        BugEntry("B04", "fork does not write-lock parent VMAs while copying page tables "
                 "(6.4 memory corruption)", "6.4.0-6.4.1",
                 "fb49c455323f fork: lock VMAs of the parent process when forking",
                 "dup_mmap omits vma_start_write on each parent VMA", "fork-vs-fault"),
        BugEntry("B05", "newly mapped VMA published in the tree, then still modified",
                 "6.4 (live from 6.6)", "33313a747e81 mm: lock newly mapped VMA which can be "
                 "modified after it becomes visible",
                 "mmap_region stores the VMA before vma_start_write", "mmap-vs-fault"),
        BugEntry("B09", "lock_vma_under_rcu checks vma->anon_vma before taking the VMA lock",
                 "6.4-6.4.8", "657b5146955e mm: lock_vma_under_rcu() must check vma->anon_vma "
                 "under vma lock", "the anon_vma precondition is evaluated before vma_start_read",
                 "mremap-dontunmap-vs-fault"),
        BugEntry("B12", "mm_lock_seq/vm_lock_seq without release/acquire: a reader that sees the "
                 "write session ended reads the VMA as it was before it (weak memory)",
                 "6.4-6.4.x", "b1f02b95758d mm: fix memory ordering for mm_lock_seq and "
                 "vm_lock_seq",
                 "the seqcount write end and the late check's read weakened to ONCE",
                 "uffd-register-vs-fault", needs=("per-vma-lock", "smp"), memory_model="lkmm"),
        BugEntry("B13", "vma_start_read succeeds on a VMA detached while it was locking",
                 "6.4-6.5", "mm: change vma_start_read to fail if VMA got detached from under it",
                 "post-lock recheck uses the current mm_lock_seq, caller skips the detached check",
                 "fault-vs-munmap"),
        BugEntry("B16", "reader's refcount put wakes the writer through a recycled vma->vm_mm "
                 "(CVE-2025-38554)", "6.15-6.16.0",
                 "9bbffee67ffd mm: fix a UAF when vma->mm is freed after vma->vm_refcnt got dropped",
                 "vma_refcount_put dereferences vma->vm_mm after the decrement",
                 "vma-reuse-by-another-mm"),
        BugEntry("B17", "SLAB_TYPESAFE_BY_RCU reuse by another mm at the same address is not "
                 "re-validated", "6.15 development (v5)", "folded into 3104138517fc",
                 "lock_vma_under_rcu omits the vm_mm == mm check after locking",
                 "vma-reuse-same-address"),
        BugEntry("B18", "vma_mark_detached does not wait for transient readers (refcount design)",
                 "6.15 development", "vma_mark_detached -> __vma_enter_locked(detaching)",
                 "vma_mark_detached decrements vm_refcnt without waiting for it to drain",
                 "detach-vs-transient-reader"),
    )
}


def get_bug(bug_id: str) -> BugEntry:
    key = bug_id.upper()
    if key not in CATALOGUE:
        raise UsageError(f"unknown bug {bug_id!r}; choose one of {', '.join(CATALOGUE)}")
    return CATALOGUE[key]


def model_switches() -> dict[str, str]:
    """The bug switches the model implements (``kernel/bugs.py``), id -> text."""
    try:
        from pervma.kernel import bugs
    except ImportError:
        return {}
    out: dict[str, str] = {}
    for bug in getattr(bugs, "BUGS", ()):
        out[str(bug.id)] = str(getattr(bug, "site", "") or getattr(bug, "title", ""))
    return out
