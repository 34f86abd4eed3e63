"""lockdep in the model (kernel/lockdep.py): the dependency graph and its
circular-dependency report, might_sleep() in atomic context, and locks held
on the return to user space.  Each report is tripped by a one-line
regression of the 7.0 logic made here with monkeypatch (never a bug switch),
and a correct kernel gives none of them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pervma import PAGE, PROT_READ, PROT_WRITE, System
from pervma.check.api import replay_file, run_check
from pervma.check.scenario import get_scenario
from pervma.check.scenarios.kernel import A, World, _scenario
from pervma.check.search import Runner
from pervma.config import Config
from pervma.kernel import fault, memory, mmap_lock
from pervma.kernel.lockdep import LockdepGraph
from pervma.kernel.mmap_lock import lock_vma_under_rcu_wait, mmap_read_lock, mmap_read_unlock
from pervma.kernel.rcu import rcu_read_lock, rcu_read_unlock
from pervma.sched import Violation, read, run_direct, write
from pervma.sched.statekey import state_key

RW = PROT_READ | PROT_WRITE
ANON = 0x22  # MAP_PRIVATE | MAP_ANONYMOUS
CIRCULAR = "WARNING: possible circular locking dependency detected"
SLEEP = "BUG: sleeping function called from invalid context"
HELD = "lockdep: lock held when returning to user space"
PRESETS = ("legacy", "universal", "universal-up", "universal-up-nopreempt")
B = A + 64 * PAGE  # far from A: never merged with it


def _lock_instead_of_trylock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression: __vmf_anon_prepare() takes mmap_read_lock() instead of
    mmap_read_trylock() while it holds the VMA read lock (vm_lock ->
    mmap_lock, against every writer's mmap_lock -> vm_lock)."""
    async def mmap_read_lock_and_succeed(mm: Any) -> bool:
        await mmap_read_lock(mm)
        return True

    monkeypatch.setattr(memory, "mmap_read_trylock", mmap_read_lock_and_succeed)


# -- the dependency graph ----------------------------------------------------
def test_correct_kernel_sequence_gives_no_report() -> None:
    kern = System(Config.preset("universal"))
    p = kern.spawn("p")
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.mprotect(A + PAGE, PAGE, PROT_READ)  # mmap_lock -> vm_lock (write-locks an attached VMA)
    p.store(A, 1)  # vm_lock -> ptl; anon_vma prepared under mmap_read_trylock
    assert p.load(A) == 1


def test_vma_lock_then_mmap_lock_is_a_circular_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    _lock_instead_of_trylock(monkeypatch)
    kern = System(Config.preset("universal"))
    p = kern.spawn("p")
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.mprotect(A + PAGE, PAGE, PROT_READ)
    with pytest.raises(Violation) as exc:
        p.store(A, 1)  # one process, one thread: lockdep needs no deadlock to see it
    v = exc.value
    assert v.kind == CIRCULAR
    msg = v.message
    assert msg.startswith("p/1 is trying to acquire lock:\n"
                          " (&mm->mmap_lock){read}, at: mmap_read_lock() from "
                          "mmap_read_lock_and_succeed()\n")
    assert ("but task is already holding lock:\n"
            " (vm_lock){read}, at: vma_start_read() from lock_vma_under_rcu()") in msg
    assert ("-> #1 (vm_lock){write}:\n"
            "       taken by p/1 earlier in this execution at __vma_start_exclude_readers() "
            "from __vma_start_write()\n"
            "       while holding (&mm->mmap_lock){write}, at: mmap_write_lock_killable() "
            "from do_mprotect_pkey()") in msg
    assert "-> #0 (&mm->mmap_lock){read}:\n       taken by p/1 now at mmap_read_lock()" in msg
    assert ("  lock(vm_lock);\n                               lock(&mm->mmap_lock);\n"
            "                               lock(vm_lock);\n  lock(&mm->mmap_lock);") in msg
    assert msg.endswith("1 lock held by p/1:\n #0: (vm_lock){read}, at: vma_start_read() "
                        "from lock_vma_under_rcu()")


