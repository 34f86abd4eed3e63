"""The scenario library over the kernel model: clean without bugs, each
catalogued bug found by DPOR, minimised, with a preemption, and replayed."""

from __future__ import annotations

import json

import pytest

from pervma.check.api import find_bug, replay_file, run_check
from pervma.check.catalogue import CATALOGUE
from pervma.check.scenario import all_scenarios, get_scenario
from pervma.kernel.bugs import BUGS

# One preset per scenario keeps the suite short; the four-preset sweep is in
# bench/check_bench.py.  Large scenarios run on the one-CPU preset.
HEAVY = {"two-faults-vs-writer", "vma-reuse-by-another-mm", "maps-reader-vs-munmap",
         "binder-shrinker-vs-munmap"}


def _preset(name: str) -> str:
    return "universal-up-nopreempt" if name in HEAVY else "universal"


@pytest.mark.parametrize("name", [s.name for s in all_scenarios()])
def test_scenario_is_complete_and_clean(name: str) -> None:
    res = run_check(name, _preset(name), max_executions=20000, trace_stats=True)
    assert res.violation is None, res.counterexample
    assert res.complete, res.incomplete
    assert res.exit_code == 0
    assert res.redundancy <= 1.2


def test_library_has_the_scenarios_the_issue_lists() -> None:
    names = {s.name for s in all_scenarios()}
    assert len(names) >= 15
    for needed in ("fault-vs-munmap", "fault-vs-mprotect-split", "fork-vs-fault", "fault-vs-mremap",
                   "stack-growth-vs-fault", "fault-vs-merge", "two-faults-vs-writer",
                   "maps-reader-vs-munmap", "madvise-dontneed-vs-munmap", "vma-reuse-by-another-mm",
                   "killable-write-lock-abort", "mmap-write-downgrade", "exit-vs-fault",
                   "binder-shrinker-vs-munmap", "tcp-zerocopy-vs-munmap"):
        assert needed in names


def test_catalogue_matches_the_model_switches() -> None:
    assert set(CATALOGUE) == {b.id for b in BUGS}
    for b in BUGS:
        assert CATALOGUE[b.id].scenario == b.scenario
        get_scenario(b.scenario)


@pytest.mark.parametrize("bug", sorted(CATALOGUE))
def test_bug_is_found_minimised_and_replayed(bug: str, tmp_path) -> None:
    res = find_bug(bug, trace_out=tmp_path, max_executions=20000)
    assert res.violation is not None, f"{bug} not found"
    assert res.executions + res.pruned <= 1000  # found long before the budget
    assert res.preemptions >= 1  # a real race, not a sequential failure
    assert res.preemptions <= res.found_preemptions
    assert res.exit_code == 1
    assert res.counterexample.splitlines()[1].startswith("BUG: ")
    replay_path = tmp_path / f"{res.scenario}.replay.json"
    doc = json.loads(replay_path.read_text())
    assert doc["bugs"] == [bug] and doc["schedule"] == res.schedule
    trace = json.loads((tmp_path / f"{res.scenario}.trace.json").read_text())
    assert any(e.get("ph") == "X" for e in trace["traceEvents"])
    rep = replay_file(replay_path)
    assert rep.reproduced and rep.got == res.violation
    # Without the switch the same schedule no longer fails the same way.
    doc["bugs"] = []
    clean = tmp_path / "clean.replay.json"
    clean.write_text(json.dumps(doc))
    try:
        again = replay_file(clean)
    except Exception:  # the schedule may not even apply to the fixed kernel
        return
    assert not (again.reproduced and again.got == res.violation)


def test_wait_for_writers_lookup_under_another_vma_lock_is_reported_as_a_deadlock() -> None:
    from pervma.config import Config

    name = "lock-vma-under-rcu-wait-misuse"
    # lockdep sees vm_lock -> mmap_lock against the writer's mmap_lock -> vm_lock...
    res = run_check(name, "universal")
    assert res.violation is not None, res.violation
    assert res.violation[0] == "WARNING: possible circular locking dependency detected"
    # ...and without lockdep the queued writer turns it into a deadlock.
    res = run_check(name, config=Config.preset("universal").with_(DEBUG_LOCK_ALLOC=False))
    assert res.violation is not None and res.violation[0] == "deadlock", res.violation
    assert res.preemptions >= 1


def test_wait_for_writers_lookup_under_mmap_read_lock_is_a_deadlock_or_lockdep_report() -> None:
    from pervma.config import Config

    name = "lock-vma-under-rcu-wait-mmap-lock-misuse"
    # lockdep sees the recursive read acquisition even without a writer...
    res = run_check(name, "universal")
    assert res.violation is not None and res.violation[0] == "lockdep: recursive locking"
    # ...and without lockdep the queued writer turns it into a deadlock.
    cfg = Config.preset("universal").with_(DEBUG_LOCK_ALLOC=False)
    res = run_check(name, config=cfg)
    assert res.violation is not None and res.violation[0] == "deadlock", res.violation
    assert res.preemptions >= 1


def test_wait_for_writers_lookup_correct_use_is_deadlock_free_on_every_preset() -> None:
    for preset in ("legacy", "universal", "universal-up", "universal-up-nopreempt"):
        res = run_check("lock-vma-under-rcu-wait", preset)
        assert res.exit_code == 0, (preset, res.counterexample)


@pytest.mark.parametrize("bug", sorted(CATALOGUE))
def test_bug_is_found_exactly_where_the_catalogue_says_it_can_occur(bug: str) -> None:
    """Under every preset (all five): found where its needs hold; elsewhere the
    scenario with the switch on explores completely and cleanly."""
    from pervma.config import PRESET_NAMES, Config

    entry = CATALOGUE[bug]
    found_under = []
    for preset in PRESET_NAMES:
        res = find_bug(bug, preset, max_executions=5000, minimise=False)
        why = entry.cannot_occur(Config.preset(preset))
        if why is None:
            assert res.violation is not None, (bug, preset)
            found_under.append(preset)
        else:
            assert res.violation is None and res.complete, (bug, preset, res.violation)
    assert "universal" in found_under
    assert "universal-up" in found_under or "smp" in entry.needs  # weak memory needs 2 CPUs
    assert "universal-up-nopreempt" not in found_under


@pytest.mark.parametrize("name", ["lock-vma-under-rcu-wait-misuse",
                                  "lock-vma-under-rcu-wait-mmap-lock-misuse"])
def test_misuse_scenario_reports_what_it_expects_on_each_preset(name: str) -> None:
    sc = get_scenario(name)
    assert [e.preset for e in sc.expect] == list(sc.presets)
    for e in sc.expect:
        res = run_check(name, e.preset, max_executions=5000, minimise=False)
        got = res.violation[0] if res.violation else None
        assert got == e.kind, (e.preset, got)
        if e.kind is None:
            assert res.complete and e.why
