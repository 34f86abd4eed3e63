"""``pervma check``, ``pervma replay`` and ``pervma bugs``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TypeVar

from pervma import cliargs
from pervma.config import PRESET_NAMES, Config
from pervma.errors import ConfigError, UsageError

_T = TypeVar("_T")

# Range limits of the numeric arguments (beyond them a run is meaningless or overflows).
MAX_EXECUTIONS = 10**9
MAX_TIME_S = 7 * 24 * 3600.0
MAX_SEED = 2**63 - 1
MAX_PCT_DEPTH = 20
MAX_BOUND = 100

CHECK_EPILOG = """\
examples:
  pervma check fault-vs-munmap                  # DPOR, preset universal
  pervma check --all --preset legacy,universal,universal-up,universal-up-nopreempt --jobs 2
  pervma check --bug B04 --trace-out out/       # find, minimise and save the fork race
  pervma check fork-vs-fault --strategy pct --max-executions 500 --seed 7
  pervma check --list

exit status: 0 complete and clean, 1 violation found, 2 usage or input/output
error, 3 clean but incomplete (a budget, bound or the livelock bound was hit),
70 a run failed with an internal error (and no violation was found), 130 interrupted
(the finished runs are printed first)."""

REPLAY_EPILOG = """\
example:
  pervma check --bug B04 --trace-out out/ ; pervma replay out/fork-vs-fault.replay.json

