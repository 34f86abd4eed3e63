"""SMP=n: fault latency while a writer sleeps holding mmap_lock.

On one CPU the faulting task runs while the writer sleeps, and keeps the CPU
for its slice once the writer is woken (EEVDF's RUN_TO_PARITY).  A release of
mmap_lock only wakes a queued writer, so between two writer sessions the
faulting task's mmap_read_lock() steals the free lock (kernel/locks.py): a
fault without per-VMA locks waits only when it finds the writer inside its
I/O session, once per session, and then waits most of that I/O out."""

from __future__ import annotations

import pytest

from pervma.sim.latency import LatencyResult, writer_sleep_latency  # noqa: E402
from pervma.sim.machine import load_machine  # noqa: E402

IO_US = load_machine("xeon16").io_ns / 1e3


def slow(r: LatencyResult) -> list[float]:
    """The faults that waited at least half of the writer's I/O."""
    return [x for x in r.latencies_us if x > IO_US * 0.5]


def test_per_vma_locks_keep_faults_off_a_sleeping_writer() -> None:
    with_ = writer_sleep_latency("universal-up", per_vma_lock=True, faults=150)
    without = writer_sleep_latency("universal-up", per_vma_lock=False, faults=150)
    # with per-VMA locks no fault ever waits for the writer's I/O...
    assert with_.p50_us < 5.0 and with_.max_us < IO_US * 0.5 and not slow(with_)
    assert with_.mmap_lock_wait_ms == 0.0
    assert with_.vmstat["vma_lock_success"] == 150
    # ...without them most faults steal the lock between sessions, but a fault
    # that finds the writer inside its session waits out its I/O
    assert without.p50_us < 5.0
    assert without.max_us > IO_US
    assert 1 <= len(slow(without)) <= without.writer_sessions
    assert without.mmap_lock_wait_ms > 0.0
    assert without.mean_us > with_.mean_us


def test_nopreempt_up_behaves_the_same_way() -> None:
    with_ = writer_sleep_latency("universal-up-nopreempt", per_vma_lock=True, faults=60)
    without = writer_sleep_latency("universal-up-nopreempt", per_vma_lock=False, faults=60)
    assert with_.max_us < IO_US * 0.5 < without.max_us
    assert with_.p50_us < 5.0 and without.p50_us < 5.0


def test_legacy_up_faults_wait_out_the_writers_io_once_per_session() -> None:
    legacy = writer_sleep_latency("legacy-up", faults=120)
    universal = writer_sleep_latency("universal-up", faults=120)
    # the presets' own PER_VMA_LOCK: n before the series on SMP=n, y with it
    assert (legacy.per_vma_lock, universal.per_vma_lock) == (False, True)
    assert legacy.faults == universal.faults == 120
    assert legacy.vmstat["pgfault"] == 120 and legacy.vmstat.get("vma_lock_success", 0) == 0
    assert universal.vmstat["vma_lock_success"] == 120
    # the fastest legacy fault is a plain fault; the slow ones wait out the I/O,
    # at most one per writer session; universal-up has none
    assert legacy.latencies_us[0] < 5.0
    assert 1 <= len(slow(legacy)) <= legacy.writer_sessions and legacy.max_us > IO_US
    assert not slow(universal)
    assert legacy.mmap_lock_wait_ms > 0.0 and universal.mmap_lock_wait_ms == 0.0
    # throughput is the fault count over the faulter's simulated time
    for r in (legacy, universal):
        assert r.faults_per_s == pytest.approx(r.faults / (r.sim_ms / 1e3))
        assert len(r.latencies_us) == r.faults and list(r.latencies_us) == sorted(r.latencies_us)
        assert r.p50_us == r.latencies_us[r.faults // 2]
    # one slow legacy fault per writer session, and a session per 4 ms turn
    # (the slice ends at the tick): universal-up is a few per cent faster
    assert universal.faults_per_s > 1.03 * legacy.faults_per_s
    # legacy-up is universal-up with PER_VMA_LOCK off, nothing else: identical runs
    forced = writer_sleep_latency("universal-up", per_vma_lock=False, faults=120)
    assert forced.latencies_us == legacy.latencies_us
    assert forced.sim_ms == legacy.sim_ms


def test_writer_sleep_latency_is_deterministic() -> None:
    a = writer_sleep_latency("universal-up", faults=50, seed=3)
    b = writer_sleep_latency("universal-up", faults=50, seed=3)
    assert a == b
