"""Checkpoints (pervma.check.checkpoint) and the copier under them
(pervma.check.template.Sharing, pervma.sched._frames.Copier): a restored
execution is the state a replay reaches, step for step, and a search with
checkpoints explores exactly what one without explores."""

from __future__ import annotations

import functools
import gc
import random
from collections.abc import Callable

import pytest

from pervma import Config
from pervma.check import dpor, stateful
from pervma.check.catalogue import get_bug
from pervma.check.checkpoint import Checkpoint
from pervma.check.engine import Execution, close_executor
from pervma.check.scenario import all_scenarios, get_scenario
from pervma.check.search import Budget, Runner, Stats
from pervma.check.template import Sharing
from pervma.sched.statekey import state_key

PRESETS = ["legacy", "universal", "universal-up", "universal-up-nopreempt"]


@pytest.mark.parametrize("preset", PRESETS)
def test_a_restored_execution_goes_on_as_a_replayed_one(preset: str) -> None:
    """Every scenario of the library: run a random prefix, checkpoint it,
    then drive the restored copy and a replay of the prefix with the same
    random choices; every event's accesses and clock, every state key and
    the outcome agree."""
    cfg = Config.preset(preset)
    for n, sc in enumerate(all_scenarios()):
        if preset not in sc.presets:
            continue
        r = Runner(sc, cfg)
        rnd = random.Random(n)
        run = r.execution()
        for _ in range(rnd.randrange(1, 40)):
            en = run.runnable()
            if not en:
                break
            run.take(rnd.choice(en))
        ck = r.save(run)
        assert ck is not None, f"{sc.name}: its execution could not be copied"
        assert ck.depth == len(run.events)
        a, b = r.resume(ck), r.execution()
        for ev in run.events:
            b.retake(ev)
        close_executor(run.ex)
        assert state_key(a.ex.tasks) == state_key(b.ex.tasks), sc.name
        while True:
            en = a.runnable()
            assert en == b.runnable(), sc.name
            if not en:
                break
            t = rnd.choice(en)
            x, y = a.take(t), b.take(t)
            assert (x.acc, x.clock) == (y.acc, y.clock), sc.name
            assert state_key(a.ex.tasks) == state_key(b.ex.tasks), sc.name
        assert a.end() == b.end(), sc.name
        assert str(a.violation) == str(b.violation), sc.name
        assert a.schedule == b.schedule


def _checkpoint_after(name: str, steps: int) -> tuple[Runner, Execution, int, Checkpoint]:
    """A run of ``name`` on universal after ``steps`` transitions of the
    lowest runnable thread, its state key and a checkpoint of it."""
    r = Runner(get_scenario(name), Config.preset("universal"))
    run = r.execution()
    for _ in range(steps):
        run.take(run.runnable()[0])
    ck = r.save(run)
    assert ck is not None
    return r, run, state_key(run.ex.tasks), ck


def test_a_checkpoint_restores_again_and_again() -> None:
    """A checkpoint is never run: each restore is a fresh copy, and running
    one to the end changes neither the checkpoint nor the execution it was
    taken from."""
    r, run, key, ck = _checkpoint_after("fault-vs-munmap", 6)
    first = r.resume(ck)
    assert first.inst.world is not run.inst.world
    assert first.inst.world.kern is not run.inst.world.kern
    while first.runnable():
        first.take(first.runnable()[-1])
    assert first.end() == "done"
    second = r.resume(ck)
    assert state_key(second.ex.tasks) == key == state_key(run.ex.tasks)
    assert len(second.events) == 6 and second.events[0] is run.events[0]
    close_executor(second.ex)
    close_executor(run.ex)


def _live(cls: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is cls)


