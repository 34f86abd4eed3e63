"""Fault latency while another task holds mmap_lock for write across a sleep.

The situation per-VMA locks were built for (Android app start, TCP zerocopy):
one task takes ``mmap_write_lock`` and then blocks (I/O, here ``io_ns`` of
the machine), while another task of the same process faults on a VMA the
writer does not touch.  Without per-VMA locks the fault queues on mmap_lock
until the writer wakes up and unlocks; with them it never looks at mmap_lock.

:func:`writer_sleep_latency` runs this on any preset and returns the fault
latency distribution and the faulting task's throughput.  The one-CPU pair the
report compares is ``legacy-up`` (SMP=n before the series: ``PER_VMA_LOCK``
depends on ``SMP`` in mm/Kconfig since it was introduced in 6.4, so every
fault takes mmap_lock) and ``universal-up`` (the series: the fault takes the
VMA's lock and never looks at mmap_lock).  On one CPU the faulting task runs
precisely because the writer sleeps, and it keeps the CPU for its slice once
the writer is woken (EEVDF's RUN_TO_PARITY).  A release of mmap_lock only wakes
the queued writer, so between writer sessions the faulting task steals the
free lock: without per-VMA locks most faults cost what a fault costs, and the
fault that finds the writer inside its session, one per session, waits out its
I/O.  The difference is in the tail (p99, max) and the mean, not the median.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pervma.sched import Op, OpKind, WaitKind, step
from pervma.sim.api import sim_config
from pervma.sim.driver import make_driver
from pervma.sim.machine import Machine, load_machine
from pervma.sim.workloads import ANON, PAGE, RW


@dataclass(slots=True)
class LatencyResult:
    """Fault latencies (us) of the faulting task; ``waits`` are driver wait totals (ms)."""

    preset: str
    per_vma_lock: bool
    faults: int
    sim_ms: float  # simulated time from the start until the faulter's last fault
    faults_per_s: float  # the faulting task's throughput (faults / sim_ms)
    writer_sessions: int  # mmap_write_lock ... unlock sessions the writer completed
    p50_us: float
    p99_us: float
    max_us: float
    mean_us: float
    mmap_lock_wait_ms: float
    vmstat: dict[str, int]
    latencies_us: tuple[float, ...] = ()  # every fault's latency, sorted


def writer_sleep_latency(preset: str = "universal-up", per_vma_lock: bool | None = None,
                         machine: str | Machine = "xeon16", faults: int = 400,
                         gap_ns: float = 20_000.0, seed: int = 0) -> LatencyResult:
    """One task loops {mmap_write_lock; sleep io_ns; mmap_write_unlock; sleep
    ``gap_ns`` of user time}; another faults ``faults`` fresh pages of its own
    VMA, one every ``gap_ns`` of user work.  ``per_vma_lock`` forces
    ``PER_VMA_LOCK`` on or off (default: the preset's own).  Bounded by the
    fault count, deterministic for a ``seed``.  Returns the fault latencies."""
    from pervma.kernel.mmap_lock import mmap_write_lock, mmap_write_unlock
    from pervma.kernel.system import System

    mach = machine if isinstance(machine, Machine) else load_machine(machine)
    cfg = sim_config(preset, mach)
    if per_vma_lock is not None:
        cfg = cfg.with_(PER_VMA_LOCK=per_vma_lock, PER_VMA_LOCK_STATS=per_vma_lock)
    kern = System(cfg)
    proc = kern.spawn()
    base = proc.mmap(0, (faults + 1) * PAGE, RW, ANON)
    proc.store(base, 1)  # the VMA has its anon_vma before the run
    holder, faulter = proc.thread(), proc.thread()
    lat: list[float] = []
    drv: Any = None
    done = {"faulter": False}
    end = {"faulter_ns": 0.0, "sessions": 0}
    user = Op(OpKind.LOCAL, None, "user work", None, "user_gap", False)

    async def hold(t: Any) -> None:
        while not done["faulter"]:
            await mmap_write_lock(t.mm)
            await step(Op(OpKind.LOCAL, None, "holding mmap_lock across I/O", None, "io", True,
                          wait=WaitKind.IO))
            await mmap_write_unlock(t.mm)
            end["sessions"] += 1
            await step(user)

    async def fault(t: Any) -> None:
        for i in range(1, faults + 1):
            await step(user)
            t0 = drv.now
            await t.store(base + i * PAGE, 1)
            lat.append(drv.now - t0)
        end["faulter_ns"] = drv.now
        done["faulter"] = True

    costs_machine = mach
    drv = make_driver([holder.start(hold), faulter.start(fault)], ["writer", "faulter"],
                      [holder.task, faulter.task], costs_machine, cfg.SMP, cfg.PREEMPT,
                      seed=seed)
    drv.costs.work["user_gap"] = gap_ns
    vm0 = dict(kern.vmstat())
    try:
        drv.run(1e13)
    finally:
        drv.close()
    vm1 = dict(kern.vmstat())
    lat.sort()
    n = len(lat)
    waits = drv.stats.waits
    span_ns = end["faulter_ns"]
    return LatencyResult(
        preset=preset, per_vma_lock=cfg.PER_VMA_LOCK, faults=n,
        sim_ms=span_ns / 1e6, faults_per_s=n / (span_ns / 1e9) if span_ns else 0.0,
        writer_sessions=int(end["sessions"]),
        p50_us=lat[n // 2] / 1e3, p99_us=lat[min(n - 1, int(0.99 * n))] / 1e3,
        max_us=lat[-1] / 1e3, mean_us=sum(lat) / n / 1e3,
        mmap_lock_wait_ms=(waits.get("mmap_lock_read", 0.0) + waits.get("mmap_lock_write", 0.0))
        / 1e6,
        vmstat={k: vm1.get(k, 0) - vm0.get(k, 0) for k in vm1},
        latencies_us=tuple(x / 1e3 for x in lat),
    )
