"""``pervma report``: the whole story in one self-contained HTML report."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pervma import cliargs

EPILOG = """\
examples:
  pervma report                       # everything, into pervma-report/ (a few minutes)
  pervma report --quick --jobs 2      # fewer presets and smaller budgets (about a minute)
  pervma report --out /tmp/r          # into another folder (missing or empty)

Writes DIR/index.html (self-contained: inline SVG, no scripts, no network),
DIR/*.csv, DIR/traces/*.json (replay with 'pervma replay FILE') and
DIR/.pervma-manifest (the files pervma wrote).  The report is built next to DIR
and put in place only when complete; an earlier report's files (those its
manifest lists) are replaced and any other file in DIR is kept.  A non-empty
folder without a manifest is refused: choose a new folder.

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
    p.add_argument("--jobs", type=cliargs.jobs, default=1, metavar="N",
                   help="worker processes for the checker and the simulator, at most the "
                   "number of CPUs (default 1)")
    p.add_argument("--force", action="store_true",
                   help="kept for old scripts; a folder is never forced (see above)")
    p.add_argument("--btf", metavar="PATH", type=cliargs.nonempty, help=argparse.SUPPRESS)
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests only
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from pervma.report.runner import build_report
    from pervma.report.settings import settings_for

    if args.btf is not None:  # read whole by the layout calculator: bounded here
        cliargs.check_input_file(args.btf, "--btf", 256 << 20)
    settings = settings_for(quick=args.quick, tiny=args.tiny)
    err = Console(stderr=True)
    with Progress(TextColumn("{task.description:<12}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=err, transient=False, disable=not err.is_terminal) as prog:
        bars: dict[str, Any] = {}

        def progress(section: str, done: int, total: int) -> None:
            if section not in bars:
                bars[section] = prog.add_task(section, total=total)
            prog.update(bars[section], completed=done, total=total)

        res = build_report(args.out, settings, jobs=args.jobs, force=args.force,
                           progress=progress, btf_path=args.btf)
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
