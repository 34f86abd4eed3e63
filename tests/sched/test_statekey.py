"""State keys: the C walk (pervma.sched._statekey) gives the Python walk's
key on every state, keys are canonical, and keying neither changes nor
leaks anything."""

from __future__ import annotations

import dataclasses
import enum
import gc
import os
import random
import subprocess
import sys
from collections.abc import Generator, Iterator
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pervma.check.engine import Execution, close_executor, dependent
from pervma.check.scenario import get_scenario
from pervma.check.search import Runner
from pervma.config import PRESET_NAMES, Config
from pervma.kernel.mm_types import Page, VmAreaStruct
from pervma.sched import statekey
from pervma.sched.task import Task, Violation

DIFF_SCENARIOS = ["spin-2f-m-r", "vma-reuse-by-another-mm", "fault-vs-munmap",
                  "detach-vs-transient-reader", "mmap-write-downgrade"]
SCHEDULES = 40  # random schedules per scenario and preset: 200 per scenario


@pytest.fixture(scope="module")
def cwalk() -> ModuleType:
    """The C walk, set up whatever PERVMA_PURE_STATEKEY says (a build without
    it fails here: the fallback is not what these tests check)."""
    from pervma.sched import _statekey

    _statekey._setup(statekey._special, statekey._classify, statekey._slots_of, Task,
                     statekey._live_locals)
    return _statekey


def _same(cwalk: ModuleType, tasks: Any) -> int:
    """Assert both walks agree on ``tasks`` (rows and key); the key."""
    rows = statekey._rows(tasks)
    assert cwalk.rows(tasks) == rows
    key = cwalk.state_key(tasks)
    assert key == hash(tuple(rows))
    return int(key)


def _random_run(name: str, preset: str, seed: int) -> Iterator[Execution]:
    """An execution of ``name`` under one random schedule, yielded after
    every transition (and before the first)."""
    run = Runner(get_scenario(name), Config.preset(preset)).execution()
    rng = random.Random(seed)
    yield run
    while True:
        enabled = run.runnable()
        if not enabled:
            break
        run.take(rng.choice(enabled))
        yield run
    run.end()


def test_the_python_key_is_the_hash_of_its_rows(cwalk: ModuleType) -> None:
    tasks = _mid_run("spin-2f-m-r", 20).ex.tasks
    assert statekey._py_state_key(tasks) == hash(tuple(statekey._rows(tasks)))
    assert statekey.state_key(tasks) == statekey._py_state_key(tasks)
    assert statekey.state_rows(tasks) == statekey._rows(tasks)


def test_the_c_walk_is_used_and_hashes_without_building_rows(cwalk: ModuleType) -> None:
    assert cwalk.hashes_rows() is True  # CPython 3.11-3.13 tuple hash
    if os.environ.get("PERVMA_PURE_STATEKEY") != "1":
        assert statekey.IMPLEMENTATION == "c"
        assert statekey._key is cwalk.state_key


