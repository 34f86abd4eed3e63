"""userfaultfd: fs/userfaultfd.c and the uapi include/uapi/linux/userfaultfd.h.

mm/userfaultfd.c (registration of VMAs, the fills, UFFDIO_MOVE) is
``userfaultfd_mm.py``; this file is the context, handle_userfault(), read()
and the ioctl entries.

Followed: fs/userfaultfd.c and mm/userfaultfd.c as in 7.0/7.1-rc (kernel-patches/bpf
``0e6c0af4`` for mm/, linux-mm ``129dff57`` for fs/), the uapi constants of 6.8+
(UFFDIO_MOVE).  The parts of the mm-new tree newer than 7.0 (the RWP mode,
UFFDIO_SET_MODE) are left out.

What is modelled: the context (``userfaultfd()``, ``UFFDIO_API``), registration
in missing and write-protect modes (``UFFDIO_REGISTER``/``UNREGISTER``: the
VMAs are split and merged by the model's vma_modify under the mmap write lock,
and each one gets the context through userfaultfd_set_ctx(), which write-locks
it), a missing-page fault on a registered anonymous VMA and a write fault on
a uffd-wp PTE (do_wp_page) sleeping in handle_userfault() after releasing the
fault lock (the VM_FAULT_RETRY path, under the per-VMA lock or mmap_lock
alike), ``read()`` of the fault message, the fill operations
``UFFDIO_COPY`` (with ``MODE_WP``)/``ZEROPAGE`` (destination locked by
uffd_mfill_lock(): uffd_lock_vma() with per-VMA locks, the whole fill under
mmap_read_lock without), ``UFFDIO_MOVE`` (uffd_move_lock(): source and
destination), ``UFFDIO_WRITEPROTECT`` (mwriteprotect_range(): the uffd-wp PTE
bit set or resolved under mmap_read_lock in every config) and ``UFFDIO_WAKE``.
``close()`` is userfaultfd_release().  The uffd-wp bit follows the PTE as
7.0 has it: kept by mprotect and UFFDIO_MOVE, dropped by a fork child whose
VMA is not registered, by mremap without EVENT_REMAP and by unregistration
(userfaultfd_clear_vma resolves the range first).

Not modelled, refused with NotModelled after the kernel's own checks: the
non-cooperative events (UFFD_FEATURE_EVENT_*), PTE markers
(WP_ASYNC/WP_UNPOPULATED: an empty PTE of an anonymous VMA is never
write-protected), minor faults and UFFDIO_CONTINUE (they need shmem or
hugetlbfs registration, which is refused), UFFDIO_POISON (a PTE marker),
shmem and hugetlb registration.  Without any event feature nobody takes
``ctx->map_changing_lock`` for write and ``ctx->mmap_changing`` stays 0, so
the fills' and UFFDIO_WRITEPROTECT's read side of them is left out (it never
waits and never fails).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pervma.kernel import debug
from pervma.kernel.locks import RwSemaphore
from pervma.kernel.memory import (
    FAULT_FLAG_ALLOW_RETRY,
    FAULT_FLAG_RETRY_NOWAIT,
    FAULT_FLAG_USER,
    FAULT_FLAG_VMA_LOCK,
    FAULT_FLAG_WRITE,
    VM_FAULT_RETRY,
    VM_FAULT_SIGBUS,
    pte_loc,
    release_fault_lock,
)
from pervma.kernel.mm import vm_flags_init
from pervma.kernel.mm_types import PAGE_SIZE, TASK_SIZE, VmFlags
from pervma.kernel.mmap_lock import (
    mmap_assert_locked,
    mmap_write_lock,
    mmap_write_unlock,
    mmdrop,
    mmgrab,
    vma_assert_locked,
)
from pervma.kernel.slab import SlabObject
from pervma.kernel.syscalls import NotModelled
from pervma.kernel.task import current_task, fatal_signal_pending, signal_loc
from pervma.kernel.userfaultfd_mm import (
    __VM_UFFD_FLAGS,
    MFILL_ATOMIC_COPY,
    MFILL_ATOMIC_WP,
    MFILL_ATOMIC_ZEROPAGE,
    UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    _mmput,
    mfill_atomic,
    mmget_not_zero,
    move_pages,
    mwriteprotect_range,
    userfaultfd_clear_vma,
    userfaultfd_register_range,
    userfaultfd_release_all,
    userfaultfd_reset_ctx,
)
from pervma.sched import Op, OpKind, block
from pervma.sched.locations import UFFD_CTX, UFFD_EVT, UFFD_MAP_CHANGING_LOCK, UFFD_WQH
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.memory import VmFault
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

# -- include/uapi/linux/userfaultfd.h -------------------------------------------------
UFFD_API = 0xAA
_UFFDIO_REGISTER, _UFFDIO_UNREGISTER, _UFFDIO_WAKE, _UFFDIO_COPY = 0x00, 0x01, 0x02, 0x03
_UFFDIO_ZEROPAGE, _UFFDIO_MOVE, _UFFDIO_WRITEPROTECT, _UFFDIO_CONTINUE = 0x04, 0x05, 0x06, 0x07
_UFFDIO_POISON, _UFFDIO_API = 0x08, 0x3F
# _IOWR(0xAA, nr, struct) / _IOR(...): the ioctl numbers on x86_64 and arm64
UFFDIO_API = 0xC018AA3F
UFFDIO_REGISTER = 0xC020AA00
UFFDIO_UNREGISTER = 0x8010AA01
UFFDIO_WAKE = 0x8010AA02
UFFDIO_COPY = 0xC028AA03
UFFDIO_ZEROPAGE = 0xC020AA04
UFFDIO_MOVE = 0xC028AA05
UFFDIO_WRITEPROTECT = 0xC018AA06
UFFDIO_CONTINUE = 0xC020AA07
UFFDIO_POISON = 0xC020AA08

UFFD_EVENT_PAGEFAULT, UFFD_EVENT_FORK, UFFD_EVENT_REMAP = 0x12, 0x13, 0x14
UFFD_EVENT_REMOVE, UFFD_EVENT_UNMAP = 0x15, 0x16
UFFD_PAGEFAULT_FLAG_WRITE, UFFD_PAGEFAULT_FLAG_WP, UFFD_PAGEFAULT_FLAG_MINOR = 1, 2, 4

UFFD_FEATURE_PAGEFAULT_FLAG_WP = 1 << 0
UFFD_FEATURE_EVENT_FORK = 1 << 1
UFFD_FEATURE_EVENT_REMAP = 1 << 2
UFFD_FEATURE_EVENT_REMOVE = 1 << 3
UFFD_FEATURE_MISSING_HUGETLBFS = 1 << 4
UFFD_FEATURE_MISSING_SHMEM = 1 << 5
UFFD_FEATURE_EVENT_UNMAP = 1 << 6
UFFD_FEATURE_SIGBUS = 1 << 7
UFFD_FEATURE_THREAD_ID = 1 << 8
UFFD_FEATURE_MINOR_HUGETLBFS = 1 << 9
UFFD_FEATURE_MINOR_SHMEM = 1 << 10
UFFD_FEATURE_EXACT_ADDRESS = 1 << 11
UFFD_FEATURE_WP_HUGETLBFS_SHMEM = 1 << 12
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_POISON = 1 << 14
UFFD_FEATURE_WP_ASYNC = 1 << 15
UFFD_FEATURE_MOVE = 1 << 16
UFFD_API_FEATURES = (1 << 17) - 1  # every feature above: all available on x86_64/arm64
UFFD_FEATURE_INITIALIZED = 1 << 31  # fs/userfaultfd.c: set once UFFDIO_API succeeded

UFFD_API_IOCTLS = (1 << _UFFDIO_REGISTER) | (1 << _UFFDIO_UNREGISTER) | (1 << _UFFDIO_API)
UFFD_API_RANGE_IOCTLS = ((1 << _UFFDIO_WAKE) | (1 << _UFFDIO_COPY) | (1 << _UFFDIO_ZEROPAGE)
                         | (1 << _UFFDIO_MOVE) | (1 << _UFFDIO_WRITEPROTECT)
                         | (1 << _UFFDIO_CONTINUE) | (1 << _UFFDIO_POISON))

UFFDIO_REGISTER_MODE_MISSING, UFFDIO_REGISTER_MODE_WP, UFFDIO_REGISTER_MODE_MINOR = 1, 2, 4
UFFD_API_REGISTER_MODES = 7
UFFDIO_COPY_MODE_DONTWAKE, UFFDIO_COPY_MODE_WP = 1, 2
UFFDIO_ZEROPAGE_MODE_DONTWAKE = 1
UFFDIO_MOVE_MODE_DONTWAKE = 1  # (UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES = 2: userfaultfd_mm.py)
UFFDIO_WRITEPROTECT_MODE_WP, UFFDIO_WRITEPROTECT_MODE_DONTWAKE = 1, 2

UFFD_USER_MODE_ONLY = 1
O_NONBLOCK = 0o4000
O_CLOEXEC = 0o2000000
UFFD_SHARED_FCNTL_FLAGS = O_CLOEXEC | O_NONBLOCK

VM_UFFD_MINOR = 1 << 41  # a high vm_flags bit (CONFIG_HAVE_ARCH_USERFAULTFD_MINOR)

# Features whose behaviour the model does not implement (refused with NotModelled).
_NOT_MODELLED_FEATURES = (UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EXACT_ADDRESS
                          | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_ASYNC)
_RMW, _READ = OpKind.RMW, OpKind.READ


# -- the context ------------------------------------------------------------------------
@dataclass(eq=False, slots=True)
class UserfaultfdWaitQueue:
    """struct userfaultfd_wait_queue: a faulting thread's entry (on its stack)."""

    address: int
    flags: int  # the message's UFFD_PAGEFAULT_FLAG_*
    ptid: int
    waken: bool = False

    def msg(self) -> dict[str, int]:
        """struct uffd_msg of a UFFD_EVENT_PAGEFAULT."""
        return {"event": UFFD_EVENT_PAGEFAULT, "flags": self.flags, "address": self.address,
                "ptid": self.ptid}


