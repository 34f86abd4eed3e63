"""Symmetry reduction (check/symmetry.py): interchangeable threads.

A permutation of a group's threads gives the same key once each state's
threads are walked in the order of their signatures; the stateful search with
the reduction reaches the same violations (threads named by their group) and
the same final states (up to permutation) as without it, in fewer states.
"""

from __future__ import annotations

import random

import pytest

from pervma import PAGE
from pervma.check.differential import reached
from pervma.check.scenario import Scenario, get_scenario
from pervma.check.scenarios.kernel import ANON, RW, A, World
from pervma.check.search import Runner
from pervma.check.symmetry import _signature, canonical, orbit_key
from pervma.config import Config
from pervma.errors import ScenarioError
from pervma.kernel.locks import RwSemaphore
from pervma.kernel.system import Thread
from pervma.sched.statekey import state_key


def _rwsems(tasks: list) -> list[RwSemaphore]:
    """The rw_semaphores of the scenario's mms (the mmap_locks)."""
    seen = {}
    for t in tasks:
        mm = t.model.mm
        if mm is not None:
            seen[id(mm)] = mm.mmap_lock
    return list(seen.values())


def _readers_queued_together(tasks: list) -> bool:
    """Two readers next to each other in an rwsem's wait list: the model keeps
    such a run in pid order, which the key still sees (a merge missed)."""
    for sem in _rwsems(tasks):
        wl = sem.wait_list
        if any(not a.write and not b.write for a, b in zip(wl, wl[1:], strict=False)):
            return True
    return False


def _ties(tasks: list, groups: tuple[tuple[int, ...], ...]) -> bool:
    """Two threads of a group at the same positions: which comes first is
    then the thread id, and two permutations may get two keys."""
    for g in groups:
        sigs = [_signature(tasks[t]) for t in g]
        if len(set(sigs)) < len(sigs):
            return True
    return False


@pytest.mark.parametrize("name", ["spin-2f-m", "spin-3f-m", "spin-2f-m-r"])
def test_a_permuted_schedule_reaches_a_state_with_the_same_canonical_key(name: str) -> None:
    runner = Runner(get_scenario(name), Config.preset("universal"))
    group = runner.execution()
    groups = runner.symmetry
    assert len(groups) == 1 and len(groups[0]) == int(name[5])
    del group
    compared = differ = 0
    for seed in range(40):
        rnd = random.Random(seed)
        a, b = runner.execution(), runner.execution()
        perm = list(range(len(a.ex.tasks)))
        shuffled = list(groups[0])
        rnd.shuffle(shuffled)
        for x, y in zip(groups[0], shuffled, strict=True):
            perm[x] = y  # b's thread perm[t] does what a's thread t does
        while a.runnable() and a.violation is None:
            t = rnd.choice(a.runnable())
            assert perm[t] in b.runnable()
            a.take(t)
            b.take(perm[t])
            ka, _ = canonical(a.ex.tasks, groups)
            kb, _ = canonical(b.ex.tasks, groups)
            compared += 1
            if _readers_queued_together(a.ex.tasks):
                continue  # a run of queued readers is kept in pid order: a merge missed
            # walked in the order that puts each a-thread where its b-twin is:
            twin = [b.ex.tasks[perm[t]] for t in range(len(perm))]
            assert state_key(a.ex.tasks) == state_key(twin)
            if not _ties(a.ex.tasks, groups):
                assert ka == kb
            differ += ka != kb
    assert compared > 500
    assert differ < compared // 10


def test_symmetric_search_reaches_what_the_plain_one_does_in_fewer_states() -> None:
    sc = get_scenario("spin-2f-m")
    seen_violations = 0
    for preset in ("universal", "universal-up"):
        for bug in (None, "B13", "B18"):
            cfg = Config.preset(preset)
            if bug is not None:
                cfg = cfg.with_bugs(bug)
            plain = reached(sc, cfg, stateless=False, symmetric=False)
            sym = reached(sc, cfg, stateless=False)
            assert plain.stats.complete and sym.stats.complete
            assert sym.violations == plain.violations, (preset, bug)
            assert sym.finals == plain.finals, (preset, bug)
            assert sym.stats.states is not None and plain.stats.states is not None
            assert sym.stats.states < plain.stats.states * 0.7, (preset, bug)
            seen_violations += len(sym.violations)
            if bug is not None and preset == "universal":
                assert sym.violations, f"{bug} is found on spin-2f-m"
    assert seen_violations >= 4


