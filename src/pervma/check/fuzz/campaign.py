"""A fuzzing campaign (issue #15 items 3, 5): rounds of programs, a corpus,
worker processes or Dask.

The campaign runs in synchronous rounds of ``round_size`` programs.  Program
``i`` (slot ``s`` of round ``k``, ``i = k * round_size + s``) is drawn by
:func:`draw` from a generator seeded with ``(seed, k, s)`` alone, and from
the corpus as it was when round ``k`` began: either program ``i`` of the
seed, freshly generated (:func:`~pervma.check.fuzz.generate.generate`), or a
corpus entry mutated one to three times (:mod:`~pervma.check.fuzz.mutate`).
Both use the preset's bug-free :class:`~pervma.config.Config`: ``--bug`` only
turns a switch on in the exploration.  The round's programs are explored by an
:class:`Executor` (in this process, local worker processes, or Dask), whose
results come back in slot order; they are then accounted in program order:
findings, coverage, the corpus (:mod:`~pervma.check.fuzz.corpus`).  So the
programs, results and corpus are the same for a seed and a program count
whatever the number of workers or where they run.

The campaign's data (corpus, curve, rows) is the driver's: nothing of it is
reachable from a model thread.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from pervma.check.fuzz.corpus import Corpus, pair_name
from pervma.check.fuzz.explore import ProgramResult, explore_program
from pervma.check.fuzz.generate import generate
from pervma.check.fuzz.mutate import mutate
from pervma.check.fuzz.program import Program
from pervma.config import Config
from pervma.errors import UsageError

#: Programs per round unless ``--round-size`` says otherwise (a multiple of
#: the usual worker counts, so that a round keeps them all busy).
ROUND_SIZE = 16
#: Chance that a slot mutates a corpus entry rather than generating afresh
#: (once the corpus has an entry).
P_MUTATE = 0.5
MAX_MUTATIONS = 3
#: Seconds to wait for a Dask scheduler to answer before giving up.
CONNECT_TIMEOUT = 10.0

T = TypeVar("T")
R = TypeVar("R")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# --- drawing ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Origin:
    """Where a program came from: fresh (``parent is None``) or mutations of a
    corpus entry."""

    parent: int | None = None
    mutations: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.parent is None:
            return {"fresh": True}
        return {"parent": self.parent, "mutations": list(self.mutations)}

    def __str__(self) -> str:
        if self.parent is None:
            return "fresh"
        return f"mutation of {self.parent}: {','.join(self.mutations)}"


def draw(seed: int, index: int, round_: int, slot: int, parents: tuple[Any, ...],
         gen_cfg: Config) -> tuple[Program, Origin]:
    """Program ``index`` (slot ``slot`` of round ``round_``) given the corpus
    ``parents`` at the round's start (entries with ``.index`` and ``.program``)."""
    r = random.Random(f"pervma-fuzz-campaign:{seed}:{round_}:{slot}")
    if parents and r.random() < P_MUTATE:
        parent = parents[r.randrange(len(parents))]
        prog, ops = parent.program, []
        for _ in range(r.randint(1, MAX_MUTATIONS)):
            prog, op = mutate(prog, r, gen_cfg)
            if op != "none":
                ops.append(op)
        if ops:
            return prog, Origin(parent.index, tuple(ops))
    return generate(seed, index, gen_cfg), Origin()


# --- exploring one program (in a worker) ------------------------------------

@dataclass(frozen=True, slots=True)
class Task:
    """What a worker needs to explore one program: plain, picklable data."""

    index: int
    program: Program
    preset: str
    bugs: tuple[str, ...]
    dpor_executions: int
    pct_executions: int
    seed: int


#: A program's result, or why there is none (the model raised something that
#: is not a violation, or the worker died).
Outcome = tuple[ProgramResult | None, str | None]


@functools.lru_cache(maxsize=8)
def _config(preset: str, bugs: tuple[str, ...]) -> Config:
    cfg = Config.preset(preset)
    return cfg.with_bugs(*bugs) if bugs else cfg


def _lost(task: Task, why: str) -> Outcome:
    return None, why


