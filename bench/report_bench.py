"""Wall time of ``pervma report --quick`` and of the default run.

Targets on a 2-core machine: ``--quick`` under 90 s, the default under 5 min.

    python bench/report_bench.py            # both, --jobs = CPU count
    python bench/report_bench.py --quick    # --quick only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"--quick": 90.0, "default": 300.0}


def run(profile: str, jobs: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="pervma-report-bench-") as tmp:
        argv = [sys.executable, "-m", "pervma", "report", "--out", str(Path(tmp) / "r"),
                "--jobs", str(jobs)]
        if profile != "default":
            argv.append(profile)
        t0 = time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        return time.perf_counter() - t0, p.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="time --quick only")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, --jobs {args.jobs}")
    worst = 0
    for profile in ("--quick",) if args.quick else ("--quick", "default"):
        secs, rc = run(profile, args.jobs)
        target = TARGETS[profile]
        verdict = "ok" if secs < target else "OVER TARGET"
        print(f"pervma report {profile:8} {secs:7.1f} s  (target {target:.0f} s: {verdict}; "
              f"exit {rc})")
        worst = max(worst, 0 if secs < target else 1)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
