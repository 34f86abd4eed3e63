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
  set is contained in its own sleep set; otherwise only the threads asleep at
  every earlier visit are explored from it (Godefroid's rule): the other
  threads' transitions were explored, or left out by the reduction, at an
  earlier visit, and their futures are in the stored summary, raced against
  the execution as at a stop.  They are not chosen there again (``_Node.done``)
  but not put to sleep below it: what they do after a newly awake thread was
  asleep at the earlier visits too.
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

* **Symmetry** (:mod:`pervma.check.symmetry`).  With groups of
  interchangeable threads, a state is keyed with each group's threads in a
  canonical order, and a stored state may be a permutation of the one
  reached: its sleep set and summary are renamed into the current
  execution's threads before they are compared or raced (each entry keeps
  the order it was stored with; each node the renaming of its entry).

The guarantee is that of the stateless search: every reachable violation
(assertion, lockdep, KASAN, deadlock, ``validate_mm`` at the end) and every
reachable final state is reached by some explored execution.  Livelock is
different: a retry loop that comes back to the same state is a cycle, which
this search closes instead of running into the livelock bound, and reports
only when no other thread could ever break it.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pervma.check import checkpoint
from pervma.check.checkpoint import Checkpoint
from pervma.check.checkpoint import restart as resume_at
from pervma.check.dpor import (
    Access,
    _blocked_rule,
    _races,
    conservative_note,
    run_on_races,
    run_roots,
    summary_races,
)
from pervma.check.engine import Acc, Event, Execution, dependent
from pervma.check.search import Budget, Runner, Stats, settle
from pervma.check.symmetry import (
    Perm,
    canonical,
    compose,
    inverse,
    map_accesses,
    mapping,
    task_idents,
)

# A unit of a split search: the choices from the initial state (the last one
# taken at the unit's own node), the sleep set at that node, and the further
# choices to take there, one after the other, once the first one's subtree is
# explored (a unit one worker gave another: see _donate).
Unit = tuple[tuple[int, ...], dict[int, Acc], tuple[int, ...]]


@dataclass(slots=True)
class Entry:
    """What the table keeps of an explored state."""

    sleep: frozenset[int]
    # Grows while the state is explored; a frozenset shared by entries when
    # another worker of a split search explored it (pstateful._merge), made a
    # set of its own if this worker explores the state further.
    summary: set[Access] | frozenset[Access] = field(default_factory=set)
    depth: int | None = None  # index of its node on the DFS stack while being explored
    partial: bool = False  # its summary lacks a cycle's future: never stop here
    # The order its threads were walked in when it was stored (symmetry.canonical):
    # its sleep set and summary name the threads of that execution.
    order: Perm = None


@dataclass(slots=True)
class _Node:
    enabled: list[int]
    prev: int | None
    preemptions: int
    sleep: dict[int, Acc]
    backtrack: set[int]
    chosen: int
    entry: Entry
    key: int = 0
    # This execution's threads to its entry's (symmetry.mapping; None: the same)
    to_ent: Perm = None
    event: Event | None = None
    low: int = 1 << 30  # the shallowest stack index a cycle below this node went back to
    # A stored state visited again with a smaller sleep set: the threads an
    # earlier visit explored from it (Godefroid's rule), never chosen here and
    # never put to sleep below it.
    done: frozenset[int] = frozenset()
    ckpt: Checkpoint | None = None  # the execution at this node (pervma.check.checkpoint)
    # Under LKMM: the weak read the chosen thread's transition made here, as
    # (thread, n, number of writes it may read), the one being explored, and
    # the accesses of the ones explored before it.
    choice: tuple[int, int, int] | None = None
    variant: int = 0
    vacc: Acc | None = None
    born: int = 0  # the table's ``runs`` when it was pushed