exit status: 1 when the recorded violation reproduces, 0 when it does not, 2 usage
error or a malformed replay file, 70 internal error, 130 interrupted."""

BUGS_EPILOG = "example: pervma bugs --json"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check", help="explore thread interleavings of scenarios and report violations",
        description="Explore interleavings of the model's scenarios (source-DPOR with sleep "
        "sets by default) and report whether every interleaving is clean.",
        epilog=CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", type=cliargs.nonempty,
                   help="scenario names")
    p.add_argument("--all", action="store_true", help="every scenario of the library")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--program", metavar="FILE", type=cliargs.nonempty,
                   help="explore a generated program (pervma fuzz's JSON) instead of scenarios: "
                   "DPOR up to --max-executions (default 1000), then --pct PCT samples")
    p.add_argument("--pct", type=cliargs.bounded_int(0, MAX_EXECUTIONS), default=100,
                   metavar="N", help="with --program: PCT samples after an unfinished DPOR "
                   "(default 100)")
    p.add_argument("--preset", default=None, metavar="P[,P...]", type=cliargs.nonempty,
                   help=f"presets ({', '.join(PRESET_NAMES)}); default universal")
    p.add_argument("--config", metavar="FILE", type=cliargs.nonempty,
                   help="a .config fragment instead of a preset")
    p.add_argument("--bug", nargs="+", default=[], metavar="ID", type=cliargs.nonempty,
                   help="turn on bug switches; alone, runs each bug's own scenario")
    p.add_argument("--strategy", default="dpor", choices=("dpor", "bounded", "random", "pct"))
    p.add_argument("--stateless", action="store_true",
                   help="dpor without the table of explored states (one execution per "
                   "Mazurkiewicz trace, as before issue #12)")
    p.add_argument("--no-symmetry", action="store_true",
                   help="the stateful search keeps apart states that differ only in which of "
                   "a scenario's interchangeable threads is which")
    p.add_argument("--optimal", action="store_true",
                   help="with --stateless: Optimal-DPOR with wakeup trees (fewer sleep-set-blocked "
                   "executions; one process)")
    p.add_argument("--memory-model", choices=("sc", "lkmm"), default=None,
                   help="sc (default): every read reads the latest write; lkmm: reads of the "
                   "weak locations may read older writes as LKMM allows (stateful dpor, one "
                   "process; a bug run alone uses its catalogue entry's model)")
    p.add_argument("--max-executions", type=cliargs.bounded_int(1, MAX_EXECUTIONS),
                   metavar="N")
    p.add_argument("--time", type=cliargs.finite_float(0, MAX_TIME_S, lo_open=True),
                   metavar="S", help="opt-in wall-clock cap per run, seconds (off by default: a run "
                   "it cuts is incomplete and machine-dependent)")
    p.add_argument("--seed", type=cliargs.bounded_int(0, MAX_SEED), default=0, metavar="N")
    p.add_argument("--depth", type=cliargs.bounded_int(1, MAX_PCT_DEPTH), default=3,
                   metavar="D", help=f"PCT depth d, 1..{MAX_PCT_DEPTH} (default 3)")
    p.add_argument("--max-bound", type=cliargs.bounded_int(0, MAX_BOUND), default=3,
                   metavar="B",
                   help="largest preemption bound for --strategy bounded (default 3)")
    p.add_argument("--jobs", type=cliargs.jobs, default=1, metavar="N",
                   help="worker processes, at most the number of CPUs (default 1)")
    dask = p.add_mutually_exclusive_group()
    dask.add_argument("--dask", action="store_true",
                      help="run the runs on a local Dask cluster of --jobs workers")
    dask.add_argument("--scheduler", metavar="ADDR", type=cliargs.nonempty,
                      help="run the runs on the Dask scheduler at ADDR (tcp://host:8786)")
    p.add_argument("--trace-out", metavar="DIR", type=cliargs.nonempty,
                   help="write <scenario>.replay.json and <scenario>.trace.json here "
                   "(<scenario>.<preset>.* with several presets)")
    p.add_argument("--force", action="store_true",
                   help="overwrite replay/trace files of the same names in --trace-out")
    p.add_argument("--no-minimise", action="store_true", help="show the schedule as found")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--trace-stats", action="store_true",
                   help="also count distinct Mazurkiewicz traces and the redundancy "
                   "(executions per distinct trace); costs time per execution")
    p.set_defaults(func=cmd_check)

    r = sub.add_parser("replay", help="re-run a recorded counterexample exactly",
                       description="Replay a .replay.json written by 'pervma check "
                       "--trace-out' step by step.", epilog=REPLAY_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("file", metavar="FILE", type=cliargs.nonempty)
    r.add_argument("--trace-out", metavar="DIR", type=cliargs.nonempty,
                   help="also write the Perfetto trace <name>.trace.json here")
    r.add_argument("--force", action="store_true",
                   help="overwrite an existing trace file of that name")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_replay)

    b = sub.add_parser("bugs", help="list the catalogue of historical bugs",
                       description="The historical per-VMA locking bugs the checker "
                       "rediscovers, with the scenario that exposes each.",
                       epilog=BUGS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bugs)


def _presets(text: str | None) -> list[str]:
    if text is None:
        return ["universal"]
    out: list[str] = []
    for name in cliargs.name_list(text, "--preset"):
        if name in out:
            continue
        if name not in PRESET_NAMES:
            raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
        out.append(name)
    return out


def _unique(items: list[_T]) -> list[_T]:
    return list(dict.fromkeys(items))


def cmd_check(args: argparse.Namespace) -> int:
    from pervma.check.catalogue import get_bug
    from pervma.check.scenario import all_scenarios, get_scenario

    if args.program is not None:
        from pervma.check.fuzz.cmd import check_program

        return check_program(args)
    if args.list:
        scs = all_scenarios(include_toys=True)
        for sc in sorted(scs, key=lambda s: (bool(s.tags), s.tags)):
            extra = f" (bug {sc.bug})" if sc.bug else ""
            tag = f" [{', '.join(sc.tags)}]" if sc.tags else ""
            print(f"{sc.name:42} {sc.doc}{extra}{tag}")
        return 0
    bugs = _unique([get_bug(b).id for b in args.bug])
    config = None
    config_text = None
    if args.config is not None:
        if args.preset is not None:
            raise UsageError("--config and --preset are exclusive; use one")
        config_text = cliargs.read_text(args.config, "--config")
        try:
            config = Config.from_fragment(config_text)
        except ConfigError as exc:
            raise UsageError(f"{args.config}: {exc}") from None
    presets = _presets(args.preset)

    pairs: list[tuple[str, str]] = []
    if args.all:
        names = [s.name for s in all_scenarios()]
    else:
        names = _unique([get_scenario(n).name for n in args.scenarios])
    if not names and not bugs:
        raise UsageError("name a scenario, --all or --bug ID (see 'pervma check --list')")
    if args.stateless and args.strategy != "dpor":
        raise UsageError(f"--stateless is a form of --strategy dpor, not of {args.strategy}")
    if args.optimal and not args.stateless:
        raise UsageError("--optimal is a form of the stateless search: add --stateless")
    if args.memory_model == "lkmm" and (args.strategy != "dpor" or args.stateless):
        raise UsageError("--memory-model lkmm runs the stateful dpor search in one process: "
                         "drop --strategy, --stateless, --optimal and --jobs")
    if names:
        for n in names:
            sc = get_scenario(n)
            for p in presets:
                if args.all and p not in sc.presets:
                    continue
                pairs.append((n, p))
    else:
        for b in bugs:
            e = get_bug(b)
            for p in ([e.preset] if args.preset is None else presets):
                pairs.append((e.scenario, p))
    pairs = _unique(pairs)
    if not pairs:
        raise UsageError(f"no scenario of --all is meant for preset(s) {', '.join(presets)}; "
                         "name the scenarios to run them anyway")
    common: dict[str, Any] = dict(
        strategy=args.strategy, max_executions=args.max_executions, time_limit=args.time,
        seed=args.seed, trace_out=args.trace_out, minimise=not args.no_minimise,
        pct_depth=args.depth, max_bound=args.max_bound, config=config, config_text=config_text,
        force=args.force, trace_stats=args.trace_stats, stateless=args.stateless,
        optimal=args.optimal, symmetric=not args.no_symmetry)
    kws: list[dict[str, Any]] = []
    for n, p in pairs:
        own_bugs = bugs if names else [b for b in bugs if get_bug(b).scenario == n]
        model = args.memory_model or (
            "lkmm" if not names and any(get_bug(b).memory_model == "lkmm" for b in own_bugs)
            else "sc")
        kws.append(dict(common, scenario=n, preset=p, bugs=own_bugs, memory_model=model))
    if len(kws) == 1 and kws[0]["memory_model"] == "lkmm" and args.jobs > 1:
        raise UsageError("--memory-model lkmm runs the stateful dpor search in one process: "
                         "--jobs spreads several runs, not one")
    if args.trace_out is not None:
        from pervma.check.api import trace_stems
        from pervma.check.output import check_files

        stems = trace_stems(kws)
        check_files(args.trace_out, stems, args.force)  # before any run starts
        for kw, stem in zip(kws, stems, strict=True):
            kw["trace_stem"] = stem
    from pervma.check.api import Interrupted

    printer = _Printer(args.json)
    try:
        results = _execute(kws, args, printer.finished)
    except Interrupted as intr:
        printer.rest(intr.results)
        if args.json:
            print(json.dumps({"results": [r.to_json() for r in intr.results],
                              "interrupted": True, "exit_code": 130}, indent=1))
        sys.stderr.write(f"pervma: interrupted; {len(intr.results)} of {intr.total} runs "
                         "finished" + (" (shown above)\n" if intr.results else "\n"))
        return 130
    code = exit_code(results)
    printer.rest(results)
    if args.json:
        print(json.dumps({"results": [r.to_json() for r in results], "exit_code": code},
                         indent=1))
    else:
        _totals(results)
    failed = [r for r in results if r.error is not None]
    for r in failed:
        if r.error_traceback:
            from pervma.cli import save_traceback

            path = save_traceback(r.error_traceback)
            sys.stderr.write(f"pervma: {r.scenario} [{r.preset}] failed: {r.error}; "
                             f"traceback saved to {path}\n")
    out_err = [r.output_error for r in results if r.output_error]
    for e in out_err:
        sys.stderr.write(f"pervma: {e}\n")
    return 2 if out_err else code


def exit_code(results: list[Any]) -> int:
    """1 if any run found a violation; else 70 if any run failed; else 3 if any
    is incomplete; else 0."""
    if any(r.violation for r in results):
        return 1
    if any(r.error is not None for r in results):
        return 70
    return 0 if all(r.complete for r in results) else 3


class _Printer:
    """Prints each run's result as soon as it and every run before it finished
    (text mode), so an interrupted ``check --all`` has shown what finished."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.done: dict[int, Any] = {}
        self.shown = 0

    def finished(self, i: int, r: Any) -> None:
        self.done[i] = r
        while not self.quiet and self.shown in self.done:
            _print_result(self.done[self.shown])
            self.shown += 1
        sys.stdout.flush()

    def rest(self, results: list[Any]) -> None:
        """Print the finished results not shown yet (in order)."""
        if self.quiet:
            return
        shown = {id(r) for i, r in self.done.items() if i < self.shown}
        for r in results:
            if id(r) not in shown:
                _print_result(r)
        sys.stdout.flush()


