"""The checker's bookkeeping (vector clocks, race analysis, trace statistics)
changes nothing in what is explored.

Every expected value below was recorded from the code as it stood before the
bookkeeping was made cheaper (commit 43b50e1), and recorded again, with the
same bookkeeping, when slab allocations and frees became dependent on their
cache (kernel/slab.py: a model change that adds executions), and again when
RCU's grace-period state became a location (kernel/rcu.py: a reader's
outermost rcu_read_lock/unlock reads it, call_rcu and synchronize_rcu write
it; another model change that adds executions), and again when a free of a
SLAB_TYPESAFE_BY_RCU object started a grace period for KASAN (kernel/slab.py)
and a killed fork tore its half-built child down, and again when an
rw_semaphore's read-side steps stopped racing each other (kernel/locks.py,
sched/ops.py ``OpKind.ACQUIRE_SHARED``/``RELEASE_SHARED``: fewer executions)
and the stored states' summaries race only the dependent steps no later one
follows (check/dpor.py ``summary_races``): for each case, the number of
executions the search started (pruned ones and the root probes included) and
a hash of the sequence of their primitive-step schedules, in order, so the
same executions in the same order with the same backtrack points; the
executions, pruned and conservative counters; and a hash of the set of
distinct Mazurkiewicz trace keys (which depend on the vector clocks).
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from pervma.check import dpor, strategies
from pervma.check.engine import Execution
from pervma.check.scenario import get_scenario
from pervma.check.search import Budget, Runner, Stats
from pervma.config import Config


class _Recorder(Runner):
    """A runner that hashes the schedule of every execution it built, in order."""

    def __init__(self, scenario: str, preset: str) -> None:
        super().__init__(get_scenario(scenario), Config.preset(preset))
        self.hash = hashlib.sha256()
        self.count = 0
        self.last: Execution | None = None

    def execution(self, snapshots: bool = False) -> Execution:
        self._flush()
        self.last = super().execution(snapshots)
        return self.last

    def _flush(self) -> None:
        if self.last is not None:
            self.hash.update(",".join(map(str, self.last.schedule)).encode() + b";")
            self.count += 1
            self.last = None

    def digest(self) -> tuple[int, str]:
        self._flush()
        return self.count, self.hash.hexdigest()[:16]


def _stats(strategy: str) -> Stats:
    return Stats(strategy, trace_stats=True)


def _traces_hash(st: Stats) -> str:
    h = hashlib.sha256()
    for key in sorted(st.traces):
        h.update(",".join(map(str, key)).encode() + b";")
    return h.hexdigest()[:16]


def _run(mode: str, scenario: str, preset: str, cap: int | None
         ) -> tuple[int, str, int, int, int, str]:
    rec = _Recorder(scenario, preset)
    budget = Budget(max_executions=cap)
    if mode == "roots":
        st = dpor.explore_roots(rec, budget, _stats("dpor"))
    elif mode == "plain":
        st = dpor.explore(rec, budget, _stats("dpor"))
    else:
        st = strategies.explore_bounded(rec, budget, max_bound=2, stats=_stats("bounded"))
    count, sched_hash = rec.digest()
    return count, sched_hash, st.executions, st.pruned, st.conservative, _traces_hash(st)


TOYS = ["toy-writers", "toy-readers", "toy-racy", "toy-locked", "toy-abba", "toy-spin",
        "toy-preempt"]
PRESETS = ["universal", "legacy", "universal-up", "universal-up-nopreempt"]

CASES: list[tuple[str, str, str, int | None]] = (
    [("roots", "fault-vs-munmap", p, None) for p in PRESETS]
    + [("roots", t, p, None) for t in TOYS for p in PRESETS]
    + [("plain", t, "universal", None) for t in TOYS]
    + [("plain", "fault-vs-munmap", "universal", None),
       ("roots", "maps-reader-vs-munmap", "universal", None),
       ("roots", "maps-reader-vs-munmap", "universal-up-nopreempt", None),
       ("roots", "two-faults-vs-writer", "legacy", None),
       ("roots", "two-faults-vs-writer", "universal-up", 400),
       ("roots", "killable-write-lock-abort", "universal", None),
       ("roots", "killable-write-lock-abort", "legacy", None),
       ("roots", "detach-vs-transient-reader", "universal", 300),
       ("roots", "vma-reuse-by-another-mm", "universal", 400),
       ("roots", "vma-reuse-by-another-mm", "universal-up-nopreempt", None),
       ("bounded", "fault-vs-munmap", "universal", 200),
       ("bounded", "toy-abba", "universal-up", None)]
)

EXPECTED: dict[tuple[str, str, str, int | None], tuple[int, str, int, int, int, str]] = {
    ('roots', 'fault-vs-munmap', 'universal', None): (333, '299dbf4b4f0276d3', 330, 0, 202, 'f941f516b47700ce'),
    ('roots', 'fault-vs-munmap', 'legacy', None): (17, '2e3dd7333f3f9595', 13, 1, 8, '782052edbc2fb084'),
    ('roots', 'fault-vs-munmap', 'universal-up', None): (333, '299dbf4b4f0276d3', 330, 0, 202, '8948dee951b86190'),
    ('roots', 'fault-vs-munmap', 'universal-up-nopreempt', None): (6, '9ef7d0321c5d96fb', 3, 0, 0, '897463abfc3ab335'),
    ('roots', 'toy-writers', 'universal', None): (7, '1dd927cf4b200dc7', 1, 2, 0, '98feea15905952e6'),
    ('roots', 'toy-writers', 'legacy', None): (7, '1dd927cf4b200dc7', 1, 2, 0, '98feea15905952e6'),
    ('roots', 'toy-writers', 'universal-up', None): (7, '1dd927cf4b200dc7', 1, 2, 0, '98feea15905952e6'),
    ('roots', 'toy-writers', 'universal-up-nopreempt', None): (7, 'f385e886b65b7485', 1, 2, 0, '4b6c7554be49360c'),
    ('roots', 'toy-readers', 'universal', None): (13, '7827195032c9990f', 8, 0, 0, 'efd5911d28cb30f4'),
    ('roots', 'toy-readers', 'legacy', None): (13, '7827195032c9990f', 8, 0, 0, 'efd5911d28cb30f4'),
    ('roots', 'toy-readers', 'universal-up', None): (13, '7827195032c9990f', 8, 0, 0, 'efd5911d28cb30f4'),
    ('roots', 'toy-readers', 'universal-up-nopreempt', None): (13, '7827195032c9990f', 8, 0, 0, 'efd5911d28cb30f4'),
    ('roots', 'toy-racy', 'universal', None): (5, '1dc5f8f415465f0a', 2, 0, 0, 'cb2483d37c5bb427'),
    ('roots', 'toy-racy', 'legacy', None): (5, '1dc5f8f415465f0a', 2, 0, 0, 'cb2483d37c5bb427'),
    ('roots', 'toy-racy', 'universal-up', None): (5, '1dc5f8f415465f0a', 2, 0, 0, 'cb2483d37c5bb427'),
    ('roots', 'toy-racy', 'universal-up-nopreempt', None): (5, 'ca6d0959122f67f5', 2, 0, 0, '334aa7a25d07abf2'),
    ('roots', 'toy-locked', 'universal', None): (10, '2b73faa8c02d9a7f', 6, 0, 12, 'f1eddfb14491139d'),
    ('roots', 'toy-locked', 'legacy', None): (10, '2b73faa8c02d9a7f', 6, 0, 12, 'f1eddfb14491139d'),
    ('roots', 'toy-locked', 'universal-up', None): (10, '2b73faa8c02d9a7f', 6, 0, 12, 'f1eddfb14491139d'),
    ('roots', 'toy-locked', 'universal-up-nopreempt', None): (10, '392cfdf7942de5d3', 6, 0, 0, '79ac7b9987dbd9e4'),
    ('roots', 'toy-abba', 'universal', None): (6, '4765bb43e49a9622', 2, 1, 2, '157bf7a02823ff14'),
    ('roots', 'toy-abba', 'legacy', None): (6, '4765bb43e49a9622', 2, 1, 2, '157bf7a02823ff14'),
    ('roots', 'toy-abba', 'universal-up', None): (6, '4765bb43e49a9622', 2, 1, 2, '157bf7a02823ff14'),
    ('roots', 'toy-abba', 'universal-up-nopreempt', None): (5, '0c907f1c1b7de9da', 2, 0, 0, '8c5dc6a58fef4b68'),
    ('roots', 'toy-spin', 'universal', None): (55, 'b9bd98938cea72a4', 52, 0, 0, '2ee9e7ba100c996c'),
    ('roots', 'toy-spin', 'legacy', None): (55, 'b9bd98938cea72a4', 52, 0, 0, '2ee9e7ba100c996c'),
    ('roots', 'toy-spin', 'universal-up', None): (55, 'b9bd98938cea72a4', 52, 0, 0, '2ee9e7ba100c996c'),
    ('roots', 'toy-spin', 'universal-up-nopreempt', None): (5, '116548df381137a1', 2, 0, 0, '8b089de92d38e5d3'),
    ('roots', 'toy-preempt', 'universal', None): (6, 'f27bfb2302cc4b54', 3, 0, 0, 'b873a18735ddf447'),
    ('roots', 'toy-preempt', 'legacy', None): (6, 'f27bfb2302cc4b54', 3, 0, 0, 'b873a18735ddf447'),
    ('roots', 'toy-preempt', 'universal-up', None): (7, 'f3ac1903b039f710', 4, 0, 0, '2410d28f7e967970'),
    ('roots', 'toy-preempt', 'universal-up-nopreempt', None): (5, 'b0aa23d74674fd2c', 2, 0, 0, '334aa7a25d07abf2'),
    ('plain', 'toy-writers', 'universal', None): (1, '98feea15905952e6', 1, 0, 0, '98feea15905952e6'),
    ('plain', 'toy-readers', 'universal', None): (8, 'efd5911d28cb30f4', 8, 0, 0, 'efd5911d28cb30f4'),
    ('plain', 'toy-racy', 'universal', None): (2, 'cb2483d37c5bb427', 2, 0, 0, 'cb2483d37c5bb427'),
    ('plain', 'toy-locked', 'universal', None): (6, 'f1eddfb14491139d', 6, 0, 12, 'f1eddfb14491139d'),
    ('plain', 'toy-abba', 'universal', None): (3, '626e482dd99ac6a7', 2, 1, 2, '157bf7a02823ff14'),
    ('plain', 'toy-spin', 'universal', None): (52, '2ee9e7ba100c996c', 52, 0, 0, '2ee9e7ba100c996c'),
    ('plain', 'toy-preempt', 'universal', None): (3, '764a9d61be501eed', 3, 0, 0, 'b873a18735ddf447'),
    ('plain', 'fault-vs-munmap', 'universal', None): (330, '6e2b72e6612de74d', 330, 0, 202, 'f941f516b47700ce'),
    ('roots', 'maps-reader-vs-munmap', 'universal', None): (1952, '23bc0b1fc7ff3aa3', 1949, 0, 186, '37b5dcc386d18f11'),
    ('roots', 'maps-reader-vs-munmap', 'universal-up-nopreempt', None): (5, 'ae97693224981b69', 2, 0, 0, '334aa7a25d07abf2'),
    # re-recorded when the rwsem started to let a woken writer be stolen from (kernel/locks.py)
    ('roots', 'two-faults-vs-writer', 'legacy', None): (323, '15c78ca278f7d3a4', 307, 12, 178, '8b12ff926a9e9b15'),
    ('roots', 'two-faults-vs-writer', 'universal-up', 400): (404, 'a3cbfb198162e11e', 382, 18, 129, '3b4a1f980a5205e0'),
    ('roots', 'killable-write-lock-abort', 'universal', None): (1127, '7d3c0367a4e64830', 1122, 1, 171, '105f1c5a6b76293c'),
    ('roots', 'killable-write-lock-abort', 'legacy', None): (67, '904a01046b475cd1', 59, 4, 15, 'b336413360054a6e'),
    ('roots', 'detach-vs-transient-reader', 'universal', 300): (304, 'cee3bae5ecc33109', 264, 36, 119, '2a218528391faef6'),
    ('roots', 'vma-reuse-by-another-mm', 'universal', 400): (404, 'a00794b82349b140', 326, 74, 147, '85a60ade676dc58b'),
    ('roots', 'vma-reuse-by-another-mm', 'universal-up-nopreempt', None): (14, 'ce17533e4c5e53d3', 10, 0, 0, '8ea996eb189c1533'),
    ('bounded', 'fault-vs-munmap', 'universal', 200): (200, 'ac9bd5519daf3b6b', 200, 0, 0, '19d3424ed7971cfc'),
    ('bounded', 'toy-abba', 'universal-up', None): (5, '262115ba1d65f05d', 5, 0, 0, '4951646e8393dd3e'),
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(x) for x in c))
def test_exploration_is_exactly_the_one_recorded_before_the_rewrite(
        case: tuple[str, str, str, int | None]) -> None:
    assert _run(*case) == EXPECTED[case]


# Each catalogued bug through run_check (DPOR, then minimisation):
# executions, pruned, minimisation executions, found steps and preemptions,
# and the minimised schedule's length and hash.
BUGS: dict[str, tuple[int, int, int, int, int, int, str]] = {
    # re-recorded when expand_downwards() took the anon_vma lock (7.0; two steps more)
    'B02': (3, 0, 40, 33, 2, 33, 'c0c4f113cdf16d0e'),
    'B04': (18, 1, 7, 45, 1, 45, 'a8541729e847b411'),
    'B05': (16, 0, 32, 17, 2, 17, 'fd0d4c5ab830f739'),
    'B09': (8, 0, 18, 59, 3, 36, '97272b673bf5bcc5'),
    'B13': (85, 0, 7, 21, 1, 21, '13f8d3cb8576ac3f'),
    'B16': (2105, 463, 1007, 71, 3, 71, '5d1c2e46b91a528b'),
    'B17': (717, 92, 12, 31, 1, 31, '19ff3f3ee7e70393'),
    'B18': (1270, 187, 1005, 19, 3, 19, 'f67fa1dca4d69771'),
}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_bug_search_and_minimisation_are_exactly_the_ones_recorded(bug: str) -> None:
    from pervma.check.api import find_bug

    r = find_bug(bug, stateless=True)  # recorded with the stateless search
    h = hashlib.sha256(",".join(map(str, r.schedule)).encode()).hexdigest()[:16]
    assert (r.executions, r.pruned, r.minimise_executions, r.found_steps, r.found_preemptions,
            len(r.schedule), h) == BUGS[bug]


# -- the distinct-trace statistic is computed only when asked -------------------

def _no_trace_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Execution) -> tuple[int, ...]:
        raise AssertionError("trace_key computed without --trace-stats")
    monkeypatch.setattr(Execution, "trace_key", refuse)


def test_summary_without_trace_stats_names_no_traces(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pervma.cli import main

    _no_trace_keys(monkeypatch)
    assert main(["check", "toy-readers", "--stateless"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert re.fullmatch(r"toy-readers \[universal\] dpor: complete, clean; 8 executions, "
                        r"0 pruned, \d+\.\d\ds", first), first


def test_summary_with_trace_stats_counts_distinct_traces(
        capsys: pytest.CaptureFixture[str]) -> None:
    from pervma.cli import main

    assert main(["check", "toy-readers", "--stateless", "--trace-stats"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert re.fullmatch(r"toy-readers \[universal\] dpor: complete, clean; 8 executions, "
                        r"0 pruned, 8 distinct traces \(redundancy 1\.00\), \d+\.\d\ds",
                        first), first


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_json_has_null_distinct_unless_asked(jobs: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from pervma.cli import main

    assert main(["check", "fault-vs-munmap", "--json", "--jobs", jobs, "--stateless"]) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert (r["executions"], r["pruned"], r["distinct"], r["redundancy"]) == (330, 0, None, None)
    assert main(["check", "fault-vs-munmap", "--json", "--jobs", jobs, "--stateless",
                 "--trace-stats"]) == 0
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert (r["executions"], r["pruned"], r["distinct"], r["redundancy"]) == (330, 0, 330, 1.0)


@pytest.mark.parametrize("strategy", ["dpor", "bounded", "random", "pct"])
def test_no_strategy_computes_trace_keys_unless_asked(
        strategy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pervma.check.api import run_check

    _no_trace_keys(monkeypatch)
    r = run_check("fault-vs-munmap", strategy=strategy, max_executions=40)
    assert r.error is None and r.executions > 0
    assert (r.distinct, r.redundancy) == (None, None)
    assert f"{r.executions} executions, {r.pruned} pruned, " in r.summary()
    assert "distinct" not in r.summary() and "redundancy" not in r.summary()


# -- the incremental bookkeeping equals its definition --------------------------

class _Keeper(Runner):
    """A runner that keeps every execution it built."""

    def __init__(self, scenario: str, preset: str) -> None:
        super().__init__(get_scenario(scenario), Config.preset(preset))
        self.runs: list[Execution] = []

    def execution(self, snapshots: bool = False) -> Execution:
        run = super().execution(snapshots)
        self.runs.append(run)
        return run


def _naive_deps(acc: list[dict], i: int) -> list[int]:
    """For each location event ``i`` touches: the last write before it and,
    if ``i`` writes, every read since that write."""
    out: set[int] = set()
    for loc, w in acc[i].items():
        last = max((j for j in range(i) if acc[j].get(loc) is True), default=-1)
        if last >= 0:
            out.add(last)
        if w:
            out.update(j for j in range(last + 1, i) if acc[j].get(loc) is False)
    return sorted(out)


def _naive_clocks(run: Execution) -> list[list[int]]:
    """Vector clocks from the happens-before relation itself: the transitive
    closure of program order and of every dependent pair (one writes)."""
    evs = run.events
    before: list[set[int]] = []
    for i, e in enumerate(evs):
        direct = {j for j in range(i) if evs[j].tid == e.tid
                  or any(loc in evs[j].acc and (w or evs[j].acc[loc]) for loc, w in e.acc.items())}
        closure = set(direct)
        for j in direct:
            closure |= before[j]
        before.append(closure)
    clocks = []
    for i in range(len(evs)):
        c = [0] * run.n
        for j in before[i] | {i}:
            c[evs[j].tid] = max(c[evs[j].tid], evs[j].seq)
        clocks.append(c)
    return clocks


@pytest.mark.parametrize(("scenario", "preset", "cap"), [
    ("toy-readers", "universal", None),
    ("toy-locked", "universal-up", None),
    ("toy-abba", "universal", None),
    ("fault-vs-munmap", "universal", 60),
    ("fault-vs-munmap", "universal-up", 60),
    ("killable-write-lock-abort", "universal", 60),   # wake-ups count as writes
    ("vma-reuse-by-another-mm", "universal", 40),
])
def test_event_clocks_deps_and_previous_clocks_equal_their_definitions(
        scenario: str, preset: str, cap: int | None) -> None:
    keeper = _Keeper(scenario, preset)
    dpor.explore_roots(keeper, Budget(max_executions=cap), Stats("dpor"))
    checked = 0
    for run in keeper.runs:
        evs = run.events
        acc = [e.acc for e in evs]
        clocks = _naive_clocks(run)
        last: dict[int, list[int]] = {}
        for i, e in enumerate(evs):
            assert sorted(set(e.deps)) == _naive_deps(acc, i), (scenario, i)
            assert e.clock == clocks[i], (scenario, i)
            assert e.pclock == last.get(e.tid, [0] * run.n), (scenario, i)
            assert e.seq == e.clock[e.tid] == e.pclock[e.tid] + 1
            last[e.tid] = e.clock
            checked += 1
        for t in range(run.n):
            assert run.thread_clock(t) == last.get(t, [0] * run.n)
    assert checked > 0


# -- bench/bookkeeping_bench.py ------------------------------------------------

def _bookkeeping_bench():  # type: ignore[no-untyped-def]
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "bookkeeping_bench.py"
    spec = importlib.util.spec_from_file_location("bookkeeping_bench", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_split_charges_every_profiled_second_once() -> None:
    """The profile split loses and doubles nothing: its categories add up to
    the profile's total self time, and the clock and race functions land in
    bookkeeping."""
    bench = _bookkeeping_bench()
    stats, prof, _cpu = bench.profile("fault-vs-munmap", "universal", 60,
                                      lambda: Stats("dpor", trace_stats=True))
    assert stats.executions + stats.pruned == 60
    cats, per_fn = bench.split(prof)
    total = sum(v[2] for v in prof.stats.values())
    assert set(cats) == set(bench.CATEGORIES)
    assert sum(cats.values()) == pytest.approx(total, rel=1e-6)
    assert {"_record", "_races", "trace_key"} <= set(per_fn)
    assert cats["model"] > 0 and cats["bookkeeping"] > 0


def test_bench_prints_a_row_per_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bookkeeping_bench()
    assert bench.main(["--scenarios", "toy-readers,toy-locked", "--only", "timers"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    by_name = {r[0]: r for r in rows if r and r[0] in ("toy-readers", "toy-locked", "all")}
    # primitive steps of the two complete searches
    assert (by_name["toy-readers"][1], by_name["toy-locked"][1]) == ("32", "72")
    assert by_name["all"][1] == "104"
