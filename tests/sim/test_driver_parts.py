"""The timed driver's parts: touch recording, the location kinds it prices,
waits classified by ``Op.wait``."""

from __future__ import annotations

from pervma.check.scenario import all_scenarios, get_scenario, misuse_scenarios, spin_shapes
from pervma.config import Config
from pervma.sched import (
    Executor,
    Op,
    OpKind,
    Violation,
    WaitKind,
    drain_touched,
    run_schedule,
    touches_recorded,
    track_touches,
)
from pervma.sched.locations import (
    ANON_VMA,
    KINDS,
    MAPLE_NODE,
    MM_LOCK_SEQ,
    MMAP_LOCK,
    PAGE_FRAME,
    PTE,
    PTL,
    RCU,
    VM_LOCK_SEQ,
    VM_REFCNT,
    VMA,
    VMA_WRITER_WAIT,
    ZONE,
    Placement,
)
from pervma.sched.task import ReadOf
from pervma.sim.api import _new_system, run_point, sim_config
from pervma.sim.costs import CostModel
from pervma.sim.driver import wait_category
from pervma.sim.machine import load_machine
from pervma.sim.workloads import WORKLOADS, build


def test_simulator_records_no_touches_after_a_checker_scenario() -> None:
    # A checker scenario built earlier in the process switches touch
    # recording on; the simulator's own run must neither record touches (its
    # list would grow with every step) nor change the switch it found.
    inst = get_scenario("fault-vs-munmap").build(Config.preset("universal"))
    run_schedule(inst.bodies, [], names=inst.names, models=inst.models)
    assert touches_recorded()
    drain_touched()
    try:
        p = run_point("private", "universal", "xeon16", "threads", 2, 0.2, seed=1,
                      warmup_ms=0.05)
        assert p.steps > 1000
        assert drain_touched() == []
        assert touches_recorded()
    finally:
        track_touches(False)


def _emitted_kinds() -> dict[str, str]:
    """Every location kind the model names, with where it was first seen:
    every built-in workload (threads and processes, two tasks) and every
    checker scenario (each preset it runs under), each stepped round-robin
    for a bounded number of steps; locations of steps and of touches."""
    seen: dict[str, str] = {}

    def note(loc: object, where: str) -> None:
        if isinstance(loc, ReadOf):
            loc = loc.loc
        if loc is None:
            return
        kind = loc[0] if isinstance(loc, tuple) and loc else repr(loc)
        seen.setdefault(kind if isinstance(kind, str) else repr(loc), where)

    def drive(ex: Executor, limit: int, where: str) -> None:
        n = 0
        try:
            while n < limit and ex.runnable():
                for tid in ex.runnable():
                    if not ex.tasks[tid].runnable():
                        continue
                    op = ex.step(tid)
                    note(op.loc, where)
                    note(op.also, where)
                    for loc in drain_touched():
                        note(loc, where)
                    n += 1
        except Violation:
            pass
        finally:
            ex.close()

    machine = load_machine("xeon16")
    track_touches(True)
    try:
        for preset in ("universal", "legacy"):
            for name, w in WORKLOADS.items():
                for mode in w.modes:
                    b = build(name, _new_system(sim_config(preset, machine)), mode, 2, 1)
                    drive(Executor(b.coros, names=b.names, models=b.models, record=False),
                          4000, f"{name}/{mode}/{preset}")
        for sc in all_scenarios() + misuse_scenarios() + spin_shapes():
            for preset in sc.presets:
                inst = sc.build(Config.preset(preset))
                drive(Executor(inst.bodies, names=inst.names, models=inst.models,
                               record=False), 3000, f"{sc.name}/{preset}")
    finally:
        track_touches(False)
    return seen


def test_every_location_kind_the_model_emits_is_named_and_priced() -> None:
    seen = _emitted_kinds()
    unnamed = {k: where for k, where in seen.items() if k not in KINDS}
    assert unnamed == {}
    # the fault path's kinds are among them (the collection is not empty-handed)
    for kind in (VMA, VM_REFCNT, VM_LOCK_SEQ, MMAP_LOCK, PTE, PAGE_FRAME, ZONE, MAPLE_NODE):
        assert kind in seen
    costs = CostModel(load_machine("xeon16"), True)
    for kind in seen:
        place = KINDS[kind].placement
        key = costs.line_key((kind, 1, 2))
        if place in (Placement.PER_CPU, Placement.PCP, Placement.PAGE_FRAME):
            assert key is None, kind
        else:
            assert key is not None, kind
            assert costs.charge(Op(OpKind.WRITE, (kind, 1, 2), "w"), 3, 0.0) > 0.0


def test_line_placement_follows_the_kinds_table() -> None:
    smp = CostModel(load_machine("xeon16"), True)
    up = CostModel(load_machine("xeon16"), False)
    assert smp.line_key((VM_REFCNT, 7)) == (VM_REFCNT, 7)  # its own line under SMP
    assert up.line_key((VM_REFCNT, 7)) == (VMA, 7)  # the VMA's first line under SMP=n
    assert smp.line_key((VM_LOCK_SEQ, 7)) == (VMA, 7)
    assert smp.line_key((MM_LOCK_SEQ, 3)) == (MMAP_LOCK, 3)
    assert smp.line_key((PTE, 3, 17)) == smp.line_key((PTE, 3, 23)) == (PTE, 3, 2)
    assert smp.line_key((PTE, 3, 24)) == (PTE, 3, 3)
    assert smp.line_key((RCU,)) is None
    assert smp.line_key((ANON_VMA, 5)) == (ANON_VMA, 5)


def test_waits_are_classified_by_the_op_wait_field_not_the_label() -> None:
    def op(loc: tuple[object, ...], label: str, wait: WaitKind) -> Op:
        return Op(OpKind.BLOCK, loc, label, lambda: False, wait=wait)

    # labels that say the opposite of the field: the field wins
    assert wait_category(op((MMAP_LOCK, 1), "down_write(mmap_lock) wait",
                            WaitKind.RWSEM_READ)) == "mmap_lock_read"
    assert wait_category(op((MMAP_LOCK, 1), "down_read(mmap_lock) wait",
                            WaitKind.RWSEM_WRITE)) == "mmap_lock_write"
    assert wait_category(op((VM_REFCNT, 4), "io", WaitKind.EVENT)) == "vma_lock"
    assert wait_category(Op(OpKind.LOCAL, None, "anything", work="io", sleeps=True,
                            wait=WaitKind.IO)) == "io"
    assert wait_category(op((VMA_WRITER_WAIT, 1), "x", WaitKind.EVENT)) == VMA_WRITER_WAIT


def test_the_model_marks_its_waits() -> None:
    from pervma.kernel.locks import SpinLock

    assert SpinLock((PTL, 0, 0), "ptl")._lock_op.wait is WaitKind.SPIN
    # mmap1's threads queue as writers on mmap_lock; churnsame's faulting
    # threads fall back to mmap_lock and queue as readers behind mprotect
    mm1 = run_point("mmap1", "universal", "xeon16", "threads", 2, 0.3, seed=1, warmup_ms=0.1)
    assert mm1.waits["mmap_lock_write"] > 0.0
    assert "mmap_lock_read" not in mm1.waits
    same = run_point("churnsame", "universal", "xeon16", "threads", 2, 1.0, seed=1,
                     warmup_ms=0.1)
    assert same.waits["mmap_lock_read"] > 0.0
    assert same.waits["vma_writer_wait"] > 0.0