def _print_result(r: Any) -> None:
    print(r.summary())
    if r.violation:
        print(r.counterexample)
    for note in r.notes:
        print(f"  note: {note}")
    for path in r.trace_paths:
        print(f"  wrote {path}")


def _totals(results: list[Any]) -> None:
    if len(results) > 1:
        bad = sum(1 for r in results if r.violation)
        inc = sum(1 for r in results if not r.violation and not r.complete)
        total = sum(r.elapsed for r in results)
        failed = sum(1 for r in results if not r.violation and r.error is not None)
        inc -= failed
        print(f"{len(results)} runs: {len(results) - bad - inc - failed} complete and clean, "
              f"{bad} with a violation, {inc} incomplete, {failed} failed; "
              f"{sum(r.executions for r in results)} executions in {total:.1f}s")


def _execute(kws: list[dict[str, Any]], args: argparse.Namespace,
             on_result: Any = None) -> list[Any]:
    from pervma.check import api

    jobs = args.jobs
    if args.dask or args.scheduler is not None:
        return _run_with_progress(kws, jobs, on_result, lambda kws, jobs, done: _run_on_dask(
            kws, jobs, args.scheduler, done))
    if len(kws) == 1 and jobs > 1 and args.strategy != "bounded":
        # One run over several processes: the same executions as --jobs 1
        # (pervma.check.parallel); its failure is its result.
        try:
            return [api.run_guarded(dict(kws[0], jobs=jobs))]
        except KeyboardInterrupt:  # parts of one run are not results: none finished
            raise api.interrupted([], 1) from None
    if len(kws) > 1:
        return _run_with_progress(kws, jobs, on_result)
    if not sys.stderr.isatty() or args.json:
        return api.run_many(kws, jobs, on_result=on_result)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), transient=True, console=_err_console()) as prog:
        task = prog.add_task(f"check {kws[0]['scenario']}", total=args.max_executions,
                             info="")

        def progress(stats: Any) -> None:
            prog.update(task, completed=stats.executions + stats.pruned,
                        info=f"{stats.executions} executions, {stats.pruned} pruned")

        return [api.run_guarded(kws[0], progress=progress)]


