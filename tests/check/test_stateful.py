"""The stateful search (check/stateful.py) against the stateless one.

Both must report the same violations and reach the same set of final states
(keyed by :func:`pervma.sched.statekey.state_key`) on the toy oracles and on
fault-vs-munmap, vma-reuse-by-another-mm and detach-vs-transient-reader, with
each bug switch, on the four presets of the sweeps.  Neither stops at the
first violation here: every violating execution is collected.
"""

from __future__ import annotations

import pytest

from pervma.check import stateful, strategies
from pervma.check.api import run_check
from pervma.check.catalogue import CATALOGUE
from pervma.check.differential import reached
from pervma.check.scenario import Scenario, get_scenario
from pervma.check.search import Budget, Runner
from pervma.config import SWEEP_PRESETS, Config
from pervma.sched.statekey import state_key

TOYS = ["toy-writers", "toy-readers", "toy-racy", "toy-locked", "toy-abba", "toy-preempt"]
KERNEL = ["fault-vs-munmap", "vma-reuse-by-another-mm", "detach-vs-transient-reader"]


def _same(name: str, cfg: Config) -> tuple[int, int]:
    sc = get_scenario(name)
    ra, rb = reached(sc, cfg, stateless=True), reached(sc, cfg, stateless=False)
    a, va, fa = ra.stats, ra.violations, ra.finals
    b, vb, fb = rb.stats, rb.violations, rb.finals
    assert a.complete and b.complete, (a.incomplete, b.incomplete)
    assert va == vb, f"{name} {cfg.name} {sorted(cfg.bugs)}: violations differ"
    assert fa == fb, f"{name} {cfg.name} {sorted(cfg.bugs)}: final states differ"
    assert fa or va, "an exploration that reaches no final state and no violation tests nothing"
    return len(va), len(fa)


@pytest.mark.parametrize("preset", SWEEP_PRESETS)
@pytest.mark.parametrize("name", TOYS)
def test_toys_same_violations_and_final_states(name: str, preset: str) -> None:
    _same(name, Config.preset(preset))


def _kernel_runs() -> list[tuple[str, str, str | None]]:
    """Every (scenario, preset, bug switch) of the three kernel scenarios, but
    ``vma-reuse-by-another-mm`` on the two presets with per-VMA locks and
    preemption, where one run takes 60-100 s since RCU grace periods are
    dependencies: ``bench/stateful_bench.py --differential`` runs the whole
    matrix, and the suite's violating runs come from the other two scenarios."""
    runs = []
    for name in KERNEL:
        for preset in SWEEP_PRESETS:
            if name == "vma-reuse-by-another-mm" and preset in ("universal", "universal-up"):
                continue
            for bug in [None, *sorted(CATALOGUE)]:
                runs.append((name, preset, bug))
    return runs


@pytest.mark.parametrize(("name", "preset", "bug"), _kernel_runs())
def test_kernel_scenarios_same_violations_and_final_states_with_each_bug(
        name: str, preset: str, bug: str | None) -> None:
    cfg = Config.preset(preset)
    if bug is not None:
        cfg = cfg.with_bugs(bug)
    nviol, nfinal = _same(name, cfg)
    if (name, preset, bug) in VIOLATING:  # the differential also compares violating runs
        assert nviol > 0


#: Runs in which both searches must collect violating executions.
VIOLATING = {(name, preset, bug) for name in KERNEL for preset in ("universal", "universal-up")
             for bug in ("B13", "B18")}


def test_random_programs_reach_every_outcome_of_naive_enumeration() -> None:
    from tests.check.test_check_dpor import _random_program

    for preset, seeds in (("universal", 30), ("universal-up-nopreempt", 10)):
        cfg = Config.preset(preset)
        for seed in range(seeds):
            build = _random_program(seed)
            sc = Scenario("rand", "random toy", build)
            st = stateful.explore_roots(Runner(sc, cfg), Budget())
            assert st.complete and st.found is None
            got = set(build.outcomes)
            build.outcomes.clear()
            naive = strategies.explore_bounded(Runner(sc, cfg), Budget(), max_bound=10_000)
            assert naive.complete
            assert got == build.outcomes, f"{preset} seed {seed}: the stateful search missed outcomes"


def test_stored_states_cut_the_search_where_traces_merge() -> None:
    # 1F+M+R: 4,788 Mazurkiewicz traces (stateless); most end in a few states.
    less = run_check("spin-1f-m-r", "universal", stateless=True)
    more = run_check("spin-1f-m-r", "universal")
    assert less.complete and more.complete and less.violation is more.violation is None
    assert (less.executions, less.pruned, less.states) == (4788, 745, None)
    assert more.states is not None and more.revisits > 0
    assert more.executions + more.pruned < (less.executions + less.pruned) / 2
    assert more.executions < 50  # executions that ran to a final state not seen before


def test_a_spin_wait_is_a_cycle_not_a_livelock() -> None:
    r = run_check("toy-spin")
    assert r.complete and r.violation is None and r.livelock is None
    assert any("cycle(s) closed" in n for n in r.notes)
    s = run_check("toy-spin", stateless=True)
    assert not s.complete and s.incomplete == ["livelock"]


@pytest.mark.parametrize("preset", ["universal", "universal-up", "universal-up-nopreempt"])
def test_a_loop_nobody_can_end_is_a_livelock(preset: str) -> None:
    r = run_check("toy-livelock", preset)
    assert not r.complete and r.incomplete == ["livelock"] and r.violation is None
    assert r.livelock is not None and r.livelock.startswith("S ")
    s = run_check("toy-livelock", preset, stateless=True)
    assert s.incomplete == ["livelock"]


def test_a_budget_cut_is_deterministic() -> None:
    a = run_check("detach-vs-transient-reader", max_executions=40)
    b = run_check("detach-vs-transient-reader", max_executions=40)
    assert a.incomplete == ["stopped at --max-executions 40"]
    assert a.executions + a.pruned == 40
    assert (a.executions, a.pruned, a.states, a.revisits) == \
        (b.executions, b.pruned, b.states, b.revisits)


@pytest.mark.parametrize("bug", sorted(CATALOGUE))
def test_each_catalogued_bug_is_found_statefully(bug: str) -> None:
    entry = CATALOGUE[bug]
    r = run_check(entry.scenario, entry.preset, bugs=[bug], minimise=False,
                  memory_model=entry.memory_model)
    assert r.violation is not None, bug
    assert r.states is not None


def test_a_state_has_one_key_whatever_the_objects_and_their_addresses() -> None:
    # The same schedule in two fresh worlds, allocated at different addresses,
    # gives the same key after every step (a set of id()s kept in a suspended
    # frame once made this fail: vma_iter_update).
    import random

    from pervma.check.scenario import all_scenarios

    checked = 0
    for sc in all_scenarios():
        for seed in range(2):
            keys = []
            for junk in (0, 777):
                ballast = [object() for _ in range(junk)]
                rng = random.Random(seed)
                run = Runner(sc, Config.preset("universal")).execution()
                ks = [state_key(run.ex.tasks)]
                while run.runnable():
                    run.take(rng.choice(run.runnable()))
                    ks.append(state_key(run.ex.tasks))
                run.end()
                keys.append(ks)
                del ballast
            assert keys[0] == keys[1], f"{sc.name} seed {seed}: a state has two keys"
            checked += len(keys[0])
    assert checked > 1000
