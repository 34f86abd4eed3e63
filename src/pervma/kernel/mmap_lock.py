"""mmap_lock and the per-VMA lock (include/linux/mmap_lock.h, mm/mmap_lock.c).

7.x names throughout; the 6.x names are in the README's crosswalk.  With
``PER_VMA_LOCK`` off every per-VMA function is the pre-series stub: the
seqcount is never bumped, ``lock_vma_under_rcu`` returns NULL, write-lock
functions do nothing and assertions fall back to mmap_lock assertions.

Every shared access is an awaited step; the docstrings say why the order of
those steps matters.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Coroutine
from types import FrameType
from typing import TYPE_CHECKING, Any

from pervma.kernel import debug
from pervma.kernel.atomic import UINT_MAX, seqcount_sequence
from pervma.kernel.mm_types import (
    VM_REFCNT_EXCLUDE_READERS_BIT as VM_REFCNT_EXCLUDE_READERS_BIT,  # re-export
)
from pervma.kernel.mm_types import (
    VM_REFCNT_EXCLUDE_READERS_FLAG,
    VM_REFCNT_LIMIT,
    VmFlags,
    vma_fault_fields,
    vma_lock_seq,
)
from pervma.kernel.rcu import rcu_read_lock, rcu_read_unlock
from pervma.kernel.sites import call_site
from pervma.kernel.task import current_task
from pervma.kernel.vmstat import count_vm_vma_lock_event
from pervma.sched import Op, OpKind
from pervma.sched.locations import VM_LOCK_SEQ, VMA
from pervma.sched.memory import init_store, load, store
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

TASK_UNINTERRUPTIBLE = 2
TASK_KILLABLE = 0x102


class _EAgain:
    """ERR_PTR(-EAGAIN): the VMA found was detached."""

    def __repr__(self) -> str:
        return "ERR_PTR(-EAGAIN)"


EAGAIN_VMA = _EAgain()


def _per_vma(mm: MmStruct) -> bool:
    return bool(mm.config.PER_VMA_LOCK)


# ---------------------------------------------------------------------------
# mmap_lock wrappers
# ---------------------------------------------------------------------------
async def mm_lock_seqcount_begin(mm: MmStruct) -> None:
    """do_raw_write_seqcount_begin(&mm->mm_lock_seq) (7.0): right after
    down_write() succeeded; the sequence goes odd for the write session."""
    if _per_vma(mm):
        if mm.mmap_lock.writer is not current_task() or mm.mm_lock_seq.sequence & 1:
            mm_lock_seq_assert_moves(mm, "mm_lock_seqcount_begin", 0)
        await mm.mm_lock_seq.write_begin("mm_lock_seqcount_begin")


async def mm_lock_seqcount_end(mm: MmStruct) -> None:
    """ASSERT_EXCLUSIVE_WRITER + do_raw_write_seqcount_end (7.0): from
    vma_end_write_all() only; the sequence goes even, dropping every VMA
    write lock of the session at once."""
    if _per_vma(mm):
        if mm.mmap_lock.writer is not current_task() or not mm.mm_lock_seq.sequence & 1:
            mm_lock_seq_assert_moves(mm, "mm_lock_seqcount_end", 1)
        # historical B12 (6.4): WRITE_ONCE(), no release: a reader that sees the
        # new sequence may still see the VMA as it was before the session's stores
        await mm.mm_lock_seq.write_end("mm_lock_seqcount_end",
                                       Order.ONCE if mm.config.bug("B12") else Order.WMB_ONCE)


# pervma's mm_lock_seq discipline (the kernel only has KCSAN's
# ASSERT_EXCLUSIVE_WRITER in mm_lock_seqcount_end): the sequence moves only
# in mm_lock_seqcount_begin/end, under mmap_lock held for write by the task
# moving it; it is odd exactly while a writer holds mmap_lock.  A move made
# anywhere else breaks the parity, which the next lock operation on the mm
# sees (tests/kernel/test_vma_asserts.py also checks the sources).
def mm_lock_seq_assert_moves(mm: MmStruct, where: str, parity: int) -> None:
    """Before ``where`` moves mm_lock_seq: mmap_lock is write-held by the
    current task and the sequence has ``parity`` (0 at begin, 1 at end).
    The callers test the condition inline (every write session passes here)
    and call this to report."""
    seq = mm.mm_lock_seq.sequence
    writer = mm.mmap_lock.writer
    if writer is None or writer is not current_task():
        debug.report("WARNING: mm_lock_seq",
                     f"{where}() on {mm} without mmap_lock held for write (mm_lock_seq {seq}); "
                     f"it moves only inside mmap_write_lock/downgrade/unlock; {_call_trace()}")
    elif seq & 1 != parity:
        state = "odd: a write session is already open" if parity == 0 else "even: no write session to end"
        debug.report("WARNING: mm_lock_seq", f"{where}() on {mm} with mm_lock_seq {seq} {state}; {_call_trace()}")


def mm_lock_seq_report_read_session(mm: MmStruct, where: str) -> None:
    """mmap_lock read-held: no writer, so mm_lock_seq must be even (an odd one
    left behind makes every VMA stamped in that session look write-locked).
    The callers test ``sequence & 1`` inline and call this to report."""
    debug.report("WARNING: mm_lock_seq",
                 f"{mm} mm_lock_seq {mm.mm_lock_seq.sequence} is odd in {where}() with mmap_lock not "
                 f"write-held: a write session was not ended by vma_end_write_all(); {_call_trace()}")


def _call_trace(skip: int = 2, depth: int = 4) -> str:
    """The model's call chain from the function that runs the failed check
    (``skip`` frames up: past this helper and an assertion function), innermost
    first, as a WARN's call trace shows it; only built when a check fails."""
    f: FrameType | None = sys._getframe(skip)
    names: list[str] = []
    while f is not None and len(names) < depth:
        if f.f_code.co_filename.startswith(_KERNEL_DIR):
            names.append(f.f_code.co_name)
        f = f.f_back
    return "call trace: " + " <- ".join(names)