def _run_with_progress(kws: list[dict[str, Any]], jobs: int, on_result: Any,
                       run_many: Any = None) -> list[Any]:
    """Several runs, one progress unit each (pervma.progress: stderr only);
    each run's failure is its own result (api.run_many)."""
    from pervma.check import api
    from pervma.progress import Tracker

    run_many = run_many or api.run_many

    with Tracker(transient=True) as track:
        track.add("check", len(kws))

        def finished(i: int, r: Any) -> None:
            track.advance("check", f"{r.scenario} [{r.preset}]")
            if on_result:
                on_result(i, r)

        return run_many(kws, jobs, finished)


def _run_on_dask(kws: list[dict[str, Any]], jobs: int, scheduler: str | None,
                 on_result: Any) -> list[Any]:
    """The runs on Dask (the fuzz campaign's executor): a local cluster of
    ``jobs`` workers or the scheduler at ``scheduler``; results in order."""
    from pervma.check import api
    from pervma.check.fuzz.campaign import DaskExecutor

    ex = DaskExecutor(jobs, scheduler)
    results: list[Any] = []
    try:
        for i, r in enumerate(ex.map(api._worker, kws, api._failed)):
            results.append(r)
            on_result(i, r)
    except KeyboardInterrupt:
        ex.close(abort=True)
        raise api.interrupted(results, len(kws)) from None
    ex.close()
    return results


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def cmd_replay(args: argparse.Namespace) -> int:
    from pervma.check.api import replay_file, replay_stem
    from pervma.check.output import file_names

    if args.trace_out is not None:  # validated before the replay runs
        from pervma import outfiles

        outfiles.check_file(file_names(args.trace_out, replay_stem(args.file))[1], args.force,
                            "--trace-out file", create_parent=True)
    res = replay_file(args.file, trace_out=args.trace_out, force=args.force)
    code = 1 if res.reproduced else 0
    if args.json:
        print(json.dumps({"reproduced": res.reproduced,
                          "expected": {"kind": res.expected[0], "message": res.expected[1]},
                          "got": None if res.got is None else
                          {"kind": res.got[0], "message": res.got[1]},
                          "warnings": res.warnings, "trace_paths": res.trace_paths,
                          "exit_code": code}, indent=1))
        return code
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(res.text)
    print("reproduced" if res.reproduced else "did not reproduce")
    return code


def cmd_bugs(args: argparse.Namespace) -> int:
    from pervma.check.catalogue import CATALOGUE, model_switches

    switches = model_switches()
    rows = []
    for e in CATALOGUE.values():
        rows.append({"id": e.id, "title": e.title, "affected": e.affected, "fix": e.fix,
                     "mutation": e.mutation, "scenario": e.scenario, "preset": e.preset,
                     "switch_in_model": e.id in switches,
                     "model_site": switches.get(e.id)})
    if args.json:
        print(json.dumps({"bugs": rows}, indent=1))
        return 0
    for r in rows:
        flag = "" if r["switch_in_model"] else "  [switch missing in kernel/bugs.py]"
        print(f"{r['id']}  {r['title']}{flag}")
        print(f"      affected {r['affected']}; fix: {r['fix']}")
        print(f"      mutation: {r['mutation']}")
        print(f"      run: pervma check --bug {r['id']}   (scenario {r['scenario']}, "
              f"preset {r['preset']})")
    return 0
