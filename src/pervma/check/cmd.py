"""``pervma check``, ``pervma replay`` and ``pervma bugs``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pervma.config import PRESET_NAMES, Config
from pervma.errors import ConfigError, UsageError

CHECK_EPILOG = """\
examples:
  pervma check fault-vs-munmap                  # DPOR, preset universal
  pervma check --all --preset legacy,universal,universal-up,universal-up-nopreempt --jobs 2
  pervma check --bug B04 --trace-out out/       # find, minimise and save the fork race
  pervma check fork-vs-fault --strategy pct --max-executions 500 --seed 7
  pervma check --list

exit status: 0 complete and clean, 1 violation found, 2 usage error,
3 clean but incomplete (a budget, bound or the livelock bound was hit)."""

REPLAY_EPILOG = """\
example:
  pervma check --bug B04 --trace-out out/ ; pervma replay out/fork-vs-fault.replay.json

exit status: 1 when the recorded violation reproduces, 0 when it does not, 2 usage error."""

BUGS_EPILOG = "example: pervma bugs --json"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check", help="explore thread interleavings of scenarios and report violations",
        description="Explore interleavings of the model's scenarios (source-DPOR with sleep "
        "sets by default) and report whether every interleaving is clean.",
        epilog=CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario names")
    p.add_argument("--all", action="store_true", help="every scenario of the library")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--preset", default=None, metavar="P[,P...]",
                   help=f"presets ({', '.join(PRESET_NAMES)}); default universal")
    p.add_argument("--config", metavar="FILE", help="a .config fragment instead of a preset")
    p.add_argument("--bug", nargs="+", default=[], metavar="ID",
                   help="turn on bug switches; alone, runs each bug's own scenario")
    p.add_argument("--strategy", default="dpor", choices=("dpor", "bounded", "random", "pct"))
    p.add_argument("--max-executions", type=int, metavar="N")
    p.add_argument("--time", type=float, metavar="S", help="time limit per run, seconds")
    p.add_argument("--seed", type=int, default=0, metavar="N")
    p.add_argument("--depth", type=int, default=3, metavar="D", help="PCT depth d (default 3)")
    p.add_argument("--max-bound", type=int, default=3, metavar="B",
                   help="largest preemption bound for --strategy bounded (default 3)")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes")
    p.add_argument("--trace-out", metavar="DIR",
                   help="write <scenario>.replay.json and <scenario>.trace.json here")
    p.add_argument("--no-minimise", action="store_true", help="show the schedule as found")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_check)

    r = sub.add_parser("replay", help="re-run a recorded counterexample exactly",
                       description="Replay a .replay.json written by 'pervma check "
                       "--trace-out' step by step.", epilog=REPLAY_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("file", metavar="FILE")
    r.add_argument("--trace-out", metavar="DIR", help="also write the Perfetto trace here")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_replay)

    b = sub.add_parser("bugs", help="list the catalogue of historical bugs",
                       description="The historical per-VMA locking bugs the checker "
                       "rediscovers, with the scenario that exposes each.",
                       epilog=BUGS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bugs)


def _presets(text: str | None) -> list[str]:
    if not text:
        return ["universal"]
    out = []
    for name in text.split(","):
        name = name.strip()
        if name not in PRESET_NAMES:
            raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
        out.append(name)
    return out


def _positive(value: int | float | None, flag: str) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{flag} wants a positive number, got {value}")


def cmd_check(args: argparse.Namespace) -> int:
    from pervma.check.catalogue import get_bug
    from pervma.check.scenario import all_scenarios, get_scenario

    if args.list:
        scs = all_scenarios(include_toys=True)
        for sc in sorted(scs, key=lambda s: (bool(s.tags), s.tags)):
            extra = f" (bug {sc.bug})" if sc.bug else ""
            tag = f" [{', '.join(sc.tags)}]" if sc.tags else ""
            print(f"{sc.name:42} {sc.doc}{extra}{tag}")
        return 0
    _positive(args.max_executions, "--max-executions")
    _positive(args.time, "--time")
    _positive(args.jobs, "--jobs")
    _positive(args.depth, "--depth")
    if args.max_bound < 0:
        raise UsageError("--max-bound wants a number >= 0")
    bugs = [get_bug(b).id for b in args.bug]
    config = None
    config_text = None
    if args.config:
        if args.preset:
            raise UsageError("--config and --preset are exclusive; use one")
        try:
            config_text = Path(args.config).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read --config {args.config}: {exc.strerror}") from None
        try:
            config = Config.from_fragment(config_text)
        except ConfigError as exc:
            raise UsageError(f"{args.config}: {exc}") from None
    presets = _presets(args.preset)

    pairs: list[tuple[str, str]] = []
    if args.all:
        names = [s.name for s in all_scenarios()]
    else:
        names = [get_scenario(n).name for n in args.scenarios]
    if not names and not bugs:
        raise UsageError("name a scenario, --all or --bug ID (see 'pervma check --list')")
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
    common: dict[str, Any] = dict(
        strategy=args.strategy, max_executions=args.max_executions, time_limit=args.time,
        seed=args.seed, trace_out=args.trace_out, minimise=not args.no_minimise,
        pct_depth=args.depth, max_bound=args.max_bound, config=config, config_text=config_text)
    kws: list[dict[str, Any]] = []
    for n, p in pairs:
        own_bugs = bugs if names else [b for b in bugs if get_bug(b).scenario == n]
        kws.append(dict(common, scenario=n, preset=p, bugs=own_bugs))
    results = _execute(kws, args)
    code = 0
    if any(r.violation for r in results):
        code = 1
    elif not all(r.complete for r in results):
        code = 3
    if args.json:
        print(json.dumps({"results": [r.to_json() for r in results], "exit_code": code},
                         indent=1))
        return code
    for r in results:
        print(r.summary())
        if r.violation:
            print(r.counterexample)
        for note in r.notes:
            print(f"  note: {note}")
        for path in r.trace_paths:
            print(f"  wrote {path}")
    if len(results) > 1:
        bad = sum(1 for r in results if r.violation)
        inc = sum(1 for r in results if not r.violation and not r.complete)
        total = sum(r.elapsed for r in results)
        print(f"{len(results)} runs: {len(results) - bad - inc} complete and clean, {bad} with a "
              f"violation, {inc} incomplete; {sum(r.executions for r in results)} executions "
              f"in {total:.1f}s")
    return code


def _execute(kws: list[dict[str, Any]], args: argparse.Namespace) -> list[Any]:
    from pervma.check import api

    jobs = args.jobs
    if len(kws) == 1 and jobs > 1 and args.strategy in ("random", "pct"):
        return [api.merge_samples(api.run_many(api.split_sampling(kws[0], jobs), jobs))]
    if len(kws) == 1 and jobs > 1 and args.strategy == "dpor":
        return [api.merge_dpor(api.run_many(api.split_dpor(kws[0]), jobs))]
    if len(kws) > 1:
        return _run_with_progress(kws, jobs)
    if not sys.stderr.isatty() or args.json:
        return api.run_many(kws, jobs)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), transient=True, console=_err_console()) as prog:
        task = prog.add_task(f"check {kws[0]['scenario']}", total=args.max_executions,
                             info="")

        def progress(stats: Any) -> None:
            prog.update(task, completed=stats.executions + stats.pruned,
                        info=f"{stats.executions} executions, {stats.pruned} pruned")

        return [api.run_check(**kws[0], progress=progress)]


def _run_with_progress(kws: list[dict[str, Any]], jobs: int) -> list[Any]:
    """Several runs, one progress unit each (pervma.progress: stderr only)."""
    from pervma.check import api
    from pervma.progress import Tracker

    results = []
    with Tracker(transient=True) as track:
        track.add("check", len(kws))
        if jobs > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=jobs) as pool:
                for r in pool.map(api._run_kw, kws):
                    results.append(r)
                    track.advance("check", f"{r.scenario} [{r.preset}]")
        else:
            for kw in kws:
                results.append(api.run_check(**kw))
                track.advance("check", f"{kw['scenario']} [{kw['preset']}]")
    return results


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def cmd_replay(args: argparse.Namespace) -> int:
    from pervma.check.api import replay_file

    res = replay_file(args.file, trace_out=args.trace_out)
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
