"""VMA allocation, duplication and freeing (mm/vma_init.c).

The VMA cache is SLAB_TYPESAFE_BY_RCU: a freed VMA goes back to the cache at
once (no RCU delay) and may be handed to another mm straight away.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.mm import vm_flags_init
from pervma.kernel.mm_types import VmAreaStruct, VmFlags, vma_fault_fields
from pervma.kernel.mmap_lock import vma_assert_detached, vma_lock_init
from pervma.sched.locations import VMA
from pervma.sched.memory import previous_life

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct


def vm_area_alloc(mm: MmStruct, site: str = "vm_area_alloc") -> VmAreaStruct:
    """vm_area_alloc() + vma_init(): a zeroed, detached VMA of mm."""
    vma = mm.system.vm_area_cachep.alloc(site)
    if vma.generation > 1:  # its previous life stays readable until published
        previous_life((VMA, vma.slot), vma_fault_fields, vma)
    vma.vm_mm = mm
    vma.vm_start = vma.vm_end = vma.vm_pgoff = 0
    vma.vm_flags = VmFlags.VM_NONE
    vma.vm_file = None
    vma.vm_ops = None
    vma.anon_vma = None
    vma.anon_vma_chain = []
    vma.vm_private_data = None
    vma.vm_policy = None
    vma.vm_userfaultfd_ctx = None
    vma.anon_name = None
    vma_lock_init(vma, reset_refcnt=False)
    if vma.vm_refcnt.counter != 0:
        debug.report("BUG: vm_area_alloc", f"reused {vma} has vm_refcnt {vma.vm_refcnt.counter:#x}")
    return vma


def vm_area_dup(orig: VmAreaStruct, mm: MmStruct | None = None) -> VmAreaStruct:
    """vm_area_dup() (vm_area_init_from(), 7.0): copy every field but the
    lock, which starts detached with vm_lock_seq = UINT_MAX."""
    new = vm_area_alloc(mm or orig.vm_mm, "vm_area_dup")
    new.vm_start, new.vm_end, new.vm_pgoff = orig.vm_start, orig.vm_end, orig.vm_pgoff
    vm_flags_init(new, orig.vm_flags)
    new.vm_file = orig.vm_file
    new.vm_ops = orig.vm_ops
    new.anon_vma = orig.anon_vma
    new.vm_private_data = orig.vm_private_data
    new.vm_policy = orig.vm_policy
    new.vm_userfaultfd_ctx = orig.vm_userfaultfd_ctx
    new.anon_name = orig.anon_name
    vma_lock_init(new, reset_refcnt=True)
    return new


def vm_area_free(vma: VmAreaStruct, site: str = "vm_area_free") -> None:
    """vm_area_free(): the VMA must be detached; it is freed immediately."""
    vma_assert_detached(vma)
    vma.vm_mm.system.vm_area_cachep.free(vma, site)