def test_violations_name_a_group_by_its_first_thread() -> None:
    cfg = Config.preset("universal").with_bugs("B13")
    sym = reached(get_scenario("spin-2f-m"), cfg, stateless=False)
    assert sym.violations
    assert not any("fault2" in m for _, m in sym.violations)


def test_orbit_key_is_the_same_for_every_permutation_of_a_final_state() -> None:
    runner = Runner(get_scenario("spin-3f-m"), Config.preset("universal"))
    keys, orbits = set(), set()
    for order in ([0, 1, 2, 3], [2, 1, 0, 3], [1, 2, 0, 3], [3, 0, 1, 2]):
        run = runner.execution()
        for t in order:
            while t in run.runnable():
                run.take(t)
        assert not run.runnable()
        groups = runner.symmetry
        keys.add(state_key(run.ex.tasks))
        orbits.add(orbit_key(run.ex.tasks, groups))
        run.end()
    assert len(orbits) == 2  # the faults before the munmap, or after it
    assert len(keys) >= len(orbits)


def _mixed_group(w: World) -> None:
    w.p.mmap(A, PAGE, RW, ANON)

    async def load(t: Thread) -> int:
        return await t.load(A)

    async def store(t: Thread) -> None:
        await t.store(A, 1)

    w.thread("a", w.p.thread(), load, group="g")
    w.thread("b", w.p.thread(), store, group="g")


def test_a_group_of_threads_running_different_code_is_refused() -> None:
    def build(cfg: Config):  # noqa: ANN202
        w = World(cfg)
        _mixed_group(w)
        return w.instance()

    with pytest.raises(ScenarioError, match="same body"):
        Runner(Scenario("mixed", "two bodies in one group", build),
               Config.preset("universal")).execution()


def test_the_c_signature_is_the_python_one() -> None:
    from pervma.check.symmetry import _py_signature

    runner = Runner(get_scenario("spin-2f-m-r"), Config.preset("universal"))
    rnd = random.Random(7)
    seen = 0
    for _ in range(5):
        run = runner.execution()
        while run.runnable() and run.violation is None:
            run.take(rnd.choice(run.runnable()))
            for t in run.ex.tasks:
                sig = _py_signature(t)
                assert _signature(t) == sig
                seen += len(sig) > 2  # at least one suspended frame
    assert seen > 50


def test_the_command_line_reports_the_reduction_and_can_turn_it_off(capsys: pytest.CaptureFixture[str]) -> None:
    from pervma.cli import main

    assert main(["check", "spin-2f-m"]) == 0
    on = capsys.readouterr().out
    assert main(["check", "spin-2f-m", "--no-symmetry"]) == 0
    off = capsys.readouterr().out
    assert "symmetry reduction: fault1, fault2 are interchangeable" in on
    assert "symmetry" not in off

    def states(out: str) -> int:
        return int(out.split(" states,")[0].rsplit(" ", 1)[1])

    assert states(on) == 2456 and states(off) == 4667


def test_two_workers_find_what_one_finds_with_the_reduction() -> None:
    from pervma.check.api import run_check

    one = run_check("spin-2f-m", "universal", bugs=["B13"], minimise=False)
    two = run_check("spin-2f-m", "universal", bugs=["B13"], minimise=False, jobs=2)
    assert one.violation is not None and two.violation is not None
    assert one.violation[0] == two.violation[0] == "KASAN: use-after-free"
    clean = run_check("spin-2f-m", "universal", jobs=2)
    assert clean.complete and clean.violation is None and clean.states is not None
    assert clean.states < 4667  # the plain search's count
