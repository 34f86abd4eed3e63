"""Checker benchmark: executions per second per scenario, time to find each
catalogued bug, and the full four-preset sweep.

    python bench/check_bench.py            # everything, one process
    python bench/check_bench.py --jobs 2   # the sweep over two processes
    python bench/check_bench.py --only bugs|rate|sweep|coverage
    python bench/check_bench.py --json out.json
    python bench/check_bench.py --spin-shapes [--cap-executions N] [--shapes 1F+M,2F+M] [--stateless]

Targets (one core): each bug found in under 5 s, median under 2 s; the sweep
(every scenario under legacy, universal, universal-up, universal-up-nopreempt,
complete and clean) in under 5 minutes.

--spin-shapes explores issue #12's SPIN shapes (1F+M ... 4F+M+R, scenarios
spin-*; see pervma.check.scenarios.spin) with the stateful search (or, with
--stateless, the stateless one), each
capped at --cap-executions (executions + pruned; default 2,000,000, standing
for the issue's 15 minutes) or, only when asked, --cap-seconds; a capped
shape prints "incomplete (cap)".
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from typing import Any

from pervma.check.api import find_bug, run_check, run_many
from pervma.check.catalogue import CATALOGUE
from pervma.check.scenario import all_scenarios
from pervma.config import PRESET_NAMES, Config


def bench_rate(preset: str = "universal") -> list[dict[str, Any]]:
    rows = []
    print(f"== executions per second per scenario (dpor, {preset})")
    print(f"{'scenario':32} {'exec':>7} {'pruned':>6} {'traces':>7} {'red.':>5} {'time s':>7} "
          f"{'exec/s':>8} {'steps/s':>8} complete")
    for sc in all_scenarios():
        r = run_check(sc.name, preset, max_executions=50_000, trace_stats=True)
        rate = r.executions_per_second
        sps = r.steps / r.elapsed if r.elapsed else 0.0
        print(f"{sc.name:32} {r.executions:7} {r.pruned:6} {r.distinct:7} {r.redundancy:5.2f} "
              f"{r.elapsed:7.2f} {rate:8.0f} {sps:8.0f} {r.complete}", flush=True)
        rows.append(dict(scenario=sc.name, executions=r.executions, pruned=r.pruned,
                         distinct=r.distinct, elapsed=r.elapsed, exec_per_s=rate,
                         steps_per_s=sps, complete=r.complete, violation=r.violation))
    return rows


def bench_bugs() -> list[dict[str, Any]]:
    rows = []
    print("== time to find each catalogued bug (dpor, default preset)")
    print(f"{'bug':4} {'scenario':28} {'find s':>7} {'exec':>6} {'found pre/steps':>16} "
          f"{'min pre/steps':>14} {'min exec':>8} {'total s':>8}  violation")
    for bug in CATALOGUE:
        t0 = time.perf_counter()
        r = find_bug(bug, max_executions=100_000)
        total = time.perf_counter() - t0
        kind = r.violation[0] if r.violation else "NOT FOUND"
        tf = r.time_to_find if r.time_to_find is not None else float("nan")
        print(f"{bug:4} {r.scenario:28} {tf:7.2f} {r.executions:6} "
              f"{r.found_preemptions:>7}/{r.found_steps:<8} {r.preemptions:>6}/{len(r.schedule):<7} "
              f"{r.minimise_executions:8} {total:8.2f}  {kind}", flush=True)
        rows.append(dict(bug=bug, scenario=r.scenario, found=r.violation is not None,
                         time_to_find=r.time_to_find, executions=r.executions,
                         found_preemptions=r.found_preemptions, preemptions=r.preemptions,
                         steps=len(r.schedule), total=total, violation=r.violation))
    times = [r["time_to_find"] for r in rows if r["time_to_find"] is not None]
    if times:
        print(f"time to find: median {statistics.median(times):.2f}s, max {max(times):.2f}s, "
              f"{sum(r['found'] for r in rows)}/{len(rows)} found")
    return rows


def bench_bug_matrix() -> list[dict[str, Any]]:
    """Which bugs each preset exposes (dpor, complete runs without minimisation),
    against the catalogue's claim (``BugEntry.cannot_occur``)."""
    print("== bug x preset (dpor): the violation, or clean when exploration completed")
    rows = []
    for bug in CATALOGUE:
        cells = []
        for p in PRESET_NAMES:
            r = find_bug(bug, p, max_executions=100_000, minimise=False)
            state = r.violation[0] if r.violation else ("clean" if r.complete else "incomplete")
            must = CATALOGUE[bug].cannot_occur(Config.preset(p)) is None
            if must != bool(r.violation) or not (r.violation or r.complete):
                state = "UNEXPECTED " + state
            cells.append(f"{state[:26]:26}")
            rows.append(dict(bug=bug, preset=p, state=state, executions=r.executions))
        print(f"{bug:4} " + " | ".join(cells), flush=True)
    print("     " + " | ".join(f"{p:26}" for p in PRESET_NAMES))
    return rows


