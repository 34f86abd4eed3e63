"""DPOR oracles and a differential soundness test against naive enumeration."""

from __future__ import annotations

import random

import pytest

from pervma import sched
from pervma.check import dpor, strategies
from pervma.check.scenario import Instance, Scenario
from pervma.check.scenarios.toys import ToyMemory, readers, writers
from pervma.check.search import Budget, Runner, Stats
from pervma.config import Config

UNIVERSAL = Config.preset("universal")


def _traced(strategy: str = "dpor") -> Stats:
    """Statistics that also collect the distinct-trace keys (``--trace-stats``)."""
    return Stats(strategy, trace_stats=True)


def _dpor(build, cfg=UNIVERSAL, **kw):
    return dpor.explore(Runner(Scenario("t", "t", build, **kw), cfg), Budget(), _traced())


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_independent_writers_explore_exactly_one_execution(n: int) -> None:
    st = _dpor(writers(n))
    assert (st.executions, st.pruned, st.distinct, st.complete) == (1, 0, 1, True)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_one_writer_n_readers_explore_exactly_two_to_the_n(n: int) -> None:
    st = _dpor(readers(n))
    print(f"writer + {n} readers: {st.executions} executions, {st.distinct} distinct traces, "
          f"redundancy {st.redundancy:.2f}, {st.pruned} pruned")
    assert st.executions == 2 ** n
    assert st.distinct == 2 ** n
    assert st.redundancy <= 1.2
    assert st.complete


# -- differential test: DPOR reaches every outcome naive enumeration reaches --------

def _random_program(seed: int):
    rng = random.Random(seed)
    nthreads = rng.randint(2, 3)
    progs = []
    budget = 6 if nthreads == 2 else 3  # primitive steps per thread: keeps naive enumeration small
    for _ in range(nthreads):
        ops: list[tuple[str, ...]] = []
        left = budget
        while left > 0:
            r = rng.random()
            var = rng.choice("xyz")
            if r < 0.2 and left >= 4:
                ops.append(("locked", var, rng.choice("ab")))
                left -= 4
            elif r < 0.35 and left >= 2:
                ops.append(("inc", var))
                left -= 2
            elif r < 0.7:
                ops.append(("load", var))
                left -= 1
            else:
                ops.append(("store", var))
                left -= 1
            if rng.random() < 0.2:
                break
        progs.append(ops)

    def build(cfg: Config) -> Instance:
        mem = ToyMemory()
        seen: list[list[int]] = [[] for _ in progs]
        outcomes = build.outcomes  # type: ignore[attr-defined]

        def body(i: int, ops):  # type: ignore[no-untyped-def]
            async def run() -> None:
                for k, op in enumerate(ops):
                    if op[0] == "load":
                        seen[i].append(await mem.load(op[1]))
                    elif op[0] == "store":
                        await mem.store(op[1], 10 * i + k)
                    elif op[0] == "inc":
                        v = await mem.load(op[1])
                        await mem.store(op[1], v + 1)
                    else:
                        await mem.lock(op[2])
                        v = await mem.load(op[1])
                        seen[i].append(v)
                        await mem.store(op[1], v + 100)
                        await mem.unlock(op[2])
            return run()

        def finish() -> None:
            outcomes.add((tuple(sorted(mem.words.items())), tuple(tuple(s) for s in seen)))

        return Instance([body(i, ops) for i, ops in enumerate(progs)],
                        [f"T{i}" for i in range(len(progs))], finish=finish)

    build.outcomes = set()  # type: ignore[attr-defined]
    return build


@pytest.mark.parametrize(("preset", "seeds"), [("universal", 30), ("universal-up-nopreempt", 15)])
def test_dpor_reaches_every_outcome_of_naive_enumeration(preset: str, seeds: int) -> None:
    cfg = Config.preset(preset)
    for seed in range(seeds):
        build = _random_program(seed)
        sc = Scenario("rand", "random toy", build)
        st = dpor.explore(Runner(sc, cfg), Budget(), _traced())
        assert st.complete and st.found is None
        assert st.redundancy == 1.0
        got = set(build.outcomes)
        build.outcomes.clear()
        naive = strategies.explore_bounded(Runner(sc, cfg), Budget(), max_bound=10_000)
        assert naive.complete
        assert got == build.outcomes, f"seed {seed}: DPOR missed outcomes"
        assert st.executions <= naive.executions


def test_one_cpu_presets_switch_only_where_the_model_allows() -> None:
    from pervma.check.scenarios.toys import preempt_counter

    smp = _dpor(preempt_counter)
    assert smp.found is not None and smp.found.kind == "assertion"
    for preset in ("universal-up", "universal-up-nopreempt"):
        st = _dpor(preempt_counter, Config.preset(preset))
        assert st.complete and st.found is None, preset


def test_blocked_threads_still_race_lock_order_deadlock_found() -> None:
    from pervma.check.scenarios.toys import lock_order

    st = _dpor(lock_order)
    assert st.found is not None and st.found.kind == "deadlock"
    assert st.found.preemptions >= 1


def test_livelock_bound_makes_the_run_incomplete() -> None:
    from pervma.check.scenarios.toys import spinner

    st = _dpor(spinner, max_steps=30)
    assert not st.complete and "livelock" in st.incomplete
    assert st.livelock is not None and "livelock bound 30" in st.livelock


def test_sched_violation_in_a_thread_is_found() -> None:
    def build(cfg: Config) -> Instance:
        mem = ToyMemory()

        async def a() -> None:
            await mem.store("p", 1)
            await mem.store("p", 0)

        async def b() -> None:
            if await mem.load("p") == 1:
                sched.violation("KASAN: use-after-free", "saw the transient value")

        return Instance([a(), b()], ["A", "B"])

    st = _dpor(build)
    assert st.found is not None and st.found.kind == "KASAN: use-after-free"