_KERNEL_DIR = __file__.rsplit("/", 1)[0]


async def mmap_write_lock(mm: MmStruct) -> None:
    await mm.mmap_lock.down_write()
    await mm_lock_seqcount_begin(mm)


mmap_write_lock_nested = mmap_write_lock


async def mmap_write_lock_killable(mm: MmStruct) -> int:
    ret = await mm.mmap_lock.down_write(killable=True)
    if ret == 0:
        await mm_lock_seqcount_begin(mm)
    return ret


async def vma_end_write_all(mm: MmStruct) -> None:
    """Ends the write session: every VMA write lock of mm drops at once."""
    mmap_assert_write_locked(mm)
    await mm_lock_seqcount_end(mm)


async def mmap_write_unlock(mm: MmStruct) -> None:
    await vma_end_write_all(mm)
    await mm.mmap_lock.up_write()


async def mmap_write_downgrade(mm: MmStruct) -> None:
    await vma_end_write_all(mm)
    await mm.mmap_lock.downgrade_write()


async def mmap_read_lock(mm: MmStruct) -> None:
    await mm.mmap_lock.down_read()
    if mm.mm_lock_seq.sequence & 1:
        mm_lock_seq_report_read_session(mm, "mmap_read_lock")


async def mmap_read_lock_killable(mm: MmStruct) -> int:
    ret = await mm.mmap_lock.down_read(killable=True)
    if ret == 0 and mm.mm_lock_seq.sequence & 1:
        mm_lock_seq_report_read_session(mm, "mmap_read_lock_killable")
    return ret


async def mmap_read_trylock(mm: MmStruct) -> bool:
    ok = await mm.mmap_lock.down_read_trylock()
    if ok and mm.mm_lock_seq.sequence & 1:
        mm_lock_seq_report_read_session(mm, "mmap_read_trylock")
    return ok


async def mmap_read_unlock(mm: MmStruct) -> None:
    if mm.mm_lock_seq.sequence & 1:
        mm_lock_seq_report_read_session(mm, "mmap_read_unlock")
    await mm.mmap_lock.up_read()


def mmap_assert_locked(mm: MmStruct) -> None:
    """rwsem_assert_held() with lockdep (the model's debug config): the
    caller itself holds mmap_lock, for read or write; another task holding
    it does not count."""
    lock = mm.mmap_lock
    tsk = current_task()
    if lock.writer is not tsk and tsk not in lock.readers:
        held = "" if not lock.is_locked() else f" by {tsk.comm}/{tsk.pid} (another task holds it)"
        debug.report("WARNING: mmap_assert_locked", f"{mm} mmap_lock not held{held}")


def mmap_assert_write_locked(mm: MmStruct) -> None:
    if mm.mmap_lock.writer is None or mm.mmap_lock.writer is not current_task():
        debug.report("WARNING: mmap_assert_write_locked", f"{mm} mmap_lock not write-held")


