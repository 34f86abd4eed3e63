"""Page tables and the generic fault handler (mm/memory.c).

Each mm has a page table (vpn -> PTE) guarded by split page-table locks (one
per 2 MiB PTE page).  Pages hold the bytes user code stores.  The fault
handler covers anonymous, zero-page, COW, file read/write and shared faults,
and every place 7.0 returns VM_FAULT_RETRY while holding only the VMA lock:
anon_vma preparation when mmap_read_trylock fails, a file whose vm_ops lack
->map_pages, and waiting for file I/O (a sleeping step).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.filemap import (
    filemap_invalidate_lock_shared,
    filemap_invalidate_unlock_shared,
    folio_lock,
    folio_trylock,
    folio_unlock,
    i_mmap_lock_read,
    i_mmap_lock_write,
    i_mmap_unlock_read,
    i_mmap_unlock_write,
    i_size_read,
)
from pervma.kernel.interval_tree import vma_interval_tree_foreach
from pervma.kernel.mempolicy import get_vma_policy, policy_node
from pervma.kernel.mm_types import PAGE_SHIFT, PMD_SHIFT, Page, Pte, VmFlags
from pervma.kernel.mmap_lock import mmap_read_trylock, mmap_read_unlock, vma_end_read
from pervma.kernel.mmu_notifier import (
    MMU_NOTIFY_CLEAR,
    MMU_NOTIFY_PROTECTION_PAGE,
    MMU_NOTIFY_UNMAP,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
    mmu_notifier_range_init,
)
from pervma.kernel.rmap import __anon_vma_prepare, anon_vma_lock_write, anon_vma_unlock_write
from pervma.kernel.task import current_task
from pervma.sched import Op, OpKind, WaitKind, touch, work
from pervma.sched.locations import PAGE_CACHE, PAGE_FRAME, PTE, TLB, ZONE
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import File, MmStruct, VmAreaStruct

VM_FAULT_OOM = 0x000001
VM_FAULT_SIGBUS = 0x000002
VM_FAULT_MAJOR = 0x000004
VM_FAULT_SIGSEGV = 0x000040
VM_FAULT_NOPAGE = 0x000100
VM_FAULT_RETRY = 0x000400
VM_FAULT_COMPLETED = 0x004000
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV

FAULT_FLAG_WRITE = 0x1
FAULT_FLAG_ALLOW_RETRY = 0x4
FAULT_FLAG_RETRY_NOWAIT = 0x8
FAULT_FLAG_KILLABLE = 0x10
FAULT_FLAG_TRIED = 0x20
FAULT_FLAG_USER = 0x40
FAULT_FLAG_INSTRUCTION = 0x100
FAULT_FLAG_INTERRUPTIBLE = 0x200
FAULT_FLAG_VMA_LOCK = 0x1000
FAULT_FLAG_DEFAULT = FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE | FAULT_FLAG_INTERRUPTIBLE


@dataclass(eq=False, slots=True, init=False)
class VmFault:
    vma: VmAreaStruct
    address: int
    flags: int
    vpn: int  # address >> PAGE_SHIFT, computed once

    def __init__(self, vma: VmAreaStruct, address: int, flags: int) -> None:
        self.vma = vma
        self.address = address
        self.flags = flags
        self.vpn = address >> PAGE_SHIFT


# ---------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------
_VM_WRITE = VmFlags.VM_WRITE
_VM_UFFD_MISSING = VmFlags.VM_UFFD_MISSING
_VM_UFFD_WP = VmFlags.VM_UFFD_WP
# the buddy allocator's zone->lock / pcp-lock critical section, one step
_ALLOC_PAGES = Op(OpKind.RMW, (ZONE,), "alloc_pages", work="page_alloc", order=Order.LOCKED)
_CLEAR_PAGE = work("clear_page")


async def alloc_page(mm: MmStruct, zero: bool = True) -> Page:
    """Page allocation: the allocator/LRU is machine-wide (one location).
    Every caller in the model asks with a gfp that may block (GFP_KERNEL,
    GFP_HIGHUSER_MOVABLE), so might_alloc() in prepare_alloc_pages()
    (mm/page_alloc.c, 7.0) is a might_sleep(): allocating under a spinlock
    or inside an RCU read-side section is a bug."""
    debug.might_sleep("mm/page_alloc.c", "prepare_alloc_pages", "might_alloc")
    await _ALLOC_PAGES
    page = mm.system.page_cachep.alloc("alloc_pages")
    page.data = {}
    page.refcount = 1
    page.mapcount = 0
    page.anon_vma = None
    page.mapping = None
    page.index = 0
    page.zero_page = False
    page.locked = None
    page.nid = 0
    if zero:
        await _CLEAR_PAGE
    return page


async def vma_alloc_folio(vma: VmAreaStruct, address: int, zero: bool = True) -> Page:
    """Models vma_alloc_folio() (mm/mempolicy.c, 7.0) for an anonymous page:
    the VMA's policy, read under the fault's lock, picks the node.  A VMA
    without a policy takes no extra step (the task's default policy: node 0)."""
    nid = 0
    if vma.vm_policy is not None:
        pol, ilx = await get_vma_policy(vma, address)
        nid = policy_node(pol, ilx)
    page = await alloc_page(vma.vm_mm, zero)
    page.nid = nid
    return page


def put_page(mm: MmStruct, page: Page, site: str) -> None:
    if page.zero_page:
        return
    page.refcount -= 1
    if page.refcount < 0:
        debug.report("BUG: Bad page state", f"page {page.pfn} refcount underflow at {site}")
    if page.refcount == 0:
        mm.system.page_cachep.free(page, site)


def linear_page_index(vma: VmAreaStruct, address: int) -> int:
    return vma.vm_pgoff + ((address - vma.vm_start) >> PAGE_SHIFT)


def present_vpns(mm: MmStruct, start: int, end: int) -> list[int]:
    """The present PTEs of [start, end), in address order, looking at
    whichever is smaller: the range or the page table."""
    lo, hi = start >> PAGE_SHIFT, end >> PAGE_SHIFT
    table = mm.pgtable
    if hi - lo <= len(table):
        return [v for v in range(lo, hi) if v in table]
    return sorted(v for v in table if lo <= v < hi)


def pte_loc(mm: MmStruct, vpn: int) -> tuple[str, int, int]:
    return (PTE, mm.id, vpn)


_READ, _WRITE = OpKind.READ, OpKind.WRITE  # enum members looked up once (fault path)
# Page-table entries are read and written with the generic accessors of
# include/linux/pgtable.h (ptep_get(), ptep_get_lockless(), set_pte_at(),
# ptep_get_and_clear()): READ_ONCE/WRITE_ONCE-like, single-copy atomic and
# unordered (an architecture's xchg in ptep_get_and_clear is stronger).
_ONCE = Order.ONCE


_PTE_PAGE_SHIFT = PMD_SHIFT - PAGE_SHIFT  # a vpn to its PTE page (MmStruct.ptl's key)


async def set_pte_at(mm: MmStruct, vpn: int, pte: Pte | None, label: str,
                     work: str | None = None) -> None:
    """``work`` names the simulator's cost of the step (default: a PTE
    install when ``pte`` is set, nothing when it is cleared).  The caller
    holds the PTE page's lock (debug.assert_pte_locked)."""
    debug.assert_pte_locked(mm.ptls.get(vpn >> _PTE_PAGE_SHIFT), mm, vpn << PAGE_SHIFT, label)
    await Op(_WRITE, pte_loc(mm, vpn), label, None, work or ("pte_install" if pte else None), False,
             None, False, _ONCE)
    if pte is None:
        mm.pgtable.pop(vpn, None)
    else:
        mm.pgtable[vpn] = pte


def check_fault_vma(vmf: VmFault, where: str) -> None:
    """The fault is served on a VMA that is live, attached, of this mm and
    covering the address (checked where a PTE is about to be installed)."""
    vma = vmf.vma
    mm = current_task().mm
    if vma.freed:  # KASAN's check inline, its report out of line (as KASAN compiles it)
        debug.kasan_check(vma, where, "vm_area_struct")
    if vma.vm_mm is not mm:
        debug.report("BUG: fault on a VMA of another mm",
                     f"{where}: {vma} belongs to {vma.vm_mm}, the fault is in {mm}")
    if mm is not None and mm.config.PER_VMA_LOCK and vma.vm_refcnt.counter == 0:
        debug.report("BUG: fault on a detached VMA", f"{where}: {vma} at {vmf.address:#x}")
    if not (vma.vm_start <= vmf.address < vma.vm_end):
        debug.report("BUG: fault outside its VMA", f"{where}: {vmf.address:#x} not in {vma}")


# ---------------------------------------------------------------------------
# Locks the fault path holds
# ---------------------------------------------------------------------------
async def release_fault_lock(vmf: VmFault) -> None:
    """release_fault_lock() (include/linux/mm.h)."""
    if vmf.flags & FAULT_FLAG_VMA_LOCK:
        await vma_end_read(vmf.vma)
    else:
        await mmap_read_unlock(vmf.vma.vm_mm)


async def vmf_anon_prepare(vmf: VmFault) -> int:
    """Models vmf_anon_prepare()/__vmf_anon_prepare() (6.12+): preparing the
    anon_vma looks at neighbouring VMAs, which only mmap_lock protects, so
    under the VMA lock it needs mmap_read_trylock; if that fails, drop the
    VMA lock and retry the whole fault under mmap_lock."""
    vma = vmf.vma
    if vma.anon_vma is not None:
        return 0
    mm = vma.vm_mm
    locked = False
    # historical 6.4 (B09): the anon_vma was prepared under the VMA lock alone
    if vmf.flags & FAULT_FLAG_VMA_LOCK and not mm.config.bug("B09"):
        if not await mmap_read_trylock(mm):
            await vma_end_read(vma)
            return VM_FAULT_RETRY
        locked = True
    ret = VM_FAULT_OOM if await __anon_vma_prepare(vma) else 0  # -ENOMEM is not a vm_fault_t
    if locked:
        await mmap_read_unlock(mm)
    return ret


def vmf_can_call_fault(vmf: VmFault) -> bool:
    """A driver without ->map_pages is not audited for faulting without
    mmap_lock: under the VMA lock the caller must retry."""
    ops = vmf.vma.vm_ops
    return not (vmf.flags & FAULT_FLAG_VMA_LOCK) or ops is None or ops.has_map_pages


# ---------------------------------------------------------------------------
# Fault handlers
# ---------------------------------------------------------------------------
async def do_anonymous_page(vmf: VmFault) -> int:
    vma = vmf.vma
    mm = vma.vm_mm
    ptl = mm.ptl(vmf.address)
    if not vmf.flags & FAULT_FLAG_WRITE:
        await ptl.lock()
        if vmf.vpn not in mm.pgtable:
            if vma.vm_flags & _VM_UFFD_MISSING:  # userfaultfd_missing()
                await ptl.unlock()
                return await _handle_userfault(vmf, _VM_UFFD_MISSING)
            check_fault_vma(vmf, "do_anonymous_page")
            await set_pte_at(mm, vmf.vpn, Pte(mm.system.zero_page, writable=False), "set_pte_at(zero page)")
        await ptl.unlock()
        return 0
    ret = await vmf_anon_prepare(vmf)
    if ret:
        return ret
    page = await vma_alloc_folio(vma, vmf.address)
    await ptl.lock()
    if vmf.vpn in mm.pgtable:
        await ptl.unlock()
        put_page(mm, page, "do_anonymous_page: raced")
        return 0
    if vma.vm_flags & _VM_UFFD_MISSING:  # userfaultfd_missing(), checked under the PTL
        await ptl.unlock()
        put_page(mm, page, "do_anonymous_page: userfault")
        return await _handle_userfault(vmf, _VM_UFFD_MISSING)
    check_fault_vma(vmf, "do_anonymous_page")
    page.anon_vma = vma.anon_vma
    page.index = linear_page_index(vma, vmf.address)
    page.mapcount = 1
    await set_pte_at(mm, vmf.vpn, Pte(page, bool(vma.vm_flags & _VM_WRITE), True), "set_pte_at(anon)")
    await ptl.unlock()
    return 0


async def _handle_userfault(vmf: VmFault, reason: int) -> int:
    """handle_userfault(vmf, reason) (kernel/userfaultfd.py): VM_UFFD_MISSING
    from do_anonymous_page(), VM_UFFD_WP from do_wp_page()."""
    from pervma.kernel.userfaultfd import handle_userfault

    return await handle_userfault(vmf, reason)


async def filemap_get_page(vmf: VmFault) -> Page | int:
    """Models filemap_fault() (shmem_fault() likewise, 7.0): SIGBUS at or
    beyond the end of the file; the page from the page cache, or read it in;
    then, with a reference held, take the folio lock, check that truncate did
    not remove the folio meanwhile (``mapping`` changed: look again) and
    re-check i_size under the lock, as a truncate may have shrunk the file
    since the first check.  Returns the page locked and referenced.  Reading
    in drops the fault lock first (maybe_unlock_mmap_for_io), fills the
    cache under invalidate_lock (shared), sleeps for the I/O and returns
    RETRY so the fault is taken again."""
    vma = vmf.vma
    file = vma.vm_file
    assert file is not None
    index = linear_page_index(vma, vmf.address)
    if index >= _max_idx(await i_size_read(file)):
        return VM_FAULT_SIGBUS
    mm = vma.vm_mm
    while True:
        await Op(OpKind.READ, (PAGE_CACHE, file.slot, index), "filemap_get_folio", order=Order.RCU_DEREFERENCE)
        page = file.pages.get(index)
        if page is None:
            if file.resident:
                page = _new_cache_page(mm, file, index, "resident file page")
            elif file.shmem:
                page = await alloc_page(mm)
                await Op(OpKind.WRITE, (PAGE_CACHE, file.slot, index), "shmem_add_to_page_cache", order=Order.RCU_ASSIGN)
                if index in file.pages:
                    put_page(mm, page, "shmem_get_folio: raced")
                    page = file.pages[index]
                else:
                    page.mapping, page.index = file, index
                    file.pages[index] = page
            elif vmf.flags & FAULT_FLAG_ALLOW_RETRY and not vmf.flags & FAULT_FLAG_RETRY_NOWAIT:
                await release_fault_lock(vmf)
                await filemap_invalidate_lock_shared(file)
                await Op(OpKind.LOCAL, None, "filemap_read_folio: wait for I/O", work="io", sleeps=True,
                         wait=WaitKind.IO)
                await _add_file_page(mm, file, index)
                await filemap_invalidate_unlock_shared(file)
                return VM_FAULT_RETRY | VM_FAULT_MAJOR
            else:
                await filemap_invalidate_lock_shared(file)
                await Op(OpKind.LOCAL, None, "filemap_read_folio: wait for I/O", work="io", sleeps=True,
                         wait=WaitKind.IO)
                page = await _add_file_page(mm, file, index)
                await filemap_invalidate_unlock_shared(file)
        page.refcount += 1  # filemap_get_folio()'s reference
        touch((PAGE_FRAME, page.pfn))
        if not await lock_folio_maybe_drop_mmap(vmf, page):
            return VM_FAULT_RETRY
        if page.mapping is not file:  # truncated while we slept on the lock
            await folio_unlock(page)
            put_page(mm, page, "filemap_fault: truncated")
            continue
        if index >= _max_idx(await i_size_read(file)):
            await folio_unlock(page)
            put_page(mm, page, "filemap_fault: beyond EOF")
            return VM_FAULT_SIGBUS
        return page


async def lock_folio_maybe_drop_mmap(vmf: VmFault, folio: Page) -> bool:
    """lock_folio_maybe_drop_mmap() (mm/filemap.c, 7.0): try the folio lock;
    if it is held (truncate, another fault) and the fault may retry, drop
    the fault lock first (maybe_unlock_mmap_for_io), sleep for the folio
    lock, then release it and the reference and retry the fault (False).
    Without ALLOW_RETRY, or with RETRY_NOWAIT (the model does not return
    early there), it sleeps holding the fault lock."""
    if await folio_trylock(folio):
        return True
    if vmf.flags & FAULT_FLAG_ALLOW_RETRY and not vmf.flags & FAULT_FLAG_RETRY_NOWAIT:
        mm = vmf.vma.vm_mm  # the VMA may go once its lock is dropped
        await release_fault_lock(vmf)
        await folio_lock(folio)
        await folio_unlock(folio)  # filemap_fault's out_retry
        put_page(mm, folio, "filemap_fault: out_retry")
        return False
    await folio_lock(folio)
    return True


def _max_idx(i_size: int) -> int:
    """DIV_ROUND_UP(i_size, PAGE_SIZE): the first page index beyond EOF."""
    return (i_size + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT


async def _fault_done(vmf: VmFault, page: Page) -> None:
    """Unlock and release the folio __do_fault() returned (folio_unlock() +
    folio_put() in do_read_fault() and its siblings)."""
    await folio_unlock(page)
    put_page(vmf.vma.vm_mm, page, "folio_put")


async def _add_file_page(mm: MmStruct, file: File, index: int) -> Page:
    await Op(OpKind.WRITE, (PAGE_CACHE, file.slot, index), "filemap_add_folio",
             order=Order.RCU_ASSIGN)  # xas_store() publishes the slot
    page = file.pages.get(index)
    if page is None:
        page = _new_cache_page(mm, file, index, "filemap_add_folio")
    return page


def _new_cache_page(mm: MmStruct, file: File, index: int, site: str) -> Page:
    """A page-cache page holding the file's bytes at ``index`` (the cache's
    own reference).  A resident file's pages were in the cache before anything
    ran: they are made on first lookup, with no allocation step and no I/O."""
    page = mm.system.page_cachep.alloc(site)
    page.data, page.refcount, page.mapcount = dict(file.contents.get(index, {})), 1, 0
    page.anon_vma, page.mapping, page.index, page.zero_page = None, file, index, False
    page.locked = None
    file.pages[index] = page
    return page


async def __do_fault(vmf: VmFault) -> Page | int:
    """->fault for a file VMA: only drivers with ->map_pages may fault under
    the VMA lock (vmf_can_call_fault); then the page-cache lookup."""
    if not vmf_can_call_fault(vmf):
        await vma_end_read(vmf.vma)
        return VM_FAULT_RETRY
    return await filemap_get_page(vmf)


async def finish_fault(vmf: VmFault, page: Page, new_anon: bool, writable: bool) -> int:
    """Install the PTE for ``page`` under the page-table lock, unless another
    fault got there first (then a freshly allocated page is dropped)."""
    vma = vmf.vma
    mm = vma.vm_mm
    ptl = mm.ptl(vmf.address)
    await ptl.lock()
    if vmf.vpn in mm.pgtable:
        await ptl.unlock()
        if new_anon:
            put_page(mm, page, "finish_fault: raced")
        return 0
    check_fault_vma(vmf, "finish_fault")
    if new_anon:
        page.anon_vma, page.index, page.mapcount = vma.anon_vma, linear_page_index(vma, vmf.address), 1
    else:
        page.mapcount += 1
        page.refcount += 1
        touch((PAGE_FRAME, page.pfn))
    await set_pte_at(mm, vmf.vpn, Pte(page, writable=writable, dirty=writable), "finish_fault: set_pte_at")
    await ptl.unlock()
    return 0


async def do_read_fault(vmf: VmFault) -> int:
    page = await __do_fault(vmf)
    if isinstance(page, int):
        return page
    ret = await finish_fault(vmf, page, new_anon=False, writable=False)
    await _fault_done(vmf, page)
    return ret


async def do_cow_fault(vmf: VmFault) -> int:
    """A write fault on a private file mapping: copy the file page into a new
    anonymous page (which needs an anon_vma, hence mmap_lock, first)."""
    ret = await vmf_anon_prepare(vmf) if vmf_can_call_fault(vmf) else 0
    if ret:
        return ret
    src = await __do_fault(vmf)
    if isinstance(src, int):
        return src
    page = await vma_alloc_folio(vmf.vma, vmf.address, zero=False)
    await work("copy_page")
    page.data = dict(src.data)
    ret = await finish_fault(vmf, page, new_anon=True, writable=True)
    await _fault_done(vmf, src)
    return ret


async def do_shared_fault(vmf: VmFault) -> int:
    """A write fault on a shared file mapping: map the page-cache page
    writable, then fault_dirty_shared_page() (dirty the folio, dirty-page
    throttling, the file's mtime): local work for the simulator."""
    page = await __do_fault(vmf)
    if isinstance(page, int):
        return page
    ret = await finish_fault(vmf, page, new_anon=False, writable=True)
    await folio_unlock(page)  # fault_dirty_shared_page() unlocks, then dirties
    await work("dirty_page", "fault_dirty_shared_page")
    put_page(vmf.vma.vm_mm, page, "folio_put")
    return ret


async def do_wp_page(vmf: VmFault) -> int:
    """A write to a present read-only PTE: reuse an exclusive anon page, make
    a shared page writable, or copy (wp_page_copy)."""
    vma = vmf.vma
    mm = vma.vm_mm
    ptl = mm.ptl(vmf.address)
    await ptl.lock()
    pte = mm.pgtable.get(vmf.vpn)
    if pte is None or pte.writable:
        await ptl.unlock()
        return 0
    if pte.uffd_wp and vma.vm_flags & _VM_UFFD_WP:  # userfaultfd_pte_wp(), under the PTL
        await ptl.unlock()
        return await _handle_userfault(vmf, _VM_UFFD_WP)
    old = pte.page
    debug.kasan_check(old, "do_wp_page", "page")
    touch((PAGE_FRAME, old.pfn))  # the reuse decision reads the page's counts
    if vma.vm_flags & VmFlags.VM_SHARED:
        check_fault_vma(vmf, "wp_page_shared")
        await set_pte_at(mm, vmf.vpn, Pte(old, writable=True, dirty=True), "wp_page_shared")
        await ptl.unlock()
        return 0
    if old.anon_vma is not None and old.mapcount == 1 and old.refcount == 1:
        check_fault_vma(vmf, "wp_page_reuse")
        await set_pte_at(mm, vmf.vpn, Pte(old, writable=True, dirty=True), "wp_page_reuse")
        await ptl.unlock()
        return 0
    await ptl.unlock()
    ret = await vmf_anon_prepare(vmf)
    if ret:
        return ret
    new = await vma_alloc_folio(vma, vmf.address, zero=old.zero_page)
    if not old.zero_page:
        await work("copy_page")
        new.data = dict(old.data)
    # wp_page_copy(): the secondary MMUs drop the old page before the PTE changes
    rng = mmu_notifier_range_init(MMU_NOTIFY_CLEAR, 0, mm, vmf.vpn << PAGE_SHIFT, (vmf.vpn + 1) << PAGE_SHIFT)
    await mmu_notifier_invalidate_range_start(rng)
    await ptl.lock()
    # pte_same() against the entry the fault read: another fault may have
    # reused the page (made this very entry writable and written through it)
    # since the lock was dropped, and the copy would lose that store
    if mm.pgtable.get(vmf.vpn) is not pte:
        await ptl.unlock()
        put_page(mm, new, "wp_page_copy: raced")
        await mmu_notifier_invalidate_range_end(rng)
        return 0
    check_fault_vma(vmf, "wp_page_copy")
    new.anon_vma, new.index, new.mapcount = vma.anon_vma, linear_page_index(vma, vmf.address), 1
    await set_pte_at(mm, vmf.vpn, Pte(new, writable=True, dirty=True), "wp_page_copy")
    await flush_tlb(mm, "wp_page_copy: flush")
    old.mapcount -= 1
    touch((PAGE_FRAME, old.pfn))
    put_page(mm, old, "wp_page_copy")
    await ptl.unlock()
    await mmu_notifier_invalidate_range_end(rng)
    return 0


async def handle_mm_fault(vma: VmAreaStruct, address: int, flags: int) -> int:
    """Models handle_mm_fault().  On RETRY or COMPLETED the lock the caller
    held (VMA or mmap read lock) has already been released."""
    if flags & FAULT_FLAG_VMA_LOCK and flags & FAULT_FLAG_RETRY_NOWAIT:
        debug.report("WARNING: sanitize_fault_flags", "FAULT_FLAG_VMA_LOCK with RETRY_NOWAIT")
        return VM_FAULT_SIGSEGV
    vmf = VmFault(vma, address & ~0xFFF, flags)
    check_fault_vma(vmf, "handle_mm_fault")
    mm = vma.vm_mm
    vpn = vmf.vpn
    await Op(_READ, pte_loc(mm, vpn), "handle_pte_fault: read pte", None, None, False, None, False,
             _ONCE)  # ptep_get_lockless()
    pte = mm.pgtable.get(vpn)
    if pte is None:
        if vma.is_anonymous():
            return await do_anonymous_page(vmf)
        if not flags & FAULT_FLAG_WRITE:
            return await do_read_fault(vmf)
        if not vma.vm_flags & VmFlags.VM_SHARED:
            return await do_cow_fault(vmf)
        return await do_shared_fault(vmf)
    if flags & FAULT_FLAG_WRITE and not pte.writable:
        return await do_wp_page(vmf)
    return 0


# ---------------------------------------------------------------------------
# Page-table walks of the syscalls
# ---------------------------------------------------------------------------
async def flush_tlb(mm: MmStruct, label: str) -> None:
    """A TLB shootdown to every other CPU running mm (a cost; the model's
    page tables are the TLB)."""
    await Op(OpKind.LOCAL, (TLB, mm.id), label, work="tlb_flush")


#: How many pages an mmu_gather holds before it must be flushed: the on-stack
#: bundle and MAX_GATHER_BATCH_COUNT batch pages of MAX_GATHER_BATCH entries
#: each, one entry of every batch kept free (include/asm-generic/tlb.h and
#: __tlb_remove_folio_pages_size() in mm/mmu_gather.c, 6.18, x86-64, 4 KiB
#: pages: 7 + 19 * 509).
MMU_GATHER_PAGES = (8 - 1) + (10000 // 510) * (510 - 1)


async def zap_page_range(mm: MmStruct, start: int, end: int, event: int = MMU_NOTIFY_UNMAP) -> int:
    """unmap_page_range(): clear the PTEs of [start, end), one PTE page at a
    time under its page-table lock, drop the page references into an
    mmu_gather, and flush TLBs as zap_pte_range() must (6.18):

    * a dirty page of a file or shmem mapping (not anonymous) has its rmap
      removal delayed until the TLB is flushed (tlb_delay_rmap()), so the
      PTE page it was in is flushed before its lock is dropped;
    * a full gather (MMU_GATHER_PAGES) is flushed where it filled, the
      lock dropped and taken again for the rest of the PTE page;
    * whatever is left is flushed once at the end (tlb_finish_mmu()).

    Each flush is a shootdown of every other CPU running mm; a munmap of a
    written shared mapping by one thread thus interrupts its siblings once
    per 2 MiB.  Inside mmu_notifier_invalidate_range_start/end with
    ``event``: MMU_NOTIFY_UNMAP as unmap_vmas() (munmap, exit),
    MMU_NOTIFY_CLEAR as zap_page_range_single() (madvise, drivers)."""
    rng = mmu_notifier_range_init(event, 0, mm, start, end)
    await mmu_notifier_invalidate_range_start(rng)
    zapped = 0
    gathered = 0  # pages in the mmu_gather since its last flush
    pgtable = mm.pgtable
    # One group per PTE page; built before the walk so that no iterator of
    # itertools is live across a step (the checker keys states by frames'
    # locals, and a groupby's position is not visible to it).
    groups = [list(g) for _key, g in groupby(present_vpns(mm, start, end), key=lambda v: v >> 9)]
    for vpns in groups:
        ptl = mm.ptl(vpns[0] << PAGE_SHIFT)
        await ptl.lock()
        delayed_rmap = False
        for vpn in vpns:
            pte = pgtable.get(vpn)
            if pte is None:
                continue
            page = pte.page
            # work="zap_page", also=the page (positional: a keyword call is slower)
            await Op(_WRITE, pte_loc(mm, vpn), "zap_pte_range", None, "zap_page", False,
                     (PAGE_FRAME, page.pfn), False, _ONCE)
            del pgtable[vpn]
            if pte.dirty and page.mapping is not None and page.anon_vma is None:  # !folio_test_anon
                delayed_rmap = True
            zap_present_page(mm, page)
            zapped += 1
            gathered += 1
            if gathered >= MMU_GATHER_PAGES:  # the gather is full: flush, go on
                await flush_tlb(mm, "zap_pte_range: tlb_flush_mmu (gather full)")
                gathered, delayed_rmap = 0, False
                await ptl.unlock()
                await ptl.lock()
        if delayed_rmap:
            await flush_tlb(mm, "zap_pte_range: tlb_flush_mmu_tlbonly (delayed rmap)")
            gathered = 0
        await ptl.unlock()
    await mmu_notifier_invalidate_range_end(rng)
    if gathered:
        await flush_tlb(mm, "tlb_finish_mmu")
    return zapped


def zap_present_page(mm: MmStruct, page: Page) -> None:
    """zap_present_folio_ptes() after the PTE is cleared: the mapping goes;
    an anonymous or COW page drops the mapping's reference, a page-cache page
    keeps the cache's."""
    if page.zero_page:
        return
    page.mapcount -= 1
    if page.mapping is not None and page.anon_vma is None:
        page.refcount -= 1
    else:
        put_page(mm, page, "zap_pte_range")


# ---------------------------------------------------------------------------
# Unmapping a file range from every mm that maps it (truncate)
# ---------------------------------------------------------------------------
async def zap_page_range_single(vma: VmAreaStruct, start: int, end: int) -> None:
    """zap_page_range_single() for unmap_mapping_range(): the caller holds
    i_mmap_rwsem, not the VMA's mm locks, so faults run meanwhile; each PTE
    page of the range is locked (zap_pte_range's pte_offset_map_lock) and
    its present PTEs are found under that lock, which serialises the zap
    with a fault installing a PTE.  Private COW copies go too (even_cows,
    as truncate asks)."""
    mm = vma.vm_mm
    pgtable = mm.pgtable
    zapped = 0
    rng = mmu_notifier_range_init(MMU_NOTIFY_CLEAR, 0, mm, start, end)
    await mmu_notifier_invalidate_range_start(rng)
    addr = start
    while addr < end:
        nxt = min(end, ((addr >> PMD_SHIFT) + 1) << PMD_SHIFT)
        ptl = mm.ptl(addr)
        await ptl.lock()
        for vpn in present_vpns(mm, addr, nxt):
            page = pgtable[vpn].page
            await Op(_WRITE, pte_loc(mm, vpn), "zap_pte_range", None, "zap_page", False, (PAGE_FRAME, page.pfn),
                     False, _ONCE)
            del pgtable[vpn]
            zap_present_page(mm, page)
            zapped += 1
        await ptl.unlock()
        addr = nxt
    await mmu_notifier_invalidate_range_end(rng)
    if zapped:
        await flush_tlb(mm, "zap_page_range_single: flush")


async def unmap_mapping_range_vma(vma: VmAreaStruct, start: int, end: int) -> None:
    """unmap_mapping_range_vma()."""
    await zap_page_range_single(vma, start, end)


async def unmap_mapping_range_tree(mapping: File, first_index: int, last_index: int) -> None:
    """unmap_mapping_range_tree(): each VMA of the interval tree that maps a
    page of [first_index, last_index] has that part zapped."""
    for vma in vma_interval_tree_foreach(mapping, first_index, last_index):
        vba = vma.vm_pgoff
        vea = vba + ((vma.vm_end - vma.vm_start) >> PAGE_SHIFT) - 1
        zba = max(first_index, vba)
        zea = min(last_index, vea)
        await unmap_mapping_range_vma(vma, ((zba - vba) << PAGE_SHIFT) + vma.vm_start,
                                      ((zea - vba + 1) << PAGE_SHIFT) + vma.vm_start)


async def unmap_mapping_pages(mapping: File, start: int, nr: int) -> None:
    """unmap_mapping_pages() (mm/memory.c, 7.0): walk the file's VMAs under
    i_mmap_lock_read; nr == 0 means to the end of the file."""
    first_index = start
    last_index = start + nr - 1 if nr else (1 << 64) - 1
    await i_mmap_lock_read(mapping)
    if mapping.i_mmap:
        await unmap_mapping_range_tree(mapping, first_index, last_index)
    await i_mmap_unlock_read(mapping)


async def unmap_mapping_folio(folio: Page) -> None:
    """unmap_mapping_folio() (mm/memory.c): the caller holds the folio lock
    (truncate); the folio's one index in every VMA mapping it goes."""
    mapping = folio.mapping
    assert mapping is not None
    await i_mmap_lock_read(mapping)
    if mapping.i_mmap:
        await unmap_mapping_range_tree(mapping, folio.index, folio.index)
    await i_mmap_unlock_read(mapping)


async def unmap_mapping_range(mapping: File, holebegin: int, holelen: int) -> None:
    """unmap_mapping_range(mapping, holebegin, holelen, even_cows=1): from
    the page holding holebegin, holelen rounded up to pages (0: to the end)."""
    hba = holebegin >> PAGE_SHIFT
    hlen = (holelen + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT
    await unmap_mapping_pages(mapping, hba, hlen)


async def change_protection(vma: VmAreaStruct, start: int, end: int, newflags: VmFlags) -> None:
    """mprotect's PTE update: drop write (and, for PROT_NONE, all) access."""
    mm = vma.vm_mm
    changed = False
    for vpn in present_vpns(mm, start, end):
        pte = mm.pgtable[vpn]
        readable = bool(newflags & (VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_EXEC))
        writable = pte.writable and bool(newflags & VmFlags.VM_WRITE)
        if readable != pte.readable or writable != pte.writable:
            ptl = mm.ptl(vpn << PAGE_SHIFT)
            await ptl.lock()
            await set_pte_at(mm, vpn, Pte(pte.page, writable=writable, dirty=pte.dirty, readable=readable,
                                          uffd_wp=pte.uffd_wp), "change_pte_range", "change_pte")
            await ptl.unlock()
            changed = True
    if changed:
        await flush_tlb(mm, "change_protection: flush")


async def move_page_tables(old_vma: VmAreaStruct, old_addr: int, new_vma: VmAreaStruct, new_addr: int,
                           length: int, need_rmap_locks: bool = False) -> None:
    """mremap's PTE move: each PTE of the old range goes to the new one (the
    present ones only are visited, so a huge sparse range costs its PTEs),
    inside an mmu notifier range (MMU_NOTIFY_UNMAP) over the old range.
    As move_ptes() does, the old and the new page-table locks are both held
    (spin_lock_nested) while a PTE is read, cleared and set again: an rmap
    walker holding neither mmap_lock nor a VMA lock (truncate's
    unmap_mapping_range) sees the PTE in one place or the other, never
    in neither, and a PTE it zapped is not moved back to life.  With
    need_rmap_locks (copy_vma merged into a VMA an rmap walk may visit
    first) the file's i_mmap_rwsem and the anon_vma lock are held for write
    over the move (take_rmap_locks(), once per PMD extent in the kernel: the
    model's ranges fit in one)."""
    mm = old_vma.vm_mm
    rng = mmu_notifier_range_init(MMU_NOTIFY_UNMAP, 0, mm, old_addr, old_addr + length)
    await mmu_notifier_invalidate_range_start(rng)
    file = old_vma.vm_file if need_rmap_locks else None
    av = old_vma.anon_vma if need_rmap_locks else None
    if file is not None:
        await i_mmap_lock_write(file)
    if av is not None:
        await anon_vma_lock_write(av)
    clear_wp = _uffd_without_event_remap(old_vma)
    for ovpn in present_vpns(mm, old_addr, old_addr + length):
        nvpn = (new_addr >> PAGE_SHIFT) + ovpn - (old_addr >> PAGE_SHIFT)
        ptl = mm.ptl(ovpn << PAGE_SHIFT)
        nptl = mm.ptl(nvpn << PAGE_SHIFT)
        await ptl.lock()
        if nptl is not ptl:
            await nptl.lock()
        pte = mm.pgtable.get(ovpn)
        if pte is not None:
            await set_pte_at(mm, ovpn, None, "move_ptes: clear old")
            if pte.uffd_wp and clear_wp:  # move_ptes(): need_clear_uffd_wp
                pte = Pte(pte.page, pte.writable, pte.dirty, pte.readable)
            await set_pte_at(mm, nvpn, pte, "move_ptes: set new")
        if nptl is not ptl:
            await nptl.unlock()
        await ptl.unlock()
    if av is not None:
        await anon_vma_unlock_write(av)
    if file is not None:
        await i_mmap_unlock_write(file)
    await flush_tlb(mm, "move_page_tables: flush")
    await mmu_notifier_invalidate_range_end(rng)


def _uffd_without_event_remap(vma: VmAreaStruct) -> bool:
    """vma_has_uffd_without_event_remap(): mremap drops this VMA's
    registration, so the moved PTEs lose their uffd-wp bit."""
    ctx = vma.vm_userfaultfd_ctx
    return ctx is not None and not ctx.features & (1 << 2)  # UFFD_FEATURE_EVENT_REMAP


async def copy_page_range(dst: VmAreaStruct, src: VmAreaStruct) -> None:
    """fork's PTE copy: private writable anon pages become COW (read-only in
    both), everything else is shared as is.  Skipped, as vma_needs_copy()
    does, for VMAs without anon_vma: the child faults those in."""
    if src.anon_vma is None:
        return
    smm, dmm = src.vm_mm, dst.vm_mm
    cow = not src.vm_flags & VmFlags.VM_SHARED and src.vm_flags & VmFlags.VM_MAYWRITE
    wrprotected = False
    rng = None
    if cow:  # the parent's PTEs lose write access: MMU_NOTIFY_PROTECTION_PAGE
        rng = mmu_notifier_range_init(MMU_NOTIFY_PROTECTION_PAGE, 0, smm, src.vm_start, src.vm_end)
        await mmu_notifier_invalidate_range_start(rng)
    for vpn in present_vpns(smm, src.vm_start, src.vm_end):
        ptl = smm.ptl(vpn << PAGE_SHIFT)
        await ptl.lock()
        pte = smm.pgtable.get(vpn)
        if pte is not None:
            page = pte.page
            debug.kasan_check(page, "copy_present_pte", "page")
            if cow and pte.writable:
                await set_pte_at(smm, vpn, Pte(page, writable=False, dirty=pte.dirty, readable=pte.readable,
                                               uffd_wp=pte.uffd_wp), "copy_present_pte: wrprotect parent")
                wrprotected = True
            # the child keeps the uffd-wp bit only if its VMA is still uffd-wp registered
            child_pte = Pte(page, writable=bool(pte.writable and not cow), dirty=pte.dirty,
                            readable=pte.readable, uffd_wp=pte.uffd_wp and bool(dst.vm_flags & _VM_UFFD_WP))
            if not page.zero_page:
                page.mapcount += 1
                page.refcount += 1
                touch((PAGE_FRAME, page.pfn))
            dmm.pgtable[vpn] = child_pte
        await ptl.unlock()
    if rng is not None:
        await mmu_notifier_invalidate_range_end(rng)
    if wrprotected:
        await flush_tlb(smm, "dup_mmap: flush_tlb_mm")
