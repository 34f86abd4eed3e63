"""One execution graph judged under LKMM, with the definition litmus tests use.

A litmus test's candidate executions are enumerated by
:mod:`pervma.litmus.executions`; an execution recorded elsewhere (a run of
pervma's kernel model, turned into events by ``pervma.check.graph``) arrives
here whole: its events, reads-from and coherence order.  :func:`check_graph`
asks the questions :mod:`pervma.litmus.executions` asks of each candidate --
coherence and atomicity per location, then :func:`pervma.litmus.lkmm.check`
(happens-before, propagation, RCU, plain accesses) -- so both answer with the
same axioms.  This module knows nothing of the model: events are
:class:`~pervma.litmus.events.Ev` with linux-kernel.def's tags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pervma.litmus import relations as r
from pervma.litmus.events import Ev
from pervma.litmus.lkmm import Static, check
from pervma.litmus.relations import Rel


@dataclass(slots=True)
class ExecutionGraph:
    """Events (initial writes first, ``tid`` -1 and tag ``IW``), in program
    order within each thread (``idx``); ``rf`` maps a read to the write it
    reads from; ``co`` lists each location's writes in coherence order,
    initial write first; ``rmw`` pairs an RMW's read with its write
    (``lk_rmw`` a spin_lock's LKR with its LKW)."""

    events: list[Ev]
    rf: dict[int, int]
    co: dict[str, list[int]]
    rmw: list[tuple[int, int]] = field(default_factory=list)
    lk_rmw: list[tuple[int, int]] = field(default_factory=list)
    addr: list[tuple[int, int]] = field(default_factory=list)
    data: list[tuple[int, int]] = field(default_factory=list)
    ctrl: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class GraphVerdict:
    """``allowed`` by LKMM or not; ``axiom`` names the first one that fails
    (``coherence``, ``atomicity``, ``lkmm``: happens-before, propagation,
    RCU or plain coherence); ``flags`` are the .cat flags raised (a data race)."""

    allowed: bool
    axiom: str | None = None
    flags: tuple[str, ...] = ()


def _relations(g: ExecutionGraph) -> tuple[Rel, Rel]:
    n = len(g.events)
    rf = r.from_pairs(n, ((w, rd) for rd, w in g.rf.items()))
    co = r.from_pairs(n, ((ws[i], b) for ws in g.co.values()
                          for i in range(len(ws)) for b in ws[i + 1:]))
    return rf, co


def check_graph(g: ExecutionGraph) -> GraphVerdict:
    """Whether LKMM allows the execution ``g`` (linux-kernel.cat, Linux 7.0)."""
    events = g.events
    reads = [i for i, e in enumerate(events) if e.kind == "R"]
    missing = [i for i in reads if i not in g.rf]
    if missing:
        raise ValueError(f"check_graph: read {missing[0]} reads from no write")
    st = Static(events, g.addr, g.data, g.ctrl, g.rmw, g.lk_rmw)
    rf, co = _relations(g)
    fr = r.seq(r.inverse(rf), co)
    # coherence: sc-per-location, acyclic(po-loc | rf | co | fr)
    if not r.acyclic(r.union(st.po_loc, rf, co, fr)):
        return GraphVerdict(False, "coherence")
    # atomicity: empty(rmw & (fre ; coe))
    if not r.is_empty(r.inter(st.rmw, r.seq(r.inter(fr, st.ext), r.inter(co, st.ext)))):
        return GraphVerdict(False, "atomicity")
    v = check(st, rf, co)
    return GraphVerdict(v.allowed, None if v.allowed else "lkmm", v.flags)