@dataclass(eq=False, slots=True)
class UserfaultfdEvent:
    """A non-cooperative event's userfaultfd_wait_queue (on the stack of the
    thread that made the change): ``msg`` is its struct uffd_msg; read()
    completes it by clearing ``msg["event"]``."""

    msg: dict[str, int]


@dataclass(eq=False)
class UserfaultfdCtx(SlabObject):
    """struct userfaultfd_ctx.  ``fault_pending_wqh`` holds faults not yet read,
    ``fault_wqh`` the ones read and not yet woken (FIFO: the oldest first)."""

    mm: MmStruct | None = None
    flags: int = 0
    features: int = 0
    released: bool = False
    refcount: int = 1
    fault_pending_wqh: list[UserfaultfdWaitQueue] = field(default_factory=list)
    fault_wqh: list[UserfaultfdWaitQueue] = field(default_factory=list)
    event_wqh: list[UserfaultfdEvent] = field(default_factory=list)
    # non-cooperative events: mmap_changing counts the events prepared and not
    # yet completed; the fills read it under map_changing_lock (read side)
    mmap_changing: int = 0
    map_changing_lock: RwSemaphore | None = None

    @property
    def loc(self) -> tuple[str, int]:
        """refcount, released and features."""
        return (UFFD_CTX, self.slot)

    @property
    def wqh_loc(self) -> tuple[str, int]:
        """The wait queues under fault_pending_wqh.lock."""
        return (UFFD_WQH, self.slot)

    @property
    def evt_loc(self) -> tuple[str, int]:
        """event_wqh (its lock) and mmap_changing."""
        return (UFFD_EVT, self.slot)

    def locations(self) -> tuple[Any, ...]:
        return (self.loc, self.wqh_loc, self.evt_loc)

    def __str__(self) -> str:
        return f"uffd#{self.slot}"


