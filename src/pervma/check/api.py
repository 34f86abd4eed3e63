"""Python API of the checker (the CLI and the report use it).

``run_check(scenario, preset="universal", *, strategy="dpor", max_executions=None,
time_limit=None, seed=0, bugs=(), config=None, trace_out=None, minimise=True,
pct_depth=3, max_bound=3, progress=None, jobs=1) -> CheckResult``
    Explore one scenario under one preset (or an explicit :class:`Config`).
    Bounded by ``max_executions`` (DPOR: unbounded when None; random/PCT: 1000);
    ``time_limit`` is an explicit opt-in cap that makes a cut run depend on
    the machine.  ``jobs > 1`` spreads one dpor/random/pct run over processes
    with exactly the result of ``jobs=1`` (:mod:`pervma.check.parallel`).
    ``CheckResult`` has ``executions``, ``pruned``, ``distinct`` (distinct
    Mazurkiewicz traces), ``redundancy``, ``elapsed`` (s), ``complete``,
    ``incomplete`` (reasons), ``violation`` (``(kind, message)`` or None),
    ``schedule`` and ``preemptions`` of the minimised counterexample,
    ``counterexample`` (the table text), ``trace_paths``, ``notes`` and
    ``exit_code`` (0 complete and clean, 1 violation, 3 clean but incomplete);
    ``to_json()`` gives a plain dict.

``find_bug(bug_id, preset=None, **kw) -> CheckResult``
    Run the catalogue entry's scenario with that bug's switch on.

``run_many(jobs_list, jobs=1) -> list[CheckResult]``
    Run several ``dict(scenario=..., preset=..., ...)`` keyword sets of
    :func:`run_check`, spread over ``jobs`` processes.

``replay_file(path, trace_out=None) -> ReplayResult``
    Re-run a ``.replay.json`` exactly; ``reproduced`` says whether the same
    violation kind occurred.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pervma.check import dpor, parallel, strategies
from pervma.check.catalogue import get_bug
from pervma.check.engine import replay
from pervma.check.minimise import minimise as _minimise
from pervma.check.output import chrome_trace, model_version, replay_document, table, write_files
from pervma.check.scenario import get_scenario
from pervma.check.search import Budget, Runner, Stats
from pervma.config import Config
from pervma.errors import ScenarioError, UsageError

STRATEGIES = ("dpor", "bounded", "random", "pct")


@dataclass
class CheckResult:
    scenario: str
    preset: str
    strategy: str
    bugs: list[str]
    executions: int
    pruned: int
    distinct: int
    redundancy: float
    elapsed: float
    complete: bool
    incomplete: list[str]
    steps: int = 0
    max_depth: int = 0
    violation: tuple[str, str] | None = None
    schedule: list[int] = field(default_factory=list)
    preemptions: int = 0
    found_preemptions: int = 0
    found_steps: int = 0
    minimise_executions: int = 0
    counterexample: str = ""
    trace_paths: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    livelock: str | None = None
    seed: int = 0
    time_to_find: float | None = None
    model_version: str = ""

    @property
    def exit_code(self) -> int:
        if self.violation is not None:
            return 1
        return 0 if self.complete else 3

    @property
    def executions_per_second(self) -> float:
        return (self.executions + self.pruned) / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["violation"] = (None if self.violation is None
                          else {"kind": self.violation[0], "message": self.violation[1]})
        d["exit_code"] = self.exit_code
        return d

    def summary(self) -> str:
        state = ("VIOLATION" if self.violation else "complete, clean" if self.complete
                 else "clean but INCOMPLETE")
        bugs = f" bugs={','.join(self.bugs)}" if self.bugs else ""
        s = (f"{self.scenario} [{self.preset}{bugs}] {self.strategy}: {state}; "
             f"{self.executions} executions, {self.pruned} pruned, {self.distinct} distinct traces "
             f"(redundancy {self.redundancy:.2f}), {self.elapsed:.2f}s")
        if self.incomplete and not self.violation:
            s += "; incomplete: " + "; ".join(self.incomplete)
        return s


def _config(preset: str, config: Config | None, bugs: Iterable[str]) -> Config:
    cfg = config if config is not None else Config.preset(preset)
    bl = [b.upper() for b in bugs]
    return cfg.with_bugs(*bl) if bl else cfg


def run_check(scenario: str, preset: str = "universal", *, strategy: str = "dpor",
              max_executions: int | None = None, time_limit: float | None = None,
              seed: int = 0, bugs: Iterable[str] = (), config: Config | None = None,
              config_text: str | None = None, trace_out: str | Path | None = None,
              minimise: bool = True, pct_depth: int = 3, max_bound: int = 3,
              progress: Callable[[Stats], None] | None = None,
              dpor_root: tuple[int, dict[Any, bool]] | None = None,
              jobs: int = 1) -> CheckResult:
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    sc = get_scenario(scenario)
    bug_list = sorted({b.upper() for b in bugs})
    cfg = _config(preset, config, bug_list)
    runner = Runner(sc, cfg)
    budget = Budget(max_executions=max_executions, time_limit=time_limit, progress=progress)
    t0 = time.perf_counter()
    if jobs > 1 and strategy != "bounded" and dpor_root is None:
        stats = parallel.explore(runner, budget, strategy, jobs, seed=seed, depth=pct_depth)
    elif strategy == "dpor" and dpor_root is None:
        stats = dpor.explore_roots(runner, budget)
    elif strategy == "dpor":
        stats = dpor.explore(runner, budget, root=dpor_root)  # type: ignore[arg-type]
    elif strategy == "bounded":
        stats = strategies.explore_bounded(runner, budget, max_bound=max_bound)
    elif strategy == "random":
        stats = strategies.explore_random(runner, budget, seed=seed)
    else:
        stats = strategies.explore_pct(runner, budget, seed=seed, depth=pct_depth)
    time_to_find = time.perf_counter() - t0 if stats.found else None
    preset_name = cfg.name if config is None else (config.name or preset)
    res = CheckResult(
        scenario=sc.name, preset=preset_name, strategy=strategy, bugs=bug_list,
        executions=stats.executions, pruned=stats.pruned, distinct=stats.distinct,
        redundancy=stats.redundancy, elapsed=stats.elapsed, complete=stats.complete,
        incomplete=list(stats.incomplete), steps=stats.steps, max_depth=stats.max_depth,
        notes=list(stats.notes), livelock=stats.livelock, seed=seed,
        time_to_find=time_to_find, model_version=model_version(),
    )
    if stats.livelock:
        res.notes.append(f"livelock bound: {stats.livelock}")
    else:
        res.notes.append(f"livelock bound: {runner.max_steps} steps per thread per execution")
    if stats.found is not None:
        found = stats.found
        res.found_preemptions = found.preemptions
        res.found_steps = len(found.schedule)
        if minimise:
            mini = _minimise(runner, found)
            found = mini.found
            res.minimise_executions = mini.executions
            if mini.cut:
                res.notes.append(f"minimisation stopped at its budget of {mini.budget} "
                                 "executions per phase (a schedule with fewer preemptions "
                                 "may exist)")
        rep = replay(runner.instance(), cfg, found.schedule, strict=True, snapshots=True,
                     max_steps=runner.max_steps)
        if rep.violation is None:  # pragma: no cover - the engine is deterministic
            raise ScenarioError(f"{sc.name}: the counterexample did not reproduce; "
                                "the model is not deterministic")
        res.violation = (rep.violation.kind, rep.violation.message)
        res.schedule = rep.schedule
        res.preemptions = rep.preemptions
        bugs_txt = f", bugs {','.join(bug_list)}" if bug_list else ""
        headline = f"BUG: {rep.violation.kind}: {rep.violation.message}"
        sub = (f"scenario {sc.name}, preset {preset_name}{bugs_txt}, strategy {strategy}; "
               f"{rep.preemptions} preemption(s), {len(rep.schedule)} steps "
               f"(found with {found.preemptions if not minimise else res.found_preemptions} "
               f"preemption(s) / {res.found_steps} steps; minimised and re-verified)")
        res.counterexample = table(rep, [t.name for t in rep.ex.tasks], headline, sub)
        if trace_out is not None:
            doc = replay_document(scenario=sc.name, preset=preset_name if config is None else preset,
                                  bugs=bug_list, config=config_text, schedule=rep.schedule,
                                  strategy=strategy, seed=seed, kind=rep.violation.kind,
                                  message=rep.violation.message, preemptions=rep.preemptions,
                                  res=rep)
            res.trace_paths = write_files(trace_out, sc.name, doc, chrome_trace(rep, sc.name))
    return res


def find_bug(bug_id: str, preset: str | None = None, **kw: Any) -> CheckResult:
    """Run the catalogue entry's scenario with the bug's switch on (dpor)."""
    entry = get_bug(bug_id)
    bugs = set(kw.pop("bugs", ())) | {entry.id}
    return run_check(entry.scenario, preset or entry.preset, bugs=bugs, **kw)


def _run_kw(kw: dict[str, Any]) -> CheckResult:
    return run_check(**kw)


def run_many(jobs_list: list[dict[str, Any]], jobs: int = 1) -> list[CheckResult]:
    """Run several checks; with ``jobs > 1`` spread them over processes."""
    if jobs <= 1 or len(jobs_list) <= 1:
        return [run_check(**kw) for kw in jobs_list]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_run_kw, jobs_list))


@dataclass
class ReplayResult:
    reproduced: bool
    expected: tuple[str, str]
    got: tuple[str, str] | None
    text: str
    warnings: list[str]
    trace_paths: list[str]


def replay_file(path: str | Path, trace_out: str | Path | None = None) -> ReplayResult:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise UsageError(f"no such replay file: {p}") from None
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"{p}: not a replay file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != "pervma-replay/1":
        raise ScenarioError(f"{p}: not a pervma-replay/1 file")
    try:
        name = str(doc["scenario"])
        sched_ = [int(x) for x in doc["schedule"]]
        expected = (str(doc["violation"]["kind"]), str(doc["violation"]["message"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ScenarioError(f"{p}: missing or malformed field ({exc})") from None
    sc = get_scenario(name)
    if doc.get("config"):
        cfg = Config.from_fragment(str(doc["config"]))
    else:
        cfg = Config.preset(str(doc.get("preset", "universal")))
    bugs = [str(b) for b in doc.get("bugs") or []]
    if bugs:
        cfg = cfg.with_bugs(*bugs)
    warnings = []
    mv = model_version()
    if doc.get("model_version") != mv:
        warnings.append(f"model version {doc.get('model_version')} in the file, {mv} here; "
                        "the schedule may no longer apply")
    runner = Runner(sc, cfg)
    rep = replay(runner.instance(), cfg, sched_, strict=True, snapshots=True,
                 max_steps=runner.max_steps)
    got = None if rep.violation is None else (rep.violation.kind, rep.violation.message)
    reproduced = got is not None and got[0] == expected[0]
    head = (f"BUG: {got[0]}: {got[1]}" if got else
            f"no violation: expected {expected[0]}: {expected[1]}")
    sub = (f"replay of {p.name}: scenario {name}, preset {cfg.name}"
           + (f", bugs {','.join(bugs)}" if bugs else "")
           + f"; {rep.preemptions} preemption(s), {len(rep.schedule)} steps; "
           + ("REPRODUCED" if reproduced else "NOT reproduced"))
    text = table(rep, [t.name for t in rep.ex.tasks], head, sub)
    paths: list[str] = []
    if trace_out is not None:
        paths = write_files(trace_out, name, doc, chrome_trace(rep, name))
    return ReplayResult(reproduced, expected, got, text, warnings, paths)