async def mmap_lock_speculate_try_begin(mm: MmStruct) -> tuple[bool, int]:
    if not _per_vma(mm):
        return False, 0
    return await mm.mm_lock_seq.try_begin("mmap_lock_speculate_try_begin")


async def mmap_lock_speculate_retry(mm: MmStruct, seq: int) -> bool:
    if not _per_vma(mm):
        return True
    return await mm.mm_lock_seq.retry(seq, "mmap_lock_speculate_retry")


# ---------------------------------------------------------------------------
# The per-VMA lock
# ---------------------------------------------------------------------------
def vma_lock_init(vma: VmAreaStruct, reset_refcnt: bool) -> None:
    """Initialise the lock fields of a new or duplicated VMA (no step: the
    object is not yet visible)."""
    if reset_refcnt:
        vma.vm_refcnt.counter = 0
    vma.vm_lock_seq = UINT_MAX
    vma.debug_readers = 0


def __vma_are_readers_excluded(refcnt: int) -> bool:
    return bool(refcnt & VM_REFCNT_EXCLUDE_READERS_FLAG) and refcnt <= VM_REFCNT_EXCLUDE_READERS_FLAG + 1


async def vma_refcount_put(vma: VmAreaStruct) -> None:
    """Models vma_refcount_put() (7.x): copy vm_mm *before* the decrement,
    because once the count drops the VMA may be freed and reused by another
    mm; then wake a waiting writer or detacher if readers are excluded."""
    mm = vma.vm_mm
    if mm is not None and mm.config.bug("B16"):
        return await _vma_refcount_put_b16(vma)
    debug.lockdep_release("vm_lock", vma)
    newcnt = await vma.vm_refcnt.sub_return(1, "vma_refcount_put: dec")
    if newcnt and __vma_are_readers_excluded(newcnt):
        debug.kasan_check(mm, "rcuwait_wake_up(&mm->vma_writer_wait)", "mm_struct")
        await mm.vma_writer_wait.wake_up()


async def _vma_refcount_put_b16(vma: VmAreaStruct) -> None:
    """Historical (B16, 6.15-6.16): vma_refcount_put() reached the mm through
    the VMA *after* the decrement, when the VMA may already be freed and
    reused by another mm whose mm_struct may be gone."""
    newcnt = await vma.vm_refcnt.sub_return(1, "vma_refcount_put: dec")
    debug.lockdep_release("vm_lock", vma)
    if newcnt and __vma_are_readers_excluded(newcnt):
        await Op(OpKind.READ, (VMA, vma.slot), "vma_refcount_put: vma->vm_mm", order=Order.PLAIN)
        mm = vma.vm_mm
        debug.kasan_check(mm, "rcuwait_wake_up(&vma->vm_mm->vma_writer_wait)", "mm_struct")
        await mm.vma_writer_wait.wake_up()


