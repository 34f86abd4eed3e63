"""``pervma simulate``: throughput curves from the timed simulator."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pervma import cliargs, outfiles
from pervma.config import PRESET_NAMES
from pervma.errors import UsageError

# Range limits.  20 simulated ms of 16 tasks of 'shared' take about 7 CPU seconds
# (measured on this project's 2-core machine), so 1 s (50x the default) already
# takes minutes per point; beyond it a run is hours.
MAX_DURATION_MS = 1000.0
MAX_SEED = 2**63 - 1
PLOT_SUFFIXES = (".png", ".svg", ".pdf")

EPILOG = """\
examples:
  pervma simulate shared --preset universal --machine xeon16 --tasks 1,2,4,8,16
  pervma simulate mmap1 --preset legacy,universal --mode threads --csv mmap1.csv --plot mmap1.png
  pervma simulate pft-threads --machine e5-2690v4 --tasks 1,4,12,28,56 --mode threads --jobs 2
  pervma simulate my-workload.toml --tasks 1,2 --csv mine.csv
  pervma simulate page_fault1 --region 16MiB --backing memfd --sharing shared --tasks 1,2
  pervma simulate churnsame --emit-probe-args     # the line bench/real/probe reads
  pervma simulate --list

A workload is a built-in's name or a TOML workload file (README: "Workload files");
--region, --backing, --sharing, --touch and --end replace the file's [task] values.
The window is --duration-ms, stretched until every measured task has completed
--min-cycles cycles of its loop (default 1), at most --max-window-ms (default 200);
the CSV's cycles column counts the cycles completed, capped says the cap cut it short.

The CSV is pfbench's long form (workload,preset,machine,kind,tasks,faults_per_s,...);
faults_per_s is pairs/s for mmap1 and mmap2.  Results are simulated, not measured.
Every output file is checked before the simulation starts, written complete or not
at all, and never overwritten without --force (which applies to the files named).

exit status: 0 done, 2 usage or input/output error, 70 internal error, 130 interrupted."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate", help="run a workload under the timed simulator (throughput vs tasks)",
        description="Run the model under the timed driver on a simulated machine and report "
        "throughput, latency and where the time went, in threads and processes mode.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", nargs="?", metavar="WORKLOAD", type=cliargs.nonempty,
                   help="workload name (see --list) or a workload file FILE.toml")
    p.add_argument("--list", action="store_true", help="list workloads and machines and exit")
    p.add_argument("--tasks", default="1,2,4,8,16", metavar="N[,N...]", type=cliargs.nonempty,
                   help="task counts (default 1,2,4,8,16)")
    p.add_argument("--mode", default="both", metavar="MODE", type=cliargs.nonempty,
                   help="threads, processes or both (default both)")
    p.add_argument("--preset", default="universal", metavar="P[,P...]", type=cliargs.nonempty,
                   help=f"presets ({', '.join(PRESET_NAMES)}); default universal")
    p.add_argument("--machine", default="xeon16", metavar="NAME", type=cliargs.nonempty,
                   help="machine profile")
    p.add_argument("--duration-ms", default=20.0, metavar="N",
                   type=cliargs.finite_float(0, MAX_DURATION_MS, lo_open=True),
                   help="simulated measurement window per point (default 20)")
    p.add_argument("--warmup-ms", default=None, metavar="N",
                   type=cliargs.finite_float(0, MAX_DURATION_MS),
                   help="simulated warm-up before the window (default a quarter of it)")
    p.add_argument("--min-cycles", default=1, metavar="N", type=cliargs.bounded_int(0, 1000),
                   help="stretch the window until every measured task completed N cycles "
                   "(default 1; 0: exactly --duration-ms)")
    p.add_argument("--max-window-ms", default=200.0, metavar="N",
                   type=cliargs.finite_float(0, MAX_DURATION_MS, lo_open=True),
                   help="the stretched window's cap (default 200)")
    for flag, what in (("--region", "bytes per task, e.g. 128MiB"),
                       ("--backing", "anon, file, memfd or shmem"),
                       ("--sharing", "private or shared"),
                       ("--touch", "write, read or none"),
                       ("--end", "what ends a cycle: munmap, dontneed or none")):
        p.add_argument(flag, metavar="X", type=cliargs.nonempty,
                       help=f"replace the workload's [task] value: {what}")
    p.add_argument("--emit-probe-args", action="store_true",
                   help="print the workload as the key=value line bench/real/probe reads, "
                   "and exit")
    p.add_argument("--seed", type=cliargs.bounded_int(0, MAX_SEED), default=0, metavar="N")
    p.add_argument("--csv", metavar="FILE", type=cliargs.nonempty,
                   help="write the points as CSV")
    p.add_argument("--plot", metavar="FILE", type=cliargs.nonempty,
                   help="write a plot; the name ends in .png, .svg or .pdf")
    p.add_argument("--trace", metavar="FILE", type=cliargs.nonempty,
                   help="write a Perfetto trace (JSON) of the first 200 us of the window "
                   "of the last point")
    p.add_argument("--force", action="store_true",
                   help="overwrite the --csv/--plot/--trace files named if they exist")
    p.add_argument("--jobs", type=cliargs.jobs, default=1, metavar="N",
                   help="worker processes, at most the number of CPUs (default 1)")
    p.set_defaults(func=cmd_simulate)


def _parse_tasks(text: str) -> list[int]:
    items = [x.strip() for x in text.split(",")]
    if any(not (x.isascii() and x.isdigit() and len(x) <= 9) for x in items):
        if all(x.isascii() and x.lstrip("+-").isdigit() for x in items if x):
            raise UsageError(f"--tasks wants positive numbers, got {text!r}")
        raise UsageError(f"--tasks wants numbers separated by commas, got {text!r}")
    out = list(dict.fromkeys(int(x) for x in items))
    if any(n < 1 for n in out):
        raise UsageError(f"--tasks wants positive numbers, got {text!r}")
    return out


