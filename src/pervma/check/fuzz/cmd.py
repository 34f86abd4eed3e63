"""``pervma fuzz`` (generate programs and explore them) and ``pervma check --program``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from pervma import cliargs
from pervma.config import PRESET_NAMES
from pervma.errors import UsageError

MAX_PROGRAMS = 10**6
MAX_BUDGET = 10**9
MAX_SEED = 2**63 - 1
MAX_SECONDS = 10**7
MAX_WORKERS = 1024
DEFAULT_PROGRAMS = 20
EXIT_INTERNAL = 70  # as pervma check: a program failed and nothing was found

FUZZ_EPILOG = """\
examples:
  pervma fuzz --seed 1 --programs 50              # 50 programs, preset universal
  pervma fuzz --seed 1 --programs 20 --bug B13 --preset universal-up
  pervma fuzz --seed 1 --programs 64 --workers 2 --out camp
  pervma check --program out/finding-000.program.json

The campaign runs in rounds of --round-size programs; each is generated afresh
or a mutation of a corpus program (one that added racing-pair coverage), drawn
from the seed, the round and the slot alone. The same --seed and --programs give
the same programs, results and corpus with any --workers, --dask or --scheduler.
--time S stops starting rounds after S seconds (the only wall-clock bound).
Each program is explored by DPOR up to --max-executions, then --pct PCT samples;
every execution is judged by the model's checks and the serial-order oracle.
Results go to a new folder (--out, default pervma-fuzz-seed<S>[-N]); an existing
one is never reused: summary.json, coverage.csv, coverage.png, corpus/, findings.

exit status: 0 nothing found, 1 a violation found, 2 usage or input error,
70 a program failed with an internal error (and nothing was found), 130
interrupted (what was found so far is saved)."""


def register(sub: Any) -> None:
    from pervma.check.fuzz.campaign import ROUND_SIZE

    p = sub.add_parser(
        "fuzz", help="generate programs and explore their interleavings",
        description="Generate programs over the model's whole API from a seed and explore "
        "each one's interleavings, keeping those that add coverage to mutate (issue #15).",
        epilog=FUZZ_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=cliargs.bounded_int(0, MAX_SEED), default=0, metavar="N")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--programs", type=cliargs.bounded_int(1, MAX_PROGRAMS), default=None,
                      metavar="N", help="programs to generate and explore (default 20)")
    stop.add_argument("--time", type=cliargs.finite_float(0, MAX_SECONDS, lo_open=True),
                      default=None, metavar="S",
                      help="start no round after S seconds (wall clock; not deterministic)")
    p.add_argument("--preset", default="universal", choices=PRESET_NAMES, metavar="P",
                   help=f"one of {', '.join(PRESET_NAMES)} (default universal)")
    p.add_argument("--bug", nargs="+", default=[], metavar="ID", type=cliargs.nonempty,
                   help="turn on bug switches (the programs drawn stay the same)")
    add_budget_args(p)
    p.add_argument("--round-size", type=cliargs.bounded_int(1, 4096), default=ROUND_SIZE,
                   metavar="N", help=f"programs per round (default {ROUND_SIZE}); part of "
                   "what a campaign's results depend on")
    p.add_argument("--workers", type=cliargs.bounded_int(1, MAX_WORKERS), default=None,
                   metavar="N", help="local worker processes, or the local Dask cluster's "
                   "workers (default: the cores available)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--dask", action="store_true",
                       help="run the programs on a local Dask cluster")
    where.add_argument("--scheduler", metavar="ADDR", type=cliargs.nonempty,
                       help="run the programs on the Dask scheduler at ADDR (tcp://host:8786)")
    p.add_argument("--out", metavar="DIR", type=cliargs.nonempty,
                   help="a new folder for the corpus, the findings and the summary")
    p.set_defaults(func=cmd_fuzz)


def add_budget_args(p: Any, dpor_default: int | None = None) -> None:
    from pervma.check.fuzz.explore import DPOR_EXECUTIONS, PCT_EXECUTIONS

    if dpor_default is None:
        p.add_argument("--max-executions", type=cliargs.bounded_int(1, MAX_BUDGET),
                       default=DPOR_EXECUTIONS, metavar="N",
                       help=f"DPOR executions per program (default {DPOR_EXECUTIONS})")
    p.add_argument("--pct", type=cliargs.bounded_int(0, MAX_BUDGET), default=PCT_EXECUTIONS,
                   metavar="N", help="PCT samples per program after an unfinished DPOR "
                   f"(default {PCT_EXECUTIONS})")


def _reserve(d: Path) -> bool:
    """Make ``d`` now, empty, so that no other campaign started meanwhile
    picks it too (the results are swapped into it at the end).  False: it
    exists.  Any other failure is left to ``prepare_dir``'s one-line error."""
    try:
        d.mkdir(parents=True)
    except FileExistsError:
        return False
    except (OSError, ValueError):
        pass
    return True