def bench_sweep(jobs: int) -> dict[str, Any]:
    kws = [dict(scenario=sc.name, preset=p, max_executions=200_000)
           for sc in all_scenarios() for p in PRESET_NAMES if p in sc.presets]
    print(f"== full sweep: {len(kws)} runs ({len(all_scenarios())} scenarios x "
          f"{len(PRESET_NAMES)} presets), jobs={jobs}")
    t0 = time.perf_counter()
    results = run_many(kws, jobs)
    wall = time.perf_counter() - t0
    bad = [r for r in results if r.exit_code != 0]
    for r in sorted(results, key=lambda r: -r.elapsed)[:5]:
        print(f"  slowest: {r.scenario} [{r.preset}] {r.elapsed:.2f}s, {r.executions} executions")
    for r in bad:
        print(f"  NOT CLEAN: {r.summary()}")
    total_exec = sum(r.executions + r.pruned for r in results)
    cpu = sum(r.elapsed for r in results)
    print(f"sweep: {len(results)} runs, {len(results) - len(bad)} complete and clean, "
          f"{total_exec} executions, wall {wall:.1f}s, run time summed {cpu:.1f}s")
    return dict(runs=len(results), clean=len(results) - len(bad), executions=total_exec,
                wall=wall, summed=cpu)


SPIN_CAP_EXECUTIONS = 2_000_000


def bench_spin_shapes(cap_executions: int = SPIN_CAP_EXECUTIONS, cap_seconds: float | None = None,
                      shapes: list[str] | None = None, preset: str = "universal",
                      stateless: bool = False) -> list[dict[str, Any]]:
    """One row per SPIN shape: complete, states, executions, pruned, distinct,
    wall and CPU time.  The stateful search (the default) counts the states it
    stored; the stateless one stores none ("n/a (stateless)"); ``distinct``
    counts distinct traces."""
    from pervma.check.scenarios.spin import SPIN_SHAPES

    labels = [label for label, _ in SPIN_SHAPES]
    wanted = shapes or labels
    unknown = [x for x in wanted if x not in labels]
    if unknown:
        raise SystemExit(f"check_bench: unknown shape(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(labels)}")
    cap = f"cap {cap_executions:,} executions (pruned included)" + (
        f" or {cap_seconds:g} s" if cap_seconds is not None else "")
    kind = "stateless" if stateless else "stateful"
    print(f"== SPIN shapes (issue #12): {kind} DPOR, preset {preset}, {cap}")
    print(f"{'shape':8} {'complete':>16} {'states':>16} {'executions':>10} {'pruned':>9} "
          f"{'distinct':>10} {'wall s':>8} {'cpu s':>8}")
    rows = []
    for label, name in SPIN_SHAPES:
        if label not in wanted:
            continue
        # each shape in a process of its own (forked from this one, which has
        # run nothing): one shape's leftover heap does not slow the next
        ctx = multiprocessing.get_context("fork")
        recv, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_one_shape, args=(send, name, preset, cap_executions,
                                                     cap_seconds, stateless))
        child.start()
        send.close()
        r, wall, cpu = recv.recv()
        child.join()
        if r.violation:
            complete = f"no: {r.violation[0]}"
        elif r.complete:
            complete = "yes"
        elif any("--time" in why for why in r.incomplete):
            complete = "incomplete (time)"
        else:
            complete = "incomplete (cap)"
        states = "n/a (stateless)" if r.states is None else f"{r.states:,}"
        print(f"{label:8} {complete:>16} {states:>16} {r.executions:>10,} "
              f"{r.pruned:>9,} {r.distinct:>10,} {wall:8.1f} {cpu:8.1f}", flush=True)
        rows.append(dict(shape=label, scenario=name, preset=preset, complete=r.complete,
                         status=complete, states=r.states, executions=r.executions,
                         pruned=r.pruned,
                         distinct=r.distinct, wall=wall, cpu=cpu,
                         cap_executions=cap_executions, cap_seconds=cap_seconds,
                         violation=r.violation, incomplete=r.incomplete))
    return rows


