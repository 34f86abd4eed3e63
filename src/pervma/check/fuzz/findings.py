"""A campaign's findings: checked, deduplicated by signature, minimised, saved
(issue #15, item 4, and the ``--bug`` rule of item 3).

:meth:`Findings.add` takes, in program order, every explored program whose
exploration met a violation:

1. **Caused by the switch?**  Under ``--bug``, the violating schedule is
   replayed on the same program with every bug switch off.  If it fails there
   too, the violation is not the switch's doing: it is not counted (``add``
   returns None) and is kept in :attr:`Findings.not_caused` instead, which
   the summary lists apart, since it is a violation of the correct model.
2. **Signature**: the oracle (the violation's kind), the code site (the model
   function the check fired in: the innermost ``kernel/`` frame outside the
   checks and assertion helpers themselves; for a check made once the threads
   are done, such as validate_mm, the check and its message without numbers;
   for the serial-order oracle, the oracle) and the
   lock state (the lockdep classes and modes the violating thread held, RCU
   first).  Numbers, addresses and object ids are left out, so two programs
   that hit the same bug in the same place share a signature.
3. **Dedup**: a known signature counts one more hit.
4. **Minimisation** of a new one, program first: each thread, each call, the
   userfaultfd, each VMA, each unused process and each VMA's population is
   dropped in turn (delta debugging at the granularity of one unit, passes
   until a pass removes nothing: the result is 1-minimal) and a candidate is
   kept when exploring it with the campaign's budgets meets a violation of the
   same signature (and, under ``--bug``, a schedule clean with the switches
   off).  At most :data:`MINIMISE_CANDIDATES` candidate explorations per
   finding.  Then the schedule (:mod:`pervma.check.minimise`: fewest
   preemptions, then fewest steps).

Everything is counted, nothing timed, so the same inputs give the same
findings, ids, programs and files.  Nothing here is reachable from a model
thread: the findings never enter a state key.
"""

from __future__ import annotations

import dataclasses
import json
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pervma.check.engine import Replayed, replay
from pervma.check.fuzz.explore import (
    DPOR_EXECUTIONS,
    PCT_EXECUTIONS,
    ProgramResult,
    explore_program,
    program_scenario,
)
from pervma.check.fuzz.oracle import SerialOracle
from pervma.check.fuzz.program import Program, from_json
from pervma.check.minimise import minimise as _minimise
from pervma.check.output import model_version, replay_document, table
from pervma.check.replayfile import FORMAT_V2, PROGRAM_SCENARIO
from pervma.check.search import Found, Runner
from pervma.config import Config
from pervma.errors import PervmaError
from pervma.sched import Violation

#: Candidate programs one finding's minimisation may explore.
MINIMISE_CANDIDATES = 40

#: Model files that hold the checks themselves: a violation raised there is
#: attributed to the model function that called the check.
_CHECK_FILES = frozenset({"debug.py", "lockdep.py"})

#: Assertion helpers (mmap_assert_locked, vma_assert_detached, VM_BUG_ON...):
#: the site is their caller.
_CHECK_NAME = re.compile(r"assert|^VM_|^kasan")

_UNREPLAYED = "(did not replay)"

_NUMBER = re.compile(r"\b(?:0x[0-9a-fA-F]+|\d+)\b")


@dataclass(frozen=True, slots=True)
class Signature:
    kind: str  # the oracle: "KASAN: use-after-free", "validate_mm", "serial-order", ...
    site: str  # "kernel/fault.py:handle_mm_fault"
    locks: tuple[str, ...]  # "mmap_lock:read", ... as the violating thread held them

    def text(self) -> str:
        held = ", ".join(self.locks) or "no locks"
        return f"{self.kind} at {self.site} holding {held}"


@dataclass
class Finding:
    id: str
    signature: Signature
    first: int  # the program index that found it first
    programs: list[int]  # every program index that hit it
    program: Program  # the minimised program
    original: dict[str, int]  # sizes of the first program
    result: ProgramResult  # the minimised program's exploration (schedule minimised)
    doc: dict[str, Any]  # the replay file
    step: str  # the label of the violating step
    candidates: int  # candidate explorations the program minimisation spent
    cut: bool  # it stopped at MINIMISE_CANDIDATES

    @property
    def hits(self) -> int:
        return len(self.programs)


