"""mm/userfaultfd.c: registration of VMAs, the fill operations and UFFDIO_MOVE.

The other half, fs/userfaultfd.c (the context, handle_userfault, the ioctl
entries, the uapi constants), is ``userfaultfd.py``; its docstring says what
is modelled and which kernel version is followed (mm/userfaultfd.c as of
kernel-patches/bpf ``0e6c0af4``, 7.0/7.1-rc with the mfill_state refactor;
the locking of the fills is unchanged from 7.0).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.memory import (
    alloc_page,
    flush_tlb,
    linear_page_index,
    present_vpns,
    pte_loc,
    put_page,
    set_pte_at,
)
from pervma.kernel.mm import vm_flags_reset
from pervma.kernel.mm_types import PAGE_SHIFT, PAGE_SIZE, Pte, VmFlags
from pervma.kernel.mmap_lock import (
    lock_vma_under_rcu,
    mmap_assert_locked,
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
    vma_end_read,
    vma_start_read_locked,
    vma_start_read_locked_nested,
    vma_start_write,
)
from pervma.kernel.mmu_notifier import (
    MMU_NOTIFY_CLEAR,
    mmu_notifier_invalidate_range_end,
    mmu_notifier_invalidate_range_start,
    mmu_notifier_range_init,
)
from pervma.kernel.rmap import __anon_vma_prepare
from pervma.kernel.sites import call_site
from pervma.kernel.task import current_task, fatal_signal_pending
from pervma.kernel.vma import vma_modify, vma_write_fields, vmg_from_vma
from pervma.sched import Op, OpKind
from pervma.sched.locations import PAGE_FRAME
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, Page, VmAreaStruct
    from pervma.kernel.userfaultfd import UserfaultfdCtx

VM_UFFD_MISSING = VmFlags.VM_UFFD_MISSING
VM_UFFD_WP = VmFlags.VM_UFFD_WP
__VM_UFFD_FLAGS = VM_UFFD_MISSING | VM_UFFD_WP
UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES = 2  # uapi (exported by userfaultfd.py)
MFILL_ATOMIC_COPY, MFILL_ATOMIC_ZEROPAGE = 1, 2
MFILL_ATOMIC_WP = 1 << 3  # a uffd_flags_t bit above the mode bits: install the PTE uffd-wp
_VM_SHARED = VmFlags.VM_SHARED
_RMW, _READ = OpKind.RMW, OpKind.READ


async def mmget_not_zero(mm: MmStruct) -> bool:
    await Op(_RMW, mm.mm_users.loc, "mmget_not_zero", order=Order.FULL)
    if mm.mm_users.counter == 0:
        return False
    mm.mm_users.counter += 1
    return True


async def _mmput(mm: MmStruct) -> None:
    from pervma.kernel.mmap import mmput

    await mmput(mm)


async def vma_modify_flags_uffd(prev: VmAreaStruct | None, vma: VmAreaStruct, start: int, end: int,
                                new_flags: VmFlags, ctx: UserfaultfdCtx | None) -> VmAreaStruct | int:
    """Models vma_modify_flags_uffd() (mm/vma.c; kept here beside its only
    callers): merge [start, end) with a neighbour of the same flags and
    context, else split so that one VMA covers exactly the range."""
    vmg = vmg_from_vma(vma, prev, start, end)
    vmg.flags = new_flags
    vmg.uffd_ctx = ctx
    return await vma_modify(vmg)


async def userfaultfd_set_ctx(vma: VmAreaStruct, ctx: UserfaultfdCtx | None, vm_flags: int) -> None:
    """userfaultfd_set_ctx(): write-lock the VMA (a per-VMA fault must not
    see the context change under it), then set the context and the flags."""
    await vma_start_write(vma)
    await vma_write_fields(vma, "userfaultfd_set_ctx")
    vma.vm_userfaultfd_ctx = ctx
    # userfaultfd_set_vm_flags(): vm_flags_reset() under the write lock taken above
    vm_flags_reset(vma, VmFlags((vma.vm_flags & ~__VM_UFFD_FLAGS) | vm_flags))


async def userfaultfd_reset_ctx(vma: VmAreaStruct) -> None:
    await userfaultfd_set_ctx(vma, None, 0)


async def userfaultfd_clear_vma(prev: VmAreaStruct | None, vma: VmAreaStruct, start: int,
                                end: int) -> VmAreaStruct | int:
    """userfaultfd_clear_vma(): a write-protect registration first resolves
    every uffd-wp PTE of the range (uffd_wp_range), then the VMA drops the
    context (merging)."""
    if vma.vm_flags & VM_UFFD_WP:  # userfaultfd_wp()
        await uffd_wp_range(vma, start, end - start, False)
    ret = await vma_modify_flags_uffd(prev, vma, start, end, vma.vm_flags & ~__VM_UFFD_FLAGS, None)
    if not isinstance(ret, int):
        await userfaultfd_reset_ctx(ret)
    return ret


async def userfaultfd_register_range(ctx: UserfaultfdCtx, vma: VmAreaStruct, vm_flags: int,
                                     start: int, end: int) -> int:
    """Models userfaultfd_register_range() (mm/userfaultfd.c): for each VMA
    in the range not already registered this way, vma_modify_flags_uffd()
    then userfaultfd_set_ctx() (the merged-case-8 VMA is not updated yet)."""
    mm = vma.vm_mm
    prev, _ = mm.mm_mt.prev_next(vma.vm_start, vma.vm_end)
    if vma.vm_start < start:
        prev = vma
    cur: VmAreaStruct | None = vma
    while cur is not None and cur.vm_start < end:
        if not (cur.vm_userfaultfd_ctx is ctx and (cur.vm_flags & vm_flags) == vm_flags):
            start = max(start, cur.vm_start)
            new_flags = (cur.vm_flags & ~__VM_UFFD_FLAGS) | vm_flags
            r = await vma_modify_flags_uffd(prev, cur, start, min(end, cur.vm_end), new_flags, ctx)
            if isinstance(r, int):
                return r
            cur = r
            await userfaultfd_set_ctx(cur, ctx, vm_flags)
        prev = cur
        start = cur.vm_end
        cur = mm.mm_mt.find(start) if start < end else None
    return 0


async def userfaultfd_release_all(mm: MmStruct, ctx: UserfaultfdCtx) -> None:
    """userfaultfd_release_all(): if the mm still has users, unregister every
    VMA of the context under the mmap write lock."""
    if not await mmget_not_zero(mm):
        return
    await mmap_write_lock(mm)
    prev = None
    vma = mm.mm_mt.find(0)
    while vma is not None:  # for_each_vma(): the tree as the merges leave it
        if vma.vm_userfaultfd_ctx is ctx:
            r = await userfaultfd_clear_vma(prev, vma, vma.vm_start, vma.vm_end)
            vma = vma if isinstance(r, int) else r
        prev = vma
        vma = mm.mm_mt.find(vma.vm_end)
    await mmap_write_unlock(mm)
    await _mmput(mm)


# -- the fill operations -------------------------------------------------------------------
async def anon_vma_prepare(vma: VmAreaStruct) -> int:
    if vma.anon_vma is not None:
        return 0
    return await __anon_vma_prepare(vma)


async def find_vma_and_prepare_anon(mm: MmStruct, addr: int) -> VmAreaStruct | int:
    mmap_assert_locked(mm)
    vma = mm.mm_mt.find_covering(addr)
    if vma is None:
        return -errno.ENOENT
    if not vma.vm_flags & _VM_SHARED and await anon_vma_prepare(vma):
        return -errno.ENOMEM
    return vma


@call_site("mm/userfaultfd.c:uffd_lock_vma", pre_form="ifdef",
           pre_series="#ifdef CONFIG_PER_VMA_LOCK: uffd_mfill_lock() -> uffd_lock_vma(): "
           "lock_vma_under_rcu(), else mmap_read_lock + vma_lookup + anon_vma_prepare + "
           "vma_start_read_locked; #else the whole fill under mmap_read_lock",
           series="the per-VMA branch in every config (no #else)",
           scenarios=("uffd-fault-vs-copy", "uffd-copy-vs-munmap", "uffd-copy-vs-mprotect-split",
                      "uffd-copy-vs-fork", "uffd-copy-vs-exit"))
async def uffd_lock_vma(mm: MmStruct, address: int) -> VmAreaStruct | int:
    """Models uffd_lock_vma() (CONFIG_PER_VMA_LOCK): lock_vma_under_rcu(); a
    private VMA without anon_vma, or a failed lookup, goes to mmap_read_lock,
    vma_lookup(), anon_vma_prepare() and vma_start_read_locked(), then drops
    mmap_lock: it waits for a writer by queueing on mmap_lock and returns the
    VMA read-locked (the shape of the series' wait-for-writers helper)."""
    vma = await lock_vma_under_rcu(mm, address)
    if vma is not None:
        if not vma.vm_flags & _VM_SHARED and vma.anon_vma is None:
            await vma_end_read(vma)
        else:
            return vma
    await mmap_read_lock(mm)
    found = await find_vma_and_prepare_anon(mm, address)
    if not isinstance(found, int) and not await vma_start_read_locked(found):
        found = -errno.EAGAIN
    await mmap_read_unlock(mm)
    return found


def validate_dst_vma(dst_vma: VmAreaStruct, dst_end: int) -> bool:
    return dst_end <= dst_vma.vm_end and dst_vma.vm_userfaultfd_ctx is not None


async def uffd_mfill_lock(dst_mm: MmStruct, dst_start: int, length: int) -> VmAreaStruct | int:
    """Models uffd_mfill_lock(): with per-VMA locks the destination VMA is
    read-locked (uffd_lock_vma); without, mmap_read_lock is held for the
    whole fill."""
    if dst_mm.config.PER_VMA_LOCK:
        dst_vma = await uffd_lock_vma(dst_mm, dst_start)
        if isinstance(dst_vma, int) or validate_dst_vma(dst_vma, dst_start + length):
            return dst_vma
        await vma_end_read(dst_vma)
        return -errno.ENOENT
    await mmap_read_lock(dst_mm)
    found = await find_vma_and_prepare_anon(dst_mm, dst_start)
    if not isinstance(found, int):
        if validate_dst_vma(found, dst_start + length):
            return found
        found = -errno.ENOENT
    await mmap_read_unlock(dst_mm)
    return found


async def uffd_mfill_unlock(vma: VmAreaStruct) -> None:
    if vma.vm_mm.config.PER_VMA_LOCK:
        await vma_end_read(vma)
    else:
        await mmap_read_unlock(vma.vm_mm)



@dataclass(eq=False, slots=True)
class MfillState:
    """struct mfill_state."""

    ctx: UserfaultfdCtx
    dst_start: int
    src_start: int
    len: int
    mode: int
    dst_addr: int
    src_addr: int
    vma: VmAreaStruct | None = None
    folio: Page | None = None
    wp: bool = False  # flags & MFILL_ATOMIC_WP


async def mfill_get_vma(state: MfillState) -> int:
    """Models mfill_get_vma(): lock the destination, then take
    map_changing_lock for read: while a non-cooperative event is pending
    (``mmap_changing``) the fill fails with -EAGAIN."""
    ctx = state.ctx
    assert ctx.mm is not None
    dst_vma = await uffd_mfill_lock(ctx.mm, state.dst_start, state.len)
    if isinstance(dst_vma, int):
        return dst_vma
    await map_changing_read_lock(ctx)
    state.vma = dst_vma
    if await mmap_changing_locked(ctx):
        await mfill_put_vma(state)
        return -errno.EAGAIN
    if (dst_vma.is_anonymous() and dst_vma.vm_flags & _VM_SHARED) or not dst_vma.is_anonymous():
        await mfill_put_vma(state)
        return -errno.EINVAL
    if state.wp and not dst_vma.vm_flags & VM_UFFD_WP:  # a wrprotect copy needs a WP registration
        await mfill_put_vma(state)
        return -errno.EINVAL
    return 0


async def mfill_put_vma(state: MfillState) -> None:
    if state.vma is not None:
        await map_changing_read_unlock(state.ctx)
        await uffd_mfill_unlock(state.vma)
        state.vma = None


async def map_changing_read_lock(ctx: UserfaultfdCtx) -> None:
    lock = ctx.map_changing_lock
    assert lock is not None
    await lock.down_read()


async def map_changing_read_unlock(ctx: UserfaultfdCtx) -> None:
    lock = ctx.map_changing_lock
    assert lock is not None
    await lock.up_read()


async def mmap_changing_locked(ctx: UserfaultfdCtx) -> bool:
    """atomic_read(&ctx->mmap_changing) under map_changing_lock."""
    await Op(_READ, ctx.evt_loc, "atomic_read(ctx->mmap_changing)", order=Order.ONCE)
    return bool(ctx.mmap_changing)


async def copy_from_user(src: int, nofault: bool) -> dict[int, int] | None:
    """copy_from_user() of the page at ``src`` of current's mm.  With page
    faults disabled (under the fill's lock) a missing or unreadable page is
    a failure; otherwise it faults the page in as a kernel-mode access."""
    from pervma.kernel.fault import do_page_fault, do_user_addr_fault

    mm = current_task().mm
    assert mm is not None
    vpn = src >> PAGE_SHIFT
    while True:
        pte = mm.pgtable.get(vpn)
        await Op(_READ, pte_loc(mm, vpn), "copy_from_user", None, "copy_page", False,
                 (PAGE_FRAME, pte.page.pfn) if pte is not None else None, order=Order.ONCE)
        pte = mm.pgtable.get(vpn)
        if pte is not None and pte.readable:
            debug.kasan_check(pte.page, "copy_from_user", "page")
            return dict(pte.page.data)
        if nofault:
            return None
        fault = do_page_fault if mm.config.arch == "arm64" else do_user_addr_fault
        if await fault(mm, src, False, False, False):
            return None
        if fatal_signal_pending(current_task()):
            return None


def _check_fill_vma(vma: VmAreaStruct, addr: int, where: str) -> None:
    """The destination is live, attached and covers addr (the fill's lock
    keeps writers out)."""
    if vma.freed:
        debug.kasan_check(vma, where, "vm_area_struct")
    if vma.vm_mm.config.PER_VMA_LOCK and vma.vm_refcnt.counter == 0:
        debug.report("BUG: userfaultfd fill into a detached VMA", f"{where}: {vma} at {addr:#x}")
    if not (vma.vm_start <= addr < vma.vm_end):
        debug.report("BUG: userfaultfd fill outside its VMA", f"{where}: {addr:#x} not in {vma}")


async def mfill_atomic_install_pte(vma: VmAreaStruct, dst_addr: int, page: Page, wp: bool = False) -> int:
    mm = vma.vm_mm
    ptl = mm.ptl(dst_addr)
    vpn = dst_addr >> PAGE_SHIFT
    await ptl.lock()
    if vpn in mm.pgtable:
        await ptl.unlock()
        return -errno.EEXIST
    _check_fill_vma(vma, dst_addr, "mfill_atomic_install_pte")
    page.anon_vma, page.index, page.mapcount = vma.anon_vma, linear_page_index(vma, dst_addr), 1
    # pte_mkuffd_wp() also write-protects the entry
    await set_pte_at(mm, vpn, Pte(page, writable=bool(vma.vm_flags & VmFlags.VM_WRITE) and not wp, dirty=True,
                                  uffd_wp=wp), "mfill_atomic_install_pte: set_pte_at")
    await ptl.unlock()
    return 0


async def mfill_atomic_pte_copy(state: MfillState) -> int:
    vma = state.vma
    assert vma is not None
    if state.folio is None:
        page = await alloc_page(vma.vm_mm, zero=False)
        data = await copy_from_user(state.src_addr, nofault=True)
        if data is None:
            state.folio = page  # copy it outside the lock, then retry
            return -errno.ENOENT
        page.data = data
    else:
        page, state.folio = state.folio, None
    ret = await mfill_atomic_install_pte(vma, state.dst_addr, page, state.wp)
    if ret:
        put_page(vma.vm_mm, page, "mfill_atomic_pte_copy")
    return ret


async def mfill_atomic_pte_zeropage(state: MfillState) -> int:
    vma = state.vma
    assert vma is not None
    mm = vma.vm_mm
    ptl = mm.ptl(state.dst_addr)
    vpn = state.dst_addr >> PAGE_SHIFT
    await ptl.lock()
    if vpn in mm.pgtable:
        await ptl.unlock()
        return -errno.EEXIST
    _check_fill_vma(vma, state.dst_addr, "mfill_atomic_pte_zeropage")
    await set_pte_at(mm, vpn, Pte(mm.system.zero_page, writable=False), "mfill_atomic_pte_zeropage")
    await ptl.unlock()
    return 0


async def mfill_atomic(ctx: UserfaultfdCtx, dst_start: int, src_start: int, length: int,
                       mode: int, flags: int = 0) -> int:
    """Models mfill_atomic(): lock the destination (mfill_get_vma), fill page
    by page; a source page that is not present is copied with the lock dropped
    and the destination looked up again.  Returns the bytes filled, else
    -errno."""
    state = MfillState(ctx, dst_start, src_start, length, mode, dst_start, src_start,
                       wp=bool(flags & MFILL_ATOMIC_WP))
    copied = 0
    err = 0
    while True:
        err = await mfill_get_vma(state)
        if err:
            break
        again = False
        while state.src_addr < src_start + length:
            if mode == MFILL_ATOMIC_COPY:
                err = await mfill_atomic_pte_copy(state)
            else:
                err = await mfill_atomic_pte_zeropage(state)
            if err == -errno.ENOENT:
                await mfill_put_vma(state)
                data = await copy_from_user(state.src_addr, nofault=False)
                if data is None:
                    err = -errno.EFAULT
                    break
                assert state.folio is not None
                state.folio.data = data
                again = True
                break
            if not err:
                state.dst_addr += PAGE_SIZE
                state.src_addr += PAGE_SIZE
                copied += PAGE_SIZE
                if fatal_signal_pending(current_task()):
                    err = -errno.EINTR
            if err:
                break
        if not again:
            break
    await mfill_put_vma(state)
    if state.folio is not None:
        assert ctx.mm is not None
        put_page(ctx.mm, state.folio, "mfill_atomic: out")
    return copied or err


# -- UFFDIO_WRITEPROTECT ---------------------------------------------------------------
def _anon_exclusive(page: Page) -> bool:
    """PageAnonExclusive, approximated as move_pages_pte() and do_wp_page()
    do: an anonymous page mapped once with one reference."""
    return not page.zero_page and page.anon_vma is not None and page.mapcount == 1 and page.refcount == 1


async def uffd_wp_range(vma: VmAreaStruct, start: int, length: int, enable_wp: bool) -> int:
    """Models uffd_wp_range() -> change_protection() on [start, start+len):
    with MM_CP_UFFD_WP each present PTE gets the uffd-wp bit and loses write;
    with MM_CP_UFFD_WP_RESOLVE the bit is cleared and, VM_WRITE being set
    (MM_CP_TRY_CHANGE_WRITABLE), an exclusive anonymous page is made
    writable again (can_change_pte_writable); a shared or zero page stays
    read-only and takes a write fault.  Each changed PTE is written under its
    page-table lock; one TLB flush.  Returns the PTEs changed.  No PTE
    markers: an empty PTE of an anonymous VMA stays empty."""
    mm = vma.vm_mm
    if start < vma.vm_start or start + length > vma.vm_end:
        debug.report("WARNING: uffd_wp_range", f"[{start:#x}, {start + length:#x}) exceeds {vma}")
    upgrade = not enable_wp and bool(vma.vm_flags & VmFlags.VM_WRITE)
    changed = 0
    for vpn in present_vpns(mm, start, start + length):
        ptl = mm.ptl(vpn << PAGE_SHIFT)
        await ptl.lock()
        pte = mm.pgtable.get(vpn)
        if pte is not None:
            if enable_wp:
                new = Pte(pte.page, False, pte.dirty, pte.readable, True)
            else:
                writable = pte.writable or (upgrade and pte.readable and _anon_exclusive(pte.page))
                new = Pte(pte.page, writable, pte.dirty, pte.readable, False)
            if (new.writable, new.uffd_wp) != (pte.writable, pte.uffd_wp):
                _check_fill_vma(vma, vpn << PAGE_SHIFT, "change_pte_range (uffd-wp)")
                await set_pte_at(mm, vpn, new, "change_pte_range: uffd-wp" if enable_wp
                                 else "change_pte_range: uffd-wp resolve")
                changed += 1
        await ptl.unlock()
    if changed:
        await flush_tlb(mm, "uffd_wp_range: tlb_finish_mmu")
    return changed


async def mwriteprotect_range(ctx: UserfaultfdCtx, start: int, length: int, enable_wp: bool) -> int:
    """Models mwriteprotect_range() (mm/userfaultfd.c, 7.0): under
    mmap_read_lock (no per-VMA lock: every form holds mmap_lock), each VMA of
    the range must be registered in write-protect mode (else -ENOENT, the
    VMAs before it already changed); holes are skipped; no VMA at all is
    -ENOENT; -EAGAIN while an event is pending (``mmap_changing``, read under
    map_changing_lock)."""
    mm = ctx.mm
    assert mm is not None
    end = start + length
    await mmap_read_lock(mm)
    await map_changing_read_lock(ctx)
    if await mmap_changing_locked(ctx):
        await map_changing_read_unlock(ctx)
        await mmap_read_unlock(mm)
        return -errno.EAGAIN
    err = -errno.ENOENT
    for vma in mm.mm_mt.overlapping(start, end):  # for_each_vma_range()
        if not vma.vm_flags & VM_UFFD_WP:
            err = -errno.ENOENT
            break
        _start, _end = max(vma.vm_start, start), min(vma.vm_end, end)
        await uffd_wp_range(vma, _start, _end - _start, enable_wp)
        err = 0
    await map_changing_read_unlock(ctx)
    await mmap_read_unlock(mm)
    return err


# -- UFFDIO_MOVE ------------------------------------------------------------------------
async def find_vmas_mm_locked(mm: MmStruct, dst_start: int, src_start: int
                              ) -> tuple[VmAreaStruct, VmAreaStruct] | int:
    mmap_assert_locked(mm)
    dst = await find_vma_and_prepare_anon(mm, dst_start)
    if isinstance(dst, int):
        return dst
    if dst.vm_start <= src_start < dst.vm_end:
        return dst, dst
    src = mm.mm_mt.find_covering(src_start)
    if src is None:
        return -errno.ENOENT
    return dst, src


@call_site("mm/userfaultfd.c:uffd_move_lock", pre_form="ifdef",
           pre_series="#ifdef CONFIG_PER_VMA_LOCK: destination by uffd_lock_vma(), source by "
           "lock_vma_under_rcu(), else both under mmap_read_lock + vma_start_read_locked; "
           "#else the whole move under mmap_read_lock",
           series="the per-VMA branch in every config (no #else)",
           scenarios=("uffd-move-vs-mremap",))
async def uffd_move_lock(mm: MmStruct, dst_start: int, src_start: int
                         ) -> tuple[VmAreaStruct, VmAreaStruct] | int:
    """Models uffd_move_lock().  With per-VMA locks: the destination through
    uffd_lock_vma(), the source only by lock_vma_under_rcu() (waiting for it
    on mmap_lock while holding the destination could deadlock against a
    writer locking both); on failure drop everything and lock both under
    mmap_read_lock.  Without: mmap_read_lock for the whole move."""
    if not mm.config.PER_VMA_LOCK:
        await mmap_read_lock(mm)
        r = await find_vmas_mm_locked(mm, dst_start, src_start)
        if isinstance(r, int):
            await mmap_read_unlock(mm)
        return r
    dst = await uffd_lock_vma(mm, dst_start)
    if isinstance(dst, int):
        return dst
    if dst.vm_start <= src_start < dst.vm_end:
        return dst, dst
    src = await lock_vma_under_rcu(mm, src_start)
    if src is not None:
        return dst, src
    await vma_end_read(dst)
    await mmap_read_lock(mm)
    r = await find_vmas_mm_locked(mm, dst_start, src_start)
    if not isinstance(r, int):
        dst, src = r
        if not await vma_start_read_locked(dst):
            r = -errno.EAGAIN
        elif src is not dst and not await vma_start_read_locked_nested(src):
            await vma_end_read(dst)
            r = -errno.EAGAIN
    await mmap_read_unlock(mm)
    return r


async def uffd_move_unlock(dst: VmAreaStruct, src: VmAreaStruct) -> None:
    if not dst.vm_mm.config.PER_VMA_LOCK:
        await mmap_read_unlock(dst.vm_mm)
        return
    await vma_end_read(src)
    if src is not dst:
        await vma_end_read(dst)


def validate_move_areas(ctx: UserfaultfdCtx, src: VmAreaStruct, dst: VmAreaStruct) -> int:
    access = VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_EXEC
    if (src.vm_flags & access) != (dst.vm_flags & access):
        return -errno.EINVAL
    if (src.vm_flags & VmFlags.VM_LOCKED) != (dst.vm_flags & VmFlags.VM_LOCKED):
        return -errno.EINVAL
    if not src.vm_flags & VmFlags.VM_WRITE:
        return -errno.EINVAL
    special = VmFlags.VM_PFNMAP | VmFlags.VM_IO | VmFlags.VM_MIXEDMAP
    if src.vm_flags & special or dst.vm_flags & special:
        return -errno.EINVAL
    if dst.vm_userfaultfd_ctx is not ctx:
        return -errno.EINVAL
    if not src.is_anonymous() or not dst.is_anonymous():
        return -errno.EINVAL
    return 0


async def move_pages_pte(ctx: UserfaultfdCtx, dst: VmAreaStruct, src: VmAreaStruct, dst_addr: int,
                         src_addr: int, mode: int) -> int:
    """One page of move_pages_ptes(): PAGE_SIZE moved, else -errno.  Both PTEs
    are rechecked under both page-table locks before the move."""
    mm = dst.vm_mm
    dvpn, svpn = dst_addr >> PAGE_SHIFT, src_addr >> PAGE_SHIFT
    await Op(_READ, pte_loc(mm, dvpn), "move_pages_ptes: dst pte", order=Order.ONCE)
    if dvpn in mm.pgtable:
        return -errno.EEXIST
    await Op(_READ, pte_loc(mm, svpn), "move_pages_ptes: src pte", order=Order.ONCE)
    orig = mm.pgtable.get(svpn)
    if orig is None:
        return PAGE_SIZE if mode & UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES else -errno.ENOENT
    page = orig.page
    # PageAnonExclusive, approximated by "mapped once, one reference": the
    # kernel's flag, cleared at fork, comes back only with a write fault that
    # reuses the page, so after a COW sharer exits the kernel may still say EBUSY.
    if not page.zero_page and not (page.anon_vma is not None and page.mapcount == 1
                                   and page.refcount == 1):
        return -errno.EBUSY
    dptl, sptl = mm.ptl(dst_addr), mm.ptl(src_addr)
    first, second = (dptl, sptl) if dst_addr >> 21 <= src_addr >> 21 else (sptl, dptl)
    # the source PTE goes away: a secondary MMU drops it first
    rng = mmu_notifier_range_init(MMU_NOTIFY_CLEAR, 0, mm, src_addr, src_addr + PAGE_SIZE)
    await mmu_notifier_invalidate_range_start(rng)
    await first.lock()
    if second is not first:
        await second.lock()
    ret = -errno.EAGAIN
    if mm.pgtable.get(svpn) is orig and dvpn not in mm.pgtable:
        _check_fill_vma(dst, dst_addr, "move_pages_ptes")
        await set_pte_at(mm, svpn, None, "move_pages_ptes: ptep_get_and_clear(src)")
        if not page.zero_page:
            page.anon_vma, page.index = dst.anon_vma, linear_page_index(dst, dst_addr)
        await set_pte_at(mm, dvpn, Pte(page, writable=orig.writable and not page.zero_page,
                                       dirty=orig.dirty, uffd_wp=orig.uffd_wp),
                         "move_pages_ptes: set_pte_at(dst)")
        await flush_tlb(mm, "move_pages_ptes: flush_tlb_range")
        ret = PAGE_SIZE
    if second is not first:
        await second.unlock()
    await first.unlock()
    await mmu_notifier_invalidate_range_end(rng)
    return ret


async def move_pages(ctx: UserfaultfdCtx, dst_start: int, src_start: int, length: int,
                     mode: int) -> int:
    """Models move_pages(): lock both VMAs (uffd_move_lock), check them, move
    PTE by PTE (anonymous, exclusive pages only).  Returns the bytes moved,
    else -errno."""
    mm = ctx.mm
    assert mm is not None
    r = await uffd_move_lock(mm, dst_start, src_start)
    if isinstance(r, int):
        return r
    dst, src = r
    moved = 0
    await map_changing_read_lock(ctx)
    err = -errno.EINVAL
    if await mmap_changing_locked(ctx):  # re-checked after taking map_changing_lock
        err = -errno.EAGAIN
    elif (not src.vm_flags & _VM_SHARED and src_start + length <= src.vm_end
            and not dst.vm_flags & _VM_SHARED and dst_start + length <= dst.vm_end):
        err = validate_move_areas(ctx, src, dst)
    while not err and moved < length:
        step = await move_pages_pte(ctx, dst, src, dst_start + moved, src_start + moved, mode)
        if step < 0:
            err = step
        if fatal_signal_pending(current_task()):
            if not err or err == -errno.EAGAIN:
                err = -errno.EINTR
            break
        if err == -errno.EAGAIN:
            err = 0
            continue
        if err:
            break
        moved += step
    await map_changing_read_unlock(ctx)
    await uffd_move_unlock(dst, src)
    return moved or err
