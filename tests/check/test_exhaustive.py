"""DPOR against a search with no reduction at all, and the two holes that
comparison found (pervma.check.differential.exhaustive).

DPOR is only as good as the dependencies the model declares: a step that
touches state its ``Op`` does not name makes DPOR skip orders that matter.
The stateful and stateless searches share one dependency relation, so
comparing them cannot show such a hole; enumerating every reachable state of
the same transitions, with no partial-order reduction, can.
"""

from __future__ import annotations

import pytest

from pervma import sched
from pervma.check.differential import exhaustive, reached
from pervma.check.scenario import Instance, Scenario, get_scenario
from pervma.config import Config


def _toy(declared: bool) -> Scenario:
    """Two threads: ``a`` stores to word ``a`` and, in the same step, sets a
    flag; ``b`` loads word ``b`` and, in the same step, reads the flag.  With
    ``declared`` both steps also name the flag's location."""

    def build(cfg: Config) -> Instance:
        flag = {"x": 0}

        async def a() -> None:
            await sched.write(("word", "a"), "store a")
            if declared:
                await sched.write(("word", "x"), "store x")
            flag["x"] = 1

        async def b() -> int:
            await sched.read(("word", "b"), "load b")
            if declared:
                await sched.read(("word", "x"), "load x")
            return flag["x"]

        return Instance([a(), b()], ["a", "b"])

    return Scenario("toy-hidden" if not declared else "toy-declared", "hidden write", build,
                    tags=("toy",))


def test_the_enumeration_finds_a_dependency_the_model_does_not_declare() -> None:
    cfg = Config.preset("universal")
    hidden = _toy(declared=False)
    e = exhaustive(hidden, cfg)
    r = reached(hidden, cfg, stateless=True)
    assert e.complete and len(e.finals) == 2  # b reads the flag as 0 or as 1
    assert len(r.finals) == 1 and r.finals < e.finals  # DPOR saw two independent steps
    fixed = _toy(declared=True)
    e2 = exhaustive(fixed, cfg)
    assert e2.complete and reached(fixed, cfg, stateless=True).finals == e2.finals
    assert len(e2.finals) == 2


def test_the_state_budget_is_a_count() -> None:
    e = exhaustive(get_scenario("fault-vs-munmap"), Config.preset("universal"), max_states=50)
    assert not e.complete and e.states == 50


# Small enough to enumerate in the suite (bench/stateful_bench.py --exhaustive runs
# every scenario of --all on the four presets).
SMALL = [("fault-vs-mremap", p) for p in ("legacy", "universal", "universal-up",
                                          "universal-up-nopreempt")] + [
    ("mmap-vs-fault", "universal"),
    ("stack-growth-vs-fault", "universal"),  # its two finals once differed only by RCU's dict order
    ("fault-vs-munmap", "universal-up"),
    # a lockless walk once read the VMA's own vm_end, which the split changes in place before
    # it stores the new range: the maple tree's pivots are in the node (kernel/maple_tree.py)
    ("uffd-register-vs-fault", "universal"),
    # an rwsem's read-side steps commute; a killable writer's wait must still race them
    # (it once was a read, and the enumeration found the outcome DPOR missed)
    ("killable-write-lock-abort", "legacy"),
    ("two-faults-vs-writer", "legacy"),
]


@pytest.mark.parametrize("name,preset", SMALL)
def test_dpor_reaches_every_final_state_the_enumeration_reaches(name: str, preset: str) -> None:
    sc = get_scenario(name)
    cfg = Config.preset(preset)
    e = exhaustive(sc, cfg)
    assert e.complete
    r = reached(sc, cfg, stateless=True)
    assert r.stats.complete
    assert r.finals == e.finals and r.violations == e.violations
    s = reached(sc, cfg, stateless=False)
    assert s.finals == e.finals and s.violations == e.violations


def test_rcu_readers_and_call_rcu_are_dependent() -> None:
    # A reader's outermost rcu_read_lock/unlock reads the grace-period state,
    # call_rcu writes it: the order decides whether the callback waits for the reader.
    from pervma.check.search import Runner
    from pervma.kernel.rcu import RCU_GP_LOC

    run = Runner(get_scenario("spin-1f-m"), Config.preset("universal")).execution()
    labels = []
    while run.runnable():
        t = run.runnable()[0]  # the fault to its end, then munmap
        op = run.ex.tasks[t].pending
        assert op is not None
        labels.append((t, op.label, run.take(t).acc.get(RCU_GP_LOC)))
    assert run.end() == "done"
    fault = [w for t, _, w in labels if t == 0 and w is not None]
    munmap = [w for t, _, w in labels if t == 1 and w is not None]
    assert fault and not any(fault), "the fault's RCU section only reads it"
    assert True in munmap, "munmap's call_rcu (a freed maple node, the VMA) writes it"


def test_a_violation_no_longer_hides_what_lies_beyond_it() -> None:
    # detach-vs-transient-reader with B13: a schedule in which the other mm reuses
    # the freed VMA before the reader's lockless lookup reaches
    # validate_mm's "vm_refcnt 0x0"; every execution DPOR used to explore that
    # could reorder into it ended earlier in a KASAN report, so the run-on
    # (Execution.run_on) is what makes both searches reach it.
    sc = get_scenario("detach-vs-transient-reader")
    cfg = Config.preset("universal").with_bugs("B13")
    want = "has vm_refcnt 0x0, expected 1"
    for stateless in (True, False):
        r = reached(sc, cfg, stateless=stateless)
        assert r.stats.complete
        assert any(want in msg for _, msg in r.violations), stateless


def _steal() -> Scenario:
    """Two readers and a writer on one mm's mmap_lock, the first reader taking
    it twice: a release only wakes a queued writer, and a reader or writer may
    steal the free lock before the woken writer runs (kernel/locks.py).  Each
    thread returns what it saw of the others, so the orders are final states."""

    def build(cfg: Config) -> Instance:
        from pervma.kernel.system import System

        kern = System(cfg)
        p = kern.spawn()
        sem = p.mm.mmap_lock
        seen = {"w": 0, "r2": 0}
        t = [p.thread() for _ in range(3)]

        async def r1(th) -> int:
            await sem.down_read()
            await sem.up_read()
            await sem.down_read()
            w = seen["w"]
            await sem.up_read()
            return w

        async def w(th) -> int:
            await sem.down_write()
            seen["w"] = 1
            r2 = seen["r2"]
            await sem.up_write()
            return r2

        async def r2(th) -> int:
            await sem.down_read()
            seen["r2"] = 1
            await sem.up_read()
            return 0

        return Instance([t[0].start(r1), t[1].start(w), t[2].start(r2)], ["r1", "w", "r2"],
                        [x.task for x in t])

    return Scenario("toy-rwsem-steal", "rwsem stealing", build, tags=("toy",))


@pytest.mark.parametrize("preset", ["universal", "universal-up"])
def test_dpor_reaches_every_outcome_of_rwsem_stealing(preset: str) -> None:
    sc, cfg = _steal(), Config.preset(preset)
    e = exhaustive(sc, cfg)
    assert e.complete and not e.violations
    # r1 sees the writer in its second section or not, the writer sees r2 or not
    assert len(e.finals) >= 4
    for stateless in (True, False):
        r = reached(sc, cfg, stateless=stateless)
        assert r.stats.complete and r.finals == e.finals and r.violations == e.violations
