"""The memory layer (sched/memory.py) on message passing: which outcomes
each pairing of orderings allows when every plan of read choices is run."""

from __future__ import annotations

from itertools import permutations
from typing import Any

import pytest

from pervma.sched import Executor, Op, OpKind, run_direct
from pervma.sched.memory import Memory, load, store
from pervma.sched.order import Order


class Cell:
    def __init__(self, loc: tuple[str, int]) -> None:
        self.loc, self.v = loc, 0


def get(c: Cell) -> int:
    return c.v


def mp(wo: Order, ro: Order) -> tuple[list[Any], dict[str, int]]:
    x, f = Cell(("x", 0)), Cell(("f", 0))
    out: dict[str, int] = {}

    async def writer() -> None:
        await store(Op(OpKind.WRITE, x.loc, "x = 1", order=Order.ONCE), get, x)
        x.v = 1
        await store(Op(OpKind.WRITE, f.loc, "f = 1", order=wo), get, f)
        f.v = 1

    async def reader() -> None:
        out["r1"] = await load(Op(OpKind.READ, f.loc, "r1 = f", order=ro), get, f)
        out["r2"] = await load(Op(OpKind.READ, x.loc, "r2 = x", order=Order.ONCE), get, x)

    return [writer(), reader()], out


def outcomes(wo: Order, ro: Order) -> tuple[set[tuple[int, int]], int]:
    """Every interleaving of the two threads under every plan reachable from
    the empty one (the plan enumeration check/lkmm.py does); also the count
    of plans run."""
    res: set[tuple[int, int]] = set()
    plans: list[dict[tuple[int, int], int]] = [{}]
    known: set[tuple[tuple[tuple[int, int], int], ...]] = {()}
    runs = 0
    scheds = sorted(set(permutations([0, 0, 1, 1])))
    while plans:
        plan = plans.pop()
        runs += 1
        seen: set[tuple[int, int, int]] = set()
        for sched in scheds:
            bodies, out = mp(wo, ro)
            ex = Executor(bodies, memory=Memory(frozenset({"x", "f"}), plan, seen))
            for t in sched:
                ex.step(t)
            res.add((out["r1"], out["r2"]))
        for t, n, k in seen:
            if (t, n) not in plan:
                for back in range(1, k):
                    p = {**plan, (t, n): back}
                    key = tuple(sorted(p.items()))
                    if key not in known:
                        known.add(key)
                        plans.append(p)
    return res, runs


SC = {(0, 0), (0, 1), (1, 1)}


@pytest.mark.parametrize(("wo", "ro", "weak"), [
    (Order.ONCE, Order.ONCE, True),
    (Order.RELEASE, Order.ACQUIRE, False),
    (Order.WMB_ONCE, Order.ONCE_RMB, False),  # smp_wmb() before the flag, smp_rmb() after it
    (Order.WMB_ONCE, Order.RMB_ONCE, True),  # an rmb *before* the flag read orders nothing here
    (Order.RELEASE, Order.ONCE, True),
    (Order.ONCE, Order.ACQUIRE, True),
    (Order.FULL, Order.FULL, False),
])
def test_message_passing_outcomes_follow_the_orderings(wo: Order, ro: Order, weak: bool) -> None:
    res, runs = outcomes(wo, ro)
    assert res == (SC | {(1, 0)} if weak else SC)
    assert runs >= 2 if weak else runs >= 1


def test_without_a_memory_layer_load_reads_the_object() -> None:
    c = Cell(("x", 0))
    c.v = 7

    async def body() -> int:
        return int(await load(Op(OpKind.READ, c.loc, "r", order=Order.ONCE), get, c))

    assert run_direct(body()) == 7


def test_empty_plan_is_sequentially_consistent() -> None:
    for sched in sorted(set(permutations([0, 0, 1, 1]))):
        bodies, out = mp(Order.ONCE, Order.ONCE)
        mem = Memory(frozenset({"x", "f"}))
        ex = Executor(bodies, memory=mem)
        for t in sched:
            ex.step(t)
        assert (out["r1"], out["r2"]) in SC
        assert all(r.msg is r.latest for r in mem.reads)


@pytest.mark.parametrize(("wo", "ro", "allowed"), [
    (Order.ONCE, Order.ONCE, True),
    (Order.RELEASE, Order.ACQUIRE, False),
    (Order.WMB_ONCE, Order.ONCE_RMB, False),
])
def test_graph_with_a_chosen_reads_from_is_judged_by_the_lkmm_axioms(
        wo: Order, ro: Order, allowed: bool) -> None:
    """The writer runs first; the reader reads the flag's new value and x's
    initial one (reads_from names step 3's read of x -> the initial write)."""
    from pervma.check.graph import GraphRecorder

    bodies, _ = mp(wo, ro)
    ex = Executor(bodies)
    for t in (0, 0, 1, 1):
        ex.step(t)
    rec = GraphRecorder()
    for tid, op in ex.trace:
        rec.add(tid, op)
    assert rec.execution().check().allowed  # the SC execution
    verdict = rec.execution({(3, repr(("x", 0))): -1}).check()
    assert verdict.allowed is allowed
    if not allowed:
        assert verdict.axiom == "lkmm"
