"""``pervma fuzz`` (generate programs and explore them) and ``pervma check --program``."""

from __future__ import annotations

import argparse
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

FUZZ_EPILOG = """\
examples:
  pervma fuzz --seed 1 --programs 50              # 50 programs, preset universal
  pervma fuzz --seed 1 --programs 20 --bug B13 --preset universal-up
  pervma check --program out/finding-000.program.json

Each program is explored by DPOR up to --max-executions, then --pct PCT samples;
every execution is judged by the model's checks and the serial-order oracle.
Results go to a new folder (--out, default pervma-fuzz-seed<S>[-N]); an existing
one is never reused.

exit status: 0 nothing found, 1 a violation found, 2 usage or input error,
130 interrupted (what was found so far is saved)."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fuzz", help="generate programs and explore their interleavings",
        description="Generate programs over the model's whole API from a seed and explore "
        "each one's interleavings (issue #15).", epilog=FUZZ_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=cliargs.bounded_int(0, MAX_SEED), default=0, metavar="N")
    p.add_argument("--programs", type=cliargs.bounded_int(1, MAX_PROGRAMS), default=20,
                   metavar="N", help="programs to generate and explore (default 20)")
    p.add_argument("--preset", default="universal", choices=PRESET_NAMES, metavar="P",
                   help=f"one of {', '.join(PRESET_NAMES)} (default universal)")
    p.add_argument("--bug", nargs="+", default=[], metavar="ID", type=cliargs.nonempty,
                   help="turn on bug switches (the programs drawn stay the same)")
    add_budget_args(p)
    p.add_argument("--out", metavar="DIR", type=cliargs.nonempty,
                   help="a new folder for the findings and the summary")
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


def _new_dir(out: str | None, seed: int) -> Path:
    if out is not None:
        d = Path(out)
        if d.exists() or d.is_symlink():
            raise UsageError(f"{d} exists; pervma fuzz writes only into a new folder "
                             "(choose another --out)")
        return d
    base = Path(f"pervma-fuzz-seed{seed}")
    d, n = base, 1
    while d.exists() or d.is_symlink():
        n += 1
        d = Path(f"{base}-{n}")
    return d


def _config(preset: str, bugs: list[str]) -> Any:
    from pervma.check.catalogue import get_bug
    from pervma.config import Config

    ids = sorted({get_bug(b).id for b in bugs})
    cfg = Config.preset(preset)
    return cfg.with_bugs(*ids) if ids else cfg, ids


def cmd_fuzz(args: argparse.Namespace) -> int:
    from pervma import outfiles
    from pervma.check.fuzz.explore import explore_program
    from pervma.check.fuzz.findings import Findings
    from pervma.check.fuzz.generate import generate
    from pervma.config import Config

    cfg, bugs = _config(args.preset, args.bug)
    gen_cfg = Config.preset(args.preset)  # the draw never depends on --bug
    out = _new_dir(args.out, args.seed)
    outfiles.prepare_dir(out, "fuzz results").abort()  # refuse an unwritable place up front
    rows: list[dict[str, Any]] = []
    findings = Findings(cfg, bugs, args.preset, dpor_executions=args.max_executions,
                        pct_executions=args.pct, seed=args.seed)
    cover: set[tuple[str, bool, bool]] = set()
    interrupted = False
    try:
        for i in range(args.programs):
            prog = generate(args.seed, i, gen_cfg)
            res = explore_program(prog, cfg, dpor_executions=args.max_executions,
                                  pct_executions=args.pct, seed=args.seed)
            ncalls = sum(len(t.calls) for t in prog.threads)
            new = len(res.coverage - cover)
            cover |= res.coverage
            print(f"program {i}: {len(prog.threads)} threads, {ncalls} calls: {res.summary()}")
            rows.append({"program": i, "violation": None if res.violation is None else
                         {"kind": res.violation[0], "message": res.violation[1]},
                         "executions": res.executions, "complete": res.complete,
                         "new_racing_pairs": new, "finding": None,
                         "oracle": {"judged": res.oracle.judged, "skipped": res.oracle.skipped,
                                    "undecided": res.oracle.undecided}})
            if res.violation is not None:
                print(prog.describe())
                print(res.counterexample)
                fid = findings.add(i, prog, res)
                rows[-1]["finding"] = fid
                if fid is None:
                    print(f"program {i}: the same schedule fails with every bug switch off: "
                          "not counted (summary.json: not_caused_by_switch)")
                else:
                    print(f"program {i}: {fid}")
            sys.stdout.flush()
    except KeyboardInterrupt:
        interrupted = True
    summary = {"schema": "pervma-fuzz-summary", "version": 1, "seed": args.seed,
               "preset": args.preset, "bugs": bugs, "programs_asked": args.programs,
               "programs_done": len(rows), "dpor_executions": args.max_executions,
               "pct_executions": args.pct, "interrupted": interrupted, "results": rows,
               "findings": findings.summary(),
               "not_caused_by_switch": findings.not_caused,
               "coverage": [f"{k}:{'w' if a else 'r'}/{'w' if b else 'r'}"
                            for k, a, b in sorted(cover)]}
    with outfiles.staged_dir(out, "fuzz results") as st:
        (st.path / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        findings.write(st.path)
    print(f"{len(rows)} programs, {len(findings.findings)} unique violations "
          f"({findings.hits} hits), {len(cover)} racing pairs covered; results in {out}/")
    if interrupted:
        sys.stderr.write(f"pervma: interrupted after {len(rows)} of {args.programs} programs "
                         f"(saved in {out}/)\n")
        return 130
    return 1 if findings.findings else 0


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
    if args.strategy != "dpor" or args.stateless or args.optimal or args.jobs > 1:
        raise UsageError("--program runs DPOR then PCT in one process; drop --strategy, "
                         "--stateless, --optimal and --jobs")
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
