"""Python API of the checker (the CLI and the report use it).

``run_check(scenario, preset="universal", *, strategy="dpor", max_executions=None,
time_limit=None, seed=0, bugs=(), config=None, trace_out=None, minimise=True,
pct_depth=3, max_bound=3, progress=None, trace_stem=None, force=False, jobs=1,
trace_stats=False) -> CheckResult``
    Explore one scenario under one preset (or an explicit :class:`Config`).
    Bounded by ``max_executions`` (DPOR: unbounded when None; random/PCT: 1000);
    ``time_limit`` is an explicit opt-in cap that makes a cut run depend on
    the machine.  ``jobs > 1`` spreads one dpor/random/pct run over processes
    with exactly the result of ``jobs=1`` (:mod:`pervma.check.parallel`); a
    stateful run without ``max_executions`` is split into units that share
    their finished states (:mod:`pervma.check.pstateful`: the same verdict,
    counts that differ a little).
    ``CheckResult`` has ``executions``, ``pruned``, ``distinct`` (distinct
    Mazurkiewicz traces) and ``redundancy`` (executions per distinct trace),
    both None unless ``trace_stats`` asked for them, ``elapsed`` (s), ``complete``,
    ``incomplete`` (reasons), ``violation`` (``(kind, message)`` or None),
    ``schedule`` and ``preemptions`` of the minimised counterexample,
    ``counterexample`` (the table text), ``trace_paths``, ``notes``,
    ``error`` (a run that failed), ``output_error`` (its files could not be
    written) and ``exit_code`` (0 complete and clean, 1 violation, 3 clean but
    incomplete, 70 failed); ``to_json()`` gives a plain dict.  With
    ``trace_out`` a counterexample goes to ``<trace_stem>.replay.json`` and
    ``.trace.json`` (stem default: the scenario), never over an existing file
    unless ``force``.

``find_bug(bug_id, preset=None, **kw) -> CheckResult``
    Run the catalogue entry's scenario with that bug's switch on.

``run_many(jobs_list, jobs=1, on_result=None) -> list[CheckResult]``
    Run several ``dict(scenario=..., preset=..., ...)`` keyword sets of
    :func:`run_check`, spread over ``jobs`` processes.  Each run's failure is
    that run's result (:func:`run_guarded`): a violation raised while the
    scenario is set up is a violation, an unexpected exception or a worker
    process that died sets ``error``; the other runs complete.  Interrupted
    (SIGINT), it raises :class:`Interrupted` carrying the finished runs.

``replay_file(path, trace_out=None, force=False) -> ReplayResult``
    Re-run a ``.replay.json`` exactly (validated by
    :mod:`pervma.check.replayfile`); ``reproduced`` says whether the same
    violation kind occurred.
"""

from __future__ import annotations

import pickle
import signal
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pervma.check import dpor, lkmm, odpor, parallel, pstateful, strategies
from pervma.check.catalogue import get_bug
from pervma.check.engine import replay
from pervma.check.minimise import minimise as _minimise
from pervma.check.output import (
    chrome_trace,
    model_version,
    replay_document,
    table,
    write_files,
    write_trace_file,
)
from pervma.check.scenario import get_scenario
from pervma.check.search import Budget, Runner, Stats
from pervma.config import Config
from pervma.errors import PervmaError, ScenarioError, UsageError
from pervma.sched import Violation
from pervma.sched.memory import Memory

STRATEGIES = ("dpor", "bounded", "random", "pct")