def sizes(prog: Program) -> dict[str, int]:
    return {"processes": len(prog.processes), "vmas": sum(len(p.vmas) for p in prog.processes),
            "threads": len(prog.threads), "calls": sum(len(t.calls) for t in prog.threads)}


# -- the signature ---------------------------------------------------------------------

def _site(v: BaseException, fallback: str) -> str:
    frames = [f for f in traceback.extract_tb(v.__traceback__)
              if "/pervma/" in f.filename.replace("\\", "/")
              and "/pervma/sched/" not in f.filename.replace("\\", "/")]

    def name(f: traceback.FrameSummary) -> str:
        p = Path(f.filename)
        return f"{p.parent.name}/{p.name}:{f.name}"

    model = [f for f in frames if Path(f.filename).parent.name == "kernel"]
    checked = [f for f in model if Path(f.filename).name not in _CHECK_FILES
               and not _CHECK_NAME.search(f.name)]
    if checked:
        return name(checked[-1])  # the model function whose check fired
    if model:  # a check run on its own (validate_mm at the end): which of its checks
        what = _NUMBER.sub("N", str(getattr(v, "message", "")).split("\n")[0])
        return f"{name(model[0])}: {what[:60]}"
    if frames:
        return name(frames[-1])  # a checker-side oracle (serial-order)
    return fallback


def _held(task: Any) -> tuple[str, ...]:
    tsk = getattr(task, "model", None)
    if tsk is None:
        return ()
    locks = ["rcu_read_lock:read"] if tsk.rcu_depth else []
    return tuple(locks + [f"{h.name}:{h.mode}" for h in tsk.held])


def signature(rep: Replayed) -> Signature:
    """The signature of a replayed violation (module docstring, step 2)."""
    v = rep.violation
    assert v is not None
    if v.kind == "deadlock":
        waits = sorted({op.label for t in rep.ex.tasks if (op := t.pending) is not None})
        return Signature(v.kind, "waits in " + ", ".join(waits), ())
    step = rep.ex.trace[-1] if rep.ex.trace else None
    label = _NUMBER.sub("N", step[1].label) if step else "setup"
    if rep.ex.violation is v and step is not None:  # raised in the violating step
        return Signature(v.kind, _site(v, f"step {label}"), _held(rep.ex.tasks[step[0]]))
    return Signature(v.kind, _site(v, "end of the execution"), ())  # the threads were done


def _setup_signature(v: Violation) -> Signature:
    """A violation raised while the setup ran (the direct runner): its lock
    state is what the setup's thread held then, as for a violating step."""
    return Signature(v.kind, _site(v, "setup"), _held(_setup_task(v)))


def _setup_task(v: BaseException) -> Any:
    """The direct runner's task the violation was raised in (its innermost
    ``run_direct`` frame), or None."""
    task = None
    tb = v.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "run_direct" and "/pervma/sched/" in code.co_filename.replace("\\", "/"):
            task = tb.tb_frame.f_locals.get("task", task)
        tb = tb.tb_next
    return task


# -- replays -----------------------------------------------------------------------------

def _runner(prog: Program, cfg: Config, run_scope: dict[str, Any]) -> Runner:
    runner = Runner(program_scenario(prog, SerialOracle(prog, cfg)), cfg)
    runner.scope.replay = dict(run_scope)
    return runner


def _replay(prog: Program, cfg: Config, res: ProgramResult,
            strict: bool = True) -> tuple[Replayed | None, Signature | None]:
    """Replay ``res``'s schedule on a fresh world: the replay and the signature
    of its violation (None when it ran clean); a violation of the setup has no
    replay."""
    runner = _runner(prog, cfg, res.run_scope)
    try:
        rep = replay(runner.instance(), cfg, res.schedule, strict=strict,
                     max_steps=runner.max_steps)
    except Violation as v:
        return None, _setup_signature(v)
    if rep.violation is None:
        return rep, None
    return rep, signature(rep)


