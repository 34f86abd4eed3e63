"""A TCP-zerocopy-like kernel user of VMA locks (net/ipv4/tcp.c).

tcp_zerocopy_receive() maps received pages into a VMA the application
mmap()ed on the socket.  find_tcp_vma() is chosen by ``Config.SERIES_CALLERS``:

* pre-series (7.0): lock_vma_under_rcu(), falling back to mmap_read_lock +
  vma_lookup;
* series (patch 5): the wait-for-writers lookup, no fallback.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.memory import alloc_page, put_page, set_pte_at, zap_page_range
from pervma.kernel.mm_types import PAGE_SHIFT, PAGE_SIZE, Pte, VmOperations
from pervma.kernel.mmap_lock import (
    lock_vma_under_rcu,
    lock_vma_under_rcu_wait,
    mmap_read_lock,
    mmap_read_unlock,
    vma_end_read,
)
from pervma.kernel.sites import call_site

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

tcp_vm_ops = VmOperations("tcp_vm_ops", has_map_pages=False, special="tcp")


@call_site("net/ipv4/tcp.c:find_tcp_vma", pre_form="stub-fallback",
           pre_series="lock_vma_under_rcu() (its #ifdef went in 6.6), else mmap_read_lock + "
           "vma_lookup held across tcp_zerocopy_receive",
           series="the wait-for-writers lookup (patch 5), no mmap_lock fallback",
           scenarios=("tcp-zerocopy-vs-munmap", "tcp-zerocopy-vs-munmap-pre-series"))
async def find_tcp_vma(mm: MmStruct, address: int) -> tuple[VmAreaStruct | None, bool]:
    """Returns (vma, mmap_locked): the VMA read-locked, or found under the
    mmap read lock (pre-series fallback)."""
    if mm.config.SERIES_CALLERS:
        vma = await lock_vma_under_rcu_wait(mm, address)
        if vma is not None and vma.vm_ops is not tcp_vm_ops:
            await vma_end_read(vma)
            return None, False
        return vma, False
    vma = await lock_vma_under_rcu(mm, address)
    if vma is not None:
        if vma.vm_ops is not tcp_vm_ops:
            await vma_end_read(vma)
            return None, False
        return vma, False
    await mmap_read_lock(mm)
    vma = mm.mm_mt.find_covering(address)
    if vma is None or vma.vm_ops is not tcp_vm_ops:
        await mmap_read_unlock(mm)
        return None, False
    return vma, True


async def tcp_zerocopy_receive(mm: MmStruct, address: int, npages: int) -> int:
    """Map npages received pages at address; returns pages mapped or -errno."""
    vma, mmap_locked = await find_tcp_vma(mm, address)
    if vma is None:
        return -errno.EINVAL
    debug.kasan_check(vma, "tcp_zerocopy_receive", "vm_area_struct")
    end = min(address + npages * PAGE_SIZE, vma.vm_end)
    await zap_page_range(mm, address, end)
    mapped = 0
    for addr in range(address, end, PAGE_SIZE):
        page = await alloc_page(mm, zero=False)
        page.data = {0: 0x7C}
        ptl = mm.ptl(addr)
        await ptl.lock()
        if vma.vm_mm is not mm or not (vma.vm_start <= addr < vma.vm_end):
            debug.report("BUG: tcp zerocopy maps outside its VMA", f"{addr:#x} not in {vma}")
        if (addr >> PAGE_SHIFT) in mm.pgtable:
            await ptl.unlock()
            put_page(mm, page, "tcp: raced")
            continue
        page.mapcount = 1
        await set_pte_at(mm, addr >> PAGE_SHIFT, Pte(page, writable=False), "vm_insert_pages")
        await ptl.unlock()
        mapped += 1
    if mmap_locked:
        await mmap_read_unlock(mm)
    else:
        await vma_end_read(vma)
    return mapped
