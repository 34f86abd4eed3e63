"""Timed-simulator benchmarks.

    python bench/sim_bench.py              # speed: simulated faults per wall-clock second
    python bench/sim_bench.py --fidelity   # full-length fidelity run against real-16core,
                                           # the published shapes, and the predictions

The fidelity run compares simulated threads/processes ratios with the anchor
(tests/sim/data/pfbench-private-shared.csv, read here and in tests only; the
simulator never reads it).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pervma.sim.api import run_point

ANCHOR = Path(__file__).resolve().parent.parent / "tests" / "sim" / "data" / "pfbench-private-shared.csv"
TASKS = (1, 2, 4, 8, 12, 16)


def model_ceiling(faults: int = 20_000) -> float:
    """Faults/s of the model alone: one thread's coroutine driven by a bare
    send() loop (no clock, no costs), the ceiling for any driver."""
    from pervma.sched import Task, running_slot
    from pervma.sim.api import _new_system, sim_config
    from pervma.sim.machine import load_machine
    from pervma.sim.workloads import build

    kern = _new_system(sim_config("universal", load_machine("xeon16")))
    b = build("shared", kern, "threads", 1, 1)
    coro = b.coros[0]
    slot = running_slot()
    slot.append(Task(0, "bare", coro))
    t0 = time.perf_counter()
    try:
        while b.recorder.ops[0] < faults:
            coro.send(None)
    finally:
        slot.pop()
        coro.close()
    return faults / (time.perf_counter() - t0)


def speed(duration_ms: float) -> float:
    """Faults the timed driver actually executes per wall-clock second (processes
    mode in mean field runs 4 processes for 8: only executed faults count)."""
    total_f = 0.0
    total_w = 0.0
    for wl, kind, n in (("shared", "threads", 16), ("private", "threads", 16),
                        ("private", "processes", 8), ("pft-threads", "threads", 8)):
        warm = duration_ms / 4
        p = run_point(wl, "universal", "xeon16", kind, n, duration_ms, seed=1, warmup_ms=warm)
        executed = p.faults_per_s * (p.sim_ms + warm) / 1e3 * p.simulated_tasks / p.tasks
        print(f"  {wl:12} {kind:9} {n:3} tasks: {executed / p.wall_s:9,.0f} executed faults/wall-s "
              f"({p.steps / max(1.0, executed * duration_ms / (duration_ms + warm)):.1f} steps/fault"
              + (f"; mean field: {p.faults_per_s * (p.sim_ms + warm) / 1e3 / p.wall_s:,.0f} "
                 "represented" if p.simulated_tasks != p.tasks else "") + ")")
        total_f += executed
        total_w += p.wall_s
    overall = total_f / total_w
    print(f"overall: {overall:,.0f} simulated faults per wall-clock second")
    print(f"model alone (bare send loop, no driver): {model_ceiling():,.0f} faults per second")
    return overall


def anchor_ratios() -> dict[tuple[str, int], float]:
    vals: dict[tuple[str, str, int], list[float]] = {}
    with ANCHOR.open() as f:
        for r in csv.DictReader(f):
            vals.setdefault((r["scenario"], r["kind"], int(r["tasks"])), []).append(
                float(r["faults_per_s"]))
    out = {}
    for (sc, kind, n), _ in vals.items():
        if kind == "threads":
            out[(sc, n)] = statistics.median(vals[(sc, "threads", n)]) / statistics.median(
                vals[(sc, "processes", n)])
    return out


def _rate(args: tuple[str, str, int, float, int]) -> float:
    wl, kind, n, dur, seed = args
    return run_point(wl, "universal", "xeon16", kind, n, dur, seed=seed).faults_per_s


def ratios(wl: str, dur: float, seeds: int, jobs: int) -> dict[int, float]:
    """threads/processes at each task count: median over seeds of each kind."""
    args = [(wl, kind, n, dur, s) for n in TASKS for kind in ("threads", "processes")
            for s in range(seeds)]
    with ProcessPoolExecutor(jobs) as pool:
        vals = dict(zip(args, pool.map(_rate, args), strict=True))
    out = {}
    for n in TASKS:
        t = statistics.median(vals[(wl, "threads", n, dur, s)] for s in range(seeds))
        p = statistics.median(vals[(wl, "processes", n, dur, s)] for s in range(seeds))
        out[n] = t / p
    return out


def fidelity(dur: float, seeds: int, jobs: int) -> None:
    meas = anchor_ratios()
    print(f"fidelity on xeon16, universal, {dur:g} ms simulated per point, {seeds} seed(s)")
    for wl in ("private", "shared"):
        sim = ratios(wl, dur, seeds, jobs)
        for n in TASKS:
            m = meas[(wl, n)]
            print(f"  {wl:8} {n:2} tasks: simulated {sim[n]:.3f}  measured {m:.3f}  "
                  f"error {100 * (sim[n] / m - 1):+.1f}%", flush=True)
    print("predictions on xeon16, universal (threads/processes; no calibration on them)")
    for wl in ("churn", "churnsame", "mmap1"):
        sim = ratios(wl, dur, 1, jobs)
        print(f"  {wl:9} " + "  ".join(f"{n}:{sim[n]:.3f}" for n in TASKS), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fidelity", action="store_true")
    ap.add_argument("--duration-ms", type=float, default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    t0 = time.perf_counter()
    if a.fidelity:
        fidelity(a.duration_ms or 40.0, a.seeds, a.jobs)
    else:
        rate = speed(a.duration_ms or 4.0)
        if rate < 20_000:
            print("below the 20,000 faults/s floor", file=sys.stderr)
    print(f"({time.perf_counter() - t0:.1f} s wall)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
