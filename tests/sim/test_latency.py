"""universal-up: fault latency while a writer sleeps holding mmap_lock."""

from __future__ import annotations

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
