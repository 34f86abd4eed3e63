"""A pytest harness mirroring the helpers of the kernel's tools/testing/vma
suite (shared.c and the top of tests/merge.c), built on pervma's model.

Ranges are given in pages (page N is address N * 0x1000), as in
vma-merge-rules.md §A.4.  Every model call runs under the direct runner with
one task that holds mmap_lock for write for the whole test, as the kernel
suite's single-threaded harness effectively does.

Write-locking is observed as the suite observes it: ``vma_write_started()``
is true iff ``vma_start_write()`` stamped the VMA since the last reset, and it
resets the stamp.  Linking helpers reset it so that linking does not count.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from pervma.config import Config
from pervma.kernel import vma as vma_mod
from pervma.kernel.atomic import UINT_MAX
from pervma.kernel.mm_types import AnonVma, VmAreaStruct, VmFlags, VmOperations
from pervma.kernel.mmap_lock import (
    mmap_write_lock,
    mmap_write_unlock,
    vma_is_attached,
    vma_mark_detached,
    vma_start_write,
)
from pervma.kernel.rmap import anon_vma_alloc
from pervma.kernel.system import System
from pervma.kernel.vma import (
    VmaMergeState,
    VmaMergeStruct,
    vma_expand,
    vma_link,
    vma_merge_existing_range,
    vma_merge_new_range,
)
from pervma.kernel.vma_init import vm_area_alloc, vm_area_free
from pervma.sched import run_direct

PAGE = 0x1000
BASE_FLAGS = VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_MAYREAD | VmFlags.VM_MAYWRITE

_KEEP: Any = object()  # "leave vmg.anon_vma as it is" (vmg_set_range semantics)


async def _stub_anon_vma_clone(dst: VmAreaStruct, src: VmAreaStruct) -> int:
    """vma_internal.h's anon_vma_clone(): no chains, only the observation."""
    if src.anon_vma is not None:
        dst.anon_vma = src.anon_vma
        dst.anon_vma.was_cloned = True
    return 0


def _no_tree(vma: VmAreaStruct) -> None:
    """vma_internal.h's anon_vma_interval_tree_pre/post_update_vma(): no tree."""


async def _stub_unlink_anon_vmas(vma: VmAreaStruct) -> None:
    """vma_internal.h's unlink_anon_vmas(): only the observation."""
    if vma.anon_vma is not None:
        vma.anon_vma.was_unlinked = True


def span(vma: VmAreaStruct) -> tuple[int, int, int]:
    """(start page, end page, pgoff) of a VMA."""
    return vma.vm_start // PAGE, vma.vm_end // PAGE, vma.vm_pgoff


