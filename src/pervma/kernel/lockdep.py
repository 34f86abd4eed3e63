"""lockdep's dependency graph and might_sleep(), as kernel/locking/lockdep.c
and kernel/sched/core.c (__might_sleep) do them in Linux 7.0, reduced to
what the model's locks need.

Lock classes.  lockdep names a class per lock *role*, not per instance:
every mm's mmap_lock is one class, every VMA's lock map another.  The model's
locks carry a short name (``RwSemaphore.name``, ``SpinLock.name``, the
``"vm_lock"`` of the VMA lock); :data:`CLASS_NAMES` gives the name lockdep
prints for it.  ``rcu_read_lock`` is a class lockdep tracks without
validating it (``rcu_lock_acquire`` passes check=0), so it is listed among
held locks but never enters the graph.

Dependencies.  When a task acquires a lock without trylock while holding
others, lockdep adds an edge from the held class to the new one
(``check_prevs_add``): from the most recent held lock down to, and
including, the first one that was not itself taken by trylock; the older
ones are already connected through it.  A trylock adds no edge into the
lock it takes (it cannot wait, so it cannot close a cycle), but later
acquisitions under it add edges out of it.  Before adding an edge
prev -> next, lockdep searches for a path next ->* prev; if there is one, the
two orders together can deadlock and it reports "possible circular locking
dependency detected" instead.  Every lock the model tracks is a sleeping
rwsem, a spinlock or the VMA lock map: none is a recursive-read lock
(rwsem readers are not: ``down_read`` passes read=1, and the VMA lock's
``__vma_lockdep_acquire_read`` uses ``lock_acquire_shared``), so every
cycle is a deadlock to lockdep, read-read cycles included.  Edges between
two locks of one class are not recorded (the kernel takes them with a
nesting subclass).

The graph of one checker run.  A dependency seen in one execution stays
known to every later execution of the same run, as the kernel's graph
outlives the code path that built it.  The graph therefore lives in the
driver's run scope (:func:`pervma.sched.run_scope`), which the state key
does not walk, and each dependency records the task, the sites and the
execution that first made it, so a report shows both chains even when the
other one was taken in another execution.  Code run outside a driver's
scope (the synchronous API, scripted runs) keeps one graph per
:class:`~pervma.kernel.system.System`.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections import deque
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

from pervma.sched import RunScope, running_slot

if TYPE_CHECKING:
    from pervma.kernel.task import HeldLock, TaskStruct

_running = running_slot()  # the driver's running-task stack: read here, never changed

#: The class name lockdep prints for each of the model's lock names.
CLASS_NAMES: dict[str, str] = {
    "mmap_lock": "&mm->mmap_lock",
    "vm_lock": "vm_lock",
    "ptl": "ptlock_ptr(ptdesc)",
    "page_table_lock": "&mm->page_table_lock",
    "anon_vma": "&anon_vma->rwsem",
    "i_mmap_rwsem": "&mapping->i_mmap_rwsem",
    "invalidate_lock": "&mapping->invalidate_lock",
    "folio_lock": "PG_locked",  # not a lockdep class in the kernel (kernel/filemap.py)
    "rcu_read_lock": "rcu_read_lock",
    # mmu notifiers (mmu_notifier.py, mm_take_all_locks in vma.py, the mirror in mmu_mirror.py)
    "mm_all_locks_mutex": "mm_all_locks_mutex",
    "mmu_notifier_invalidate_range_start": "mmu_notifier_invalidate_range_start",
    "mmu_notifier_lock": "&subscriptions->lock",
    "mirror_lock": "&mirror->mmu_lock",
}

_KEY = "lockdep"

#: An acquisition site: the function that took the lock and its caller.
Site = tuple[str, str]


def class_name(name: str) -> str:
    return CLASS_NAMES.get(name, name)


@dataclass(frozen=True, slots=True)
class Acquisition:
    """One lock as a task held or took it: class, mode, site."""

    name: str
    mode: str
    site: Site

    def __str__(self) -> str:
        return f"({class_name(self.name)}){{{self.mode}}}, at: {site_text(self.site)}"


@dataclass(frozen=True, slots=True)
class Dependency:
    """An edge prev -> next and the first acquisition that made it: which
    task, in which execution of the run, holding what (bottom first)."""

    prev: str
    next: Acquisition
    task: str
    execution: int
    held: tuple[Acquisition, ...]


@dataclass(slots=True)
class LockdepGraph:
    """The dependency graph: for each class, the classes taken after it."""

    after: dict[str, dict[str, Dependency]] = field(default_factory=dict)

    def path(self, src: str, dst: str) -> list[Dependency] | None:
        """The edges of a shortest path src ->* dst (breadth first, so the
        report shows the shortest chain), or None."""
        if src == dst:
            return []
        seen = {src}
        back: dict[str, Dependency] = {}
        todo = deque([src])
        while todo:
            c = todo.popleft()
            for n, dep in self.after.get(c, {}).items():
                if n in seen:
                    continue
                seen.add(n)
                back[n] = dep
                if n == dst:
                    out = []
                    while n != src:
                        d = back[n]
                        out.append(d)
                        n = d.prev
                    out.reverse()
                    return out
                todo.append(n)
        return None

    def edges(self) -> int:
        return sum(len(v) for v in self.after.values())


# Graphs of code run outside any run scope, one per System (not reachable
# from the model, so never part of a state).
_unscoped: weakref.WeakKeyDictionary[Any, LockdepGraph] = weakref.WeakKeyDictionary()


def merge_graphs(into: LockdepGraph, other: LockdepGraph) -> bool:
    """Add other's dependencies to into (a worker's graph to the run's);
    True if one of them closes a cycle with what into already knew: the
    two orders were seen, only in different workers."""
    clash = False
    for prev, succ in other.after.items():
        for name, dep in succ.items():
            mine = into.after.setdefault(prev, {})
            if name in mine:
                continue
            if into.path(name, prev) is not None:
                clash = True
            mine[name] = dep
    return clash


RunScope.mergers[_KEY] = merge_graphs


def graph_of(tsk: TaskStruct) -> tuple[LockdepGraph, int]:
    """The graph the running task adds to, and the execution number it is in."""
    task = _running[-1] if _running else None
    scope = task.run if task is not None else None
    if scope is not None:
        g = scope.data.get(_KEY)
        if g is None:
            g = scope.data[_KEY] = LockdepGraph()
            _seed(g, scope.replay.get(_KEY))
        return g, scope.executions
    g = _unscoped.get(tsk.system)
    if g is None:
        g = _unscoped[tsk.system] = LockdepGraph()
    return g, 0


_DIR = os.path.dirname(__file__)
#: Frames of the lock primitives and of the checks are never a site.
_SKIP_FILES = frozenset(os.path.join(_DIR, f) for f in ("lockdep.py", "debug.py", "locks.py"))


def _row(dep: Dependency) -> list[Any]:
    """A dependency as plain JSON (a replay file carries the other chain)."""
    return [dep.prev, dep.task, dep.execution,
            [[a.name, a.mode, *a.site] for a in (dep.next, *dep.held)]]


def _seed(graph: LockdepGraph, rows: Any) -> None:
    """Start a replay's graph with the chain the recorded report named, so
    the execution that closed the cycle closes it again."""
    if not isinstance(rows, list):
        return
    for prev, task, execution, acqs in rows:
        nxt, *held = (Acquisition(n, m, (f, c)) for n, m, f, c in acqs)
        graph.after.setdefault(prev, {})[nxt.name] = Dependency(prev, nxt, task, execution,
                                                                tuple(held))


def acquire_site(depth: int = 2) -> Site:
    """Where the lock is being taken: the first model function outside the
    lock primitives and the debug checks, and its caller (lockdep records
    the caller's address; the model records the two names, and formats them
    only for a report)."""
    f: FrameType | None = sys._getframe(depth)
    skip = _SKIP_FILES
    while f is not None and f.f_code.co_filename in skip:
        f = f.f_back
    if f is None:
        return ("?", "")
    up = f.f_back
    if up is None or up.f_code.co_filename in skip:
        return (f.f_code.co_name, "")
    return (f.f_code.co_name, up.f_code.co_name)


def _acq(h: HeldLock) -> Acquisition:
    return Acquisition(h.name, h.mode, (h.site, h.caller))


def site_text(site: Site) -> str:
    name, caller = site
    if not name:
        return "?"
    return f"{name}() from {caller}()" if caller and caller != "_guard" else f"{name}()"


def check_prevs_add(tsk: TaskStruct, name: str, mode: str, site: Site) -> None:
    """Models check_prevs_add() + check_noncircular(): add held -> new edges
    (most recent held lock first, down to the first non-trylock one), each
    after making sure the new class does not already lead back to the held
    one.  Reports through ``debug.report``."""
    graph, execution = graph_of(tsk)
    after = graph.after
    held = tsk.held
    nxt: Acquisition | None = None
    for i in range(len(held) - 1, -1, -1):
        h = held[i]
        prev = h.name
        if prev != name:
            succ = after.get(prev)
            if succ is None or name not in succ:
                if nxt is None:
                    nxt = Acquisition(name, mode, site)
                back = graph.path(name, prev)
                if back is not None:
                    _circular(tsk, h, nxt, back, execution)
                dep = Dependency(prev, nxt, _who(tsk), execution,
                                 tuple(_acq(x) for x in held))
                if succ is None:
                    after[prev] = {name: dep}
                else:
                    succ[name] = dep
        if not h.trylock:
            break


def _who(tsk: TaskStruct) -> str:
    return f"{tsk.comm}/{tsk.pid}"


def held_locks_text(tsk: TaskStruct) -> list[str]:
    """lockdep_print_held_locks(): one line per held lock, RCU first."""
    locks = tsk.held
    lines = []
    n = len(locks) + (1 if tsk.rcu_depth else 0)
    lines.append(f"{n} lock{'s' if n != 1 else ''} held by {_who(tsk)}:")
    i = 0
    if tsk.rcu_depth:
        lines.append(f" #{i}: (rcu_read_lock){{read}}, nested {tsk.rcu_depth}")
        i += 1
    for h in locks:
        lines.append(f" #{i}: {_acq(h)}")
        i += 1
    return lines


def _when(dep: Dependency, execution: int) -> str:
    if dep.execution == execution:
        return "earlier in this execution"
    return f"in execution {dep.execution} of this run"


def _circular(tsk: TaskStruct, held: HeldLock, nxt: Acquisition,
              back: list[Dependency], execution: int) -> None:
    """print_circular_bug(): the new lock, the held one, the chain that
    already leads from the new lock's class back to the held one (each
    link with the task, execution and site that made it), the scenario."""
    from pervma.kernel import debug

    held_acq = _acq(held)
    lines = [
        f"{_who(tsk)} is trying to acquire lock:",
        f" {nxt}",
        "",
        "but task is already holding lock:",
        f" {held_acq}",
        "",
        "which lock already depends on the new lock.",
        "",
        "the existing dependency chain (in reverse order) is:",
    ]
    k = len(back)
    for dep in reversed(back):
        was = ", ".join(str(a) for a in dep.held) or "nothing"
        lines += [
            "",
            f"-> #{k} ({class_name(dep.next.name)}){{{dep.next.mode}}}:",
            f"       taken by {dep.task} {_when(dep, execution)} at {site_text(dep.next.site)}",
            f"       while holding {was}",
        ]
        k -= 1
    lines += [
        "",
        f"-> #0 ({class_name(nxt.name)}){{{nxt.mode}}}:",
        f"       taken by {_who(tsk)} now at {site_text(nxt.site)}",
        "",
        "other info that might help us debug this:",
        "",
    ]
    a, b = class_name(held.name), class_name(nxt.name)
    if k == 0 and len(back) == 1:
        lines += [
            " Possible unsafe locking scenario:",
            "",
            "       CPU0                    CPU1",
            "       ----                    ----",
            f"  lock({a});",
            f"                               lock({b});",
            f"                               lock({a});",
            f"  lock({b});",
            "",
            " *** DEADLOCK ***",
            "",
        ]
    else:
        chain = " -> ".join([b] + [class_name(d.next.name) for d in back] + [b])
        lines += [f" Chain exists of: {chain}", "", " *** DEADLOCK ***", ""]
    lines += held_locks_text(tsk)
    task = _running[-1] if _running else None
    if task is not None and task.run is not None:
        task.run.replay[_KEY] = [_row(d) for d in back]
    debug.report("WARNING: possible circular locking dependency detected", "\n".join(lines))


def recursive(tsk: TaskStruct, held: HeldLock, name: str, mode: str, site: Site) -> None:
    """print_deadlock_bug(), for the same lock instance taken twice (the
    model does not check the class-level case: it has no nesting
    annotations)."""
    from pervma.kernel import debug

    lines = [f"{_who(tsk)} is trying to acquire lock:",
             f" {Acquisition(name, mode, site)}",
             "",
             "but task is already holding lock:",
             f" {_acq(held)}",
             "",
             *held_locks_text(tsk)]
    debug.report("lockdep: recursive locking", "\n".join(lines))


def might_sleep(tsk: TaskStruct, where: str, what: str) -> None:
    """Models __might_sleep()/__might_resched() (CONFIG_DEBUG_ATOMIC_SLEEP,
    gated here by DEBUG_LOCK_ALLOC): sleeping with preemption disabled (a
    spinlock, an RCU read section on PREEMPT=n) or inside an RCU read-side
    section (PREEMPT=y: preemptible RCU still forbids a voluntary sleep) is
    a bug, reported with the kernel's details."""
    task = _running[-1] if _running else None
    pc = task.preempt_count if task is not None else 0
    if pc == 0 and tsk.rcu_depth == 0:
        return
    from pervma.kernel import debug

    lines = [
        f"at {where}, in {what}",
        f"in_atomic(): {1 if pc else 0}, irqs_disabled(): 0, non_block: 0, "
        f"pid: {tsk.pid}, name: {tsk.comm}",
        f"preempt_count: {pc}, expected: 0",
        f"RCU nest depth: {tsk.rcu_depth}, expected: 0",
        *held_locks_text(tsk),
    ]
    from pervma.kernel.locks import SpinLock

    atomic = [h for h in tsk.held if isinstance(h.obj, SpinLock)]
    if atomic:
        lines += ["Preemption disabled at:", f" {site_text((atomic[-1].site, atomic[-1].caller))}"]
    debug.report("BUG: sleeping function called from invalid context", "\n".join(lines))