async def vma_start_read(mm: MmStruct, vma: VmAreaStruct) -> VmAreaStruct | _EAgain | None:
    """Models vma_start_read() (7.0, static in mm/mmap_lock.c).  Caller is in
    an RCU read section; on failure RCU has been dropped.

    Each check is its own step because a writer may act between them:
    the early seq check is racy on purpose (a cheap bail-out); the bounded
    increment fails on a detached VMA (-EAGAIN: the caller retries the walk)
    or while readers are excluded; the vm_mm check catches a VMA recycled
    into another mm (SLAB_TYPESAFE_BY_RCU), pinning that mm before the put
    may wake its writer; the late seq check (acquire) catches a writer that
    locked the VMA after the early check.  KASAN sees each access to the
    VMA (a freed one is legal only inside the grace period of its free:
    SLAB_TYPESAFE_BY_RCU; the test is inline, the report out of line).
    """
    mm_lock_seq = mm.mm_lock_seq
    # 1. early check against the caller's mm, never the unstable vma->vm_mm
    # READ_ONCE(vma->vm_lock_seq) == READ_ONCE(mm->mm_lock_seq.sequence): no ordering needed
    vm_seq, mm_seq = await load(
        vma.read_step(VM_LOCK_SEQ, "vma_start_read: early seq check", mm_lock_seq.loc, Order.ONCE),
        vma_lock_seq, vma, seqcount_sequence, mm_lock_seq)
    if vma.freed:
        debug.kasan_check(vma, "vma_start_read: READ_ONCE(vma->vm_lock_seq)", "vm_area_struct")
    if vm_seq == mm_seq:
        rcu_read_unlock()
        return None
    # 2. bounded inc-not-zero
    ok, old = await vma.vm_refcnt.inc_not_zero_limited(
        VM_REFCNT_LIMIT, "vma_start_read: refcount_inc_not_zero_limited",
        # allow_zero; historical 6.4 (B13): taking the lock did not refuse a detached VMA.
        mm.config.bug("B13"))
    if vma.freed:
        debug.kasan_check(vma, "vma_start_read: refcount_inc_not_zero_limited(&vma->vm_refcnt)",
                          "vm_area_struct")
    if not ok:
        rcu_read_unlock()
        return EAGAIN_VMA if old == 0 else None
    debug.lockdep_acquire("vm_lock", vma, "read")
    # 3. reuse check (historical B17: none)
    if not mm.config.bug("B17"):
        vm_mm_id = (await load(vma.read_step(VMA, "vma_start_read: vma->vm_mm check", None,
                                             Order.PLAIN), vma_fault_fields, vma))[3]
        if vma.freed:
            debug.kasan_check(vma, "vma_start_read: vma->vm_mm", "vm_area_struct")
        if vm_mm_id != mm.id:
            other = vma.vm_mm
            rcu_read_unlock()
            if mm.config.bug("B16"):
                await _vma_start_read_put_b16(vma)
                return None
            await mmgrab(other)
            await vma_refcount_put(vma)
            await mmdrop(other)
            return None
    # 4. late check: vma->vm_lock_seq (plain, stable under the reference) against
    # raw_read_seqcount(&mm->mm_lock_seq), an acquire load pairing with the
    # smp_wmb() before the increment in vma_end_write_all()
    # (historical B12, 6.4: READ_ONCE(), no acquire)
    vm_seq, mm_seq = await load(
        vma.read_step(VM_LOCK_SEQ, "vma_start_read: late seq check", mm_lock_seq.loc,
                      Order.ONCE if mm.config.bug("B12") else Order.ACQUIRE),
        vma_lock_seq, vma, seqcount_sequence, mm_lock_seq)
    if vma.freed:
        debug.kasan_check(vma, "vma_start_read: raw_read_seqcount(vma->vm_lock_seq)", "vm_area_struct")
    locked = vm_seq == mm_seq
    if locked:
        rcu_read_unlock()
        await vma_refcount_put(vma)
        return None
    vma.debug_readers += 1
    return vma


async def _vma_start_read_put_b16(vma: VmAreaStruct) -> None:
    """Historical (B16, 6.15-6.16): the reference on a VMA recycled into
    another mm is dropped without pinning that mm (no mmgrab()/mmdrop()
    around vma_refcount_put())."""
    await vma_refcount_put(vma)


async def vma_start_read_locked(vma: VmAreaStruct) -> bool:
    """Models vma_start_read_locked(): under mmap_lock no writer can be
    active, so only the reader limit can make the increment fail."""
    mm = vma.vm_mm
    mmap_assert_locked(mm)
    if not _per_vma(mm):
        return True
    ok, _ = await vma.vm_refcnt.inc_not_zero_limited(VM_REFCNT_LIMIT, "vma_start_read_locked")
    if not ok:
        return False
    debug.lockdep_acquire("vm_lock", vma, "read")
    vma.debug_readers += 1
    return True


vma_start_read_locked_nested = vma_start_read_locked  # lockdep subclass only


def vma_end_read(vma: VmAreaStruct) -> Coroutine[Any, Any, None]:
    """vma_end_read(): its one step is vma_refcount_put()'s, so it is a plain
    call handing back that coroutine (the bookkeeping before it takes no step)."""
    if not vma.vm_mm.config.PER_VMA_LOCK:
        return _no_vma_lock()
    vma.debug_readers -= 1
    if vma.debug_readers < 0:
        debug.report("BUG: vma_end_read", f"{vma} read-unlocked more often than locked")
    return vma_refcount_put(vma)


async def _no_vma_lock() -> None:
    """vma_end_read() without CONFIG_PER_VMA_LOCK: nothing to release."""


