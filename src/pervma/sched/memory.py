"""The memory layer: which write a read of a *weak location* reads.

Under sequential consistency (every driver's default) a read returns what
the model object holds: the latest write.  Under the Linux-kernel memory
model a read of some locations may return an older write.  This module keeps,
per execution and outside every model object (the state key walks model
objects; nothing here is reachable from them), the write history of the
named weak locations and each thread's *view*: the oldest write of each weak
location the thread may still read.  A driver that explores under LKMM gives
an :class:`Executor` a :class:`Memory`; without one nothing here runs.

Model code reads a weak location through one primitive, :class:`load`
(``value = await load(op, get, obj)``: the step ``op``, and how to read the
location's current value off the model object), and writes one through
:class:`store` (the same, for a write step: the value is taken once the
step's code has run).  Under SC ``load`` returns ``get(obj)`` after the step,
exactly what the site read before.

The views follow the orderings the steps declare (``Op.order``,
:mod:`pervma.sched.order`), as a view-based operational semantics of
release/acquire with fences (in the spirit of Kang et al.'s promising
semantics without promises, and of the view machines of Abdulla et al.'s
SMC for RC11):

* a read may read any write of its location not older than the thread's
  view of it; an acquiring read (acquire, a fully ordered RMW, a lock, and
  -- stronger than LKMM -- rcu_dereference() and a control dependency)
  raises the thread's view to the view the write carries; a relaxed read
  keeps that view pending until an ``smp_rmb()``/``smp_mb()`` applies it;
* a write carries a view: the writer's whole view for a release
  (cumulative, as LKMM's release), for a write after ``smp_wmb()``/``smp_mb()``
  the view at that fence (stronger than LKMM's wmb, which orders stores
  only); an RMW also carries on the view of the write it replaced (release
  sequences);
* accesses to every other location are sequentially consistent: a read
  reads the latest write and always acquires the view it carries (the
  writer's whole view after a releasing write, its view at its last
  wmb/mb otherwise); ``synchronize_rcu()`` joins every thread's view
  (stronger than RCU's grace period);
* read-modify-writes and waits read the latest write; an RMW acquires by
  its order like a read (a relaxed one, as ``refcount_inc_not_zero()`` with
  its acquire taken away, keeps the view pending); a plain step on a weak
  location made without :class:`load` reads the latest write and leaves the
  view alone (the VMA's location stands for all its fields, of which only
  ``load`` sites read the ones its value holds);
* an object's fields initialised before it is published
  (:func:`init_store`, a reused SLAB_TYPESAFE_BY_RCU VMA given its range,
  flags and mm) are plain writes of the publishing thread's transition,
  appended after the previous life's, so a reader whose view of them is
  older still reads the previous life unless a release and an acquire order
  them;
* a read's choices are the distinct values it may read, each from the
  newest write that left it (the newest value: the latest write).

Every choice is allowed by these rules, which are stronger than LKMM's
wherever they differ; a driver confirms a reported execution with the
LKMM axioms themselves (``pervma.litmus.graph.check_graph``).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass, field
from typing import Any

from pervma.sched.ops import Op, OpKind
from pervma.sched.order import Order
from pervma.sched.task import _current

View = dict[Hashable, int]
Getter = Callable[[Any], Any]

#: Orders whose read raises the reader's view at once (an acquire, or
#: something pervma treats as at least as strong).
_ACQUIRING = frozenset({Order.ACQUIRE, Order.FULL, Order.LOCK_ACQUIRE, Order.LOCKED,
                        Order.RCU_DEREFERENCE, Order.CTRL, Order.RELEASE_ACQUIRE})
#: Orders whose write carries the writer's whole view (a release, cumulative).
_RELEASING = frozenset({Order.RELEASE, Order.FULL, Order.RCU_ASSIGN, Order.LOCK_RELEASE,
                        Order.LOCKED, Order.RELEASE_ACQUIRE})
#: A fence before the access that applies pending views (rmb, mb).
_FENCE_BEFORE_R = frozenset({Order.RMB_ONCE, Order.MB_ONCE})
#: A fence before the access that orders earlier stores (wmb, mb).
_FENCE_BEFORE_W = frozenset({Order.WMB_ONCE, Order.MB_ONCE})
#: A fence after the access: rmb applies pending views, wmb snapshots.
_FENCE_AFTER_R = frozenset({Order.ONCE_RMB, Order.RELEASE_ACQUIRE})
_FENCE_AFTER_W = frozenset({Order.ONCE_WMB})
_READS = (OpKind.READ, OpKind.BLOCK, OpKind.RMW, OpKind.ACQUIRE)
_WRITES = (OpKind.WRITE, OpKind.RMW, OpKind.ACQUIRE, OpKind.RELEASE)


@dataclass(slots=True)
class Message:
    """One write to a weak location: its timestamp (coherence order), the
    value it left (None: not known, read it off the object), the step that
    made it (thread, label, index in the execution; -1 for the value the
    location had when the execution first met it) and the view it carries."""

    ts: int
    value: Any
    tid: int
    label: str
    step: int
    order: Order
    view: View = field(default_factory=dict)


@dataclass(slots=True)
class ReadRecord:
    """What one weak read read: ``msg``, while the latest write was ``latest``."""

    step: int
    tid: int
    label: str
    loc: Hashable
    order: Order
    msg: Message
    latest: Message
    choices: int


def _join(into: View, other: View) -> None:
    for k, v in other.items():
        if into.get(k, -1) < v:
            into[k] = v


class Memory:
    """The write histories and views of one execution.

    ``weak`` names the location kinds (a location's first element) whose
    reads may read an older write.  ``plan`` fixes the choice at each
    *choice point* (a weak read with more than one write to read), by
    (thread, its n-th choice point): how many writes older than the newest
    allowed one it reads (0 when absent: the newest, as under SC, is always
    allowed, so an empty plan is the SC execution).  Every choice point met
    goes to ``seen`` as (thread, n, number of choices), for the driver that
    enumerates plans.

    Views belong to CPUs: on SMP every thread runs on a CPU of its own; with
    ``one_cpu`` all threads share the one CPU's view, which every write
    raises, so every read reads the latest write (SC, as on a uniprocessor).
    """

    def __init__(self, weak: frozenset[str], plan: dict[tuple[int, int], int] | None = None,
                 seen: set[tuple[int, int, int]] | None = None, one_cpu: bool = False) -> None:
        self.weak = weak
        self.one_cpu = one_cpu
        self.plan = plan if plan is not None else {}  # the search may change it between runs
        self.seen = seen
        # The last choice point met: (step index, thread, n, number of choices),
        # for a search that branches on the choice (check/stateful.py).
        self.last_choice: tuple[int, int, int, int] | None = None
        self.hist: dict[Hashable, list[Message]] = {}
        self.getters: dict[Hashable, tuple[Getter, Any]] = {}
        self.loading: dict[int, Op] = {}  # the step a thread's ``load`` is about to take
        self.storing: dict[int, Op] = {}  # the step a thread's ``store`` is about to take
        self.tracked: set[int] = set()  # the steps taken by ``load`` or ``store``
        self._stores = False
        self.cur: dict[int, View] = {}
        self.acq: dict[int, View] = {}
        self.wmb: dict[int, View] = {}
        self.sync: dict[Hashable, View] = {}
        self.pending: dict[int, list[Any]] = {}
        # Initialising writes a thread made since its last step (init_store).
        self.inits: dict[int, list[tuple[Hashable, Getter, Any]]] = {}
        self.nchoice: dict[int, int] = {}
        self.reads: list[ReadRecord] = []
        self.steps = 0
        self._ts = 0

    # -- what the executor calls around each step ---------------------------
    def is_weak(self, loc: Hashable) -> bool:
        return isinstance(loc, tuple) and bool(loc) and loc[0] in self.weak

    def before(self, tid: int, op: Op) -> None:
        """Thread ``tid`` is about to take ``op``: choose what its weak reads read."""
        cpu = 0 if self.one_cpu else tid
        cur = self.cur.setdefault(cpu, {})
        order = op.order
        # popped here: by after() the thread has set its next step's entry
        self._stores = self.storing.pop(tid, None) is op
        if order in _FENCE_BEFORE_R:
            _join(cur, self.acq.get(cpu, {}))
        if order in _FENCE_BEFORE_W:
            self.wmb[cpu] = dict(cur)
        if order is Order.SYNC_RCU:
            everyone: View = {}
            for v in self.cur.values():
                _join(everyone, v)
            for v in self.cur.values():
                _join(v, everyone)
        kind = op.kind
        for loc in (op.loc, op.also):
            if loc is not None and self.is_weak(loc):
                self._history(loc)
        if kind not in _READS:
            return
        values: list[Any] = []
        loads = self.loading.pop(tid, None) is op
        if loads:
            self.tracked.add(self.steps)
        for loc in (op.loc, op.also):
            if loc is None:
                continue
            if not self.is_weak(loc):
                view = self.sync.get(loc)
                if view:
                    _join(cur, view)
                continue
            hist = self.hist[loc]
            latest = hist[-1]
            if not loads and kind is OpKind.READ:
                # A read made without ``load`` reads the latest write and
                # leaves the view alone: the VMA's location stands for all its
                # fields, and only ``load`` sites read the ones its value holds.
                if order in _ACQUIRING:
                    _join(cur, latest.view)
                continue
            low = cur.get(loc, -1)
            allowed = [m for m in hist if m.ts >= low and m.value is not None] if (
                kind is OpKind.READ) else [latest]
            if not allowed or allowed[-1] is not latest:
                allowed.append(latest)
            if len(allowed) > 1:  # one choice per value: the newest write that left it
                newest = {m.value: m for m in allowed}
                newest[latest.value] = latest
                allowed = sorted(newest.values(), key=lambda m: m.ts)
            msg = latest
            if len(allowed) > 1:
                n = self.nchoice.get(tid, 0)
                self.nchoice[tid] = n + 1
                if self.seen is not None:
                    self.seen.add((tid, n, len(allowed)))
                self.last_choice = (self.steps, tid, n, len(allowed))
                back = min(self.plan.get((tid, n), 0), len(allowed) - 1)
                msg = allowed[-1 - back]
            if loads:
                self.reads.append(ReadRecord(self.steps, tid, op.label, loc, order, msg, latest,
                                             len(allowed)))
            cur[loc] = max(cur.get(loc, -1), msg.ts)
            if order in _ACQUIRING or kind is not OpKind.READ and kind is not OpKind.RMW:
                _join(cur, msg.view)
            else:
                _join(self.acq.setdefault(cpu, {}), msg.view)
            values.append(None if msg is latest else msg.value)
        self.pending[tid] = values
        if order in _FENCE_AFTER_R:
            _join(cur, self.acq.get(cpu, {}))

    def after(self, tid: int, op: Op) -> None:
        """Thread ``tid`` took ``op`` and ran on to its next step: record its writes."""
        step = self.steps
        self.steps += 1
        if tid in self.inits:
            self._init_writes(tid, step)
        kind = op.kind
        if kind not in _WRITES:
            return
        cpu = 0 if self.one_cpu else tid
        cur = self.cur.setdefault(cpu, {})
        order = op.order
        stores = self._stores
        if stores:
            self.tracked.add(step)
        for loc in (op.loc, op.also):
            if loc is None:
                continue
            if order in _RELEASING or kind is not OpKind.WRITE and order is not Order.RELAXED:
                view = dict(cur)
            else:
                view = dict(self.wmb.get(cpu, {}))
            if not self.is_weak(loc):
                self.sync[loc] = view
                continue
            hist = self.hist[loc]
            if kind is not OpKind.WRITE:  # an RMW continues the release sequence
                _join(view, hist[-1].view)
            got = self.getters.get(loc) if stores else None
            value = got[0](got[1]) if got is not None else None
            self._ts += 1
            msg = Message(self._ts, value, tid, op.label, step, order, view)
            view[loc] = msg.ts
            cur[loc] = msg.ts
            if got is None:  # a write pervma cannot read back: nothing older stays readable
                hist[:] = [msg]
            else:
                hist.append(msg)
        if order in _FENCE_AFTER_W:
            self.wmb[cpu] = dict(cur)

    def _init_writes(self, tid: int, step: int) -> None:
        """The initialising writes ``tid`` made while running on from its
        step ``step`` (:func:`init_store`): plain writes, each a new message
        after the location's older ones (which stay readable to a CPU whose
        view is older), carrying the thread's view at its last wmb/mb."""
        cpu = 0 if self.one_cpu else tid
        cur = self.cur.setdefault(cpu, {})
        for loc, get, obj in self.inits.pop(tid):
            self.getters[loc] = (get, obj)
            if loc not in self.hist:  # first met: nothing older to read
                self._history(loc)
                cur[loc] = self.hist[loc][-1].ts
                continue
            self._ts += 1
            view = dict(self.wmb.get(cpu, {}))
            msg = Message(self._ts, get(obj), tid, "initialised before publication", step,
                          Order.PLAIN, view)
            view[loc] = msg.ts
            cur[loc] = msg.ts
            self.hist[loc].append(msg)

    def _history(self, loc: Hashable, label: str = "initial") -> list[Message]:
        """The history of ``loc``; it starts (again) with the object's value
        when first met, or when the object changed without a tracked write
        (a slab object recycled, a field set before the object was visible)."""
        hist = self.hist.get(loc)
        got = self.getters.get(loc)
        now = got[0](got[1]) if got is not None else None
        if hist is None or (got is not None and hist[-1].value != now):
            self._ts += 1
            hist = self.hist[loc] = [Message(self._ts, now, -1, label, -1, Order.PLAIN,
                                             {loc: self._ts})]
        return hist

    def take(self, tid: int) -> list[Any]:
        """The values the step just taken read (None: the latest, read off
        the object), one per weak location of the step."""
        return self.pending.pop(tid, [])

    def key(self) -> int:
        """What of this memory decides the rest of the execution, as a hash
        (folded into the stateful search's state key): each weak location's
        values still readable and each thread's view and choice count, in
        positions rather than timestamps.  On one CPU only the latest write
        is ever readable, which the model objects hold: nothing of its own."""
        if self.one_cpu:
            return 0
        readable: dict[Hashable, list[int]] = {}
        locs = sorted(self.hist, key=repr)
        for loc in locs:
            hist = self.hist[loc]
            if loc in self.getters:  # loaded somewhere: back to the oldest view of it
                lo = min((v.get(loc, -1) for v in self.cur.values()), default=-1)
            else:  # only read by RMWs and plain steps: the latest write
                lo = hist[-1].ts
            readable[loc] = [m.ts for m in hist if m.ts >= lo]

        def norm(view: View) -> tuple[tuple[str, int], ...]:
            return tuple(sorted((repr(k), bisect_right(readable[k], t) - 1)
                                for k, t in view.items() if k in readable))

        rows: list[Any] = []
        for loc in locs:
            first = readable[loc][0]
            rows.append((repr(loc), tuple((m.value, norm(m.view))
                                          for m in self.hist[loc] if m.ts >= first)))
        for views in (self.cur, self.acq, self.wmb):
            rows.append(tuple((cpu, norm(v)) for cpu, v in sorted(views.items())))
        rows.append(tuple(sorted((repr(k), norm(v)) for k, v in self.sync.items())))
        rows.append(tuple(sorted(self.nchoice.items())))
        return hash(tuple(rows))

    def attach(self, threads: int) -> None:
        """The executor's threads: each starts with a view older than every write."""
        for tid in range(threads):
            self.cur.setdefault(0 if self.one_cpu else tid, {})


