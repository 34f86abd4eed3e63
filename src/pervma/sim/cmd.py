"""``pervma simulate``: throughput curves from the timed simulator."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pervma.config import PRESET_NAMES
from pervma.errors import UsageError

EPILOG = """\
examples:
  pervma simulate shared --preset universal --machine xeon16 --tasks 1,2,4,8,16
  pervma simulate mmap1 --preset legacy,universal --mode threads --csv mmap1.csv --plot mmap1.png
  pervma simulate pft-threads --machine e5-2690v4 --tasks 1,4,12,28,56 --mode threads --jobs 2
  pervma simulate --list

The CSV is pfbench's long form (workload,preset,machine,kind,tasks,faults_per_s,...);
faults_per_s is pairs/s for mmap1 and mmap2.  Results are simulated, not measured."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate", help="run a workload under the timed simulator (throughput vs tasks)",
        description="Run the model under the timed driver on a simulated machine and report "
        "throughput, latency and where the time went, in threads and processes mode.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", nargs="?", metavar="WORKLOAD", help="workload name (see --list)")
    p.add_argument("--list", action="store_true", help="list workloads and machines and exit")
    p.add_argument("--tasks", default="1,2,4,8,16", metavar="N[,N...]",
                   help="task counts (default 1,2,4,8,16)")
    p.add_argument("--mode", default="both", metavar="MODE",
                   help="threads, processes or both (default both)")
    p.add_argument("--preset", default="universal", metavar="P[,P...]",
                   help=f"presets ({', '.join(PRESET_NAMES)}); default universal")
    p.add_argument("--machine", default="xeon16", metavar="NAME", help="machine profile")
    p.add_argument("--duration-ms", type=float, default=20.0, metavar="N",
                   help="simulated measurement window per point (default 20)")
    p.add_argument("--warmup-ms", type=float, default=None, metavar="N",
                   help="simulated warm-up before the window (default a quarter of it)")
    p.add_argument("--seed", type=int, default=0, metavar="N")
    p.add_argument("--csv", metavar="FILE", help="write the points as CSV")
    p.add_argument("--plot", metavar="FILE", help="write a plot (PNG, SVG or PDF)")
    p.add_argument("--trace", metavar="FILE",
                   help="write a Perfetto trace (JSON) of the first 200 us of the window "
                   "of the last point")
    p.add_argument("--force", action="store_true", help="overwrite existing --csv/--plot files")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes")
    p.set_defaults(func=cmd_simulate)


def _parse_tasks(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--tasks wants numbers separated by commas, got {text!r}") from None
    if not out or any(n < 1 for n in out):
        raise UsageError(f"--tasks wants positive numbers, got {text!r}")
    return out


def _check_output(path: str | None, force: bool, flag: str) -> None:
    if path is None:
        return
    p = Path(path)
    if p.exists() and not force:
        raise UsageError(f"{flag} {path} exists; pass --force to overwrite it")
    if not p.parent.exists():
        raise UsageError(f"{flag} {path}: directory {p.parent} does not exist")


def cmd_simulate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from pervma.progress import Tracker
    from pervma.sim.api import simulate
    from pervma.sim.machine import load_machine, machine_names
    from pervma.sim.results import SUMMARY_HEADER, summary_table, to_csv
    from pervma.sim.workloads import WORKLOADS, get_workload

    console = Console(width=None if sys.stdout.isatty() else 120)
    if args.list:
        for w in WORKLOADS.values():
            console.print(f"[bold]{w.name:12}[/] {w.description}")
        for name in machine_names():
            console.print(f"[bold]machine {name:10}[/] {load_machine(name).description}")
        return 0
    if not args.workload:
        raise UsageError("name a workload (pervma simulate --list shows them)")
    w = get_workload(args.workload)
    tasks = _parse_tasks(args.tasks)
    presets = [p.strip() for p in args.preset.split(",") if p.strip()]
    for pre in presets:
        if pre not in PRESET_NAMES:
            raise UsageError(f"unknown preset {pre!r}; choose one of {', '.join(PRESET_NAMES)}")
    if args.mode not in ("threads", "processes", "both"):
        raise UsageError(f"unknown mode {args.mode!r}; choose threads, processes or both")
    mach = load_machine(args.machine)
    if args.duration_ms <= 0:
        raise UsageError("--duration-ms must be positive")
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    for pre in presets:
        if pre.startswith("universal-up") and max(tasks) > 64:
            raise UsageError("a one-CPU preset with more than 64 tasks is not useful")
    if max(tasks) > 4 * mach.cpus:
        raise UsageError(f"at most {4 * mach.cpus} tasks on {mach.name} ({mach.cpus} CPUs)")
    _check_output(args.csv, args.force, "--csv")
    _check_output(args.plot, args.force, "--plot")
    _check_output(args.trace, args.force, "--trace")
    kinds = 2 if args.mode == "both" and len(w.modes) > 1 else 1
    total = len(presets) * len(tasks) * kinds
    part = f"simulate {w.name}"
    with Tracker(transient=True) as track:  # stderr only: never changes an output file
        track.add(part, total)
        points = simulate(w.name, presets, mach.name, args.mode, tasks, args.duration_ms,
                          args.seed, jobs=args.jobs, warmup_ms=args.warmup_ms,
                          progress=lambda p: track.advance(part, f"{p.preset} {p.kind} "
                                                           f"{p.tasks}"))
    table = Table(title=f"{w.name} on {mach.name}: {'pairs' if w.unit == 'pairs' else 'faults'}/s, "
                  f"{args.duration_ms:g} ms simulated per point; waits of the threads run",
                  caption="simulated, not measured")
    for h in SUMMARY_HEADER:
        table.add_column(h, justify="left" if h == "preset" else "right")
    for row in summary_table(points):
        table.add_row(*row)
    console.print(table)
    if args.csv:
        Path(args.csv).write_text(to_csv(points))
        console.print(f"wrote {args.csv}")
    if args.plot:
        from pervma.sim.plot import save_plot

        try:
            save_plot(points, args.plot)
        except ValueError as exc:  # unknown image format
            raise UsageError(f"--plot {args.plot}: {exc}".splitlines()[0]) from None
        console.print(f"wrote {args.plot}")
    if args.trace:
        from pervma.sim.api import run_point

        last = points[-1]
        start = (args.warmup_ms if args.warmup_ms is not None else max(1.0, args.duration_ms / 4))
        tp = run_point(last.workload, last.preset, mach, last.kind, last.tasks,
                       min(args.duration_ms, 1.0), args.seed, start,
                       trace_window_ms=(start, start + 0.2))
        Path(args.trace).write_text(tp.trace)
        console.print(f"wrote {args.trace} (open in https://ui.perfetto.dev)")
    if os.environ.get("PERVMA_SIM_DEBUG"):
        console.print(to_csv(points))
    return 0
