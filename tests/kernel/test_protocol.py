"""Protocol tests with the scripted runner: vm_refcnt, vm_lock_seq and
mm_lock_seq after each step (kernel-protocol.md §1-2)."""

from __future__ import annotations

import errno

from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PAGE,
    PROT_READ,
    PROT_WRITE,
    Config,
    System,
)
from pervma.kernel.mmap_lock import (
    EAGAIN_VMA,
    VM_REFCNT_EXCLUDE_READERS_FLAG,
    mmap_read_unlock,
    mmap_write_downgrade,
    mmap_write_lock,
    mmap_write_unlock,
    vma_end_read,
    vma_mark_detached,
    vma_start_read,
    vma_start_write,
    vma_start_write_killable,
)
from pervma.kernel.rcu import rcu_read_lock, rcu_read_unlock
from pervma.sched import Executor, Op, run_schedule

FLAG = VM_REFCNT_EXCLUDE_READERS_FLAG
A = 0x10000000


def setup(preset: str = "universal"):
    kern = System(Config.preset(preset))
    p = kern.spawn()
    p.mmap(A, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    vma = p.mm.mm_mt.find_covering(A)
    return kern, p, vma


def recorder(vma, mm):
    log: list[tuple[int, str, int, int, int]] = []

    def after(i: int, tid: int, op: Op) -> None:
        log.append((tid, op.label, vma.vm_refcnt.counter, vma.vm_lock_seq, mm.mm_lock_seq.sequence))

    return log, after


def test_writer_waits_for_reader_and_stamps_seq() -> None:
    kern, p, V = setup()
    mm = p.mm
    t0, t1 = p.thread(), p.thread()
    seen = {}

    async def reader(t):
        rcu_read_lock()
        seen["r"] = await vma_start_read(mm, V)
        rcu_read_unlock()
        await vma_end_read(V)

    async def writer(t):
        await mmap_write_lock(mm)
        await vma_start_write(V)
        await mmap_write_unlock(mm)

    log, after = recorder(V, mm)
    run_schedule([t0.start(reader), t1.start(writer)], [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1],
                 models=[t0.task, t1.task], after_step=after)
    assert seen["r"] is V
    s0 = 4  # spawn's write session (1-2) and mmap's (3-4)
    assert [(tid, ref, vseq, mseq) for tid, _, ref, vseq, mseq in log] == [
        (0, 1, 3, s0),  # early check: vm_lock_seq 3 (mmap's stamp) != 4
        (0, 2, 3, s0),  # refcount_inc_not_zero_limited
        (0, 2, 3, s0),  # vm_mm check
        (0, 2, 3, s0),  # late check: read-locked
        (1, 2, 3, s0),  # down_write
        (1, 2, 3, s0 + 1),  # mm_lock_seq odd: write session 5
        (1, FLAG + 2, 3, 5),  # add FLAG: no new readers
        (1, FLAG + 2, 3, 5),  # check: 1 reader left -> sleep
        (0, FLAG + 1, 3, 5),  # the reader's put...
        (0, FLAG + 1, 3, 5),  # ...wakes the writer (readers excluded)
        (1, FLAG + 1, 3, 5),  # woken
        (1, FLAG + 1, 3, 5),  # check: refcnt == FLAG + 1
        (1, FLAG + 1, 5, 5),  # WRITE_ONCE(vm_lock_seq, 5): write-locked
        (1, 1, 5, 5),  # sub FLAG: readers may try again (and back off)
        (1, 1, 5, 6),  # vma_end_write_all: every VMA write lock dropped
        (1, 1, 5, 6),  # up_write
    ]
    assert "sleep" in log[10][1] and "wake" in log[9][1]


def test_transient_reader_during_detach_is_waited_for() -> None:
    kern, p, V = setup()
    mm = p.mm
    t0, t1 = p.thread(), p.thread()
    seen = {}

    async def reader(t):
        rcu_read_lock()
        seen["r"] = await vma_start_read(mm, V)
        if seen["r"] is not None:
            rcu_read_unlock()

    async def detacher(t):
        await mmap_write_lock(mm)
        await vma_start_write(V)
        await vma_mark_detached(V)
        seen["detached_refcnt"] = V.vm_refcnt.counter
        await mmap_write_unlock(mm)

    log, after = recorder(V, mm)
    # Reader passes the early check and takes a transient reference *after*
    # the writer stamped the seq; the detacher must wait for it to leave.
    order = [0, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0]
    run_schedule([t0.start(reader), t1.start(detacher)], order, models=[t0.task, t1.task],
                 after_step=after)
    assert seen["r"] is None  # late check saw the write lock
    assert seen["detached_refcnt"] == 0
    assert [(tid, ref, vseq, mseq) for tid, _, ref, vseq, mseq in log] == [
        (0, 1, 3, 4),  # early check passes: not yet write-locked
        (1, 1, 3, 4),  # down_write
        (1, 1, 3, 5),
        (1, FLAG + 1, 3, 5),  # vma_start_write excludes readers: none yet
        (1, FLAG + 1, 3, 5),
        (1, FLAG + 1, 5, 5),  # stamped
        (1, 1, 5, 5),
        (0, 2, 5, 5),  # the transient reader's reference
        (1, 1, 5, 5),  # vma_mark_detached: 2 -> 1, not zero: a reader is inside
        (1, FLAG + 1, 5, 5),  # exclude readers for detach (target FLAG)
        (1, FLAG + 1, 5, 5),  # check fails -> sleep
        (0, FLAG + 1, 5, 5),  # vm_mm check
        (0, FLAG + 1, 5, 5),  # late check: seq matches -> back off
        (0, FLAG, 5, 5),  # put leaves exactly FLAG...
        (0, FLAG, 5, 5),  # ...and wakes the detacher
        (1, FLAG, 5, 5),
        (1, FLAG, 5, 5),  # check: refcnt == FLAG
        (1, 0, 5, 5),  # sub FLAG: detached, no reference left behind
        (1, 0, 5, 6),
        (1, 0, 5, 6),
    ]


def test_read_of_detached_vma_is_eagain() -> None:
    kern, p, V = setup()
    mm = p.mm
    t0 = p.thread()
    seen = {}

    async def body(t):
        await mmap_write_lock(mm)
        await vma_start_write(V)
        await vma_mark_detached(V)
        await mmap_write_unlock(mm)  # seq even again: early check passes
        rcu_read_lock()
        seen["r"] = await vma_start_read(mm, V)

    run_schedule([t0.start(body)], [], models=[t0.task])
    assert seen["r"] is EAGAIN_VMA
    assert V.vm_refcnt.counter == 0


def test_reuse_by_second_mm_is_refused_and_the_other_mm_pinned() -> None:
    kern, p, V = setup()
    q = kern.spawn("other")
    t0, t1, t2 = p.thread(), p.thread(), q.main
    seen = {}
    counts = []

    async def reader(t):
        rcu_read_lock()
        seen["v"] = await p.mm.mm_mt.mas_walk(A)
        seen["r"] = await vma_start_read(p.mm, seen["v"])

    async def unmapper(t):
        await t.munmap(A, PAGE)

    async def other(t):
        await t.mmap(A, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)

    def after(i, tid, op):
        if "mmgrab" in op.label or "mmdrop" in op.label:
            counts.append(q.mm.mm_count.counter)

    # the walk (2 steps), then the unmap and the reuse complete, then the reader
    ex = Executor([t0.start(reader), t1.start(unmapper), t2.start(other)], models=[t0.task, t1.task, t2.task])
    ex.step(0)
    ex.step(0)
    for tid in (1, 2):
        while tid in ex.runnable():
            op = ex.step(tid)
            after(0, tid, op)
    while 0 in ex.runnable():
        op = ex.step(0)
        after(0, 0, op)
    assert ex.violation is None
    assert seen["v"] is V and V.vm_mm is q.mm  # the same object now lives in the other mm
    assert seen["r"] is None
    assert counts == [2, 1]  # mmgrab pinned it across the put, mmdrop released it
    assert V.vm_refcnt.counter == 1  # attached in q, the reader's reference gone


def test_killable_write_lock_abort_removes_flag() -> None:
    kern, p, V = setup()
    mm = p.mm
    t0, t1, t2 = p.thread(), p.thread(), p.thread()
    seen = {}

    async def reader(t):
        rcu_read_lock()
        assert await vma_start_read(mm, V) is V
        rcu_read_unlock()
        await vma_end_read(V)  # only once the schedule below is over

    async def writer(t):
        await mmap_write_lock(mm)
        seen["ret"] = await vma_start_write_killable(V)
        seen["refcnt"] = V.vm_refcnt.counter
        seen["locked"] = V.vm_lock_seq == mm.mm_lock_seq.sequence
        await mmap_write_unlock(mm)

    async def killer(t):
        await t1.kill()

    # reader holds V; the writer sleeps waiting for it; the kill wakes it and
    # it gives up; the reader's release comes last
    run_schedule([t0.start(reader), t1.start(writer), t2.start(killer)],
                 [0, 0, 0, 0, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1], models=[t0.task, t1.task, t2.task])
    assert seen["ret"] == -errno.EINTR
    assert seen["refcnt"] == 2  # FLAG removed, the reader still counted
    assert seen["locked"] is False
    # the reader held its lock until the schedule ended; its release leaves the VMA unlocked
    assert V.vm_refcnt.counter == 1


def test_downgrade_drops_every_vma_write_lock() -> None:
    kern, p, V = setup()
    mm = p.mm
    t0 = p.thread()
    seen = {}

    async def body(t):
        await mmap_write_lock(mm)
        await vma_start_write(V)
        seen["during"] = V.vm_lock_seq == mm.mm_lock_seq.sequence
        await mmap_write_downgrade(mm)
        seen["after"] = V.vm_lock_seq == mm.mm_lock_seq.sequence
        seen["read_held"] = t.task in mm.mmap_lock.readers
        await mmap_read_unlock(mm)

    run_schedule([t0.start(body)], [], models=[t0.task])
    assert seen == {"during": True, "after": False, "read_held": True}
    assert mm.mm_lock_seq.sequence % 2 == 0


def test_legacy_has_no_vma_lock_state_changes() -> None:
    kern, p, V = setup("legacy")
    before = (V.vm_refcnt.counter, V.vm_lock_seq, p.mm.mm_lock_seq.sequence)
    p.store(A, 1)
    p.mprotect(A, PAGE, PROT_READ)
    assert (V.vm_refcnt.counter, V.vm_lock_seq, p.mm.mm_lock_seq.sequence) == before == (0, 0xFFFFFFFF, 0)
    assert "vma_lock_success" not in kern.vmstat()
