"""The vm_flags helpers of include/linux/mm.h (Linux 7.0) and the store
check every write of a VMA's fields goes through.

In 7.0 ``vm_flags_init`` is for a VMA not yet in the tree and takes no lock;
``vm_flags_reset`` and ``vm_flags_reset_once`` assert the caller already
write-locked the VMA (``vma_assert_write_locked``); ``vm_flags_set``,
``vm_flags_clear`` and ``vm_flags_mod`` take the write lock themselves
(``vma_start_write``); ``__vm_flags_mod`` is ``vm_flags_init`` of the new word.

pervma adds one check the kernel leaves to its callers: a store into the
fields a fault relies on (flags, range, pgoff) of an *attached* VMA must come
from the VMA's writer (:func:`check_attached_vma_store`).  ``vm_flags_init``
and ``vma_set_range`` (mm/vma.h, in ``vma.py``) run it, so neither can bypass
the lock; a VMA not yet attached needs no lock.  With PER_VMA_LOCK off no VMA
is ever marked attached, so the check is the per-VMA kind only.

None of these takes a step: the model's callers await their
``vma_write_fields()`` step first (the point where another CPU may run), and
the store happens when the thread resumes, as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pervma.kernel.mmap_lock import vma_assert_write_locked, vma_start_write

if TYPE_CHECKING:
    from pervma.kernel.mm_types import VmAreaStruct, VmFlags


def check_attached_vma_store(vma: VmAreaStruct) -> None:
    """pervma's store check: an attached VMA changes only under its write
    lock (a reader that passed vma_start_read() would see it change)."""
    if vma.vm_refcnt.counter:
        vma_assert_write_locked(vma)


def vm_flags_init(vma: VmAreaStruct, flags: VmFlags) -> None:
    """For a VMA not in the tree: no lock (an attached one is checked)."""
    check_attached_vma_store(vma)
    vma.vm_flags = flags


def vm_flags_reset(vma: VmAreaStruct, flags: VmFlags) -> None:
    """For an attached VMA the caller write-locked beforehand."""
    vma_assert_write_locked(vma)
    vma.vm_flags = flags


def vm_flags_reset_once(vma: VmAreaStruct, flags: VmFlags) -> None:
    """vm_flags_reset() with WRITE_ONCE (mprotect_fixup: lockless readers
    of vm_flags must not see a torn or re-read value)."""
    vma_assert_write_locked(vma)
    vma.vm_flags = flags


async def vm_flags_set(vma: VmAreaStruct, flags: VmFlags) -> None:
    await vma_start_write(vma)
    vma.vm_flags |= flags


async def vm_flags_clear(vma: VmAreaStruct, flags: VmFlags) -> None:
    await vma_start_write(vma)
    vma.vm_flags &= ~flags


def __vm_flags_mod(vma: VmAreaStruct, set_: VmFlags, clear: VmFlags) -> None:
    vm_flags_init(vma, (vma.vm_flags | set_) & ~clear)


async def vm_flags_mod(vma: VmAreaStruct, set_: VmFlags, clear: VmFlags) -> None:
    await vma_start_write(vma)
    __vm_flags_mod(vma, set_, clear)