def __vma_raw_mm_seqnum(vma: VmAreaStruct) -> int:
    """The mm's sequence, read by the mmap write holder: odd, or its write
    session was never begun (pervma's check: vma_start_write would stamp an
    unlocked value and vma_assert_write_locked would pass on every VMA)."""
    mm = vma.vm_mm
    mmap_assert_write_locked(mm)
    seq = mm.mm_lock_seq.sequence
    if not seq & 1 and mm.config.PER_VMA_LOCK:
        debug.report("WARNING: mm_lock_seq",
                     f"{mm} mmap_lock write-held but mm_lock_seq {seq} is even: the write session "
                     f"was not begun by mm_lock_seqcount_begin(); {_call_trace(1)}")
    return seq


def __is_vma_write_locked(vma: VmAreaStruct) -> bool:
    """Plain read: only the mmap write holder writes vm_lock_seq."""
    return vma.vm_lock_seq == __vma_raw_mm_seqnum(vma)


class VmaExcludeReadersState:
    __slots__ = ("detached", "detaching", "exclusive", "state", "vma")

    def __init__(self, vma: VmAreaStruct, state: int, detaching: bool) -> None:
        self.vma = vma
        self.state = state
        self.detaching = detaching
        self.detached = False
        self.exclusive = False


async def __vma_start_exclude_readers(ves: VmaExcludeReadersState) -> int:
    """Models __vma_start_exclude_readers() (7.0): add the FLAG unless the VMA
    is detached (then there is nothing to wait for), then sleep on the mm's
    single rcuwait slot until only the writer's (or nobody's) reference is
    left.  A fatal signal while killable undoes the FLAG and returns -EINTR."""
    vma = ves.vma
    mm = vma.vm_mm
    mmap_assert_write_locked(mm)
    target = VM_REFCNT_EXCLUDE_READERS_FLAG | (0 if ves.detaching else 1)
    ok, _ = await vma.vm_refcnt.add_not_zero(VM_REFCNT_EXCLUDE_READERS_FLAG,
                                              "__vma_start_exclude_readers: add FLAG")
    if not ok:
        ves.detached = True
        return 0
    debug.lockdep_acquire("vm_lock", vma, "write")
    ret = await mm.vma_writer_wait.wait_event(
        lambda: vma.vm_refcnt.counter == target, vma.vm_refcnt.loc,
        ves.state == TASK_KILLABLE, "__vma_start_exclude_readers: wait for readers")
    if ret:
        await __vma_end_exclude_readers(ves)
        return ret
    ves.exclusive = True
    return 0


async def __vma_end_exclude_readers(ves: VmaExcludeReadersState) -> None:
    vma = ves.vma
    newcnt = await vma.vm_refcnt.sub_return(VM_REFCNT_EXCLUDE_READERS_FLAG,
                                            "__vma_end_exclude_readers: sub FLAG")
    ves.detached = newcnt == 0
    debug.lockdep_release("vm_lock", vma)


async def __vma_start_write(vma: VmAreaStruct, state: int) -> int:
    """Models __vma_start_write() (7.0): exclude readers, then stamp
    vm_lock_seq with the mm's odd sequence (also on a detached VMA, so a new
    VMA is write-locked before it becomes visible), then let transient
    readers in again; they will see the stamp and back off."""
    seq = __vma_raw_mm_seqnum(vma)
    ves = VmaExcludeReadersState(vma, state, detaching=False)
    ret = await __vma_start_exclude_readers(ves)
    if ret:
        debug.VM_WARN_ON_ONCE(ves.detached, f"{vma} detached while write-locking")
        return ret
    await store(Op(OpKind.WRITE, vma.lock_seq_loc, "__vma_start_write: WRITE_ONCE(vm_lock_seq)",
                   order=Order.ONCE), vma_lock_seq, vma)
    vma.vm_lock_seq = seq
    if ves.exclusive:
        await __vma_end_exclude_readers(ves)
        debug.VM_WARN_ON_ONCE(ves.detached, f"{vma} detached by write-locking it")
    return 0


async def vma_start_write(vma: VmAreaStruct) -> None:
    """Models vma_start_write(): re-entrant within one write session."""
    if not _per_vma(vma.vm_mm):
        mmap_assert_write_locked(vma.vm_mm)
        return
    if __is_vma_write_locked(vma):
        return
    await __vma_start_write(vma, TASK_UNINTERRUPTIBLE)


async def vma_start_write_killable(vma: VmAreaStruct) -> int:
    """Models vma_start_write_killable(): 0, or -EINTR with the VMA unlocked
    and the FLAG removed again."""
    if not _per_vma(vma.vm_mm):
        mmap_assert_write_locked(vma.vm_mm)
        return 0
    if __is_vma_write_locked(vma):
        return 0
    return await __vma_start_write(vma, TASK_KILLABLE)


