"""The page cache's locks and the file size (mm/filemap.c and the
include/linux/fs.h, pagemap.h helpers it uses, Linux 7.0).

- the folio lock (PG_locked): a sleeping bit lock.  The fault path holds it
  from the page-cache lookup until the PTE is installed, and truncate holds
  it while it removes the folio from the cache, so a fault either maps the
  folio before truncate unmaps it again, or sees that it was truncated
  (``folio->mapping`` changed) or lies beyond the new end of file;
- ``mapping->invalidate_lock`` (filemap_invalidate_lock[_shared]): truncate
  takes it for write, a fault that fills the page cache for read;
- ``mapping->i_mmap_rwsem`` (i_mmap_lock_write/read): VMAs are linked into
  and unlinked from ``i_mmap`` under it for write; rmap walkers such as
  unmap_mapping_range() hold it for read;
- ``i_size`` is read locklessly (i_size_read) and written by truncate
  (i_size_write): each is a step of its own.

The kernel's lock order (the comment at the top of mm/rmap.c and
Documentation/mm/process_addrs.rst, 7.0): mmap_lock, then invalidate_lock,
then the folio lock, then a VMA write lock, then i_mmap_rwsem, then the
anon_vma lock, then the page-table lock.  A fault holds the VMA *read* lock
(or mmap_lock) before it takes the folio lock.  lockdep does not track
PG_locked in the kernel; the model gives it the class ``folio_lock`` so that
an inversion against it is reported as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.mm_types import PAGE_SHIFT, PAGE_SIZE
from pervma.kernel.task import current_task
from pervma.sched import Op, OpKind, acquire, release, rmw
from pervma.sched.locations import I_SIZE, PAGE_FRAME
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import File, Page


# -- include/linux/fs.h ------------------------------------------------------------
async def i_mmap_lock_write(mapping: File) -> None:
    await mapping.i_mmap_rwsem.down_write()


async def i_mmap_unlock_write(mapping: File) -> None:
    await mapping.i_mmap_rwsem.up_write()


async def i_mmap_lock_read(mapping: File) -> None:
    await mapping.i_mmap_rwsem.down_read()


async def i_mmap_unlock_read(mapping: File) -> None:
    await mapping.i_mmap_rwsem.up_read()


async def filemap_invalidate_lock(mapping: File) -> None:
    await mapping.invalidate_lock.down_write()


async def filemap_invalidate_unlock(mapping: File) -> None:
    await mapping.invalidate_lock.up_write()


async def filemap_invalidate_lock_shared(mapping: File) -> None:
    await mapping.invalidate_lock.down_read()


async def filemap_invalidate_unlock_shared(mapping: File) -> None:
    await mapping.invalidate_lock.up_read()


async def i_size_read(inode: File) -> int:
    """i_size_read(): a lockless read (one step)."""
    await Op(OpKind.READ, (I_SIZE, inode.slot), "i_size_read", order=Order.ACQUIRE)
    return inode.i_size


async def i_size_write(inode: File, size: int) -> None:
    """i_size_write(): the writer holds i_rwsem (one step)."""
    await Op(OpKind.WRITE, (I_SIZE, inode.slot), "i_size_write", order=Order.RELEASE)
    inode.i_size = size
    inode.npages = (size + PAGE_SIZE - 1) >> PAGE_SHIFT


# -- the folio lock (include/linux/pagemap.h, mm/filemap.c) ------------------------
async def folio_lock(folio: Page) -> None:
    """folio_lock(): sleep until PG_locked is clear, then set it."""
    me = current_task()
    debug.might_sleep("mm/filemap.c", "folio_lock", "folio")
    if folio.locked is me:
        debug.report("BUG: folio_lock recursion", f"page {folio.pfn} already locked by {me.comm}")
    debug.lockdep_acquire("folio_lock", folio, "write")
    await acquire((PAGE_FRAME, folio.pfn), "folio_lock", lambda: folio.locked is None,
                  order=Order.LOCK_ACQUIRE)
    folio.locked = me


async def folio_trylock(folio: Page) -> bool:
    """folio_trylock(): set PG_locked if it is clear (one step); a trylock
    adds no lockdep dependency into the lock."""
    await rmw((PAGE_FRAME, folio.pfn), "folio_trylock", Order.LOCK_ACQUIRE)
    if folio.locked is not None:
        return False
    folio.locked = current_task()
    debug.lockdep_acquire("folio_lock", folio, "write", trylock=True)
    return True


async def folio_unlock(folio: Page) -> None:
    """folio_unlock(): clear PG_locked and wake the waiters."""
    me = current_task()
    if folio.locked is not me:
        debug.report("BUG: folio_unlock", f"page {folio.pfn} is not locked by {me.comm}")
    await release((PAGE_FRAME, folio.pfn), "folio_unlock", Order.LOCK_RELEASE)
    folio.locked = None
    debug.lockdep_release("folio_lock", folio)
