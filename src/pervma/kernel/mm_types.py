"""mm_struct, vm_area_struct, anon_vma, struct page and files.

Objects live in kmem_caches (``slab.py``): a stale pointer to a freed object
is detectable (plain caches) or sees a recycled object (VMAs, whose cache is
SLAB_TYPESAFE_BY_RCU).  Only the lock fields are shared memory a reader may
touch without a lock; they are atomics whose every access is a step.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pervma.kernel.atomic import UINT_MAX, Atomic, Refcount, SeqCount
from pervma.kernel.locks import RcuWait, RwSemaphore, SpinLock
from pervma.kernel.slab import SlabObject
from pervma.sched import Op, OpKind, StepCache
from pervma.sched.locations import (
    ANON_VMA,
    ANON_VMA_REFCOUNT,
    I_MMAP_RWSEM,
    INVALIDATE_LOCK,
    MM_COUNT,
    MM_LOCK_SEQ,
    MM_USERS,
    MMAP_LOCK,
    PAGE_FRAME,
    PAGE_TABLE_LOCK,
    PTL,
    VM_LOCK_SEQ,
    VM_REFCNT,
    VMA,
    VMA_WRITER_WAIT,
)
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.config import Config
    from pervma.kernel.maple_tree import MapleTree

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE = PAGE_SIZE
PAGE_MASK = ~(PAGE_SIZE - 1)
PMD_SHIFT = 21
TASK_SIZE = 0x7FFFFFFFF000  # x86_64 47-bit user space

_READ = OpKind.READ


class VmFlags(enum.IntFlag):
    """vm_flags with the kernel's bit values (include/linux/mm.h)."""

    VM_NONE = 0
    VM_READ = 0x1
    VM_WRITE = 0x2
    VM_EXEC = 0x4
    VM_SHARED = 0x8
    VM_MAYREAD = 0x10
    VM_MAYWRITE = 0x20
    VM_MAYEXEC = 0x40
    VM_MAYSHARE = 0x80
    VM_GROWSDOWN = 0x100
    VM_UFFD_MISSING = 0x200  # registered with userfaultfd for missing pages
    VM_PFNMAP = 0x400
    VM_UFFD_WP = 0x1000  # registered with userfaultfd for write protection
    VM_LOCKED = 0x2000
    VM_IO = 0x4000
    VM_SEQ_READ = 0x8000
    VM_RAND_READ = 0x10000
    VM_DONTCOPY = 0x20000
    VM_DONTEXPAND = 0x40000
    VM_LOCKONFAULT = 0x80000
    VM_ACCOUNT = 0x100000
    VM_NORESERVE = 0x200000
    VM_SYNC = 0x800000
    VM_WIPEONFORK = 0x2000000
    VM_DONTDUMP = 0x4000000
    VM_SOFTDIRTY = 0x8000000
    VM_MIXEDMAP = 0x10000000
    VM_HUGEPAGE = 0x20000000
    VM_NOHUGEPAGE = 0x40000000
    VM_MERGEABLE = 0x80000000

    def __and__(self, other: int) -> VmFlags:
        """``Flag.__and__`` with the same result, minus the enum machinery
        (a flags test is on the fault path): a value seen before is its
        cached member, any other goes through the constructor."""
        value = int.__and__(self, other)
        if value is NotImplemented:
            return value
        member = _VMFLAGS_BY_VALUE.get(value)
        return member if member is not None else VmFlags(value)

    __rand__ = __and__


_VMFLAGS_BY_VALUE: dict[int, VmFlags] = VmFlags._value2member_map_  # type: ignore[assignment]

VM_ACCESS_FLAGS = VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_EXEC
VM_SPECIAL = VmFlags.VM_IO | VmFlags.VM_DONTEXPAND | VmFlags.VM_PFNMAP | VmFlags.VM_MIXEDMAP
VM_STICKY = VmFlags.VM_SOFTDIRTY
VM_LOCKED_MASK = VmFlags.VM_LOCKED | VmFlags.VM_LOCKONFAULT


@dataclass(eq=False, slots=True)
class VmOperations:
    """The parts of vm_operations_struct the model consults."""

    name: str
    has_map_pages: bool = True  # filemap_map_pages: faults may run under the VMA lock
    has_close: bool = False
    special: str | None = None  # "tcp", "binder": the driver a kernel caller checks for