@dataclass
class CheckResult:
    scenario: str
    preset: str
    strategy: str
    bugs: list[str]
    executions: int
    pruned: int
    distinct: int | None
    redundancy: float | None
    elapsed: float
    complete: bool
    incomplete: list[str]
    steps: int = 0
    max_depth: int = 0
    # The stateful search (dpor without --stateless): states stored and
    # executions stopped at a stored state; None for the stateless strategies.
    states: int | None = None
    revisits: int = 0
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
    # The run failed (an unexpected exception, a worker that died): one line,
    # and the traceback text when there is one.
    error: str | None = None
    error_traceback: str | None = None
    # The replay/trace files could not be written (one line).
    output_error: str | None = None
    # "sc" or "lkmm" (pervma.check.lkmm); under lkmm a counterexample's weak
    # reads that did not read the latest write, one line each.
    memory_model: str = "sc"
    reads_from: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.violation is not None:
            return 1
        if self.error is not None:
            return 70
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
        if self.error is not None and self.violation is None:
            bugs = f" bugs={','.join(self.bugs)}" if self.bugs else ""
            return (f"{self.scenario} [{self.preset}{bugs}] {self.strategy}: FAILED: "
                    f"{self.error}")
        state = ("VIOLATION" if self.violation else "complete, clean" if self.complete
                 else "clean but INCOMPLETE")
        bugs = f" bugs={','.join(self.bugs)}" if self.bugs else ""
        traces = ("" if self.distinct is None or self.redundancy is None else
                  f", {self.distinct} distinct traces (redundancy {self.redundancy:.2f})")
        mm = " lkmm" if self.memory_model == "lkmm" else ""
        s = (f"{self.scenario} [{self.preset}{bugs}] {self.strategy}{mm}: {state}; "
             f"{self.executions} executions, {self.pruned} pruned{traces}, {self.elapsed:.2f}s")
        if self.states is not None:
            s += f"; {self.states} states, {self.revisits} stopped at a stored state"
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
              trace_stem: str | None = None, force: bool = False,
              jobs: int = 1, trace_stats: bool = False, stateless: bool = False,
              optimal: bool = False, memory_model: str = "sc",
              symmetric: bool = True) -> CheckResult:
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if memory_model not in lkmm.MEMORY_MODELS:
        raise UsageError(f"unknown memory model {memory_model!r}; choose one of "
                         f"{', '.join(lkmm.MEMORY_MODELS)}")
    if memory_model == "lkmm" and (strategy != "dpor" or stateless or jobs > 1
                                   or dpor_root is not None):
        raise UsageError("--memory-model lkmm runs the stateful dpor search in one process: "
                         "drop --strategy, --stateless, --optimal and --jobs")
    sc = get_scenario(scenario)
    bug_list = sorted({b.upper() for b in bugs})
    cfg = _config(preset, config, bug_list)
    runner = Runner(sc, cfg)
    # under LKMM the memory layer keeps per-thread state by thread id: no permuting
    runner.symmetric = symmetric and memory_model != "lkmm"
    budget = Budget(max_executions=max_executions, time_limit=time_limit, progress=progress)
    stats = Stats(strategy, trace_stats=trace_stats)
    t0 = time.perf_counter()
    if memory_model == "lkmm":
        lkmm.explore(runner, budget, stats)
    elif strategy == "dpor" and optimal:  # Optimal-DPOR (stateless), in one process
        stats = Stats("odpor", trace_stats=trace_stats)
        odpor.explore_roots(runner, budget, stats)
        stats.notes.append("stateless Optimal-DPOR with wakeup trees (--optimal)")
    elif strategy == "dpor" and not stateless:
        pstateful.explore(runner, budget, stats, jobs)
        names = runner.thread_names
        for g in runner.symmetry:
            stats.notes.append("symmetry reduction: " + ", ".join(names[t] for t in g)
                               + " are interchangeable (one state per permutation of them)")
    elif jobs > 1 and strategy != "bounded" and dpor_root is None:
        stats = parallel.explore(runner, budget, strategy, jobs, seed=seed, depth=pct_depth,
                                 trace_stats=trace_stats)
    elif strategy == "dpor" and dpor_root is None:
        dpor.explore_roots(runner, budget, stats)
    elif strategy == "dpor":
        dpor.explore(runner, budget, stats, root=dpor_root)  # type: ignore[arg-type]
    elif strategy == "bounded":
        strategies.explore_bounded(runner, budget, max_bound=max_bound, stats=stats)
    elif strategy == "random":
        strategies.explore_random(runner, budget, seed=seed, stats=stats)
    else:
        strategies.explore_pct(runner, budget, seed=seed, depth=pct_depth, stats=stats)
    time_to_find = time.perf_counter() - t0 if stats.found else None
    preset_name = cfg.name if config is None else (config.name or preset)
    res = CheckResult(
        scenario=sc.name, preset=preset_name, strategy=strategy, bugs=bug_list,
        executions=stats.executions, pruned=stats.pruned, distinct=stats.distinct,
        redundancy=stats.redundancy, elapsed=stats.elapsed, complete=stats.complete,
        states=stats.states, revisits=stats.revisits,
        incomplete=list(stats.incomplete), steps=stats.steps, max_depth=stats.max_depth,
        notes=list(stats.notes), livelock=stats.livelock, seed=seed,
        time_to_find=time_to_find, model_version=model_version(), memory_model=memory_model,
    )
    if stats.livelock:
        res.notes.append(f"livelock: {stats.livelock}")
    else:
        res.notes.append(f"livelock bound: {runner.max_steps} steps per thread per execution")
    if stats.found is not None:
        found = stats.found
        runner.adopt(found)  # a worker's lockdep graph: the replay below needs it
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
        if isinstance(rep.ex.memory, Memory):
            res.reads_from = lkmm.reads_from_lines(rep.ex.memory, [t.name for t in rep.ex.tasks])
            res.counterexample += ("\nreads-from under LKMM (weak reads that did not read the "
                                   "latest write):\n" + "\n".join(f"  {x}" for x in res.reads_from))
        if trace_out is not None:
            _save_traces(res, rep, trace_out, trace_stem or sc.name, force,
                         preset if config is not None else preset_name, config_text,
                         runner.scope.replay,
                         runner.plan if memory_model == "lkmm" else None)
    return res