def test_python_error_in_a_thread_is_an_exception_violation() -> None:
    def build(cfg: Config) -> Instance:
        mem = ToyMemory()

        async def a() -> None:
            await mem.store("p", 1)

        async def b() -> None:
            if await mem.load("p") == 1:
                raise ValueError("model bug")

        return Instance([a(), b()], ["A", "B"])

    st = _dpor(build)
    assert st.found is not None and st.found.kind == "exception"
    assert "ValueError: model bug" in st.found.message


@pytest.mark.parametrize("name", ["toy-readers", "toy-locked", "toy-abba"])
def test_root_split_covers_exactly_the_sequential_traces(name: str) -> None:
    from pervma.check.scenario import get_scenario

    sc = get_scenario(name)
    seq = dpor.explore(Runner(sc, UNIVERSAL), Budget(), _traced())
    parts = [dpor.explore(Runner(sc, UNIVERSAL), Budget(), _traced(), root=r)
             for r in dpor.root_split(Runner(sc, UNIVERSAL))]
    if seq.found is not None:
        assert any(p.found is not None for p in parts)
        return
    union = set().union(*(p.traces for p in parts))
    assert union == seq.traces
    assert sum(p.executions for p in parts) == seq.executions


def test_explore_roots_is_the_sequential_search_with_a_full_root_backtrack_set() -> None:
    """The search check runs: every maximal execution of explore(), at most a
    few more pruned ones."""
    from pervma.check.scenario import get_scenario

    for name in ("toy-readers", "toy-locked", "fault-vs-munmap"):
        sc = get_scenario(name)
        seq = dpor.explore(Runner(sc, UNIVERSAL), Budget(), _traced())
        roots = dpor.explore_roots(Runner(sc, UNIVERSAL), Budget(), _traced())
        assert roots.complete and seq.complete
        assert roots.traces == seq.traces
        assert roots.executions == seq.executions
        assert seq.pruned <= roots.pruned <= seq.pruned + len(dpor.root_split(Runner(sc, UNIVERSAL)))


def _exploration(res) -> dict:  # type: ignore[no-untyped-def]
    d = res.to_json()
    for timing in ("elapsed", "time_to_find"):
        d.pop(timing)
    d["notes"] = [n for n in d["notes"] if "worker processes" not in n]
    return d


@pytest.mark.parametrize(("scenario", "kw"), [
    ("fault-vs-munmap", {}),                                   # complete, 3 root subtrees
    ("fault-vs-munmap", {"trace_stats": True}),                # the workers count traces too
    ("fault-vs-munmap", {"max_executions": 150}),              # cut inside the first subtree
    ("fault-vs-mremap", {"max_executions": 5}),                # cut in the second subtree
    ("toy-readers", {"max_executions": 3}),                    # cut in the second of four
    ("toy-readers", {"max_executions": 5}),                    # the budget ends with a subtree
    ("detach-vs-transient-reader", {"bugs": ["B18"]}),         # a violation, minimised
    ("fault-vs-munmap", {"strategy": "random", "max_executions": 60, "seed": 4}),
    ("fault-vs-munmap", {"strategy": "random", "max_executions": 60, "seed": 4,
                         "trace_stats": True}),
    ("fault-vs-munmap", {"strategy": "pct", "max_executions": 300, "seed": 3,
                         "bugs": ["B13"]}),
])
def test_jobs_do_not_change_what_is_explored(scenario: str, kw: dict) -> None:
    from pervma.check.api import run_check

    kw = dict(kw, stateless=True) if kw.get("strategy") is None else kw
    one = run_check(scenario, **kw)
    two = run_check(scenario, jobs=2, **kw)
    three = run_check(scenario, jobs=3, **kw)
    assert _exploration(one) == _exploration(two) == _exploration(three)
    assert one.executions > 0
    if "max_executions" in kw and kw.get("strategy") is None:
        assert one.executions + one.pruned == kw["max_executions"]
        assert one.incomplete == [f"stopped at --max-executions {kw['max_executions']}"]


def test_random_executions_depend_only_on_seed_and_index() -> None:
    from pervma.check.scenario import get_scenario

    sc = get_scenario("fault-vs-munmap")
    whole = strategies.explore_random(Runner(sc, UNIVERSAL), Budget(max_executions=30), seed=9,
                                      stats=_traced("random"))
    head = strategies.explore_random(Runner(sc, UNIVERSAL), Budget(max_executions=12), seed=9,
                                     stats=_traced("random"))
    tail = strategies.explore_random(Runner(sc, UNIVERSAL), Budget(max_executions=18), seed=9,
                                     stats=_traced("random"), first=12)
    assert whole.executions == 30
    assert whole.traces == head.traces | tail.traces
    assert whole.steps == head.steps + tail.steps


def test_minimiser_is_bounded_by_executions() -> None:
    from pervma.check.minimise import minimise
    from pervma.check.scenario import get_scenario

    sc = get_scenario("fault-vs-munmap")
    runner = Runner(sc, UNIVERSAL.with_bugs("B13"))
    st = dpor.explore_roots(runner, Budget())
    assert st.found is not None
    full = minimise(runner, st.found)
    assert not full.cut and full.found.preemptions <= st.found.preemptions
    again = minimise(runner, st.found)
    assert again == full  # no clock inside: the same result every time
    short = minimise(runner, st.found, max_executions=3)
    # each phase stops at 3; then the strict re-verification
    assert short.cut and short.executions <= 3 + 3 + 1
    assert short.found.kind == st.found.kind
