"""A scenario's world built once and copied (pervma.check.template) is the
same state as a fresh build, for every scenario of the library under every
preset, and searches give the same figures with and without it."""

from __future__ import annotations

import gc
import threading

import pytest

from pervma import PAGE, Config
from pervma.check import stateful
from pervma.check.engine import Execution, close_executor
from pervma.check.scenario import (
    Scenario,
    all_scenarios,
    get_scenario,
    misuse_scenarios,
    spin_shapes,
)
from pervma.check.scenarios.kernel import ANON, RW, A, World
from pervma.check.search import Budget, Runner, Stats
from pervma.check.template import Frozen, Sharing, WorldTemplate
from pervma.sched.statekey import state_key

PRESETS = ["legacy", "universal", "universal-up", "universal-up-nopreempt"]
KERNEL = [s for s in all_scenarios() + misuse_scenarios() + spin_shapes()[:4]]


def _fresh(monkeypatch: pytest.MonkeyPatch, sc: Scenario, cfg: Config) -> Runner:
    monkeypatch.setenv("PERVMA_NO_TEMPLATE", "1")
    r = Runner(sc, cfg)
    monkeypatch.delenv("PERVMA_NO_TEMPLATE")
    return r


@pytest.mark.parametrize("preset", PRESETS)
def test_every_scenario_copies_to_the_same_state(monkeypatch: pytest.MonkeyPatch,
                                                 preset: str) -> None:
    cfg = Config.preset(preset)
    for sc in KERNEL:
        if preset not in sc.presets:
            continue
        templ = Runner(sc, cfg)
        first = templ.execution()  # the build the template is made from
        assert templ.template is not None, f"{sc.name}: its world could not be copied"
        copy = templ.execution()
        fresh = _fresh(monkeypatch, sc, cfg).execution()
        assert templ.template.copies == 1
        key = state_key(fresh.ex.tasks)
        assert state_key(first.ex.tasks) == key, sc.name
        assert state_key(copy.ex.tasks) == key, sc.name
        assert copy.runnable() == fresh.runnable(), sc.name
        for run in (first, copy, fresh):
            close_executor(run.ex)


def test_a_copy_is_its_own_world() -> None:
    """Running a copy to the end changes neither the template nor the next
    copy; a copy's thread bodies act on the copy's objects."""
    sc = get_scenario("fault-vs-munmap")
    r = Runner(sc, Config.preset("universal"))
    close_executor(r.execution().ex)
    assert r.template is not None
    w1, w2 = r.template.copy(), r.template.copy()
    assert w1 is not w2 and w1.kern is not w2.kern and w1.p.mm is not w2.p.mm
    assert [v.vm_start for v in w1.p.mm.mm_mt.snapshot()] == \
        [v.vm_start for v in w2.p.mm.mm_mt.snapshot()]
    inst = w1.instance()
    assert inst.world is w1
    run = Execution(inst, r.cfg)
    other = Execution(w2.instance(), r.cfg)
    start = state_key(other.ex.tasks)
    close_executor(other.ex)
    while run.runnable():
        run.take(run.runnable()[0])
    assert run.end() == "done"
    assert "munmap" in w1.results and "munmap" not in w2.results
    again = r.execution()
    assert state_key(again.ex.tasks) == start
    close_executor(again.ex)


def test_a_world_that_cannot_be_copied_is_built_every_time() -> None:
    """Something that cannot be copied (a thread lock) reachable from the
    world: no template, and the runner builds the scenario for each execution."""
    builds = []

    def build(cfg: Config):  # type: ignore[no-untyped-def]
        w = World(cfg)
        w.p.mmap(A, PAGE, RW, ANON)
        w.lock = threading.Lock()  # type: ignore[attr-defined]

        async def body(t):  # type: ignore[no-untyped-def]
            return await t.load(A)

        w.thread("reader", w.p.thread(), body)
        builds.append(w)
        return w.instance()

    r = Runner(Scenario("uncopyable", "test", build), Config.preset("universal"))
    for _ in range(2):
        close_executor(r.execution().ex)
    assert r.template is None
    assert len(builds) == 2
    assert WorldTemplate.make(builds[0], Sharing()) is None


@pytest.mark.parametrize("name,preset", [("fault-vs-munmap", "universal"),
                                         ("vma-reuse-by-another-mm", "legacy"),
                                         ("spin-1f-m-r", "universal"),
                                         ("detach-vs-transient-reader", "universal-up")])