def explore_one(task: Task) -> Outcome:
    """Explore one program (the function the executors map)."""
    try:
        return explore_program(task.program, _config(task.preset, task.bugs),
                               dpor_executions=task.dpor_executions,
                               pct_executions=task.pct_executions, seed=task.seed), None
    except Exception as exc:  # noqa: BLE001 - this program's result, not the campaign's end
        return None, f"internal error: {type(exc).__name__}: {exc}".splitlines()[0]


# --- executors ---------------------------------------------------------------

class Executor(Protocol):
    """Maps a function over a list of items somewhere; results in the items'
    order.  An item whose worker is lost gives ``lost(item, why)`` instead."""

    workers: int
    where: str

    def map(self, fn: Callable[[T], R], items: list[T],
            lost: Callable[[T, str], R]) -> Iterator[R]: ...

    def close(self, abort: bool = False) -> None: ...


class InProcess:
    """One worker: this process."""

    workers = 1
    where = "this process"

    def map(self, fn: Callable[[T], R], items: list[T],
            lost: Callable[[T, str], R]) -> Iterator[R]:
        return (fn(t) for t in items)

    def close(self, abort: bool = False) -> None:
        pass


class LocalProcesses:
    """``workers`` local processes (a process pool, made again if one dies)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.where = f"{workers} local worker processes"
        self._pool: ProcessPoolExecutor | None = None
        self._start()  # fork now, before a progress display starts its thread

    def _start(self) -> ProcessPoolExecutor:
        from pervma.check.api import _worker_init

        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, initializer=_worker_init)
            self._pool.submit(int).result()
        return self._pool

    def map(self, fn: Callable[[T], R], items: list[T],
            lost: Callable[[T, str], R]) -> Iterator[R]:
        pool = self._start()
        futs: list[Future[R]] = [pool.submit(fn, t) for t in items]
        return self._gather(futs, items, lost)

    def _gather(self, futs: list[Future[R]], items: list[T],
                lost: Callable[[T, str], R]) -> Iterator[R]:
        for f, t in zip(futs, items, strict=True):
            try:
                yield f.result()
            except BrokenProcessPool:
                self.close(abort=True)  # the next map starts a new pool
                yield lost(t, "worker process died while running it")

    def close(self, abort: bool = False) -> None:
        if self._pool is not None:
            if abort:
                from pervma.check.api import _end_workers

                _end_workers(self._pool)
            else:
                self._pool.shutdown(wait=True)
            self._pool = None


class DaskExecutor:
    """A Dask cluster: the scheduler at ``address``, or a local cluster of
    ``workers`` processes (``processes=False``: threads of this process)."""

    def __init__(self, workers: int, address: str | None = None,
                 processes: bool = True) -> None:
        import logging

        from distributed import Client, LocalCluster

        self._cluster: Any = None
        if address is not None:
            check_address(address)
            try:
                self._client = Client(address, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as exc:
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise UsageError(f"cannot reach the Dask scheduler at {address}: {why}") from None
            try:  # a scheduler without workers would leave every program waiting
                self._client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                self._client.close()
                raise UsageError(f"the Dask scheduler at {address} has no workers "
                                 f"(waited {CONNECT_TIMEOUT:g} s)") from exc
            n = len(self._client.scheduler_info().get("workers", {}))
            self.workers = max(1, n)
            self.where = f"the Dask scheduler at {address} ({n} workers)"
        else:
            # The workers' processes start with SIGINT ignored (they inherit it),
            # so that ^C is this process's to handle, as with LocalProcesses; the
            # scheduler's HTTP server takes a free port (8787 may be taken).
            # The workers log only what is critical: a worker that dies is a
            # row of its own, and a ^C that closes the scheduler under them
            # would otherwise print their failed heartbeats' tracebacks.
            old = _ignore_sigint()
            try:
                self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                             processes=processes, dashboard_address=":0",
                                             silence_logs=logging.CRITICAL)
            finally:
                if old is not None:
                    signal.signal(signal.SIGINT, old)
            self._client = Client(self._cluster)
            self.workers = workers
            self.where = f"a local Dask cluster of {workers} workers"

    def map(self, fn: Callable[[T], R], items: list[T],
            lost: Callable[[T, str], R]) -> Iterator[R]:
        futs = self._client.map(fn, items, pure=False)
        return self._gather(futs, items, lost)

    def _gather(self, futs: list[Any], items: list[T],
                lost: Callable[[T, str], R]) -> Iterator[R]:
        try:
            for f, t in zip(futs, items, strict=True):
                try:
                    yield f.result()
                except Exception as exc:  # noqa: BLE001 - a lost worker: that item's result
                    yield lost(t, f"Dask worker failed: {type(exc).__name__}: {exc}"
                               .splitlines()[0])
        finally:
            self._client.cancel(futs)

    def close(self, abort: bool = False) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


class _InterruptLatch:
    """A ^C that also leaves a mark: Python's SIGINT handler raises
    KeyboardInterrupt wherever the main thread is, and a library waiting there
    (Dask's client, waiting for a result) may swallow it; the campaign then
    still stops at the next result it takes (:meth:`check`).  Installed only
    where SIGINT has Python's default handler (not in a background job that
    ignores it, nor outside the main thread)."""

    def __init__(self) -> None:
        self.seen = False
        self.old: Any = None
        try:
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self.old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self.old = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.seen:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
            self.old = None


def _ignore_sigint() -> Any:
    """Ignore SIGINT; the handler it had (None: not the main thread, unchanged)."""
    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        return None


def check_address(address: str) -> None:
    """A Dask scheduler address: ``tcp://HOST:PORT`` (or ``tls://``)."""
    bad = UsageError(f"--scheduler wants tcp://HOST:PORT (or tls://HOST:PORT), got {address!r}")
    try:
        u = urlsplit(address)
        port = u.port
    except ValueError:
        raise bad from None
    if u.scheme not in ("tcp", "tls") or not u.hostname or port is None or port == 0 \
            or u.path not in ("", "/") or u.query or u.fragment:
        raise bad


