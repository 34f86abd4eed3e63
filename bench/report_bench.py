"""Wall time of ``pervma report --quick`` and of the default run.

Targets on 2 idle cores: ``--quick`` under 60 s, the default under 4 minutes,
both with the default ``--jobs`` (the CPU count).  The load average is printed
before and after: figures taken while other work shares the cores are not the
figures of the targets (CPU time / CPUs says what idle cores would give).

    python bench/report_bench.py            # both
    python bench/report_bench.py --quick    # --quick only
    python bench/report_bench.py --jobs 1   # pass an explicit --jobs
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"--quick": 60.0, "default": 240.0}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(profile: str, jobs: int | None) -> tuple[float, float, int, list[tuple[str, float]]]:
    """Wall time, CPU time (the command and its worker processes), exit code and
    the report's own per-section times (from timings.csv)."""
    with tempfile.TemporaryDirectory(prefix="pervma-report-bench-") as tmp:
        out = Path(tmp) / "r"
        argv = [sys.executable, "-m", "pervma", "report", "--out", str(out)]
        if jobs is not None:
            argv += ["--jobs", str(jobs)]
        if profile != "default":
            argv.append(profile)
        c0, t0 = _cpu(), time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        secs, cpu = time.perf_counter() - t0, _cpu() - c0
        sections: dict[str, float] = {}
        timings = out / "timings.csv"
        if timings.is_file():
            for row in csv.DictReader(io.StringIO(timings.read_text())):
                if row["kind"] == "section":  # kind,name,value rows; seconds per section
                    sections[row["name"]] = float(row["value"])
        return secs, cpu, p.returncode, sorted(sections.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="time --quick only")
    ap.add_argument("--jobs", type=int, default=None,
                    help="pass --jobs N (default: none, the report's own default)")
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    print(f"{cpus} CPUs, --jobs {args.jobs if args.jobs else f'default ({cpus})'}, "
          f"load average {os.getloadavg()[0]:.1f}")
    worst = 0
    for profile in ("--quick",) if args.quick else ("--quick", "default"):
        secs, cpu, rc, sections = run(profile, args.jobs)
        target = TARGETS[profile]
        verdict = "ok" if secs < target else "OVER TARGET"
        print(f"pervma report {profile:8} wall {secs:6.1f} s, CPU {cpu:6.1f} s "
              f"(CPU/{cpus} = {cpu / cpus:5.1f} s)  target {target:.0f} s wall: {verdict}; "
              f"exit {rc}; load average now {os.getloadavg()[0]:.1f}")
        if sections:
            print("    seconds per section (checker and simulator: summed over their jobs): " + ", ".join(f"{k} {v:.1f}" for k, v in sections))
        worst = max(worst, 0 if secs < target and rc == 0 else 1)
    return worst


if __name__ == "__main__":
    raise SystemExit(main())
