"""Exhaustive stateless search: Optimal-DPOR with wakeup trees.

Follows Abdulla, Aronis, Jonsson, Sagonas, "Source Sets: A Foundation for
Optimal Dynamic Partial Order Reduction" (JACM 64(4), 2017; POPL 2014),
Algorithm 2, run statelessly over the same :class:`~pervma.check.engine.Execution`
transitions, dependency and vector clocks as :mod:`pervma.check.dpor`:

* Every node of the current execution keeps a sleep set (thread -> accesses of
  the transition it took there) and a *wakeup tree*: an ordered tree of
  thread sequences still to be explored from that node.  A new execution
  replays the chosen prefix, follows the wakeup tree below the node it
  diverges at, and past a leaf continues with the default choice (stay on
  the running thread, else the lowest awake runnable one).
* After each execution, every direct race ``e < e'`` yields the sequence
  ``v = notdep(e).e'`` (the events after ``e`` that do not happen after it,
  then ``e'``).  It is inserted into the wakeup tree before ``e`` unless a
  sleeping thread is an initial of ``v`` or a leaf of the tree already
  starts it.  Following all of ``v``, not just its first thread as
  source-DPOR does, is what keeps the search out of the sleep set: on
  programs whose threads never block no execution is cut ("pruned") and
  every maximal execution is a new Mazurkiewicz trace.  Where the paper uses
  weak initials this module uses initials (see :func:`_initial`).
* Blocking is outside the paper's guarantee.  A reversal whose first thread
  cannot run before ``e`` is not reversible (``e`` enabled ``e'``) and is
  skipped (:func:`_reverse`).  A thread blocked on a lock or a condition
  never executes its pending step, so it shows up in no race: as in
  :mod:`pervma.check.dpor` (Flanagan and Godefroid's rule) its pending step
  races with the latest dependent event, here as the sequence
  ``notdep(e)`` then the blocked thread; where that cannot run, the thread
  alone (or, if it cannot run there either, every runnable thread: a
  *conservative* backtrack point) becomes a branch.  A branch found not
  runnable when the search follows it (a reversal across a lock that shows
  only deeper in ``v``) is dropped and counted in a note; the blocked rule
  covers the reversal that was meant.  Executions that still end with every
  runnable thread asleep are counted as *pruned*.

Budget, livelock bound, first-violation stop, ``want``/``collect`` and the
root split (``root``, :func:`explore_roots`) keep :mod:`pervma.check.dpor`'s
contract.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

from pervma.check import checkpoint
from pervma.check.checkpoint import Checkpoint
from pervma.check.dpor import conservative_note, run_on_future, run_roots
from pervma.check.engine import Acc, Event, Execution, dependent
from pervma.check.search import Budget, Runner, Stats, settle

__all__ = ["explore", "explore_roots"]

#: Thread and accesses of each transition of a sequence; None: not known yet
#: (a blocked thread's next transition, which may touch more than its pending step).
_Seq = list[tuple[int, Acc | None]]


def _dep(a: Acc | None, b: Acc | None) -> bool:
    """Dependent, counting an unknown transition as dependent on everything."""
    return a is None or b is None or dependent(a, b)


@dataclass(slots=True)
class _Branch:
    """An edge of a wakeup tree: thread ``tid``'s next transition, the
    accesses it had in the execution its race was seen in (None: not known),
    and the sequences that continue it."""

    tid: int
    acc: Acc | None = None
    kids: list[_Branch] = field(default_factory=list)


@dataclass(slots=True)
class _Node:
    enabled: list[int]
    prev: int | None
    preemptions: int  # preemptions before this node's choice
    sleep: dict[int, Acc]
    wut: list[_Branch]  # the wakeup tree here: the branch being explored, then the rest in order
    cur: _Branch
    event: Event | None = None
    ckpt: Checkpoint | None = None  # the execution at this node (pervma.check.checkpoint)


@dataclass(slots=True)
class _Counts:
    conservative: int = 0
    dropped: int = 0  # wakeup-tree branches found not runnable when followed
    diverged: int = 0  # pruned executions whose wakeup sequence ran differently


def explore(runner: Runner, budget: Budget, stats: Stats | None = None,
            max_preemptions: int | None = None,
            want: Callable[[Execution], bool] | None = None,
            collect: list[Execution] | None = None, collect_max: int = 1,
            root: tuple[int, dict[int, Acc]] | None = None, restart: bool = True) -> Stats:
    """Explore with Optimal-DPOR; the arguments and the result are those of
    :func:`pervma.check.dpor.explore` (``max_preemptions`` drops wakeup-tree
    branches that would exceed the bound: a heuristic, not complete)."""
    stats = stats or Stats("odpor")
    if restart:
        budget.start()
    stack: list[_Node] = []
    start = 0  # index of the first event whose races are not yet analysed
    counts = _Counts()
    ckpts = runner.checkpoints
    while True:
        run, base = checkpoint.deepest(runner, stack, ckpts)
        for node in stack[base:]:
            node.event = run.take(node.cur.tid)
        follow: list[_Branch] = stack[-1].cur.kids if stack else []
        blocked_seen: set[tuple[int, int]] = set()
        sleep_blocked = False
        diverged = False
        while True:
            enabled = run.runnable()
            if len(run.events) > start or not stack:
                _blocked_rule(run, stack, blocked_seen, counts)
            if not enabled:
                counts.dropped += len(follow)  # longer than this execution: cannot run
                follow.clear()
                break
            if stack:
                parent = stack[-1]
                pacc = parent.event.acc if parent.event else {}
                sleep = {q: a for q, a in parent.sleep.items() if not dependent(a, pacc)}
            else:
                sleep = dict(root[1]) if root is not None else {}
            cur = run.cur
            wut = follow
            branch: _Branch | None = None
            if not stack and root is not None:
                branch = _Branch(root[0])
                wut.insert(0, branch)
            while branch is None and wut:
                b = wut[0]
                if (b.tid in enabled and b.tid not in sleep
                        and _within_bound(b.tid, cur, enabled, run.preemptions, max_preemptions)):
                    branch = b
                else:
                    del wut[0]
                    counts.dropped += b.tid not in enabled
            if branch is None:
                cands = [t for t in enabled if t not in sleep]
                if not cands:
                    sleep_blocked = True
                    break
                branch = _Branch(cur if cur in cands else cands[0])
                wut.append(branch)
            node = _Node(enabled, cur, run.preemptions, sleep, wut, branch)
            if ckpts and stack and len(stack) % checkpoint.EVERY == 0:
                node.ckpt = runner.save(run)
            stack.append(node)
            node.event = run.take(branch.tid)
            diverged |= branch.acc is not None and branch.acc != node.event.acc
            follow = branch.kids
        if run.livelock is not None:  # the cut-off threads still race with what ran
            _blocked_rule(run, stack, blocked_seen, counts, everyone=True)
        for c, i in _direct_races(run.events, run.n, start):
            _reverse(run.events, stack, c, i)
        if want is not None and run.violation is not None:  # the search goes on after it
            _run_on_rule(run, stack, counts)
        if sleep_blocked:
            # its threads are abandoned when it is dropped (Execution.drop)
            stats.pruned += 1
            stats.steps += len(run.schedule)
            counts.diverged += diverged
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
        if not _next_branch(stack, root, max_preemptions, counts):
            break
        start = len(stack) - 1
        reason = budget.exhausted(stats)
        if reason is not None:
            stats.incomplete.append(reason)
            break
    stats.conservative += counts.conservative
    _count_note(stats, counts.dropped, _DROPPED)
    _count_note(stats, counts.diverged, _DIVERGED)
    if restart:
        conservative_note(stats)
    stats.complete = not stats.incomplete
    stats.stop_clock()
    return stats


_DROPPED = " wakeup-tree branch(es) dropped where they could not run (a reversal across a lock)"
_DIVERGED = (" pruned execution(s) followed a wakeup sequence whose transitions touched other "
             "locations than in the execution its race was seen in (slab reuse, wake-ups)")


def _count_note(stats: Stats, n: int, text: str) -> None:
    """Add ``n`` to the note ``<count><text>`` (one such note per run, summed
    over the root subtrees of :func:`explore_roots`)."""
    if not n:
        return
    for k, note in enumerate(stats.notes):
        if note.endswith(text):
            stats.notes[k] = f"{int(note.split()[0]) + n}{text}"
            return
    stats.notes.append(f"{n}{text}")


def _within_bound(tid: int, prev: int | None, enabled: list[int], preemptions: int,
                  bound: int | None) -> bool:
    """May ``tid`` run here under the preemption bound?"""
    return (bound is None or preemptions < bound or tid == prev
            or prev is None or prev not in enabled)


def _next_branch(stack: list[_Node], root: tuple[int, dict[int, Acc]] | None,
                 bound: int | None, counts: _Counts) -> bool:
    """Retire the explored branches at the bottom of the stack and make the
    deepest node with a branch left choose it; False when none is left."""
    while stack:
        node = stack[-1]
        assert node.event is not None
        if root is not None and len(stack) == 1:
            checkpoint.pop(stack)  # the root's other choices belong to other workers
            return False
        for k, b in enumerate(node.wut):
            if b is node.cur:
                del node.wut[k]
                break
        node.sleep[node.cur.tid] = node.event.acc
        while node.wut:
            b = node.wut[0]
            if (b.tid in node.sleep or b.tid not in node.enabled
                    or not _within_bound(b.tid, node.prev, node.enabled, node.preemptions, bound)):
                del node.wut[0]
                counts.dropped += b.tid not in node.sleep and b.tid not in node.enabled
                continue
            node.cur = b
            return True
        checkpoint.pop(stack)
    return False


def _direct_races(events: list[Event], n: int, start: int) -> Iterator[tuple[int, int]]:
    """Every direct race ``(c, i)``, ``i >= start``: dependent events of
    different threads with no happens-before path from ``c`` to ``i`` but
    the direct one (the race condition of :mod:`pervma.check.dpor`)."""
    last_write: dict[Hashable, int] = {}
    reads: dict[Hashable, list[int]] = {}
    prev_clock: list[list[int]] = [[0] * n for _ in range(n)]
    for i, e in enumerate(events):
        if i >= start:
            cands: set[int] = set()
            for loc, w in e.acc.items():
                j = last_write.get(loc)
                if j is not None:
                    cands.add(j)
                if w:
                    cands.update(reads.get(loc, ()))
            pc = prev_clock[e.tid]
            order = sorted(cands)
            for k, c in enumerate(order):
                ec = events[c]
                if ec.tid == e.tid or pc[ec.tid] >= ec.seq:
                    continue
                if any(events[c2].clock[ec.tid] >= ec.seq for c2 in order[k + 1:]):
                    continue
                yield c, i
        for loc, w in e.acc.items():
            if w:
                last_write[loc] = i
                reads[loc] = []
            else:
                reads.setdefault(loc, []).append(i)
        prev_clock[e.tid] = e.clock


def _initial(tid: int, seq: _Seq) -> bool:
    """Is thread ``tid`` an initial of ``seq``: does its first transition in
    ``seq`` depend on nothing before it, so that ``seq`` can start with it?

    The paper also counts *weak* initials (a thread absent from ``seq`` whose
    next transition is independent of all of it).  That assumes the thread's
    transition stays the same whatever independent transitions run first,
    which the engine's accesses do not guarantee: a slab allocation touches
    the object it recycles only if another thread freed it first, and a step
    counts as a write to a waiter's location only while the waiter waits.
    With weak initials ``killable-write-lock-abort`` loses 6 of source-DPOR's
    traces; with initials it loses none (``bench/odpor_bench.py``)."""
    for k, (t, a) in enumerate(seq):
        if t == tid:
            return not any(_dep(a, seq[j][1]) for j in range(k))
    return False


def _without(seq: _Seq, tid: int) -> _Seq:
    """``seq`` without thread ``tid``'s first transition."""
    for k, (t, _) in enumerate(seq):
        if t == tid:
            return seq[:k] + seq[k + 1:]
    return seq