def make_executor(workers: int, dask: bool = False, scheduler: str | None = None) -> Executor:
    """The executor the command line asks for."""
    if scheduler is not None:
        return DaskExecutor(workers, scheduler)
    if dask:
        return DaskExecutor(workers)
    return InProcess() if workers <= 1 else LocalProcesses(workers)


# --- the campaign -------------------------------------------------------------

class FindingsLike(Protocol):
    """What the campaign asks of :class:`pervma.check.fuzz.findings.Findings`."""

    def add(self, index: int, prog: Program, res: ProgramResult) -> str | None: ...

    def summary(self) -> list[dict[str, Any]]: ...

    def write(self, directory: Path) -> None: ...


@dataclass
class Point:
    """The campaign after one program: a row of ``coverage.csv``."""

    program: int
    round: int
    seconds: float  # since the campaign began (the only wall-clock column)
    executions: int
    racing_pairs: int
    corpus: int
    unique_violations: int
    hits: int


CSV_COLUMNS = ("program", "round", "seconds", "executions", "racing_pairs", "corpus",
               "unique_violations", "hits")


@dataclass
class Campaign:
    """A campaign over ``preset`` (``bugs`` switched on in the exploration only)."""

    seed: int
    preset: str
    bugs: list[str]
    findings: FindingsLike
    programs: int  # the most programs to explore
    time_limit: float | None = None  # seconds after which no new round starts
    round_size: int = ROUND_SIZE
    dpor_executions: int = 300
    pct_executions: int = 100
    corpus: Corpus = field(default_factory=Corpus)
    rows: list[dict[str, Any]] = field(default_factory=list)
    curve: list[Point] = field(default_factory=list)
    executions: int = 0
    hits: int = 0
    unique: list[str] = field(default_factory=list)
    rounds: int = 0
    stopped: str = ""  # "programs", "time", "interrupted" or "asked" (by on_program)
    started: float = 0.0

    def run(self, executor: Executor,
            on_program: Callable[[int, Program, Origin, Outcome, dict[str, Any]], bool | None]
            | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """Run rounds until ``programs`` are done or ``time_limit`` passed
        (the first round always runs).  A KeyboardInterrupt ends the campaign
        with what was accounted so far (``stopped == "interrupted"``), as does
        ``on_program`` returning True (``stopped == "asked"``)."""
        gen_cfg = Config.preset(self.preset)  # the draw never depends on --bug
        self.started = clock()
        done = 0
        self.stopped = "programs"
        sigint = _InterruptLatch()
        try:
            while done < self.programs:
                sigint.check()
                if self.rounds and self.time_limit is not None \
                        and clock() - self.started >= self.time_limit:
                    self.stopped = "time"
                    break
                k = self.rounds
                parents = self.corpus.snapshot()
                n = min(self.round_size, self.programs - done)
                drawn = [draw(self.seed, done + s, k, s, parents, gen_cfg) for s in range(n)]
                tasks = [Task(done + s, p, self.preset, tuple(self.bugs), self.dpor_executions,
                              self.pct_executions, self.seed) for s, (p, _) in enumerate(drawn)]
                self.rounds += 1
                for s, out in enumerate(executor.map(explore_one, tasks, _lost)):
                    sigint.check()
                    prog, origin = drawn[s]
                    row = self._account(done + s, k, prog, origin, out, clock)
                    if on_program is not None and on_program(done + s, prog, origin, out, row):
                        self.stopped = "asked"
                        executor.close(abort=True)
                        return
                done += n
        except KeyboardInterrupt:
            # model threads dropped mid-step are not "never awaited" bugs
            warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
            self.stopped = "interrupted"
            executor.close(abort=True)
            return
        finally:
            sigint.restore()
        executor.close()

    def _account(self, index: int, k: int, prog: Program, origin: Origin, out: Outcome,
                 clock: Callable[[], float]) -> dict[str, Any]:
        res, err = out
        row: dict[str, Any] = {"program": index, "round": k, "origin": origin.to_json()}
        if res is None:
            row["error"] = err
        else:
            fid = None
            if res.violation is not None:
                fid = self.findings.add(index, prog, res)
                if fid is not None:
                    self.hits += 1
                    if fid not in self.unique:
                        self.unique.append(fid)
            new = self.corpus.consider(index, prog, res.coverage, res.violation is not None)
            self.executions += res.executions
            o = res.oracle
            row.update({"violation": None if res.violation is None else
                        {"kind": res.violation[0], "message": res.violation[1]},
                        "finding": fid, "executions": res.executions, "complete": res.complete,
                        "new_racing_pairs": len(new),
                        "in_corpus": bool(self.corpus.entries)
                        and self.corpus.entries[-1].index == index,
                        "oracle": {"judged": o.judged, "skipped": o.skipped,
                                   "undecided": o.undecided}})
        self.rows.append(row)
        self.curve.append(Point(index, k, clock() - self.started, self.executions,
                                len(self.corpus.cover), len(self.corpus), len(self.unique),
                                self.hits))
        return row

    def summary(self, programs_asked: int | None) -> dict[str, Any]:
        """``summary.json``: everything but wall-clock times, so that the same
        seed and program count give the same file whatever the workers."""
        return {"schema": "pervma-fuzz-summary", "version": 2, "seed": self.seed,
                "preset": self.preset, "bugs": self.bugs, "round_size": self.round_size,
                "programs_asked": programs_asked, "time_limit": self.time_limit,
                "programs_done": len(self.rows), "rounds": self.rounds,
                "stopped": self.stopped, "dpor_executions": self.dpor_executions,
                "pct_executions": self.pct_executions, "executions": self.executions,
                "unique_violations": len(self.unique), "violation_hits": self.hits,
                "results": self.rows,
                "corpus": [e.index for e in self.corpus.entries],
                "coverage": [pair_name(p) for p in sorted(self.corpus.cover)],
                "findings": self.findings.summary()}

    def csv(self) -> str:
        lines = [",".join(CSV_COLUMNS)]
        for p in self.curve:
            lines.append(f"{p.program},{p.round},{p.seconds:.3f},{p.executions},"
                         f"{p.racing_pairs},{p.corpus},{p.unique_violations},{p.hits}")
        return "\n".join(lines) + "\n"


def rate(points: Iterable[Point]) -> float:
    """Executions per second over the points."""
    pts = list(points)
    if not pts or pts[-1].seconds <= 0:
        return 0.0
    return pts[-1].executions / pts[-1].seconds
