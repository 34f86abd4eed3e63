"""The rw_semaphore's lock stealing and handoff bit (kernel/locking/rwsem.c,
Linux 6.18), stepped one thread at a time on mmap_lock."""

from __future__ import annotations

import errno

import pytest

from pervma import Config, System
from pervma.kernel.locks import RWSEM_WAIT_TIMEOUT_NS
from pervma.sched import Executor, clock_source, work

R1, W, R2 = 0, 1, 2  # thread indices


def world(preset: str = "universal"):
    kern = System(Config.preset(preset))
    p = kern.spawn()
    return p, p.mm.mmap_lock


def run_to_block(ex: Executor, tid: int) -> None:
    """Step ``tid`` until its pending step cannot run (it waits)."""
    while tid in ex.runnable():
        ex.step(tid)


def four(p, sem, third: str = "read", killable_writer: bool = False) -> tuple[Executor, dict]:
    """R1 takes the lock for read and releases it when told; W queues for
    write; thread 2 is a second reader (or writer).  Returns the executor
    and R1's gate (see release_r1)."""
    gate = {"r1": False}
    t = [p.thread() for _ in range(3)]

    async def r1(th):
        await sem.down_read()
        while not gate["r1"]:
            await work("user")
        await sem.up_read()

    async def w(th):
        ret = await sem.down_write(killable=killable_writer)
        if ret == 0:
            await sem.up_write()
        return ret

    async def other(th):
        if third == "read":
            await sem.down_read()
            await sem.up_read()
        else:
            await sem.down_write()
            await sem.up_write()

    ex = Executor([t[0].start(r1), t[1].start(w), t[2].start(other)],
                  models=[t[0].task, t[1].task, t[2].task])
    return ex, gate


def release_r1(ex: Executor, gate: dict, sem) -> None:
    gate["r1"] = True
    while sem.is_read_locked_by(ex.tasks[R1].model):
        ex.step(R1)


@pytest.mark.parametrize("preset", ["universal", "universal-up"])
def test_a_release_only_wakes_the_writer_and_a_reader_steals_the_free_lock(preset: str) -> None:
    p, sem = world(preset)
    ex, gate = four(p, sem)
    ex.step(R1)  # R1 owns the lock for read
    run_to_block(ex, W)  # W queues behind it
    w = ex.tasks[W].model
    assert [x.task for x in sem.wait_list] == [w] and not sem.wait_list[0].woken
    release_r1(ex, gate, sem)
    # up_read() woke W but did not give it the lock: the lock is free
    assert sem.wait_list[0].woken and sem.writer is None and not sem.readers
    assert W in ex.runnable()
    # R2 arrives before W runs: its fast path fails (a waiter), its slow path steals
    ex.step(R2)
    assert ex.tasks[R2].pending.label.startswith("rwsem_down_read_slowpath")
    ex.step(R2)
    r2 = ex.tasks[R2].model
    assert sem.readers == [r2] and [x.task for x in sem.wait_list] == [w]
    # W runs, finds the lock taken and sleeps again
    ex.step(W)
    assert sem.writer is None and W not in ex.runnable() and not sem.wait_list[0].woken
    ex.step(R2)  # up_read(): the last reader out wakes W again
    assert sem.wait_list[0].woken
    ex.step(W)
    assert sem.writer is w and not sem.wait_list and not sem.handoff
    while ex.runnable():
        ex.step(ex.runnable()[0])
    assert ex.violation is None and all(t.done for t in ex.tasks)
    assert ex.tasks[W].result == 0


def test_a_writer_steals_from_a_woken_writer() -> None:
    p, sem = world()
    ex, gate = four(p, sem, third="write")
    ex.step(R1)
    run_to_block(ex, W)
    release_r1(ex, gate, sem)
    assert sem.wait_list[0].woken
    ex.step(R2)  # down_write(): the slow path's first try takes the free lock
    w2 = ex.tasks[R2].model
    assert sem.writer is w2 and len(sem.wait_list) == 1
    ex.step(W)  # W tries, fails, sleeps
    assert W not in ex.runnable() and sem.writer is w2


def test_readers_owning_the_lock_make_a_new_reader_queue_behind_a_writer() -> None:
    p, sem = world()
    ex, gate = four(p, sem)
    ex.step(R1)
    run_to_block(ex, W)
    ex.step(R2)  # the fast path fails (a waiter)
    ex.step(R2)  # the slow path: R1 owns the lock, so no steal: R2 queues behind W
    r2, w = ex.tasks[R2].model, ex.tasks[W].model
    assert [x.task for x in sem.wait_list] == [w, r2] and sem.readers == [ex.tasks[R1].model]
    assert R2 not in ex.runnable()
    release_r1(ex, gate, sem)
    ex.step(W)  # W was woken and nobody stole: it takes the lock
    assert sem.writer is w
    ex.step(W)  # up_write(): the readers at the head are granted the lock at once
    assert sem.readers == [r2] and not sem.wait_list