def _save_traces(res: CheckResult, rep: Any, trace_out: str | Path, stem: str, force: bool,
                 preset: str, config_text: str | None,
                 run_scope: dict[str, Any] | None = None,
                 plan: dict[tuple[int, int], int] | None = None) -> None:
    """Write ``<stem>.replay.json`` and ``<stem>.trace.json``; a failure to write
    is kept in ``res.output_error`` so the result itself is not lost."""
    assert res.violation is not None
    doc = replay_document(scenario=res.scenario, preset=preset, bugs=res.bugs,
                          config=config_text, schedule=rep.schedule, strategy=res.strategy,
                          seed=res.seed, kind=res.violation[0], message=res.violation[1],
                          preemptions=rep.preemptions, res=rep, run_scope=run_scope,
                          plan=plan, reads_from=res.reads_from)
    try:
        res.trace_paths = write_files(trace_out, stem, doc, chrome_trace(rep, res.scenario),
                                      force=force)
    except PervmaError as exc:
        res.output_error = str(exc)


def trace_stems(kws: list[dict[str, Any]]) -> list[str]:
    """A distinct file-name stem per run: ``<scenario>`` with one preset,
    ``<scenario>.<preset>`` with several, plus ``.<bug>-<bug>`` where runs differ
    only in their bugs."""
    several = len({kw.get("preset", "universal") for kw in kws}) > 1
    stems = [kw["scenario"] + (f".{kw.get('preset', 'universal')}" if several else "")
             for kw in kws]
    for i, kw in enumerate(kws):
        if stems.count(stems[i]) > 1 and kw.get("bugs"):
            stems[i] += "." + "-".join(sorted(b.upper() for b in kw["bugs"]))
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise UsageError(f"two runs would write the same files {dup[0]}.replay.json; "
                         "name each scenario and preset once")
    return stems


def find_bug(bug_id: str, preset: str | None = None, **kw: Any) -> CheckResult:
    """Run the catalogue entry's scenario with the bug's switch on (dpor)."""
    entry = get_bug(bug_id)
    bugs = set(kw.pop("bugs", ())) | {entry.id}
    kw.setdefault("memory_model", entry.memory_model)
    return run_check(entry.scenario, preset or entry.preset, bugs=bugs, **kw)


def _failed(kw: dict[str, Any], error: str, tb: str | None = None) -> CheckResult:
    """The result of a run that failed before it could produce one."""
    return CheckResult(
        scenario=str(kw.get("scenario")), preset=str(kw.get("preset", "universal")),
        strategy=str(kw.get("strategy", "dpor")),
        bugs=sorted({str(b).upper() for b in kw.get("bugs", ())}), executions=0, pruned=0,
        distinct=None, redundancy=None, elapsed=0.0, complete=False,
        incomplete=["the run failed"], seed=int(kw.get("seed", 0) or 0),
        error=error, error_traceback=tb, model_version=model_version())


