"""Wall time of ``pervma report --quick`` and of the default run.

Targets on a 2-core machine: ``--quick`` under 90 s, the default under 5 min.

    python bench/report_bench.py            # both, --jobs = CPU count
    python bench/report_bench.py --quick    # --quick only
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"--quick": 90.0, "default": 300.0}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(profile: str, jobs: int) -> tuple[float, float, int]:
    """Wall time, CPU time (the command and its worker processes) and exit code."""
    with tempfile.TemporaryDirectory(prefix="pervma-report-bench-") as tmp:
        argv = [sys.executable, "-m", "pervma", "report", "--out", str(Path(tmp) / "r"),
                "--jobs", str(jobs)]
        if profile != "default":
            argv.append(profile)
        c0, t0 = _cpu(), time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        return time.perf_counter() - t0, _cpu() - c0, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="time --quick only")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, --jobs {args.jobs}, load average "
          f"{os.getloadavg()[0]:.1f} (CPU time / jobs estimates the wall time on idle cores)")
    worst = 0
    for profile in ("--quick",) if args.quick else ("--quick", "default"):
        secs, cpu, rc = run(profile, args.jobs)
        target = TARGETS[profile]
        verdict = "ok" if secs < target else "OVER TARGET"
        print(f"pervma report {profile:8} wall {secs:7.1f} s, CPU {cpu:7.1f} s  "
              f"(target {target:.0f} s wall: {verdict}; exit {rc})")
        worst = max(worst, 0 if secs < target else 1)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