def userfaultfd_is_initialized(ctx: UserfaultfdCtx) -> bool:
    return bool(ctx.features & UFFD_FEATURE_INITIALIZED)


def userfaultfd_ctx_get(ctx: UserfaultfdCtx) -> None:
    ctx.refcount += 1


async def userfaultfd_ctx_put(ctx: UserfaultfdCtx) -> None:
    """The last reference drops the mm_count pin and frees the context."""
    await Op(_RMW, ctx.loc, "userfaultfd_ctx_put", order=Order.RELEASE_ACQUIRE)  # refcount_dec_and_test
    debug.kasan_check(ctx, "userfaultfd_ctx_put", "userfaultfd_ctx")
    ctx.refcount -= 1
    if ctx.refcount == 0:
        if ctx.fault_pending_wqh or ctx.fault_wqh:
            debug.report("BUG: userfaultfd_ctx_put", f"{ctx} freed with waiters queued")
        mm = ctx.mm
        assert mm is not None
        await mmdrop(mm)
        mm.system.userfaultfd_ctx_cachep.free(ctx, "userfaultfd_ctx_put")


async def new_userfaultfd(mm: MmStruct, flags: int) -> UserfaultfdCtx | int:
    """Models new_userfaultfd() (the model's processes are privileged:
    userfaultfd_syscall_allowed() always passes).  The context pins the mm
    (mmgrab), not its address space."""
    if flags & ~(UFFD_SHARED_FCNTL_FLAGS | UFFD_USER_MODE_ONLY):
        return -errno.EINVAL
    ctx = mm.system.userfaultfd_ctx_cachep.alloc("new_userfaultfd")
    ctx.mm, ctx.flags, ctx.features, ctx.released, ctx.refcount = mm, flags, 0, False, 1
    ctx.fault_pending_wqh, ctx.fault_wqh, ctx.event_wqh = [], [], []
    ctx.mmap_changing = 0
    ctx.map_changing_lock = RwSemaphore((UFFD_MAP_CHANGING_LOCK, ctx.slot), "map_changing_lock")
    await mmgrab(mm)
    return ctx


# -- fault side -------------------------------------------------------------------------
def userfaultfd_missing(vma: VmAreaStruct) -> bool:
    return bool(vma.vm_flags & VM_UFFD_MISSING)


def assert_fault_locked(vmf: VmFault) -> None:
    if vmf.flags & FAULT_FLAG_VMA_LOCK:
        vma_assert_locked(vmf.vma)
    else:
        mmap_assert_locked(vmf.vma.vm_mm)


async def userfaultfd_must_wait(ctx: UserfaultfdCtx, vmf: VmFault, reason: int) -> bool:
    """A lockless look at the PTE after queueing: a fill that installed it
    before the entry was visible would not wake us, so do not sleep."""
    mm = vmf.vma.vm_mm
    await Op(_READ, pte_loc(mm, vmf.vpn), "userfaultfd_must_wait: ptep_get", order=Order.ONCE)
    pte = mm.pgtable.get(vmf.vpn)
    if pte is None:
        return True
    return bool(reason & VM_UFFD_WP) and not pte.writable