def test_a_writer_that_waited_the_timeout_sets_the_handoff_bit_and_stops_stealing() -> None:
    p, sem = world()
    now = [0.0]
    with clock_source(lambda: now[0]):
        ex, gate = four(p, sem)
        ex.step(R1)
        run_to_block(ex, W)
        assert sem.wait_list[0].timeout == RWSEM_WAIT_TIMEOUT_NS
        now[0] = RWSEM_WAIT_TIMEOUT_NS + 1
        release_r1(ex, gate, sem)
        ex.step(R2)
        ex.step(R2)  # R2 steals: the bit is not set yet
        assert sem.readers == [ex.tasks[R2].model]
        ex.step(W)  # W fails after its timeout: it sets the handoff bit
        assert sem.handoff and sem.wait_list[0].handoff_set
        ex.step(R2)  # up_read() wakes W
        assert sem.wait_list[0].woken
        # a new reader now queues even though the lock is free
        t4 = p.thread()
        queued = len(sem.wait_list)
        async def late(th):
            await sem.down_read()
            await sem.up_read()

        ex2 = Executor([t4.start(late)], models=[t4.task])
        ex2.step(0)  # fast path fails
        ex2.step(0)  # slow path: the handoff bit stops the steal
        assert len(sem.wait_list) == queued + 1 and not sem.readers
        ex.step(W)  # W takes the lock; the bit clears
        assert sem.writer is ex.tasks[W].model and not sem.handoff
        ex.step(W)  # up_write() grants the late reader
        assert sem.readers == [t4.task] and not sem.wait_list
        ex2.close()
        ex.close()


def test_without_a_clock_no_wait_times_out() -> None:
    p, sem = world()
    ex, gate = four(p, sem)
    ex.step(R1)
    run_to_block(ex, W)
    release_r1(ex, gate, sem)
    ex.step(R2)
    ex.step(R2)
    ex.step(W)
    assert not sem.handoff and not sem.wait_list[0].handoff_set


def test_a_killed_writer_at_the_head_clears_the_handoff_bit_as_the_last_waiter_out() -> None:
    p, sem = world()
    now = [0.0]
    with clock_source(lambda: now[0]):
        ex, gate = four(p, sem, killable_writer=True)
        ex.step(R1)
        run_to_block(ex, W)
        now[0] = 2 * RWSEM_WAIT_TIMEOUT_NS
        release_r1(ex, gate, sem)
        ex.step(R2)
        ex.step(R2)  # steals
        ex.step(W)  # sets the bit
        assert sem.handoff
        w = ex.tasks[W].model
        w.fatal_signal = True
        assert W in ex.runnable()  # a killable wait wakes for the signal
        ex.step(W)
        assert ex.tasks[W].done and ex.tasks[W].result == -errno.EINTR
        assert not sem.wait_list and not sem.handoff and sem.writer is None
        ex.close()


def test_a_downgrade_grants_the_readers_queued_behind_the_writer() -> None:
    # rwsem_downgrade_wake(): the readers at the head join the downgraded lock
    # at once; a writer queued behind them stays queued
    p, sem = world()
    t = [p.thread() for _ in range(4)]
    gate = {"down": False, "up": False}

    async def downgrader(th):
        await sem.down_write()
        while not gate["down"]:
            await work("user")
        await sem.downgrade_write()
        while not gate["up"]:
            await work("user")
        await sem.up_read()

    async def reader(th):
        await sem.down_read()
        await sem.up_read()

    async def writer(th):
        await sem.down_write()
        await sem.up_write()

    ex = Executor([t[0].start(downgrader), t[1].start(reader), t[2].start(reader),
                   t[3].start(writer)], models=[x.task for x in t])
    ex.step(0)
    assert sem.writer is ex.tasks[0].model
    for tid in (1, 2, 3):
        run_to_block(ex, tid)
    r1, r2, w = (ex.tasks[i].model for i in (1, 2, 3))
    assert [x.task for x in sem.wait_list] == [r1, r2, w]
    gate["down"] = True
    while sem.writer is not None:
        ex.step(0)
    assert set(sem.readers) == {ex.tasks[0].model, r1, r2}
    assert [x.task for x in sem.wait_list] == [w] and 1 in ex.runnable() and 2 in ex.runnable()
    gate["up"] = True
    while ex.runnable():
        ex.step(ex.runnable()[0])
    assert ex.violation is None and all(x.done for x in ex.tasks)