class VmaTestEnv:
    """One test's mm, task and dummy objects (the suite's globals)."""

    def __init__(self, preset: str = "universal") -> None:
        self.kern = System(Config.preset(preset))
        self.mm = self.kern.mm_alloc()
        self.task = self.kern.new_task(self.mm, "vma-test")
        # struct anon_vma dummy_anon_vma, plus the second one some tests use.
        self.dummy_anon_vma: AnonVma = anon_vma_alloc(self.mm)
        self.dummy_anon_vma_2: AnonVma = anon_vma_alloc(self.mm)
        # A vm_operations_struct with .close = dummy_close.
        self.close_ops = VmOperations("dummy_close_vm_ops", has_close=True)
        # The suite links mm/vma.c against stubs of mm/rmap.c (vma_internal.h):
        # chains and the anon_vma tree are not what it tests.
        self._rmap = (vma_mod.anon_vma_clone, vma_mod.unlink_anon_vmas,
                      vma_mod.anon_vma_interval_tree_pre_update_vma,
                      vma_mod.anon_vma_interval_tree_post_update_vma)
        (vma_mod.anon_vma_clone, vma_mod.unlink_anon_vmas,
         vma_mod.anon_vma_interval_tree_pre_update_vma,
         vma_mod.anon_vma_interval_tree_post_update_vma) = (
            _stub_anon_vma_clone, _stub_unlink_anon_vmas, _no_tree, _no_tree)
        self.run(mmap_write_lock(self.mm))

    # -- running model code ------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run one model call to completion as this test's task."""
        return run_direct(coro, model=self.task)

    def teardown(self) -> None:
        self.run(mmap_write_unlock(self.mm))
        (vma_mod.anon_vma_clone, vma_mod.unlink_anon_vmas,
         vma_mod.anon_vma_interval_tree_pre_update_vma,
         vma_mod.anon_vma_interval_tree_post_update_vma) = self._rmap

    # -- shared.c --------------------------------------------------------
    def alloc_vma(self, start: int, end: int, pgoff: int,
                  flags: VmFlags = BASE_FLAGS) -> VmAreaStruct:
        vma = vm_area_alloc(self.mm, "alloc_vma")
        vma.vm_start, vma.vm_end, vma.vm_pgoff = start * PAGE, end * PAGE, pgoff
        vma.vm_flags = flags
        assert not vma_is_attached(vma)
        return vma

    def attach_vma(self, vma: VmAreaStruct) -> int:
        """The real vma_link(): write-lock, insert, map_count++."""
        ret: int = self.run(vma_link(self.mm, vma))
        assert vma_is_attached(vma)
        return ret

    def alloc_and_link_vma(self, start: int, end: int, pgoff: int,
                           flags: VmFlags = BASE_FLAGS) -> VmAreaStruct:
        vma = self.alloc_vma(start, end, pgoff, flags)
        assert self.attach_vma(vma) == 0
        vma.vm_lock_seq = UINT_MAX  # linking must not look like a write start
        return vma

    @staticmethod
    def vma_write_started(vma: VmAreaStruct) -> bool:
        started = vma.vm_lock_seq != UINT_MAX
        vma.vm_lock_seq = UINT_MAX
        return started

    def write_started(self) -> list[VmAreaStruct]:
        """vma_write_started() over every VMA in the tree (tree order); each
        is reset, so the answer covers exactly one operation."""
        return [v for v in self.tree() if self.vma_write_started(v)]

    def set_dummy_anon_vma(self, vma: VmAreaStruct, anon_vma: AnonVma | None = None) -> None:
        """vma_set_dummy_anon_vma() / __vma_set_dummy_anon_vma(): an anon_vma
        and a one-element chain (singular: not a fork child)."""
        av = anon_vma or self.dummy_anon_vma
        vma.anon_vma = av
        vma.anon_vma_chain = [av]

    def set_singular_chain(self, vma: VmAreaStruct) -> None:
        """A one-element anon_vma_chain without setting vma->anon_vma (the
        INIT_LIST_HEAD + list_add the suite does by hand)."""
        vma.anon_vma_chain = [self.dummy_anon_vma]

    def reset_dummy_anon_vma(self) -> None:
        for av in (self.dummy_anon_vma, self.dummy_anon_vma_2):
            av.was_cloned = av.was_unlinked = False

    def cleanup_mm(self) -> int:
        """Free every VMA left in the tree, empty it, zero map_count, clear
        fail_prealloc and the dummy flags; return how many VMAs were left."""
        self.kern.fail_prealloc = False
        self.reset_dummy_anon_vma()
        left = list(self.tree())
        for vma in left:
            self.run(vma_start_write(vma))
            self.run(vma_mark_detached(vma))
            vm_area_free(vma, "cleanup_mm")
        self.run(self.mm.mm_mt.publish([], "cleanup_mm"))
        self.mm.map_count = 0
        return len(left)

    # -- the tree ----------------------------------------------------------
    def tree(self) -> tuple[VmAreaStruct, ...]:
        return self.mm.mm_mt.snapshot()

    def spans(self) -> list[tuple[int, int, int]]:
        return [span(v) for v in self.tree()]

    # -- tests/merge.c helpers --------------------------------------------
    def vmg(self, start: int = 0, end: int = 0, pgoff: int = 0,
            flags: VmFlags = BASE_FLAGS) -> VmaMergeStruct:
        """VMG_STATE() / a zeroed struct vma_merge_struct for this mm."""
        return VmaMergeStruct(mm=self.mm, start=start * PAGE, end=end * PAGE, pgoff=pgoff,
                              flags=flags)

    @staticmethod
    def vmg_set_range(vmg: VmaMergeStruct, start: int, end: int, pgoff: int,
                      flags: VmFlags = BASE_FLAGS, anon_vma: AnonVma | None = _KEEP) -> None:
        """vmg_set_range() (and vmg_set_range_anon_vma() when anon_vma is
        given): a new range with prev/middle/next/target and the internal
        flags cleared.  Without anon_vma, vmg->anon_vma is carried over, as
        in the suite."""
        vmg.prev = vmg.middle = vmg.next = vmg.target = None
        vmg.start, vmg.end, vmg.pgoff, vmg.flags = start * PAGE, end * PAGE, pgoff, flags
        vmg.just_expand = False
        vmg.remove_middle = vmg.remove_next = False
        vmg.adjust_middle_start = vmg.adjust_next_start = False
        if anon_vma is not _KEEP:
            vmg.anon_vma = anon_vma

    def merge_new(self, vmg: VmaMergeStruct) -> VmAreaStruct | None:
        """merge_new(): fill prev and next around the (empty) gap, then the
        real vma_merge_new_range(); a result must be attached."""
        assert not any(v.vm_start < vmg.end and v.vm_end > vmg.start for v in self.tree())
        vmg.prev = next((v for v in reversed(self.tree()) if v.vm_end <= vmg.start), None)
        vmg.next = next((v for v in self.tree() if v.vm_start >= vmg.end), None)
        vma: VmAreaStruct | None = self.run(vma_merge_new_range(vmg))
        if vma is not None:
            assert vma_is_attached(vma)
        return vma

    def merge_existing(self, vmg: VmaMergeStruct) -> VmAreaStruct | None:
        vma: VmAreaStruct | None = self.run(vma_merge_existing_range(vmg))
        if vma is not None:
            assert vma_is_attached(vma)
        return vma

    def expand_existing(self, vmg: VmaMergeStruct) -> int:
        ret: int = self.run(vma_expand(vmg))
        return ret

    def try_merge_new_vma(self, vmg: VmaMergeStruct, start: int, end: int, pgoff: int,
                          flags: VmFlags = BASE_FLAGS) -> tuple[VmAreaStruct, bool]:
        """Merge the new range if possible, else link a fresh VMA for it."""
        self.vmg_set_range(vmg, start, end, pgoff, flags)
        merged = self.merge_new(vmg)
        if merged is not None:
            assert vmg.state == VmaMergeState.VMA_MERGE_SUCCESS
            return merged, True
        assert vmg.state == VmaMergeState.VMA_MERGE_NOMERGE
        return self.alloc_and_link_vma(start, end, pgoff, flags), False