async def handle_userfault(vmf: VmFault, reason: int) -> int:
    """Models handle_userfault() (7.0): queue a message on fault_pending_wqh,
    re-check the PTE, release whichever lock the fault holds
    (release_fault_lock: the VMA read lock or mmap_lock) and sleep until a
    fill or an unregister wakes this address, then return VM_FAULT_RETRY so
    the architecture handler retries the fault (under mmap_lock).  Queueing
    comes before the PTE check and the fill's PTE store before its wake, so
    one of the two always sees the other."""
    vma = vmf.vma
    mm = vma.vm_mm
    assert_fault_locked(vmf)
    ctx = vma.vm_userfaultfd_ctx
    if ctx is None:
        return VM_FAULT_SIGBUS
    debug.kasan_check(ctx, "handle_userfault", "userfaultfd_ctx")
    if ctx.mm is not mm:
        debug.report("WARNING: handle_userfault", f"{ctx} belongs to {ctx.mm}, the fault is in {mm}")
    if ctx.features & UFFD_FEATURE_SIGBUS:
        return VM_FAULT_SIGBUS
    if not vmf.flags & FAULT_FLAG_USER and ctx.flags & UFFD_USER_MODE_ONLY:
        return VM_FAULT_SIGBUS
    if not vmf.flags & FAULT_FLAG_ALLOW_RETRY:
        return VM_FAULT_SIGBUS
    if vmf.flags & FAULT_FLAG_RETRY_NOWAIT:
        return VM_FAULT_RETRY
    await Op(_READ, ctx.loc, "handle_userfault: READ_ONCE(ctx->released)", order=Order.ONCE)
    if ctx.released:
        await release_fault_lock(vmf)
        return VM_FAULT_RETRY
    tsk = current_task()
    flags = UFFD_PAGEFAULT_FLAG_WRITE if vmf.flags & FAULT_FLAG_WRITE else 0
    if reason & VM_UFFD_WP:
        flags |= UFFD_PAGEFAULT_FLAG_WP
    uwq = UserfaultfdWaitQueue(vmf.address, flags, tsk.pid if ctx.features & UFFD_FEATURE_THREAD_ID else 0)
    await Op(_RMW, ctx.wqh_loc, "handle_userfault: __add_wait_queue(fault_pending_wqh)", order=Order.FULL)
    userfaultfd_ctx_get(ctx)
    ctx.fault_pending_wqh.append(uwq)
    must_wait = await userfaultfd_must_wait(ctx, vmf, reason)
    await release_fault_lock(vmf)
    await Op(_READ, ctx.loc, "handle_userfault: READ_ONCE(ctx->released)", order=Order.ONCE)
    if must_wait and not ctx.released:
        await block(ctx.wqh_loc, "handle_userfault: schedule()",
                    lambda: uwq.waken or tsk.fatal_signal, also=signal_loc(tsk), order=Order.ACQUIRE)
    if not uwq.waken:  # list_empty_careful(): still queued (signal, or no need to wait)
        await Op(_RMW, ctx.wqh_loc, "handle_userfault: list_del", order=Order.LOCKED)
        for q in (ctx.fault_pending_wqh, ctx.fault_wqh):
            if uwq in q:
                q.remove(uwq)
    await userfaultfd_ctx_put(ctx)
    return VM_FAULT_RETRY


async def wake_userfault(ctx: UserfaultfdCtx, start: int, length: int) -> None:
    """wake_userfault(): a lockless waitqueue_active() look (the refile_seq
    loop) and, if anything waits, wake every entry in [start, start+length)
    of both queues under the lock (length 0: all), removing it (autoremove)."""
    await Op(_READ, ctx.wqh_loc, "wake_userfault: waitqueue_active", order=Order.MB_ONCE)
    if not (ctx.fault_pending_wqh or ctx.fault_wqh):
        return
    await Op(_RMW, ctx.wqh_loc, "__wake_userfault", order=Order.LOCKED)
    for q in (ctx.fault_pending_wqh, ctx.fault_wqh):
        for uwq in list(q):
            if length == 0 or start <= uwq.address < start + length:
                uwq.waken = True
                q.remove(uwq)