def run_guarded(kw: dict[str, Any], progress: Callable[[Stats], None] | None = None
                ) -> CheckResult:
    """:func:`run_check` whose every failure is its result: a model violation
    raised outside an explored execution (while the scenario is set up) is the
    run's violation; any other exception sets ``error`` (with its traceback)."""
    try:
        res = run_check(**kw, progress=progress) if progress else run_check(**kw)
    except Violation as v:
        res = _failed(kw, "")
        res.error = None
        res.incomplete = ["the violation happened while the scenario was being set up"]
        res.violation = (str(v.kind), str(v.message))
        res.counterexample = (f"BUG: {v.kind}: {v.message}\n(raised while the scenario was "
                              "being set up, before any thread ran: no schedule to replay)")
        res.notes.append("violation raised during setup")
    except PervmaError as exc:  # inside a run that was validated: not the user's doing
        res = _failed(kw, str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                      "".join(traceback.format_exception(exc)))
    except (Exception, RecursionError) as exc:  # noqa: BLE001 - becomes the run's result
        res = _failed(kw, f"internal error: {type(exc).__name__}: {exc}".splitlines()[0],
                      "".join(traceback.format_exception(exc)))
    if res.violation is not None:
        res.violation = (str(res.violation[0]), str(res.violation[1]))
    return res


def _worker_init() -> None:
    # SIGINT is the parent's to handle: it prints what finished and ends the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker(kw: dict[str, Any]) -> CheckResult:
    res = run_guarded(kw)
    try:
        pickle.dumps(res)
    except Exception as exc:  # noqa: BLE001 - something in it cannot cross processes
        res = _failed(kw, f"internal error: the result cannot be sent back from the worker "
                      f"({type(exc).__name__}: {exc})".splitlines()[0])
    return res


class Interrupted(KeyboardInterrupt):
    """SIGINT during :func:`run_many`: ``results`` are the runs that finished
    (in submission order), ``total`` how many were asked for."""

    def __init__(self, results: list[CheckResult], total: int) -> None:
        super().__init__(f"{len(results)} of {total} runs finished")
        self.results = results
        self.total = total


def interrupted(results: list[CheckResult], total: int) -> Interrupted:
    """The :class:`Interrupted` to raise on SIGINT.  The interrupted runs' model
    threads are dropped unstarted or mid-step; Python's "never awaited" warning
    about them is not a model bug, so it is silenced from here on."""
    warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
    return Interrupted(results, total)


def _end_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers and let its manager thread finish.  Left
    running, that thread closes its wake-up pipe while the interpreter's exit
    hook (concurrent.futures' ``_python_exit``) may be writing to it: a race
    that printed "Exception ignored in: <module 'threading'> ... Bad file
    descriptor" after SIGINT on a loaded machine (CPython 3.11)."""
    procs = getattr(pool, "_processes", None) or {}
    for p in list(procs.values()):
        try:
            p.terminate()
        except (OSError, AttributeError):
            pass
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    if manager is not None:
        manager.join(timeout=10)  # its workers are gone: it sees the broken pool and ends


def _run_in_pool(jobs_list: list[dict[str, Any]], idx: list[int], jobs: int,
                 done: Callable[[int, CheckResult], None]) -> list[int]:
    """Run ``idx`` over one pool; return the runs lost to a broken pool."""
    lost: list[int] = []
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(idx)), initializer=_worker_init)
    try:
        futs: dict[Future[CheckResult], int] = {pool.submit(_worker, jobs_list[i]): i
                                                for i in idx}
        pending = set(futs)
        while pending:
            ready, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in sorted(ready, key=lambda f: futs[f]):
                i = futs[f]
                try:
                    done(i, f.result())
                except BrokenProcessPool:
                    lost.append(i)
                except Exception as exc:  # noqa: BLE001 - that run's result
                    done(i, _failed(jobs_list[i], "worker process failed: "
                                    f"{type(exc).__name__}: {exc}".splitlines()[0]))
    except BaseException:
        _end_workers(pool)
        raise
    pool.shutdown(wait=True)
    return sorted(lost)


