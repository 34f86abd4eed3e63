"""One execution of a scenario under the checker's control.

:class:`Execution` wraps an :class:`~pervma.sched.Executor` and advances it by
*transitions*: on an SMP preset a transition is one primitive step; on a
one-CPU preset it is the run of steps from one switch point to the next, so
the thread keeps the CPU while it is not preemptible (``preempt_count > 0``,
or always when ``PREEMPT=n``) and gives it up only where it sleeps, blocks or
finishes.  That makes "where the model allows a switch" a property of the
exploration for every strategy: at every transition boundary any runnable
thread may run.  Steps that touch nothing shared (``OpKind.LOCAL``) are folded
into the preceding transition.

Each transition becomes an :class:`Event` with the locations it touched and a
vector clock (happens-before from program order and from dependent accesses:
same location, at least one writes), which DPOR and the trace statistics use.

The bookkeeping is incremental and costs a few dictionary operations per
location a transition touches: per-location tables of the last write and the
reads since it give each event's dependent predecessors (kept on the event as
``deps``, so DPOR's race analysis needs no tables of its own), an event's
clock is joined only with the predecessors it does not already cover, and a
clock, once recorded, is never changed again, so it is shared by reference
(the thread's current clock, the next event's ``pclock``).
"""

from __future__ import annotations

import operator
from collections.abc import Hashable
from dataclasses import dataclass

from pervma.check import template
from pervma.check.scenario import Instance
from pervma.config import Config
from pervma.sched import Executor, Op, OpKind, Violation
from pervma.sched.task import ReadOf

#: Per-thread step bound used when a scenario sets none.  A retry or wait loop
#: that runs a thread past this many primitive steps in one execution cuts the
#: execution and makes the run incomplete (the "livelock bound").
DEFAULT_MAX_STEPS = 4000

Acc = dict[Hashable, bool]  # location -> written?

_LOCAL = OpKind.LOCAL
#: ``OpKind.dependency_writes`` by kind value: a tuple lookup instead of a
#: property call.  (The read side of an rw_semaphore counts as a read: its
#: steps commute with each other; an observer of a lock word as a write.)
_WRITES: tuple[bool, ...] = tuple(OpKind(v).dependency_writes for v in range(max(OpKind) + 1))


def op_access(op: Op) -> list[tuple[Hashable, bool]]:
    """The (location, writes) pairs a step touches (``Op.also`` included)."""
    if op.loc is None:
        return []
    w = _WRITES[op.kind]
    also = getattr(op, "also", None)
    return [(op.loc, w)] if also is None else [(op.loc, w), (also, w)]


def close_executor(ex: Executor) -> None:
    """Close unfinished coroutines of a cut-short execution.  Model code may
    run ``finally`` blocks that await (an unlock) while being closed; what
    they raise then is of no interest to the checker."""
    for t in ex.tasks:
        if not t.done:
            t.done = True
            try:
                t.coro.close()
            except BaseException:  # noqa: B036 - GeneratorExit fallout, RuntimeError
                pass


def abandon_executor(ex: Executor) -> None:
    """Mark the unfinished threads of an execution the search drops as
    finished, with every coroutine they are suspended in, without running
    any of them (:func:`close_executor` throws into each chain and runs the
    model's ``finally`` blocks frame by frame, which nothing reads for an
    execution that is dropped).  Where coroutines cannot be marked (no
    ``_frames``), they are closed."""
    if not template.FRAMES:
        close_executor(ex)
        return
    tops = []
    for t in ex.tasks:
        if not t.done:
            t.done = True
            tops.append(t.coro)
    if tops:
        template.kill_chains(tops)


def _executor(inst: Instance, record: bool) -> Executor:
    """An executor for ``inst``; a Python error while the threads run up to
    their first step becomes an ``exception`` violation."""
    try:
        return Executor(inst.bodies, names=inst.names, models=inst.models, record=record,
                        run=inst.run, memory=inst.memory)
    except Exception as exc:
        ex = Executor([], record=record)
        ex.violation = _crash("setup", exc)
        return ex


def _crash(name: str, exc: Exception) -> Violation:
    """An unexpected Python exception in a model thread, as a violation."""
    return Violation("exception", f"{name} raised {type(exc).__name__}: {exc}")