class Findings:
    """The unique findings of a campaign (module docstring)."""

    def __init__(self, cfg: Config, bugs: list[str], preset: str, *,
                 dpor_executions: int = DPOR_EXECUTIONS, pct_executions: int = PCT_EXECUTIONS,
                 seed: int = 0, max_candidates: int = MINIMISE_CANDIDATES) -> None:
        self.cfg = cfg
        self.bugs = sorted(bugs)
        self.preset = preset
        self.clean_cfg = dataclasses.replace(cfg, bugs=frozenset())
        self.dpor_executions = dpor_executions
        self.pct_executions = pct_executions
        self.seed = seed
        self.max_candidates = max_candidates
        self.findings: list[Finding] = []
        self._by_sig: dict[Signature, Finding] = {}
        #: Violations under --bug that the same program and schedule also give
        #: with every switch off: not counted, listed apart.
        self.not_caused: list[dict[str, Any]] = []

    # -- add -------------------------------------------------------------------------
    def add(self, index: int, prog: Program, res: ProgramResult) -> str | None:
        """Account program ``index``'s violation; the finding id, or None when
        it is not counted (module docstring)."""
        if res.violation is None:
            return None
        _, sig = self._judge(prog, res)
        if self.bugs:
            off = self._off(prog, res)
            if off is not None:
                self.not_caused.append({
                    "program": index, "kind": res.violation[0], "message": res.violation[1],
                    "without_switches": {"kind": off[0], "message": off[1]}})
                return None
        if sig is None:  # the schedule did not replay: keep what the exploration said
            sig = Signature(res.violation[0], _UNREPLAYED, ())
        known = self._by_sig.get(sig)
        if known is not None:
            known.programs.append(index)
            return known.id
        f = self._new(index, prog, res, sig)
        self._by_sig[sig] = f
        self.findings.append(f)
        return f.id

    def _judge(self, prog: Program, res: ProgramResult) -> tuple[Replayed | None,
                                                                   Signature | None]:
        try:
            return _replay(prog, self.cfg, res)
        except PervmaError:
            return None, None

    def _off(self, prog: Program, res: ProgramResult) -> tuple[str, str] | None:
        """The violation the same schedule gives with every switch off, if any
        (entries that cannot run there are skipped, the rest run to the end).
        The run scope starts empty: what lockdep learnt in executions with the
        switches on must not speak for the kernel without them."""
        runner = _runner(prog, self.clean_cfg, {})
        try:
            rep = replay(runner.instance(), self.clean_cfg, res.schedule, strict=False,
                         max_steps=runner.max_steps)
        except Violation as v:
            return (str(v.kind), str(v.message))
        except PervmaError:
            return None
        v2 = rep.violation
        return None if v2 is None else (str(v2.kind), str(v2.message))

    def _explore(self, prog: Program, minimise: bool) -> ProgramResult | None:
        try:
            return explore_program(prog, self.cfg, dpor_executions=self.dpor_executions,
                                   pct_executions=self.pct_executions, seed=self.seed,
                                   minimise=minimise)
        except PervmaError:  # a setup the model refuses
            return None

    def _keeps(self, prog: Program, res: ProgramResult | None,
               sig: Signature) -> tuple[Replayed | None, bool]:
        if res is None or res.violation is None:
            return None, False
        rep, got = self._judge(prog, res)
        if got != sig:
            return None, False
        if self.bugs and self._off(prog, res) is not None:
            return None, False
        return rep, True

    # -- minimisation ------------------------------------------------------------------
    def _try(self, cand: Program, schedule: list[int], run_scope: dict[str, Any],
             sig: Signature) -> tuple[list[int], dict[str, Any]] | None:
        """Does ``cand`` still fail with ``sig``?  First the violating schedule
        carried over (one replay; entries that cannot run are skipped), then an
        exploration with the campaign's budgets.  The schedule and run scope
        that show it, else None."""
        runner = _runner(cand, self.cfg, run_scope)
        try:
            rep = replay(runner.instance(), self.cfg, schedule, strict=False,
                         max_steps=runner.max_steps)
            if rep.violation is not None and signature(rep) == sig:
                got = ProgramResult(violation=(rep.violation.kind, rep.violation.message),
                                    schedule=list(rep.schedule),
                                    run_scope=dict(runner.scope.replay))
                if not self.bugs or self._off(cand, got) is None:
                    return got.schedule, got.run_scope
        except (Violation, PervmaError):
            pass
        res = self._explore(cand, minimise=False)
        _, ok = self._keeps(cand, res, sig)
        if not ok:
            return None
        assert res is not None
        return res.schedule, res.run_scope

    def _new(self, index: int, prog: Program, res: ProgramResult, sig: Signature) -> Finding:
        fid = f"finding-{len(self.findings) + 1:04d}"
        best, sched, scope = prog, list(res.schedule), dict(res.run_scope)
        spent, cut, changed = 0, False, sig.site != _UNREPLAYED
        while changed and not cut:
            changed = False
            for unit in _UNITS:
                k = 0
                while True:
                    cand = _drop(best, unit, k)
                    if cand is _END:
                        break
                    if cand is None:
                        k += 1
                        continue
                    if spent >= self.max_candidates:
                        cut = True
                        break
                    spent += 1
                    assert isinstance(cand, Program)
                    got = self._try(cand, _project(sched, unit, k, best), scope, sig)
                    if got is not None:
                        best, (sched, scope), changed = cand, got, True
                    else:
                        k += 1
                if cut:
                    break
        out = self._counterexample(fid, best, sched, scope, sig, res)
        return Finding(fid, sig, index, [index], best, sizes(prog), out[0], out[1], out[2],
                       spent, cut)

    def _counterexample(self, fid: str, prog: Program, sched: list[int],
                        scope: dict[str, Any], sig: Signature,
                        found: ProgramResult) -> tuple[ProgramResult, dict[str, Any], str]:
        """Minimise the schedule (:mod:`pervma.check.minimise`), keeping the
        signature, and make the result, the replay file and the step label."""
        assert found.violation is not None
        kind, message = found.violation
        res = ProgramResult(violation=found.violation, schedule=sched, run_scope=scope,
                            strategy=found.strategy)
        runner = _runner(prog, self.cfg, scope)
        try:
            first = replay(runner.instance(), self.cfg, sched, strict=True,
                           max_steps=runner.max_steps)
            m = _minimise(runner, Found(kind, message, list(first.schedule), first.preemptions,
                                        self.seed)).found
            cands = [m.schedule, sched] if m.schedule != sched else [sched]
        except (Violation, PervmaError):  # the setup fails: there is no schedule to show
            res.counterexample = found.counterexample
            return res, self._doc(prog, res, kind, message, None), "setup"
        for cand in cands:
            runner = _runner(prog, self.cfg, scope)
            rep = replay(runner.instance(), self.cfg, cand, strict=True, snapshots=True,
                         max_steps=runner.max_steps)
            if rep.violation is not None and signature(rep) == sig:
                break
        v = rep.violation
        if v is not None:
            kind, message = v.kind, v.message
        res.violation, res.schedule = (kind, message), list(rep.schedule)
        res.run_scope = dict(runner.scope.replay)
        bugs = f", bugs {','.join(self.bugs)}" if self.bugs else ""
        res.counterexample = table(rep, [t.name for t in rep.ex.tasks], f"BUG: {kind}: {message}",
                                   f"{fid}: generated program (minimised), preset "
                                   f"{self.preset}{bugs}; {rep.preemptions} preemption(s), "
                                   f"{len(rep.schedule)} steps")
        step = rep.ex.trace[-1][1].label if rep.ex.trace else "setup"
        return res, self._doc(prog, res, kind, message, rep), step

    def _doc(self, prog: Program, res: ProgramResult, kind: str, message: str,
             rep: Replayed | None) -> dict[str, Any]:
        if rep is None:  # the setup itself fails: an empty schedule
            doc: dict[str, Any] = {
                "format": FORMAT_V2, "scenario": PROGRAM_SCENARIO, "preset": self.preset,
                "bugs": self.bugs, "config": None, "schedule": [], "strategy": "dpor",
                "seed": self.seed, "model_version": model_version(),
                "violation": {"kind": kind, "message": message}, "preemptions": 0}
            if res.run_scope:
                doc["run_scope"] = res.run_scope
        else:
            doc = replay_document(
                scenario=PROGRAM_SCENARIO, preset=self.preset, bugs=self.bugs, config=None,
                schedule=rep.schedule, strategy="pct" if res.strategy == "pct" else "dpor",
                seed=self.seed, kind=kind, message=message, preemptions=rep.preemptions,
                res=rep, run_scope=res.run_scope)
            doc["format"] = FORMAT_V2
        doc["program"] = prog.to_json()
        return doc

    # -- results -----------------------------------------------------------------------
    def summary(self) -> list[dict[str, Any]]:
        """One entry per unique finding, in the order they were found."""
        out = []
        for f in self.findings:
            r = f.result
            kind, message = r.violation or (f.signature.kind, "")
            out.append({
                "id": f.id, "kind": f.signature.kind, "site": f.signature.site,
                "locks": list(f.signature.locks), "step": f.step, "hits": f.hits,
                "first_program": f.first, "programs": list(f.programs),
                "message": message, "violation_kind": kind,
                "original": dict(f.original),
                "minimised": {**sizes(f.program), "steps": len(r.schedule),
                              "preemptions": int(f.doc.get("preemptions", 0)),
                              "candidates": f.candidates, "cut": f.cut},
                "files": [f"{f.id}.program.json", f"{f.id}.replay.json", f"{f.id}.txt"]})
        return out

    @property
    def hits(self) -> int:
        return sum(f.hits for f in self.findings)

    def write(self, directory: Path) -> None:
        """``<id>.program.json``, ``<id>.replay.json`` and ``<id>.txt`` per finding,
        into an existing ``directory``."""
        d = Path(directory)
        for f in self.findings:
            (d / f"{f.id}.program.json").write_text(f.program.dumps())
            (d / f"{f.id}.replay.json").write_text(json.dumps(f.doc, indent=1) + "\n")
            head = (f"{f.id}: {f.signature.text()}\n{f.hits} hit(s), first by program "
                    f"{f.first}; minimised from {_size_text(f.original)} to "
                    f"{_size_text(sizes(f.program))}\n"
                    f"replay: pervma replay {f.id}.replay.json\n\n")
            (d / f"{f.id}.txt").write_text(head + f.program.describe() + "\n"
                                           + f.result.counterexample + "\n")