def test_lockdep_off_reports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    _lock_instead_of_trylock(monkeypatch)
    kern = System(Config.preset("universal").with_(DEBUG_LOCK_ALLOC=False))
    p = kern.spawn("p")
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.mprotect(A + PAGE, PAGE, PROT_READ)
    p.store(A, 1)
    assert p.load(A) == 1


# A scenario in which no execution takes both orders: the faulting thread
# takes vm_lock -> mmap_lock (with the regression) only when it sees the flag
# set, and mmap_lock -> vm_lock (munmap of B) only when it does not.
_FLAG = ("word", "lockdep-test-flag")


@_scenario("lockdep-orders-in-two-executions", "test only: one thread takes vm_lock -> "
           "mmap_lock or mmap_lock -> vm_lock depending on a race, never both",
           tags=("toy",), presets=("universal",))
def _two_orders(w: World) -> None:
    p = w.p
    p.mmap(A, PAGE, RW, ANON)
    p.mmap(B, PAGE, PROT_READ, ANON)
    flag = [0]

    async def setter(t: Any) -> None:
        await write(_FLAG, "store flag=1")
        flag[0] = 1

    async def worker(t: Any) -> int:
        await read(_FLAG, "load flag")
        if flag[0]:
            await t.store(A, 1)  # first touch: anon_vma prepared under the VMA lock
            return 1
        return await t.munmap(B, PAGE)

    w.thread("setter", p.thread(), setter)
    w.thread("worker", p.thread(), worker)


