"""One stateful check run on one core and on two (issue #12, item 5).

    python bench/parallel_bench.py                 # spin-3f-m, spin-2f-m, vma-reuse-by-another-mm
    python bench/parallel_bench.py --slow          # and spin-2f-m-r, spin-3f-m-r (about 3 min)
    python bench/parallel_bench.py --repeat 3 --scenarios spin-2f-m
    python bench/parallel_bench.py --command --repeat 3   # through the installed ``pervma check``

For each scenario: the wall time of ``run_check(name, jobs=1)`` and of
``jobs=2`` (median of --repeat runs), the speed-up, and, from the split run's
note, each worker's CPU seconds -- ``seq CPU / busiest worker CPU`` is the
speed-up the split allows on two idle cores, whatever else the machine is
running.  A control row runs two independent ``jobs=1`` searches of the same
scenario side by side: its speed-up is what this machine gives two processes
at that moment (2.0 on two idle cores), the ceiling for the split.  The load
average is printed with each row.  The verdicts of the two runs are compared
(same exit code and completeness) so a fast wrong answer does not count.

``--command`` times the installed command instead, ``pervma check X --jobs 1``
against ``--jobs 2`` (interleaved, median of --repeat; start-up included, as a
user sees it), the same exit code required of both.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pervma.check.api import run_check

FAST = ["spin-3f-m", "spin-2f-m", "vma-reuse-by-another-mm"]
SLOW = ["spin-2f-m-r", "spin-3f-m-r"]


def _timed(name: str, jobs: int) -> tuple[float, float, object]:
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_check(name, jobs=jobs, minimise=False)
    return time.perf_counter() - t0, time.process_time() - c0, res


def _alone(name: str) -> None:
    run_check(name, jobs=1, minimise=False)


def _pair(name: str) -> float:
    """Wall time of two independent jobs=1 runs side by side."""
    ctx = mp.get_context("fork")
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_alone, args=(name,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return time.perf_counter() - t0


def bench(name: str, repeat: int) -> dict[str, float]:
    one, two, cpu1, busiest = [], [], [], []
    for _ in range(repeat):
        w1, c1, r1 = _timed(name, 1)
        w2, _, r2 = _timed(name, 2)
        assert (r1.exit_code, r1.complete) == (r2.exit_code, r2.complete), name  # type: ignore[attr-defined]
        note = next((n for n in r2.notes if "worker processes" in n), "")  # type: ignore[attr-defined]
        m = re.search(r"CPU s: ([0-9., ]+)\)", note)
        workers = [float(x) for x in m.group(1).split(",")] if m else [c1]
        one.append(w1)
        two.append(w2)
        cpu1.append(c1)
        busiest.append(max(workers))
    pair = _pair(name)
    row = {"jobs1": statistics.median(one), "jobs2": statistics.median(two),
           "cpu1": statistics.median(cpu1), "busiest": statistics.median(busiest),
           "pair": pair}
    row["speedup"] = row["jobs1"] / row["jobs2"]
    row["cpu_speedup"] = row["cpu1"] / row["busiest"]
    row["machine"] = 2 * row["jobs1"] / pair
    print(f"{name:26} {row['jobs1']:8.2f} {row['jobs2']:8.2f} {row['speedup']:7.2f}x "
          f"{row['cpu1']:8.2f} {row['busiest']:8.2f} {row['cpu_speedup']:7.2f}x "
          f"{row['machine']:7.2f}x   load {os.getloadavg()[0]:.2f}", flush=True)
    return row


def _pervma() -> str:
    """The installed entry point beside this interpreter, else on PATH."""
    here = Path(sys.executable).with_name("pervma")
    found = str(here) if here.exists() else shutil.which("pervma")
    if found is None:
        raise SystemExit("parallel_bench: no installed pervma command (pip install -e .)")
    return found


def command(name: str, repeat: int) -> dict[str, float]:
    """``pervma check NAME --jobs 1`` against ``--jobs 2``, wall seconds."""
    exe = _pervma()
    times: dict[int, list[float]] = {1: [], 2: []}
    codes: dict[int, set[int]] = {1: set(), 2: set()}
    for _ in range(repeat):
        for jobs in (1, 2):
            t0 = time.perf_counter()
            done = subprocess.run([exe, "check", name, "--jobs", str(jobs)],
                                  stdout=subprocess.DEVNULL, check=False)
            times[jobs].append(time.perf_counter() - t0)
            codes[jobs].add(done.returncode)
    assert codes[1] == codes[2] and len(codes[1]) == 1, (name, codes)
    row = {"jobs1": statistics.median(times[1]), "jobs2": statistics.median(times[2])}
    row["speedup"] = row["jobs1"] / row["jobs2"]
    print(f"{name:26} {row['jobs1']:8.2f} {row['jobs2']:8.2f} {row['speedup']:7.2f}x   "
          f"exit {codes[1].pop()}   load {os.getloadavg()[0]:.2f}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", help="comma-separated scenario names")
    ap.add_argument("--slow", action="store_true", help="add spin-2f-m-r and spin-3f-m-r (slow)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per figure (median)")
    ap.add_argument("--command", action="store_true",
                    help="time the installed `pervma check X --jobs 1/2` instead")
    a = ap.parse_args(argv)
    names = a.scenarios.split(",") if a.scenarios else FAST + (SLOW if a.slow else [])
    if a.command:
        print(f"{'scenario':26} {'jobs=1 s':>8} {'jobs=2 s':>8} {'speedup':>8}   (installed command)")
        for name in names:
            command(name, max(1, a.repeat))
        return 0
    print(f"{'scenario':26} {'jobs=1 s':>8} {'jobs=2 s':>8} {'speedup':>8} "
          f"{'CPU 1 s':>8} {'busiest':>8} {'CPU-up':>8} {'machine':>8}")
    for name in names:
        bench(name, max(1, a.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
