"""The two [fit] values of a machine profile, from calib's fault times.

    python bench/real/fit.py --machine xeon2vm --read-fault-ns 481 --write-fault-ns 1250 \
        --shared-write-fault-ns 750
    python bench/real/fit.py --machine epyc2vm                # the profile's own figures

A profile's ``trap_ns`` and ``page_alloc_ns`` are the only values fitted to
the machine (never per workload): ``trap_ns`` so that the simulated read fault
on a fresh anonymous page (the zero page: trap, lookup, PTE) takes calib's
``read_fault_ns``, and ``page_alloc_ns`` so that the simulated write fault
takes calib's ``write_fault_ns``; with ``--shared-write-fault-ns``, also
``dirty_page_ns`` so that a write fault on a shared mapping of a tmpfs file in
the page cache (page_fault3's) takes calib's ``shared_write_fault_ns``.  One
thread faults fresh pages one at a time
on the ``universal`` preset; a fault's simulated time grows with each value
(nearly linearly: a write fault also meets the memory-bandwidth queue), so each
is solved for by secant steps, ``trap_ns`` first.  Prints the simulated fault
times with the profile's values, and the values that match calib's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from pervma.sim.machine import Machine, load_machine

N = 200  # faults per run


def simulated_fault_ns(mach: Machine, write: bool, faults: int = N, shared: bool = False) -> float:
    """Mean simulated time of one fault (one thread, nothing else running): on
    a fresh anonymous page, read or write; ``shared``: a write fault on a
    MAP_SHARED tmpfs file whose pages are in the page cache (page_fault3's)."""
    from pervma.kernel.system import System
    from pervma.sched import work
    from pervma.sim.api import sim_config
    from pervma.sim.driver import make_driver
    from pervma.sim.workloads import ANON, MAP_SHARED, PAGE, RW, _tmpfile

    cfg = sim_config("universal", mach)
    kern = System(cfg)
    proc = kern.spawn()
    if shared:
        f = _tmpfile(kern, "/dev/shm/calib", faults + 1, resident=True)
        base = proc.mmap(0, (faults + 1) * PAGE, RW, MAP_SHARED, f)
        write = True
    else:
        base = proc.mmap(0, (faults + 1) * PAGE, RW, ANON)
    proc.store(base, 1)  # the VMA has its anon_vma (or its first page) before the run
    t = proc.thread()
    spent = [0.0]
    drv: Any = None

    async def body(th: Any) -> None:
        for i in range(1, faults + 1):
            await work("user")  # 0 ns: the driver exists once the thread runs
            t0 = drv.now
            if write:
                await th.store(base + i * PAGE, 1)
            else:
                await th.load(base + i * PAGE)
            spent[0] += drv.now - t0

    drv = make_driver([t.start(body)], ["fault"], [t.task], mach, cfg.SMP, cfg.PREEMPT)
    try:
        drv.run(1e13)
    finally:
        drv.close()
    return spent[0] / faults


def _solve(f: Any, target: float, x0: float) -> float:
    """The x with f(x) = target, f increasing and nearly linear (secant steps;
    a write fault's page allocation also meets the bandwidth queue, so its
    slope is a little under 1)."""
    x1 = x0 + 100.0
    f0, f1 = f(x0), f(x1)
    for _ in range(8):
        if abs(f1 - target) < 0.5 or f1 == f0:
            break
        x0, x1 = x1, x1 + (target - f1) * (x1 - x0) / (f1 - f0)
        f0, f1 = f1, f(x1)
    return x1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machine", default="epyc2vm")
    ap.add_argument("--read-fault-ns", type=float, help="calib's read_fault_ns")
    ap.add_argument("--write-fault-ns", type=float, help="calib's write_fault_ns")
    ap.add_argument("--shared-write-fault-ns", type=float,
                    help="calib's shared_write_fault_ns (fits dirty_page_ns too)")
    a = ap.parse_args()
    mach = load_machine(a.machine)
    rd = simulated_fault_ns(mach, False)
    wr = simulated_fault_ns(mach, True)
    sh = simulated_fault_ns(mach, True, shared=True)
    print(f"{mach.name}: simulated read fault {rd:.1f} ns, write fault {wr:.1f} ns, shared "
          f"write fault {sh:.1f} ns (trap_ns {mach.trap_ns:g}, page_alloc_ns "
          f"{mach.page_alloc_ns:g}, dirty_page_ns {mach.dirty_page_ns:g})")
    if a.read_fault_ns is None or a.write_fault_ns is None:
        return 0
    trap = _solve(lambda v: simulated_fault_ns(dataclasses.replace(mach, trap_ns=v), False),
                  a.read_fault_ns, mach.trap_ns)
    alloc = _solve(lambda v: simulated_fault_ns(
        dataclasses.replace(mach, trap_ns=trap, page_alloc_ns=v), True),
        a.write_fault_ns, mach.page_alloc_ns)
    if trap <= 0 or alloc <= 0:
        print(f"no fit: the rest of the fault already costs more than calib's "
              f"(trap_ns {trap:.1f}, page_alloc_ns {alloc:.1f})", file=sys.stderr)
        return 1
    fitted = dataclasses.replace(mach, trap_ns=round(trap), page_alloc_ns=round(alloc))
    print(f"fit: trap_ns = {round(trap)}, page_alloc_ns = {round(alloc)} "
          f"(simulated then: read {simulated_fault_ns(fitted, False):.1f} ns, "
          f"write {simulated_fault_ns(fitted, True):.1f} ns)")
    if a.shared_write_fault_ns is not None:
        dirty = _solve(lambda v: simulated_fault_ns(
            dataclasses.replace(fitted, dirty_page_ns=v), True, shared=True),
            a.shared_write_fault_ns, mach.dirty_page_ns)
        if dirty <= 0:
            print(f"no fit: the rest of a shared write fault already costs more than calib's "
                  f"(dirty_page_ns {dirty:.1f})", file=sys.stderr)
            return 1
        done = dataclasses.replace(fitted, dirty_page_ns=round(dirty))
        print(f"fit: dirty_page_ns = {round(dirty)} (simulated then: shared write "
              f"{simulated_fault_ns(done, True, shared=True):.1f} ns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
