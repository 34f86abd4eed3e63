"""``pervma sites``: the map of the series' call sites (issue #14, item 4).

The rows come from the ``@call_site`` annotations on the model's functions
(:mod:`pervma.kernel.sites`): every model function that takes a VMA lock for
a caller outside the lock code.  For each, the checker runs the site's
scenarios under each preset (``run_check`` with ``pervma check``'s defaults:
stateful DPOR, no execution budget) and the row shows one verdict per preset.

Verdicts: ``clean`` (every scenario complete and clean), ``violation`` (one
found a violation), ``incomplete`` (clean, but a bound was hit), ``error`` (a
run failed), ``n/a`` (no scenario of the site runs under that preset),
``not checked`` (``--no-check``).  A site with ``arch`` set (arm64) runs its
scenarios with that ``Config.arch``.

``--json`` prints one object::

    {"presets": [preset, ...],
     "checked": bool,
     "sites": [
       {"site": "file.c:function", "kernel_file": str, "kernel_function": str,
        "pre_series_form": "ifdef" | "stub-fallback" | "mmap-lock" | "new",
        "pre_series": str, "series": str,
        "model": "kernel/file.py:function", "model_file": str, "model_function": str,
        "version": str, "arch": str | null, "note": str, "scenarios": [str, ...],
        "verdicts": {preset: {"verdict": str,
                              "runs": [{"scenario": str, "state": str,
                                        "executions": int, "violation": str}]}}}]}

Exit status: 0 every checked site is clean (or n/a), 1 a violation, 3 clean
but incomplete, 70 a run failed, 2 a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pervma import cliargs
from pervma.config import SWEEP_PRESETS
from pervma.errors import UsageError

VERDICTS = ("clean", "violation", "incomplete", "error", "n/a", "not checked")
# Worst first: a site's verdict under a preset is the worst of its runs.
_RANK = {"violation": 0, "error": 1, "incomplete": 2, "clean": 3}

EPILOG = """\
examples:
  pervma sites --no-check           # the table only, at once
  pervma sites --preset legacy      # each site's scenarios checked under legacy only
  pervma sites --json --preset universal-up --jobs 2
  (no --preset: the four presets of the sweep, 136 runs, ~30 s with --jobs 2)

exit status: 0 every site clean, 1 a violation found, 2 usage error, 3 clean but
incomplete, 70 a run failed with an internal error, 130 interrupted."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sites", help="the series' call sites: pre-series and series forms, checked per preset",
        description="List every model function that takes a VMA lock for a caller outside "
        "the lock code: the kernel site it models, what the caller did before the series, "
        "what the series form does, and the checker's verdict for its scenarios per preset.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.add_argument("--no-check", action="store_true", help="do not run the checker")
    p.add_argument("--preset", default=None, metavar="P[,P...]", type=cliargs.nonempty,
                   help=f"presets (default {','.join(SWEEP_PRESETS)})")
    p.add_argument("--jobs", type=cliargs.jobs, default=1, metavar="N",
                   help="checker runs in parallel over N processes")
    p.set_defaults(func=cmd_sites)


def _presets(text: str | None) -> list[str]:
    from pervma.config import PRESET_NAMES

    if text is None:
        return list(SWEEP_PRESETS)
    names = cliargs.name_list(text, "--preset")
    for n in names:
        if n not in PRESET_NAMES:
            raise UsageError(f"unknown preset {n!r}; choose one of {', '.join(PRESET_NAMES)}")
    return list(dict.fromkeys(names))


def run_key(scenario: str, preset: str, arch: str | None) -> str:
    """The key of one checker run: ``scenario.preset`` (``.arch`` when overridden)."""
    return f"{scenario}.{preset}" + (f".{arch}" if arch else "")