def test_pure_statekey_environment_forces_the_python_walk() -> None:
    code = "from pervma.sched import statekey as s; print(s.IMPLEMENTATION, s._c is None)"
    env = dict(os.environ, PERVMA_PURE_STATEKEY="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["python", "True"]
    env.pop("PERVMA_PURE_STATEKEY")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["c", "False"]


@pytest.mark.parametrize("preset", PRESET_NAMES)
@pytest.mark.parametrize("name", DIFF_SCENARIOS)
def test_c_and_python_keys_agree_on_every_state(cwalk: ModuleType, name: str,
                                                preset: str) -> None:
    states = 0
    keys = set()
    for seed in range(SCHEDULES):
        for run in _random_run(name, preset, seed):
            keys.add(_same(cwalk, run.ex.tasks))
            states += 1
    assert states > 3 * SCHEDULES  # the runs went somewhere
    assert len(keys) > 5  # and through different states


def _first_independent_pair(name: str) -> tuple[list[int], int, int]:
    """A prefix and two threads whose next transitions commute there."""
    runner = Runner(get_scenario(name), Config.preset("universal"))
    prefix: list[int] = []
    for _ in range(40):
        run = runner.execution()
        for t in prefix:
            run.take(t)
        enabled = run.runnable()
        close_executor(run.ex)
        for i, a in enumerate(enabled):
            for b in enabled[i + 1:]:
                r1 = runner.execution()
                for t in prefix:
                    r1.take(t)
                ea = r1.take(a)
                if b not in r1.runnable():
                    close_executor(r1.ex)
                    continue
                eb = r1.take(b)
                close_executor(r1.ex)
                if not dependent(ea.acc, eb.acc):
                    return prefix, a, b
        prefix.append(enabled[0])
    raise AssertionError(f"{name}: no two commuting transitions found")


@pytest.mark.parametrize("name", ["fault-vs-munmap", "vma-reuse-by-another-mm"])
def test_commuting_steps_in_either_order_reach_the_same_key(cwalk: ModuleType,
                                                            name: str) -> None:
    prefix, a, b = _first_independent_pair(name)
    runner = Runner(get_scenario(name), Config.preset("universal"))
    keys = []
    for order in ((a, b), (b, a)):
        run = runner.execution()
        for t in [*prefix, *order]:
            run.take(t)
        keys.append(_same(cwalk, run.ex.tasks))
        close_executor(run.ex)
    before = runner.execution()
    for t in [*prefix, a]:
        before.take(t)
    assert keys[0] == keys[1]
    assert _same(cwalk, before.ex.tasks) != keys[0]  # a step is a change
    close_executor(before.ex)


def _reachable(root: Any, cls: type) -> list[Any]:
    """Objects of ``cls`` reachable from ``root`` through fields and containers."""
    seen: set[int] = set()
    todo = [root]
    found = []
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, (int, str, bytes, float, type, enum.Enum)):
            continue
        seen.add(id(o))
        if isinstance(o, cls):
            found.append(o)
        if isinstance(o, dict):
            todo.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            todo.extend(o)
        elif dataclasses.is_dataclass(o):
            todo.extend(getattr(o, f.name) for f in dataclasses.fields(o))
        elif hasattr(o, "__dict__"):
            todo.extend(vars(o).values())
    return found


def _mid_run(name: str, steps: int, seed: int = 3) -> Execution:
    last = None
    for i, run in enumerate(_random_run(name, "universal", seed)):
        last = run
        if i == steps:
            break
    assert last is not None
    return last


def test_one_field_one_page_byte_one_list_order_change_the_key(cwalk: ModuleType) -> None:
    run = _mid_run("fault-vs-munmap", 12)
    tasks = run.ex.tasks
    key = _same(cwalk, tasks)

    vma = _reachable(tasks[0].model, VmAreaStruct)[0]
    vma.vm_pgoff += 1
    assert _same(cwalk, tasks) != key
    vma.vm_pgoff -= 1
    assert _same(cwalk, tasks) == key

    page = _reachable(tasks[0].model, Page)[0]
    page.data[5] = page.data.get(5, 0) ^ 0x40
    assert _same(cwalk, tasks) != key
    page.data[5] ^= 0x40
    if page.data[5] == 0:
        del page.data[5]  # back to the state it was in (sparse bytes)
    assert _same(cwalk, tasks) == key

    lists = [lst for lst in _reachable(tasks[0].model, list)  # plain lists: a sequence
             if type(lst) is list and len(lst) >= 2 and lst[0] is not lst[1] and lst[0] != lst[1]]
    assert lists
    lst = lists[0]
    lst[0], lst[1] = lst[1], lst[0]
    assert _same(cwalk, tasks) != key
    lst[0], lst[1] = lst[1], lst[0]
    assert _same(cwalk, tasks) == key


class _Pause:
    def __await__(self) -> Generator[None, None, None]:
        yield None


async def _body(x: int, box: list[Any]) -> int:
    y = [x, box]
    await _Pause()
    return len(y)


def _parked(x: int) -> list[Task]:
    box: list[Any] = ["shared"]
    tasks = []
    for i in range(2):
        coro = _body(x + i, box)
        coro.send(None)
        tasks.append(Task(i, f"T{i}", coro))
    return tasks