def _one_shape(out: Any, name: str, preset: str, cap_executions: int, cap_seconds: float | None,
               stateless: bool) -> None:
    """One shape's run, its wall and CPU seconds, sent to ``out``."""
    t0, c0 = time.perf_counter(), time.process_time()
    r = run_check(name, preset, max_executions=cap_executions, time_limit=cap_seconds,
                  minimise=False, stateless=stateless, trace_stats=True)
    out.send((r, time.perf_counter() - t0, time.process_time() - c0))
    out.close()


def _signature(inst: Any) -> Any:
    """What an execution left behind: page tables, VMAs, vmstat, lock state."""
    kern = inst.models[0].system
    mem: list[Any] = []
    for p in kern.processes:
        mm = p.mm
        if mm.freed:
            mem.append("freed")
            continue
        mem.append(tuple(sorted((v, tuple(sorted(pte.page.data.items())), pte.writable)
                                for v, pte in mm.pgtable.items())))
        mem.append(tuple((v.vm_start, v.vm_end, int(v.vm_flags)) for v in mm.mm_mt.snapshot()))
    snap = inst.snapshot() if inst.snapshot else ""
    return (snap, tuple(mem), tuple(sorted(kern.vmstat().items())))


def bench_coverage(preset: str = "universal", samples: int = 400) -> list[dict[str, Any]]:
    """Outcomes DPOR reaches vs outcomes random walk + PCT reach.  DPOR is
    complete over the dependency the model declares; a sampled outcome DPOR
    lacks means some step touched state its Op does not name."""
    from pervma.check import dpor, strategies
    from pervma.check.scenario import Scenario
    from pervma.check.search import Budget, Runner
    from pervma.config import Config

    def recording(sc: Scenario, into: set[Any]) -> Scenario:
        def build(cfg: Config) -> Any:
            inst = sc.build(cfg)
            fin = inst.finish

            def finish() -> None:
                if fin is not None:
                    fin()
                into.add(_signature(inst))
            inst.finish = finish
            return inst
        return Scenario(sc.name, sc.doc, build, max_steps=sc.max_steps)

    print(f"== outcome coverage: dpor vs {samples} random + {samples} PCT executions ({preset})")
    rows = []
    cfg = Config.preset(preset)
    for sc in all_scenarios():
        a: set[Any] = set()
        b: set[Any] = set()
        st = dpor.explore(Runner(recording(sc, a), cfg), Budget(max_executions=50_000))
        strategies.explore_random(Runner(recording(sc, b), cfg), Budget(max_executions=samples), 1)
        strategies.explore_pct(Runner(recording(sc, b), cfg), Budget(max_executions=samples), 1)
        missed = len(b - a)
        print(f"{sc.name:32} dpor outcomes {len(a):4}  sampled {len(b):4}  sampled-only {missed}"
              + ("" if st.complete else "  (dpor incomplete)"), flush=True)
        rows.append(dict(scenario=sc.name, dpor=len(a), sampled=len(b), missed=missed))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--only", choices=("rate", "bugs", "sweep", "coverage"))
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--spin-shapes", action="store_true",
                    help="only the SPIN shapes of issue #12 (see above)")
    ap.add_argument("--cap-executions", type=int, default=SPIN_CAP_EXECUTIONS, metavar="N",
                    help="per shape, executions + pruned (default 2,000,000)")
    ap.add_argument("--cap-seconds", type=float, default=None, metavar="S",
                    help="opt-in wall-clock cap per shape (machine-dependent)")
    ap.add_argument("--shapes", default=None, metavar="L[,L...]",
                    help="only these shapes, e.g. 1F+M,2F+M+R (default all eight)")
    ap.add_argument("--stateless", action="store_true",
                    help="the SPIN shapes with the stateless search (as before issue #12)")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {}
    if args.spin_shapes:
        if args.cap_executions < 1:
            ap.error("--cap-executions must be at least 1")
        shapes = [x.strip() for x in args.shapes.split(",")] if args.shapes else None
        out["spin_shapes"] = bench_spin_shapes(args.cap_executions, args.cap_seconds, shapes,
                                               stateless=args.stateless)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1, default=str)
        return 1 if any(r["violation"] for r in out["spin_shapes"]) else 0
    if args.only in (None, "bugs"):
        out["bugs"] = bench_bugs()
        out["bug_matrix"] = bench_bug_matrix()
    if args.only in (None, "rate"):
        out["rate"] = bench_rate()
    if args.only in (None, "sweep"):
        out["sweep"] = bench_sweep(args.jobs)
    if args.only == "coverage":
        out["coverage"] = bench_coverage()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)
    ok = all(r["found"] for r in out.get("bugs", [])) and (
        "sweep" not in out or out["sweep"]["clean"] == out["sweep"]["runs"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