def _insert(wut: list[_Branch], seq: _Seq) -> None:
    """Insert ``seq`` into a wakeup tree: walk down the first branch whose
    thread is an initial of what is left; stop if that branch is a leaf
    (it already starts ``seq``'s trace) or nothing is left, else hang the
    rest as a new last branch where no branch fits."""
    kids = wut
    while seq:
        for b in kids:
            if _initial(b.tid, seq):
                if not b.kids:
                    return
                seq = _without(seq, b.tid)
                kids = b.kids
                break
        else:
            for t, a in seq:
                nb = _Branch(t, a)
                kids.append(nb)
                kids = nb.kids
            return


def _initials(seq: _Seq) -> list[int]:
    """The threads whose first transition in ``seq`` depends on nothing
    before it, in order."""
    out: list[int] = []
    seen: set[int] = set()
    for k, (t, a) in enumerate(seq):
        if t in seen:
            continue
        seen.add(t)
        if not any(_dep(a, seq[j][1]) for j in range(k)):
            out.append(t)
    return out


def _reverse(events: list[Event], stack: list[_Node], c: int, i: int) -> None:
    """Race ``events[c] < events[i]``: put ``notdep(c).events[i]`` into the
    wakeup tree before ``c``.

    A thread of that sequence that cannot run before ``c`` can only be the
    thread of ``events[i]`` (any other would have been enabled by an event
    after ``c`` that it depends on, so it would happen after ``c`` and not be
    in the sequence): ``events[c]`` enabled it (the engine counts a step that
    wakes a thread as a write to what the thread waits on), the race is not
    reversible, and there is nothing to explore."""
    node = stack[c]
    t0, s0 = events[c].tid, events[c].seq
    seq: _Seq = [(f.tid, f.acc) for f in events[c + 1:i] if f.clock[t0] < s0]
    seq.append((events[i].tid, events[i].acc))
    _offer(node, seq)


