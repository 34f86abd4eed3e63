"""``pervma report``: the whole story in one self-contained HTML report."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from pervma import cliargs

EPILOG = """\
examples:
  pervma report                       # everything, into pervma-report/ (~1.5 min on 2 cores)
  pervma report --quick               # fewer presets and smaller budgets (~25 s on 2 cores)
  pervma report --out /tmp/r          # into another folder (missing or empty)

Writes DIR/index.html (self-contained: inline SVG, no scripts, no network),
DIR/*.csv, DIR/traces/*.json (replay with 'pervma replay FILE') and
DIR/.pervma-manifest (the files pervma wrote).  The report is built next to DIR
and put in place only when complete; an earlier report's files (those its
manifest lists) are replaced and any other file in DIR is kept.  A non-empty
folder without a manifest is refused: choose a new folder.
Progress goes to stderr: bars with an ETA on a terminal, otherwise one line
'done: PART (i/n)' per finished part.

exit status: 0 every section produced, 1 a section's engine failed (its error
is shown in the report) or the unmodified model violated an invariant,
2 usage or input/output error (e.g. an unwritable --out), 70 internal error,
130 interrupted (the previous report is left as it was)."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report", help="the HTML report: cost, correctness, performance, environment",
        description="Run the layout calculator, the checker (every scenario under every "
        "preset, and the bug catalogue) and the simulator (key workloads, legacy vs "
        "universal, threads vs processes, with real measurements overlaid) on defaults, "
        "and write one HTML report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="pervma-report", metavar="DIR", type=cliargs.nonempty,
                   help="output folder (default pervma-report/)")
    p.add_argument("--quick", action="store_true",
                   help="fewer presets, workloads and task counts, smaller budgets")
    p.add_argument("--jobs", type=cliargs.jobs, default=None, metavar="N",
                   help="worker processes for the checker and the simulator, at most the "
                   "number of CPUs (default: the number of CPUs)")
    p.add_argument("--force", action="store_true",
                   help="kept for old scripts; a folder is never forced (see above)")
    p.add_argument("--btf", metavar="PATH", type=cliargs.nonempty, help=argparse.SUPPRESS)
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests only
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pervma.progress import Tracker
    from pervma.report.runner import build_report
    from pervma.report.settings import settings_for

    if args.btf is not None:  # read whole by the layout calculator: bounded here
        cliargs.check_input_file(args.btf, "--btf", 256 << 20)
    if args.jobs is None:
        args.jobs = os.cpu_count() or 1
    settings = settings_for(quick=args.quick, tiny=args.tiny)
    # the progress display goes to stderr only: it never changes a file or stdout
    with Tracker() as track:
        res = build_report(args.out, settings, jobs=args.jobs, force=args.force,
                           progress=track.update, btf_path=args.btf)
    summary(Console(), res)
    return res.exit_code


def summary(console: Any, res: Any) -> None:
    """The terminal summary: one panel per section (text is never markup)."""
    from rich.panel import Panel
    from rich.text import Text

    for s in res.sections:
        body = Text()
        for line in s.summary:
            body.append("• " + line + "\n")
        for e in s.errors:
            body.append("✘ " + e + "\n", style="bold red")
        ok = "[green]ok[/]" if s.ok else f"[red]{len(s.errors)} error(s)[/]"
        body.rstrip()
        console.print(Panel(body if body.plain else Text("(nothing)"),
                            title=Text.from_markup(f"{_esc(s.title)} — {ok}"),
                            title_align="left"))
    index = res.out / "index.html"
    console.print(Text(f"wrote {index} and {len(res.files) - 1} more files in "
                       f"{res.elapsed:.1f} s"), soft_wrap=True)
    if res.exit_code:
        console.print(Text("some sections are incomplete: see the errors above and in the "
                           "report", style="bold red"))
    sys.stdout.flush()


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)