async def userfaultfd_ctx_read(ctx: UserfaultfdCtx, no_wait: bool) -> dict[str, int] | int:
    """Models userfaultfd_ctx_read(): move the oldest pending fault to
    fault_wqh and return its message; else the oldest event, completing it
    (its thread goes on); else -EAGAIN (O_NONBLOCK) or sleep until a fault
    or an event is queued."""
    tsk = current_task()
    while True:
        await Op(_RMW, ctx.wqh_loc, "userfaultfd_ctx_read: find_userfault", order=Order.LOCKED)
        if ctx.fault_pending_wqh:
            uwq = ctx.fault_pending_wqh.pop(0)
            ctx.fault_wqh.append(uwq)
            return uwq.msg()
        await Op(_RMW, ctx.evt_loc, "userfaultfd_ctx_read: find_userfault_evt", order=Order.LOCKED)
        if ctx.event_wqh:
            ewq = ctx.event_wqh[0]
            msg = dict(ewq.msg)
            userfaultfd_event_complete(ctx, ewq)
            return msg
        if fatal_signal_pending(tsk):
            return -errno.EINTR
        if no_wait:
            return -errno.EAGAIN
        await block(ctx.wqh_loc, "userfaultfd_ctx_read: schedule()",
                    lambda: bool(ctx.fault_pending_wqh or ctx.event_wqh) or tsk.fatal_signal,
                    also=signal_loc(tsk), order=Order.ACQUIRE)


# -- registration -----------------------------------------------------------------------
def vma_can_userfault(vma: VmAreaStruct, vm_flags: int) -> bool:
    """Models vma_can_userfault() (include/linux/userfaultfd_k.h, 7.0)."""
    vm_flags &= int(__VM_UFFD_FLAGS) | VM_UFFD_MINOR
    if vm_flags & VM_UFFD_MINOR and not _vma_is_shmem(vma):
        return False
    return vma.is_anonymous() or _vma_is_shmem(vma)


def _vma_is_shmem(vma: VmAreaStruct) -> bool:
    return vma.vm_file is not None and vma.vm_file.shmem


def validate_unaligned_range(start: int, length: int) -> int:
    if length & (PAGE_SIZE - 1) or not length:
        return -errno.EINVAL
    if start >= TASK_SIZE or length > TASK_SIZE - start:
        return -errno.EINVAL
    return 0


def validate_range(start: int, length: int) -> int:
    if start & (PAGE_SIZE - 1):
        return -errno.EINVAL
    return validate_unaligned_range(start, length)


async def userfaultfd_register(ctx: UserfaultfdCtx, start: int, length: int, mode: int) -> int:
    """Models userfaultfd_register(): the ioctls bitmask, or -errno.  Every
    VMA in the range is checked before any changes; holes are allowed."""
    mm = ctx.mm
    assert mm is not None
    if not mode or mode & ~UFFD_API_REGISTER_MODES:
        return -errno.EINVAL
    vm_flags = 0
    if mode & UFFDIO_REGISTER_MODE_MISSING:
        vm_flags |= VM_UFFD_MISSING
    if mode & UFFDIO_REGISTER_MODE_WP:
        vm_flags |= VM_UFFD_WP
    if mode & UFFDIO_REGISTER_MODE_MINOR:
        vm_flags |= VM_UFFD_MINOR
    ret = validate_range(start, length)
    if ret:
        return ret
    end = start + length
    if not await mmget_not_zero(mm):
        return -errno.ENOMEM
    await mmap_write_lock(mm)
    ret = _register_checks(ctx, mm, start, end, vm_flags)
    if not ret:
        first = mm.mm_mt.find(start)
        assert first is not None
        ret = await userfaultfd_register_range(ctx, first, vm_flags, start, end)
    await mmap_write_unlock(mm)
    await _mmput(mm)
    if ret == _SHMEM:
        raise NotModelled("userfaultfd: registering shmem is valid on Linux but not modelled")
    if ret:
        return ret
    ioctls = UFFD_API_RANGE_IOCTLS
    if not mode & UFFDIO_REGISTER_MODE_WP:
        ioctls &= ~(1 << _UFFDIO_WRITEPROTECT)
    if not mode & UFFDIO_REGISTER_MODE_MINOR:
        ioctls &= ~(1 << _UFFDIO_CONTINUE)
    return ioctls


def _register_checks(ctx: UserfaultfdCtx, mm: MmStruct, start: int, end: int, vm_flags: int) -> int:
    """The search for incompatible VMAs, under the mmap write lock."""
    vmas = [v for v in mm.mm_mt.overlapping(start, end)]
    if not vmas:
        return -errno.EINVAL
    for cur in vmas:
        if not vma_can_userfault(cur, vm_flags):
            return -errno.EINVAL
        if not cur.vm_flags & VmFlags.VM_MAYWRITE:
            return -errno.EPERM
        if cur.vm_userfaultfd_ctx is not None and cur.vm_userfaultfd_ctx is not ctx:
            return -errno.EBUSY
    if any(_vma_is_shmem(cur) for cur in vmas):
        return _SHMEM  # refused once the locks are dropped
    return 0


_SHMEM = 1  # _register_checks(): every check passed, but a VMA is shmem


