"""Execution graphs of model runs: groundwork for exploring the model under LKMM.

A driver hands :class:`GraphRecorder` every step it takes (thread, ``Op``);
the recorder turns each step into the LKMM events its ordering stands for
(``pervma.sched.order.LKMM_EVENTS``: fence before, the access, fence after)
and keeps program order per thread, reads-from and coherence order.  A run
under sequential consistency fixes both: a read reads the latest write to its
location in the order the steps were taken, and writes are coherence-ordered
as taken.  :func:`pervma.litmus.graph.check_graph` then judges the graph with
the axioms ``pervma litmus`` uses, so a recorded execution and a litmus test
meet one definition of LKMM.  Every SC execution is allowed by LKMM (SC is
stronger), which the tests check; item 3 of issue #17 will change the
reads-from of recorded graphs and ask the same question.

How steps become events:

* a READ or BLOCK step is a load, a WRITE a store, an RMW a load and a store
  paired by ``rmw``; a step's ``also`` location gets an access of the same
  kind; LOCAL steps take no event;
* ``LOCK_ACQUIRE`` (rwsem, spinlock and folio-lock acquisitions) is lock.cat's
  LKR/LKW pair on the lock's location and ``LOCK_RELEASE`` its UL store
  (an rwsem's shared holders are approximated as a spinlock's);
* ``LOCKED`` (a whole critical section as one step) is LKR/LKW and UL on a
  lock location of its own around the access;
* ``SYNC_RCU`` is the sync-rcu fence alone.

Left out for now: rcu_read_lock()/unlock() take no step in the model (no
rcu-lock/rcu-unlock events), dependencies (addr/data/ctrl) are not tracked,
and conditional orderings (CTRL, RELEASE_ACQUIRE's acquire, a failed RMW)
are recorded as if they succeeded.  Values are write identities (a write's
event number), as reads-from is what matters here.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from pervma.litmus.events import Ev
from pervma.litmus.graph import ExecutionGraph, GraphVerdict, check_graph
from pervma.sched.ops import Op, OpKind
from pervma.sched.order import LKMM_EVENTS, Order

_FENCES = frozenset({"mb", "rmb", "wmb", "sync-rcu"})
_ACCESS_TAGS: dict[str, frozenset[str]] = {
    "plain": frozenset(), "once": frozenset({"once"}), "acquire": frozenset({"acquire"}),
    "release": frozenset({"release"}), "mb": frozenset({"mb"}),
}


@dataclass(slots=True)
class RecordedExecution:
    """The graph of one execution and, per event, the step it came from
    (index in the execution, thread, label; -1 for initial writes)."""

    graph: ExecutionGraph
    origin: list[tuple[int, int, str]] = field(default_factory=list)

    def check(self) -> GraphVerdict:
        return check_graph(self.graph)


class GraphRecorder:
    """Builds the execution graph of one execution, step by step."""

    def __init__(self, fields: set[int] | None = None) -> None:
        # Steps whose access to a VMA is to the fields a fault reads once
        # read-locked (the memory layer's ``load``/``store`` steps): another
        # location than the VMA's other fields, which its other steps touch.
        self._fields = fields or set()
        self._thread_events: list[tuple[int, str, str | None, frozenset[str], int, str]] = []
        self._locs: dict[str, int] = {}  # location -> its initial write's number
        self._steps = 0

    @staticmethod
    def _name(loc: Hashable) -> str:
        return repr(loc)

    def add(self, tid: int, op: Op) -> None:
        """Record the step ``op`` thread ``tid`` has just taken."""
        step = self._steps
        self._steps += 1
        if op.kind is OpKind.LOCAL:
            return
        order = op.order
        if order is Order.UNSPECIFIED:
            raise ValueError(f"step {step} ({op.label}) has no declared ordering")
        before, access, after = LKMM_EVENTS[order]
        ev = self._thread_events
        label = op.label
        if before in _FENCES:
            ev.append((tid, "F", None, frozenset({before}), step, label))
        locs = [x for x in (op.loc, op.also) if x is not None]
        for loc in locs:
            name = self._name(loc)
            if step in self._fields and isinstance(loc, tuple) and loc[0] == "vma":
                name += ".fields"
            self._locs.setdefault(name, len(self._locs))
            if order is Order.LOCKED:
                lock = self._name(("lock", loc))
                self._locs.setdefault(lock, len(self._locs))
                ev.append((tid, "R", lock, frozenset({"LKR"}), step, label))
                ev.append((tid, "W", lock, frozenset({"LKW"}), step, label))
                self._access(tid, op.kind, name, frozenset({"once"}), step, label)
                ev.append((tid, "W", lock, frozenset({"UL"}), step, label))
            elif order is Order.LOCK_ACQUIRE:
                if op.kind in (OpKind.BLOCK, OpKind.OBSERVE):  # a waiter handed the lock: it reads the grant
                    ev.append((tid, "R", name, frozenset({"once"}), step, label))
                else:
                    ev.append((tid, "R", name, frozenset({"LKR"}), step, label))
                    ev.append((tid, "W", name, frozenset({"LKW"}), step, label))
            elif order is Order.LOCK_RELEASE:
                ev.append((tid, "W", name, frozenset({"UL"}), step, label))
            elif access:
                self._access(tid, op.kind, name, _ACCESS_TAGS[access], step, label)
        if after in _FENCES:
            ev.append((tid, "F", None, frozenset({after}), step, label))

    def _access(self, tid: int, kind: OpKind, name: str, tags: frozenset[str], step: int,
                label: str) -> None:
        ev = self._thread_events
        if kind in (OpKind.READ, OpKind.BLOCK, OpKind.OBSERVE):
            ev.append((tid, "R", name, tags, step, label))
        elif kind in (OpKind.WRITE, OpKind.RELEASE, OpKind.RELEASE_SHARED):
            ev.append((tid, "W", name, tags, step, label))
        else:  # RMW, or an ACQUIRE step that is not a lock
            rmw = tags | {"RMW"}
            ev.append((tid, "R", name, rmw, step, label))
            ev.append((tid, "W", name, rmw, step, label))

    def execution(self, reads_from: dict[tuple[int, str], int] | None = None
                  ) -> RecordedExecution:
        """The graph so far, with the reads-from and coherence order of the
        order the steps were taken in (sequential consistency), except for
        the reads ``reads_from`` names: (step, location name) -> the step
        whose write to that location the read reads (-1: the initial
        write), as the memory layer chose under LKMM."""
        chosen = reads_from or {}
        written: dict[tuple[int, str], int] = {}
        locs = sorted(self._locs, key=self._locs.__getitem__)
        events = [Ev(-1, i, "W", loc, i, frozenset({"IW"})) for i, loc in enumerate(locs)]
        origin: list[tuple[int, int, str]] = [(-1, -1, "initial") for _ in locs]
        latest = {loc: i for i, loc in enumerate(locs)}
        co: dict[str, list[int]] = {loc: [i] for i, loc in enumerate(locs)}
        rf: dict[int, int] = {}
        rmw: list[tuple[int, int]] = []
        lk_rmw: list[tuple[int, int]] = []
        idx: dict[int, int] = {}
        for tid, kind, loc, tags, step, label in self._thread_events:
            i = len(events)
            n = idx.get(tid, 0)
            idx[tid] = n + 1
            if kind == "R":
                assert loc is not None
                w = latest[loc]
                src = chosen.get((step, loc))
                if src is not None:
                    w = written.get((src, loc), w) if src >= 0 else co[loc][0]
                rf[i] = w
                events.append(Ev(tid, n, "R", loc, events[w].val, tags))
            elif kind == "W":
                assert loc is not None
                prev = events[-1]
                if prev.tid == tid and prev.kind == "R" and prev.loc == loc and (
                        ("RMW" in tags and "RMW" in prev.tags)
                        or ("LKW" in tags and "LKR" in prev.tags)):
                    (lk_rmw if "LKW" in tags else rmw).append((i - 1, i))
                events.append(Ev(tid, n, "W", loc, i, tags))
                latest[loc] = i
                written[(step, loc)] = i
                co[loc].append(i)
            else:
                events.append(Ev(tid, n, "F", None, None, tags))
            origin.append((step, tid, label))
        return RecordedExecution(ExecutionGraph(events, rf, co, rmw, lk_rmw), origin)


def record(trace: Iterable[tuple[int, Op]]) -> RecordedExecution:
    """The execution graph of an executed trace (``Executor.trace``)."""
    rec = GraphRecorder()
    for tid, op in trace:
        rec.add(tid, op)
    return rec.execution()