def test_searches_agree_with_and_without_templates(monkeypatch: pytest.MonkeyPatch,
                                                   name: str, preset: str) -> None:
    sc, cfg = get_scenario(name), Config.preset(preset)
    figures = []
    for off in ("1", "0"):
        monkeypatch.setenv("PERVMA_NO_TEMPLATE", off)
        r = Runner(sc, cfg)
        st = stateful.explore_roots(r, Budget(max_executions=10**6), Stats("dpor"))
        assert st.complete and st.found is None
        assert (r.template is None) == (off == "1")
        figures.append((st.executions, st.pruned, st.states, st.revisits, st.steps))
    assert figures[0] == figures[1]


_UNWOUND: list[str] = []


class _Pause:
    def __await__(self):  # type: ignore[no-untyped-def]
        yield "paused"


async def _holds_a_lock() -> None:
    try:
        await _Pause()
    finally:
        _UNWOUND.append("finally")  # an unlock, in model code


def test_a_frozen_copy_never_runs_its_finally_blocks_when_collected() -> None:
    """A checkpoint's or template's coroutines are never run: dropped in a
    reference cycle, the garbage collector finalizes them in its own order
    (it used to close them, and their finally blocks ran under whatever
    thread a driver was stepping); a live copy of them still unwinds."""
    _UNWOUND.clear()
    coro = _holds_a_lock()
    assert coro.send(None) == "paused"
    sharing = Sharing()
    snap, coros = sharing.copy({"coro": coro})
    assert len(coros) == 2  # the coroutine and the awaitable's generator
    frozen = Frozen(snap, coros)
    live = frozen.copy(sharing)[0]["coro"]
    cycle: list[object] = [frozen]
    cycle.append(cycle)
    del frozen, snap, coros, cycle
    gc.collect()
    assert _UNWOUND == []
    live.close()
    assert _UNWOUND == ["finally"]
    coro.close()
    assert _UNWOUND == ["finally", "finally"]


def _walks(items: list[list[int]], seen: list[int]) -> object:
    async def body() -> None:
        for x in items[0]:  # a list iterator suspended in the frame
            seen.append(x)
            await _Pause()
    return body()


class _Pause:
    def __await__(self):  # type: ignore[no-untyped-def]
        yield "paused"


def test_a_suspended_list_iterator_and_a_partial_copy_to_their_own() -> None:
    """The copier's rules for a for loop over a list (the copy walks on from
    the same index, over the copy of the list) and for functools.partial (a
    partial of the copies, sharing them with the rest of the copy); a partial
    with attributes of its own goes through the fallback and keeps them."""
    import functools

    items = [[1, 2, 3]]
    seen: list[int] = []
    coro = _walks(items, seen)
    assert coro.send(None) == "paused" and seen == [1]  # type: ignore[attr-defined]
    arg = [7]
    cb = functools.partial(seen.append, arg)
    tagged = functools.partial(seen.append, 9)
    tagged.tag = "kept"  # type: ignore[attr-defined]
    sharing = Sharing()
    snap, coros = sharing.copy({"coro": coro, "cb": cb, "arg": arg, "tagged": tagged,
                                "items": items, "seen": seen})
    live = Frozen(snap, coros).copy(sharing)[0]
    assert live["items"] == items and live["items"][0] is not items[0]
    live["items"][0].append(4)  # the copy's loop walks the copy's list
    assert live["coro"].send(None) == "paused" and live["seen"] == [1, 2] and seen == [1]
    assert live["coro"].send(None) == "paused"
    assert live["coro"].send(None) == "paused" and live["seen"] == [1, 2, 3, 4]
    with pytest.raises(StopIteration):
        live["coro"].send(None)
    assert live["cb"] is not cb and live["cb"].args[0] is live["arg"] is not arg
    live["cb"]()
    assert live["seen"][-1] is live["arg"] and seen == [1]
    assert live["tagged"].tag == "kept" and live["tagged"].args == (9,)
    coro.close()  # type: ignore[attr-defined]


def test_the_copier_copies_list_iterators_and_plain_partials_itself() -> None:
    """Those two kinds no longer go through the Python fallback (a restore
    met one in a few of them: their fallback was ~2% of a 3F+M+R search)."""
    import functools

    from pervma.check import template

    met: list[str] = []

    def spy(o: object, copier: object) -> object:
        met.append(type(o).__name__)
        return template._fallback(o, copier)

    copier = template._frames.Copier((), spy, template._finished, template._Probe)
    it = iter([1, 2])
    next(it)
    plain = functools.partial(print, 1)
    tagged = functools.partial(print, 2)
    tagged.tag = 1  # type: ignore[attr-defined]
    out = copier.copy([it, plain, tagged, tagged])[0]
    assert list(out[0]) == [2] and out[1].args == (1,) and out[2].tag == 1
    assert met == ["partial"]  # the tagged one only, once
    assert out[3] is out[2]  # both references to it get the one copy