async def userfaultfd_unregister(ctx: UserfaultfdCtx, start: int, length: int) -> int:
    """Models userfaultfd_unregister(): check every VMA, then wake the faults
    pending in each missing-mode VMA and clear its registration (merging)."""
    mm = ctx.mm
    assert mm is not None
    ret = validate_range(start, length)
    if ret:
        return ret
    end = start + length
    if not await mmget_not_zero(mm):
        return -errno.ENOMEM
    await mmap_write_lock(mm)
    ret = -errno.EINVAL
    vmas = mm.mm_mt.overlapping(start, end)
    if vmas and all((v.vm_userfaultfd_ctx is None or v.vm_userfaultfd_ctx is ctx)
                    and vma_can_userfault(v, v.vm_flags) for v in vmas):
        ret = 0
        vma: VmAreaStruct | None = vmas[0]
        assert vma is not None
        prev, _ = mm.mm_mt.prev_next(vma.vm_start, vma.vm_end)
        if vma.vm_start < start:
            prev = vma
        while vma is not None and vma.vm_start < end:
            if vma.vm_userfaultfd_ctx is not None:
                start = max(start, vma.vm_start)
                vma_end = min(end, vma.vm_end)
                if userfaultfd_missing(vma):
                    await wake_userfault(vma.vm_userfaultfd_ctx, start, vma_end - start)
                r = await userfaultfd_clear_vma(prev, vma, start, vma_end)
                if isinstance(r, int):
                    ret = r
                    break
                vma = r
            prev = vma
            start = vma.vm_end
            vma = mm.mm_mt.find(start) if start < end else None
    await mmap_write_unlock(mm)
    await _mmput(mm)
    return ret


async def userfaultfd_release(ctx: UserfaultfdCtx) -> None:
    """Models userfaultfd_release() (close of the last fd): mark released,
    unregister every VMA of the context (userfaultfd_release_all, under the
    mmap write lock), wake every queued fault, drop the fd's reference."""
    await Op(OpKind.WRITE, ctx.loc, "userfaultfd_release: WRITE_ONCE(ctx->released)", order=Order.ONCE)
    ctx.released = True
    assert ctx.mm is not None
    await userfaultfd_release_all(ctx.mm, ctx)
    await Op(_RMW, ctx.wqh_loc, "userfaultfd_release: __wake_up_locked_key(all)", order=Order.LOCKED)
    for q in (ctx.fault_pending_wqh, ctx.fault_wqh):
        for uwq in q:
            uwq.waken = True
        q.clear()
    await Op(_RMW, ctx.evt_loc, "userfaultfd_release: wake_up_all(event_wqh)", order=Order.LOCKED)
    await userfaultfd_ctx_put(ctx)


def dup_userfaultfd(vma: VmAreaStruct) -> None:
    """dup_userfaultfd() for a fork child's VMA, before it is linked: without
    UFFD_FEATURE_EVENT_FORK (the model's only case) the child is not
    registered (userfaultfd_reset_ctx on a VMA no other thread can see)."""
    ctx = vma.vm_userfaultfd_ctx
    if ctx is not None and not ctx.features & UFFD_FEATURE_EVENT_FORK:
        vma.vm_userfaultfd_ctx = None
        vm_flags_init(vma, VmFlags(vma.vm_flags & ~__VM_UFFD_FLAGS))  # not attached yet


async def mremap_userfaultfd_prep(new_vma: VmAreaStruct) -> UserfaultfdCtx | None:
    """Models mremap_userfaultfd_prep() (under the mmap write lock): with
    UFFD_FEATURE_EVENT_REMAP the moved VMA stays registered, the context is
    pinned and ``mmap_changing`` raised under map_changing_lock (fills now
    fail with EAGAIN) — returned as the vm_userfaultfd_ctx for
    mremap_userfaultfd_complete(); without it the VMA drops its registration
    (write-locked)."""
    ctx = new_vma.vm_userfaultfd_ctx
    if ctx is None:
        return None
    if ctx.features & UFFD_FEATURE_EVENT_REMAP:
        userfaultfd_ctx_get(ctx)
        await _mmap_changing_inc(ctx)
        return ctx
    await userfaultfd_reset_ctx(new_vma)
    return None


async def _mmap_changing_inc(ctx: UserfaultfdCtx) -> None:
    """down_write(map_changing_lock); atomic_inc(mmap_changing); up_write():
    waits for every fill holding the read side."""
    lock = ctx.map_changing_lock
    assert lock is not None
    await lock.down_write()
    await Op(_RMW, ctx.evt_loc, "atomic_inc(ctx->mmap_changing)", order=Order.RELAXED)
    ctx.mmap_changing += 1
    await lock.up_write()


async def mremap_userfaultfd_complete(ctx: UserfaultfdCtx | None, old: int, new: int, length: int,
                                      failed: bool) -> None:
    """notify_uffd()'s remap part (after mmap_write_unlock): a successful
    move sends UFFD_EVENT_REMAP {from, to, len} and waits until it is read;
    a failed one only drops the reference (mremap_userfaultfd_fail(), which
    leaves ``mmap_changing`` raised, as 7.0 does)."""
    if ctx is None:
        return
    if failed:
        await userfaultfd_ctx_put(ctx)
        return
    ewq = UserfaultfdEvent({"event": UFFD_EVENT_REMAP, "from": old, "to": new, "len": length})
    await userfaultfd_event_wait_completion(ctx, ewq)


