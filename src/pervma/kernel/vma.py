"""VMA surgery (mm/vma.c): merge, expand, shrink, split, modify, link and the
munmap gather/complete phases.

The merge rules follow mm/vma.c as tools/testing/vma pins them (see
vma-merge-rules.md): decide first, then write-lock only the VMAs that take
part, then commit.  Every change a lockless reader could observe is a step:
field updates of a VMA (``("vma", slot)``) and publishing the tree.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pervma.kernel import debug
from pervma.kernel.filemap import i_mmap_lock_write, i_mmap_unlock_write
from pervma.kernel.interval_tree import vma_interval_tree_insert, vma_interval_tree_remove
from pervma.kernel.memory import zap_page_range
from pervma.kernel.mempolicy import mpol_equal, mpol_put, vma_dup_policy
from pervma.kernel.mm import check_attached_vma_store, vm_flags_set
from pervma.kernel.mm_types import (
    PAGE_SHIFT,
    VM_SPECIAL,
    VM_STICKY,
    AnonVma,
    File,
    VmFlags,
    vma_fault_fields,
)
from pervma.kernel.mmap_lock import (
    mmap_assert_write_locked,
    mmap_read_unlock,
    mmap_write_downgrade,
    vma_assert_write_locked,
    vma_mark_attached,
    vma_mark_detached,
    vma_start_write,
)
from pervma.kernel.rmap import (
    anon_vma_clone,
    anon_vma_interval_tree_post_update_vma,
    anon_vma_interval_tree_pre_update_vma,
    anon_vma_lock_write,
    anon_vma_unlock_write,
    unlink_anon_vmas,
)
from pervma.kernel.task import current_task, fatal_signal_pending
from pervma.kernel.util import vm_unacct_memory
from pervma.kernel.vma_init import vm_area_dup, vm_area_free
from pervma.sched import Op, OpKind
from pervma.sched.locations import VMA
from pervma.sched.memory import store
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct


def PHYS_PFN(x: int) -> int:  # noqa: N802 - the kernel's name
    return x >> PAGE_SHIFT


class VmaMergeState(enum.Enum):
    VMA_MERGE_START = 0
    VMA_MERGE_ERROR_NOMEM = 1
    VMA_MERGE_NOMERGE = 2
    VMA_MERGE_SUCCESS = 3


@dataclass(eq=False)
class VmaMergeStruct:
    """struct vma_merge_struct."""

    mm: MmStruct
    start: int = 0
    end: int = 0
    pgoff: int = 0
    flags: VmFlags = VmFlags.VM_NONE
    file: File | None = None
    anon_vma: AnonVma | None = None
    policy: Any = None
    uffd_ctx: Any = None
    anon_name: str | None = None
    prev: VmAreaStruct | None = None
    middle: VmAreaStruct | None = None
    next: VmAreaStruct | None = None
    target: VmAreaStruct | None = None
    copied_from: VmAreaStruct | None = None
    just_expand: bool = False
    give_up_on_oom: bool = False
    state: VmaMergeState = VmaMergeState.VMA_MERGE_START
    remove_middle: bool = False
    remove_next: bool = False
    adjust_middle_start: bool = False
    adjust_next_start: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def vmg_from_vma(vma: VmAreaStruct, prev: VmAreaStruct | None, start: int, end: int) -> VmaMergeStruct:
    """VMG_VMA_STATE(): a proposal to change [start, end) of vma."""
    return VmaMergeStruct(
        mm=vma.vm_mm, start=start, end=end,
        pgoff=vma.vm_pgoff + PHYS_PFN(start - vma.vm_start), flags=vma.vm_flags,
        file=vma.vm_file, anon_vma=vma.anon_vma, policy=vma.vm_policy,
        uffd_ctx=vma.vm_userfaultfd_ctx, anon_name=vma.anon_name, prev=prev, middle=vma)


# ---------------------------------------------------------------------------
# Tree updates
# ---------------------------------------------------------------------------
async def vma_iter_store_new(mm: MmStruct, vma: VmAreaStruct) -> None:
    """Attach, then make visible: the VMA was write-locked before."""
    await vma_mark_attached(vma)
    await mm.mm_mt.publish([*mm.mm_mt.snapshot(), vma], "vma_iter_store_new")


async def vma_iter_update(mm: MmStruct, remove: list[VmAreaStruct] | tuple[()] = (),
                          add: list[VmAreaStruct] | tuple[()] = (), label: str = "vma_iter_store") -> None:
    """Publish the tree after ranges changed (and VMAs left or arrived)."""
    await mm.mm_mt.publish(_replaced(mm.mm_mt.snapshot(), remove, add), label)


def _replaced(vmas: Sequence[VmAreaStruct], remove: list[VmAreaStruct] | tuple[()],
              add: list[VmAreaStruct] | tuple[()]) -> list[VmAreaStruct]:
    """The tree's VMAs without ``remove`` (by identity), then ``add``.  A plain
    function: no set of object addresses stays in a suspended frame (the
    checker keys states by frames' locals, and addresses differ run to run)."""
    out = [v for v in vmas if all(v is not r for r in remove)]
    out.extend(add)
    return out


def vma_set_range(vma: VmAreaStruct, start: int, end: int, pgoff: int) -> None:
    """Models vma_set_range() (mm/vma.h, 7.0): a plain store of the range, on
    a new VMA or one its caller write-locked.  Takes no step: a caller
    changing an attached VMA awaits ``vma_write_fields(vma, "vma_set_range")``
    first.  pervma checks an attached VMA is write-locked (mm.py)."""
    check_attached_vma_store(vma)
    vma.vm_start, vma.vm_end, vma.vm_pgoff = start, end, pgoff


async def vma_write_fields(vma: VmAreaStruct, label: str, order: Order = Order.PLAIN) -> None:
    """A modification of VMA fields a fault relies on (range, flags, prot):
    one step, and the exclusion check (no reader may hold the VMA).  Plain
    C stores under the VMA write lock (vma_set_range(), vm_flags_set/clear/
    reset()), except where 7.0 uses WRITE_ONCE() for lockless readers
    (vm_flags_reset_once(), vma_set_page_prot()): those callers pass ONCE."""
    await store(Op(OpKind.WRITE, (VMA, vma.slot), label, order=order), vma_fault_fields, vma)
    if vma.debug_readers > 0:
        debug.report("BUG: VMA modified while read-locked",
                     f"{label} changes {vma} while {vma.debug_readers} reader(s) hold its lock")


async def vma_link(mm: MmStruct, vma: VmAreaStruct) -> int:
    """vma_link(): write-lock, insert, link into the file's i_mmap, account."""
    await vma_start_write(vma)
    await vma_iter_store_new(mm, vma)
    await vma_link_file(vma)
    mm.map_count += 1
    return 0


# ---------------------------------------------------------------------------
# The file rmap: i_mmap (mm/vma.c, 7.0)
# ---------------------------------------------------------------------------
def __vma_link_file(vma: VmAreaStruct, mapping: File) -> None:
    """__vma_link_file(): the caller holds i_mmap_rwsem for write."""
    vma_interval_tree_insert(vma, mapping)


def __remove_shared_vm_struct(vma: VmAreaStruct, mapping: File) -> None:
    """__remove_shared_vm_struct(): the caller holds i_mmap_rwsem for write."""
    vma_interval_tree_remove(vma, mapping)


async def vma_link_file(vma: VmAreaStruct, hold_rmap_lock: bool = False) -> None:
    """vma_link_file(): a new VMA joins its file's interval tree, so that
    truncate's unmap_mapping_range() finds it (after it is in the mm's tree)."""
    file = vma.vm_file
    if file is not None:
        await i_mmap_lock_write(file)
        __vma_link_file(vma, file)
        if not hold_rmap_lock:
            await i_mmap_unlock_write(file)


async def unlink_file_vma(vma: VmAreaStruct) -> None:
    """unlink_file_vma(): hide vma from rmap and truncate before it is freed."""
    file = vma.vm_file
    if file is not None:
        await i_mmap_lock_write(file)
        __remove_shared_vm_struct(vma, file)
        await i_mmap_unlock_write(file)


@dataclass(eq=False)
class UnlinkVmaFileBatch:
    """struct unlink_vma_file_batch: up to 8 VMAs of one file, unlinked
    under one i_mmap_lock_write."""

    count: int = 0
    vmas: list[VmAreaStruct] = field(default_factory=list)


def unlink_file_vma_batch_init(vb: UnlinkVmaFileBatch) -> None:
    vb.count = 0
    vb.vmas = []


async def unlink_file_vma_batch_process(vb: UnlinkVmaFileBatch) -> None:
    file = vb.vmas[0].vm_file
    assert file is not None
    await i_mmap_lock_write(file)
    for v in vb.vmas:
        __remove_shared_vm_struct(v, file)
    await i_mmap_unlock_write(file)
    unlink_file_vma_batch_init(vb)


async def unlink_file_vma_batch_add(vb: UnlinkVmaFileBatch, vma: VmAreaStruct) -> None:
    """unlink_file_vma_batch_add(): a VMA of another file, or a full batch,
    flushes the batch first."""
    if vma.vm_file is None:
        return
    if (vb.count > 0 and vb.vmas[0].vm_file is not vma.vm_file) or vb.count == 8:
        await unlink_file_vma_batch_process(vb)
    vb.vmas.append(vma)
    vb.count += 1


async def unlink_file_vma_batch_final(vb: UnlinkVmaFileBatch) -> None:
    if vb.count > 0:
        await unlink_file_vma_batch_process(vb)


async def unlink_vmas_rmap(vmas: list[VmAreaStruct]) -> None:
    """free_pgtables()'s unlinking (mm/memory.c, 7.0): each VMA leaves its
    anon_vmas and, batched per file, its file's i_mmap, after its PTEs were
    zapped and before it is freed."""
    vb = UnlinkVmaFileBatch()
    unlink_file_vma_batch_init(vb)
    for v in vmas:
        await unlink_anon_vmas(v)
        await unlink_file_vma_batch_add(vb, v)
    await unlink_file_vma_batch_final(vb)


async def remove_vma(vma: VmAreaStruct) -> None:
    if vma.vm_ops is not None and vma.vm_ops.has_close:
        vma.vm_mm.system.vm_ops_closed.append(vma.vm_ops.name)
    mpol_put(vma.vm_mm, vma.vm_policy, "remove_vma")
    vm_area_free(vma, "remove_vma")


# ---------------------------------------------------------------------------
# Merge rules
# ---------------------------------------------------------------------------
def is_mergeable_vma(vmg: VmaMergeStruct, merge_next: bool) -> bool:
    vma = vmg.next if merge_next else vmg.prev
    assert vma is not None
    if not mpol_equal(vmg.policy, vma.vm_policy):
        return False
    if (vma.vm_flags ^ vmg.flags) & ~VM_STICKY:
        return False
    if vma.vm_file is not vmg.file:
        return False
    if vma.vm_userfaultfd_ctx is not vmg.uffd_ctx:
        return False
    return vma.anon_name == vmg.anon_name


def _had_uncowed_parents(vma: VmAreaStruct | None) -> bool:
    return vma is not None and vma.is_fork_child()


def is_mergeable_anon_vma(vmg: VmaMergeStruct, merge_next: bool) -> bool:
    tgt_vma = vmg.next if merge_next else vmg.prev
    assert tgt_vma is not None
    tgt, src = tgt_vma.anon_vma, vmg.anon_vma
    if tgt is None and src is not None:
        return not _had_uncowed_parents(vmg.middle) and not _had_uncowed_parents(vmg.copied_from)
    if tgt is not None and src is None:
        return not _had_uncowed_parents(tgt_vma)
    return tgt is src


def can_vma_merge_before(vmg: VmaMergeStruct) -> bool:
    assert vmg.next is not None
    return (is_mergeable_vma(vmg, True) and is_mergeable_anon_vma(vmg, True)
            and vmg.next.vm_pgoff == vmg.pgoff + PHYS_PFN(vmg.end - vmg.start))


def can_vma_merge_after(vmg: VmaMergeStruct) -> bool:
    assert vmg.prev is not None
    return (is_mergeable_vma(vmg, False) and is_mergeable_anon_vma(vmg, False)
            and vmg.prev.vm_pgoff + vmg.prev.pages() == vmg.pgoff)


def can_vma_merge_left(vmg: VmaMergeStruct) -> bool:
    return vmg.prev is not None and vmg.prev.vm_end == vmg.start and can_vma_merge_after(vmg)


def can_vma_merge_right(vmg: VmaMergeStruct, can_merge_left: bool) -> bool:
    nxt, prev = vmg.next, vmg.prev
    if nxt is None or vmg.end != nxt.vm_start or not can_vma_merge_before(vmg):
        return False
    if not can_merge_left:
        return True
    assert prev is not None
    a, b = prev.anon_vma, nxt.anon_vma
    return a is None or b is None or a is b


def can_merge_remove_vma(vma: VmAreaStruct) -> bool:
    return vma.vm_ops is None or not vma.vm_ops.has_close


async def dup_anon_vma(dst: VmAreaStruct, src: VmAreaStruct, dups: list[VmAreaStruct]) -> int:
    if src.anon_vma is not None and dst.anon_vma is None:
        vma_assert_write_locked(dst)
        await vma_write_fields(dst, "dup_anon_vma")
        dst.anon_vma = src.anon_vma
        ret = await anon_vma_clone(dst, src)
        if ret:
            return ret
        dups.append(dst)
    return 0


def _prealloc_fails(mm: MmStruct) -> bool:
    return bool(mm.system.fail_prealloc)


async def _vma_complete_remove(mm: MmStruct, vma: VmAreaStruct) -> None:
    """vma_complete() for a VMA a merge absorbed: detached after the tree
    update, unlinked from its anon_vmas, freed."""
    await vma_mark_detached(vma)
    await unlink_anon_vmas(vma)
    mm.map_count -= 1
    # the freed object's cost (slab free) for the simulator; no shared state
    await Op(OpKind.LOCAL, (VMA, vma.slot), "vma_complete: vm_area_free", work="vma_free")
    await remove_vma(vma)


async def vmg_adjust_set_range(vmg: VmaMergeStruct) -> None:
    """Models vmg_adjust_set_range() (mm/vma.c, 7.0): the VMA a merge only
    partly takes over (middle after merging left, next after merging right)
    now starts at vmg->end."""
    if vmg.adjust_middle_start:
        adjust = vmg.middle
        assert adjust is not None
        pgoff = adjust.vm_pgoff + PHYS_PFN(vmg.end - adjust.vm_start)
    elif vmg.adjust_next_start:
        adjust = vmg.next
        assert adjust is not None
        pgoff = adjust.vm_pgoff - PHYS_PFN(adjust.vm_start - vmg.end)
    else:
        return
    await vma_write_fields(adjust, "vma_set_range")
    vma_set_range(adjust, vmg.end, adjust.vm_end, pgoff)


async def commit_merge(vmg: VmaMergeStruct) -> int:
    """Models commit_merge() (mm/vma.c, 7.0), shared by vma_expand() and
    vma_merge_existing_range(): the VMAs taking part are write-locked by the
    callers.  Fail (-ENOMEM, the tree preallocation) before changing
    anything; then set the range of the VMA being changed (the target, or
    middle when next is the one adjusted), move the adjusted neighbour's
    start, store the target's range in the tree, and (vma_complete) detach
    and free the VMAs the merge removed."""
    mm = vmg.mm
    vma = vmg.middle if vmg.adjust_next_start else vmg.target
    assert vma is not None
    if _prealloc_fails(mm):
        return -errno.ENOMEM
    adjust = vmg.middle if vmg.adjust_middle_start else vmg.next if vmg.adjust_next_start else None
    removed = []
    if vmg.remove_middle and vmg.middle is not None:
        removed.append(vmg.middle)
    if vmg.remove_next and vmg.next is not None:
        removed.append(vmg.next)
    file = vma.vm_file
    if file is not None:  # vma_prepare(): out of the interval tree while the keys change
        await i_mmap_lock_write(file)
        vma_interval_tree_remove(vma, file)
        if adjust is not None:
            vma_interval_tree_remove(adjust, file)
    av = vma.anon_vma or (adjust.anon_vma if adjust is not None else None)
    if av is not None:  # vma_prepare(): rmap walkers read the range under this lock
        await anon_vma_lock_write(av)
        anon_vma_interval_tree_pre_update_vma(vma)
        if adjust is not None:
            anon_vma_interval_tree_pre_update_vma(adjust)
    await vma_write_fields(vma, "vma_set_range")
    vma_set_range(vma, vmg.start, vmg.end, vmg.pgoff)
    await vmg_adjust_set_range(vmg)
    await vma_iter_update(mm, remove=removed, label="commit_merge: store")
    if av is not None:  # vma_complete()
        anon_vma_interval_tree_post_update_vma(vma)
        if adjust is not None:
            anon_vma_interval_tree_post_update_vma(adjust)
        await anon_vma_unlock_write(av)
    if file is not None:  # vma_complete()
        if adjust is not None:
            vma_interval_tree_insert(adjust, file)
        vma_interval_tree_insert(vma, file)
        for v in removed:
            __remove_shared_vm_struct(v, file)
        await i_mmap_unlock_write(file)
    for v in removed:
        await _vma_complete_remove(mm, v)
    return 0


async def vma_expand(vmg: VmaMergeStruct) -> int:
    """Models vma_expand(): grow target over [start, end), absorbing next
    when the range reaches its end.  The sticky flags of the proposal, the
    target and an absorbed next all end up on the target (mm/vma.c collects
    them here, so every new-range merge keeps e.g. VM_SOFTDIRTY of a VMA it
    removes); anon_vmas are duplicated before next is write-locked."""
    mm = vmg.mm
    target, nxt = vmg.target, vmg.next
    assert target is not None
    mmap_assert_write_locked(mm)
    await vma_start_write(target)
    sticky = (vmg.flags | target.vm_flags) & VM_STICKY
    remove_next = nxt is not None and nxt is not target and vmg.end == nxt.vm_end
    dups: list[VmAreaStruct] = []
    if remove_next:
        assert nxt is not None
        if await dup_anon_vma(target, nxt, dups):
            return -errno.ENOMEM
    if vmg.copied_from is not None and await dup_anon_vma(target, vmg.copied_from, dups):
        for d in dups:
            await unlink_anon_vmas(d)
        return -errno.ENOMEM
    if remove_next:
        assert nxt is not None
        await vma_start_write(nxt)
        vmg.remove_next = True
        sticky |= nxt.vm_flags & VM_STICKY
    if await commit_merge(vmg):
        for d in dups:
            await unlink_anon_vmas(d)
        if not vmg.give_up_on_oom:
            vmg.state = VmaMergeState.VMA_MERGE_ERROR_NOMEM
        return -errno.ENOMEM
    await vm_flags_set(target, sticky)
    return 0


async def vma_merge_new_range(vmg: VmaMergeStruct) -> VmAreaStruct | None:
    """Models vma_merge_new_range() (mmap, brk, mremap expansion)."""
    prev, nxt = vmg.prev, vmg.next
    start, end, pgoff = vmg.start, vmg.end, vmg.pgoff
    vmg.state = VmaMergeState.VMA_MERGE_NOMERGE
    if vmg.flags & VM_SPECIAL or (prev is None and nxt is None):
        return None
    can_merge_left = can_vma_merge_left(vmg)
    can_merge_right = not vmg.just_expand and can_vma_merge_right(vmg, can_merge_left)
    if can_merge_right:
        assert nxt is not None
        vmg.end = nxt.vm_end
        vmg.target = nxt
    if can_merge_left:
        assert prev is not None
        vmg.start = prev.vm_start
        vmg.target = prev
        vmg.pgoff = prev.vm_pgoff
        if can_merge_right and nxt is not None and not can_merge_remove_vma(nxt):
            vmg.end = end
    if vmg.target is not None and await vma_expand(vmg) == 0:
        vmg.state = VmaMergeState.VMA_MERGE_SUCCESS
        return vmg.target
    if not vmg.just_expand:
        vmg.target = None
        vmg.start, vmg.end, vmg.pgoff = start, end, pgoff
    return None


async def vma_merge_existing_range(vmg: VmaMergeStruct) -> VmAreaStruct | None:
    """Models vma_merge_existing_range(): [start, end) of middle changes
    attributes; merge it into prev and/or next if they are compatible.
    Decisions first; only the VMAs that take part are write-locked."""
    mm = vmg.mm
    middle, prev = vmg.middle, vmg.prev
    assert middle is not None
    start, end, pgoff = vmg.start, vmg.end, vmg.pgoff
    left_side = start == middle.vm_start
    right_side = end == middle.vm_end
    vmg.state = VmaMergeState.VMA_MERGE_NOMERGE
    if vmg.flags & VM_SPECIAL or (not left_side and not right_side):
        return None
    merge_left = left_side and can_vma_merge_left(vmg)
    merge_right = False
    if right_side:
        _, vmg.next = mm.mm_mt.prev_next(middle.vm_start, middle.vm_end)
        merge_right = can_vma_merge_right(vmg, merge_left)
    if not merge_left and not merge_right:
        return None
    nxt = vmg.next
    vmg.remove_middle = left_side and right_side
    if vmg.remove_middle and not can_merge_remove_vma(middle):
        return None
    merge_both = merge_left and merge_right
    if merge_both and nxt is not None and not can_merge_remove_vma(nxt):
        merge_right = False
        merge_both = False
    vmg.remove_next = merge_both
    sticky = vmg.flags & VM_STICKY
    await vma_start_write(middle)
    if merge_right:
        assert nxt is not None
        await vma_start_write(nxt)
        vmg.target = nxt
        sticky |= nxt.vm_flags & VM_STICKY
    if merge_left:
        assert prev is not None
        await vma_start_write(prev)
        vmg.target = prev
        sticky |= prev.vm_flags & VM_STICKY
    dups: list[VmAreaStruct] = []
    pglen = PHYS_PFN(end - start)
    if merge_both:
        assert prev is not None and nxt is not None
        vmg.start, vmg.end, vmg.pgoff = prev.vm_start, nxt.vm_end, prev.vm_pgoff
        err = await dup_anon_vma(prev, nxt if nxt.anon_vma is not None else middle, dups)
    elif merge_left:
        assert prev is not None
        vmg.start, vmg.pgoff = prev.vm_start, prev.vm_pgoff
        if not vmg.remove_middle:
            vmg.adjust_middle_start = True
        err = await dup_anon_vma(prev, middle, dups)
    else:
        assert nxt is not None
        if vmg.remove_middle:
            vmg.end, vmg.pgoff = nxt.vm_end, nxt.vm_pgoff - pglen
        else:
            # middle shrinks to [vm_start, start); next, the target, grows down to start
            vmg.adjust_next_start = True
            vmg.start, vmg.end, vmg.pgoff = middle.vm_start, start, middle.vm_pgoff
        err = await dup_anon_vma(nxt, middle, dups)
    if err or await commit_merge(vmg):
        for d in dups:
            await unlink_anon_vmas(d)
        if not vmg.give_up_on_oom:
            vmg.state = VmaMergeState.VMA_MERGE_ERROR_NOMEM
        vmg.start, vmg.end, vmg.pgoff = start, end, pgoff
        return None
    target = vmg.target
    assert target is not None
    await vm_flags_set(target, sticky)
    vmg.state = VmaMergeState.VMA_MERGE_SUCCESS
    return target


# ---------------------------------------------------------------------------
# Split, shrink, modify
# ---------------------------------------------------------------------------
async def __split_vma(vma: VmAreaStruct, addr: int, new_below: bool) -> int:
    """Models __split_vma(): the new VMA takes [vm_start, addr) when
    new_below, else [addr, vm_end); both are write-locked before either
    changes, the new one before it is inserted."""
    mm = vma.vm_mm
    new = vm_area_dup(vma)
    if new_below:
        vma_set_range(new, new.vm_start, addr, new.vm_pgoff)
    else:
        vma_set_range(new, addr, new.vm_end, new.vm_pgoff + PHYS_PFN(addr - vma.vm_start))
    if _prealloc_fails(mm):
        vm_area_free(new, "__split_vma: nomem")
        return -errno.ENOMEM
    # the new object's cost (slab allocation, copy) for the simulator, which
    # also places its cache lines on this CPU; no shared state
    await Op(OpKind.LOCAL, (VMA, new.slot), "__split_vma: vm_area_dup", work="vma_dup")
    vma_dup_policy(vma, new)
    if await anon_vma_clone(new, vma):
        mpol_put(mm, new.vm_policy, "__split_vma: anon_vma_clone failed")  # out_free_mpol
        vm_area_free(new, "__split_vma: anon_vma_clone failed")
        return -errno.ENOMEM
    await vma_start_write(vma)
    await vma_start_write(new)
    file = vma.vm_file
    if file is not None:  # vma_prepare() with vp.insert = new
        await i_mmap_lock_write(file)
        __vma_link_file(new, file)
        vma_interval_tree_remove(vma, file)
    av = vma.anon_vma
    if av is not None:  # vma_prepare(): rmap walkers read the range under this lock
        await anon_vma_lock_write(av)
        anon_vma_interval_tree_pre_update_vma(vma)
    await vma_write_fields(vma, "vma_set_range")
    if new_below:
        vma_set_range(vma, addr, vma.vm_end, vma.vm_pgoff + PHYS_PFN(addr - new.vm_start))
    else:
        vma_set_range(vma, vma.vm_start, addr, vma.vm_pgoff)
    if file is not None:  # vma_complete()
        vma_interval_tree_insert(vma, file)
    await vma_mark_attached(new)
    await vma_iter_update(mm, add=[new], label="__split_vma: store")
    mm.map_count += 1
    if av is not None:  # vma_complete()
        anon_vma_interval_tree_post_update_vma(vma)
        await anon_vma_unlock_write(av)
    if file is not None:
        await i_mmap_unlock_write(file)
    return 0


async def split_vma(vma: VmAreaStruct, addr: int, new_below: bool) -> int:
    if vma.vm_mm.map_count >= vma.vm_mm.config.max_map_count:
        return -errno.ENOMEM
    return await __split_vma(vma, addr, new_below)


async def vma_shrink(vma: VmAreaStruct, start: int, end: int, pgoff: int) -> int:
    if _prealloc_fails(vma.vm_mm):
        return -errno.ENOMEM
    await vma_start_write(vma)
    file = vma.vm_file
    if file is not None:  # vma_prepare()
        await i_mmap_lock_write(file)
        vma_interval_tree_remove(vma, file)
    av = vma.anon_vma
    if av is not None:
        await anon_vma_lock_write(av)
        anon_vma_interval_tree_pre_update_vma(vma)
    await vma_write_fields(vma, "vma_set_range")
    vma_set_range(vma, start, end, pgoff)
    await vma_iter_update(vma.vm_mm, label="vma_shrink: clear")
    if av is not None:
        anon_vma_interval_tree_post_update_vma(vma)
        await anon_vma_unlock_write(av)
    if file is not None:  # vma_complete()
        vma_interval_tree_insert(vma, file)
        await i_mmap_unlock_write(file)
    return 0


async def vma_modify(vmg: VmaMergeStruct) -> VmAreaStruct | int:
    """Models vma_modify(): merge if possible, else split so that the
    returned VMA covers exactly [start, end)."""
    merged = await vma_merge_existing_range(vmg)
    if merged is not None:
        return merged
    if vmg.state == VmaMergeState.VMA_MERGE_ERROR_NOMEM:
        return -errno.ENOMEM
    vma = vmg.middle
    assert vma is not None
    if vma.vm_start < vmg.start:
        err = await split_vma(vma, vmg.start, True)
        if err:
            return err
    if vma.vm_end > vmg.end:
        err = await split_vma(vma, vmg.end, False)
        if err:
            return err
    return vma


async def vma_modify_flags(prev: VmAreaStruct | None, vma: VmAreaStruct, start: int, end: int,
                           new_flags: VmFlags) -> VmAreaStruct | int:
    vmg = vmg_from_vma(vma, prev, start, end)
    vmg.flags = new_flags
    return await vma_modify(vmg)


async def vma_modify_policy(prev: VmAreaStruct | None, vma: VmAreaStruct, start: int, end: int,
                            new_pol: Any) -> VmAreaStruct | int:
    """Models vma_modify_policy() (mm/vma.c, 7.0): mbind's merge-or-split
    of [start, end) with the new policy as the proposal's."""
    vmg = vmg_from_vma(vma, prev, start, end)
    vmg.policy = new_pol
    return await vma_modify(vmg)


async def vma_merge_extend(vma: VmAreaStruct, delta: int) -> VmAreaStruct | None:
    """Models vma_merge_extend() (mremap growing in place): a new-range merge
    of [vm_end, vm_end + delta) with vma as prev (and next absorbed if the
    growth reaches it and it is compatible)."""
    mm = vma.vm_mm
    vmg = vmg_from_vma(vma, vma, vma.vm_end, vma.vm_end + delta)
    _, vmg.next = mm.mm_mt.prev_next(vma.vm_end, vma.vm_end + delta)
    if vmg.next is not None and vmg.next.vm_start < vmg.end:
        vmg.next = None
    vmg.middle = None
    return await vma_merge_new_range(vmg)


# ---------------------------------------------------------------------------
# munmap: gather, detach, clear, complete
# ---------------------------------------------------------------------------
@dataclass(eq=False)
class VmaMunmapStruct:
    mm: MmStruct
    start: int
    end: int
    vmas: list[VmAreaStruct] = field(default_factory=list)
    unlock: bool = False
    nr_accounted: int = 0  # pages of the gathered VM_ACCOUNT VMAs, uncharged on completion
    uf: list[Any] | None = None  # munmap's userfaultfd UNMAP events (userfaultfd_unmap_prep)


async def vms_gather_munmap_vmas(vms: VmaMunmapStruct, vma: VmAreaStruct) -> int:
    """Models vms_gather_munmap_vmas(): split the edges, then write-lock and
    detach each VMA while it is *still in the tree*; a lockless reader that
    finds it gets -EAGAIN and retries its walk."""
    mm = vms.mm
    start, end = vms.start, vms.end
    if start > vma.vm_start:
        if end < vma.vm_end and mm.map_count >= mm.config.max_map_count:
            return -errno.ENOMEM
        err = await __split_vma(vma, start, True)
        if err:
            return err
    for nxt in mm.mm_mt.overlapping(start, end):
        if nxt.vm_end > end:
            err = await __split_vma(nxt, end, False)
            if err:
                await reattach_vmas(vms)
                return err
        await vma_start_write(nxt)
        vms.vmas.append(nxt)
        if nxt.vm_flags & VmFlags.VM_ACCOUNT:
            vms.nr_accounted += nxt.pages()
        await vma_mark_detached(nxt)
        if vms.uf is not None and nxt.vm_userfaultfd_ctx is not None:
            from pervma.kernel.userfaultfd import userfaultfd_unmap_prep

            await userfaultfd_unmap_prep(nxt, start, end, vms.uf)
    return 0


async def reattach_vmas(vms: VmaMunmapStruct) -> None:
    for v in vms.vmas:
        await vma_mark_attached(v)
    vms.vmas.clear()
    vms.nr_accounted = 0


async def vms_complete_munmap_vmas(vms: VmaMunmapStruct) -> None:
    """Clear PTEs (possibly after downgrading mmap_lock, which drops every
    VMA write lock at once), then free the VMAs."""
    mm = vms.mm
    mm.map_count -= len(vms.vmas)
    for v in vms.vmas:
        mm.total_vm -= v.pages()
    if vms.nr_accounted:
        vm_unacct_memory(mm.system, vms.nr_accounted)
    if vms.unlock:
        await mmap_write_downgrade(mm)
    await zap_page_range(mm, vms.start, vms.end)
    await unlink_vmas_rmap(vms.vmas)
    for v in vms.vmas:
        await remove_vma(v)
    if vms.unlock:
        await mmap_read_unlock(mm)


async def do_vmi_align_munmap(mm: MmStruct, vma: VmAreaStruct, start: int, end: int,
                              unlock: bool, uf: list[Any] | None = None) -> int:
    """Models do_vmi_align_munmap(): on failure (gather_failed) mmap_lock is
    still write-held whatever ``unlock`` says; the caller releases it."""
    vms = VmaMunmapStruct(mm, start, end, unlock=unlock, uf=uf)
    err = await vms_gather_munmap_vmas(vms, vma)
    if err:
        return err
    await vma_iter_update(mm, remove=vms.vmas, label="vma_iter_clear_gfp")
    await vms_complete_munmap_vmas(vms)
    return 0


# ---------------------------------------------------------------------------
# mm_take_all_locks / mm_drop_all_locks (mm/vma.c, 7.0)
# ---------------------------------------------------------------------------
def _signal_pending() -> bool:
    """signal_pending(current): the model's only signal is a fatal one."""
    return fatal_signal_pending(current_task())


async def vm_lock_anon_vma(mm: MmStruct, anon_vma: AnonVma) -> None:
    """Take the root anon_vma's lock once per mm_take_all_locks(): the mark
    (the kernel's low bit of the root's rb_root) says it is already held."""
    root = anon_vma.root or anon_vma
    if not root.mm_all_locks_mark:
        await root.rwsem.down_write()  # down_write_nest_lock(..., &mm->mmap_lock)
        root.mm_all_locks_mark = True


async def vm_lock_mapping(mm: MmStruct, mapping: File) -> None:
    """Take a file's i_mmap_rwsem once, marked by AS_MM_ALL_LOCKS."""
    if not mapping.as_mm_all_locks:
        mapping.as_mm_all_locks = True
        await mapping.i_mmap_rwsem.down_write()  # down_write_nest_lock(..., &mm->mmap_lock)


async def mm_take_all_locks(mm: MmStruct) -> int:
    """Models mm_take_all_locks() (mm/vma.c, 7.0): with the mmap write lock
    held, take mm_all_locks_mutex, write-lock every VMA (released only by
    mmap_write_unlock/downgrade), then every hugetlb i_mmap_rwsem, every
    other i_mmap_rwsem and every anon_vma lock, each once.  Each VMA of each
    pass first checks for a pending signal: -EINTR after dropping what it
    took.  Excludes page faults (VMA locks and mmap_lock), truncate and rmap
    walks (i_mmap_rwsem, anon_vma) while a notifier is registered."""
    mmap_assert_write_locked(mm)
    await mm.system.mm_all_locks_mutex.down_write()  # mutex_lock()
    vmas = mm.mm_mt.snapshot()
    for vma in vmas:
        if _signal_pending():
            await mm_drop_all_locks(mm)
            return -errno.EINTR
        await vma_start_write(vma)
    for hugetlb in (True, False):
        for vma in vmas:
            if _signal_pending():
                await mm_drop_all_locks(mm)
                return -errno.EINTR
            f = vma.vm_file
            if f is not None and bool(f.hugetlb_shift) == hugetlb:
                await vm_lock_mapping(mm, f)
    for vma in vmas:
        if _signal_pending():
            await mm_drop_all_locks(mm)
            return -errno.EINTR
        if vma.anon_vma is not None:
            for av in list(vma.anon_vma_chain):
                await vm_lock_anon_vma(mm, av)
    return 0


async def vm_unlock_anon_vma(anon_vma: AnonVma) -> None:
    root = anon_vma.root or anon_vma
    if root.mm_all_locks_mark:
        root.mm_all_locks_mark = False  # cleared before the unlock
        await root.rwsem.up_write()


async def vm_unlock_mapping(mapping: File) -> None:
    if mapping.as_mm_all_locks:
        await mapping.i_mmap_rwsem.up_write()
        mapping.as_mm_all_locks = False


async def mm_drop_all_locks(mm: MmStruct) -> None:
    """Models mm_drop_all_locks(): release the marked rmap locks and the
    mutex; the VMA write locks stay until the mmap write lock is released."""
    mmap_assert_write_locked(mm)
    mutex = mm.system.mm_all_locks_mutex
    debug.VM_BUG_ON(mutex.writer is None, "mm_drop_all_locks without mm_all_locks_mutex")
    for vma in mm.mm_mt.snapshot():
        if vma.anon_vma is not None:
            for av in list(vma.anon_vma_chain):
                await vm_unlock_anon_vma(av)
        if vma.vm_file is not None:
            await vm_unlock_mapping(vma.vm_file)
    await mutex.up_write()  # mutex_unlock()