def dependent(a: Acc, b: Acc) -> bool:
    if len(a) > len(b):
        a, b = b, a
    for loc, w in a.items():
        w2 = b.get(loc)
        if w2 is not None and (w or w2):
            return True
    return False


@dataclass(slots=True)
class Event:
    """One transition: thread, per-thread sequence number (1-based), accesses.

    ``clock`` is the vector clock; ``pclock`` the clock of the thread's
    previous event (all zeros for its first); ``deps`` the indices of the
    earlier events this one depends on directly: for each location, the
    last write before it and, when it writes, the reads since that write
    (in that order; an index may repeat)."""

    tid: int
    seq: int
    acc: Acc
    nsteps: int
    clock: list[int]  # never mutated once recorded
    preemption: bool
    deps: list[int]
    pclock: list[int]
    # For each location in ``acc``, the index of the latest earlier event
    # that touched it (-1: none): the events on one location, newest first,
    # without a table built per question (dpor.summary_races).  Valid in
    # every execution that reuses the event: they share its prefix.
    before: dict[Hashable, int]


class Execution:
    """Drive one fresh :class:`Instance` transition by transition."""

    def __init__(self, inst: Instance, cfg: Config, max_steps: int = DEFAULT_MAX_STEPS,
                 snapshots: bool = False) -> None:
        self.inst = inst
        self.one_cpu = not cfg.SMP
        self.preempt = cfg.PREEMPT
        self.max_steps = max_steps
        self.ex = _executor(inst, snapshots)
        self.n = len(self.ex.tasks)
        self.schedule: list[int] = []  # tid of every primitive step
        self.events: list[Event] = []
        # The instances a copy made this execution from (a checkpoint's
        # restore fills it): emptied by drop() once the search is done with it.
        self.owned: list[object] | None = inst.owned
        inst.owned = None
        self.cur: int | None = None
        self.preemptions = 0
        self.violation: Violation | None = self.ex.violation
        self.livelock: tuple[str, int] | None = None
        self.snapshots: list[str] | None = [] if snapshots else None
        zero = [0] * self.n  # shared: recorded clocks are never mutated
        self._clock: list[list[int]] = [zero] * self.n
        self._last_write: dict[Hashable, int] = {}
        self._reads: dict[Hashable, list[int]] = {}
        self._last_touch: dict[Hashable, int] = {}  # the latest event on each location
        self._finished = False
        self._effects = inst.effects
        if self._effects is not None:
            self._effects()  # setup's own effects belong to no step

    # -- queries ------------------------------------------------------------
    def runnable(self) -> list[int]:
        if self.violation is not None or self.livelock is not None:
            return []
        # Task.runnable() inlined: a pending step without a condition is enabled.
        return [t.tid for t in self.ex.tasks
                if not t.done and ((op := t.pending) is None or op.enabled is None or op.enabled())]

    def over(self) -> bool:
        return not self.runnable()

    def pending_access(self, tid: int) -> list[tuple[Hashable, bool]]:
        op = self.ex.tasks[tid].pending
        return [] if op is None else op_access(op)

    def thread_clock(self, tid: int) -> list[int]:
        return self._clock[tid]

    def clocks(self) -> list[list[int]]:
        """Every thread's current clock (recorded clocks are never mutated)."""
        return list(self._clock)

    def is_preemption(self, tid: int) -> bool:
        """Would running ``tid`` now switch away from a thread that could go on?"""
        cur = self.cur
        if cur is None or cur == tid:
            return False
        return self.ex.tasks[cur].runnable()

    # -- the one operation ----------------------------------------------------
    def take(self, tid: int) -> Event:
        """Run thread ``tid`` for one transition and record it as an event."""
        ex = self.ex
        task = ex.tasks[tid]
        pre = self.is_preemption(tid)
        if pre:
            self.preemptions += 1
        acc: Acc = {}
        nsteps = 0
        # The other threads' pending steps stay the same while ``tid`` runs;
        # only one with an ``enabled`` condition can be woken or blocked by it.
        watched = [(op, op.enabled()) for t in ex.tasks
                   if t is not task and not t.done and (op := t.pending) is not None
                   and op.enabled is not None]
        schedule = self.schedule
        effects = self._effects
        snapshots = self.snapshots
        one_cpu = self.one_cpu
        step = ex.step
        while True:
            try:
                op = step(tid)
            except Exception as exc:  # a Python error in model or scenario code
                self.violation = ex.violation = _crash(task.name, exc)
                task.done = True
                break
            nsteps += 1
            schedule.append(tid)
            loc = op.loc
            if loc is not None:
                if _WRITES[op.kind]:
                    acc[loc] = True
                    if op.also is not None:
                        acc[op.also] = True
                else:
                    if loc not in acc:
                        acc[loc] = False
                    also = op.also
                    if also is not None and also not in acc:
                        acc[also] = False
            if effects is not None:
                for eloc in effects():
                    if type(eloc) is ReadOf:
                        if eloc.loc not in acc:
                            acc[eloc.loc] = False
                    else:
                        acc[eloc] = True
            if snapshots is not None:
                snapshots.append(self._snap())
            if ex.violation is not None:
                self.violation = ex.violation
                break
            if task.steps > self.max_steps:
                self.livelock = (task.name, task.steps)
                break
            nxt = task.pending
            if task.done or nxt is None:
                break
            if nxt.kind is _LOCAL and nxt.enabled is None:
                continue  # invisible step: fold it in
            if not one_cpu or not nxt.is_enabled() or nxt.sleeps or nxt.user:
                break
            if self.preempt and task.preempt_count == 0:
                break
        # A step that wakes (or blocks) another thread interferes with that
        # thread's pending step even when the wake-up goes through another
        # location (a fatal signal ending a killable wait, a grace period
        # ending): count it as a write to the waiter's locations.
        for op2, before in watched:
            if op2.enabled() != before:  # type: ignore[misc]
                if op2.loc is not None:
                    acc[op2.loc] = True
                    if op2.also is not None:
                        acc[op2.also] = True
        self.cur = tid
        ev = self._record(tid, acc, nsteps, pre)
        if self.violation is None and self.livelock is None and task.done and ex.finished():
            self._finish()
        return ev

    def retake(self, ev: Event) -> Event:
        """Take again a transition recorded by an earlier execution of the same
        prefix (the model is deterministic): the same thread for the same number
        of steps, with the recorded event reused instead of recomputing its
        accesses and vector clock.  Replaying a DFS prefix this way costs the
        model's steps and a few table updates per event."""
        ex = self.ex
        tid = ev.tid
        if self.is_preemption(tid):
            self.preemptions += 1
        step = ex.step
        schedule = self.schedule
        for _ in range(ev.nsteps):
            step(tid)
            schedule.append(tid)
        idx = len(self.events)
        lw = self._last_write
        reads = self._reads
        lt = self._last_touch
        for loc, w in ev.acc.items():
            lt[loc] = idx
            if w:
                lw[loc] = idx
                reads[loc] = []
            else:
                rs = reads.get(loc)
                if rs is None:
                    reads[loc] = [idx]
                else:
                    rs.append(idx)
        self._clock[tid] = ev.clock
        self.events.append(ev)
        self.cur = tid
        return ev

    def _snap(self) -> str:
        snap = self.inst.snapshot
        if snap is None:
            return ""
        try:
            return snap()
        except Exception as exc:  # a snapshot must never hide the real outcome
            return f"<snapshot failed: {exc!r}>"

    def _record(self, tid: int, acc: Acc, nsteps: int, pre: bool) -> Event:
        """Append the event: its dependent predecessors from the per-location
        tables (which it then updates) and its vector clock, the thread's
        previous clock joined with those of the predecessors not yet in it."""
        events = self.events
        idx = len(events)
        lw = self._last_write
        reads = self._reads
        lt = self._last_touch
        deps: list[int] = []
        before: dict[Hashable, int] = {}
        for loc, w in acc.items():
            before[loc] = lt.get(loc, -1)
            lt[loc] = idx
            j = lw.get(loc)
            if j is not None:
                deps.append(j)
            if w:
                rs = reads.get(loc)
                if rs:
                    deps.extend(rs)
                lw[loc] = idx
                reads[loc] = []
            else:
                rs = reads.get(loc)
                if rs is None:
                    reads[loc] = [idx]
                else:
                    rs.append(idx)
        prev = self._clock[tid]
        seq = prev[tid] + 1
        clock = list(prev)
        clock[tid] = seq
        for j in deps:
            ej = events[j]
            if clock[ej.tid] < ej.seq:  # else ej's whole past is in the clock already
                clock = list(map(max, clock, ej.clock))
        self._clock[tid] = clock
        ev = Event(tid, seq, acc, nsteps, clock, pre, deps, prev, before)
        events.append(ev)
        return ev

    def run_on(self) -> int:
        """After a violation, run the other threads on (the running one first,
        else the lowest runnable) until none can run, for race analysis only;
        returns the index of the first event added.

        A violation ends an execution early, so the threads that had not
        finished never show the races their later steps would have had with
        what ran before the violation; DPOR's argument needs maximal
        executions, and a search that goes on after a violation (collecting
        every violation, or every final state) would otherwise miss the
        executions that avoid it by running one of those threads earlier.
        Further violations, the finish checks and the livelock bound are
        ignored here, and the threads run without the run's scope (lockdep's
        graph learns nothing from steps that never happened); the recorded schedule and the outcome stay those of the
        violation (:meth:`drop_run_on` takes the added events away)."""
        first = len(self.events)
        saved = self.violation
        if saved is None:
            return first
        ex = self.ex
        nsched = len(self.schedule)
        cur = self.cur
        self._finished = True  # no finish checks in a run-on
        self.violation = ex.violation = None
        # What runs past a violation never happened: it must not teach the
        # run-level debug state (lockdep's graph) anything.
        scopes = [task.run for task in ex.tasks]
        for task in ex.tasks:
            task.run = None
        try:
            while True:
                en = self.runnable()
                if not en:
                    break
                t = self.cur if self.cur in en else en[0]
                self.take(t)
                if self.livelock is not None:
                    break
                self.violation = ex.violation = None
        finally:
            for task, scope in zip(ex.tasks, scopes, strict=True):
                task.run = scope
            self.violation = ex.violation = saved
            self.livelock = None
            del self.schedule[nsched:]
            self.cur = cur
        return first

    def drop_run_on(self, first: int) -> None:
        """Forget the events :meth:`run_on` added (the per-location tables of
        dependencies are left as they are: the execution is over; the latest
        event on each location goes back to what it was, for
        :func:`pervma.check.dpor.summary_races`)."""
        lt = self._last_touch
        for ev in reversed(self.events[first:]):
            for loc, b in ev.before.items():
                if b < 0:
                    lt.pop(loc, None)
                else:
                    lt[loc] = b
        del self.events[first:]

    @property
    def last_touches(self) -> dict[Hashable, int]:
        """The index of the latest event that touched each location (the
        ones before it: :attr:`Event.before`).  Read only."""
        return self._last_touch

    def last_dependent(self, loc: Hashable, writes: bool) -> int:
        """Index of the latest event dependent with an access, or -1."""
        best = self._last_write.get(loc, -1)
        if writes:
            rs = self._reads.get(loc)
            if rs:
                best = max(best, rs[-1])
        return best

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        fin = self.inst.finish
        if fin is None:
            return
        try:
            fin()
        except Violation as v:
            self.violation = v

    def end(self) -> str:
        """Settle the outcome once no thread can run: ``done``, ``violation``,
        ``deadlock`` or ``livelock``.  Closes unfinished coroutines."""
        ex = self.ex
        if self.violation is None and self.livelock is None:
            if ex.finished():
                self._finish()
            else:
                dl = ex.deadlock()
                if dl is not None:
                    self.violation = dl
        close_executor(ex)
        if self.violation is not None:
            return "violation"
        if self.livelock is not None:
            return "livelock"
        return "done"

    def drop(self) -> None:
        """The search is done with this execution and keeps nothing of it
        but its events: abandon its threads (:func:`abandon_executor`) and
        break up the copy it was made from (:func:`pervma.check.template.drop`),
        so that it is freed now, not by the cyclic garbage collector.  Nothing
        may use it afterwards."""
        abandon_executor(self.ex)
        owned = self.owned
        if owned:
            self.owned = None
            template.drop(owned)

    def trace_key(self) -> tuple[int, ...]:
        """Canonical representative of this execution's Mazurkiewicz trace:
        the least topological order (lowest thread first) of happens-before.

        Only the ``--trace-stats`` statistic needs it.  An event is ready when
        every event before it is emitted: with its own component lowered by
        one, its clock is then at most the emitted counts, one C-level
        comparison per candidate."""
        n = self.n
        per: list[list[list[int]]] = [[] for _ in range(n)]
        for ev in self.events:
            need = list(ev.clock)
            need[ev.tid] -= 1
            per[ev.tid].append(need)
        emitted = [0] * n
        out: list[int] = []
        total = len(self.events)
        threads = range(n)
        ge = operator.ge
        while len(out) < total:
            for t in threads:
                i = emitted[t]
                mine = per[t]
                if i < len(mine) and all(map(ge, emitted, mine[i])):
                    emitted[t] = i + 1
                    out.append(t)
                    break
            else:  # pragma: no cover - clocks are always consistent
                raise RuntimeError("inconsistent vector clocks")
        return tuple(out)


