"""Start-up cost of the ``pervma`` command: CPU time (user+sys) of the
installed entry point, median of N runs (default 5).

    python bench/startup_bench.py                  # the pervma next to this python
    python bench/startup_bench.py --runs 9 --exe /path/to/pervma

Target (issue #12): ``pervma --version`` under 0.1 s CPU.  Each run's CPU time
is the child's rusage (``os.wait4``), so other load on the machine does not
count; wall time is printed alongside for reference only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (["--version"], ["check", "--help"])
TARGET_S = 0.1


def entry_point() -> str | None:
    """The ``pervma`` script installed beside this interpreter, else on PATH."""
    here = Path(sys.executable).parent / "pervma"
    if here.is_file():
        return str(here)
    return shutil.which("pervma")


def run_once(argv: list[str]) -> tuple[float, float, int]:
    """(CPU seconds user+sys, wall seconds, exit status) of one run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, wall, proc.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    ap.add_argument("--exe", default=None, help="the pervma entry point (default: installed)")
    args = ap.parse_args(argv)
    exe = args.exe or entry_point()
    if exe is None or not Path(exe).is_file():
        print("startup_bench: no installed 'pervma' entry point found; pass --exe",
              file=sys.stderr)
        return 2
    runs = max(args.runs, 1)
    print(f"== start-up of {exe}: CPU user+sys, median of {runs} runs")
    print(f"{'command':24} {'cpu median s':>12} {'cpu min s':>10} {'cpu max s':>10} "
          f"{'wall median s':>13}")
    ok = True
    for extra in COMMANDS:
        samples = [run_once([exe, *extra]) for _ in range(runs)]
        bad = [code for _, _, code in samples if code != 0]
        cpu = [c for c, _, _ in samples]
        wall = [w for _, w, _ in samples]
        name = "pervma " + " ".join(extra)
        print(f"{name:24} {statistics.median(cpu):12.3f} {min(cpu):10.3f} {max(cpu):10.3f} "
              f"{statistics.median(wall):13.3f}" + (f"  EXIT {bad[0]}" if bad else ""))
        ok = ok and not bad
        if extra == ["--version"] and statistics.median(cpu) >= TARGET_S:
            print(f"  over the {TARGET_S} s target")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