def vma_assert_write_locked(vma: VmAreaStruct) -> None:
    """Models vma_assert_write_locked() (7.0: VM_WARN_ON_ONCE_VMA, 6.x:
    VM_BUG_ON_VMA): the mmap write holder stamped this VMA in the current
    write session.  The report carries what dump_vma() and the two
    sequences would show."""
    mm = vma.vm_mm
    if not _per_vma(mm):
        mmap_assert_write_locked(mm)
        return
    if not __is_vma_write_locked(vma):
        debug.report("WARNING: vma_assert_write_locked",
                     f"VM_WARN_ON_ONCE_VMA(!__is_vma_write_locked(vma)): {vma} mm {mm} "
                     f"refcnt {vma.vm_refcnt.counter:#x} vm_lock_seq {vma.vm_lock_seq} "
                     f"mm_lock_seq {mm.mm_lock_seq.sequence} flags {int(vma.vm_flags):#x}; {_call_trace()}")


def vma_assert_attached(vma: VmAreaStruct) -> None:
    if _per_vma(vma.vm_mm) and vma.vm_refcnt.counter == 0:
        debug.report("WARNING: vma_assert_attached", f"{vma} is detached")


def vma_assert_detached(vma: VmAreaStruct) -> None:
    if _per_vma(vma.vm_mm) and vma.vm_refcnt.counter != 0:
        debug.report("WARNING: vma_assert_detached", f"{vma} is attached (vm_refcnt {vma.vm_refcnt.counter:#x})")


def vma_assert_locked(vma: VmAreaStruct) -> None:
    """7.x without lockdep semantics: refcnt > 1 is a reader, refcnt 1 must
    be write-locked, 0 is detached."""
    mm = vma.vm_mm
    if not _per_vma(mm):
        mmap_assert_locked(mm)
        return
    cnt = vma.vm_refcnt.counter
    if cnt == 0:
        debug.report("WARNING: vma_assert_locked", f"{vma} is detached")
    elif cnt == 1 and not (mm.mmap_lock.writer is not None and vma.vm_lock_seq == mm.mm_lock_seq.sequence):
        debug.report("WARNING: vma_assert_locked", f"{vma} is neither read- nor write-locked")


def vma_assert_stabilised(vma: VmAreaStruct) -> None:
    """7.x: the VMA cannot change under us: mmap_lock held, or a VMA lock."""
    if not vma.vm_mm.mmap_lock.is_locked():
        vma_assert_locked(vma)


async def vma_mark_attached(vma: VmAreaStruct) -> None:
    """Models vma_mark_attached(): publish vm_refcnt = 1 (release) on a
    write-locked, detached VMA; all other fields were set before."""
    if not _per_vma(vma.vm_mm):
        return
    if not vma.vm_mm.config.bug("B05"):  # historical 6.4 (B05): no attach-time assertion
        vma_assert_write_locked(vma)
    vma_assert_detached(vma)
    # the fields set since vm_area_alloc() (its range, flags, vm_mm), which
    # the release below publishes together with the reference
    init_store((VMA, vma.slot), vma_fault_fields, vma)
    await vma.vm_refcnt.set_release(1, "vma_mark_attached")


async def vma_mark_detached(vma: VmAreaStruct) -> None:
    """Models vma_mark_detached() (7.0, inline): drop the attach reference;
    if transient readers still hold references, exclude readers and wait for
    them (a late put on a freed-and-reused VMA would corrupt its count)."""
    if not _per_vma(vma.vm_mm):
        return
    vma_assert_write_locked(vma)
    vma_assert_attached(vma)
    if await vma.vm_refcnt.dec_and_test("vma_mark_detached: dec"):
        return
    if vma.vm_mm.config.bug("B18"):
        return  # historical draft (B18): do not wait for transient readers
    await __vma_exclude_readers_for_detach(vma)


async def __vma_exclude_readers_for_detach(vma: VmAreaStruct) -> None:
    ves = VmaExcludeReadersState(vma, TASK_UNINTERRUPTIBLE, detaching=True)
    await __vma_start_exclude_readers(ves)
    if ves.exclusive:
        await __vma_end_exclude_readers(ves)
    debug.VM_WARN_ON_ONCE(not ves.detached, f"{vma} still attached after detach")


def vma_is_attached(vma: VmAreaStruct) -> bool:
    return vma.vm_refcnt.counter != 0