def test_one_local_changes_the_key_and_equal_locals_do_not(cwalk: ModuleType) -> None:
    a, b, c = _parked(1), _parked(1), _parked(2)
    try:
        assert _same(cwalk, a) == _same(cwalk, b)  # other objects, same state
        assert _same(cwalk, a) != _same(cwalk, c)
    finally:
        for t in [*a, *b, *c]:
            t.coro.close()


def test_keying_changes_nothing_and_leaks_nothing(cwalk: ModuleType) -> None:
    run = _mid_run("spin-2f-m-r", 25)
    tasks = run.ex.tasks
    rows = statekey._rows(tasks)
    key = cwalk.state_key(tasks)
    vma = _reachable(tasks[0].model, VmAreaStruct)[0]
    page = _reachable(tasks[0].model, Page)
    watched = [tasks, tasks[0], tasks[0].model, tasks[1].coro, vma, vma.vm_mm, *page[:1]]
    fields = [getattr(vma, f.name) for f in dataclasses.fields(vma)]
    gc.collect()  # garbage that still refers to them (a dropped copy) would go mid-loop
    counts = [sys.getrefcount(o) for o in watched]
    for _ in range(1000):
        assert cwalk.state_key(tasks) == key
    for _ in range(20):
        cwalk.rows(tasks)
    assert [sys.getrefcount(o) for o in watched] == counts
    assert all(getattr(vma, f.name) is v
               for f, v in zip(dataclasses.fields(vma), fields, strict=True))
    assert statekey._rows(tasks) == rows


# -- every kind of value both walks know, in random object graphs ------------

class _Color(enum.Enum):
    RED = 1
    BLUE = 2


class _Bits(enum.IntFlag):
    A = 1
    B = 2


@dataclasses.dataclass(slots=True, eq=False)
class _Node:
    a: Any = None
    b: Any = None


class _Plain:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)

    def meth(self) -> None:
        pass


