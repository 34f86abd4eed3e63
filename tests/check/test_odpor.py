"""Optimal-DPOR (check/odpor.py) against source-DPOR (check/dpor.py): the same
Mazurkiewicz traces and outcomes, each trace explored once, no sleep-set-blocked
execution where no thread blocks, and no more of them than source-DPOR where
threads take locks."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from pervma.check import dpor, odpor
from pervma.check.engine import Execution
from pervma.check.scenario import Instance, Scenario, get_scenario
from pervma.check.scenarios import toys
from pervma.check.search import Budget, Runner, Stats
from pervma.config import Config

UNIVERSAL = Config.preset("universal")


def _ts() -> Stats:
    """Statistics with the distinct-trace count (asked for since --trace-stats)."""
    return Stats("odpor", trace_stats=True)
PRESETS = ("universal", "universal-up", "universal-up-nopreempt")

End = tuple[tuple[int, ...], str, str | None]  # trace key, outcome, violation kind


class _Recorder(Runner):
    """A runner whose executions note their trace, outcome and violation kind
    when they end (sleep-set-blocked executions never end), and whether any
    transition touched a lock."""

    def __init__(self, scenario: Scenario, cfg: Config) -> None:
        super().__init__(scenario, cfg)
        self.ends: list[End] = []
        self.locks = False

    def execution(self, snapshots: bool = False) -> Execution:
        run = super().execution(snapshots)
        end = run.end

        def end_and_note() -> str:
            outcome = end()
            self.ends.append((run.trace_key(), outcome,
                              run.violation.kind if run.violation is not None else None))
            self.locks |= any(loc[0] == "lock" for ev in run.events for loc in ev.acc)
            return outcome

        run.end = end_and_note  # type: ignore[method-assign]
        return run


def _everything(mod: ModuleType, sc: Scenario, cfg: Config) -> tuple[Stats, _Recorder]:
    """Explore every execution, violating ones included (``want`` accepts
    none, so the search never stops at a violation)."""
    rec = _Recorder(sc, cfg)
    st = mod.explore(rec, Budget(), stats=_ts(), want=lambda run: False, collect=[])
    assert st.executions == len(rec.ends)
    return st, rec


def _compare(sc: Scenario, cfg: Config, exact: bool = True) -> tuple[Stats, Stats, _Recorder]:
    """Both searches over everything: the same traces with the same outcomes
    (with ``exact`` False only the same outcomes: on the kernel scenarios a
    step's accesses depend on the state, so each search reaches traces the
    other does not), and Optimal-DPOR explores each trace once."""
    d, drec = _everything(dpor, sc, cfg)
    o, orec = _everything(odpor, sc, cfg)
    if exact:
        assert set(orec.ends) == set(drec.ends)
    else:
        assert {(out, k) for _, out, k in orec.ends} == {(out, k) for _, out, k in drec.ends}
    traces = [t for t, _, _ in orec.ends]
    assert len(traces) == len(set(traces)), "a trace explored twice"
    assert o.incomplete == d.incomplete
    return d, o, orec


def _scenario(build: Callable[[Config], Instance], **kw: object) -> Scenario:
    return Scenario("t", "t", build, **kw)  # type: ignore[arg-type]


# -- the toy oracles ---------------------------------------------------------------

@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_independent_writers_explore_exactly_one_execution(preset: str, n: int) -> None:
    st = odpor.explore(Runner(_scenario(toys.writers(n)), Config.preset(preset)), Budget(), stats=_ts())
    assert (st.executions, st.pruned, st.distinct, st.complete) == (1, 0, 1, True)
    assert st.strategy == "odpor"


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_one_writer_n_readers_explore_exactly_two_to_the_n_none_pruned(preset: str,
                                                                       n: int) -> None:
    st = odpor.explore(Runner(_scenario(toys.readers(n)), Config.preset(preset)), Budget(), stats=_ts())
    assert (st.executions, st.distinct, st.pruned, st.complete) == (2 ** n, 2 ** n, 0, True)


TOYS: dict[str, tuple[Callable[[Config], Instance], dict[str, object], bool]] = {
    # name: (build, scenario keywords, takes a lock)
    "writers": (toys.writers(3), {}, False),
    "readers": (toys.readers(4), {}, False),
    "racy_counter": (toys.racy_counter, {}, False),
    "locked_counter": (toys.locked_counter, {}, True),
    "lock_order": (toys.lock_order, {}, True),
    "spinner": (toys.spinner, {"max_steps": 30}, False),
    "preempt_counter": (toys.preempt_counter, {}, False),
}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", sorted(TOYS))
def test_toy_oracles_same_traces_and_outcomes_as_source_dpor(name: str, preset: str) -> None:
    build, kw, locks = TOYS[name]
    cfg = Config.preset(preset)
    d, o, rec = _compare(_scenario(build, **kw), cfg)
    assert rec.locks == locks
    if locks:
        assert o.pruned <= d.pruned
    else:
        assert o.pruned == 0
    # the search that stops at the first violation reaches the same verdict
    ds = dpor.explore(Runner(_scenario(build, **kw), cfg), Budget(), stats=_ts())
    os_ = odpor.explore(Runner(_scenario(build, **kw), cfg), Budget(), stats=_ts())
    assert (os_.found.kind if os_.found else None) == (ds.found.kind if ds.found else None)
    assert os_.executions == os_.distinct


def test_verdicts_of_the_toy_oracles() -> None:
    """The oracles' known answers, found by Optimal-DPOR itself."""
    def found(build: Callable[[Config], Instance], preset: str = "universal") -> str | None:
        st = odpor.explore(Runner(_scenario(build), Config.preset(preset)), Budget(), stats=_ts())
        return st.found.kind if st.found else None

    assert found(toys.racy_counter) == "assertion"
    assert found(toys.locked_counter) is None
    assert found(toys.lock_order) == "deadlock"  # needs the blocked rule: both threads wait
    assert found(toys.preempt_counter) == "assertion"
    assert found(toys.preempt_counter, "universal-up") is None
    assert found(toys.preempt_counter, "universal-up-nopreempt") is None


