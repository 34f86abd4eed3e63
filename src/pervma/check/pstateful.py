"""One stateful search spread over worker processes (``pervma check X
--jobs N`` without ``--stateless``).

The search is cut into units (:func:`pervma.check.stateful.split_units`):
the first levels of the tree are expanded fully, so each unit -- a prefix
of choices and the sleep set where the last one is taken -- is a search of
its own that never needs a backtrack point above it.  Worker processes are
forked (so every worker computes the same Python hash, hence the same state
key, for the same state) and handed the units one at a time as they fall
idle: even workers from the front of the depth-first list, odd ones from its
back, so that two workers start far apart and meet late (each explores
what the other has not finished yet twice).  When no unit is left and a
worker falls idle, the coordinator asks the busy ones for work (a flag per
worker in shared memory): at the end of its next execution a busy worker
gives away what is left at the shallowest node of its unit's search that
has something left (:func:`pervma.check.stateful._donate`: the node's
remaining threads, as a unit that takes them one after the other), which
is handed to the idle worker like any unit.  A worker keeps one table of
states over all its units; every state whose exploration it finished
(popped, not partial: its summary is complete) and below which at least
:data:`SHARE_MIN` executions ended goes straight to every other worker
through shared memory (:mod:`pervma.check.ring`, every
:data:`SHARE_EVERY` executions), and each merges what came into its table
between two executions.  An
entry already in a worker's table is kept, unless it is partial or the
incoming one was explored with a smaller sleep set (it then covers more).
Either way each entry alone is a sound stopping point, so a merge never
loses an execution that matters; what timing changes is only how much two
workers explore twice.

A run with ``--max-executions`` is not split: it is exactly
:func:`pervma.check.stateful.explore_roots` in this process, so a budget
cuts the same execution with any ``--jobs``.  The first violation any
worker finds stops every worker; its schedule runs from the initial state
(the unit's prefix included) and replays.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import pickle
import queue
import signal
import time
import traceback
from collections import deque
from typing import Any

from pervma.check import stateful
from pervma.check.dpor import conservative_note
from pervma.check.ring import Ring
from pervma.check.search import Budget, Found, Runner, Stats
from pervma.check.stateful import Entry, Table, Unit
from pervma.check.symmetry import Perm, mapping
from pervma.sched import RunScope

#: Units wanted per worker when the depth is chosen (grown until reached).
#: 4 left one unit with most of the work on spin-2f-m (depth 3: one worker
#: 5.5 s CPU, the other 1.3 s); 12 gave depth 6 there, both near 3.5 s.
#: With the units taken from both ends, 24 balances spin-3f-m (1.51 and
#: 1.48 s of CPU; 1.77 and 1.45 s with 12).
UNITS_PER_WORKER = 24
#: The deepest split tried by default.
MAX_DEPTH = 8
#: A finished state is sent to the other workers if at least this many
#: executions ended below it: one that ended in one execution is as cheap to
#: explore again as to send, merge and keep.  spin-2f-m-r: 2 halves what the
#: workers spend sharing (0.19 → 0.07 s of CPU each) for 2% more steps, and
#: its split run went 3.34 → 3.26 s; 3 was the same, 5 slower (3.50 s).
#: Through the rings, 1 explores a third as many states twice (1,220 against
#: 3,160) but doubles the encoding: the same wall time, so 2 stays.
SHARE_MIN = 2

#: Executions between two exchanges of finished states (sent, and the other
#: workers' merged).  Through shared memory (:mod:`pervma.check.ring`) an
#: exchange costs little; through queues 64 was best.
SHARE_EVERY = 8
#: Finished states per message at most, so that a message stays well within
#: a ring (a row is ~40 bytes, a new summary tens of access numbers; a longer
#: message would go in frames).
CHUNK = 256
#: Each ring's size (one per ordered pair of workers).  Messages every 8
#: executions were at most 4 KiB on the SPIN shapes.
RING_BYTES = 1 << 18

# One finished state as it travels: key, sleep set, its summary's number
# (:class:`_Encoder`), the order of its threads.
Shared = tuple[int, frozenset[int], int, Perm]


def choose_units(runner: Runner, jobs: int, depth: int | None = None) -> tuple[int, list[Unit]]:
    """The split depth and its units: ``depth`` if given, else the smallest
    depth (up to :data:`MAX_DEPTH`) giving :data:`UNITS_PER_WORKER` units per
    worker."""
    if depth is not None:
        return depth, stateful.split_units(runner, depth)
    d, units = 0, list[Unit]()
    for d, units in enumerate(stateful.split_levels(runner, MAX_DEPTH), 1):  # noqa: B007
        if len(units) >= UNITS_PER_WORKER * jobs:
            break
    return d, units


def explore(runner: Runner, budget: Budget, stats: Stats | None = None, jobs: int = 2,
            depth: int | None = None) -> Stats:
    """The stateful search of ``runner``'s scenario over ``jobs`` processes."""
    stats = stats or Stats("dpor")
    if jobs <= 1 or budget.max_executions is not None:
        return stateful.explore_roots(runner, budget, stats)
    d, units = choose_units(runner, jobs, depth)
    if len(units) <= 1:
        return stateful.explore_roots(runner, budget, stats)
    workers = min(jobs, len(units))
    co = _Coordinator(runner, budget, stats, units, workers)
    co.run()
    if stats.found is None and not stats.incomplete and _clash(co.scopes):
        # Two orders of a lock pair, each seen by another worker: the graphs
        # meet only here.  The single-process search reports it, with the
        # execution that closes the cycle and a replay of it.
        again = Stats("dpor")
        runner.scope = RunScope()
        stateful.explore_roots(runner, budget, again)
        for name in again.__dataclass_fields__:
            setattr(stats, name, getattr(again, name))
        stats.notes.append("the workers' lockdep graphs together closed a cycle none closed "
                           "alone: the search ran again in one process to report it")
        stats.stop_clock()
        return stats
    stats.notes.append(f"stateful search split {d} transitions deep into {len(units)} units "
                       f"over {workers} worker processes sharing finished states, "
                       f"{co.given} more given by a busy worker to an idle one (CPU s: "
                       + ", ".join(f"{c:.2f}" for c in co.cpu) + ")")
    stats.complete = not stats.incomplete
    stats.stop_clock()
    return stats


