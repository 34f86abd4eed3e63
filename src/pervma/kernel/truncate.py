"""Truncating a file (mm/truncate.c and fs/open.c's ftruncate, Linux 7.0).

``do_sys_ftruncate`` checks its arguments before anything changes, then, as
a disk filesystem's ->setattr does (ext4_setattr), takes
``mapping->invalidate_lock`` for write around ``truncate_setsize``:

1. ``i_size_write`` — from here a fault's first i_size check gives SIGBUS
   beyond the new end;
2. ``truncate_pagecache``: ``unmap_mapping_range`` from the first page
   beyond EOF (every mm's PTEs, found through ``i_mmap`` under
   ``i_mmap_lock_read``), then ``truncate_inode_pages``: each page-cache
   folio beyond EOF is locked, unmapped again if a fault mapped it
   meanwhile (``unmap_mapping_folio``), removed from the cache and
   released; a partial last page has its tail zeroed; then
   ``unmap_mapping_range`` once more, for private COW copies a racing fault
   made of pages already removed.

A fault holds the folio lock from its page-cache lookup until its PTE is
installed and re-checks i_size under it (memory.py ``filemap_get_page``),
so after truncate returns no PTE maps anything beyond EOF.  Not modelled:
``inode->i_rwsem`` (two truncates still serialise on invalidate_lock), block
freeing, RLIMIT_FSIZE.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.filemap import (
    filemap_invalidate_lock,
    filemap_invalidate_unlock,
    folio_lock,
    folio_unlock,
    i_size_write,
)
from pervma.kernel.memory import unmap_mapping_folio, unmap_mapping_range
from pervma.kernel.mm_types import PAGE_SHIFT, PAGE_SIZE
from pervma.kernel.syscalls import NotModelled, c_ulong
from pervma.kernel.task import current_task
from pervma.sched import Op, OpKind, touch
from pervma.sched.locations import PAGE_CACHE, PAGE_FRAME
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import File, Page

#: ext4's s_maxbytes with extents and 4 KiB blocks ((2^32 - 1) blocks): a
#: larger size is -EFBIG (inode_newsize_ok).
EXT4_MAX_SIZE = ((1 << 32) - 1) << PAGE_SHIFT
#: tmpfs: MAX_LFS_FILESIZE.
MAX_LFS_FILESIZE = (1 << 63) - 1


def filemap_remove_folio(folio: Page) -> None:
    """filemap_remove_folio(): out of the page cache; the cache's reference
    is dropped by the caller."""
    mapping = folio.mapping
    assert mapping is not None
    if mapping.pages.get(folio.index) is folio:
        del mapping.pages[folio.index]
    folio.mapping = None


async def truncate_inode_folio(mapping: File, folio: Page) -> None:
    """truncate_inode_folio() with truncate_cleanup_folio(): a folio still
    mapped (a fault installed it after the first unmap) is unmapped now,
    under the folio lock the caller holds."""
    if folio.mapcount > 0:
        await unmap_mapping_folio(folio)
    await Op(OpKind.WRITE, (PAGE_CACHE, mapping.slot, folio.index), "filemap_remove_folio", order=Order.RCU_ASSIGN)
    filemap_remove_folio(folio)


async def truncate_inode_pages_range(mapping: File, lstart: int) -> None:
    """truncate_inode_pages_range(mapping, lstart, -1): zero the tail of a
    partial first page, then remove every folio from the next page on, each
    under its folio lock."""
    partial = lstart & (PAGE_SIZE - 1)
    start = (lstart + PAGE_SIZE - 1) >> PAGE_SHIFT
    if partial:
        index = lstart >> PAGE_SHIFT
        on_disk = mapping.contents.get(index)
        if on_disk:
            mapping.contents[index] = {o: b for o, b in on_disk.items() if o < partial}
        await Op(OpKind.READ, (PAGE_CACHE, mapping.slot, index), "filemap_lock_folio", order=Order.RCU_DEREFERENCE)
        folio = mapping.pages.get(index)
        if folio is not None:
            folio.refcount += 1
            touch((PAGE_FRAME, folio.pfn))
            await folio_lock(folio)
            if folio.mapping is mapping:  # truncate_inode_partial_folio(): folio_zero_range()
                folio.data = {o: b for o, b in folio.data.items() if o < partial}
            await folio_unlock(folio)
            folio_put(folio, "truncate_inode_partial_folio")
    for index in [i for i in mapping.contents if i >= start]:
        del mapping.contents[index]
    for index in sorted(i for i in mapping.pages if i >= start):
        await Op(OpKind.READ, (PAGE_CACHE, mapping.slot, index), "find_lock_entries", order=Order.RCU_DEREFERENCE)
        folio = mapping.pages.get(index)
        if folio is None:
            continue
        folio.refcount += 1  # the batch's reference
        touch((PAGE_FRAME, folio.pfn))
        await folio_lock(folio)
        if folio.mapping is mapping:
            await truncate_inode_folio(mapping, folio)
            folio_put(folio, "truncate_inode_folio: cache reference")
        await folio_unlock(folio)
        folio_put(folio, "folio_batch_release")


def folio_put(folio: Page, site: str) -> None:
    """folio_put() from a task that need not have an mm (the page allocator
    is the machine's): the last reference frees the page."""
    folio.refcount -= 1
    if folio.refcount < 0:
        debug.report("BUG: Bad page state", f"page {folio.pfn} refcount underflow at {site}")
    if folio.refcount == 0:
        current_task().system.page_cachep.free(folio, site)


async def truncate_pagecache(inode: File, newsize: int) -> None:
    """truncate_pagecache(): unmap, drop the page cache, unmap again."""
    holebegin = (newsize + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    await unmap_mapping_range(inode, holebegin, 0)
    await truncate_inode_pages_range(inode, newsize)
    await unmap_mapping_range(inode, holebegin, 0)


async def truncate_setsize(inode: File, newsize: int) -> None:
    """truncate_setsize(): the new size first, then the page cache.  A file
    that grows has nothing to drop (pagecache_isize_extended() only matters
    for block size < page size)."""
    await i_size_write(inode, newsize)
    await truncate_pagecache(inode, newsize)


def ftruncate_refuses(file: File, length: int) -> int:
    """do_ftruncate()'s checks and inode_newsize_ok()'s limit, in the
    kernel's order: a negative length, a file that is not a regular file
    opened for writing (a device or socket: -EINVAL), a size beyond the
    filesystem's s_maxbytes (-EFBIG)."""
    if length < 0:
        return -errno.EINVAL
    if file.vm_ops is not None and file.vm_ops.special is not None:
        return -errno.EINVAL
    if file.hugetlb_shift and length & ((1 << file.hugetlb_shift) - 1):
        return -errno.EINVAL  # hugetlbfs_setattr(): whole huge pages only
    if length > (MAX_LFS_FILESIZE if file.shmem or file.hugetlb_shift else EXT4_MAX_SIZE):
        return -errno.EFBIG
    return 0


async def do_sys_ftruncate(file: File, length: int) -> int:
    """ftruncate(fd, length): 0 or -errno; nothing changes on an error."""
    length = c_ulong(length)
    if length >= 1 << 63:  # off_t is signed
        length -= 1 << 64
    err = ftruncate_refuses(file, length)
    if err:
        return err
    if file.hugetlb_shift:
        raise NotModelled("ftruncate of a hugetlbfs file is valid on Linux but not modelled")
    await filemap_invalidate_lock(file)
    await truncate_setsize(file, length)
    await filemap_invalidate_unlock(file)
    return 0