def _check_outputs(args: argparse.Namespace) -> None:
    """Every output path, checked before the simulation runs: the path checked
    is the path written (no suffix is added), two flags never name one file."""
    seen: dict[Path, str] = {}
    for flag, path, suffixes in (("--csv", args.csv, ()), ("--plot", args.plot, PLOT_SUFFIXES),
                                 ("--trace", args.trace, ())):
        if path is None:
            continue
        p = outfiles.check_file(path, args.force, flag, suffixes)
        key = p.resolve()
        if key in seen:
            raise UsageError(f"{seen[key]} and {flag} name the same file {path}")
        seen[key] = flag


def cmd_simulate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from pervma.progress import Tracker
    from pervma.sim.api import simulate
    from pervma.sim.machine import load_machine, machine_names
    from pervma.sim.results import SUMMARY_HEADER, summary_table, to_csv
    from pervma.sim.workloads import (
        BACKINGS,
        ENDS,
        SHARINGS,
        TOUCHES,
        WORKLOADS,
        get_workload,
        parse_size,
        with_task,
    )

    console = Console(width=None if sys.stdout.isatty() else 120)
    if args.list:
        for w in WORKLOADS.values():
            console.print(f"[bold]{w.name:12}[/] {w.description}", highlight=False)
        for name in machine_names():
            console.print(f"[bold]machine {name:10}[/] {load_machine(name).description}")
        return 0
    if not args.workload:
        raise UsageError("name a workload (pervma simulate --list shows them)")
    w = get_workload(args.workload)
    for flag, value, choices in (("--backing", args.backing, BACKINGS),
                                 ("--sharing", args.sharing, SHARINGS),
                                 ("--touch", args.touch, TOUCHES), ("--end", args.end, ENDS)):
        if value is not None and value not in choices:
            raise UsageError(f"{flag}: choose one of {', '.join(choices)}, got {value!r}")
    w = with_task(w, region=parse_size(args.region, "--region") if args.region else None,
                  backing=args.backing, sharing=args.sharing, touch=args.touch, end=args.end)
    if args.emit_probe_args:
        print(w.probe_args())
        return 0
    tasks = _parse_tasks(args.tasks)
    presets = list(dict.fromkeys(cliargs.name_list(args.preset, "--preset")))
    for pre in presets:
        if pre not in PRESET_NAMES:
            raise UsageError(f"unknown preset {pre!r}; choose one of {', '.join(PRESET_NAMES)}")
    if args.mode not in ("threads", "processes", "both"):
        raise UsageError(f"unknown mode {args.mode!r}; choose threads, processes or both")
    mach = load_machine(args.machine)
    for pre in presets:
        if pre.startswith("universal-up") and max(tasks) > 64:
            raise UsageError("a one-CPU preset with more than 64 tasks is not useful")
    if max(tasks) > 4 * mach.cpus:
        raise UsageError(f"at most {4 * mach.cpus} tasks on {mach.name} ({mach.cpus} CPUs)")
    _check_outputs(args)
    kinds = 2 if args.mode == "both" and len(w.modes) > 1 else 1
    total = len(presets) * len(tasks) * kinds
    part = f"simulate {w.name}"
    with Tracker(transient=True) as track:  # stderr only: never changes an output file
        track.add(part, total)
        points = simulate(w, presets, mach.name, args.mode, tasks, args.duration_ms,
                          args.seed, jobs=args.jobs, warmup_ms=args.warmup_ms,
                          min_cycles=args.min_cycles, max_window_ms=args.max_window_ms,
                          progress=lambda p: track.advance(part, f"{p.preset} {p.kind} "
                                                           f"{p.tasks}"))
    table = Table(title=f"{w.name} on {mach.name}: {'pairs' if w.unit == 'pairs' else 'faults'}/s, "
                  f"{min(p.sim_ms for p in points):.3g}-{max(p.sim_ms for p in points):.3g} ms "
                  "simulated per point; waits of the threads run",
                  caption="simulated, not measured")
    for h in SUMMARY_HEADER:
        table.add_column(h, justify="left" if h == "preset" else "right")
    for row in summary_table(points):
        table.add_row(*row)
    console.print(table)
    for p in points:
        if p.capped:
            console.print(f"note: {p.preset} {p.kind} {p.tasks}: the window reached its cap "
                          f"({p.sim_ms:g} ms) with {p.cycles} cycles completed by "
                          f"{p.simulated_tasks} tasks (--min-cycles {args.min_cycles})",
                          highlight=False)
    if args.csv:
        outfiles.write_file(args.csv, to_csv(points), args.force, "--csv")
        console.print(f"wrote {args.csv}")
    if args.plot:
        from pervma.sim.plot import save_plot

        with outfiles.atomic_file(args.plot, args.force, "--plot") as tmp:
            save_plot(points, str(tmp))  # the temporary keeps the suffix: the format
        console.print(f"wrote {args.plot}")
    if args.trace:
        from pervma.sim.api import run_point

        last = points[-1]
        start = (args.warmup_ms if args.warmup_ms is not None else max(1.0, args.duration_ms / 4))
        tp = run_point(w, last.preset, mach, last.kind, last.tasks,
                       min(args.duration_ms, 1.0), args.seed, start,
                       trace_window_ms=(start, start + 0.2))
        outfiles.write_file(args.trace, tp.trace, args.force, "--trace")
        console.print(f"wrote {args.trace} (open in https://ui.perfetto.dev)")
    if os.environ.get("PERVMA_SIM_DEBUG"):
        console.print(to_csv(points))
    return 0