# ---------------------------------------------------------------------------
# mm_struct lifetime
# ---------------------------------------------------------------------------
async def mmgrab(mm: MmStruct) -> None:
    debug.kasan_check(mm, "mmgrab", "mm_struct")
    await mm.mm_count.add_return(1, "mmgrab", Order.RELAXED)  # atomic_inc(&mm->mm_count)


async def mmdrop(mm: MmStruct) -> None:
    debug.kasan_check(mm, "mmdrop", "mm_struct")
    if await mm.mm_count.dec_and_test("mmdrop", Order.FULL):  # atomic_dec_and_test()
        mm.system.free_mm(mm, "__mmdrop")


# ---------------------------------------------------------------------------
# Lookups that take the per-VMA lock
# ---------------------------------------------------------------------------
async def lock_vma_under_rcu(mm: MmStruct, address: int) -> VmAreaStruct | None:
    """Models lock_vma_under_rcu() (7.0): an RCU walk, vma_start_read, and a
    range check that must come *after* locking (vm_start/vm_end are only
    stable once read-locked; they share storage with the slab free pointer).
    Counts MISS once per -EAGAIN retry and ABORT once per NULL return."""
    config = mm.config
    if not config.PER_VMA_LOCK:
        return None
    while True:
        rcu_read_lock()
        vma = await mm.mm_mt.mas_walk(address)
        if vma is None:
            rcu_read_unlock()
            count_vm_vma_lock_event(mm, "vma_lock_abort")
            return None
        if config.bug("B09") and await _lock_vma_under_rcu_b09(mm, vma):
            return None
        r = await vma_start_read(mm, vma)
        if r is EAGAIN_VMA:
            count_vm_vma_lock_event(mm, "vma_lock_miss")
            continue
        if r is None:
            count_vm_vma_lock_event(mm, "vma_lock_abort")
            return None
        rcu_read_unlock()
        start, end, _, _ = await load(
            vma.read_step(VMA, "lock_vma_under_rcu: range check", None, Order.PLAIN),
            vma_fault_fields, vma)
        if not (start <= address < end):
            await vma_end_read(vma)
            count_vm_vma_lock_event(mm, "vma_lock_abort")
            return None
        return vma


async def _lock_vma_under_rcu_b09(mm: MmStruct, vma: VmAreaStruct) -> bool:
    """Historical (B09, 6.4): the anon_vma precondition judged before
    vma_start_read(), on an unlocked VMA.  True: the lookup gives up (RCU
    dropped, ABORT counted)."""
    await Op(OpKind.READ, (VMA, vma.slot), "lock_vma_under_rcu: vma->anon_vma (unlocked)",
             order=Order.PLAIN)
    if vma.anon_vma is None and vma.is_anonymous():
        rcu_read_unlock()
        count_vm_vma_lock_event(mm, "vma_lock_abort")
        return True
    return False


@call_site("mm/mmap_lock.c:lock_vma_under_rcu_wait", pre_form="new",
           pre_series="none: binder and TCP open-code lock_vma_under_rcu() + an mmap_lock "
           "fallback; uffd_lock_vma() is the 6.x precedent",
           series="lock_vma_under_rcu(), else mmap_read_lock_killable + vma_lookup + "
           "vma_start_read_locked and drop mmap_lock: returns the VMA read-locked",
           scenarios=("lock-vma-under-rcu-wait", "binder-shrinker-vs-munmap",
                      "tcp-zerocopy-vs-munmap"), version="series (pervma's assumption)",
           note="the series' helper is unseen: name and body are pervma's assumption "
           "(ARCHITECTURE.md, 'Two assumptions')")
async def lock_vma_under_rcu_wait(mm: MmStruct, address: int) -> VmAreaStruct | None:
    """pervma's model of the series' "RCU-based VMA lookup helper that waits
    for writers" (an assumption, see ARCHITECTURE.md): try
    lock_vma_under_rcu(); on failure queue on mmap_lock (killable), look the
    VMA up and hand over to its read lock.  Returns None only when there is
    no VMA at address or on a fatal signal."""
    vma = await lock_vma_under_rcu(mm, address)
    if vma is not None or not _per_vma(mm):
        if vma is None:
            # Without per-VMA locks there is no VMA lock to return.
            return None
        return vma
    if await mmap_read_lock_killable(mm):
        return None
    vma = mm.mm_mt.find_covering(address)
    if vma is not None and not await vma_start_read_locked(vma):
        vma = None
    await mmap_read_unlock(mm)
    return vma