def _new_dir(out: str | None, seed: int) -> Path:
    """The campaign's new results folder, reserved at once: ``--out`` (which
    must not exist) or the first free ``pervma-fuzz-seed<S>[-N]``.  Two
    campaigns of one seed started side by side get two folders."""
    if out is not None:
        d = Path(out)
        if d.is_symlink() or not _reserve(d):
            raise UsageError(f"{d} exists; pervma fuzz writes only into a new folder "
                             "(choose another --out)")
        return d
    base = Path(f"pervma-fuzz-seed{seed}")
    d, n = base, 1
    while d.is_symlink() or not _reserve(d):
        n += 1
        d = Path(f"{base}-{n}")
    return d


def _unreserve(d: Path) -> None:
    """Remove the reserved folder if the campaign left it empty (it failed
    before writing anything)."""
    with contextlib.suppress(OSError):
        d.rmdir()


def _config(preset: str, bugs: list[str]) -> Any:
    from pervma.check.catalogue import get_bug
    from pervma.config import Config

    ids = sorted({get_bug(b).id for b in bugs})
    cfg = Config.preset(preset)
    return cfg.with_bugs(*ids) if ids else cfg, ids


class _Progress:
    """The campaign's progress on stderr: a rich bar with an ETA on a terminal
    (programs, executions/s, racing pairs, corpus, unique violations), else one
    line per round."""

    def __init__(self, total: int | None, seconds: float | None, where: str) -> None:
        self.total, self.seconds, self.where = total, seconds, where
        self.tty = sys.stderr.isatty()
        self._rich: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            # stdout's lines pass through the display only when both are the terminal
            self._rich = Progress(TextColumn("fuzz"), BarColumn(bar_width=16),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                  TextColumn("ETA"), TimeRemainingColumn(),
                                  console=Console(stderr=True), transient=True,
                                  redirect_stdout=sys.stdout.isatty(), redirect_stderr=False)
            self._rich.__enter__()
            total = self.total if self.seconds is None else self.seconds
            self._task = self._rich.add_task("fuzz", total=total, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def update(self, camp: Any) -> None:
        from pervma.check.fuzz.campaign import rate

        p = camp.curve[-1]
        done = len(camp.rows)
        of = f"/{self.total}" if self.seconds is None else ""
        if self._rich is not None:
            completed = done if self.seconds is None else min(self.seconds, p.seconds)
            self._rich.update(self._task, completed=completed, info=(
                f"{done}{of} programs {rate(camp.curve):.0f} exec/s {p.racing_pairs} pairs "
                f"corpus {p.corpus} {p.unique_violations} unique"))
            return
        info = (f"{done}{of} programs, {rate(camp.curve):.0f} executions/s, "
                f"{p.racing_pairs} racing pairs, corpus {p.corpus}, "
                f"{p.unique_violations} unique violations")
        if p.program + 1 == (p.round + 1) * camp.round_size or done == camp.programs:
            sys.stderr.write(f"fuzz: round {p.round} ({self.where}): {info}\n")
            sys.stderr.flush()


def cmd_fuzz(args: argparse.Namespace) -> int:
    from pervma import outfiles
    from pervma.check.fuzz.campaign import cores, make_executor

    cfg, bugs = _config(args.preset, args.bug)
    programs = args.programs if args.programs is not None else (
        DEFAULT_PROGRAMS if args.time is None else MAX_PROGRAMS)
    if args.scheduler is not None:
        from pervma.check.fuzz.campaign import check_address

        check_address(args.scheduler)  # a malformed address before anything is made
    out = _new_dir(args.out, args.seed)
    try:
        outfiles.prepare_dir(out, "fuzz results").abort()  # refuse an unwritable place up front
        workers = args.workers if args.workers is not None else cores()
        executor = make_executor(workers, dask=args.dask, scheduler=args.scheduler)
    except BaseException:
        _unreserve(out)
        raise
    try:
        return _campaign(args, cfg, bugs, programs, out, executor)
    except BaseException:  # the run closes it; this is for what goes wrong around it
        executor.close(abort=True)
        _unreserve(out)
        raise


def _campaign(args: argparse.Namespace, cfg: Any, bugs: list[str], programs: int, out: Path,
              executor: Any) -> int:
    from pervma import outfiles
    from pervma.check.fuzz.campaign import Campaign
    from pervma.check.fuzz.findings import Findings
    from pervma.check.fuzz.plot import plot_coverage

    findings = Findings(cfg, bugs, args.preset, dpor_executions=args.max_executions,
                        pct_executions=args.pct, seed=args.seed)
    camp = Campaign(args.seed, args.preset, bugs, findings, programs,
                    time_limit=args.time, round_size=args.round_size,
                    dpor_executions=args.max_executions, pct_executions=args.pct)
    print(f"fuzz: seed {args.seed}, preset {args.preset}"
          + (f", bugs {','.join(bugs)}" if bugs else "")
          + f", rounds of {args.round_size} programs on {executor.where}")
    sys.stdout.flush()

    with _Progress(None if args.time is not None else programs, args.time,
                   executor.where) as progress:
        def shown(i: int, prog: Any, origin: Any, outcome: Any, row: dict[str, Any]) -> None:
            res, err = outcome
            head = f"program {i} ({origin})"
            if res is None:
                print(f"{head}: {err}")
            else:
                ncalls = sum(len(t.calls) for t in prog.threads)
                print(f"{head}: {len(prog.threads)} threads, {ncalls} calls: {res.summary()}")
                if res.violation is not None:
                    print(prog.describe())
                    print(res.counterexample)
                    fid = row.get("finding")
                    print(f"program {i}: {fid}" if fid is not None else
                          f"program {i}: the same schedule fails with every bug switch off: "
                          "not counted (summary.json: not_caused_by_switch)")
            sys.stdout.flush()
            progress.update(camp)

        camp.run(executor, on_program=shown)
    summary = camp.summary(None if args.time is not None else programs)
    summary["not_caused_by_switch"] = findings.not_caused
    with outfiles.staged_dir(out, "fuzz results") as st:
        (st.path / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (st.path / "coverage.csv").write_text(camp.csv())
        plot_coverage(camp.curve, st.path / "coverage.png",
                      f"pervma fuzz --seed {args.seed} --preset {args.preset}"
                      + (f" --bug {' '.join(bugs)}" if bugs else ""))
        camp.corpus.write(st.path)
        camp.findings.write(st.path)
    violating = sum(1 for r in camp.rows if r.get("violation"))
    failed = sum(1 for r in camp.rows if "error" in r)
    print(f"{len(camp.rows)} programs, {violating} with a violation: "
          f"{len(camp.unique)} unique violations ({camp.hits} hits); "
          f"{len(camp.corpus.cover)} racing pairs covered, {len(camp.corpus)} in the corpus; "
          + (f"{failed} failed (internal error or a lost worker); " if failed else "")
          + f"results in {out}/")
    if camp.stopped == "interrupted":
        sys.stderr.write(f"pervma: interrupted after {len(camp.rows)} programs "
                         f"(saved in {out}/)\n")
        return 130
    return 1 if camp.unique else EXIT_INTERNAL if failed else 0


def check_program(args: argparse.Namespace) -> int:
    """``pervma check --program FILE``: explore one program under each preset."""
    from pervma.check.fuzz.explore import explore_program
    from pervma.check.fuzz.program import loads
    from pervma.check.fuzz.world import FuzzWorld
    from pervma.sched import RunScope, run_scope_active

    if args.scenarios or args.all or args.list:
        raise UsageError("--program explores one program; name no scenario, --all or --list")
    if args.config is not None:
        raise UsageError("--program takes --preset, not --config")
    if args.strategy != "dpor" or args.stateless or args.optimal or args.jobs > 1 \
            or args.dask or args.scheduler is not None:
        raise UsageError("--program runs DPOR then PCT in one process; drop --strategy, "
                         "--stateless, --optimal, --jobs, --dask and --scheduler")
    prog = loads(cliargs.read_text(args.program, "--program"), args.program)
    presets = ["universal"] if args.preset is None else cliargs.name_list(args.preset, "--preset")
    code = 0
    for preset in presets:
        if preset not in PRESET_NAMES:
            raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
        cfg, bugs = _config(preset, args.bug)
        with run_scope_active(RunScope()):
            FuzzWorld(prog, cfg, track=False)  # a setup that cannot be built: one line, exit 2
        res = explore_program(prog, cfg, dpor_executions=args.max_executions or 1000,
                              pct_executions=args.pct, seed=args.seed,
                              minimise=not args.no_minimise)
        bug_txt = f" bugs={','.join(bugs)}" if bugs else ""
        print(f"{args.program} [{preset}{bug_txt}] {res.strategy}: {res.summary()}")
        if res.violation is not None:
            print(res.counterexample)
            code = 1
        elif not res.complete and code == 0:
            code = 3
    return code