def run_many(jobs_list: list[dict[str, Any]], jobs: int = 1,
             on_result: Callable[[int, CheckResult], None] | None = None) -> list[CheckResult]:
    """Run several checks; with ``jobs > 1`` spread them over processes.

    A worker process that dies takes down the pool; the runs it lost are then
    run again, each in a process of its own, so only the run that kills its
    process fails (its result says so)."""
    results: dict[int, CheckResult] = {}

    def done(i: int, r: CheckResult) -> None:
        results[i] = r
        if on_result:
            on_result(i, r)

    try:
        if jobs <= 1 or len(jobs_list) <= 1:
            for i, kw in enumerate(jobs_list):
                done(i, run_guarded(kw))
        else:
            lost = _run_in_pool(jobs_list, list(range(len(jobs_list))), jobs, done)
            for i in lost:  # one process each: a second death is that run's own
                if _run_in_pool(jobs_list, [i], 1, done):
                    done(i, _failed(jobs_list[i], "worker process died while running it"))
    except KeyboardInterrupt:
        raise interrupted([results[i] for i in sorted(results)], len(jobs_list)) from None
    return [results[i] for i in range(len(jobs_list))]


@dataclass
class ReplayResult:
    reproduced: bool
    expected: tuple[str, str]
    got: tuple[str, str] | None
    text: str
    warnings: list[str]
    trace_paths: list[str]


def replay_file(path: str | Path, trace_out: str | Path | None = None,
                force: bool = False) -> ReplayResult:
    """Re-run a replay file; with ``trace_out`` also write ``<stem>.trace.json``
    there (``<stem>`` is the file's name without ``.replay.json``)."""
    from pervma.check import replayfile

    p = Path(path)
    rd = replayfile.read(p)
    name = rd.scenario
    if rd.config:
        cfg = Config.from_fragment(rd.config)
    else:
        cfg = Config.preset(rd.preset)
    bugs = rd.bugs
    if bugs:
        cfg = cfg.with_bugs(*bugs)
    if rd.program is not None:  # format 2: a generated program's world, its oracle too
        from pervma.check.fuzz.explore import program_scenario
        from pervma.check.fuzz.oracle import SerialOracle

        sc = program_scenario(rd.program, SerialOracle(rd.program, cfg))
    else:
        sc = get_scenario(name)
    expected = (rd.kind, rd.message)
    warnings = list(rd.warnings)
    mv = model_version()
    if rd.model_version != mv:
        warnings.append(f"model version {rd.model_version} in the file, {mv} here; "
                        "the schedule may no longer apply")
    runner = Runner(sc, cfg)
    runner.scope.replay = dict(rd.raw.get("run_scope") or {})  # e.g. lockdep's other chain
    if rd.raw.get("memory_model") == "lkmm":  # the weak reads read what they read then
        lkmm.use_plan(runner, {(t, n): back for t, n, back in rd.raw.get("reads_from_plan", [])})
    try:
        rep = replay(runner.instance(), cfg, rd.schedule, strict=True, snapshots=True,
                     max_steps=runner.max_steps)
    except Violation as v:  # raised while the scenario was being set up
        vgot = (str(v.kind), str(v.message))
        text = (f"BUG: {vgot[0]}: {vgot[1]}\n(raised while the scenario was being set up, "
                "before the schedule ran)")
        return ReplayResult(vgot[0] == expected[0], expected, vgot, text, warnings, [])
    got = None if rep.violation is None else (rep.violation.kind, rep.violation.message)
    reproduced = got is not None and got[0] == expected[0]
    head = (f"BUG: {got[0]}: {got[1]}" if got else
            f"no violation: expected {expected[0]}: {expected[1]}")
    sub = (f"replay of {p.name}: scenario {name}, preset {cfg.name}"
           + (f", bugs {','.join(bugs)}" if bugs else "")
           + f"; {rep.preemptions} preemption(s), {len(rep.schedule)} steps; "
           + ("REPRODUCED" if reproduced else "NOT reproduced"))
    text = table(rep, [t.name for t in rep.ex.tasks], head, sub)
    if isinstance(rep.ex.memory, Memory):
        text += ("\nreads-from under LKMM (weak reads that did not read the latest write):\n"
                 + "\n".join(f"  {x}" for x in lkmm.reads_from_lines(
                     rep.ex.memory, [t.name for t in rep.ex.tasks])))
    paths: list[str] = []
    if trace_out is not None:
        paths = [str(write_trace_file(trace_out, replay_stem(p), chrome_trace(rep, name),
                                      force=force))]
    return ReplayResult(reproduced, expected, got, text, warnings, paths)


def replay_stem(path: str | Path) -> str:
    """``x.replay.json`` -> ``x``; any other name loses its last suffix."""
    n = Path(path).name
    return n[: -len(".replay.json")] if n.endswith(".replay.json") else Path(n).stem or n