@call_site("mm/mmap_lock.c:lock_next_vma", pre_form="ifdef",
           pre_series="built only under #ifdef CONFIG_PER_VMA_LOCK (6.17+); without it the "
           "/proc readers walk under mmap_read_lock",
           series="built in every config: RCU walk, vma_start_read(), mm_wr_seq recheck of a "
           "gap; mmap_read_lock_killable + vma_start_read_locked while a writer is active",
           scenarios=("maps-reader-vs-munmap", "maps-reader-vs-mprotect-split",
                      "procmap-query-vs-munmap",
                      "procmap-query-vs-mprotect-split"))
async def lock_next_vma(mm: MmStruct, from_addr: int) -> VmAreaStruct | None | int:
    """Models lock_next_vma() (7.0) for /proc/pid/maps: called and returns
    with RCU held.  Returns the next VMA at or above from_addr read-locked,
    None at the end, or a negative errno.  A VMA that starts above from_addr
    may hide a gap a writer just filled: it is only trusted when the mm's
    sequence shows no writer ran meanwhile, else it is looked up again."""
    while True:
        unlocked, seq = await mmap_lock_speculate_try_begin(mm)
        vma = await mm.mm_mt.mas_find(from_addr, "lock_next_vma: vma_next")
        if vma is None:
            return None
        r = await vma_start_read(mm, vma)
        if r is EAGAIN_VMA:
            rcu_read_lock()
            continue
        if r is None:
            break  # fallback (RCU already dropped)
        await Op(OpKind.READ, (VMA, vma.slot), "lock_next_vma: range check", order=Order.PLAIN)
        if from_addr >= vma.vm_end:
            rcu_read_unlock()
            await vma_end_read(vma)
            break
        if from_addr < vma.vm_start:
            if not unlocked or await mmap_lock_speculate_retry(mm, seq):
                again = await mm.mm_mt.mas_find(from_addr, "lock_next_vma: recheck")
                if again is not vma:
                    rcu_read_unlock()
                    await vma_end_read(vma)
                    break
        return vma
    # fallback under mmap_read_lock
    if await mmap_read_lock_killable(mm):
        rcu_read_lock()
        return -errno.EINTR
    v = mm.mm_mt.find(from_addr)
    result: VmAreaStruct | None | int = v
    if v is not None and not await vma_start_read_locked(v):
        result = -errno.EAGAIN
    await mmap_read_unlock(mm)
    rcu_read_lock()
    return result


async def lock_mm_and_find_vma(mm: MmStruct, address: int) -> VmAreaStruct | None:
    """Models lock_mm_and_find_vma() (CONFIG_LOCK_MM_AND_FIND_VMA): return
    the VMA covering address with mmap_lock read-held, growing a
    VM_GROWSDOWN stack first if needed.  Stack growth takes the mmap_lock
    for *write* (the StackRot fix): there is no upgrade, so the read lock is
    dropped, the write lock taken and the lookup repeated."""
    from pervma.kernel.mmap import expand_stack_locked

    if not await mmap_read_trylock(mm):
        if await mmap_read_lock_killable(mm):
            return None
    vma = await mm.mm_mt.mas_find(address, "find_vma")
    if vma is not None and vma.vm_start <= address:
        return vma
    if vma is None or not vma.vm_flags & VmFlags.VM_GROWSDOWN:
        await mmap_read_unlock(mm)
        return None
    if mm.config.bug("B02"):
        return await _lock_mm_and_find_vma_b02(mm, vma, address)
    await mmap_read_unlock(mm)
    if await mmap_write_lock_killable(mm):
        return None
    vma = mm.mm_mt.find(address)
    if vma is None:
        await mmap_write_unlock(mm)
        return None
    if vma.vm_start > address:
        if not vma.vm_flags & VmFlags.VM_GROWSDOWN or await expand_stack_locked(vma, address):
            await mmap_write_unlock(mm)
            return None
    await mmap_write_downgrade(mm)
    return vma


async def _lock_mm_and_find_vma_b02(mm: MmStruct, vma: VmAreaStruct, address: int) -> VmAreaStruct | None:
    """Historical (B02, 6.1-6.4): the stack is expanded under mmap_lock held
    for read, without the drop-and-relock to the write lock of the fix."""
    from pervma.kernel.mmap import expand_stack_locked

    if await expand_stack_locked(vma, address, write_locked=False):
        await mmap_read_unlock(mm)
        return None
    return vma