def _clash(scopes: list[RunScope | None]) -> bool:
    """Do the workers' scopes, added up, report what none did alone?"""
    learnt = RunScope()
    clash = False
    for scope in scopes:
        if scope is not None:
            clash |= learnt.absorb(scope)
    return clash


class _Encoder:
    """A worker's finished states as it sends them.  Summaries repeat (on
    spin-2f-m-r 45,109 states have 10,071 distinct summaries over 85
    distinct accesses), so each distinct access and each distinct summary
    travels once and later batches name them by number.  Unpickling every
    summary's tuples cost a worker of spin-2f-m-r's split run 0.12 s of
    CPU; decoding its batches now costs 0.05 s."""

    def __init__(self) -> None:
        self.accesses: dict[stateful.Access, int] = {}
        self.summaries: dict[frozenset[stateful.Access], int] = {}

    def encode(self, entries: list[tuple[int, Entry]]) -> bytes:
        accesses, summaries = self.accesses, self.summaries
        new_accesses: list[stateful.Access] = []
        new_summaries: list[list[int]] = []
        rows: list[Shared] = []
        for key, ent in entries:
            summary = frozenset(ent.summary)  # the set's own hashes: no access is hashed again
            sid = summaries.get(summary)
            if sid is None:
                ids = []
                for a in summary:
                    i = accesses.get(a)
                    if i is None:
                        i = accesses[a] = len(accesses)
                        new_accesses.append(a)
                    ids.append(i)
                sid = summaries[summary] = len(summaries)
                new_summaries.append(ids)
            rows.append((key, ent.sleep, sid, ent.order))
        return pickle.dumps((new_accesses, new_summaries, rows), pickle.HIGHEST_PROTOCOL)


class _Decoder:
    """One sender's accesses and summaries, by number, as its batches
    defined them (a sender's batches arrive in the order it sent them)."""

    def __init__(self) -> None:
        self.accesses: list[stateful.Access] = []
        self.summaries: list[frozenset[stateful.Access]] = []

    def decode(self, data: bytes) -> list[Shared]:
        new_accesses, new_summaries, rows = pickle.loads(data)
        accesses = self.accesses
        accesses.extend(new_accesses)
        self.summaries.extend(frozenset([accesses[i] for i in ids]) for ids in new_summaries)
        return rows


