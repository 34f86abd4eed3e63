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
from pervma.check.search import Budget, Runner, Stats
from pervma.sched.locations import MM_LOCK_SEQ, VM_LOCK_SEQ, VM_REFCNT, VMA
from pervma.sched.memory import Memory, ReadRecord

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
    """Explore ``runner``'s scenario under LKMM: every plan reachable from the
    empty one, each by ``search``.  ``runner.plan`` is left at the plan of a
    found violation (the replay and the minimisation use it)."""
    budget.start()
    plans: list[Plan] = [{}]
    known: set[tuple[tuple[tuple[int, int], int], ...]] = {()}
    nplans = 0
    states = 0
    rejected = 0
    while plans:
        plan = plans.pop(0)  # breadth first: plans of fewer stale reads first
        nplans += 1
        seen: set[tuple[int, int, int]] = set()
        use_plan(runner, plan, seen)
        sub = Stats(stats.strategy)
        search(runner, budget, sub)
        stats.executions += sub.executions
        stats.pruned += sub.pruned
        stats.steps += sub.steps
        stats.max_depth = max(stats.max_depth, sub.max_depth)
        stats.conservative += sub.conservative
        stats.revisits += sub.revisits
        states += sub.states or 0
        if sub.livelock and stats.livelock is None:
            stats.livelock = sub.livelock
        if sub.found is not None:
            verdict: str | None = (confirm(runner, sub.found.schedule) if plan
                                   else "an SC execution")
            if verdict is None:
                rejected += 1
                stats.incomplete.append("an execution the memory layer allowed was rejected by "
                                        "LKMM's axioms (check_graph); its plan was abandoned")
            else:
                stats.found = sub.found
                stats.notes.append(f"LKMM: found under a plan of {len(plan)} weak read(s); "
                                   f"check_graph: {verdict}")
                stats.incomplete.append("stopped at the first violation")
                break
        for reason in sub.incomplete:
            if reason not in stats.incomplete and reason != "stopped at the first violation":
                stats.incomplete.append(reason)
        for tid, n, count in sorted(seen):
            if (tid, n) in plan:
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
    stats.notes.append(f"memory model lkmm: {nplans} plan(s) of weak reads explored "
                       f"(weak locations: {', '.join(sorted(WEAK))})")
    stats.complete = not stats.incomplete
    stats.stop_clock()
    return stats


def confirm(runner: Runner, schedule: list[int]) -> str | None:
    """Replay ``schedule`` under the runner's plan and judge its execution
    graph, with the reads-from the plan chose, by LKMM's axioms: a line
    saying it is allowed (with any data-race flag), or None when it is not."""
    from pervma.check.engine import replay

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
    src = ("the value it had when first met" if m.step < 0
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
