"""Mutants of the model against the checker (issue #12): what the scenarios
find, and whether the stateful search ever prunes what the stateless one finds.

    python bench/mutation_bench.py --modules mmap_lock           # one file, one preset
    python bench/mutation_bench.py                               # the default files
    python bench/mutation_bench.py --ops drop,swap --presets universal,universal-up
    python bench/mutation_bench.py --only mmap_lock:drop:12      # one mutant, every run shown
    python bench/mutation_bench.py --workers 2 --json out.json   # (or --dask)
    python bench/mutation_bench.py --modules mremap --tests tests/kernel/test_mlock.py

``--tests`` runs the given pytest files (``-x``) against every mutant the
checker did not find (survived, incomplete, spins, unreached), each in a
fresh interpreter, and adds ``tests`` to its row: ``killed`` when a unit
test fails on it.  Sequential behaviour (a policy copied on a move, a flag
cleared) is the unit tests' to catch, not a scenario's; the table's last
column counts what either found.

Each mutant (:mod:`pervma.check.mutants`: a statement dropped, two steps
swapped, a comparison or a boolean argument changed, in one model file) runs
in a fresh interpreter: every scenario of ``pervma check --all`` under each
preset is searched statefully until one finds a violation.  A mutant none
kills is searched again statelessly on every scenario whose stateful run
reached the change and completed clean: a violation there is ``diverged``,
a state the stateful search pruned wrongly -- the soundness alarm; the script
exits 1 if any.  Before the mutants, the same searches run on the unmutated
model (the baseline): every run must be clean (else exit 2), and the
scenarios whose stateless search already spins past its livelock bound are
not held against a mutant.

Statuses: killed (an oracle fired: lockdep, KASAN, an assertion,
validate_mm, a deadlock ...), crashed (the change broke the Python, not the
protocol), livelock, spins (clean, but the mutant makes a thread busy-wait
for another: the stateless search ran into its livelock bound where the
stateful one closed a cycle another thread breaks), survived (reached,
every search complete and clean:
an equivalent mutant or something no oracle or scenario looks at),
incomplete (reached, clean, but a search hit its execution cap), unreached
(no scenario runs the changed code), timeout (the interpreter ran past
--timeout seconds: a loop with no scheduling point, which no step count can
bound; a safety net, never a verdict on the checker), failed.

The search budgets are counts (--max-executions, --stateless-executions), so
a mutant's status does not depend on the machine but for timeouts.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pervma.check import mutants as M
from pervma.check.fuzz.campaign import make_executor


def _lost(m: M.Mutant, why: str) -> dict[str, Any]:
    return {"mutant": m.ident, "where": m.describe(), "status": "failed", "error": why,
            "runs": [], "stateless": []}


class _TestsJob:
    """A picklable call of run_tests."""

    def __init__(self, paths: list[str], timeout: float) -> None:
        self.paths = paths
        self.timeout = timeout

    def __call__(self, m: M.Mutant) -> str:
        return M.run_tests(m, self.paths, self.timeout)


class _Job:
    """A picklable call of run_mutant (for the process pool and Dask)."""

    def __init__(self, plan: M.Plan, timeout: float) -> None:
        self.plan = plan
        self.timeout = timeout

    def __call__(self, m: M.Mutant) -> dict[str, Any]:
        return M.run_mutant(m, self.plan, self.timeout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", default=",".join(m.rsplit(".", 1)[-1] for m in M.DEFAULT_MODULES),
                    help="model files under pervma.kernel (comma-separated)")
    ap.add_argument("--ops", default=",".join(M.OPERATORS))
    ap.add_argument("--only", help="comma-separated mutant names (module:op:index)")
    ap.add_argument("--presets", default="universal")
    ap.add_argument("--scenarios", help="comma-separated (default: those of --all)")
    ap.add_argument("--max-executions", type=int, default=20_000)
    ap.add_argument("--stateless-executions", type=int, default=2_000)
    ap.add_argument("--no-cross-check", action="store_true")
    ap.add_argument("--all-runs", action="store_true",
                    help="search every scenario even after one kills the mutant")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dask", action="store_true")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tests", help="comma-separated pytest paths to run against every mutant "
                    "the checker did not find")
    a = ap.parse_args(argv)
    console = Console()

    try:
        modules = [f"pervma.kernel.{m.strip()}" for m in a.modules.split(",") if m.strip()]
        if a.only:
            todo = [M.parse_ident(x.strip(), modules) for x in a.only.split(",") if x.strip()]
        else:
            todo = list(M.all_mutants(modules, [o.strip() for o in a.ops.split(",")]))
    except M.UsageError as exc:
        print(f"mutation_bench: {exc}", file=sys.stderr)
        return 2
    if a.json is not None and a.json.exists():
        print(f"mutation_bench: {a.json} exists; not overwriting it", file=sys.stderr)
        return 2
    plan = M.Plan(presets=tuple(a.presets.split(",")),
                  scenarios=tuple(a.scenarios.split(",")) if a.scenarios else None,
                  max_executions=a.max_executions, stateless_executions=a.stateless_executions,
                  cross_check=not a.no_cross_check, stop_at_kill=not a.all_runs)
    t0 = time.perf_counter()
    with console.status("the unmutated model: every scenario, stateful and stateless"):
        base, spinning = M.baseline(plan)
    dirty = [r for r in base if r["verdict"] not in (None, "livelock") or
             (r["verdict"] == "livelock" and not r["stateless"])]
    if dirty:
        for r in dirty:
            print(f"mutation_bench: the unmutated model is not clean: {r['scenario']} "
                  f"[{r['preset']}]: {r['violation'] or r['livelock'] or r['error']}",
                  file=sys.stderr)
        return 2
    console.print(f"baseline: {len(base)} runs clean in {time.perf_counter() - t0:.0f} s; "
                  f"the stateless search spins past its livelock bound on its own in "
                  f"{', '.join(spinning) or 'none'}")
    plan = dataclasses.replace(plan, spinning=spinning)
    executor = make_executor(a.workers, dask=a.dask)
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    cols = (TextColumn("mutants"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"))
    try:
        with Progress(*cols, console=console) as progress:
            task = progress.add_task("", total=len(todo))
            for r in executor.map(_Job(plan, a.timeout), todo, _lost):
                results.append(r)
                counts = collections.Counter(x["status"] for x in results)
                progress.update(task, advance=1,
                                description=" ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        unfound = [r for r in results if r["status"] in ("survived", "incomplete", "spins",
                                                         "unreached")]
        if a.tests and unfound:
            paths = [x.strip() for x in a.tests.split(",") if x.strip()]
            by_name = {m.ident: m for m in todo}
            with Progress(*cols, console=console) as progress:
                task = progress.add_task("unit tests", total=len(unfound))
                verdicts = executor.map(_TestsJob(paths, a.timeout),
                                        [by_name[r["mutant"]] for r in unfound],
                                        lambda m, why: "failed")
                for r, v in zip(unfound, verdicts, strict=True):
                    r["tests"] = v
                    progress.update(task, advance=1)
    finally:
        executor.close()
    wall = time.perf_counter() - t0

    by_module: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in results:
        by_module[r["mutant"].split(":")[0]][r["status"]] += 1
    table = Table(title=f"{len(results)} mutants, presets {a.presets}, {wall:.0f} s wall")
    table.add_column("module")
    for s in M.STATUSES:
        table.add_column(s, justify="right")
    table.add_column("killed+crashed+livelock of reached", justify="right")
    if a.tests:
        table.add_column("of those left, killed by --tests", justify="right")
        table.add_column("found by either, of all", justify="right")
    for mod, c in sorted(by_module.items()):
        reached = sum(c.values()) - c["unreached"] - c["timeout"] - c["failed"]
        found = c["killed"] + c["crashed"] + c["livelock"]
        row = [mod, *(str(c[s]) for s in M.STATUSES),
               f"{found}/{reached} ({100 * found / max(reached, 1):.0f}%)"]
        if a.tests:
            mine = [r for r in results if r["mutant"].split(":")[0] == mod]
            left = [r for r in mine if "tests" in r]
            by_tests = sum(r["tests"] == "killed" for r in left)
            either = found + by_tests
            row += [f"{by_tests}/{len(left)}", f"{either}/{len(mine)} ({100 * either / max(len(mine), 1):.0f}%)"]
        table.add_row(*row)
    console.print(table)
    for status in ("diverged", "spins", "survived", "incomplete", "unreached", "timeout", "failed"):
        picked = [r for r in results if r["status"] == status]
        if picked:
            console.print(f"[bold]{status}[/bold] ({len(picked)}):")
            for r in picked:
                extra = f"  [{r['error']}]" if r.get("error") else ""
                extra += f"  (unit tests: {r['tests']})" if "tests" in r else ""
                console.print(f"  {r['mutant']:<22} {r['where']}{extra}", markup=False,
                              highlight=False)
    if a.only:
        for r in results:
            for row in r["runs"] + r["stateless"]:
                console.print(f"  {r['mutant']} {row['scenario']} [{row['preset']}] "
                              f"reached={row['reached']} complete={row['complete']} "
                              f"executions={row['executions']} verdict={row['verdict']} "
                              f"{row['violation'] or ''}", markup=False, highlight=False)
    if a.json is not None:
        a.json.write_text(json.dumps({"args": vars(a) | {"json": str(a.json)},
                                      "plan": dataclasses.asdict(plan), "baseline": base,
                                      "wall_seconds": wall, "results": results}, indent=1))
    return 1 if any(r["status"] == "diverged" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