@dataclass(slots=True)
class Table:
    """The explored states of one search (shared by the root subtrees)."""

    states: dict[int, Entry] = field(default_factory=dict)
    revisits: int = 0
    cycles: int = 0
    # When a list: the key of every state whose exploration finished (not
    # partial), in the order it finished; what a split search shares.
    finished: list[int] | None = None
    runs: int = 0  # executions ended (run to their end or cut) so far
    share_min: int = 0  # a state goes to ``finished`` if this many executions ended below it
    # Another worker is idle (set by the split search's worker): the next
    # time an execution ends, what is left at the unit's shallowest open node
    # goes to ``give`` as a unit of its own (_donate).
    wanted: bool = False
    give: Callable[[Unit], None] | None = None


def explore(runner: Runner, budget: Budget, stats: Stats | None = None,
            root: tuple[int, dict[int, Acc]] | None = None, restart: bool = True,
            table: Table | None = None, collect: list[Execution] | None = None,
            prefix: Unit | None = None, descending: bool = True) -> Stats:
    """Explore statefully; ``root`` and ``restart`` as in
    :func:`pervma.check.dpor.explore`, ``table`` shared between subtrees.
    With ``collect``, every violating execution goes there and the search
    goes on (a violating state is a leaf: nothing is explored after it).

    With ``prefix`` (a unit of :func:`split_units`) the unit's choices are
    replayed as fixed nodes: the search never backtracks into them (the
    split expanded them fully, so a backtrack point found there is already
    some other unit's), their states stay out of the table (only one branch
    below them is explored here), and the search stops when it is back at
    the unit's last node.

    ``descending`` (the default) takes a new node's first thread and the
    next backtrack choice from the highest thread id down (the running
    thread still goes first); False, from the lowest up.  Any order is
    sound.  The order decides how much sleep sets and stored states prune:
    descending stores 10-21% fewer states on the SPIN shapes (3F+M+R
    441,102 → 346,547) and is within 2% of ascending on the scenario
    library (README, "Stateful search").  Both workers of a split search
    take it too: they start far apart (``pstateful``: units from both ends
    of the list), and the ascending order's larger state space cost the one
    that took it 27% more states on 3F+M+R."""
    with _fewer_collections():
        return _explore(runner, budget, stats, root, restart, table, collect, prefix,
                        descending)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Less of the cyclic garbage collector for the length of a search.

    * Its youngest generation is collected every 50,000 allocations instead
      of 700: a restore copies an execution (hundreds of containers), so the
      default threshold ran a collection at almost every execution (measured
      on spin-2f-m-r: 4% of the search's time).  Dropped executions are
      broken up (``Execution.drop``), so little is left for it to find.
    * What survives a collection is frozen (``gc.freeze``): it is mostly
      the table of stored states, which only grows, and the collections of
      the older generations walked all of it again and again (3F+M+R: 2.9 s
      of the collector's 4.1 s; 1.2 s in all with this).  Frozen objects go
      back at the end of the search (``gc.unfreeze``), so the little garbage
      frozen with them (cycles the running execution's own steps made) is
      collected then."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 50_000), *old[1:])

    def freeze_survivors(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            gc.freeze()

    gc.callbacks.append(freeze_survivors)
    try:
        yield
    finally:
        gc.callbacks.remove(freeze_survivors)
        gc.set_threshold(*old)
        gc.unfreeze()


def _explore(runner: Runner, budget: Budget, stats: Stats | None, root: tuple[int, dict[int, Acc]] | None,
             restart: bool, table: Table | None, collect: list[Execution] | None,
             prefix: Unit | None, descending: bool) -> Stats:
    pick = max if descending else min
    stats = stats or Stats("dpor")
    table = table if table is not None else Table()
    states = table.states
    assert root is None or prefix is None, "a root subtree or a unit, not both"
    fixed_choices = prefix[0] if prefix is not None else ()
    nfixed = len(fixed_choices)
    further = list(prefix[2]) if prefix is not None else []  # the unit's node's further choices
    fixed: dict[int, Entry] = {}  # the prefix's states while on the stack
    if restart:
        budget.start()
    stack: list[_Node] = []
    start = 0
    conservative = 0
    ckpts = runner.checkpoints
    # Under LKMM the search branches on every weak read's choice of write
    # (see pervma.check.lkmm): the plan holds the choices of the nodes on the
    # stack, which the memory layer of every execution follows.
    plan = runner.plan if runner.memory is not None and runner.branch_weak else None
    variants = 0
    groups: tuple[tuple[int, ...], ...] | None = None
    idents: tuple[int | None, ...] = ()
    while True:
        run = resume_at(runner, stack, ckpts)
        if groups is None:  # known once the runner built an instance
            groups = runner.symmetry
            idents = task_idents(run.ex.tasks) if groups else ()
        if plan is not None and stack:
            stack[-1].choice = _choice(run, stack[-1].event)
        blocked_seen: set[tuple[int, int]] = set()
        cut: str | None = None
        while True:
            enabled = run.runnable()
            if len(run.events) > start or not stack:
                conservative += _blocked_rule(run, stack, blocked_seen)
            if run.violation is not None or run.livelock is not None:
                break
            if prefix is not None and len(stack) == nfixed - 1:
                sleep = dict(prefix[1])
            elif stack:
                parent = stack[-1]
                pacc = parent.event.acc if parent.event else {}
                sleep = {q: a for q, a in parent.sleep.items() if not dependent(a, pacc)}
            else:
                sleep = dict(root[1]) if root is not None else {}
            done: frozenset[int] = frozenset()
            key, order = canonical(run.ex.tasks, groups)
            if run.ex.memory is not None:  # under LKMM the memory layer is state too
                key = hash((key, run.ex.memory.key()))
            ent = fixed.get(key)
            if ent is None or ent.depth is None:
                ent = states.get(key)
            to_ent: Perm = None
            if ent is not None:
                to_ent = mapping(order, ent.order, len(run.ex.tasks))
            if not stack and root is not None:  # the split point: each subtree starts here
                if ent is None:
                    ent = states[key] = Entry(frozenset(), order=order)
            elif ent is None and len(stack) < nfixed:  # a node of the unit's prefix
                ent = fixed[key] = Entry(frozenset(sleep), order=order)
            elif ent is None:
                ent = Entry(frozenset(sleep), order=order)
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
            elif not ent.partial and ent.sleep <= _perm_keys(sleep, to_ent):
                table.revisits += 1
                future = ent.summary
                if to_ent is not None:  # a permutation of it: its future, permuted
                    future = map_accesses(future, inverse(to_ent), idents)
                conservative += summary_races(run, stack, future)
                if stack:
                    _add_summary(stack[-1], future, idents)
                cut = "stored"
                break
            elif len(stack) < nfixed:  # a prefix node: its stored entry is left as it is
                ent = fixed[key] = Entry(frozenset(sleep), order=order)
                to_ent = None
            elif not ent.partial:
                # Visited again with a smaller sleep set: only the threads asleep at
                # every earlier visit are new here; the others' futures are the
                # stored summary, raced against this execution as at a stop.
                if type(ent.summary) is frozenset:  # another worker's (pstateful._merge)
                    ent.summary = set(ent.summary)  # grows from here on
                asleep = _perm_keys(sleep, to_ent)
                fresh = ent.sleep - asleep  # the entry's names
                if to_ent is not None:
                    back = inverse(to_ent)
                    fresh = frozenset(back[t] for t in fresh)  # type: ignore[index]
                done = frozenset(t for t in enabled if t not in sleep and t not in fresh)
                ent.sleep = ent.sleep & asleep
                future = ent.summary
                if to_ent is not None:
                    future = map_accesses(future, inverse(to_ent), idents)
                conservative += summary_races(run, stack, future)
            else:
                ent.sleep = ent.sleep & _perm_keys(sleep, to_ent)
            ent.depth = len(stack)
            _note_blocked(run, ent, to_ent, idents)
            if not enabled:
                ent.depth = None
                break
            cands = [t for t in enabled if t not in sleep and t not in done]
            if not cands:
                ent.depth = None
                cut = "sleep" if not done else "stored"
                if done and stack:
                    _add_summary(stack[-1], future, idents)
                break
            cur = run.cur
            choice = cur if cur in cands else pick(cands)
            if not stack and root is not None:
                choice = root[0]
            elif len(stack) < nfixed:
                choice = fixed_choices[len(stack)]
                assert choice in cands, "a unit's choice must be runnable and awake"
            node = _Node(enabled, cur, run.preemptions, sleep, {choice}, choice, ent, key, to_ent,
                         done=done)
            node.born = table.runs
            if ckpts and len(stack) and len(stack) % checkpoint.EVERY == 0:
                node.ckpt = runner.save(run)
            stack.append(node)
            node.event = run.take(choice)
            if plan is not None:
                node.choice = _choice(run, node.event)
        if run.livelock is not None:
            conservative += _blocked_rule(run, stack, blocked_seen, everyone=True)
        conservative += _races(run, stack, start)
        if collect is not None and run.violation is not None:  # the search goes on after it
            more, future = run_on_races(run, stack)
            conservative += more
            if stack:
                _add_summary(stack[-1], future, idents)
        if cut is not None:
            # its threads are abandoned when it is dropped (Execution.drop)
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
        table.runs += 1
        budget.tick(stats)
        if table.wanted and nfixed and plan is None and table.give is not None:
            unit = _donate(stack, nfixed, further)
            if unit is not None:
                table.wanted = False
                table.give(unit)
        if stats.found is not None:
            stats.incomplete.append("stopped at the first violation")
            break
        if run.violation is None:  # else kept (collect) or reported
            run.drop()
        nxt = None
        while stack:
            node = stack[-1]
            assert node.event is not None
            ev = node.event
            ent = node.entry
            if node.to_ent is None:
                for loc, w in ev.acc.items():
                    ent.summary.add((ev.tid, loc, w))
            else:
                _add_summary(node, [(ev.tid, loc, w) for loc, w in ev.acc.items()], idents)
            acc = ev.acc
            if plan is not None and node.choice is not None:
                acc = _union(node.vacc, acc)
                tid, n, count = node.choice
                if node.variant + 1 < count:  # the same thread reads the next older write
                    node.vacc = acc
                    node.variant += 1
                    plan[(tid, n)] = node.variant
                    node.event = None  # taken afresh: its steps may differ
                    nxt = node.chosen
                    variants += 1
                    break
                plan.pop((tid, n), None)
                node.choice, node.variant, node.vacc = None, 0, None
            if root is not None and len(stack) == 1:
                _pop(stack, table, idents)
                break
            if len(stack) == nfixed and further:  # the unit's node: its next choice
                node.sleep[node.chosen] = acc
                nxt = further.pop(0)
                break
            if len(stack) <= nfixed:  # back in the prefix: the unit is done
                for fixed_node in stack:
                    fixed_node.entry.depth = None
                stack.clear()
                break
            node.sleep[node.chosen] = acc  # every choice of its weak read was explored
            todo = [t for t in node.backtrack if t not in node.sleep and t not in node.done]
            if todo:
                nxt = node.prev if node.prev in todo else pick(todo)
                break
            _pop(stack, table, idents)
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
    stats.variants += variants
    stats.states = len(states)
    stats.revisits = table.revisits
    if restart:
        finish_notes(stats, table)
    stats.complete = not stats.incomplete
    stats.stop_clock()
    return stats


def _choice(run: Execution, ev: Event | None) -> tuple[int, int, int] | None:
    """The weak read with a choice that the transition ``ev`` (the last one
    taken) made, as (thread, n, number of choices); None if it made none."""
    last = run.ex.memory.last_choice if run.ex.memory is not None else None
    if ev is None or last is None or last[0] < len(run.schedule) - ev.nsteps:
        return None
    return last[1], last[2], last[3]


def _union(a: Acc | None, b: Acc) -> Acc:
    """Accesses of either transition (a write if either writes)."""
    if not a:
        return b
    out = dict(a)
    for loc, w in b.items():
        out[loc] = out.get(loc, False) or w
    return out


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


def _pop(stack: list[_Node], table: Table, idents: tuple[int | None, ...] = ()) -> None:
    """Pop the top node: its state is explored (partially if a cycle below it
    went back above it); its summary goes to its parent's state."""
    node = checkpoint.pop(stack)
    ent = node.entry
    depth = len(stack)
    ent.depth = None
    ent.partial = node.low < depth
    if table.finished is not None and not ent.partial \
            and table.runs - node.born >= table.share_min:
        table.finished.append(node.key)
    if stack:
        parent = stack[-1]
        perm = compose(inverse(node.to_ent), parent.to_ent)  # node's entry -> parent's entry
        if perm is None:
            parent.entry.summary |= ent.summary
        else:
            parent.entry.summary |= map_accesses(ent.summary, perm, idents)
        if node.low < parent.low:
            parent.low = node.low


def _donate(stack: list[_Node], nfixed: int, further: list[int]) -> Unit | None:
    """Give away what is left at the shallowest node of a unit's search that
    has something left, as a unit for an idle worker (work stealing), or
    None if nothing is left.

    The unit's own node first (``further``: its choices not taken yet), then
    the search's nodes from the top of the prefix down: at a node, every
    runnable thread that is not asleep, not ``done`` and not the one being
    explored, whether DPOR asked for it yet or not.  The node then gives
    nothing more: those threads join its ``done`` set, and a race found
    later adds nothing to do there.  The nodes above it had nothing left,
    so they are fully expanded too, as a unit's prefix must be
    (:func:`split_units`): a race the receiver finds with them needs no
    backtrack point there.  The sleep set the unit starts with is the node's
    own plus the thread being explored (its subtree is this worker's), so
    the node's branches are explored in the order [earlier ones, this one,
    the given ones], as one search would.  The node's state and those above
    it are marked partial (their summaries now lack the given branches):
    never a stopping point, never shared."""
    for i in range(nfixed - 1, len(stack)):
        node = stack[i]
        assert node.event is not None, "an execution just ended: every node on its path took a step"
        if i == nfixed - 1:
            rest = list(further)
            further.clear()
        else:
            rest = [t for t in node.enabled if t != node.chosen and t not in node.sleep
                    and t not in node.done]
            rest.sort(reverse=True)
        if not rest:
            continue
        if i >= nfixed:
            node.done = node.done | frozenset(rest)
            node.low = -1  # partial, and every node above it in the unit
        sleep = dict(node.sleep)
        sleep[node.chosen] = node.event.acc
        path = tuple(n.chosen for n in stack[:i]) + (rest[0],)
        return path, sleep, tuple(rest[1:])
    return None


def _perm_keys(sleep: dict[int, Acc], perm: Perm) -> set[int] | Any:
    """The threads of a sleep set, renamed by ``perm``."""
    if perm is None:
        return sleep.keys()
    return {perm[t] for t in sleep}


def _add_summary(node: _Node, accesses: Any, idents: tuple[int | None, ...]) -> None:
    """Accesses of this execution's threads into ``node``'s entry (named as
    its threads are)."""
    if node.to_ent is None:
        node.entry.summary |= accesses if isinstance(accesses, (set, frozenset)) \
            else set(accesses)
    else:
        node.entry.summary |= map_accesses(accesses, node.to_ent, idents)


def _note_blocked(run: Execution, ent: Entry, to_ent: Perm = None,
                  idents: tuple[int | None, ...] = ()) -> None:
    """Blocked threads' pending accesses belong to the state's future too."""
    found = []
    for task in run.ex.tasks:
        if task.done or task.pending is None or task.pending.is_enabled():
            continue
        for loc, w in run.pending_access(task.tid):
            found.append((task.tid, loc, w))
    if found:
        ent.summary |= map_accesses(found, to_ent, idents)


def explore_roots(runner: Runner, budget: Budget, stats: Stats | None = None,
                  roots: list[tuple[int, dict[int, Acc]]] | None = None,
                  collect: list[Execution] | None = None) -> Stats:
    """:func:`explore` with every runnable thread in the root's backtrack set,
    one subtree after the other (:func:`pervma.check.dpor.run_roots`),
    sharing one table of states."""
    table = Table()
    search = functools.partial(explore, table=table, collect=collect)
    stats = run_roots(search, runner, budget, stats or Stats("dpor"), roots)
    cycles_note(stats, table)
    return stats


def split_units(runner: Runner, depth: int) -> list[Unit]:
    """The units of a split search: the tree of the first ``depth``
    transitions, every node fully expanded (each runnable thread that is not
    asleep), with sleep sets as :func:`explore` keeps them (a node's later
    children have the earlier children's first transitions asleep; a sleep
    set passes to a child for the transitions independent of the child's).

    Because no choice in those levels is left to DPOR's backtrack sets, a
    race found below a unit never asks for a backtrack point above it: the
    units are independent searches that, run one after the other with one
    table, explore what :func:`explore_roots` explores, and more.  A node
    where the execution ends (a violation, no runnable thread, every thread
    asleep) or whose state repeats one on its path (a cycle) is a unit of
    its own, shorter than ``depth``.  Units come in depth-first order."""
    units: list[Unit] = []
    for units in split_levels(runner, depth):  # noqa: B007 - the deepest level is the split
        pass
    return units


# What a split keeps of a node: None if the execution ends there (a
# violation, no runnable thread awake, a state repeating one on its path),
# else the threads to expand it by, its sleep set and the keys of the states
# on its path up to and including its own.
_ToGrow = tuple[list[int], dict[int, Acc], tuple[int, ...]]


def split_levels(runner: Runner, max_depth: int) -> Iterator[list[Unit]]:
    """The units of :func:`split_units` for depth 1, 2, ... ``max_depth``,
    one level after the other (stopping early once no unit can go deeper),
    each level grown from the one before: choosing a depth by the number of
    units (``pstateful.choose_units``) costs one split, not one per depth.
    Each child is a fresh instance that takes its path: checkpoints cost
    more than these short replays (spin-3f-m-r's depth-8 split took 0.85 s
    with a checkpoint per node, 0.27 s without; 0.47 s as the recursion that
    grew each depth from the initial state)."""
    leaves: list[tuple[Unit, _ToGrow | None]] = [
        (((), {}, ()), _grow_at(runner, runner.execution(), {}, ()))]
    for _ in range(max_depth):
        grown: list[tuple[Unit, _ToGrow | None]] = []
        for unit, node in leaves:
            if node is None:
                grown.append((unit, None))
                continue
            path = unit[0]
            cands, sleep, seen = node
            asleep = dict(sleep)
            for t in cands:
                child = runner.execution()
                for c in path:
                    child.take(c)
                acc = child.take(t).acc
                inner = {q: a for q, a in asleep.items() if not dependent(a, acc)}
                grown.append(((path + (t,), dict(asleep), ()), _grow_at(runner, child, inner, seen)))
                asleep[t] = dict(acc)
        leaves = grown
        yield [unit for unit, _ in leaves]
        if all(node is None for _, node in leaves):
            return


def _grow_at(runner: Runner, run: Execution, sleep: dict[int, Acc],
             seen: tuple[int, ...]) -> _ToGrow | None:
    """What :func:`split_levels` keeps of the node ``run`` has reached, with
    ``sleep`` its sleep set and ``seen`` the keys of the states above it;
    the execution is dropped."""
    enabled = run.runnable()
    key, _ = canonical(run.ex.tasks, runner.symmetry)
    ended = run.violation is not None or run.livelock is not None
    run.drop()
    cands = [t for t in enabled if t not in sleep]
    if ended or not cands or key in seen:
        return None
    return cands, sleep, seen + (key,)


def finish_notes(stats: Stats, table: Table) -> None:
    conservative_note(stats)
    cycles_note(stats, table)


def cycles_note(stats: Stats, table: Table) -> None:
    """The note on cycles closed (once per run)."""
    note = f"{table.cycles} cycle(s) closed (a retry loop back to a state still being explored)"
    if table.cycles and note not in stats.notes:
        stats.notes.append(note)