def test_a_dropped_execution_is_freed_without_the_collector() -> None:
    """Execution.drop and Checkpoint.drop break up the copies they were made
    from: with the cyclic collector off, the mm_structs of a restored and
    dropped execution and of a dropped checkpoint are gone at once.  What the
    search keeps -- the recorded events, the checkpoint, the execution it was
    taken from, a task's identity in a location -- is untouched, also after
    an execution that ran to its end is dropped (the objects its own steps
    made are left to the collector)."""
    from pervma.kernel.mm_types import MmStruct
    from pervma.kernel.task import TaskIdent

    r, run, key, ck = _checkpoint_after("spin-2f-m-r", 8)
    gc.collect()
    gc.disable()
    try:
        before = _live(MmStruct)
        first = r.resume(ck)
        assert first.owned and _live(MmStruct) == before + 2
        coros = []  # every coroutine the threads are suspended in
        for t in first.ex.tasks:
            c = None if t.done else t.coro
            while c is not None and hasattr(c, "cr_await"):
                coros.append(c)
                c = c.cr_await
        assert len(coros) > len(first.ex.tasks) and all(c.cr_suspended for c in coros)
        first.drop()
        # marked finished, not resumed (close() would have run and cleared the frame)
        assert all(not c.cr_suspended and c.cr_frame is not None for c in coros)
        del coros  # (a finished coroutine frees its frame's locals with itself)
        assert _live(MmStruct) == before  # no collection ran
        second = r.resume(ck)
        ident = second.ex.tasks[0].model.ident
        assert type(ident) is TaskIdent and ident not in second.owned
        world = second.inst.world
        assert world in second.owned
        while second.runnable():
            ev = second.take(second.runnable()[-1])
        assert second.end() == "done"
        acc = dict(ev.acc)
        second.drop()
        assert not vars(world) and not vars(second)  # the execution itself was a copy
        assert ev.acc == acc and ident.pid == run.ex.tasks[0].model.pid
        third = r.resume(ck)  # the checkpoint is whole
        assert state_key(third.ex.tasks) == key
        third.drop()
        gc.collect()
        before = _live(MmStruct)
        ck.drop()
        assert _live(MmStruct) == before - 2  # the snapshot's two mm_structs went too
    finally:
        gc.enable()
    assert state_key(run.ex.tasks) == key  # the execution it was taken from
    close_executor(run.ex)