def _merge(table: Table, batch: list[Shared], summaries: list[frozenset[stateful.Access]]) -> None:
    """Take another worker's finished states into this worker's table
    (``summaries``: that worker's, by number)."""
    states = table.states
    for key, sleep, sid, order in batch:
        mine = states.get(key)
        if mine is not None:
            theirs: frozenset[int] | set[int] = sleep
            if mine.order != order:  # the same state, its threads walked in another order
                n = len(order if order is not None else mine.order or ())
                perm = mapping(order, mine.order, n)  # its threads -> mine's
                assert perm is not None
                theirs = {perm[t] for t in sleep}
            if not (mine.depth is None and (mine.partial or theirs < mine.sleep)):
                continue
        # shared with every entry of that summary: a revisit with a smaller
        # sleep set makes it a set of its own (stateful._explore)
        states[key] = Entry(sleep, summaries[sid], order=order)


def _worker(wid: int, runner: Runner, time_limit: float | None, inbox: Any,
            outbox: Any, outs: list[Ring], ins: list[tuple[int, Ring]], steal: Any) -> None:
    """A worker: units from ``inbox`` until told to stop; each unit's
    figures to ``outbox``; finished states to the other workers through
    ``outs`` and theirs from ``ins`` (by sender); ``steal[wid]`` set by the
    coordinator when another worker is idle (a flag, so that looking costs
    no system call)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # SIGINT is the coordinator's
    try:
        table = Table(finished=[], share_min=SHARE_MIN)
        finished = table.finished
        assert finished is not None
        known = 0  # how many of the table's keys the coordinator was told
        encoder = _Encoder()
        decoders = {sender: _Decoder() for sender, _ in ins}

        def merge() -> None:
            """The other workers' finished states sent since the last call.
            An idle worker calls it only once it has a unit to search: at
            the end of the search they would be of no use."""
            for sender, ring in ins:
                decoder = decoders[sender]
                for data in ring.get_all():
                    _merge(table, decoder.decode(data), decoder.summaries)

        def share(_: Stats | None = None) -> None:
            if finished:
                batch: list[tuple[int, Entry]] = []
                for key in finished:
                    ent = table.states.get(key)
                    if ent is not None and ent.depth is None and not ent.partial:
                        batch.append((key, ent))
                finished.clear()
                for i in range(0, len(batch), CHUNK):  # each message well within a ring
                    data = encoder.encode(batch[i:i + CHUNK])
                    for ring in outs:
                        ring.put(data)
            for ring in outs:
                ring.flush()
            merge()
            if steal[wid]:  # a worker is idle: give work at the next execution's end
                steal[wid] = 0
                table.wanted = True

        def give(unit: Unit) -> None:
            outbox.put(("units", wid, [unit]))

        table.give = give

        budget = Budget(None, time_limit, progress=share, every=SHARE_EVERY)
        budget.start()
        cpu0 = time.process_time()
        while True:
            msg = inbox.get()
            if msg[0] == "stop":
                break
            merge()
            unit: Unit = msg[1]
            st = Stats("dpor")
            stateful.explore(runner, budget, st, prefix=unit, restart=False, table=table,
                             descending=True)
            share()
            steal[wid] = 0
            table.wanted = False  # the coordinator takes "done" as the answer
            keys = list(itertools.islice(table.states, known, None))
            known = len(table.states)
            outbox.put(("done", wid, _figures(st), keys, table.revisits, table.cycles,
                        time.process_time() - cpu0))
        outbox.put(("bye", wid, runner.scope))
    except BaseException as exc:  # noqa: BLE001 - reported to the coordinator
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
        outbox.put(("error", wid, text[-1] if text else type(exc).__name__,
                    traceback.format_exc()))


def _figures(st: Stats) -> dict[str, Any]:
    return {"executions": st.executions, "pruned": st.pruned, "steps": st.steps,
            "max_depth": st.max_depth, "conservative": st.conservative, "found": st.found,
            "livelock": st.livelock, "incomplete": list(st.incomplete)}


class _Coordinator:
    """Hands units to idle workers, asks busy ones for work, adds up."""

    def __init__(self, runner: Runner, budget: Budget, stats: Stats, units: list[Unit],
                 workers: int) -> None:
        self.runner = runner
        self.budget = budget
        self.stats = stats
        self.units = units
        self.workers = workers
        self.keys: set[int] = set()
        self.revisits = [0] * workers
        self.cycles = [0] * workers
        self.cpu = [0.0] * workers  # each worker's CPU seconds, as it last said
        self.scopes: list[RunScope | None] = [None] * workers  # each worker's, at its end
        self.given = 0  # units a busy worker gave an idle one

    def run(self) -> None:
        ctx = mp.get_context("fork")
        outbox = ctx.Queue()
        inboxes = [ctx.Queue() for _ in range(self.workers)]
        n = self.workers
        rings = {(a, b): Ring(RING_BYTES, ctx) for a in range(n) for b in range(n) if a != b}
        steal = ctx.RawArray("b", n)  # per worker: give work away (written here, cleared there)
        procs = [ctx.Process(target=_worker,
                             args=(w, self.runner, self.budget.time_limit, inboxes[w], outbox,
                                   [rings[w, v] for v in range(n) if v != w],
                                   [(v, rings[v, w]) for v in range(n) if v != w], steal),
                             daemon=True)
                 for w in range(n)]
        for p in procs:
            p.start()
        try:
            self._serve(procs, inboxes, outbox, steal)
        finally:
            for q in inboxes:
                q.cancel_join_thread()
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join()
        st = self.stats
        st.states = len(self.keys)
        st.revisits = sum(self.revisits)
        conservative_note(st)
        cycles = sum(self.cycles)
        if cycles:
            st.notes.append(f"{cycles} cycle(s) closed (a retry loop back to a state "
                            "still being explored)")

    def _serve(self, procs: list[Any], inboxes: list[Any], outbox: Any, steal: Any) -> None:
        st = self.stats
        todo = deque(self.units)
        idle: list[int] = list(range(self.workers))
        busy: set[int] = set()
        asked: set[int] = set()  # busy workers asked to give work away
        alive = set(range(self.workers))

        def balance() -> None:
            """Units to idle workers; with none left, ask the busy ones to
            give some of theirs away, or, with none busy, stop everyone."""
            while idle and todo:
                w = idle.pop(0)
                inboxes[w].put(("unit", todo.popleft() if w % 2 == 0 else todo.pop()))
                busy.add(w)
            if idle and not busy:
                for w in idle:
                    inboxes[w].put(("stop",))
                idle.clear()
            elif idle:
                for v in busy - asked:
                    steal[v] = 1
                    asked.add(v)

        balance()
        while alive:
            try:
                msg = outbox.get(timeout=1.0)
            except queue.Empty:
                for w in alive:
                    code = procs[w].exitcode
                    if code is not None:
                        raise RuntimeError(f"a worker process of the stateful search died "
                                           f"(exit code {code})") from None
                continue
            kind, w = msg[0], msg[1]
            if kind == "units":
                asked.discard(w)
                todo.extend(msg[2])
                self.given += len(msg[2])
                balance()
            elif kind == "done":
                busy.discard(w)
                asked.discard(w)
                _, _, fig, keys, revisits, cycles, self.cpu[w] = msg
                self.keys.update(keys)
                self.revisits[w] = revisits
                self.cycles[w] = cycles
                self._absorb(fig)
                if st.found is not None or any(r != "livelock" for r in st.incomplete):
                    if st.found is not None and "stopped at the first violation" \
                            not in st.incomplete:
                        st.incomplete.append("stopped at the first violation")
                    return  # the others' units are of no interest any more
                idle.append(w)
                balance()
            elif kind == "bye":
                alive.discard(w)
                self.scopes[w] = msg[2]
            else:
                raise RuntimeError(f"a worker process of the stateful search failed: {msg[2]}")

    def _absorb(self, fig: dict[str, Any]) -> None:
        st = self.stats
        st.executions += fig["executions"]
        st.pruned += fig["pruned"]
        st.steps += fig["steps"]
        st.max_depth = max(st.max_depth, fig["max_depth"])
        st.conservative += fig["conservative"]
        found: Found | None = fig["found"]
        if st.found is None and found is not None:
            st.found = found
        if st.livelock is None:
            st.livelock = fig["livelock"]
        for reason in fig["incomplete"]:
            if reason != "stopped at the first violation" and reason not in st.incomplete:
                st.incomplete.append(reason)
