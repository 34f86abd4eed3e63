"""Execution graphs of model runs judged with the LKMM axioms of ``pervma
litmus`` (issue #17, groundwork for item 3): a tiny two-thread model program
(message passing through model primitives with declared orderings), every
SC interleaving recorded and allowed; the weak outcome made by hand is
forbidden or allowed exactly as the litmus engine says of the same pattern;
a recorded run of the kernel model is allowed."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from pervma.check.graph import GraphRecorder, RecordedExecution, record
from pervma.check.scenario import get_scenario
from pervma.check.search import Runner
from pervma.config import Config
from pervma.litmus import litmus_file
from pervma.litmus.graph import check_graph
from pervma.sched import Op, OpKind, read, run_schedule, write
from pervma.sched.order import Order

LKMM_TESTS = Path(__file__).resolve().parent.parent / "litmus" / "lkmm"


def _mp(writer_order: Order, reader_order: Order) -> tuple[object, object, dict[str, int]]:
    """Message passing: T0 stores x then flag, T1 loads flag then x."""
    seen: dict[str, int] = {}
    mem = {"x": 0, "flag": 0}

    async def writer() -> None:
        await write(("x",), "x = 1", Order.ONCE)
        mem["x"] = 1
        await write(("flag",), "flag = 1", writer_order)
        mem["flag"] = 1

    async def reader() -> None:
        await read(("flag",), "r0 = flag", reader_order)
        seen["r0"] = mem["flag"]
        await read(("x",), "r1 = x", Order.ONCE)
        seen["r1"] = mem["x"]

    return writer(), reader(), seen


def _runs(writer_order: Order, reader_order: Order) -> list[tuple[RecordedExecution, dict[str, int]]]:
    """Every interleaving of the two threads' two steps, each recorded."""
    out = []
    for pos in itertools.combinations(range(4), 2):  # the writer's steps among the four
        w, rd, seen = _mp(writer_order, reader_order)
        order = [0 if i in pos else 1 for i in range(4)]
        ex = run_schedule([w, rd], order)  # type: ignore[list-item]
        out.append((record(ex.trace), seen))
    return out


def _event(rec: RecordedExecution, label: str, kind: str) -> int:
    return next(i for i, (_, _, lab) in enumerate(rec.origin)
                if lab == label and rec.graph.events[i].kind == kind)


def _stale_x(rec: RecordedExecution) -> RecordedExecution:
    """The same execution with T1's load of x reading the initial x instead."""
    g = rec.graph
    rx = _event(rec, "r1 = x", "R")
    init_x = g.co[repr(("x",))][0]
    return dataclasses.replace(rec, graph=dataclasses.replace(g, rf={**g.rf, rx: init_x}))


@pytest.mark.parametrize("orders", [(Order.RELEASE, Order.ACQUIRE), (Order.ONCE, Order.ONCE)])
def test_every_sc_run_of_the_model_program_is_allowed(orders: tuple[Order, Order]) -> None:
    runs = _runs(*orders)
    assert len(runs) == 6
    outcomes = {(s["r0"], s["r1"]) for _, s in runs}
    assert outcomes == {(0, 0), (0, 1), (1, 1)}  # SC never shows flag=1, x=0
    for rec, seen in runs:
        g = rec.graph
        # reads-from is the SC one: the latest write in step order
        rflag = _event(rec, "r0 = flag", "R")
        wrote = g.events[g.rf[rflag]]
        assert ("IW" in wrote.tags) == (seen["r0"] == 0)
        assert rec.check().allowed


def test_graph_events_carry_the_orderings() -> None:
    rec = _runs(Order.RELEASE, Order.ACQUIRE)[0][0]
    by_label = {lab: rec.graph.events[i].tags for i, (_, _, lab) in enumerate(rec.origin)
                if lab != "initial"}
    assert by_label == {"x = 1": {"once"}, "flag = 1": {"release"},
                        "r0 = flag": {"acquire"}, "r1 = x": {"once"}}
    assert [e.tid for e in rec.graph.events[:2]] == [-1, -1]  # the initial writes


def test_weak_outcome_verdicts_match_the_litmus_engine() -> None:
    """flag=1 read, x=0 read: forbidden with release/acquire (LKMM's
    happens-before), allowed with READ_ONCE/WRITE_ONCE only -- as pervma
    litmus says of MP+pooncerelease+poacquireonce and MP+poonceonces."""
    for orders, litmus, allowed in (
            ((Order.RELEASE, Order.ACQUIRE), "MP+pooncerelease+poacquireonce.litmus", False),
            ((Order.ONCE, Order.ONCE), "MP+poonceonces.litmus", True)):
        both_new = next(rec for rec, s in _runs(*orders) if s == {"r0": 1, "r1": 1})
        v = check_graph(_stale_x(both_new).graph)
        assert v.allowed is allowed
        assert v.axiom == (None if allowed else "lkmm")
        _, out, _ = litmus_file(LKMM_TESTS / litmus)
        assert bool(out.positive) is allowed  # the exists clause is this very outcome


def test_coherence_is_checked() -> None:
    """A thread that stored x and then loads x cannot read the initial x
    (CoWR): the per-location axiom rejects it before LKMM's are asked."""
    rec = GraphRecorder()
    rec.add(0, write(("x",), "x = 1", Order.ONCE))
    rec.add(0, read(("x",), "r0 = x", Order.ONCE))
    ok = rec.execution()
    assert ok.check().allowed
    g = ok.graph
    rx = _event(ok, "r0 = x", "R")
    assert g.rf[rx] == _event(ok, "x = 1", "W")
    stale = dataclasses.replace(g, rf={rx: g.co[repr(("x",))][0]})
    v = check_graph(stale)
    assert (v.allowed, v.axiom) == (False, "coherence")


def test_unspecified_step_is_refused() -> None:
    rec = GraphRecorder()
    with pytest.raises(ValueError, match="no declared ordering"):
        rec.add(0, Op(OpKind.READ, ("x",), "undeclared"))


def test_recorded_kernel_run_is_allowed() -> None:
    """One SC execution of a kernel scenario (fault against munmap): its
    graph (locks, seqcount barriers, refcounts, RCU publish) is allowed."""
    runner = Runner(get_scenario("fault-vs-munmap"), Config.preset("universal"))
    ex = runner.execution(snapshots=True)  # the executor keeps its trace
    while ex.runnable():
        ex.take(ex.runnable()[0])
    assert ex.violation is None
    rec = record(ex.ex.trace)
    assert len(rec.graph.events) > 50
    kinds = {e.kind for e in rec.graph.events}
    assert kinds == {"R", "W", "F"}
    assert any("LKW" in e.tags for e in rec.graph.events)
    assert any("wmb" in e.tags for e in rec.graph.events)
    v = rec.check()
    assert v.allowed, v