def test_livelock_bound_makes_the_run_incomplete() -> None:
    st = odpor.explore(Runner(_scenario(toys.spinner, max_steps=30), UNIVERSAL), Budget(), stats=_ts())
    assert not st.complete and "livelock" in st.incomplete
    assert st.livelock is not None and "livelock bound 30" in st.livelock
    assert st.pruned == 0 and st.executions == st.distinct


# -- random programs (the generator of test_check_dpor) -----------------------------

def _random_program_module() -> ModuleType:
    path = Path(__file__).with_name("test_check_dpor.py")
    spec = importlib.util.spec_from_file_location("_odpor_random_programs", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(("preset", "seeds"), [("universal", 40), ("universal-up", 20),
                                               ("universal-up-nopreempt", 20)])
def test_random_programs_same_traces_and_outcomes_none_pruned_without_locks(
        preset: str, seeds: int) -> None:
    gen = _random_program_module()._random_program
    cfg = Config.preset(preset)
    lockless = 0
    for seed in range(seeds):
        build = gen(seed)
        sc = Scenario("rand", "random toy", build)
        d, drec = _everything(dpor, sc, cfg)
        seen_by_dpor = set(build.outcomes)
        build.outcomes.clear()
        o, orec = _everything(odpor, sc, cfg)
        assert set(orec.ends) == set(drec.ends), f"seed {seed}"
        assert set(build.outcomes) == seen_by_dpor, f"seed {seed}"
        assert o.executions == len({t for t, _, _ in orec.ends}), f"seed {seed}: a trace twice"
        if orec.locks:
            assert o.pruned <= d.pruned, f"seed {seed}"
        else:
            lockless += 1
            assert o.pruned == 0, f"seed {seed}: {o.pruned} sleep-set-blocked"
    assert lockless >= seeds // 3  # the generator's lock-free programs are well represented


# -- kernel scenarios ----------------------------------------------------------------

KERNEL = [("fault-vs-munmap", "B13"), ("detach-vs-transient-reader", "B18"),
          ("vma-reuse-same-address", "B17")]


def _kernel_cases() -> list[tuple[str, str, str]]:
    """fault-vs-munmap on ``universal`` and ``universal-up``, and
    detach-vs-transient-reader on ``universal``: the others take 25-45 s a run
    since the anon_vma and maple-tree steps (``bench/odpor_bench.py`` runs every
    scenario on every preset)."""
    return [(name, bug, preset) for name, bug in KERNEL for preset in ("universal", "universal-up")
            if (name == "fault-vs-munmap"
                or (name == "detach-vs-transient-reader" and preset == "universal"))]


@pytest.mark.parametrize(("name", "bug", "preset"), _kernel_cases())
@pytest.mark.parametrize("switch", [False, True], ids=["clean", "bug"])
def test_kernel_scenarios_same_traces_and_verdict_fewer_pruned(name: str, bug: str, preset: str,
                                                               switch: bool) -> None:
    cfg = Config.preset(preset)
    if switch:
        cfg = cfg.with_bugs(bug)
    sc = get_scenario(name)
    d, o, rec = _compare(sc, cfg, exact=False)
    assert o.pruned <= d.pruned
    kinds = {k for _, outcome, k in rec.ends if outcome == "violation"}
    assert bool(kinds) == switch  # the switch is what makes it violate
    ds = dpor.explore(Runner(sc, cfg), Budget(), stats=_ts())
    os_ = odpor.explore(Runner(sc, cfg), Budget(), stats=_ts())
    assert (os_.found is None) == (ds.found is None) == (not switch)
    if switch:
        assert os_.found is not None and os_.found.kind in kinds
    else:
        assert os_.complete and ds.complete


# -- the dpor contract: root split, budget, bounds, collection ----------------------

@pytest.mark.parametrize("name", ["toy-readers", "toy-locked", "fault-vs-munmap"])
def test_explore_roots_is_the_sequential_search_split_by_root(name: str) -> None:
    sc = get_scenario(name)
    seq = odpor.explore(Runner(sc, UNIVERSAL), Budget(), stats=_ts())
    roots = odpor.explore_roots(Runner(sc, UNIVERSAL), Budget(), stats=_ts())
    split = dpor.root_split(Runner(sc, UNIVERSAL))
    parts = [odpor.explore(Runner(sc, UNIVERSAL), Budget(), stats=_ts(), root=r) for r in split]
    assert roots.complete and seq.complete
    assert roots.traces == seq.traces == set().union(*(p.traces for p in parts))
    assert roots.executions == seq.executions == sum(p.executions for p in parts)
    assert seq.pruned <= roots.pruned <= seq.pruned + len(split)


@pytest.mark.parametrize("cap", [1, 3, 5])
def test_budget_counts_executions_and_pruned(cap: int) -> None:
    st = odpor.explore(Runner(get_scenario("toy-readers"), UNIVERSAL), Budget(max_executions=cap), stats=_ts())
    assert st.executions + st.pruned == cap
    assert st.incomplete == [f"stopped at --max-executions {cap}"] and not st.complete


def test_explore_roots_shares_one_budget() -> None:
    st = odpor.explore_roots(Runner(get_scenario("toy-readers"), UNIVERSAL),
                             Budget(max_executions=5))
    assert st.executions + st.pruned == 5
    assert st.incomplete == ["stopped at --max-executions 5"]


def test_stops_at_the_first_violation() -> None:
    st = odpor.explore_roots(Runner(get_scenario("toy-racy"), UNIVERSAL), Budget(), stats=_ts())
    assert st.found is not None and st.found.kind == "assertion"
    assert st.incomplete == ["stopped at the first violation"] and not st.complete


@pytest.mark.parametrize(("bound", "found"), [(0, False), (1, True)])
def test_preemption_bound_limits_the_lost_update(bound: int, found: bool) -> None:
    """Two unlocked increments lose one only if one preempts the other."""
    runner = Runner(get_scenario("toy-racy"), UNIVERSAL)
    st = odpor.explore(runner, Budget(), stats=_ts(), max_preemptions=bound)
    assert (st.found is not None) == found
    ref = dpor.explore(runner, Budget(), stats=_ts(), max_preemptions=bound)
    assert (ref.found is not None) == found


def test_want_collects_violating_executions_without_stopping() -> None:
    got: list[Execution] = []
    runner = Runner(get_scenario("fault-vs-munmap"), UNIVERSAL.with_bugs("B13"))
    st = odpor.explore(runner, Budget(), stats=_ts(), want=lambda run: True, collect=got, collect_max=3)
    assert len(got) == 3 and st.found is None and st.executions >= 3
    kinds = [r.violation.kind if r.violation is not None else None for r in got]
    # B13: the fault uses the VMA munmap freed, or finds it detached under its read lock
    assert set(kinds) <= {"KASAN: use-after-free", "WARNING: vma_assert_detached"}
    assert "KASAN: use-after-free" in kinds


def test_cli_optimal_is_the_stateless_optimal_search(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from pervma.cli import main

    assert main(["check", "toy-readers", "--stateless", "--optimal", "--json",
                 "--trace-stats"]) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert (r["executions"], r["pruned"], r["distinct"], r["states"]) == (8, 0, 8, None)
    assert any("Optimal-DPOR" in n for n in r["notes"])
    assert main(["check", "toy-readers", "--optimal"]) == 2
    assert "--optimal is a form of the stateless search" in capsys.readouterr().err
