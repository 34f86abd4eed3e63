"""The checker under the Linux-kernel memory model (``--memory-model lkmm``).

Sequential consistency fixes which write every read reads: the latest.
Under LKMM a read of a *weak location* (:data:`WEAK`) may read an older
write, as far as the orderings of the steps allow; which one is a choice of
the search beside the interleaving.  The memory layer
(:mod:`pervma.sched.memory`) keeps the weak locations' write histories and
each thread's view, outside every model object, and makes the choice from a
*plan*: at the n-th *choice point* of thread t (a weak read with more than
one write it may read), read the k-th newest allowed write (0, the newest,
when the plan says nothing: the empty plan is the SC execution).

The search enumerates plans, in the manner of the reads-from exploration of
stateless model checkers for weak memory (Abdulla, Atig, Jonsson, Ngo,
"Optimal Stateless Model Checking under the Release-Acquire Semantics",
OOPSLA 2018; Kokologiannakis, Lahav, Sagonas, Vafeiadis, "Effective
Stateless Model Checking for C/C++ Concurrency", POPL 2018): the empty plan
is explored by the stateful DPOR search (``pervma.check.stateful``; the
memory layer's state is folded into the state key); every choice point met
with c > 1 allowed writes, not yet fixed by the plan, gives c - 1 new plans
that fix it, each explored the same way.  A choice point's position
(thread, n) is part of the state, so every execution that reaches it is
explored under every plan that fixes it.  A violation found under a
non-empty plan is confirmed with the LKMM axioms ``pervma litmus`` uses:
the execution's graph (``pervma.check.graph``) with the reads-from the
plan chose, judged by :func:`pervma.litmus.graph.check_graph`.

Left out: weak reads of every other location (they read the latest write;
only the named weak locations' ``load`` sites choose), load buffering and
other behaviours that need a read to read a write later in the interleaving
(out-of-thin-air territory: the plan only reaches back in time), and
data-race flags (reported, never a violation: the model's plain accesses
race by design where the kernel's do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pervma.check import stateful
from pervma.check.search import Budget, Found, Runner, Stats
from pervma.sched.locations import MM_LOCK_SEQ, VM_LOCK_SEQ, VM_REFCNT, VMA
from pervma.sched.memory import PREVIOUS_LIFE, Memory, ReadRecord

MEMORY_MODELS = ("sc", "lkmm")

#: The weak locations: the mm's write-session sequence, a VMA's lock
#: sequence and reference count, and the VMA fields a fault reads once the
#: VMA is read-locked (its range and flags).
WEAK = frozenset({MM_LOCK_SEQ, VM_LOCK_SEQ, VM_REFCNT, VMA})

Plan = dict[tuple[int, int], int]


def memory_factory(plan: Plan, seen: set[tuple[int, int, int]] | None,
                   one_cpu: bool) -> Callable[[], Memory]:
    def make() -> Memory:
        return Memory(WEAK, plan, seen, one_cpu)
    return make


def use_plan(runner: Runner, plan: Plan, seen: set[tuple[int, int, int]] | None = None) -> None:
    """Make every later execution of ``runner`` run under LKMM with ``plan``
    (on a one-CPU config every thread shares the CPU's view)."""
    runner.memory = memory_factory(plan, seen, not runner.cfg.SMP)
    runner.plan = plan


def explore(runner: Runner, budget: Budget, stats: Stats,
            search: Callable[..., Stats] = stateful.explore_roots) -> Stats:
    """Explore ``runner``'s scenario under LKMM in one stateful search that
    branches on every weak read's choice (:func:`pervma.check.stateful.explore`
    keeps the plan of the choices on its stack).  A violation found with
    stale reads is confirmed by :func:`confirm`; ``runner.plan`` is left at
    the found execution's plan (the replay and the minimisation use it)."""
    plan: Plan = {}
    use_plan(runner, plan)
    search(runner, budget, stats)
    found = stats.found
    if found is not None and plan:
        plan = shrink(runner, dict(plan), found)
        if len(plan) > 1:
            plan = fewer(runner, plan, found, stats)
        verdict = confirm(runner, found.schedule, plan)
        if verdict is None:
            stats.found = None
            stats.incomplete.append("an execution the memory layer allowed was rejected by "
                                    "LKMM's axioms (check_graph); the search stopped there")
            use_plan(runner, {})
        else:
            stats.notes.append(f"LKMM: found under a plan of {len(runner.plan)} weak "
                               f"read(s); check_graph: {verdict}")
    elif found is not None:
        use_plan(runner, {})
        stats.notes.append("LKMM: found with every weak read reading the latest write "
                           "(an SC execution)")
    else:
        use_plan(runner, {})
    stats.notes.append(f"memory model lkmm: one search, {stats.variants} branch(es) on a weak "
                       f"read's older write (weak locations: {', '.join(sorted(WEAK))})")
    stats.complete = not stats.incomplete
    stats.stop_clock()
    return stats


#: The budget (executions + pruned) of the search for a counterexample with
#: fewer stale reads (:func:`fewer`).
FEWER_BUDGET = 4000


def fewer(runner: Runner, plan: Plan, found: Found, stats: Stats) -> Plan:
    """A counterexample of ``found``'s kind with fewer stale reads than
    ``plan``'s, if the plans of fewer reads, explored one by one (breadth
    first) within :data:`FEWER_BUDGET`, hold one: ``found`` is updated and
    the better plan returned; else ``plan`` (and a note when the budget cut
    the search short)."""
    sub = Stats(stats.strategy)
    explore_plans(runner, Budget(max_executions=FEWER_BUDGET), sub, max_reads=len(plan) - 1)
    better = sub.found
    if better is not None and better.kind == found.kind:
        found.schedule, found.message = better.schedule, better.message
        found.preemptions = better.preemptions
        return dict(runner.plan)
    if any(r.startswith("stopped at --max-executions") for r in sub.incomplete):
        stats.notes.append(f"LKMM: a counterexample with fewer than {len(plan)} stale reads was "
                           f"looked for within {FEWER_BUDGET} executions; one may exist")
    use_plan(runner, plan)
    return plan


def explore_plans(runner: Runner, budget: Budget, stats: Stats,
                  search: Callable[..., Stats] = stateful.explore_roots,
                  max_reads: int | None = None) -> Stats:
    """The reference :func:`explore` is checked against (the search of the
    first version): every plan reachable from the empty one, breadth first,
    each explored by its own ``search`` from the start.  Slower by the number
    of plans, and simple enough to trust.  ``max_reads`` bounds a plan's
    stale reads."""
    budget.start()
    plans: list[Plan] = [{}]
    known: set[tuple[tuple[tuple[int, int], int], ...]] = {()}
    nplans = 0
    states = 0
    while plans:
        plan = plans.pop(0)  # breadth first: plans of fewer stale reads first
        nplans += 1
        seen: set[tuple[int, int, int]] = set()
        use_plan(runner, plan, seen)
        runner.branch_weak = False  # fixed for this search: the search must not branch on it
        sub = Stats(stats.strategy)
        try:
            search(runner, budget, sub)
        finally:
            runner.branch_weak = True
        stats.executions += sub.executions
        stats.pruned += sub.pruned
        stats.steps += sub.steps
        stats.max_depth = max(stats.max_depth, sub.max_depth)
        stats.revisits += sub.revisits
        states += sub.states or 0
        if sub.found is not None:
            verdict = confirm(runner, sub.found.schedule) if plan else "an SC execution"
            if verdict is not None:
                stats.found = sub.found
                stats.notes.append(f"LKMM: found under a plan of {len(plan)} weak read(s); "
                                   f"check_graph: {verdict}")
                stats.incomplete.append("stopped at the first violation")
                break
        for reason in sub.incomplete:
            if reason not in stats.incomplete and reason != "stopped at the first violation":
                stats.incomplete.append(reason)
        for tid, n, count in sorted(seen):
            if (tid, n) in plan or max_reads is not None and len(plan) >= max_reads:
                continue
            for back in range(1, count):
                new = {**plan, (tid, n): back}
                key = tuple(sorted(new.items()))
                if key not in known:
                    known.add(key)
                    plans.append(new)
        cut = budget.exhausted(stats)
        if cut is not None and plans:
            stats.incomplete.append(cut)
            break
    use_plan(runner, runner.plan if stats.found is not None else {})
    stats.states = states
    stats.notes.append(f"memory model lkmm: {nplans} plan(s) of weak reads explored one by one")
    stats.complete = not stats.incomplete
    stats.stop_clock()
    return stats


def shrink(runner: Runner, plan: Plan, found: Found) -> Plan:
    """The plan of a found violation with every stale read dropped that the
    violation does not need (the search takes the first it meets, not the
    fewest): each choice in turn is set back to the latest write and kept
    dropped if ``found``'s schedule still ends in a violation of its kind
    (the schedule is updated to the replay's).  Returns the plan, now the
    runner's."""
    from pervma.check.engine import replay

    for key in sorted(plan):
        trial = {k: v for k, v in plan.items() if k != key}
        use_plan(runner, trial)
        rep = replay(runner.instance(), runner.cfg, found.schedule, strict=False,
                     max_steps=runner.max_steps)
        if rep.violation is not None and rep.violation.kind == found.kind:
            plan = trial
            found.schedule = list(rep.schedule)
            found.message = rep.violation.message
    use_plan(runner, plan)
    return plan


def confirm(runner: Runner, schedule: list[int], plan: Plan | None = None) -> str | None:
    """Replay ``schedule`` under ``plan`` (by default the runner's) and judge
    its execution graph, with the reads-from the plan chose, by LKMM's axioms:
    a line saying it is allowed (with any data-race flag), or None when it is
    not."""
    from pervma.check.engine import replay

    if plan is not None:
        use_plan(runner, plan)
    rep = replay(runner.instance(), runner.cfg, schedule, strict=False,
                 max_steps=runner.max_steps)
    mem = rep.ex.memory
    if not isinstance(mem, Memory):
        return "SC execution"
    verdict = judge(rep.ex.trace, mem)
    if not verdict.allowed:
        return None
    flags = f", flags {', '.join(verdict.flags)}" if verdict.flags else ""
    return f"allowed{flags}"


def judge(trace: list[tuple[int, Any]], mem: Memory) -> Any:
    """check_graph's verdict on the execution ``trace`` with ``mem``'s reads-from."""
    from pervma.check.graph import GraphRecorder

    rec = GraphRecorder(mem.tracked)
    for tid, op in trace:
        rec.add(tid, op)
    rf = {(r.step, repr(r.loc) + (".fields" if _is_vma(r.loc) else "")): r.msg.step
          for r in mem.reads if r.msg is not r.latest}
    return rec.execution(rf).check()


def _is_vma(loc: Any) -> bool:
    return isinstance(loc, tuple) and bool(loc) and loc[0] == VMA


def reads_from_lines(mem: Memory, names: list[str]) -> list[str]:
    """The weak reads of an execution that did not read the latest write:
    what each read, from which step, and the ordering that let it."""
    out: list[str] = []
    for r in mem.reads:
        if r.msg is r.latest:
            continue
        out.append(_line(r, names))
    if not out:
        out.append("every weak read read the latest write (an SC execution)")
    return out


def _who(tid: int, names: list[str]) -> str:
    return names[tid] if 0 <= tid < len(names) else "initial"


def _line(r: ReadRecord, names: list[str]) -> str:
    m, latest = r.msg, r.latest
    src = ("its previous life (the recycled object's fields before vm_area_alloc() handed it "
           "out again)" if m.step < 0 and m.label == PREVIOUS_LIFE
           else "the value it had when first met" if m.step < 0
           else f"{_who(m.tid, names)}'s step {m.step} '{m.label}' ({m.order.name})")
    return (f"step {r.step}: {_who(r.tid, names)} '{r.label}' ({r.order.name}) read {r.loc!r} = "
            f"{_fmt(m.value)} from {src}, not the latest write, {_who(latest.tid, names)}'s "
            f"step {latest.step} '{latest.label}' ({latest.order.name}) = {_fmt(latest.value)}: "
            f"no acquire, rmb or mb of {_who(r.tid, names)} had ordered it after a read of a "
            f"release or wmb-ordered write that followed step {latest.step}")


def _fmt(v: Any) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if isinstance(v, int) and not isinstance(v, bool) and v > 9:
        return hex(v)
    return str(v)
