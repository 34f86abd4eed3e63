"""Stateful exhaustive search: source-DPOR with sleep sets and a table of
explored states.

The stateless search (:mod:`pervma.check.dpor`) enumerates Mazurkiewicz
traces; this protocol has many traces that end in the same state (two
faults' reference-count increments in either order), and everything after
such a state is explored once per trace.  Here every state the search
reaches is keyed (:func:`pervma.sched.statekey.state_key`: threads' frames
and locals, task_structs, every kernel object, canonically numbered) and an
execution that reaches a state whose exploration is finished stops there.

Soundness follows Yang, Chen, Gopalakrishnan and Kirby, "Efficient Stateful
Dynamic Partial Order Reduction" (SPIN 2008), with Godefroid's rule for
sleep sets and stored states (his thesis, LNCS 1032, 1996, ch. 5):

* **Summaries.**  Every stored state keeps the set of accesses
  ``(thread, location, writes)`` of every transition explored below it, and
  the pending accesses of threads found blocked there (merged up the DFS
  stack when a node is popped, and from a stored state into the node that
  stopped at it).  When an execution stops at a stored state ``s``, the
  races DPOR would have found between the prefix and the transitions after
  ``s`` are found against the summary: for every summarised access of thread
  ``t`` and every earlier event of another thread that touches the same
  location (one of the two writing) and does not happen before ``t``'s next
  step, ``t`` joins that event's backtrack set (or, if ``t`` was not runnable
  there, every runnable thread does).  That is the Flanagan–Godefroid rule
  applied at every dependent event rather than only the latest one: a
  superset of what the stateless search adds, so nothing it would explore is
  lost.  Races among the transitions after ``s`` do not depend on how ``s``
  was reached; they were analysed when ``s`` was explored.
* **Sleep sets.**  A stored state remembers the sleep set it was explored
  with (intersected over re-explorations).  A later visit stops only if that
  set is contained in its own sleep set; otherwise the state is explored
  again with the smaller one.
* **Cycles** (a state met again while it is still on the DFS stack: a
  retry loop that came back where it started).  The execution stops, every
  node of the cycle is fully expanded (the stack proviso: no transition is
  postponed around a cycle), and the states of the cycle are marked
  *partial* -- their summaries lack the future of the state still on the
  stack -- so no later visit stops at them.  A cycle run by one thread while
  no other thread could run anywhere on it is a livelock (that thread loops
  forever whatever the schedule): the run is incomplete, as when the
  stateless search hits the livelock bound.  A spin-wait on another thread
  that could run is not: the search goes on with that thread.

The guarantee is that of the stateless search: every reachable violation
(assertion, lockdep, KASAN, deadlock, ``validate_mm`` at the end) and every
reachable final state is reached by some explored execution.  Livelock is
different: a retry loop that comes back to the same state is a cycle, which
this search closes instead of running into the livelock bound, and reports
only when no other thread could ever break it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from pervma.check.dpor import _add, _blocked_rule, _races, conservative_note, root_split, stopped
from pervma.check.engine import Acc, Event, Execution, close_executor, dependent
from pervma.check.search import Budget, Runner, Stats, settle
from pervma.sched.statekey import state_key

Access = tuple[int, Hashable, bool]  # (thread, location, writes)


@dataclass(slots=True)
class Entry:
    """What the table keeps of an explored state."""

    sleep: frozenset[int]
    summary: set[Access] = field(default_factory=set)
    depth: int | None = None  # index of its node on the DFS stack while being explored
    partial: bool = False  # its summary lacks a cycle's future: never stop here


@dataclass(slots=True)
class _Node:
    enabled: list[int]
    prev: int | None
    preemptions: int
    sleep: dict[int, Acc]
    backtrack: set[int]
    chosen: int
    entry: Entry
    event: Event | None = None
    low: int = 1 << 30  # the shallowest stack index a cycle below this node went back to


@dataclass(slots=True)
class Table:
    """The explored states of one search (shared by the root subtrees)."""

    states: dict[int, Entry] = field(default_factory=dict)
    revisits: int = 0
    cycles: int = 0


def explore(runner: Runner, budget: Budget, stats: Stats | None = None,
            root: tuple[int, dict[int, Acc]] | None = None, restart: bool = True,
            table: Table | None = None, collect: list[Execution] | None = None) -> Stats:
    """Explore statefully; ``root`` and ``restart`` as in
    :func:`pervma.check.dpor.explore`, ``table`` shared between subtrees.
    With ``collect``, every violating execution goes there and the search
    goes on (a violating state is a leaf: nothing is explored after it)."""
    stats = stats or Stats("dpor")
    table = table if table is not None else Table()
    states = table.states
    if restart:
        budget.start()
    stack: list[_Node] = []
    start = 0
    conservative = 0
    while True:
        run = runner.execution()
        for node in stack:
            ev = node.event
            node.event = run.take(node.chosen) if ev is None or ev.tid != node.chosen \
                else run.retake(ev)
        blocked_seen: set[tuple[int, int]] = set()
        cut: str | None = None
        while True:
            enabled = run.runnable()
            if len(run.events) > start or not stack:
                conservative += _blocked_rule(run, stack, blocked_seen)
            if run.violation is not None or run.livelock is not None:
                break
            if stack:
                parent = stack[-1]
                pacc = parent.event.acc if parent.event else {}
                sleep = {q: a for q, a in parent.sleep.items() if not dependent(a, pacc)}
            else:
                sleep = dict(root[1]) if root is not None else {}
            key = state_key(run.ex.tasks)
            ent = states.get(key)
            if not stack and root is not None:  # the split point: each subtree starts here
                if ent is None:
                    ent = states[key] = Entry(frozenset())
            elif ent is None:
                ent = Entry(frozenset(sleep))
                states[key] = ent
            elif ent.depth is not None:  # back on the stack: a cycle
                table.cycles += 1
                ring = stack[ent.depth:]
                for node in ring:
                    node.backtrack.update(t for t in node.enabled if t not in node.sleep)
                if ring and all(node.enabled == [ring[0].chosen] for node in ring):
                    _livelock(stats, run, ring[0].chosen)
                if stack:
                    stack[-1].low = min(stack[-1].low, ent.depth)
                cut = "cycle"
                break
            elif not ent.partial and ent.sleep <= sleep.keys():
                table.revisits += 1
                conservative += _summary_races(run, stack, ent.summary)
                if stack:
                    stack[-1].entry.summary |= ent.summary
                cut = "stored"
                break
            else:
                ent.sleep = ent.sleep & sleep.keys()
            ent.depth = len(stack)
            _note_blocked(run, ent)
            if not enabled:
                ent.depth = None
                break
            cands = [t for t in enabled if t not in sleep]
            if not cands:
                ent.depth = None
                cut = "sleep"
                break
            cur = run.cur
            choice = cur if cur in cands else cands[0]
            if not stack and root is not None:
                choice = root[0]
            node = _Node(enabled, cur, run.preemptions, sleep, {choice}, choice, ent)
            stack.append(node)
            node.event = run.take(choice)
        if run.livelock is not None:
            conservative += _blocked_rule(run, stack, blocked_seen, everyone=True)
        conservative += _races(run, stack, start)
        if cut is not None:
            close_executor(run.ex)
            stats.pruned += 1
            stats.steps += len(run.schedule)
        else:
            outcome = run.end()
            if collect is not None and outcome == "violation":
                stats.executions += 1
                collect.append(run)
            else:
                settle(stats, run, outcome)
            if outcome == "livelock" and "livelock" not in stats.incomplete:
                stats.incomplete.append("livelock")
        budget.tick(stats)
        if stats.found is not None:
            stats.incomplete.append("stopped at the first violation")
            break
        nxt = None
        while stack:
            node = stack[-1]
            assert node.event is not None
            ev = node.event
            ent = node.entry
            for loc, w in ev.acc.items():
                ent.summary.add((ev.tid, loc, w))
            if root is not None and len(stack) == 1:
                _pop(stack)
                break
            node.sleep[node.chosen] = ev.acc
            todo = [t for t in node.backtrack if t not in node.sleep]
            if todo:
                nxt = node.prev if node.prev in todo else min(todo)
                break
            _pop(stack)
        if nxt is None:
            break
        stack[-1].chosen = nxt
        start = len(stack) - 1
        reason = budget.exhausted(stats)
        if reason is not None:
            stats.incomplete.append(reason)
            break
    for node in stack:  # a search cut short: what is on the stack was not finished
        node.entry.depth = None
        node.entry.partial = True
    stats.conservative += conservative
    stats.states = len(states)
    stats.revisits = table.revisits
    if restart:
        finish_notes(stats, table)
    stats.complete = not stats.incomplete
    stats.stop_clock()
    return stats


def _livelock(stats: Stats, run: Execution, tid: int) -> None:
    """A cycle run by one thread while no other thread could run: it loops
    forever whatever the schedule (what the stateless search meets as the
    livelock bound)."""
    if stats.livelock is None:
        name = run.ex.tasks[tid].name
        stats.livelock = (f"{name} loops forever: its state repeats and no other thread can "
                          "run (a cycle of the state graph)")
    if "livelock" not in stats.incomplete:
        stats.incomplete.append("livelock")


def _pop(stack: list[_Node]) -> None:
    """Pop the top node: its state is explored (partially if a cycle below it
    went back above it); its summary goes to its parent's state."""
    node = stack.pop()
    ent = node.entry
    depth = len(stack)
    ent.depth = None
    ent.partial = node.low < depth
    if stack:
        parent = stack[-1]
        parent.entry.summary |= ent.summary
        if node.low < parent.low:
            parent.low = node.low