def _offer(node: _Node, seq: _Seq) -> bool:
    """Insert ``seq`` into the node's wakeup tree unless a sleeping thread is
    an initial of it; False (and nothing inserted) when a thread of its that
    must run first is not runnable at the node."""
    for q in node.sleep:
        if _initial(q, seq):
            return True
    if any(t not in node.enabled for t in _initials(seq)):
        return False
    _insert(node.wut, seq)
    return True


def _has_branch(node: _Node, tid: int) -> bool:
    return any(b.tid == tid for b in node.wut)


def _everyone(node: _Node, counts: _Counts) -> None:
    """The conservative fallback: every runnable, awake thread as a branch."""
    for t in node.enabled:
        if t not in node.sleep and not _has_branch(node, t):
            node.wut.append(_Branch(t))
    counts.conservative += 1


def _blocked_rule(run: Execution, stack: list[_Node], seen: set[tuple[int, int]],
                  counts: _Counts, everyone: bool = False) -> None:
    """A disabled thread's pending step races with the latest dependent
    event (with ``everyone``, so does every unfinished thread's): its thread
    becomes a branch before that event, as in :mod:`pervma.check.dpor`."""
    events = run.events
    for task in run.ex.tasks:
        if task.done or task.pending is None or (task.pending.is_enabled() and not everyone):
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
        seq: _Seq = [(f.tid, f.acc) for f in events[j + 1:] if f.clock[ej.tid] < ej.seq]
        seq.append((task.tid, None))
        node = stack[j]
        if _offer(node, seq) or task.tid in node.sleep or _has_branch(node, task.tid):
            continue
        # Not runnable in that order: source-DPOR's rule.
        if task.tid in node.enabled:
            node.wut.append(_Branch(task.tid))
        else:
            _everyone(node, counts)