def test_searches_agree_with_and_without_dropping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Breaking up dropped executions changes nothing a search finds."""
    cfg = Config.preset("universal").with_bugs(get_bug("B16").id)
    figures = []
    for drop in (False, True):
        if not drop:
            monkeypatch.setattr(Execution, "drop", lambda self: close_executor(self.ex))
        else:
            monkeypatch.undo()
        for stateless in (False, True):
            r = Runner(get_scenario("vma-reuse-by-another-mm"), cfg)
            explore = dpor.explore if stateless else stateful.explore_roots
            st = explore(r, Budget(max_executions=10**6), Stats("search"))
            figures.append((stateless, st.executions, st.pruned, st.states, st.steps,
                            st.complete, st.found and (st.found.kind, st.found.schedule)))
    assert figures[:2] == figures[2:]
    assert figures[0][-1] and figures[1][-1]


@pytest.mark.parametrize("name,preset,bug", [
    ("spin-1f-m-r", "universal", None),
    ("fault-vs-munmap", "universal-up", None),
    ("vma-reuse-by-another-mm", "legacy", None),
    ("detach-vs-transient-reader", "universal", "B18"),
    ("fault-vs-munmap", "universal", "B13"),
    ("stack-growth-vs-fault", "legacy", "B02"),
    ("vma-reuse-by-another-mm", "universal", "B16"),
])
def test_searches_agree_with_and_without_checkpoints(monkeypatch: pytest.MonkeyPatch, name: str,
                                                     preset: str, bug: str | None) -> None:
    without, with_ = _both(monkeypatch, name, preset, bug, stateful.explore_roots)
    assert without == with_
    assert (without[-1] is None) == (bug is None)


def _both(monkeypatch: pytest.MonkeyPatch, name: str, preset: str, bug: str | None,
          explore: Callable[[Runner, Budget, Stats], Stats]) -> list[tuple[object, ...]]:
    """The figures of one search without checkpoints, then with them."""
    cfg = Config.preset(preset)
    if bug is not None:
        cfg = cfg.with_bugs(get_bug(bug).id)
    figures = []
    for off in ("1", "0"):
        monkeypatch.setenv("PERVMA_NO_CHECKPOINT", off)
        r = Runner(get_scenario(name), cfg)
        assert r.checkpoints == (off == "0")
        st = explore(r, Budget(max_executions=10**6), Stats("search"))
        if off == "0":
            assert r.template is not None  # the run had checkpoints to take
        found = None if st.found is None else (st.found.kind, st.found.message, st.found.schedule)
        figures.append((st.executions, st.pruned, st.states, st.revisits, st.steps, st.complete,
                        found))
    return figures


# -- the copier ------------------------------------------------------------------
class Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.peer: Node | None = None


class Slotted:
    __slots__ = ("a", "b")


STATIC = Node("static")  # shared when named (the model's own globals always are)


async def _suspend(box: list[int]) -> int:
    class Step:
        def __await__(self):  # type: ignore[no-untyped-def]
            return (yield self)

    total = 0
    for i in range(3):  # a live list iterator on the frame's stack
        total += await Step()
        box.append(i)
    return total


def test_the_copier_keeps_structure_closures_and_coroutines() -> None:
    from pervma.kernel.binder import binder_vm_ops

    sh = Sharing([STATIC])
    a, b = Node("a"), Node("b")
    a.peer, b.peer = b, a  # a cycle
    s = Slotted()
    s.a, s.b = a, (1, "x")
    box: list[int] = []

    def reader() -> str:
        return a.name  # a closure over a world object

    coro = _suspend(box)
    coro.send(None)
    coro.send(10)
    world = {"nodes": [a, b], "s": s, "reader": reader, "coro": coro, "static": STATIC,
             "cb": functools.partial(print, a), "set": {1, 2}, "ops": binder_vm_ops}
    new, coros = sh.copy(world)
    assert new["coro"] in coros and len(coros) == 2  # and the awaited step's generator
    assert new["ops"] is binder_vm_ops
    na, nb = new["nodes"]
    assert na is not a and na.peer is nb and nb.peer is na and na.name == "a"
    assert new["s"].a is na and new["s"].b is s.b  # an immutable tuple of atoms is shared
    assert new["static"] is STATIC
    assert new["cb"].args[0] is na
    na.name = "renamed"
    assert new["reader"]() == "renamed" and reader() == "a"
    nbox = new["coro"].cr_frame.f_locals["box"]
    assert nbox == [0] and nbox is not box
    with pytest.raises(StopIteration) as stop:
        new["coro"].send(5)
        new["coro"].send(7)
    assert stop.value.value == 10 + 5 + 7 and nbox == [0, 1, 2] and box == [0]
    coro.close()


def test_temporaries_of_a_copy_do_not_alias() -> None:
    """Two objects copied through __reduce_ex__ (their reduction tuples are
    temporaries that die within the copy) each get their own copy."""
    sh = Sharing()
    x, y = Node("x"), Node("y")
    parts = [functools.partial(str, x), functools.partial(repr, y)] * 3
    new, _ = sh.copy(parts)
    assert [p.func for p in new] == [str, repr] * 3
    assert new[0].args[0].name == "x" and new[1].args[0].name == "y"
    assert new[0] is new[2] and new[0].args[0] is not x


def test_what_cannot_be_copied_raises() -> None:
    import threading

    with pytest.raises(TypeError):
        Sharing().copy({"lock": threading.Lock()})


@pytest.mark.parametrize("search", ["dpor", "odpor"])
@pytest.mark.parametrize("name,bug", [("fault-vs-munmap", None), ("fault-vs-munmap", "B13")])
def test_stateless_searches_agree_with_and_without_checkpoints(
        monkeypatch: pytest.MonkeyPatch, search: str, name: str, bug: str | None) -> None:
    from pervma.check import dpor, odpor

    explore = {"dpor": dpor.explore_roots, "odpor": odpor.explore_roots}[search]
    without, with_ = _both(monkeypatch, name, "universal", bug, explore)
    assert without == with_
    assert (without[-1] is None) == (bug is None)