def _note_blocked(run: Execution, ent: Entry) -> None:
    """Blocked threads' pending accesses belong to the state's future too."""
    for task in run.ex.tasks:
        if task.done or task.pending is None or task.pending.is_enabled():
            continue
        for loc, w in run.pending_access(task.tid):
            ent.summary.add((task.tid, loc, w))


def _summary_races(run: Execution, stack: list[_Node], summary: set[Access]) -> int:
    """Races between the execution so far and a stored state's future."""
    if not summary or not stack:
        return 0
    by_loc: dict[Hashable, list[int]] = {}
    events = run.events
    for i, e in enumerate(events):
        for loc in e.acc:
            by_loc.setdefault(loc, []).append(i)
    conservative = 0
    done: set[tuple[int, int]] = set()
    for t, loc, w in summary:
        idx = by_loc.get(loc)
        if not idx:
            continue
        clock = run.thread_clock(t)
        for j in idx:
            e = events[j]
            if e.tid == t or (j, t) in done or not (w or e.acc[loc]):
                continue
            if clock[e.tid] >= e.seq:
                continue
            done.add((j, t))
            conservative += _add(stack[j], [t], t)
    return conservative


def explore_roots(runner: Runner, budget: Budget, stats: Stats | None = None,
                  roots: list[tuple[int, dict[int, Acc]]] | None = None,
                  collect: list[Execution] | None = None) -> Stats:
    """:func:`explore` with every runnable thread in the root's backtrack set,
    one subtree after the other, sharing one table of states."""
    stats = stats or Stats("dpor")
    roots = root_split(runner) if roots is None else roots
    table = Table()
    if not roots:
        return explore(runner, budget, stats, table=table, collect=collect)
    budget.start()
    for i, root in enumerate(roots):
        if i:
            reason = budget.exhausted(stats)
            if reason is not None:
                stats.incomplete.append(reason)
                break
        explore(runner, budget, stats, root=root, restart=False, table=table, collect=collect)
        if stopped(stats):
            break
    finish_notes(stats, table)
    stats.complete = not stats.incomplete
    stats.stop_clock()
    return stats


def finish_notes(stats: Stats, table: Table) -> None:
    conservative_note(stats)
    if table.cycles:
        stats.notes.append(f"{table.cycles} cycle(s) closed (a retry loop back to a state "
                           "still being explored)")
