"""userfaultfd (kernel/userfaultfd.py): the user API, errnos, VMA layouts after
register/unregister, page contents after copy/zeropage/move, the fault that
sleeps in handle_userfault, and the locks a fill holds, on every preset where
the behaviour should not change."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE,
    PROT_READ,
    PROT_WRITE,
    UFFD_API,
    UFFD_API_FEATURES,
    UFFD_API_IOCTLS,
    UFFD_EVENT_PAGEFAULT,
    UFFD_FEATURE_EVENT_FORK,
    UFFD_FEATURE_SIGBUS,
    UFFD_FEATURE_THREAD_ID,
    UFFD_PAGEFAULT_FLAG_WRITE,
    UFFD_USER_MODE_ONLY,
    UFFDIO_COPY_MODE_WP,
    UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
    UFFDIO_REGISTER_MODE_MINOR,
    UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
    Config,
    Process,
    Segfault,
    System,
    Thread,
)
from pervma.kernel.mm_types import VmFlags
from pervma.kernel.syscalls import NotModelled
from pervma.kernel.userfaultfd import O_NONBLOCK
from pervma.sched import Executor, Violation

A = 0x10000000
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
MISSING = UFFDIO_REGISTER_MODE_MISSING
# WAKE, COPY, ZEROPAGE, MOVE, POISON: what a missing-mode registration offers
MISSING_IOCTLS = (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8)
PRESETS = ("legacy", "universal", "universal-up", "universal-up-nopreempt")


def setup(preset: str, pages: int = 4) -> tuple[System, Process, int]:
    """A process with ``pages`` RW anonymous pages at A and a source page
    holding 0x5A at its first byte and 0x33 at its last."""
    kern = System(Config.preset(preset))
    p = kern.spawn()
    p.mmap(A, pages * PAGE, RW, ANON)
    src = p.mmap(0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(src, 0x5A)
    p.store(src + PAGE - 1, 0x33)
    return kern, p, src


def region(p: Process) -> list[tuple[int, int]]:
    """The VMAs of the test range as (first page, pages) from A."""
    return [((v.vm_start - A) // PAGE, (v.vm_end - v.vm_start) // PAGE)
            for v in p.mm.mm_mt.snapshot() if A <= v.vm_start < A + 64 * PAGE]


def uffd_flags(p: Process, page: int) -> VmFlags:
    vma = p.mm.mm_mt.find_covering(A + page * PAGE)
    assert vma is not None
    return vma.vm_flags & (VmFlags.VM_UFFD_MISSING | VmFlags.VM_UFFD_WP)


def run(ex: Executor, until: Callable[[], bool] | None = None, limit: int = 20000) -> None:
    """Round-robin the runnable threads (lowest first) until ``until`` holds
    or all finish; a deadlock or a violation fails the test."""
    for _ in range(limit):
        if ex.violation is not None:
            raise ex.violation
        if until is not None and until():
            return
        if ex.finished():
            return
        r = ex.runnable()
        if not r:
            raise AssertionError(f"deadlock: {ex.deadlock()}")
        ex.step(r[0])
    raise AssertionError("step limit reached")


def executor(*pairs: tuple[Thread, Callable[[Thread], Any]]) -> Executor:
    return Executor([t.start(b) for t, b in pairs], [t.task.comm for t, _ in pairs],
                    [t.task for t, _ in pairs])


def blocked_in(ex: Executor, tid: int, label: str) -> bool:
    t = ex.tasks[tid]
    return not t.done and t.pending is not None and t.pending.label == label and not t.pending.is_enabled()


# -- the context and UFFDIO_API ------------------------------------------------------------
def test_api_reports_every_feature_and_the_api_ioctls() -> None:
    _, p, _ = setup("universal")
    u = p.userfaultfd()
    assert u.api() == {"api": UFFD_API, "features": UFFD_API_FEATURES, "ioctls": UFFD_API_IOCTLS}
    assert UFFD_API_FEATURES == 0x1FFFF and UFFD_API_IOCTLS == (1 << 63) | 3


def test_api_only_once_and_only_api_170() -> None:
    _, p, _ = setup("universal")
    u = p.userfaultfd()
    with pytest.raises(OSError) as e:
        u.api(api=0xAB)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        u.api(features=1 << 17)
    assert e.value.errno == errno.EINVAL
    u.api()
    with pytest.raises(OSError) as e:
        u.api()
    assert e.value.errno == errno.EINVAL


def test_ioctls_before_api_are_einval_and_change_nothing() -> None:
    _, p, src = setup("universal")
    u = p.userfaultfd()
    for call in (lambda: u.register(A, PAGE, MISSING), lambda: u.copy(A, src, PAGE),
                 lambda: u.zeropage(A, PAGE), lambda: u.read()):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EINVAL
    assert region(p) == [(0, 4)] and uffd_flags(p, 0) == 0


def test_userfaultfd_flags_are_checked() -> None:
    _, p, _ = setup("universal")
    with pytest.raises(OSError) as e:
        p.userfaultfd(2)
    assert e.value.errno == errno.EINVAL
    assert p.userfaultfd(UFFD_USER_MODE_ONLY | O_NONBLOCK).ctx.flags == UFFD_USER_MODE_ONLY | O_NONBLOCK


def test_event_features_are_refused_as_not_modelled() -> None:
    _, p, _ = setup("universal")
    with pytest.raises(NotModelled, match="not modelled"):
        p.userfaultfd().api(UFFD_FEATURE_EVENT_FORK)


# -- registration ------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_register_splits_and_unregister_merges(preset: str) -> None:
    _, p, _ = setup(preset)
    u = p.userfaultfd()
    u.api()
    assert u.register(A + PAGE, PAGE, MISSING) == MISSING_IOCTLS
    assert region(p) == [(0, 1), (1, 1), (2, 2)]
    assert uffd_flags(p, 1) == VmFlags.VM_UFFD_MISSING and uffd_flags(p, 0) == 0
    assert p.mm.mm_mt.find_covering(A + PAGE).vm_userfaultfd_ctx is u.ctx
    # registering the neighbour the same way merges the two registered VMAs
    u.register(A + 2 * PAGE, PAGE, MISSING)
    assert region(p) == [(0, 1), (1, 2), (3, 1)]
    u.unregister(A, 4 * PAGE)
    assert region(p) == [(0, 4)] and uffd_flags(p, 0) == 0


def test_register_wp_mode_offers_writeprotect_and_sets_vm_uffd_wp() -> None:
    _, p, _ = setup("universal")
    u = p.userfaultfd()
    u.api()
    assert u.register(A, 2 * PAGE, UFFDIO_REGISTER_MODE_WP) == MISSING_IOCTLS | (1 << 6)
    assert uffd_flags(p, 0) == VmFlags.VM_UFFD_WP and region(p) == [(0, 2), (2, 2)]
    # a write-protect registration does not trap a missing-page fault
    p.store(A, 9)
    assert p.load(A) == 9


@pytest.mark.parametrize(("start", "length", "mode", "err"), [
    (A, PAGE, 0, errno.EINVAL),
    (A, PAGE, 8, errno.EINVAL),
    (A + 1, PAGE, MISSING, errno.EINVAL),
    (A, PAGE + 1, MISSING, errno.EINVAL),
    (A, 0, MISSING, errno.EINVAL),
    (A + 16 * PAGE, PAGE, MISSING, errno.EINVAL),  # no VMA in the range
    (0x7FFFFFFFF000, PAGE, MISSING, errno.EINVAL),  # at TASK_SIZE
    (A, PAGE, UFFDIO_REGISTER_MODE_MINOR, errno.EINVAL),  # minor faults: shmem/hugetlb only
])
def test_register_errors_change_nothing(start: int, length: int, mode: int, err: int) -> None:
    _, p, _ = setup("universal")
    u = p.userfaultfd()
    u.api()
    with pytest.raises(OSError) as e:
        u.register(start, length, mode)
    assert e.value.errno == err
    assert region(p) == [(0, 4)] and uffd_flags(p, 0) == 0


def test_register_file_backed_is_einval_and_two_contexts_are_ebusy() -> None:
    kern, p, _ = setup("universal")
    f = kern.create_file("/f", 4)
    p.mmap(A + 8 * PAGE, PAGE, RW, MAP_PRIVATE | MAP_FIXED, f, 0)
    u, v = p.userfaultfd(), p.userfaultfd()
    u.api()
    v.api()
    with pytest.raises(OSError) as e:
        u.register(A + 8 * PAGE, PAGE, MISSING)
    assert e.value.errno == errno.EINVAL
    u.register(A, PAGE, MISSING)
    with pytest.raises(OSError) as e:
        v.register(A, 2 * PAGE, MISSING)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(OSError) as e:
        v.unregister(A, PAGE)
    assert e.value.errno == errno.EINVAL
    assert region(p)[:2] == [(0, 1), (1, 3)]


def test_register_spans_holes_and_shmem_is_not_modelled() -> None:
    _, p, _ = setup("universal")
    p.mmap(A + 6 * PAGE, PAGE, RW, ANON)
    u = p.userfaultfd()
    u.api()
    u.register(A + 3 * PAGE, 4 * PAGE, MISSING)  # the hole at pages 4-5 is allowed
    assert uffd_flags(p, 3) and uffd_flags(p, 6)
    p.mmap(A + 10 * PAGE, PAGE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    users = p.mm.mm_users.counter
    with pytest.raises(NotModelled):
        u.register(A + 10 * PAGE, PAGE, MISSING)
    # refused after the kernel's checks, with the lock and the mm reference dropped
    assert p.mm.mmap_lock.writer is None and p.mm.mm_users.counter == users
    assert not p.mm.mm_mt.find_covering(A + 10 * PAGE).vm_flags & VmFlags.VM_UFFD_MISSING


# -- fills -------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_copy_fills_the_page_once(preset: str) -> None:
    _, p, src = setup(preset)
    u = p.userfaultfd()
    u.api()
    u.register(A, 2 * PAGE, MISSING)
    assert u.copy(A, src, 2 * PAGE - PAGE) == PAGE
    assert p.load(A) == 0x5A and p.load(A + PAGE - 1) == 0x33
    pte = p.mm.pgtable[A // PAGE]
    assert pte.writable and pte.page is not p.mm.pgtable[src // PAGE].page
    with pytest.raises(OSError) as e:
        u.copy(A, src, PAGE)
    assert e.value.errno == errno.EEXIST and e.value.count == -errno.EEXIST  # type: ignore[attr-defined]
    # a two-page copy onto one filled and one empty page stops short: EAGAIN
    with pytest.raises(OSError) as e:
        u.copy(A + PAGE, src, 2 * PAGE)
    assert e.value.errno == errno.ENOENT  # the range passes the VMA's end


def test_copy_stops_short_at_a_present_page() -> None:
    _, p, src = setup("universal")
    p.mmap(src + PAGE, PAGE, RW, ANON)
    p.store(src + PAGE, 0x44)
    u = p.userfaultfd()
    u.api()
    u.register(A, 4 * PAGE, MISSING)
    u.zeropage(A + PAGE, PAGE)
    with pytest.raises(OSError) as e:
        u.copy(A, src, 2 * PAGE)
    assert e.value.errno == errno.EAGAIN and e.value.count == PAGE  # type: ignore[attr-defined]
    assert p.load(A) == 0x5A and p.load(A + PAGE) == 0


@pytest.mark.parametrize(("dst", "srcoff", "length", "mode", "err"), [
    (A + 1, 0, PAGE, 0, errno.EINVAL),
    (A, 0, 1, 0, errno.EINVAL),
    (A, 0, PAGE, 4, errno.EINVAL),
    (A + 8 * PAGE, 0, PAGE, 0, errno.ENOENT),  # nothing mapped
    (A + 3 * PAGE, 0, PAGE, 0, errno.ENOENT),  # mapped, not registered
])
def test_copy_errors(dst: int, srcoff: int, length: int, mode: int, err: int) -> None:
    _, p, src = setup("universal")
    u = p.userfaultfd()
    u.api()
    u.register(A, 2 * PAGE, MISSING)
    with pytest.raises(OSError) as e:
        u.copy(dst, src + srcoff, length, mode)
    assert e.value.errno == err
    assert A // PAGE not in p.mm.pgtable


def test_copy_wp_mode_needs_a_wp_registration() -> None:
    _, p, src = setup("universal")
    u = p.userfaultfd()
    u.api()
    u.register(A, PAGE, MISSING)
    with pytest.raises(OSError) as e:
        u.copy(A, src, PAGE, UFFDIO_COPY_MODE_WP)
    assert e.value.errno == errno.EINVAL and A // PAGE not in p.mm.pgtable
    u.register(A, PAGE, MISSING | UFFDIO_REGISTER_MODE_WP)
    assert u.copy(A, src, PAGE, UFFDIO_COPY_MODE_WP) == PAGE
    pte = p.mm.pgtable[A // PAGE]
    assert pte.uffd_wp and not pte.writable and p.load(A) == 0x5A


def test_copy_faults_in_an_absent_source_outside_the_lock() -> None:
    _, p, _ = setup("universal")
    src = p.mmap(0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS)  # never touched
    u = p.userfaultfd()
    u.api()
    u.register(A, PAGE, MISSING)
    before = p.system.vmstat()["pgfault"]
    assert u.copy(A, src, PAGE) == PAGE
    assert p.load(A) == 0 and p.system.vmstat()["pgfault"] == before + 1
    assert src // PAGE in p.mm.pgtable  # the kernel-mode fault mapped the source


@pytest.mark.parametrize("preset", PRESETS)
def test_zeropage_maps_the_zero_page(preset: str) -> None:
    _, p, _ = setup(preset)
    u = p.userfaultfd()
    u.api()
    u.register(A, 2 * PAGE, MISSING)
    assert u.zeropage(A, 2 * PAGE) == 2 * PAGE
    assert p.mm.pgtable[A // PAGE].page.zero_page and not p.mm.pgtable[A // PAGE].writable
    assert p.load(A + PAGE) == 0
    p.store(A, 3)  # COW from the zero page, no userfault
    assert p.load(A) == 3 and not p.mm.pgtable[A // PAGE].page.zero_page
    with pytest.raises(OSError) as e:
        u.zeropage(A, PAGE, 2)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("preset", PRESETS)
def test_move_takes_the_page_and_empties_the_source(preset: str) -> None:
    _, p, _ = setup(preset)
    u = p.userfaultfd()
    u.api()
    u.register(A, 2 * PAGE, MISSING)
    p.store(A + 3 * PAGE, 0x77)  # the source: an unregistered page of the same mm
    page = p.mm.pgtable[(A + 3 * PAGE) // PAGE].page
    assert u.move(A, A + 3 * PAGE, PAGE) == PAGE
    assert p.mm.pgtable[A // PAGE].page is page and (A + 3 * PAGE) // PAGE not in p.mm.pgtable
    assert p.load(A) == 0x77 and p.load(A + 3 * PAGE) == 0
    with pytest.raises(OSError) as e:
        u.move(A, A + 3 * PAGE, PAGE)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        u.move(A + PAGE, A + 2 * PAGE, PAGE)  # an unfaulted source
    assert e.value.errno == errno.ENOENT
    assert u.move(A + PAGE, A + 2 * PAGE, PAGE, UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES) == PAGE
    assert (A + PAGE) // PAGE not in p.mm.pgtable


def test_move_refuses_a_shared_page_and_another_mm() -> None:
    _, p, _ = setup("universal")
    u = p.userfaultfd()
    u.api()
    u.register(A, PAGE, MISSING)
    p.store(A + 3 * PAGE, 1)
    child = p.fork()  # the page is now COW-shared: not exclusive
    with pytest.raises(OSError) as e:
        u.move(A, A + 3 * PAGE, PAGE)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(OSError) as e:
        child._run(u.on(child.main).move(A, A + 3 * PAGE, PAGE))
    assert e.value.errno == errno.EINVAL


# -- the fault ---------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_fault_sleeps_without_locks_until_copy(preset: str) -> None:
    kern, p, src = setup(preset)
    u = p.userfaultfd(0)
    u.api(UFFD_FEATURE_THREAD_ID)
    u.register(A, 2 * PAGE, MISSING)
    f, m = p.thread(), p.thread()
    mgr = u.on(m)

    async def fault(t: Thread) -> int:
        await t.store(A + PAGE + 5, 9)
        return await t.load(A + PAGE)

    async def manager(t: Thread) -> dict[str, int]:
        msg = await mgr.read()
        await mgr.copy(msg["address"], src, PAGE)
        return msg

    ex = executor((f, fault), (m, manager))
    run(ex, lambda: blocked_in(ex, 0, "handle_userfault: schedule()"))
    # asleep: no mmap_lock, no VMA lock, the message queued
    assert p.mm.mmap_lock.writer is None and not p.mm.mmap_lock.readers
    assert all(v.vm_refcnt.counter in (0, 1) for v in p.mm.mm_mt.snapshot())
    assert len(u.ctx.fault_pending_wqh) == 1 and f.task.held == []
    run(ex)
    fault_res, msg = ex.tasks[0].result, ex.tasks[1].result
    assert msg == {"event": UFFD_EVENT_PAGEFAULT, "flags": UFFD_PAGEFAULT_FLAG_WRITE,
                   "address": A + PAGE, "ptid": f.task.pid}
    assert fault_res == 0x5A and p.load(A + PAGE + 5) == 9
    stats = kern.vmstat()
    if preset == "legacy":
        assert "vma_lock_retry" not in stats
    else:  # the VMA-locked attempt returned RETRY, the retry under mmap_lock succeeded
        assert stats["vma_lock_retry"] == 1
    assert not u.ctx.fault_pending_wqh and not u.ctx.fault_wqh and u.ctx.refcount == 1


@pytest.mark.parametrize("preset", PRESETS)
def test_unregister_wakes_the_fault_which_then_maps_a_fresh_page(preset: str) -> None:
    _, p, _ = setup(preset)
    u = p.userfaultfd()
    u.api()
    u.register(A, PAGE, MISSING)
    f, m = p.thread(), p.thread()

    async def fault(t: Thread) -> int:
        return await t.load(A)

    async def unreg(t: Thread) -> int:
        return await u.on(t).unregister(A, PAGE)

    ex = executor((f, fault), (m, unreg))
    run(ex, lambda: blocked_in(ex, 0, "handle_userfault: schedule()"))
    run(ex)
    assert ex.tasks[0].result == 0 and p.mm.pgtable[A // PAGE].page.zero_page
    assert region(p) == [(0, 4)]


def test_close_wakes_the_fault_and_unregisters_everything() -> None:
    _, p, _ = setup("universal")
    u = p.userfaultfd()
    u.api()
    u.register(A + PAGE, PAGE, MISSING)
    f, m = p.thread(), p.thread()

    async def fault(t: Thread) -> None:
        await t.store(A + PAGE, 4)

    async def close(t: Thread) -> None:
        await u.on(t).close()

    ex = executor((f, fault), (m, close))
    run(ex, lambda: blocked_in(ex, 0, "handle_userfault: schedule()"))
    run(ex)
    assert p.load(A + PAGE) == 4 and region(p) == [(0, 4)]
    assert u.ctx.freed and p.mm.mm_count.counter == 1  # the context's mmgrab is dropped


def test_sigbus_feature_and_the_synchronous_api_fault() -> None:
    _, p, _ = setup("universal")
    u = p.userfaultfd()
    u.api(UFFD_FEATURE_SIGBUS)
    u.register(A, PAGE, MISSING)
    with pytest.raises(Segfault) as e:
        p.load(A)
    assert e.value.code == 7  # SIGBUS
    _, q, _ = setup("universal")
    w = q.userfaultfd()
    w.api()
    w.register(A, PAGE, MISSING)
    with pytest.raises(Violation, match="would block forever in handle_userfault"):
        q.load(A)  # one thread faulting on its own registered page never wakes


def test_user_mode_only_fault_from_kernel_mode_is_efault() -> None:
    """UFFDIO_COPY reading its source from a registered, missing page of a
    UFFD_USER_MODE_ONLY context: the kernel-mode fault gets SIGBUS, the copy
    EFAULT (with a context that also handles kernel faults it would sleep)."""
    _, p, _ = setup("universal")
    u = p.userfaultfd(UFFD_USER_MODE_ONLY)
    u.api()
    u.register(A, 2 * PAGE, MISSING)
    with pytest.raises(OSError) as e:
        u.copy(A, A + PAGE, PAGE)
    assert e.value.errno == errno.EFAULT
    assert A // PAGE not in p.mm.pgtable


def test_read_of_an_empty_nonblocking_context_is_eagain() -> None:
    _, p, _ = setup("universal")
    u = p.userfaultfd(O_NONBLOCK)
    u.api()
    with pytest.raises(OSError) as e:
        u.read()
    assert e.value.errno == errno.EAGAIN


@pytest.mark.parametrize("preset", PRESETS)
def test_fill_holds_the_vma_read_lock_or_mmap_lock(preset: str) -> None:
    """While UFFDIO_COPY installs the PTE it holds the destination VMA's read
    lock (uffd_lock_vma), or mmap_read_lock without per-VMA locks."""
    _, p, src = setup(preset)
    u = p.userfaultfd()
    u.api()
    u.register(A, PAGE, MISSING)
    p.store(A + PAGE, 1)  # the VMA gets its anon_vma: lock_vma_under_rcu() suffices
    m = p.thread()

    async def copy(t: Thread) -> int:
        return await u.on(t).copy(A, src, PAGE)

    ex = executor((m, copy))
    run(ex, lambda: ex.tasks[0].pending is not None
        and ex.tasks[0].pending.label == "mfill_atomic_install_pte: set_pte_at")
    vma = p.mm.mm_mt.find_covering(A)
    ml = p.mm.mmap_lock
    if preset == "legacy":
        assert [t.comm for t in ml.readers] == [m.task.comm]
    else:
        assert vma.vm_refcnt.counter == 2 and not ml.readers and ml.writer is None
    run(ex)
    assert ex.tasks[0].result == PAGE and not ml.readers
    assert vma.vm_refcnt.counter == (0 if preset == "legacy" else 1)


def test_fill_of_a_vma_without_anon_vma_goes_through_mmap_lock() -> None:
    """uffd_lock_vma(): a private VMA without anon_vma needs mmap_read_lock
    for anon_vma_prepare(), then vma_start_read_locked()."""
    kern, p, src = setup("universal")
    u = p.userfaultfd()
    u.api()
    u.register(A, PAGE, MISSING)
    assert p.mm.mm_mt.find_covering(A).anon_vma is None
    m = p.thread()

    async def copy(t: Thread) -> int:
        return await u.on(t).copy(A, src, PAGE)

    ex = executor((m, copy))
    run(ex)
    labels = [op.label for _, op in ex.trace]
    assert "vma_start_read_locked" in labels
    assert ex.tasks[0].result == PAGE and p.mm.mm_mt.find_covering(A).anon_vma is not None


# -- writers -----------------------------------------------------------------------------
def test_fork_child_is_not_registered() -> None:
    _, p, _ = setup("universal")
    u = p.userfaultfd()
    u.api()
    u.register(A + PAGE, PAGE, MISSING)
    child = p.fork()
    v = child.mm.mm_mt.find_covering(A + PAGE)
    assert v.vm_userfaultfd_ctx is None and not v.vm_flags & VmFlags.VM_UFFD_MISSING
    child.store(A + PAGE, 5)  # no userfault in the child
    assert child.load(A + PAGE) == 5 and uffd_flags(p, 1) == VmFlags.VM_UFFD_MISSING


def test_mremap_moved_vma_drops_its_registration() -> None:
    _, p, _ = setup("universal")
    u = p.userfaultfd()
    u.api()
    u.register(A, 4 * PAGE, MISSING)
    new = p.mremap(A, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, A + 32 * PAGE)
    v = p.mm.mm_mt.find_covering(new)
    assert v.vm_userfaultfd_ctx is None and not v.vm_flags & VmFlags.VM_UFFD_MISSING
    p.store(new, 1)
    assert p.load(new) == 1


def test_munmap_of_a_sleeping_faults_vma() -> None:
    """The fault sleeps with no lock; munmap removes the VMA; the copy then
    finds no VMA (ENOENT); close wakes the sleeper, whose retry under
    mmap_lock finds nothing mapped: SEGV_MAPERR."""
    _, p, src = setup("universal")
    u = p.userfaultfd()
    u.api()
    u.register(A, PAGE, MISSING)
    f, w = p.thread(), p.thread()

    async def fault(t: Thread) -> int:
        try:
            return await t.load(A)
        except Segfault as sf:
            return -sf.code

    async def writer(t: Thread) -> int:
        await t.munmap(A, PAGE)
        try:
            await u.on(t).copy(A, src, PAGE)
        except OSError as err:
            await u.on(t).close()
            return err.errno or 0
        return 0

    ex = executor((f, fault), (w, writer))
    run(ex, lambda: blocked_in(ex, 0, "handle_userfault: schedule()"))
    run(ex)
    assert ex.tasks[1].result == errno.ENOENT
    assert ex.tasks[0].result == -1  # SEGV_MAPERR


@pytest.mark.parametrize("preset", PRESETS)
def test_kernel_mode_fault_sleeps_on_the_mmap_lock_path(preset: str) -> None:
    """UFFDIO_COPY whose source is itself a registered missing page (a context
    that also handles kernel faults): copy_from_user's kernel-mode fault takes
    the mmap_lock path directly (no per-VMA attempt), sleeps in
    handle_userfault with mmap_lock released, and finishes once another
    thread fills the source page."""
    kern, p, src = setup(preset)
    u = p.userfaultfd()
    u.api()
    u.register(A, 2 * PAGE, MISSING)
    c, m = p.thread(), p.thread()

    async def copier(t: Thread) -> int:
        return await u.on(t).copy(A, A + PAGE, PAGE)

    async def manager(t: Thread) -> dict[str, int]:
        msg = await u.on(t).read()
        await u.on(t).copy(msg["address"], src, PAGE)
        return msg

    ex = executor((c, copier), (m, manager))
    run(ex, lambda: blocked_in(ex, 0, "handle_userfault: schedule()"))
    assert not p.mm.mmap_lock.readers and p.mm.mmap_lock.writer is None and c.task.held == []
    run(ex)
    assert ex.tasks[0].result == PAGE
    assert ex.tasks[1].result == {"event": UFFD_EVENT_PAGEFAULT, "flags": 0, "address": A + PAGE,
                                  "ptid": 0}
    assert p.load(A) == 0x5A and p.load(A + PAGE) == 0x5A
    assert kern.vmstat().get("vma_lock_retry", 0) == 0


def test_thread_api_creates_and_uses_its_own_descriptor() -> None:
    _, p, src = setup("universal")
    t = p.thread()

    async def body(th: Thread) -> tuple[int, int, int]:
        u = await th.userfaultfd(O_NONBLOCK)
        api = await u.api()
        ioctls = await u.register(A, PAGE, MISSING)
        n = await u.copy(A, src, PAGE)
        try:
            await u.read()
        except OSError as err:
            assert err.errno == errno.EAGAIN
        await u.close()
        return api["features"], ioctls, n

    ex = executor((t, body))
    run(ex)
    assert ex.tasks[0].result == (UFFD_API_FEATURES, MISSING_IOCTLS, PAGE)
    assert p.load(A) == 0x5A and region(p) == [(0, 4)]