def _memory() -> Memory | None:
    if not _current:
        return None
    mem = _current[-1].extra.get("memory")
    return mem if isinstance(mem, Memory) else None


def init_store(loc: Hashable, get: Getter, obj: Any) -> None:
    """The fields of ``obj`` that the weak location ``loc`` stands for were
    (re)initialised by the running thread with plain stores before it
    publishes the object (a SLAB_TYPESAFE_BY_RCU object handed to a new
    owner): not a step of its own; under LKMM the memory layer records them
    as plain writes of that thread's current transition, so that a reader
    whose view is older may still read the object's previous life unless a
    release the writer makes next, and an acquire of the reader, order them.
    Without a memory layer nothing happens."""
    mem = _memory()
    if mem is not None and mem.is_weak(loc):
        mem.inits.setdefault(_current[-1].tid, []).append((loc, get, obj))


#: The label of a history's first message when it is an object's previous life.
PREVIOUS_LIFE = "previous life"


def previous_life(loc: Hashable, get: Getter, obj: Any) -> None:
    """``obj``, a SLAB_TYPESAFE_BY_RCU object the weak location ``loc``
    stands for, comes back from its cache to be reinitialised: under LKMM,
    if no step has met ``loc`` yet, its history starts with the value the
    object still holds (its previous life, written before the execution
    began), so that a reader with an older view may read it after the
    reinitialising writes (:func:`init_store`).  Call it before those
    writes.  Without a memory layer nothing happens."""
    mem = _memory()
    if mem is not None and mem.is_weak(loc) and loc not in mem.hist:
        mem.getters[loc] = (get, obj)
        mem._history(loc, PREVIOUS_LIFE)


