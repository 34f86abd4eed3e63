"""Simulated against real, on the machine this runs on.

    make -C bench/real
    python bench/real/validate.py                      # every built-in, 1 and 2 tasks
    python bench/real/validate.py --workloads shared,churn --tasks 1,2,4 --repeats 5
    python bench/real/validate.py --csv real.csv       # the probe's rows (long form)
    python bench/real/validate.py --real-csv real.csv  # simulate again against saved rows
    python bench/real/validate.py --calib              # rerun calib (this machine's profile)

For every workload, task count and kind (threads, processes) the real kernel
runs ``bench/real/probe`` ``--repeats`` times for ``--duration-ms`` each (after
a 200 ms warm-up), threads and processes alternating so that both meet the
same load; the simulator runs the same workload on ``--machine`` (default: the
profile of the machine this runs on, ``epyc2vm`` on the AMD 2-vCPU VM and
``xeon2vm`` on the Intel one; the sessions and CI have run on both) with its
window stretched to whole cycles (``min_cycles=1``).

The machine is shared with other jobs.  A real point's rate is corrected for
the time its tasks were runnable but not running (the probe's ``runq_s``:
schedstat run delay) because of other jobs: ``rate * window / (window -
excess / tasks)``, where ``excess`` is the run delay less the workload's own
where its tasks (measured + extra) outnumber the CPUs (``(tasks - CPUs) *
window``, as for CPU-bound tasks: the simulator schedules those tasks itself,
sim/balance.py); the raw rate is printed too, and the rate per CPU-second
the tasks got, times min(tasks, CPUs).  Oversubscribed points (those rows
say so) are simulated over ``--sim-ms-oversubscribed``: their tasks move
between CPUs every few tens of milliseconds, and a short window sees one
placement only.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROBE = HERE / "probe"


def real_point(args_line: str, kind: str, tasks: int, duration_ms: int,
               machine: str) -> dict[str, str]:
    out = subprocess.run([str(PROBE), "--mode", kind, "--tasks", str(tasks), "--duration-ms",
                          str(duration_ms), "--warmup-ms", "200", "--machine", machine,
                          *args_line.split()], check=True, capture_output=True, text=True).stdout
    return next(csv.DictReader(io.StringIO(out)))


def corrected(row: dict[str, str], total_tasks: int, ncpu: int) -> float:
    """The rate less the run delay other jobs caused: the tasks' schedstat
    run delay beyond what ``total_tasks`` CPU-bound tasks on ``ncpu`` CPUs
    cause themselves (``(total_tasks - ncpu) * window`` when they outnumber
    the CPUs, which the simulator's own scheduling reproduces), spread over
    the tasks."""
    win = float(row["wall_s"])
    excess = max(0.0, float(row["runq_s"]) - win * max(0, total_tasks - ncpu))
    eff = win - excess / total_tasks
    return float(row["faults_per_s"]) * win / max(eff, win * 0.05)


def per_cpu_second(row: dict[str, str], total_tasks: int, ncpu: int) -> float:
    """The rate had the tasks had min(tasks, CPUs) CPUs to themselves and used
    them as they did: ops per CPU-second of the tasks times that many CPUs
    (an overstatement where tasks sleep, e.g. on mmap_lock)."""
    ops = float(row["faults_per_s"]) * float(row["wall_s"])
    return ops / max(float(row["cpu_s"]), 1e-9) * min(total_tasks, ncpu)


# The bundled profiles of the 2-vCPU VMs this project runs on, by CPU vendor.
HOST_PROFILES = {"AuthenticAMD": "epyc2vm", "GenuineIntel": "xeon2vm"}


def host_machine() -> str | None:
    """The bundled profile of the machine this runs on: a 2-CPU KVM guest,
    told apart by its CPU vendor (/proc/cpuinfo); None for any other."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    vendor = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                   if ln.startswith("vendor_id")), "")
    if os.cpu_count() != 2 or " hypervisor" not in info:
        return None
    return HOST_PROFILES.get(vendor)


def main() -> int:
    from pervma.sim.api import run_point
    from pervma.sim.machine import load_machine
    from pervma.sim.workloads import WORKLOADS, get_workload

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--tasks", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration-ms", type=int, default=1000)
    ap.add_argument("--machine", help="the profile to simulate (default: this machine's, "
                    "epyc2vm on the AMD VM, xeon2vm on the Intel one)")
    ap.add_argument("--sim-ms", type=float, default=20.0)
    ap.add_argument("--sim-seeds", type=int, default=1)
    ap.add_argument("--sim-ms-oversubscribed", type=float, default=300.0,
                    help="simulated window where the tasks outnumber the CPUs")
    ap.add_argument("--csv", help="write the probe's rows here")
    ap.add_argument("--real-csv", help="take the real rows from this file (an earlier --csv) "
                    "instead of running the probe: the simulator again against the same data")
    ap.add_argument("--calib", action="store_true", help="run bench/real/calib and exit")
    a = ap.parse_args()
    saved: dict[tuple[str, str, int], list[dict[str, str]]] = {}
    if a.real_csv:
        try:
            with open(a.real_csv, newline="") as f:
                for r in csv.DictReader(f):
                    saved.setdefault((r["workload"], r["kind"], int(r["tasks"])), []).append(r)
        except (OSError, KeyError, ValueError) as e:
            print(f"validate: cannot read real rows from {a.real_csv}: {e}", file=sys.stderr)
            return 2
    elif not PROBE.exists():
        print("bench/real/probe is not built: run make -C bench/real", file=sys.stderr)
        return 2
    if a.calib:
        return subprocess.run([str(HERE / "calib")]).returncode
    name = a.machine or host_machine()
    if name is None:
        print("validate: no bundled profile of this machine; name one with --machine",
              file=sys.stderr)
        return 2
    mach = load_machine(name)
    ncpu = os.cpu_count() or 1
    within = points = 0
    rows: list[dict[str, str]] = []
    if a.real_csv:
        print(f"real rows from {a.real_csv}", flush=True)
    else:
        print(f"load average before: {os.getloadavg()[0]:.1f} on {ncpu} CPUs", flush=True)
    print(f"machine profile: {mach.name}", flush=True)
    print("| workload | tasks | kind | simulated | real, run-queue corrected: median (best) | "
          "real, per CPU-second | real raw: median, min-max | sim/real | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for wl in a.workloads.split(","):
        w = get_workload(wl)
        line = w.probe_args()
        for n in (int(x) for x in a.tasks.split(",")):
            total = n + len(w.extras)
            got: dict[str, list[dict[str, str]]] = {k: [] for k in w.modes}
            if a.real_csv:
                got = {k: saved.get((w.name, k, n), []) for k in w.modes}
                if not all(got.values()):
                    print(f"validate: {a.real_csv} has no rows for {w.name} at {n} tasks",
                          file=sys.stderr)
                    return 2
            for _ in range(0 if a.real_csv else a.repeats):
                for k in w.modes:
                    got[k].append(real_point(line, k, n, a.duration_ms, mach.name))
            for k in w.modes:
                rows += got[k]
                cor = [corrected(r, total, ncpu) for r in got[k]]
                real = statistics.median(cor)
                raw = sorted(float(r["faults_per_s"]) for r in got[k])
                dur = a.sim_ms_oversubscribed if total > ncpu else a.sim_ms
                sims = [run_point(w, "universal", mach, k, n, dur, seed=s,
                                  min_cycles=1) for s in range(a.sim_seeds)]
                sim = statistics.median(p.faults_per_s for p in sims)
                note = []
                if total > ncpu:
                    note.append(f"oversubscribed: {total} tasks on {ncpu} CPUs")
                if any(p.capped for p in sims):
                    note.append(f"sim window capped ({sims[0].cycles} cycles)")
                pcs = statistics.median(per_cpu_second(r, total, ncpu) for r in got[k])
                points += 1
                within += abs(sim / real - 1) <= 0.15
                print(f"| {w.name} | {n} | {k} | {sim:,.0f} | {real:,.0f} ({max(cor):,.0f}) | "
                      f"{pcs:,.0f} | {statistics.median(raw):,.0f}, "
                      f"{raw[0]:,.0f}-{raw[-1]:,.0f} | {sim / real:.2f} | "
                      f"{'; '.join(note)} |", flush=True)
    print(f"within 15%: {within} of {points} points")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            wr.writeheader()
            wr.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