@dataclass(eq=False, slots=True)
class File(SlabObject):
    """A file (or shmem object) with a page cache: the inode and its
    address_space in one.  ``i_size`` is the size truncate changes (the
    fault compares against it); ``npages`` is the size it was created with.
    ``i_mmap`` is the file's VMA interval tree (kernel/interval_tree.py),
    changed only under ``i_mmap_rwsem`` held for write; ``invalidate_lock``
    keeps page-cache fills out while truncate removes pages."""

    path: str = ""
    npages: int = 0
    i_size: int = 0
    inode: int = 0
    dev: str = "00:00"
    shmem: bool = False
    resident: bool = False  # every page already in the page cache (written earlier)
    hugetlb_shift: int = 0  # a hugetlbfs file (anonymous MAP_HUGETLB): log2 of its page size
    vm_ops: VmOperations | None = None
    pages: dict[int, Page] = field(default_factory=dict)  # page cache by index
    contents: dict[int, dict[int, int]] = field(default_factory=dict)  # bytes on "disk"
    i_mmap: list[VmAreaStruct] = field(default_factory=list)  # by vm_pgoff: vma_interval_tree
    i_mmap_rwsem: RwSemaphore = field(default_factory=lambda: RwSemaphore((I_MMAP_RWSEM, -1), "i_mmap_rwsem"))
    invalidate_lock: RwSemaphore = field(
        default_factory=lambda: RwSemaphore((INVALIDATE_LOCK, -1), "invalidate_lock"))
    as_mm_all_locks: bool = False  # AS_MM_ALL_LOCKS in mapping->flags (mm_take_all_locks)


@dataclass(eq=False, slots=True)
class AnonVma(SlabObject):
    """struct anon_vma (include/linux/rmap.h, 6.2+): the rmap root for
    anonymous pages.  ``rwsem`` is taken on the root only; ``refcount`` keeps
    the object (and a child keeps its root); ``num_children`` and
    ``num_active_vmas`` decide reuse on fork; ``rb_root`` is the interval tree
    of the VMAs linked to it through anon_vma_chains (a list here, in link
    order).  ``was_cloned`` and ``was_unlinked`` are the two observations
    tools/testing/vma makes.  The lock and the refcount are set up once per
    object by the cache's constructor, as anon_vma_ctor() does for a
    SLAB_TYPESAFE_BY_RCU cache."""

    root: AnonVma | None = None
    parent: AnonVma | None = None
    refcount: Atomic = field(default_factory=lambda: Atomic((ANON_VMA_REFCOUNT, -1)))
    rwsem: RwSemaphore = field(default_factory=lambda: RwSemaphore((ANON_VMA, -1), "anon_vma"))
    num_children: int = 0
    num_active_vmas: int = 0
    rb_root: list[VmAreaStruct] = field(default_factory=list)
    was_cloned: bool = False
    was_unlinked: bool = False
    # the mark mm_take_all_locks() keeps in the low bit of the root's rb_root
    mm_all_locks_mark: bool = False

    def locations(self) -> tuple[Hashable, ...]:
        return ((ANON_VMA, self.slot), (ANON_VMA_REFCOUNT, self.slot))


@dataclass(eq=False, slots=True)
class Page(SlabObject):
    """A page frame holding the bytes user code stores (sparse: unset bytes are 0)."""

    data: dict[int, int] = field(default_factory=dict)
    refcount: int = 0
    mapcount: int = 0
    anon_vma: AnonVma | None = None
    mapping: File | None = None
    index: int = 0
    zero_page: bool = False
    locked: Any = None  # PG_locked: the task holding the folio lock (kernel/filemap.py)
    nid: int = 0  # the NUMA node the frame sits on (page_to_nid())

    @property
    def pfn(self) -> int:
        return self.slot

    def locations(self) -> tuple[Hashable, ...]:
        return ((PAGE_FRAME, self.slot),)


@dataclass(eq=False, slots=True)
class Pte:
    page: Page
    writable: bool
    dirty: bool = False
    readable: bool = True
    uffd_wp: bool = False  # _PAGE_UFFD_WP: write-protected for userfaultfd (never writable)


# vm_refcnt's values (include/linux/mm_types.h, 7.0): 0 detached, 1 attached
# and unlocked, 1 + n with n readers; a writer or detacher excluding readers
# adds the FLAG (bit 30), and readers may take at most VM_REFCNT_LIMIT.
VM_REFCNT_EXCLUDE_READERS_BIT = 30
VM_REFCNT_EXCLUDE_READERS_FLAG = 1 << VM_REFCNT_EXCLUDE_READERS_BIT
VM_REFCNT_LIMIT = VM_REFCNT_EXCLUDE_READERS_FLAG - 1