@dataclass(slots=True)
class Replayed:
    """What a step-by-step replay produced."""

    ex: Executor
    violation: Violation | None
    outcome: str
    schedule: list[int]  # the steps actually taken
    preemptions: int
    preempted_at: list[int]  # step indices that were preemptions
    snapshots: list[str]


def replay(inst: Instance, cfg: Config, schedule: list[int], *, strict: bool = True,
           snapshots: bool = False, max_steps: int = DEFAULT_MAX_STEPS) -> Replayed:
    """Run ``schedule`` (one thread index per primitive step) step by step.

    With ``strict`` a step whose thread cannot run, or a switch the preset
    does not allow (on one CPU: away from a non-preemptible thread that could
    go on), raises :class:`~pervma.errors.ScenarioError`; without it such
    entries are skipped.  After the schedule the remaining threads run
    without preemption (the running one first, else the lowest index).
    """
    from pervma.errors import ScenarioError

    ex = _executor(inst, True)
    snaps: list[str] = []
    taken: list[int] = []
    pre_at: list[int] = []
    one_cpu = not cfg.SMP
    cur: int | None = None
    violation = ex.violation
    outcome = "done"

    def may_switch(frm: int | None) -> bool:
        if frm is None or not one_cpu:
            return True
        t = ex.tasks[frm]
        if not t.runnable():
            return True
        op = t.pending
        assert op is not None
        if op.sleeps or op.user:
            return True
        return cfg.PREEMPT and t.preempt_count == 0

    i = 0
    while violation is None:
        ready = ex.runnable()
        if not ready:
            break
        if i < len(schedule):
            tid = schedule[i]
            i += 1
            ok = 0 <= tid < len(ex.tasks) and tid in ready
            if ok and tid != cur and not may_switch(cur):
                ok = False
                why = "is not allowed on this preset (the running thread is not preemptible)"
            else:
                why = "cannot run here"
            if not ok:
                if strict:
                    close_executor(ex)
                    raise ScenarioError(f"replay step {i - 1}: thread {tid} {why}; the model or "
                                        "scenario changed since the schedule was recorded")
                continue
        else:
            tid = cur if cur is not None and cur in ready else ready[0]
        if cur is not None and tid != cur and ex.tasks[cur].runnable():
            pre_at.append(len(taken))
        try:
            ex.step(tid)
        except Exception as exc:
            ex.violation = _crash(ex.tasks[tid].name, exc)
            ex.tasks[tid].done = True
        taken.append(tid)
        cur = tid
        if snapshots:
            try:
                snaps.append(inst.snapshot() if inst.snapshot else "")
            except Exception as exc:
                snaps.append(f"<snapshot failed: {exc!r}>")
        violation = ex.violation
        if ex.tasks[tid].steps > max_steps:
            outcome = "livelock"
            break
    if violation is None and outcome != "livelock":
        if ex.finished():
            if inst.finish is not None:
                try:
                    inst.finish()
                except Violation as v:
                    violation = v
        else:
            violation = ex.deadlock()
    close_executor(ex)
    if violation is not None:
        outcome = "violation"
    return Replayed(ex, violation, outcome, taken, len(pre_at), pre_at, snaps)