def plan(sites: Iterable[Any], presets: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """The distinct checker runs the sites need, as ``(key, run_check kwargs)``."""
    from pervma.check.scenario import get_scenario
    from pervma.config import Config

    runs: dict[str, dict[str, Any]] = {}
    for s in sites:
        for name in s.scenarios:
            sc = get_scenario(name)
            for pre in presets:
                if pre not in sc.presets:
                    continue
                key = run_key(name, pre, s.arch)
                if key in runs:
                    continue
                kw: dict[str, Any] = {"scenario": name, "preset": pre}
                if s.arch:
                    kw["config"] = dataclasses.replace(Config.preset(pre), arch=s.arch)
                runs[key] = kw
    return list(runs.items())


def run_state(r: dict[str, Any]) -> str:
    """A run's state from ``CheckResult.to_json()`` (or ``{"error": ...}``)."""
    if r.get("violation"):
        return "violation"
    if r.get("error"):
        return "error"
    return "clean" if r.get("complete") else "incomplete"


def site_rows(sites: Iterable[Any], presets: Sequence[str],
              results: dict[str, dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The JSON rows (module docstring); ``results`` maps :func:`run_key` to a
    run's ``to_json()`` dict, None when nothing was checked."""
    from pervma.check.scenario import get_scenario

    rows = []
    for s in sites:
        verdicts: dict[str, dict[str, Any]] = {}
        for pre in presets:
            runs = []
            for name in s.scenarios:
                if pre not in get_scenario(name).presets or results is None:
                    continue
                r = results.get(run_key(name, pre, s.arch), {"error": "not run"})
                v = r.get("violation") or {}
                runs.append({"scenario": name, "state": run_state(r),
                             "executions": int(r.get("executions", 0)),
                             "violation": (f"{v.get('kind', '')}: {v.get('message', '')}"
                                           if v else r.get("error") or "")})
            if results is None:
                verdict = "not checked"
            elif not runs:
                verdict = "n/a"
            else:
                verdict = min((x["state"] for x in runs), key=lambda st: _RANK[st])
            verdicts[pre] = {"verdict": verdict, "runs": runs}
        rows.append({"site": s.site, "kernel_file": s.kernel_file,
                     "kernel_function": s.kernel_function, "pre_series_form": s.pre_form,
                     "pre_series": s.pre_series, "series": s.series, "model": s.model,
                     "model_file": s.model_file, "model_function": s.model_function,
                     "version": s.version, "arch": s.arch, "note": s.note,
                     "scenarios": list(s.scenarios), "verdicts": verdicts})
    return rows


def exit_code(rows: list[dict[str, Any]]) -> int:
    seen = {v["verdict"] for r in rows for v in r["verdicts"].values()}
    if "violation" in seen:
        return 1
    if "error" in seen:
        return 70
    return 3 if "incomplete" in seen else 0


def collect(presets: Sequence[str], check: bool, jobs: int = 1,
            on_result: Callable[[int, Any], None] | None = None
            ) -> tuple[list[Any], dict[str, dict[str, Any]] | None]:
    """The annotated sites and, with ``check``, every run their scenarios need."""
    from pervma.kernel.sites import all_sites

    sites = all_sites()
    if not check:
        return sites, None
    from pervma.check.api import run_many

    runs = plan(sites, presets)
    sys.stderr.write(f"pervma sites: checking {len(sites)} sites: {len(runs)} runs "
                     f"({', '.join(presets)}) over {jobs} process(es)\n")
    out = run_many([kw for _, kw in runs], jobs=jobs, on_result=on_result)
    return sites, {key: r.to_json() for (key, _), r in zip(runs, out, strict=True)}


def cmd_sites(args: argparse.Namespace) -> int:
    presets = _presets(args.preset)
    sites, results = collect(presets, not args.no_check, args.jobs)
    rows = site_rows(sites, presets, results)
    if args.json:
        json.dump({"presets": presets, "checked": results is not None, "sites": rows},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(rows, presets)
    return exit_code(rows)


_STYLE = {"clean": "green", "violation": "bold red", "incomplete": "yellow", "error": "red",
          "n/a": "dim", "not checked": "dim"}


def _print_table(rows: list[dict[str, Any]], presets: Sequence[str]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    t = Table(title="The series' call sites", show_lines=True)
    for col in ("site", "pre-series form", "series form", "model"):
        t.add_column(col, overflow="fold")
    for pre in presets:
        t.add_column(pre, no_wrap=True)
    for r in rows:
        arch = f" ({r['arch']})" if r["arch"] else ""
        cells = [Text(f"{r['site']}{arch}"),
                 Text(f"[{r['pre_series_form']}] {r['pre_series']}"),
                 Text(r["series"]), Text(r["model"])]
        for pre in presets:
            v = r["verdicts"][pre]["verdict"]
            cells.append(Text(v, style=_STYLE[v]))
        t.add_row(*cells)
    console = Console()
    if not console.is_terminal:  # a pipe or file: wide enough to read, not 80 columns
        console = Console(width=180)
    console.print(t)
    for r in rows:
        if r["note"]:
            console.print(Text(f"note, {r['site']}: {r['note']}"))