def _size_text(s: dict[str, int]) -> str:
    return f"{s['threads']} threads, {s['calls']} calls, {s['vmas']} VMAs"


# -- program reductions --------------------------------------------------------------------

_UNITS = ("thread", "call", "uffd", "vma", "process", "populate")
_END = object()


def _project(schedule: list[int], unit: str, k: int, prog: Program) -> list[int]:
    """The violating schedule carried over to the program without its ``k``-th
    ``unit``: a dropped thread's steps go and the later threads' indices move
    down; for other units the schedule stays (a replay skips what cannot run)."""
    if unit != "thread" or k >= len(prog.threads):
        return list(schedule)
    return [t - (t > k) for t in schedule if t != k]


def _drop(prog: Program, unit: str, k: int) -> Program | None | object:
    """The program without its ``k``-th ``unit``; None when that one cannot go
    (the result would not be a valid program); ``_END`` past the last."""
    d = prog.to_json()
    setup, threads = d["setup"], d["threads"]
    procs = setup["processes"]
    if unit == "thread":
        if k >= len(threads):
            return _END
        if len(threads) == 1:
            return None
        del threads[k]
    elif unit == "call":
        flat = [(i, j) for i, t in enumerate(threads) for j in range(len(t["calls"]))]
        if k >= len(flat):
            return _END
        i, j = flat[k]
        if len(threads[i]["calls"]) == 1:
            return None  # that is the thread's removal
        del threads[i]["calls"][j]
    elif unit == "uffd":
        if k > 0 or setup["uffd"] is None:
            return _END
        setup["uffd"] = None
    elif unit == "vma":
        flat = [(i, j) for i, p in enumerate(procs) for j in range(len(p["vmas"]))]
        if k >= len(flat):
            return _END
        i, j = flat[k]
        del procs[i]["vmas"][j]
        u = setup["uffd"]
        if u is not None and u["process"] == procs[i]["name"]:
            if u["vma"] == j:
                return None
            if u["vma"] > j:
                u["vma"] -= 1
    elif unit == "process":
        if k >= len(procs):
            return _END
        name = procs[k]["name"]
        if (any(t["process"] == name for t in threads)
                or any(p["fork_of"] == name for p in procs)
                or (setup["uffd"] is not None and setup["uffd"]["process"] == name)):
            return None
        del procs[k]
    elif unit == "populate":
        populated = [v for p in procs for v in p["vmas"] if v["populate"]]
        if k >= len(populated):
            return _END
        populated[k]["populate"] = False
    try:
        return from_json(d)
    except PervmaError:
        return None