class load:  # noqa: N801 - used as ``await load(...)``, a primitive like ``read``
    """``await load(op, get, obj)``: take the read step ``op`` and return the
    value it read of ``op.loc`` (``get(obj)`` under SC).  With ``get2, obj2``
    the step also reads ``op.also`` and returns both values as a pair."""

    __slots__ = ("get", "get2", "obj", "obj2", "op")

    def __init__(self, op: Op, get: Getter, obj: Any, get2: Getter | None = None,
                 obj2: Any = None) -> None:
        self.op, self.get, self.obj, self.get2, self.obj2 = op, get, obj, get2, obj2

    def __await__(self) -> Generator[Op, Any, Any]:
        op = self.op
        mem = _memory()
        if mem is None:
            yield from op.__await__()
            v = self.get(self.obj)
            return v if self.get2 is None else (v, self.get2(self.obj2))
        mem.getters[op.loc] = (self.get, self.obj)
        if self.get2 is not None:
            mem.getters[op.also] = (self.get2, self.obj2)
        mem.loading[_current[-1].tid] = op
        del mem  # a suspended frame's locals are state (statekey): keep the layer out
        yield from op.__await__()
        mem = _memory()
        assert mem is not None
        read = mem.take(_current[-1].tid)
        v = self.get(self.obj)
        if read and read[0] is not None:
            v = read[0]
        if self.get2 is None:
            return v
        v2 = self.get2(self.obj2)
        if len(read) > 1 and read[1] is not None:
            v2 = read[1]
        return (v, v2)


class store:  # noqa: N801 - used as ``await store(...)``, a primitive like ``write``
    """``await store(op, get, obj)``: take the write step ``op``; the memory
    layer reads the value it left with ``get(obj)`` once the step's code ran."""

    __slots__ = ("get", "obj", "op")

    def __init__(self, op: Op, get: Getter, obj: Any) -> None:
        self.op, self.get, self.obj = op, get, obj

    def __await__(self) -> Generator[Op, Any, None]:
        mem = _memory()
        if mem is not None:
            mem.getters[self.op.loc] = (self.get, self.obj)
            mem.storing[_current[-1].tid] = self.op
        del mem  # a suspended frame's locals are state (statekey): keep the layer out
        yield from self.op.__await__()