@dataclass(eq=False, slots=True)
class VmAreaStruct(SlabObject):
    """struct vm_area_struct.  ``vm_refcnt`` and ``vm_lock_seq`` are the
    per-VMA lock; ``vm_lock_seq`` is read and written as a step on its own
    location (it sits beside vm_refcnt only with SMP=n)."""

    vm_mm: MmStruct = None  # type: ignore[assignment]  # set by vm_area_alloc
    vm_start: int = 0
    vm_end: int = 0
    vm_pgoff: int = 0
    vm_flags: VmFlags = VmFlags.VM_NONE
    vm_file: File | None = None
    vm_ops: VmOperations | None = None
    anon_vma: AnonVma | None = None
    anon_vma_chain: list[AnonVma] = field(default_factory=list)
    vm_private_data: Any = None
    vm_policy: Any = None  # struct mempolicy (mempolicy.py): NULL is the task's/default policy
    vm_userfaultfd_ctx: Any = None
    anon_name: str | None = None
    vm_refcnt: Refcount = field(default_factory=lambda: Refcount((VM_REFCNT, -1)))
    vm_lock_seq: int = UINT_MAX
    debug_readers: int = 0  # successful read locks now held (for the exclusion check)
    read_steps: StepCache = field(default_factory=StepCache, repr=False)  # read_step()'s

    def __str__(self) -> str:
        return f"vma#{self.slot}[{self.vm_start:#x}-{self.vm_end:#x}]"

    def read_step(self, what: str, label: str, also: Hashable | None = None,
                  order: Order = Order.UNSPECIFIED) -> Op:
        """The READ step ``Op(READ, (what, slot), label, also=also, order=order)``
        on this VMA ("vma": its fields; "vm_lock_seq"), made once per label
        and awaited at every use: the slot is the object's for good, and
        ``also`` (a reader's mm_lock_seq) is re-checked, as a recycled VMA may
        meet another mm.  One label is one site, hence one ordering."""
        ops = self.read_steps.ops
        op = ops.get(label)
        if op is None or op.also is not also:
            op = ops[label] = Op(_READ, (what, self.slot), label, None, None, False,
                                             also, order=order)
        return op

    def locations(self) -> tuple[Hashable, ...]:
        return ((VMA, self.slot), (VM_REFCNT, self.slot), (VM_LOCK_SEQ, self.slot))

    def pages(self) -> int:
        return (self.vm_end - self.vm_start) >> PAGE_SHIFT

    def is_anonymous(self) -> bool:
        return self.vm_file is None and self.vm_ops is None

    def is_fork_child(self) -> bool:
        return self.anon_vma is not None and len(self.anon_vma_chain) > 1

    @property
    def lock_seq_loc(self) -> tuple[str, int]:
        return (VM_LOCK_SEQ, self.slot)


def vma_fault_fields(vma: VmAreaStruct) -> tuple[int, int, VmFlags, int]:
    """What a fault reads of its VMA once it holds a reference (the vm_mm
    check, the range check, the flags), as one value: the weak location
    ``(VMA, slot)`` under LKMM (``sched.memory``); vm_mm as its mm's id."""
    return (vma.vm_start, vma.vm_end, vma.vm_flags, vma.vm_mm.id)


def vma_lock_seq(vma: VmAreaStruct) -> int:
    """vma->vm_lock_seq, as the memory layer reads it back."""
    return vma.vm_lock_seq


@dataclass(eq=False)
class MmStruct(SlabObject):
    """struct mm_struct.  ``mm_users``/``mm_count`` are the two lifetimes:
    exit_mmap runs when the last user goes, the struct is freed (poisoned)
    when the last mmgrab reference is dropped."""

    id: int = 0
    config: Config = None  # type: ignore[assignment]  # set by System
    mm_users: Atomic = field(default_factory=lambda: Atomic((MM_USERS, -1), 1))
    mm_count: Refcount = field(default_factory=lambda: Refcount((MM_COUNT, -1), 1))
    mmap_lock: RwSemaphore = field(default_factory=lambda: RwSemaphore((MMAP_LOCK, -1)))
    mm_lock_seq: SeqCount = field(default_factory=lambda: SeqCount((MM_LOCK_SEQ, -1)))
    vma_writer_wait: RcuWait = field(default_factory=lambda: RcuWait((VMA_WRITER_WAIT, -1)))
    page_table_lock: SpinLock = field(default_factory=lambda: SpinLock((PAGE_TABLE_LOCK, -1)))
    mm_mt: MapleTree = None  # type: ignore[assignment]
    map_count: int = 0
    pgtable: dict[int, Pte] = field(default_factory=dict)
    ptls: dict[int, SpinLock] = field(default_factory=dict)
    mmap_base: int = 0
    start_brk: int = 0
    brk: int = 0
    start_stack: int = 0
    total_vm: int = 0
    exited: bool = False
    system: Any = None
    cpus: set[int] = field(default_factory=set)
    # debug.py's fork-snapshot record: memory before fork and the stores since
    fork_log: list[tuple[dict[int, int], list[tuple[int, int]]]] | None = None
    notifier_subscriptions: Any = None  # mmu_notifier.py's MmuNotifierSubscriptions

    def __str__(self) -> str:
        return f"mm#{self.id}"

    def locations(self) -> tuple[Hashable, ...]:
        return tuple((name, self.id) for name in (
            "mm_users", "mm_count", "mmap_lock", "mm_lock_seq", "vma_writer_wait", "maple"))

    def ptl(self, address: int) -> SpinLock:
        """pte_lockptr(): the split page-table lock of the PTE page covering address."""
        key = address >> PMD_SHIFT
        lock = self.ptls.get(key)
        if lock is None:
            lock = SpinLock((PTL, self.id, key), "ptl")
            self.ptls[key] = lock
        return lock
