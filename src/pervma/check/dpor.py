"""Exhaustive stateless search: source-DPOR with sleep sets.

Follows Abdulla, Aronis, Jonsson, Sagonas, "Source Sets: A Foundation for
Optimal Dynamic Partial Order Reduction" (JACM 2017), Algorithm 1, run
statelessly: every execution starts from a fresh :class:`Instance`, replays the
chosen prefix and continues with the default choice (stay on the running
thread, else the lowest runnable one).

* Dependency is from :class:`~pervma.sched.Op` locations: two transitions
  conflict when they touch a common location and one of them writes.
* After each execution, every *direct* race ``e' < e`` (dependent, different
  threads, no happens-before path through a third event) adds an initial of
  ``notdep(e').e`` to the backtrack set before ``e'`` unless one is already
  there or asleep.
* Blocking: a thread whose pending step is disabled (waiting for a lock or a
  condition) never executes that step in this execution, so it cannot show up
  in a race.  As in Flanagan and Godefroid's DPOR, its pending step is
  compared with the latest dependent event, and the thread (or, if it was not
  runnable there, every runnable thread) is added before that event.
* Sleep sets make the explored maximal executions pairwise inequivalent;
  executions in which every runnable thread sleeps are cut and counted as
  *pruned*.

The search is complete when the stack empties with no budget hit and no
execution cut by the livelock bound.

``pervma check`` runs :func:`explore_roots`: the root's backtrack set is every
runnable thread, and each root subtree is searched in thread order with the
earlier threads asleep.  That costs a few pruned executions over
:func:`explore` (never an extra maximal one) and makes the search separable:
``--jobs N`` runs the same subtrees in worker processes, and
:mod:`pervma.check.api` combines them into exactly the result of one process.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pervma.check import checkpoint
from pervma.check.checkpoint import Checkpoint
from pervma.check.checkpoint import restart as resume_at
from pervma.check.engine import Acc, Event, Execution, close_executor, dependent
from pervma.check.search import Budget, Runner, Stats, settle

Access = tuple[int, Hashable, bool]  # (thread, location, writes)


class BacktrackNode(Protocol):
    """What the race analysis needs of a node of the DFS stack (this module's
    and the stateful search's)."""

    enabled: list[int]
    sleep: dict[int, Acc]
    backtrack: set[int]


@dataclass(slots=True)
class _Node:
    enabled: list[int]
    prev: int | None
    preemptions: int  # preemptions before this node's choice
    sleep: dict[int, Acc]
    backtrack: set[int]
    chosen: int
    event: Event | None = None
    explored: set[int] = field(default_factory=set)
    ckpt: Checkpoint | None = None  # the execution at this node (pervma.check.checkpoint)


def explore(runner: Runner, budget: Budget, stats: Stats | None = None,
            max_preemptions: int | None = None,
            want: Callable[[Execution], bool] | None = None,
            collect: list[Execution] | None = None, collect_max: int = 1,
            root: tuple[int, dict[int, Acc]] | None = None, restart: bool = True) -> Stats:
    """Explore; with ``max_preemptions`` backtrack choices that would exceed
    the bound are skipped (a heuristic used by minimisation, not complete);
    with ``want``, accepted violating executions go to ``collect`` instead
    of stopping the search until ``collect_max`` of them are found.

    ``root = (thread, sleep)`` explores only the subtree whose first
    transition is ``thread``, with ``sleep`` (thread -> accesses of its first
    transition) as the root's sleep set: the parallel split, in which every
    runnable thread at the root gets its own worker and the workers before it
    are asleep, exactly as the sequential search would treat a root whose
    backtrack set is every runnable thread.  With ``restart=False`` the
    budget's clock keeps running (:func:`explore_roots`)."""
    stats = stats or Stats("dpor")
    if restart:
        budget.start()
    stack: list[_Node] = []
    start = 0  # index of the first event whose races are not yet analysed
    conservative = 0
    ckpts = runner.checkpoints
    while True:
        run = resume_at(runner, stack, ckpts)
        blocked_seen: set[tuple[int, int]] = set()
        sleep_blocked = False
        while True:
            enabled = run.runnable()
            if len(run.events) > start or not stack:
                conservative += _blocked_rule(run, stack, blocked_seen)
            if not enabled:
                break
            if stack:
                parent = stack[-1]
                pacc = parent.event.acc if parent.event else {}
                sleep = {q: a for q, a in parent.sleep.items() if not dependent(a, pacc)}
            else:
                sleep = dict(root[1]) if root is not None else {}
            cands = [t for t in enabled if t not in sleep]
            if not cands:
                sleep_blocked = True
                break
            cur = run.cur
            choice = cur if cur in cands else cands[0]
            if not stack and root is not None:
                choice = root[0]
            node = _Node(enabled, cur, run.preemptions, sleep, {choice}, choice)
            if ckpts and stack and len(stack) % checkpoint.EVERY == 0:
                node.ckpt = runner.save(run)
            stack.append(node)
            node.event = run.take(choice)
        if run.livelock is not None:  # the cut-off threads still race with what ran
            conservative += _blocked_rule(run, stack, blocked_seen, everyone=True)
        conservative += _races(run, stack, start)
        if want is not None and run.violation is not None:  # the search goes on after it
            conservative += run_on_races(run, stack)[0]
        if sleep_blocked:
            # its threads are abandoned when it is dropped (Execution.drop)
            stats.pruned += 1
            stats.steps += len(run.schedule)
        elif want is not None:
            outcome = run.end()
            stats.executions += 1
            if outcome == "violation" and want(run):
                assert collect is not None
                collect.append(run)
                if len(collect) >= collect_max:
                    break
        else:
            outcome = run.end()
            settle(stats, run, outcome)
            if outcome == "livelock" and "livelock" not in stats.incomplete:
                stats.incomplete.append("livelock")
        budget.tick(stats)
        if stats.found is not None:
            stats.incomplete.append("stopped at the first violation")
            break
        if run.violation is None:  # else kept (collect) or reported
            run.drop()
        # Next backtrack point: the deepest node with an unexplored, awake choice.
        nxt = None
        while stack:
            node = stack[-1]
            assert node.event is not None
            if root is not None and len(stack) == 1:
                checkpoint.pop(stack)  # the root's other choices belong to other workers
                break
            node.explored.add(node.chosen)
            node.sleep[node.chosen] = node.event.acc
            todo = [t for t in node.backtrack if t not in node.sleep]
            if max_preemptions is not None and node.preemptions >= max_preemptions:
                todo = [t for t in todo if t == node.prev or node.prev not in node.enabled]
            if todo:
                nxt = node.prev if node.prev in todo else min(todo)
                break
            checkpoint.pop(stack)
        if nxt is None:
            break
        stack[-1].chosen = nxt
        start = len(stack) - 1
        reason = budget.exhausted(stats)
        if reason is not None:
            stats.incomplete.append(reason)
            break
    stats.conservative += conservative
    if restart:
        conservative_note(stats)
    stats.complete = not stats.incomplete
    stats.stop_clock()
    return stats


def conservative_note(stats: Stats) -> None:
    """The note on backtrack points added for a thread that was not runnable."""
    if stats.conservative:
        stats.notes.append(f"{stats.conservative} conservative backtrack point(s) "
                           "(a race with a thread that was not runnable there)")


def _add(node: BacktrackNode, initials: list[int], prefer: int) -> int:
    """Add one of ``initials`` to the node's backtrack set; 1 if conservative."""
    bt = node.backtrack
    for t in initials:
        if t in bt or t in node.sleep:
            return 0
    if prefer in initials and prefer in node.enabled:
        bt.add(prefer)
        return 0
    for t in initials:
        if t in node.enabled:
            bt.add(t)
            return 0
    bt.update(t for t in node.enabled if t not in node.sleep)
    return 1


def _races(run: Execution, stack: Sequence[BacktrackNode], start: int) -> int:
    """Reverse every direct race ``c < i`` with ``i >= start`` (the events
    before ``start`` were analysed in an earlier execution with the same
    prefix).  An event's candidates are its dependent predecessors
    (``Event.deps``, kept by the engine); ``c`` races ``i`` directly when it
    is of another thread, not already before ``i``'s thread's previous event
    (``Event.pclock``), and not before a later candidate."""
    events = run.events
    conservative = 0
    for i in range(start, len(events)):
        e = events[i]
        deps = e.deps
        if not deps:
            continue
        order = sorted(set(deps)) if len(deps) > 1 else deps
        pc = e.pclock
        tid = e.tid
        last = len(order) - 1
        for k, c in enumerate(order):
            ec = events[c]
            t0 = ec.tid
            s0 = ec.seq
            if t0 == tid or pc[t0] >= s0:
                continue
            if k < last and any(events[c2].clock[t0] >= s0 for c2 in order[k + 1:]):
                continue
            conservative += _reverse(events, stack, c, i)
    return conservative


def _reverse(events: list[Event], stack: Sequence[BacktrackNode], c: int, i: int) -> int:
    """Race ``events[c] < events[i]``: schedule an initial of notdep(c).e before c."""
    ec = events[c]
    e = events[i]
    t0, s0 = ec.tid, ec.seq
    n = len(ec.clock)
    first: dict[int, int] = {}
    for j in range(c + 1, i):
        f = events[j]
        if f.clock[t0] >= s0 or f.tid in first:
            continue
        first[f.tid] = j
        if len(first) == n:  # every thread has its first event already
            break
    if e.tid not in first:
        first[e.tid] = i
    initials = []
    for t, j in first.items():
        clock = events[j].clock
        if all(not (ju < j and clock[u] >= events[ju].seq) for u, ju in first.items() if u != t):
            initials.append(t)
    return _add(stack[c], initials, e.tid)


def summary_races(run: Execution, stack: Sequence[BacktrackNode], summary: set[Access],
                  upto: int | None = None, clocks: list[list[int]] | None = None) -> int:
    """Races between the first ``upto`` events of the execution (all, by
    default) and a set of later accesses whose order is not known (a stored
    state's future, or what ran on after a violation): for every access of
    thread ``t`` and every earlier event of another thread that touches the
    same location (one of the two writing) and is not already before ``t``'s
    next step (``clocks``: the threads' clocks after event ``upto``), ``t``
    joins that event's backtrack set (or, if ``t`` was not runnable there,
    every runnable thread does) -- unless the event happens before a later
    such event, which the access then follows in every execution (that later
    event is the one it races).  The Flanagan-Godefroid rule at every
    dependent event that no later one follows: a superset of the direct
    races the stateless search would find.  The walk is :func:`summary_pairs`
    (in C when built: it was 13-17% of a stateful search's time); the
    backtrack sets are changed here, in the order it found the pairs."""
    if not summary or not stack:
        return 0
    pairs = _summary_pairs(run.events, len(run.events) if upto is None else upto, summary,
                           run.last_touches, run.clocks() if clocks is None else clocks)
    conservative = 0
    for i, t in pairs:
        conservative += _add(stack[i], [t], t)
    return conservative


def summary_pairs(events: list[Event], end: int, summary: Iterable[Access],
                  last: dict[Hashable, int], clocks: list[list[int]]) -> list[tuple[int, int]]:
    """The walk of :func:`summary_races`, written to be read (the C one,
    ``pervma.check._races.summary_pairs``, makes the same pairs in the same
    order): every (event index, thread) whose backtrack set the thread
    joins, each once, in the order met.  ``last``: the last event on each
    location; ``clocks``: each thread's clock at the point of its access."""
    by_loc: dict[Hashable, list[tuple[int, bool]]] = {}
    for t, loc, w in summary:
        by_loc.setdefault(loc, []).append((t, w))
    pairs: list[tuple[int, int]] = []
    done: set[tuple[int, int]] = set()
    for loc, accesses in by_loc.items():
        j = last.get(loc, -1)
        while j >= end:  # after the first ``end`` events
            j = events[j].before[loc]
        if j < 0:
            continue
        # per access: its thread, whether it writes, the thread's clock and
        # the candidates no later candidate happens after
        each = [(t, w, clocks[t], []) for t, w in accesses]
        kept: list[Event]
        while j >= 0:  # the events on ``loc``, newest first
            e = events[j]
            i, j = j, e.before[loc]
            t0 = e.tid
            s0 = e.seq
            ew = e.acc[loc]
            for t, w, clock, kept in each:
                if t0 == t or not (w or ew) or clock[t0] >= s0:
                    continue
                if any(k.clock[t0] >= s0 for k in kept):
                    continue  # before a later dependent event: that one races the access
                kept.append(e)
                if (i, t) not in done:
                    done.add((i, t))
                    pairs.append((i, t))
    return pairs


try:
    from pervma.check._races import summary_pairs as _summary_pairs
except ImportError:  # no C compiler at install time
    _summary_pairs = summary_pairs


def run_on_future(run: Execution) -> tuple[int, list[list[int]], set[Access]] | None:
    """What the threads do when run on past a violation
    (:meth:`Execution.run_on`): the number of events up to the violation,
    the threads' clocks there, and the accesses of the run-on with the
    pending accesses of the threads it leaves blocked.  None when there is no
    violation to run past (or the model crashed: nothing after it means
    anything)."""
    if run.violation is None or run.violation.kind == "exception":
        return None
    n = len(run.events)
    clocks = run.clocks()
    first = run.run_on()
    future: set[Access] = set()
    for e in run.events[first:]:
        for loc, w in e.acc.items():
            future.add((e.tid, loc, w))
    for task in run.ex.tasks:
        if not task.done and task.pending is not None:
            for loc, w in run.pending_access(task.tid):
                future.add((task.tid, loc, w))
    run.drop_run_on(first)
    return n, clocks, future


def run_on_races(run: Execution, stack: Sequence[BacktrackNode]) -> tuple[int, set[Access]]:
    """A search that goes on after a violating execution: race what the other
    threads do past it (:func:`run_on_future`) against the execution up to
    the violation (:func:`summary_races`), so that the executions that avoid
    the violation by running one of them earlier are explored.  Returns the
    conservative count and the run-on's accesses, which a stateful search
    adds to the future of the states on its stack."""
    got = run_on_future(run)
    if got is None:
        return 0, set()
    n, clocks, future = got
    return summary_races(run, stack, future, n, clocks), future


def _blocked_rule(run: Execution, stack: Sequence[BacktrackNode], seen: set[tuple[int, int]],
                  everyone: bool = False) -> int:
    """A disabled thread's pending step races with the latest dependent event
    (with ``everyone``, so does every unfinished thread's)."""
    conservative = 0
    events = run.events
    for task in run.ex.tasks:
        if task.done:
            continue
        op = task.pending
        # Only a step with an ``enabled`` condition can be disabled.
        if op is None or (not everyone and (op.enabled is None or op.enabled())):
            continue
        accs = run.pending_access(task.tid)
        if not accs:
            continue
        j = max(run.last_dependent(loc, w) for loc, w in accs)
        if j < 0 or (j, task.tid) in seen:
            continue
        seen.add((j, task.tid))
        ej = events[j]
        if ej.tid == task.tid or run.thread_clock(task.tid)[ej.tid] >= ej.seq:
            continue
        conservative += _add(stack[j], [task.tid], task.tid)
    return conservative


def explore_roots(runner: Runner, budget: Budget, stats: Stats | None = None,
                  roots: list[tuple[int, dict[int, Acc]]] | None = None) -> Stats:
    """:func:`explore` with every runnable thread in the root's backtrack set:
    the subtrees of :func:`root_split` in order, sharing one budget and
    stopping at the first violation, exactly what a worker per subtree
    computes when the subtrees are combined in order."""
    return run_roots(explore, runner, budget, stats or Stats("dpor"), roots)


def run_roots(search: Callable[..., Stats], runner: Runner, budget: Budget, stats: Stats,
              roots: list[tuple[int, dict[int, Acc]]] | None = None) -> Stats:
    """Run ``search`` (this module's or Optimal-DPOR's ``explore``) over the
    root subtrees in order, with one budget, stopping at the first violation."""
    roots = root_split(runner) if roots is None else roots
    if not roots:  # nothing runnable at the start: one (empty) execution
        return search(runner, budget, stats)
    budget.start()
    for i, root in enumerate(roots):
        if i:
            reason = budget.exhausted(stats)
            if reason is not None:
                stats.incomplete.append(reason)
                break
        search(runner, budget, stats, root=root, restart=False)
        if stopped(stats):
            break
    conservative_note(stats)
    stats.complete = not stats.incomplete
    stats.stop_clock()
    return stats


def stopped(stats: Stats) -> bool:
    """Did the search stop early (a violation or the budget, not the livelock bound)?"""
    return stats.found is not None or any(x != "livelock" for x in stats.incomplete)


def root_split(runner: Runner) -> list[tuple[int, dict[int, Acc]]]:
    """The root subtrees for a parallel run: one per runnable thread, each
    with the earlier threads' first transitions asleep."""
    probe = runner.execution()
    enabled = probe.runnable()
    close_executor(probe.ex)
    out: list[tuple[int, dict[int, Acc]]] = []
    sleep: dict[int, Acc] = {}
    for t in enabled:
        out.append((t, dict(sleep)))
        run = runner.execution()
        sleep[t] = dict(run.take(t).acc)
        close_executor(run.ex)
    return out