def _run_on_rule(run: Execution, stack: list[_Node], counts: _Counts) -> None:
    """A search that goes on after a violation: what the other threads do
    when run on past it (:func:`pervma.check.dpor.run_on_future`) races with
    every dependent event before the violation that is not already before
    it; each such thread becomes a one-thread branch there (source-DPOR's
    rule, as :func:`pervma.check.dpor.run_on_races` applies it)."""
    got = run_on_future(run)
    if got is None:
        return
    n, clocks, future = got
    events = run.events
    done: set[tuple[int, int]] = set()
    for t, loc, w in sorted(future, key=repr):
        clock = clocks[t]
        for j in range(n):
            e = events[j]
            w2 = e.acc.get(loc)
            if w2 is None or e.tid == t or (j, t) in done or not (w or w2):
                continue
            if clock[e.tid] >= e.seq:
                continue
            done.add((j, t))
            node = stack[j]
            if t in node.sleep or _has_branch(node, t):
                continue
            if t in node.enabled:
                node.wut.append(_Branch(t))
            else:
                _everyone(node, counts)


def explore_roots(runner: Runner, budget: Budget, stats: Stats | None = None,
                  roots: list[tuple[int, dict[int, Acc]]] | None = None) -> Stats:
    """:func:`explore` with every runnable thread a one-thread branch of the
    root's wakeup tree: the subtrees of :func:`pervma.check.dpor.root_split`
    in order, sharing one budget and stopping at the first violation (the
    contract of :func:`pervma.check.dpor.explore_roots`)."""
    return run_roots(explore, runner, budget, stats or Stats("odpor"), roots)
