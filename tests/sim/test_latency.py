"""universal-up: fault latency while a writer sleeps holding mmap_lock."""

from __future__ import annotations

import pytest

from pervma.sim.latency import writer_sleep_latency  # noqa: E402
from pervma.sim.machine import load_machine  # noqa: E402


def test_per_vma_locks_keep_faults_off_a_sleeping_writer() -> None:
    io_us = load_machine("xeon16").io_ns / 1e3
    with_ = writer_sleep_latency("universal-up", per_vma_lock=True, faults=150)
    without = writer_sleep_latency("universal-up", per_vma_lock=False, faults=150)
    # with per-VMA locks a fault costs what a fault costs...
    assert with_.p50_us < 5.0
    assert with_.mmap_lock_wait_ms == 0.0
    assert with_.vmstat["vma_lock_success"] == 150
    # ...without them it waits out the writer's I/O
    assert without.p50_us > io_us * 0.5
    assert without.p99_us > io_us
    assert without.mmap_lock_wait_ms > 0.0
    assert without.p50_us > 20 * with_.p50_us


def test_nopreempt_up_behaves_the_same_way() -> None:
    with_ = writer_sleep_latency("universal-up-nopreempt", per_vma_lock=True, faults=60)
    without = writer_sleep_latency("universal-up-nopreempt", per_vma_lock=False, faults=60)
    assert with_.p50_us < 5.0 < without.p50_us


def test_legacy_up_queues_every_fault_behind_the_sleeping_writer() -> None:
    io_us = load_machine("xeon16").io_ns / 1e3
    legacy = writer_sleep_latency("legacy-up", faults=120)
    universal = writer_sleep_latency("universal-up", faults=120)
    # the presets' own PER_VMA_LOCK: n before the series on SMP=n, y with it
    assert (legacy.per_vma_lock, universal.per_vma_lock) == (False, True)
    assert legacy.faults == universal.faults == 120
    assert legacy.vmstat["pgfault"] == 120 and legacy.vmstat.get("vma_lock_success", 0) == 0
    assert universal.vmstat["vma_lock_success"] == 120
    # every legacy fault waits out (most of) one writer's I/O on mmap_lock
    assert legacy.latencies_us[0] > io_us * 0.5
    assert legacy.mmap_lock_wait_ms > 0.0 and universal.mmap_lock_wait_ms == 0.0
    # throughput is the fault count over the faulter's simulated time
    for r in (legacy, universal):
        assert r.faults_per_s == pytest.approx(r.faults / (r.sim_ms / 1e3))
        assert len(r.latencies_us) == r.faults and list(r.latencies_us) == sorted(r.latencies_us)
        assert r.p50_us == r.latencies_us[r.faults // 2]
    assert universal.faults_per_s > 5 * legacy.faults_per_s
    # legacy-up is universal-up with PER_VMA_LOCK off, nothing else: identical runs
    forced = writer_sleep_latency("universal-up", per_vma_lock=False, faults=120)
    assert forced.latencies_us == legacy.latencies_us
    assert forced.sim_ms == legacy.sim_ms


def test_writer_sleep_latency_is_deterministic() -> None:
    a = writer_sleep_latency("universal-up", faults=50, seed=3)
    b = writer_sleep_latency("universal-up", faults=50, seed=3)
    assert a == b