async def userfaultfd_event_wait_completion(ctx: UserfaultfdCtx, ewq: UserfaultfdEvent) -> None:
    """Models userfaultfd_event_wait_completion(): queue the event on
    event_wqh and sleep (killable) until read() completes it, the context is
    released or a fatal signal comes; then lower ``mmap_changing`` and drop
    the reference the prep took."""
    tsk = current_task()
    await Op(_RMW, ctx.evt_loc, "userfaultfd_event_wait_completion: __add_wait_queue", order=Order.LOCKED)
    ctx.event_wqh.append(ewq)
    while ewq.msg["event"]:
        await Op(_READ, ctx.loc, "userfaultfd_event_wait_completion: READ_ONCE(ctx->released)", order=Order.MB_ONCE)
        if ctx.released or fatal_signal_pending(tsk):
            await Op(_RMW, ctx.evt_loc, "userfaultfd_event_wait_completion: __remove_wait_queue", order=Order.LOCKED)
            if ewq in ctx.event_wqh:
                ctx.event_wqh.remove(ewq)
            break
        await block(ctx.evt_loc, "userfaultfd_event_wait_completion: schedule()",
                    lambda: not ewq.msg["event"] or ctx.released or tsk.fatal_signal,
                    also=signal_loc(tsk), order=Order.ACQUIRE)
    await Op(_RMW, ctx.evt_loc, "atomic_dec(ctx->mmap_changing)", order=Order.RELAXED)
    ctx.mmap_changing -= 1
    if ctx.mmap_changing < 0:
        debug.report("WARNING: userfaultfd_event_wait_completion", f"{ctx}: mmap_changing < 0")
    await userfaultfd_ctx_put(ctx)


async def userfaultfd_unmap_prep(vma: VmAreaStruct, start: int, end: int, unmaps: list[Any]) -> int:
    """Models userfaultfd_unmap_prep() (vms_gather_munmap_vmas(), under the
    mmap write lock): with UFFD_FEATURE_EVENT_UNMAP, once per context and
    range, pin the context and raise ``mmap_changing``; the event goes out in
    userfaultfd_unmap_complete() once munmap has dropped mmap_lock."""
    ctx = vma.vm_userfaultfd_ctx
    if ctx is None or not ctx.features & UFFD_FEATURE_EVENT_UNMAP or (ctx, start, end) in unmaps:
        return 0
    userfaultfd_ctx_get(ctx)
    await _mmap_changing_inc(ctx)
    unmaps.append((ctx, start, end))
    return 0


async def userfaultfd_unmap_complete(unmaps: list[Any]) -> None:
    """Models userfaultfd_unmap_complete(): send each UFFD_EVENT_UNMAP
    {start, end} and wait for it to be read."""
    for ctx, start, end in unmaps:
        await userfaultfd_event_wait_completion(
            ctx, UserfaultfdEvent({"event": UFFD_EVENT_UNMAP, "start": start, "end": end}))
    unmaps.clear()


def userfaultfd_event_complete(ctx: UserfaultfdCtx, ewq: UserfaultfdEvent) -> None:
    """userfaultfd_event_complete() (event_wqh locked by the caller)."""
    ewq.msg["event"] = 0
    ctx.event_wqh.remove(ewq)


async def mmap_changing_read(ctx: UserfaultfdCtx) -> bool:
    """atomic_read(&ctx->mmap_changing): an ioctl's lockless early check."""
    await Op(_READ, ctx.evt_loc, "atomic_read(ctx->mmap_changing)", order=Order.ONCE)
    return bool(ctx.mmap_changing)


# -- the ioctls (fs/userfaultfd.c) ------------------------------------------------------
async def userfaultfd_api(ctx: UserfaultfdCtx, api: int, features: int) -> tuple[int, int, int]:
    """Models userfaultfd_api(): (ret, uffdio_api.features, uffdio_api.ioctls);
    on error both outputs are zeroed.  Once only (the cmpxchg on features)."""
    if api != UFFD_API:
        return -errno.EINVAL, 0, 0
    if features & UFFD_FEATURE_WP_ASYNC:
        features |= UFFD_FEATURE_WP_UNPOPULATED
    if features & ~UFFD_API_FEATURES:
        return -errno.EINVAL, 0, 0
    await Op(_RMW, ctx.loc, "userfaultfd_api: cmpxchg(ctx->features)", order=Order.FULL)
    if ctx.features:
        return -errno.EINVAL, 0, 0
    if features & _NOT_MODELLED_FEATURES:
        raise NotModelled(f"userfaultfd: features {features & _NOT_MODELLED_FEATURES:#x} are valid "
                          "on Linux but not modelled")
    ctx.features = features | UFFD_FEATURE_INITIALIZED
    return 0, UFFD_API_FEATURES, UFFD_API_IOCTLS