def test_orders_from_two_executions_of_one_run_are_one_report(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _lock_instead_of_trylock(monkeypatch)
    name = "lockdep-orders-in-two-executions"
    res = run_check(name, "universal")
    assert res.violation is not None and res.violation[0] == CIRCULAR, res.violation
    msg = res.violation[1]
    # Which chain closes the cycle depends on the exploration order; both are named.
    chains = {"fault": "(vm_lock){read}, at: vma_start_read() from lock_vma_under_rcu()",
              "munmap": "(&mm->mmap_lock){write}, at: mmap_write_lock_killable() from sys_munmap()"}
    assert all(c in msg for c in chains.values()), msg
    assert "taken by worker/" in msg and " in execution " in msg and " of this run at " in msg
    assert "earlier in this execution" not in msg
    # The replay (re-verified by run_check) is the execution that closed the cycle.
    assert res.schedule and res.counterexample.splitlines()[1].startswith(f"BUG: {CIRCULAR}: ")
    # Deterministic: the same run finds the same report with the same schedule.
    again = run_check(name, "universal")
    assert again.violation == res.violation and again.schedule == res.schedule
    # Unpatched, the same run is clean.
    monkeypatch.undo()
    clean = run_check(name, "universal")
    assert clean.violation is None and clean.complete


def test_cross_execution_report_replays_from_its_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    _lock_instead_of_trylock(monkeypatch)
    res = run_check("lockdep-orders-in-two-executions", "universal", trace_out=tmp_path)
    assert res.violation is not None and res.violation[0] == CIRCULAR
    path = tmp_path / "lockdep-orders-in-two-executions.replay.json"
    doc = json.loads(path.read_text())
    # The file carries the other chain (the model's sched.RunScope.replay data)...
    rows = doc["run_scope"]["lockdep"]
    assert len(rows) == 1 and rows[0][0] in ("vm_lock", "mmap_lock")
    rep = replay_file(path)
    assert rep.reproduced and rep.got == res.violation
    # ...without which the closing execution alone takes only one order.
    del doc["run_scope"]
    bare = tmp_path / "bare.replay.json"
    bare.write_text(json.dumps(doc))
    assert not replay_file(bare).reproduced


def test_orders_from_two_executions_found_with_two_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    _lock_instead_of_trylock(monkeypatch)
    res = run_check("lockdep-orders-in-two-executions", "universal", jobs=2)
    # Found in a worker (forked after the split, so it knows the edges the
    # split saw), carried back with its graph and replayed in this process.
    assert any("worker processes" in n for n in res.notes), res.notes
    assert res.violation is not None and res.violation[0] == CIRCULAR, res.violation
    assert " in execution " in res.violation[1] and res.schedule


def _no_execution_numbers(msg: str) -> str:
    import re

    return re.sub(r" in execution \d+ of this run", " in execution N of this run", msg)


def test_orders_seen_only_by_different_workers_are_one_report(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The stateless root split gives each worker one subtree: "setter first" (the
    # worker then takes vm_lock -> mmap_lock) and "worker first" (mmap_lock ->
    # vm_lock).  Neither worker sees both orders; the parent adds their graphs up
    # in order and searches the part that closes the cycle again, from the
    # scope the single process would have had, so the report is the same.
    _lock_instead_of_trylock(monkeypatch)
    name = "lockdep-orders-in-two-executions"
    one = run_check(name, "universal", stateless=True)
    two = run_check(name, "universal", stateless=True, jobs=2)
    assert one.violation is not None and one.violation[0] == CIRCULAR
    # The same report and schedule; only "in execution N" of the other chain
    # counts within the worker's part, not over the whole run.
    assert two.violation is not None and two.violation[0] == one.violation[0]
    assert _no_execution_numbers(two.violation[1]) == _no_execution_numbers(one.violation[1])
    assert two.schedule == one.schedule
    assert any("searched again in the parent" in n for n in two.notes), two.notes
    # PCT and random sampling split executions into ranges: the same holds there.
    one = run_check(name, "universal", strategy="random", max_executions=40, seed=3)
    two = run_check(name, "universal", strategy="random", max_executions=40, seed=3, jobs=2)
    assert one.violation is not None and two.violation is not None
    assert _no_execution_numbers(two.violation[1]) == _no_execution_numbers(one.violation[1])
    assert two.schedule == one.schedule
    # Unpatched, the merged graphs have no cycle and nothing is searched again.
    monkeypatch.undo()
    clean = run_check(name, "universal", stateless=True, jobs=2)
    assert clean.violation is None and clean.complete
    assert not any("searched again" in n for n in clean.notes)


def test_the_stateful_search_over_workers_reports_a_cross_worker_inversion(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pervma.check import pstateful
    from pervma.check.search import Budget, Stats
    from pervma.kernel import lockdep

    _lock_instead_of_trylock(monkeypatch)
    name = "lockdep-orders-in-two-executions"
    # Each worker's graph holds one order: what the split and the workers saw
    # together must still make the report.
    runner = Runner(get_scenario(name), Config.preset("universal"))
    stats = Stats("dpor")
    pstateful.explore(runner, Budget(), stats, jobs=2, depth=1)
    assert stats.found is not None and stats.found.kind == CIRCULAR
    assert any("graphs together closed a cycle" in n for n in stats.notes), stats.notes
    # The merge itself: two one-edge graphs in opposite orders clash.
    a, b = lockdep.LockdepGraph(), lockdep.LockdepGraph()
    dep = lockdep.Dependency("x", lockdep.Acquisition("y", "write", ("f", "")), "t/1", 1, ())
    back = lockdep.Dependency("y", lockdep.Acquisition("x", "write", ("g", "")), "t/2", 2, ())
    a.after["x"] = {"y": dep}
    b.after["y"] = {"x": back}
    assert lockdep.merge_graphs(a, b) is True and set(a.after) == {"x", "y"}
    assert lockdep.merge_graphs(lockdep.LockdepGraph(), b) is False


def test_library_regression_in_fault_vs_munmap(monkeypatch: pytest.MonkeyPatch) -> None:
    _lock_instead_of_trylock(monkeypatch)
    res = run_check("fault-vs-munmap", "universal")
    assert res.violation is not None and res.violation[0] == CIRCULAR, res.violation
    msg = res.violation[1]
    assert "(&mm->mmap_lock){read}" in msg and "(vm_lock){write}" in msg
    assert "(vm_lock){read}, at: vma_start_read() from lock_vma_under_rcu()" in msg


def test_graph_persists_across_executions_but_is_not_state() -> None:
    runner = Runner(get_scenario("fault-vs-munmap"), Config.preset("universal"))
    first = runner.execution()
    key = state_key(first.ex.tasks)
    while not first.over():
        first.take(first.runnable()[0])
    assert first.end() == "done"
    graph = runner.scope.data["lockdep"]
    assert isinstance(graph, LockdepGraph)
    assert set(graph.after) >= {"mmap_lock", "vm_lock"}
    assert "vm_lock" in graph.after["mmap_lock"] and "ptl" in graph.after["vm_lock"]
    assert runner.scope.executions == 1
    second = runner.execution()
    assert runner.scope.executions == 2
    assert state_key(second.ex.tasks) == key  # the graph it learnt is not in the state
    second.end()


# -- might_sleep --------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_mmap_lock_taken_under_the_pte_lock_sleeps_in_atomic(
        preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression: the anonymous fault re-takes mmap_lock under the PTE
    lock before setting the PTE."""
    orig = memory.set_pte_at

    async def set_pte_at_revalidating(mm: Any, vpn: int, pte: Any, label: str) -> None:
        await mmap_read_lock(mm)
        await orig(mm, vpn, pte, label)
        await mmap_read_unlock(mm)

    monkeypatch.setattr(memory, "set_pte_at", set_pte_at_revalidating)
    kern = System(Config.preset(preset))
    p = kern.spawn("p")
    p.mmap(A, PAGE, RW, ANON)
    with pytest.raises(Violation) as exc:
        p.store(A, 1)
    v = exc.value
    assert v.kind == SLEEP
    first = ("(&mm->mmap_lock){read}, at: mmap_read_trylock() from lock_mm_and_find_vma()"
             if preset == "legacy" else
             "(vm_lock){read}, at: vma_start_read() from lock_vma_under_rcu()")
    assert v.message.splitlines() == [
        "at kernel/locking/rwsem.c, in down_read(&mm->mmap_lock)",
        "in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 1, name: p",
        "preempt_count: 1, expected: 0",
        "RCU nest depth: 0, expected: 0",
        "2 locks held by p/1:",
        f" #0: {first}",
        " #1: (ptlock_ptr(ptdesc)){write}, at: do_anonymous_page() from handle_mm_fault()",
        "Preemption disabled at:",
        " do_anonymous_page() from handle_mm_fault()"]


@pytest.mark.parametrize("preset", ("universal", "universal-up", "universal-up-nopreempt"))
def test_mmap_lock_fallback_inside_rcu_read_section_sleeps(
        preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression: the wait-for-writers lookup queues on mmap_lock before
    leaving the RCU read section (an rcu_read_unlock moved below the lock)."""
    orig = mmap_lock.mmap_read_lock_killable

    async def lock_still_in_rcu(mm: Any) -> int:
        rcu_read_lock()
        ret = await orig(mm)
        rcu_read_unlock()
        return ret

    monkeypatch.setattr(mmap_lock, "mmap_read_lock_killable", lock_still_in_rcu)
    kern = System(Config.preset(preset))
    p = kern.spawn("p")
    p.mmap(A, PAGE, RW, ANON)

    async def body(t: Any) -> Any:
        return await lock_vma_under_rcu_wait(t.mm, A + 8 * PAGE)  # no VMA: the fallback

    with pytest.raises(Violation) as exc:
        run_direct(p.main.start(body), model=p.main.task)
    v = exc.value
    assert v.kind == SLEEP
    lines = v.message.splitlines()
    nopreempt = preset == "universal-up-nopreempt"  # tiny RCU: a read section disables preemption
    assert lines[:4] == ["at kernel/locking/rwsem.c, in down_read(&mm->mmap_lock)",
                         f"in_atomic(): {int(nopreempt)}, irqs_disabled(): 0, non_block: 0, "
                         "pid: 1, name: p",
                         f"preempt_count: {int(nopreempt)}, expected: 0",
                         "RCU nest depth: 1, expected: 0"]
    assert lines[4:] == ["1 lock held by p/1:", " #0: (rcu_read_lock){read}, nested 1"]


def test_spinlock_held_across_a_sleeping_wait_is_reported_by_run_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    orig = memory.set_pte_at

    async def set_pte_at_revalidating(mm: Any, vpn: int, pte: Any, label: str) -> None:
        await mmap_read_lock(mm)
        await orig(mm, vpn, pte, label)
        await mmap_read_unlock(mm)

    monkeypatch.setattr(memory, "set_pte_at", set_pte_at_revalidating)
    res = run_check("fault-vs-munmap", "universal")
    assert res.violation is not None and res.violation[0] == SLEEP
    assert "preempt_count: 1, expected: 0" in res.violation[1]


# -- locks held on the return to user space --------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_fault_returning_with_mmap_lock_held_is_reported(
        preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The regression: the mmap_lock path of the fault handler forgets its
    mmap_read_unlock() after handle_mm_fault()."""
    async def no_unlock(mm: Any) -> None:
        return None

    monkeypatch.setattr(fault, "mmap_read_unlock", no_unlock)
    cfg = Config.preset(preset)
    kern = System(cfg)
    p = kern.spawn("p")
    p.mmap(A, PAGE, PROT_READ, ANON)
    with pytest.raises(Violation) as exc:
        if cfg.PER_VMA_LOCK:
            p.store(A, 1)  # x86 re-judges an access error under mmap_lock (SEGV_ACCERR)
        else:
            p.load(A)  # the whole fault under mmap_lock
    v = exc.value
    assert v.kind == HELD
    lines = v.message.splitlines()
    assert lines[0].startswith("p/1 is leaving the kernel with locks still held! (after page fault")
    assert lines[1] == "1 lock held by p/1:"
    assert lines[2].startswith(" #0: (&mm->mmap_lock){read}, at: ")


def test_fault_returning_clean_holds_nothing() -> None:
    for preset in PRESETS:
        kern = System(Config.preset(preset))
        p = kern.spawn("p")
        p.mmap(A, PAGE, RW, ANON)
        p.store(A, 7)
        assert p.load(A) == 7
        assert p.main.task.held == [] and p.main.task.rcu_depth == 0


# -- the whole library on a correct kernel --------------------------------------
# The whole library gives no lockdep report on a correct kernel: it is complete and clean on
# the four presets with lockdep on (tests/kernel/test_oracles.py::
# test_the_scenario_library_stays_clean_under_the_new_oracles).


def test_recursive_read_of_mmap_lock_names_both_acquisitions() -> None:
    res = run_check("lock-vma-under-rcu-wait-mmap-lock-misuse", "universal")
    assert res.violation is not None and res.violation[0] == "lockdep: recursive locking"
    assert res.violation[1].splitlines() == [
        "misuse/2 is trying to acquire lock:",
        " (&mm->mmap_lock){read}, at: mmap_read_lock_killable() from lock_vma_under_rcu_wait()",
        "",
        "but task is already holding lock:",
        " (&mm->mmap_lock){read}, at: mmap_read_lock() from misuse()",
        "",
        "1 lock held by misuse/2:",
        " #0: (&mm->mmap_lock){read}, at: mmap_read_lock() from misuse()"]


def test_replay_file_run_scope_is_validated(tmp_path: Any) -> None:
    from pervma.check.replayfile import validate
    from pervma.errors import InputError

    doc = {"format": "pervma-replay/1", "scenario": "fault-vs-munmap", "schedule": [0],
           "violation": {"kind": CIRCULAR, "message": "m"}}
    assert validate(dict(doc, run_scope={"lockdep": [["vm_lock", "t/1", 2, []]]}), "f")
    with pytest.raises(InputError, match=r"^f: field 'run_scope' wants an object, got str$"):
        validate(dict(doc, run_scope="x"), "f")
    with pytest.raises(InputError, match=r"^f: field 'run_scope' holds a float"):
        validate(dict(doc, run_scope={"lockdep": [1.5]}), "f")


def test_run_scope_reaches_threads_of_a_driver_and_of_a_setup() -> None:
    from pervma.sched import RunScope, run_schedule, run_scope, run_scope_active

    seen: list[Any] = []

    async def body() -> None:
        seen.append(run_scope())

    scope = RunScope()
    run_schedule([body(), body()], [], run=scope)
    assert seen == [scope, scope] and scope.executions == 1
    with run_scope_active(scope):
        run_direct(body())
    run_direct(body())
    assert seen[2:] == [scope, None]