class _Prop:
    """Slots behind a __getattribute__: only the Python side may read them."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __getattribute__(self, name: str) -> Any:
        return object.__getattribute__(self, name)


class _Err(Exception):
    pass


def _gen(x: Any) -> Iterator[Any]:
    y = x
    yield y


def _cell(v: Any) -> Any:
    def inner() -> Any:
        return v
    assert inner.__closure__ is not None
    return inner.__closure__[0]


_atoms = st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y", ""]), st.booleans(),
                   st.none(), st.just(b"\x00z"), st.just(1.5), st.just(2j), st.just(range(3)),
                   st.sampled_from([_Color.RED, _Color.BLUE, _Bits.A, _Bits.A | _Bits.B]),
                   st.sampled_from([len, _body, _Node, Task, _Pause.__await__]))


def _build(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    two = st.tuples(children, children)
    return st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.sampled_from(["k", 1, _Color.RED]), children, max_size=3),
        st.sets(st.one_of(st.integers(0, 5), st.sampled_from(["a", "b"])), max_size=4),
        st.sets(st.integers(0, 3), max_size=3).map(frozenset),
        two.map(lambda p: _Node(*p)),
        two.map(lambda p: _Plain(p=p[0], q=p[1])),
        children.map(lambda c: _Plain(z=c).meth),
        children.map(_Prop),
        children.map(lambda c: _Err("boom", c)),
        children.map(_cell),
        children.map(lambda c: bytearray(b"ab")),
        children.map(lambda c: iter([c, 1])),
    )


_graphs = st.recursive(_atoms, _build, max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_graphs, min_size=1, max_size=3), st.integers(0, 2))
def test_both_walks_agree_on_random_object_graphs(cwalk: ModuleType, models: list[Any],
                                                  share: int) -> None:
    if share and len(models) > 1:  # the same object reached twice
        models[1] = _Node(models[0], models[share % len(models)])
    gen = _gen(models[0])
    next(gen)
    tasks = [Task(i, f"T{i}", None, model=m, result=m if i == 1 else None)  # type: ignore[arg-type]
             for i, m in enumerate(models)]
    tasks[0].coro = gen  # type: ignore[assignment]
    tasks.append(Task(len(tasks), "nested", None, model=tasks[0]))  # type: ignore[arg-type]
    _same(cwalk, tasks)


def test_unsortable_set_is_sorted_by_repr_in_both(cwalk: ModuleType) -> None:
    nodes = {_Node(1), _Node(2)}
    tasks = [Task(0, "T0", None, model={1, "a", _Color.RED, *nodes})]  # type: ignore[arg-type]
    _same(cwalk, tasks)


def test_both_walks_fail_alike(cwalk: ModuleType) -> None:
    import itertools

    unset = _Node.__new__(_Node)  # slots never assigned
    with pytest.raises(AttributeError):
        cwalk.state_key([Task(0, "T0", None, model=unset)])  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        statekey._py_state_key([Task(0, "T0", None, model=unset)])  # type: ignore[arg-type]
    counter = itertools.count()
    with pytest.raises(TypeError, match="itertools.count"):
        cwalk.state_key([Task(0, "T0", None, model=[counter])])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="itertools.count"):
        statekey._py_state_key([Task(0, "T0", None, model=[counter])])  # type: ignore[arg-type]


def test_a_violation_object_is_walked_by_its_fields(cwalk: ModuleType) -> None:
    v1, v2 = Violation("KASAN: use-after-free", "x"), Violation("KASAN: use-after-free", "y")
    k1 = _same(cwalk, [Task(0, "T0", None, model=v1)])  # type: ignore[arg-type]
    k2 = _same(cwalk, [Task(0, "T0", None, model=v2)])  # type: ignore[arg-type]
    assert k1 != k2


def test_many_types_and_objects_in_one_walk(cwalk: ModuleType) -> None:
    """More types than the C side's first type table holds (256 slots) and
    more objects than its first walk table (1024): both grow mid-walk."""
    classes = [dataclasses.make_dataclass(f"C{i}", [("x", Any), ("nxt", Any)], slots=True,
                                          eq=False) for i in range(300)]
    head: Any = None
    for i, cls in enumerate(classes):
        head = cls(i, head)
    nodes = [_Node(i, head if i % 500 == 0 else None) for i in range(2000)]
    tasks = [Task(0, "T0", None, model=(head, nodes))]  # type: ignore[arg-type]
    rows = statekey._rows(tasks)
    assert len(rows) == 1 + 300 + 1 + 2000  # the task, the classes' chain, the list, the nodes
    _same(cwalk, tasks)
    nodes[1234].a = -1
    assert statekey._rows(tasks) != rows
    _same(cwalk, tasks)


def test_building_rows_and_hashing_them_as_they_come_give_one_key(cwalk: ModuleType) -> None:
    """The fallback for an interpreter whose tuple hash the C side does not
    reproduce (build the rows, then hash them) gives the same keys."""
    states = [run.ex.tasks for run in [_mid_run(n, 15) for n in DIFF_SCENARIOS]]
    hashed = [cwalk.state_key(t) for t in states]
    cwalk._set_hashing(False)
    try:
        assert cwalk.hashes_rows() is False
        built = [cwalk.state_key(t) for t in states]
    finally:
        cwalk._set_hashing(True)
    assert cwalk.hashes_rows() is True
    assert built == hashed == [statekey._py_state_key(t) for t in states]
    assert len(set(built)) == len(DIFF_SCENARIOS)


def test_the_vmstat_event_counters_are_hidden_and_other_dicts_are_not(cwalk: ModuleType) -> None:
    """Counters nothing reads (kernel.vmstat.VmEvents, Promela's ``hidden``)
    are not state: states that differ only in them share a key, in both
    walks; a plain dict with the same counts is state."""
    from pervma.kernel.vmstat import VmEvents

    def key(events: object) -> int:
        return _same(cwalk, [Task(0, "T0", None, model={"ev": events, "n": 1})])  # type: ignore[arg-type]

    assert key(VmEvents(pgfault=1)) == key(VmEvents(pgfault=2, vma_lock_abort=1)) == key(VmEvents())
    assert key({"pgfault": 1}) != key({"pgfault": 2})
    assert key(VmEvents(pgfault=1)) != key({"pgfault": 1})


def test_a_fault_that_retried_meets_one_that_did_not() -> None:
    """Two executions of spin-2f-m whose faults count differently (one
    aborted onto mmap_lock and retried) end in the same stored state once
    the counters are hidden: the system's counters differ, the keys agree."""
    finals: dict[int, set[tuple[tuple[str, int], ...]]] = {}
    for seed in range(60):
        *_, run = _random_run("spin-2f-m", "universal", seed)
        assert run.violation is None
        kern = run.inst.world.kern  # type: ignore[attr-defined]
        finals.setdefault(statekey.state_key(run.ex.tasks), set()).add(
            tuple(sorted(kern.vm_events.counts.items())))
        close_executor(run.ex)
    assert any(len(counts) > 1 for counts in finals.values())


def test_a_container_subclass_that_is_not_hidden_is_refused_by_both_walks(cwalk: ModuleType) -> None:
    """A dict subclass's items are not fields: neither walk may key it by
    its (empty) fields alone, which would hide its contents silently."""

    class Counts(dict[str, int]):
        pass

    tasks = [Task(0, "T0", None, model={"c": Counts(a=1)})]  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Counts"):
        cwalk.state_key(tasks)
    with pytest.raises(TypeError, match="Counts"):
        statekey._py_state_key(tasks)


async def _reads_once(seen: int, keep: int) -> int:
    if seen < 0:
        raise ValueError(seen)
    await _Pause()  # ``seen`` is dead from here on, ``keep`` is not
    return keep


async def _reads_on_error(x: int) -> int:
    try:
        await _Pause()
    except ValueError:
        return x  # live at the await through the exception edge only
    return 0


def _parked_one(coro: Any) -> list[Task]:
    coro.send(None)
    return [Task(0, "T0", coro)]


def test_a_dead_local_is_not_state_and_a_live_one_is(cwalk: ModuleType) -> None:
    """SPIN's dead variable reduction (statekey._live_locals): a local no
    path from the suspension point reads before storing it is left out, in
    both walks; a local read only by an exception handler still counts."""
    a, b = _parked_one(_reads_once(1, 5)), _parked_one(_reads_once(2, 5))
    c = _parked_one(_reads_once(1, 6))
    d, e = _parked_one(_reads_on_error(1)), _parked_one(_reads_on_error(2))
    try:
        assert _same(cwalk, a) == _same(cwalk, b)
        assert _same(cwalk, a) != _same(cwalk, c)
        assert _same(cwalk, d) != _same(cwalk, e)
        frame = a[0].coro.cr_frame
        assert statekey._live_locals(frame.f_code, frame.f_lasti) == {"keep"}
    finally:
        for t in [*a, *b, *c, *d, *e]:
            t.coro.close()


async def _loops(items: list[int]) -> None:
    for _ in items:  # the loop variable is dead at the await: the position is on the stack
        await _Pause()


async def _plus(x: int) -> int:
    return x + await _Pause()  # ``x`` waits on the value stack


def _parked_at(coro: Any, sends: int) -> list[Task]:
    for _ in range(sends):
        coro.send(None)
    return [Task(0, "T0", coro)]


def test_the_value_stack_of_a_suspended_frame_is_state(cwalk: ModuleType) -> None:
    """A for loop's iterator and an operand waiting for the await's value sit
    on the frame's value stack, not in its locals: the second pass of a loop
    is another state than the first (the position differs), and both walks
    say so alike."""
    items = [1, 2, 3]
    first, second = _parked_at(_loops(items), 1), _parked_at(_loops(items), 2)
    again = _parked_at(_loops(items), 1)
    p1, p2 = _parked_one(_plus(1)), _parked_one(_plus(2))
    try:
        assert _same(cwalk, first) != _same(cwalk, second)
        assert _same(cwalk, first) == _same(cwalk, again)
        assert _same(cwalk, p1) != _same(cwalk, p2)
        assert any(isinstance(r, tuple) and ("<stack>", ) == r[-1][:1] for r in statekey._rows(first)
                   if r and isinstance(r[-1], tuple))
    finally:
        for t in [*first, *second, *again, *p1, *p2]:
            t.coro.close()
