"""Fuzzing benchmark (issue #15 item 5): campaign throughput, the speed-up from
1 to N workers, and how soon the fuzzer (no scenario) finds each catalogued bug.

    python bench/fuzz_bench.py                     # both parts
    python bench/fuzz_bench.py --only rate --programs 64 --workers 2
    python bench/fuzz_bench.py --only bugs --seeds 1,2,3,4,5 --cap 64 [--bugs B02,B13]
    python bench/fuzz_bench.py --json out.json

Both run the campaign ``pervma fuzz`` runs, with its default budgets (DPOR
1000 executions, then 50 PCT samples per program; Campaign's own defaults are
smaller).

rate: the same campaign (seed 1, --programs programs, default budgets) with 1
worker (this process) and with 1..N local worker processes; programs/s,
executions/s and the speed-up over one worker, and the CPU seconds of this process
and its workers (executions per CPU second do not depend on how busy the machine
is; the wall-clock figures do).  The campaigns are identical
whatever the workers (the summary says so), so the figures compare the same work.

bugs: for each bug of src/pervma/check/catalogue.py (but the weak-memory ones,
which the fuzzer's SC exploration cannot show), under the preset the
catalogue names, a campaign per seed with that bug's switch on, until its
first violation; programs (deterministic), CPU and wall seconds until then,
capped at --cap programs ("-": not found within the cap).  One worker by
default, so that the CPU seconds are exact (a stopped campaign's worker
processes are not all reaped when it is measured).  A violation counts
when ``Findings.add`` counts it (with --bug: also clean with the switch off);
until that module exists, any violation under the switch counts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from typing import Any

from pervma.check.catalogue import CATALOGUE
from pervma.check.fuzz.campaign import Campaign, cores, make_executor
from pervma.check.fuzz.explore import DPOR_EXECUTIONS, PCT_EXECUTIONS
from pervma.config import Config


class _AnyViolation:
    """Stands in for Findings where it does not exist yet: every violation counts."""

    def __init__(self, cfg: Config, bugs: list[str], preset: str) -> None:
        self.n = 0

    def add(self, index: int, prog: Any, res: Any) -> str | None:
        self.n += 1
        return "finding-0001"

    def summary(self) -> list[dict[str, Any]]:
        return []

    def write(self, directory: Any) -> None:
        pass


def _findings(cfg: Config, bugs: list[str], preset: str, seed: int = 0) -> Any:
    try:
        from pervma.check.fuzz.findings import Findings
    except ImportError:
        return _AnyViolation(cfg, bugs, preset)
    return Findings(cfg, bugs, preset, dpor_executions=DPOR_EXECUTIONS,
                    pct_executions=PCT_EXECUTIONS, seed=seed)


def _campaign(seed: int, preset: str, bugs: list[str], findings: Any, programs: int) -> Campaign:
    """The campaign ``pervma fuzz`` runs: its default budgets (Campaign's own
    defaults are smaller)."""
    return Campaign(seed, preset, bugs, findings, programs, dpor_executions=DPOR_EXECUTIONS,
                    pct_executions=PCT_EXECUTIONS)


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (the workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench_rate(programs: int, max_workers: int) -> list[dict[str, Any]]:
    print(f"== campaign throughput (seed 1, {programs} programs, preset universal)")
    print(f"{'workers':>7} {'programs/s':>10} {'exec/s':>8} {'seconds':>8} {'speed-up':>8} "
          f"{'CPU s':>7} {'exec/CPU s':>10}")
    rows: list[dict[str, Any]] = []
    base = 0.0
    key = None
    for w in range(1, max_workers + 1):
        camp = _campaign(1, "universal", [], _findings(Config.preset("universal"), [],
                                                       "universal", 1), programs)
        t0, c0 = time.perf_counter(), _cpu()
        camp.run(make_executor(w))  # closes the executor: its workers are reaped
        dt, cpu = time.perf_counter() - t0, _cpu() - c0
        s = camp.summary(programs)
        s.pop("findings")
        if key is None:
            key = s
        elif s != key:
            print("   (the campaign differs from the one-worker campaign!)")
        base = base or dt
        row = {"workers": w, "programs_per_s": programs / dt,
               "executions_per_s": camp.executions / dt, "seconds": dt,
               "speedup": base / dt, "executions": camp.executions, "cpu_seconds": cpu}
        rows.append(row)
        print(f"{w:7} {row['programs_per_s']:10.2f} {row['executions_per_s']:8.0f} "
              f"{dt:8.1f} {row['speedup']:8.2f} {cpu:7.1f} {camp.executions / cpu:10.0f}",
              flush=True)
    return rows


def bench_bugs(seeds: list[int], cap: int, workers: int,
               only: list[str] | None = None) -> list[dict[str, Any]]:
    print(f"== programs and time until the fuzzer (no scenario) first finds each catalogued "
          f"bug; seeds {seeds}, at most {cap} programs, {workers} worker(s)")
    print(f"{'bug':5} {'preset':10} {'seed':>4} {'programs':>8} {'CPU s':>7} {'wall s':>7}")
    rows: list[dict[str, Any]] = []
    for bug in CATALOGUE.values():
        if only and bug.id not in only:
            continue
        if bug.memory_model != "sc" and not only:  # the fuzzer explores SC interleavings
            print(f"{bug.id:5} skipped: a {bug.memory_model} bug (weak memory)", flush=True)
            continue
        per: list[dict[str, Any]] = []
        for seed in seeds:
            cfg = Config.preset(bug.preset).with_bugs(bug.id)
            camp = _campaign(seed, bug.preset, [bug.id],
                             _findings(cfg, [bug.id], bug.preset, seed), cap)
            t0, c0 = time.perf_counter(), _cpu()
            hit: list[int] = []

            def first(i: int, prog: Any, origin: Any, out: Any, row: dict[str, Any],
                      camp: Campaign = camp, hit: list[int] = hit) -> bool:
                if camp.unique:
                    hit.append(i + 1)
                    return True
                return False

            camp.run(make_executor(workers), on_program=first)
            wall, cpu = time.perf_counter() - t0, _cpu() - c0
            r = {"seed": seed, "programs": hit[0] if hit else None, "cpu_seconds": cpu,
                 "seconds": wall}
            per.append(r)
            shown = "-" if not hit else str(hit[0])
            print(f"{bug.id:5} {bug.preset:10} {seed:4} {shown:>8} {cpu:7.1f} {wall:7.1f}",
                  flush=True)
        found = [r for r in per if r["programs"] is not None]
        med = (statistics.median(r["programs"] for r in found),
               statistics.median(r["cpu_seconds"] for r in found),
               statistics.median(r["seconds"] for r in found)) if found else None
        print(f"{bug.id:5} found for {len(found)}/{len(seeds)} seeds"
              + (f"; median {med[0]:g} programs, {med[1]:.1f} CPU s, {med[2]:.1f} s"
                 if med else ""), flush=True)
        rows.append({"bug": bug.id, "preset": bug.preset, "found": len(found), "per_seed": per})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("rate", "bugs"))
    ap.add_argument("--programs", type=int, default=48, help="programs of the rate campaign")
    ap.add_argument("--workers", type=int, default=cores(), help="most workers (default: cores)")
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--cap", type=int, default=64, help="programs per bug and seed at most")
    ap.add_argument("--bug-workers", type=int, default=1,
                    help="workers of the bug campaigns (default 1: CPU seconds are exact)")
    ap.add_argument("--bugs", help="only these bugs (B02,B13)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"cores": cores(), "loadavg": os.getloadavg()}
    print(f"cores available: {cores()}; load average at the start: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.only in (None, "rate"):
        out["rate"] = bench_rate(args.programs, args.workers)
    if args.only in (None, "bugs"):
        seeds = [int(s) for s in args.seeds.split(",")]
        out["bugs"] = bench_bugs(seeds, args.cap, args.bug_workers,
                                 args.bugs.split(",") if args.bugs else None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