async def userfaultfd_copy(ctx: UserfaultfdCtx, dst: int, src: int, length: int,
                           mode: int) -> tuple[int, int]:
    """Models userfaultfd_copy(): (ioctl return, uffdio_copy.copy)."""
    if await mmap_changing_read(ctx):
        return -errno.EAGAIN, -errno.EAGAIN
    ret = validate_unaligned_range(src, length) or validate_range(dst, length)
    if ret:
        return ret, 0
    if mode & ~(UFFDIO_COPY_MODE_DONTWAKE | UFFDIO_COPY_MODE_WP):
        return -errno.EINVAL, 0
    flags = MFILL_ATOMIC_WP if mode & UFFDIO_COPY_MODE_WP else 0
    return await _fill_ioctl(ctx, dst, src, length, MFILL_ATOMIC_COPY,
                             not mode & UFFDIO_COPY_MODE_DONTWAKE, flags)


async def userfaultfd_zeropage(ctx: UserfaultfdCtx, start: int, length: int, mode: int
                               ) -> tuple[int, int]:
    """Models userfaultfd_zeropage(): (ioctl return, uffdio_zeropage.zeropage)."""
    if await mmap_changing_read(ctx):
        return -errno.EAGAIN, -errno.EAGAIN
    ret = validate_range(start, length)
    if ret:
        return ret, 0
    if mode & ~UFFDIO_ZEROPAGE_MODE_DONTWAKE:
        return -errno.EINVAL, 0
    return await _fill_ioctl(ctx, start, 0, length, MFILL_ATOMIC_ZEROPAGE,
                             not mode & UFFDIO_ZEROPAGE_MODE_DONTWAKE)


async def _fill_ioctl(ctx: UserfaultfdCtx, dst: int, src: int, length: int, kind: int,
                      wake: bool, flags: int = 0) -> tuple[int, int]:
    mm = ctx.mm
    assert mm is not None
    if not await mmget_not_zero(mm):
        return -errno.ESRCH, 0
    ret = await mfill_atomic(ctx, dst, src, length, kind, flags)
    await _mmput(mm)
    if ret < 0:
        return ret, ret
    if wake:
        await wake_userfault(ctx, dst, ret)
    return (0 if ret == length else -errno.EAGAIN), ret


async def userfaultfd_wake(ctx: UserfaultfdCtx, start: int, length: int) -> int:
    """Models userfaultfd_wake() (UFFDIO_WAKE): wake the faults queued in
    [start, start+len), read or not; for fills and resolutions made with
    the DONTWAKE modes."""
    ret = validate_range(start, length)
    if ret:
        return ret
    await wake_userfault(ctx, start, length)
    return 0


async def userfaultfd_writeprotect(ctx: UserfaultfdCtx, start: int, length: int, mode: int) -> int:
    """Models userfaultfd_writeprotect() (UFFDIO_WRITEPROTECT, 7.0): MODE_WP
    write-protects the range's present PTEs, mode 0 resolves them and wakes
    the faults waiting in the range (not with MODE_DONTWAKE; WP|DONTWAKE is
    -EINVAL).  mwriteprotect_range() does the work under mmap_read_lock."""
    if await mmap_changing_read(ctx):
        return -errno.EAGAIN
    ret = validate_range(start, length)
    if ret:
        return ret
    if mode & ~(UFFDIO_WRITEPROTECT_MODE_DONTWAKE | UFFDIO_WRITEPROTECT_MODE_WP):
        return -errno.EINVAL
    mode_wp = bool(mode & UFFDIO_WRITEPROTECT_MODE_WP)
    mode_dontwake = bool(mode & UFFDIO_WRITEPROTECT_MODE_DONTWAKE)
    if mode_wp and mode_dontwake:
        return -errno.EINVAL
    mm = ctx.mm
    assert mm is not None
    if not await mmget_not_zero(mm):
        return -errno.ESRCH
    ret = await mwriteprotect_range(ctx, start, length, mode_wp)
    await _mmput(mm)
    if ret:
        return ret
    if not mode_wp and not mode_dontwake:
        await wake_userfault(ctx, start, length)
    return 0


async def userfaultfd_move(ctx: UserfaultfdCtx, dst: int, src: int, length: int, mode: int
                           ) -> tuple[int, int]:
    """Models userfaultfd_move(): (ioctl return, uffdio_move.move)."""
    if await mmap_changing_read(ctx):
        return -errno.EAGAIN, -errno.EAGAIN
    mm = ctx.mm
    assert mm is not None
    if mm is not current_task().mm:
        return -errno.EINVAL, 0
    ret = validate_range(dst, length) or validate_range(src, length)
    if ret:
        return ret, 0
    if mode & ~(UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES | UFFDIO_MOVE_MODE_DONTWAKE):
        return -errno.EINVAL, 0
    if not await mmget_not_zero(mm):
        return -errno.ESRCH, 0
    ret = await move_pages(ctx, dst, src, length, mode)
    await _mmput(mm)
    if ret < 0:
        return ret, ret
    if not mode & UFFDIO_MOVE_MODE_DONTWAKE:
        await wake_userfault(ctx, dst, ret)
    return (0 if ret == length else -errno.EAGAIN), ret
