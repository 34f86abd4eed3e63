"""The write-session interference path reaches the result (issue #16 item 3):
each measured price (sim/machines/epyc2vm.toml, from bench/real/calib) shows in
the cost model's per-work accounting and in simulated time, and what the
faulting threads see comes from the model's lock states.  Bounded by counts
of operations, never by wall-clock time."""

from __future__ import annotations

from typing import Any

import pytest

from pervma.sim.api import run_point, sim_config
from pervma.sim.driver import TimedDriver, make_driver
from pervma.sim.machine import load_machine
from pervma.sim.workloads import ANON, PAGE, RW

PROT_READ = 1
FLIPS = 40
MACH = load_machine("epyc2vm")


def _flips(threads: bool, touched: bool, pages: int = 1) -> TimedDriver:
    """Task 1 flips the first page of its ``pages``-page VMA read-only and
    back ``FLIPS`` times (writing it after each flip when ``touched``); task 0
    keeps reading a page of its own, in the same mm (``threads``) or another
    process's.  Both run to the end; returns the finished driver."""
    from pervma.kernel.system import System

    cfg = sim_config("universal", MACH)
    kern = System(cfg)
    p = kern.spawn()
    q = p if threads else kern.spawn()
    a = p.mmap(0, PAGE, RW, ANON)
    p.store(a, 1)
    b = q.mmap(0, pages * PAGE, RW, ANON)
    if touched:
        q.store(b, 1)
    ta, tb = p.thread(), q.thread()
    done = [False]

    async def reader(t: Any) -> None:
        while not done[0]:
            await t.load(a)

    async def flipper(t: Any) -> None:
        for _ in range(FLIPS):
            await t.mprotect(b, PAGE, PROT_READ)
            await t.mprotect(b, PAGE, RW)
            if touched:
                await t.store(b, 1)  # writable again: the next flip changes the PTE
        done[0] = True

    drv = make_driver([ta.start(reader), tb.start(flipper)], ["reader", "flipper"],
                      [ta.task, tb.task], MACH, cfg.SMP, cfg.PREEMPT)
    try:
        drv.run(1e12)
    finally:
        drv.close()
    assert all(t.done for t in drv.tasks)
    return drv


def test_an_mprotect_tlb_flush_costs_threads_ipis_and_processes_none() -> None:
    thr, proc = _flips(True, True), _flips(False, True)
    m = MACH
    for drv in (thr, proc):
        # one PTE made read-only per flip (the model leaves it read-only on
        # the way back until the write fault), and one flush for it
        assert drv.costs.work_count["change_pte"] == FLIPS
        assert drv.costs.work_ns["change_pte"] == pytest.approx(FLIPS * m.change_pte_ns)
        assert drv.costs.work_count["tlb_flush"] == FLIPS
    # threads: the reader's CPU runs the mm, so every flush IPIs it
    assert thr.costs.ipi_count == FLIPS
    assert thr.costs.work_ns["tlb_flush"] == pytest.approx(
        FLIPS * (m.tlb_flush_local_ns + m.ipi_send_base_ns + m.ipi_send_per_cpu_ns))
    # processes: the reader runs another mm; the flush stays local
    assert proc.costs.ipi_count == 0
    assert proc.costs.work_ns["tlb_flush"] == pytest.approx(FLIPS * m.tlb_flush_local_ns)
    # and the flipper's simulated time shows it
    extra = thr.finished_at[1] - proc.finished_at[1]
    assert extra >= 0.9 * FLIPS * (m.ipi_send_base_ns + m.ipi_send_per_cpu_ns)


def test_a_split_allocates_a_vma_and_the_merge_frees_it_at_the_measured_prices() -> None:
    drv = _flips(False, False, pages=16)
    c, m = drv.costs, MACH
    # RO splits the 16-page VMA (one new object), RW merges it back (one freed)
    assert c.work_count["vma_dup"] == FLIPS
    assert c.work_count["vma_free"] == FLIPS
    assert c.work_ns["vma_dup"] == pytest.approx(FLIPS * m.vma_dup_ns)
    assert c.work_ns["vma_free"] == pytest.approx(FLIPS * m.vma_free_ns)
    assert c.work_count["mprotect_work"] == 2 * FLIPS
    assert c.work_count["change_pte"] == 0 and c.work_count["tlb_flush"] == 0  # untouched
    # a session that priced its own work is not charged the mmap stopgap too
    assert not any(c.session_priced)
    # one RO+RW pair in simulated time: calib's split (1289 ns) + merge (1433 ns)
    pair = drv.finished_at[1] / FLIPS
    assert pair == pytest.approx(1289 + 1433, rel=0.15)


def test_a_split_leaves_the_new_vma_lines_on_the_splitting_cpu() -> None:
    from pervma.sched.locations import VM_REFCNT, VMA

    drv = _flips(True, False, pages=16)
    c = drv.costs
    cpu = drv.task_cpu[1]
    # the flipper's last split created a VMA whose lines it owns; the merge
    # freed it again, so look at every VMA line the flipper owns exclusively
    owned = [k for k, line in c.lines.items()
             if isinstance(k, tuple) and k and k[0] in (VMA, VM_REFCNT) and line is not None
             and line.owner == cpu]
    assert owned, "no VMA line left on the splitting CPU"


def test_a_write_locked_vma_sends_faulting_threads_to_mmap_lock() -> None:
    # churnsame: the mprotect task splits and merges the VMA the threads fault
    # in; its write lock makes their per-VMA lookups abort (the model's lock
    # states), and they sleep on mmap_lock behind its session
    thr = run_point("churnsame", "universal", "epyc2vm", "threads", 1, 3.0, seed=0)
    proc = run_point("churnsame", "universal", "epyc2vm", "processes", 1, 3.0, seed=0)
    assert thr.vmstat["vma_lock_abort"] > 0
    assert thr.fallbacks == thr.vmstat["vma_lock_abort"]
    assert thr.mmap_lock_read_wait_ms > 0.0
    assert proc.fallbacks == 0 and proc.mmap_lock_read_wait_ms == 0.0
    assert thr.faults_per_s < proc.faults_per_s


def test_interference_work_is_priced_by_every_profile() -> None:
    from pervma.sim.machine import machine_names

    for name in machine_names():
        costs = load_machine(name).work_costs()
        for w in ("vma_dup", "vma_free", "change_pte", "mprotect_work"):
            assert costs[w] > 0.0, (name, w)
