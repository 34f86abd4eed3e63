"""The scheduler interface: ops, the executor, the direct and scripted runners."""

from __future__ import annotations

import gc
import warnings

import pytest

from pervma.sched import (
    Executor,
    Op,
    OpKind,
    ScheduleError,
    Violation,
    block,
    read,
    rmw,
    run_direct,
    run_schedule,
    violation,
    write,
)


class Cell:
    def __init__(self) -> None:
        self.v = 0


def test_a_step_takes_effect_only_when_resumed() -> None:
    c = Cell()

    async def inc() -> None:
        await rmw(("c",), "inc")
        c.v += 1

    ex = Executor([inc()])
    assert ex.tasks[0].pending.label == "inc" and c.v == 0
    ex.step(0)
    assert c.v == 1 and ex.finished()


def test_scripted_schedule_orders_steps_and_reports_blocking() -> None:
    c = Cell()
    out: list[str] = []

    async def waiter() -> None:
        await block(("c",), "wait for c", lambda: c.v == 1)
        out.append("woke")

    async def setter() -> None:
        await write(("c",), "set")
        c.v = 1
        out.append("set")

    with pytest.raises(ScheduleError, match="blocked in wait for c"):
        run_schedule([waiter(), setter()], [0])
    c.v = 0
    out.clear()
    run_schedule([waiter(), setter()], [1, 0])
    assert out == ["set", "woke"]


def test_all_blocked_is_a_deadlock() -> None:
    async def stuck() -> None:
        await block(("x",), "forever", lambda: False)

    with pytest.raises(Violation) as v:
        run_schedule([stuck(), stuck()], [])
    assert v.value.kind == "deadlock"
    with pytest.raises(Violation, match="would block forever"):
        run_direct(stuck())


def test_violation_stops_the_run() -> None:
    async def bad() -> None:
        await read(("x",), "look")
        violation("BUG", "broken")

    ex = run_schedule([bad()], [], raise_violation=False)
    assert ex.violation is not None and ex.violation.kind == "BUG"


def test_dependency_uses_both_locations() -> None:
    a = Op(OpKind.WRITE, ("pte", 0, 1), "store", also=("page", 7))
    b = Op(OpKind.READ, ("page", 7), "copy")
    c = Op(OpKind.READ, ("pte", 0, 2), "other")
    d = Op(OpKind.READ, ("page", 7), "read too")
    assert a.dependent(b) and b.dependent(a)
    assert not a.dependent(c)
    assert not b.dependent(d)  # two reads never conflict


def test_an_unawaited_coroutine_fails_the_tests() -> None:
    async def step() -> None:
        await rmw(("x",), "x")

    async def forgetful() -> None:
        step()  # type: ignore[unused-coroutine]  # the bug under test

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_direct(forgetful())
        gc.collect()
    assert any("was never awaited" in str(w.message) for w in caught)


def test_a_python_error_in_a_thread_closes_the_other_threads() -> None:
    """An exception that is not a Violation leaves Executor.step (a bug, or a
    NotModelled): the other threads are closed there and then, their
    ``finally`` blocks run, rather than by the garbage collector later,
    under whatever driver happens to run then."""
    unwound: list[str] = []

    async def holder() -> None:
        try:
            await rmw(("a",), "take")
            await rmw(("a",), "never")
        finally:
            unwound.append("holder")

    async def crasher() -> None:
        await rmw(("b",), "first")
        raise KeyError("model bug")

    ex = Executor([holder(), crasher()])
    ex.step(0)
    with pytest.raises(KeyError):
        ex.step(1)
    assert unwound == ["holder"]
    assert all(t.done for t in ex.tasks)
    assert ex.tasks[0].coro.cr_frame is None  # closed, nothing left for the collector


def test_a_python_error_while_threads_start_closes_those_started() -> None:
    unwound: list[str] = []

    async def holder() -> None:
        try:
            await rmw(("a",), "take")
        finally:
            unwound.append("holder")

    async def crasher() -> None:
        raise KeyError("setup bug")
        await rmw(("b",), "never")  # pragma: no cover - makes it a coroutine with a step

    with pytest.raises(KeyError):
        Executor([holder(), crasher()])
    assert unwound == ["holder"]
