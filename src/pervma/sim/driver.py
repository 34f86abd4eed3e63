"""The timed driver: model threads on simulated CPUs under a virtual clock.

The core is a heap of ``(time, cpu)`` events, one per CPU that has a runnable
task.  Popping a CPU runs its task's pending step: the step's cost comes from
the :class:`~pervma.sim.costs.CostModel` at that moment, the step takes effect
(``Executor.step``), and the CPU's next event is pushed at ``time + cost``.

Merged steps: after a step, the task's following steps are run at once and
their costs added, so that only steps that may interact go through the heap:

* local steps (``OpKind.LOCAL`` that does not sleep: trap, page clearing,
  zap, user work...) and steps on per-CPU data (``("zone",)``, ``("lru",)``,
  ``("rcu",)`` counters): always.  This is exact for the model (no other CPU
  can observe them); only the machine-wide bandwidth and zone servers see
  those requests up to one merged run early;
* steps on lines this CPU already holds (an uncontended lock whose
  ``enabled()`` holds now included), while no other CPU is due earlier than
  one same-socket line transfer (``line_transfer_ns``) before the step: another
  CPU's access to such a line cannot complete sooner than that transfer, so
  running this CPU's step first is an order real hardware can produce.

Merging stops at a step that blocks, sleeps, wakes a waiter, or does work with
machine-wide state (``clear_page``, ``tlb_flush``...), and is off on a CPU
with queued tasks, so time slices end at the right step.

Blocking: a step whose ``enabled()`` is false parks the task on its location.
After any writing step on a location, tasks parked there are re-checked; those
now enabled resume after a wake-up latency: ``wakeup_ns`` if they slept (and
the waker, when it runs on another CPU and the sleeper's CPU is idle, pays the
wake-up IPI, ``wakeup_ipi_ns``: 8 us in a guest, whose idle vCPU has halted),
a line transfer for a spinlock, ``rwsem_handoff_ns`` for a contended rwsem taken over
by a spinning waiter.  Who spins (on an otherwise idle CPU) follows the rwsem's
optimistic spinning (performance.md 5.7; kernel/locking/rwsem.c, 6.18):
spinlock waiters, and rwsem writers while a writer owns the lock (owners in the
model run while they hold mmap_lock).  A writer that finds readers owning it
(``Op.readers``) spins for ``rwsem_rspin_threshold()`` at most,
(10 + readers/2) us capped at 25 us, then marks the lock non-spinnable and
sleeps; while that mark stands (until the driver sees a writer own the lock)
later writers sleep at once on a reader-owned lock.  rwsem readers spin only for the
machine's ``rwsem_spin_ns``, then they sleep.  Readers have not spun since
Linux 5.12 (617f3ef95177), and every bundled profile sets it to 0.  Waits on
locations nobody writes through a step (``("rcu",)`` grace periods) are swept
every few steps.  A sleeping step with work ``"io"`` takes the task off its CPU
for ``io_ns``.

Where tasks run: a task starts on the CPU ``placement`` gives it and moves
as Linux moves it (a wake-up onto an idle CPU of its LLC, a newidle pull, a
periodic load balance: :mod:`pervma.sim.balance`), unless the tasks are
pinned.

One CPU (``SMP=n``) or more tasks than CPUs: each CPU time-slices its queue;
a slice ends at the first scheduler tick after it runs out (``tick_ns``:
EEVDF notices it in the tick, HRTICK being off by default).
A woken task waits for the running one's slice to end (EEVDF with its default
RUN_TO_PARITY: pick_eevdf() keeps a current task whose slice is protected, so
a wake-up does not preempt it; kernel/sched/fair.c, 6.18).  A task is
preempted at the end of its slice only where it may be:
``preempt_count == 0`` with PREEMPT, or (PREEMPT=n) at a user-mode boundary
(``user``/``trap`` work) or when it sleeps.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from pervma.sched import (
    Executor,
    Op,
    OpKind,
    Task,
    Violation,
    WaitKind,
    clock_source,
    running_slot,
    touches_recorded,
    track_touches,
)
from pervma.sched.locations import KINDS, MMAP_LOCK, PAGE_FRAME, RCU
from pervma.sim.balance import Balancer
from pervma.sim.costs import MISSING, CostModel
from pervma.sim.machine import Machine

_LOCAL = OpKind.LOCAL
_SWEEP_EVERY = 8
BASE_SLICE_NS = 750_000.0  # sysctl_sched_base_slice, unscaled (kernel/sched/fair.c)
_USER_WORK = ("user", "trap", "syscall")
_WRITES_BY_KIND = [OpKind(v).writes for v in range(max(OpKind) + 1)]
_INF = float("inf")
_THROUGH_HEAP = -1.0  # _price(): the step cannot merge, it goes through the heap
_CHARGED_WORK = frozenset(("clear_page", "copy_page", "tlb_flush", "vma_alloc", "vma_dup",
                           "vma_free", "mprotect_work"))
# work_cost() keeps state (costs.ACCOUNTED_WORK: change_pte is counted there)
_SPECIAL_WORK = _CHARGED_WORK | {"mmap_work", "munmap_work", "change_pte"}


@dataclass(slots=True)
class TraceEvent:
    """One executed step for a Perfetto trace: start, duration (ns), CPU, task, label."""

    t: float
    dur: float
    cpu: int
    tid: int
    label: str


@dataclass(slots=True)
class DriverStats:
    """Where time went, accumulated by the driver (ns unless a count)."""

    waits: dict[str, float] = field(default_factory=dict)
    wait_counts: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    switches: int = 0

    def copy(self) -> DriverStats:
        return DriverStats(dict(self.waits), dict(self.wait_counts), self.steps, self.switches)


_VMA_LOCK_KINDS = frozenset(n for n, k in KINDS.items() if k.vma)
_RWSEM = (WaitKind.RWSEM_READ, WaitKind.RWSEM_WRITE)


def rwsem_rspin_threshold(readers: int) -> float:
    """How long (ns) a writer spins on an rwsem that ``readers`` readers own
    before it sleeps: (20 + readers) / 2 us, readers counted up to 30
    (kernel/locking/rwsem.c since 5.3)."""
    return (20 + min(readers, 30)) * 500.0


def wait_category(op: Op) -> str:
    """A short name for what a blocked step waits on: ``io``, the mmap_lock
    as reader or writer, the VMA lock, else the location's kind (its
    ``Op.wait`` and location, never its label)."""
    if op.wait is WaitKind.IO:
        return "io"
    loc = op.loc
    kind = loc[0] if isinstance(loc, tuple) and loc else str(loc)
    if kind == MMAP_LOCK:
        return "mmap_lock_write" if op.wait is WaitKind.RWSEM_WRITE else "mmap_lock_read"
    if kind in _VMA_LOCK_KINDS:
        return "vma_lock"
    return str(kind)


class TimedDriver:
    """Runs an :class:`Executor`'s tasks on a machine's CPUs (module docstring).

    ``placement[tid]`` is the CPU of each task.  ``now`` is the virtual time at
    which the model code currently running executes (the end of its step), so
    workload bodies can time their own operations.
    """

    def __init__(self, ex: Executor, machine: Machine, costs: CostModel, placement: list[int],
                 *, preempt: bool = True, trace_window: tuple[float, float] | None = None,
                 pinned: bool = False, seed: int = 0) -> None:
        self.ex = ex
        self.m = machine
        self.costs = costs
        self.preempt = preempt
        self.tasks = ex.tasks
        n = machine.cpus
        self.task_cpu = list(placement)
        self.cpu_task = [-1] * n
        self.rq: list[deque[int]] = [deque() for _ in range(n)]
        self.slice_end = [0.0] * n
        self.parked = [False] * n  # the CPU's task is blocked but keeps the CPU
        self.ncpu = n
        self.spin_ok = costs.smp and n > 1
        # EEVDF's slice: sysctl_sched_base_slice (0.75 ms) scaled by 1 + ilog2(CPUs)
        # up to 8 CPUs; the profile's value is its own machine's, and SMP=n has one CPU
        self.timeslice = machine.timeslice_ns if costs.smp else min(machine.timeslice_ns,
                                                                     BASE_SLICE_NS)
        self.heap: list[tuple[float, int]] = []
        self.now = 0.0
        self.waiters: dict[Hashable, list[int]] = {}
        self.sweep: set[Hashable] = set()
        self._run_steps = 0  # steps taken in this run() (waits are swept every few)
        self.block_start = [0.0] * len(self.tasks)
        # a writer spinning on a reader-owned rwsem: the time its spin ends
        # (heap events ncpu + ntasks + tid), and the locks marked non-spinnable
        self.spin_until: dict[int, float] = {}
        self.nonspinnable: set[Hashable] = set()
        self._spin_base = n + len(self.tasks)
        self.timers: list[float] = []  # the times of those heap events (c >= n), a heap
        self._ipi_owed = 0.0  # wake-up IPIs the stepping task's CPU sent (wakeup_ipi_ns)
        self.stats = DriverStats()
        self._cat: dict[Hashable, str] = {}
        self.trace_window = trace_window
        self.trace: list[TraceEvent] = []
        self.finished_at: dict[int, float] = {}
        self._price = self._pricer()
        costs = self.costs
        self._tables = (costs.lines, costs.hit, costs.atomic, costs.debt, costs.fresh_vma,
                        costs.work, costs.default_work, costs.scale)
        self._slot = running_slot()
        # where tasks run: wake-up placement and load balancing (sim/balance.py)
        self.balance = Balancer(self, self.spin_ok and not pinned, seed)
        for tid, task in enumerate(self.tasks):
            if task.done:
                continue
            c = self.task_cpu[tid]
            task.cpu = c
            if self.cpu_task[c] < 0:
                self.cpu_task[c] = tid
                self.slice_end[c] = self.slice_end_at(0.0)
                self.heap.append((0.0, c))
            else:
                self.rq[c].append(tid)
        heapq.heapify(self.heap)
        self._check_violation()

    # -- the loop -------------------------------------------------------
    def run(self, until: float) -> float:
        """Advance until virtual time ``until`` (ns) or until every task is
        done; returns the virtual time reached.  A model violation or a
        deadlock raises :class:`pervma.sched.Violation`.

        Each turn takes the earliest CPU's event: an I/O completion, the end
        of a time slice, a step that blocks or sleeps, or else a step the
        task takes (:meth:`_step`, with the steps merged after it)."""
        heap = self.heap
        tasks = self.tasks
        cpu_task = self.cpu_task
        rq = self.rq
        ncpu = self.ncpu
        balance = self.balance
        slot = running_slot()
        slot.append(None)  # type: ignore[arg-type]  # the top: the task being resumed
        # Touch recording is the checker's (dependencies); this driver does not
        # read it, so it is off while it runs whatever an earlier driver left.
        recording = touches_recorded()
        if recording:
            track_touches(False)
        self._run_steps = 0
        clock = clock_source(self._clock)
        clock.__enter__()
        try:
            while True:
                if not heap:
                    if not self._sweep_all(self.now):
                        self._no_runnable()
                        return self.now
                    continue
                t, c = heap[0]
                if t >= until:
                    if balance.due < until:
                        balance.tick(balance.due)
                        continue
                    self.now = until
                    return until
                if balance.due <= t:  # a periodic load balance is due first
                    balance.tick(balance.due)
                    continue
                if c >= ncpu:  # an I/O completion timer, or a writer's spin ends
                    heapq.heappop(heap)
                    heapq.heappop(self.timers)
                    if c >= self._spin_base:
                        self._spin_ends(c - self._spin_base, t)
                    else:
                        self._timer(c - ncpu, t)
                    continue
                tid = cpu_task[c]
                task = tasks[tid]
                if task.done:  # its last step ended at t: the CPU is free
                    heapq.heappop(heap)
                    self.finished_at[tid] = t
                    self._next_on_cpu(c, t)
                    continue
                op: Op = task.pending  # type: ignore[assignment]  # a running task has one
                if rq[c] and t >= self.slice_end[c] and self._may_preempt(task, op):
                    heapq.heappop(heap)
                    rq[c].append(tid)
                    self.stats.switches += 1
                    self._next_on_cpu(c, t)
                    continue
                enabled = op.enabled
                if enabled is not None and not enabled():
                    heapq.heappop(heap)
                    self._block(tid, c, t, op)
                    continue
                if op.sleeps and op.kind is _LOCAL:
                    heapq.heappop(heap)
                    self._sleep(tid, c, t, op)
                    continue
                t = self._step(task, op, c, t, until)
                # still the earliest CPU? then update the heap top in place
                n = len(heap)
                if n == 1 or (t <= heap[1][0] and (n == 2 or t <= heap[2][0])):
                    heap[0] = (t, c)
                else:
                    heapq.heapreplace(heap, (t, c))
        finally:
            clock.__exit__(None, None, None)
            slot.pop()
            self.stats.steps += self._run_steps
            if recording:
                track_touches(True)

    def _clock(self) -> float:
        """The model's clock (``pervma.sched.clock_ns``): the time at which the
        model code running now executes."""
        return self.now

    def _step(self, task: Task, op: Op, c: int, t: float, until: float) -> float:
        """Task ``task`` on CPU ``c`` takes its pending step ``op`` at ``t``
        (as ``Executor.step``: the step takes effect, the task runs to its next
        step), wakes the tasks parked on what it wrote, then takes the steps
        that may merge into this one (:meth:`_merge`).  Returns the time its
        CPU is free again; a finished task is marked done."""
        cost = self._price(op, c, t, None)
        t0 = t
        t += cost
        self.now = t
        self._slot[-1] = task
        try:
            task.pending = nxt = task.coro.send(None)
            self._run_steps += 1
            if self.trace_window is not None:
                self._trace(t0, cost, c, task.tid, op.label)
            if _WRITES_BY_KIND[op.kind]:
                loc = op.loc
                if loc in self.waiters:
                    self._wake(loc, t, op.label, c)
                    if self._ipi_owed:
                        # the wake-up IPIs it sent: its CPU is busy with them
                        t += self._ipi_owed
                        self.now = t
                        self._ipi_owed = 0.0
            if self.sweep and self._run_steps % _SWEEP_EVERY == 0:
                self._sweep(t)
            if not self.rq[c]:
                # merged steps stop where the scheduler may act on this CPU:
                # a timer (an I/O completion, a spin's end) or a load balance
                bound = until
                if self.balance.due < bound:
                    bound = self.balance.due
                if self.timers and self.timers[0] < bound:
                    bound = self.timers[0]
                t = self._merge(task, nxt, c, t, bound)
        except StopIteration as stop:
            task.done, task.pending, task.result = True, None, stop.value
            t = self.now  # the end of its last step, merged or not
        except Violation as v:
            task.done, task.pending = True, None
            if self.ex.violation is None:
                self.ex.violation = v
            self._check_violation()
        return t

    def _merge(self, task: Task, op: Op, c: int, t: float, until: float) -> float:
        """Take the task's following steps at once, their costs added, while
        the pricing helper lets each merge (module docstring): local and per-CPU
        steps always, steps on lines this CPU holds while no other CPU is due
        within one line transfer of it.  Returns the time reached; the step
        that stops the merge stays pending (StopIteration and violations go
        to the caller)."""
        heap = self.heap
        n = len(heap)
        if n == 1:
            limit = _INF
        elif n == 2:
            limit = heap[1][0] + self.costs.xfer_same
        else:
            limit = (heap[1][0] if heap[1][0] < heap[2][0] else heap[2][0]) + self.costs.xfer_same
        send = task.coro.send
        price = self._price
        lines, hit, atomic, debt, fresh, work, default_work, scale = self._tables
        waiters = self.waiters
        writes = _WRITES_BY_KIND
        tracing = self.trace_window is not None
        steps = 0
        try:
            while t < until:
                # The commonest merged steps are priced here exactly as price()
                # prices them (a Python call costs more than the pricing): a
                # step on lines this CPU holds, and plain local work.  Anything
                # else, or a line not yet known, goes to price().
                kind = op.kind
                w = op.work
                if op.enabled is not None:
                    dt = price(op, c, t, limit)
                elif kind is _LOCAL:
                    if op.sleeps or w in _CHARGED_WORK:
                        dt = price(op, c, t, limit)
                    elif w is None:
                        dt = 0.0
                    else:
                        dt = work.get(w, default_work) * scale[c]
                elif t > limit or fresh[c] or (w is not None and w in _SPECIAL_WORK):
                    dt = price(op, c, t, limit)
                else:
                    line = lines.get(op.loc)
                    if line is None:  # per-CPU data, or a line not known yet
                        dt = price(op, c, t, limit)
                    else:
                        wr = writes[kind]
                        if line.owner == c:
                            dt = atomic if wr else hit
                        elif not wr and line.sharers >> c & 1:
                            dt = hit
                        else:
                            break  # a transfer: through the heap
                        also: Any = op.also
                        if also is not None and also[0] != PAGE_FRAME:
                            other = lines.get(also)
                            if other is None or wr or not (
                                    other.owner == c or other.sharers >> c & 1):
                                break
                            dt += hit
                        if wr and op.loc in waiters:
                            break  # it wakes a waiter: through the heap
                        if w is not None:
                            dt += work.get(w, default_work) * scale[c]
                        if debt[c]:
                            dt += debt[c]
                            debt[c] = 0.0
                if dt < 0.0:
                    break
                if tracing:
                    self._trace(t, dt, c, task.tid, op.label)
                t += dt
                self.now = t
                op = send(None)
                steps += 1
            task.pending = op
        finally:
            self._run_steps += steps
        return t

    def _pricer(self) -> Callable[[Op, int, float, float | None], float]:
        """The driver's one pricing helper, ``price(op, c, t, limit)``: what
        step ``op`` costs CPU ``c`` at ``t``, the cost model's
        :meth:`~pervma.sim.costs.CostModel.charge` with its common case (a
        line this CPU holds) inlined.  A closure over the cost model's
        tables, made once per driver: it runs for every step.

        ``limit`` None: the step was chosen from the heap and is taken
        whatever it costs.  Otherwise the step would be merged into the one
        before it, which only a step that no other CPU can observe earlier
        may be: it returns ``_THROUGH_HEAP`` for a step that blocks or
        sleeps, wakes a waiter, needs a line this CPU does not hold (or any
        line after ``limit``), does work with machine-wide state or is the
        first touch of a new VMA.  A merged local step owes no IPI debt (the
        interrupt waits for the next heap step), and a merged user access's
        data page costs nothing beyond its PTE."""
        costs = self.costs
        charge, access, inline_line = costs.charge, costs.access, costs.inline_line
        touch, work_cost = costs.touch, costs.work_cost
        lines, work, default_work, scale = costs.lines, costs.work, costs.default_work, costs.scale
        fresh, debt, hit, atomic = costs.fresh_vma, costs.debt, costs.hit, costs.atomic
        waiters = self.waiters
        writes = _WRITES_BY_KIND
        special, charged = _SPECIAL_WORK, _CHARGED_WORK
        local, heap, page = _LOCAL, _THROUGH_HEAP, PAGE_FRAME

        def price(op: Op, c: int, t: float, limit: float | None) -> float:
            kind = op.kind
            w = op.work
            merging = limit is not None
            if merging:
                if op.enabled is not None and (t > limit or not op.enabled()):  # type: ignore[operator]
                    return heap
                if kind is local:
                    if op.sleeps:
                        return heap
                    if w is None:
                        return 0.0
                    if w not in charged:
                        return work.get(w, default_work) * scale[c]
                    cost = work_cost(op, c, t)  # (charge()'s arithmetic, one call less)
                    if debt[c]:
                        cost += debt[c]
                        debt[c] = 0.0
                    return cost
            elif kind is local:
                # charge()'s arithmetic for local work, without its calls
                if w is None:
                    cost = 0.0
                elif w in special:
                    cost = work_cost(op, c, t)
                else:
                    cost = work.get(w, default_work) * scale[c]
                if debt[c]:
                    cost += debt[c]
                    debt[c] = 0.0
                return cost
            if fresh[c] or (w is not None and w in special):
                # (after vma_alloc, charge() places the new VMA's lines)
                return heap if merging else charge(op, c, t)
            loc = op.loc
            line: Any = lines.get(loc, MISSING)
            if line is MISSING:
                line = inline_line(loc)
            also: Any = op.also
            wr = writes[kind]
            if line is None:  # per-CPU data (zone/lru/rcu counters): local
                if merging and (also is not None or (wr and loc in waiters)):
                    return heap
                if loc is None:
                    return charge(op, c, t)
                # charge()'s arithmetic (its plain work inline)
                touches = writes[kind]
                cost = touch(loc, touches, c, t)
                if also is not None:
                    cost += touch(also, touches, c, t + cost)
                if w is not None:
                    cost += work.get(w, default_work) * scale[c]
                if debt[c]:
                    cost += debt[c]
                    debt[c] = 0.0
                return cost
            if line is MISSING or (also is not None and also[0] != page and not merging):
                # mmap_lock (its session work), or a second line: the cost model
                return heap if merging else charge(op, c, t)
            if merging:
                if t > limit:  # type: ignore[operator]
                    return heap
                if line.owner == c:
                    cost = atomic if wr else hit
                elif not wr and line.sharers >> c & 1:
                    cost = hit
                else:
                    return heap
                if also is not None and also[0] != page:
                    other = lines.get(also)
                    if other is None or wr or not (other.owner == c or other.sharers >> c & 1):
                        return heap
                    cost += hit
                if wr and loc in waiters:
                    return heap
            else:
                if line.owner == c:
                    cost = atomic if wr else hit
                elif not wr and line.sharers >> c & 1:
                    cost = hit
                else:
                    cost = access(line, wr, c, t)  # a transfer
                if also is not None:
                    cost += hit  # a user access's data page, just cleared here
            if w is not None:
                if merging and w in special:
                    return heap
                cost += work.get(w, default_work) * scale[c]
            if debt[c]:
                cost += debt[c]
                debt[c] = 0.0
            return cost

        return price

    # -- helpers --------------------------------------------------------
    def _may_preempt(self, task: object, op: Op) -> bool:
        if getattr(task, "preempt_count", 0) > 0:
            return False
        if self.preempt:
            return True
        return op.kind is _LOCAL and op.work in _USER_WORK

    def slice_end_at(self, t: float) -> float:
        """When a task picked at ``t`` is preempted if another waits: EEVDF
        notices an expired slice at the scheduler tick (update_deadline() from
        sched_tick(); the HRTICK feature, which would end it exactly, is off
        by default), so at the first tick at or after ``t + timeslice``.
        ``tick_ns`` 0: exactly at ``t + timeslice``."""
        end = t + self.timeslice
        tick = self.m.tick_ns
        return math.ceil(end / tick) * tick if tick > 0 else end

    def cpu_idle(self, c: int, t: float) -> bool:
        """CPU ``c`` runs nothing at ``t``: no task, or its task sleeps
        parked on it (a sleeping wait on a CPU with nothing else to run,
        past ``rwsem_spin_ns``: the driver leaves it there until it wakes,
        and :meth:`_enqueue` takes the CPU back from it).  A spinning waiter
        (a spinlock, an rwsem writer's optimistic spin) keeps it busy."""
        tid = self.cpu_task[c]
        if tid < 0:
            return True
        if not self.parked[c]:
            return False
        op = self.tasks[tid].pending
        return (op is not None and op.sleeps and op.wait is not WaitKind.RWSEM_WRITE
                and t - self.block_start[tid] >= self.m.rwsem_spin_ns)

    def _next_on_cpu(self, c: int, t: float) -> None:
        """CPU ``c`` gave up its task (done, asleep, preempted): run the next."""
        q = self.rq[c]
        self.parked[c] = False
        prev = self.cpu_task[c]
        if prev >= 0:
            self.balance.stopped(prev, t)
        while q:
            tid = q.popleft()
            task = self.tasks[tid]
            if task.done:
                continue
            self.cpu_task[c] = tid
            t += self.m.context_switch_ns
            self.slice_end[c] = self.slice_end_at(t)
            heapq.heappush(self.heap, (t, c))
            return
        self.cpu_task[c] = -1
        self.balance.went_idle(c, t)

    def _category(self, op: Op) -> str:
        key = (op.loc[0] if isinstance(op.loc, tuple) and op.loc else op.loc, op.wait)
        cat = self._cat.get(key)
        if cat is None:
            cat = wait_category(op)
            self._cat[key] = cat
        return cat

    def _block(self, tid: int, c: int, t: float, op: Op) -> None:
        loc = op.loc
        self.block_start[tid] = t
        self.waiters.setdefault(loc, []).append(tid)
        if loc is None or (isinstance(loc, tuple) and loc and loc[0] == RCU):
            self.sweep.add(loc)
        if op.sleeps and (self.rq[c] or not self.spin_ok):
            # really sleeps: the CPU runs something else
            self.stats.switches += 1
            self._next_on_cpu(c, t)
        else:
            # spinning (a spinlock), or an rwsem waiter spinning on an idle CPU
            self.parked[c] = True
            if op.readers is not None and not self._writer_spins(tid, op, t):
                self._stop_spinning(c, t)
            elif self.cpu_idle(c, t):
                self.balance.went_idle(c, t)  # asleep: the CPU idles (newidle balance)

    def _stop_spinning(self, c: int, t: float) -> None:
        """CPU ``c``'s task, parked spinning on a lock, goes to sleep: the
        CPU runs the next task, or idles."""
        self.parked[c] = False
        self.stats.switches += 1
        self._next_on_cpu(c, t)

    def _writer_spins(self, tid: int, op: Op, t: float) -> bool:
        """A writer waits on an rwsem (``op.readers``): False if it sleeps now
        (readers own a lock marked non-spinnable); else it spins, until
        ``rwsem_rspin_threshold()`` from now if readers own the lock."""
        readers = op.readers()  # type: ignore[misc]
        if not readers:
            # a writer owns it: its owner field no longer carries the mark,
            # and a spin on readers starts afresh when readers own it again
            self.nonspinnable.discard(op.loc)
            self.spin_until.pop(tid, None)
            return True
        if op.loc in self.nonspinnable:
            return False
        if tid not in self.spin_until:
            end = t + rwsem_rspin_threshold(readers)
            self.spin_until[tid] = end
            heapq.heappush(self.heap, (end, self._spin_base + tid))
            heapq.heappush(self.timers, end)
        return True

    def _spin_ends(self, tid: int, t: float) -> None:
        """A writer's spin on a reader-owned rwsem timed out: if it still
        spins, it marks the lock non-spinnable and sleeps."""
        if self.spin_until.get(tid) != t:
            return  # granted meanwhile (or a later spin)
        del self.spin_until[tid]
        c = self.task_cpu[tid]
        if self.cpu_task[c] != tid or not self.parked[c]:
            return
        op = self.tasks[tid].pending
        if op is None or op.readers is None or op.is_enabled() or not op.readers():
            return
        self.nonspinnable.add(op.loc)
        self._stop_spinning(c, t)

    def _sleep(self, tid: int, c: int, t: float, op: Op) -> None:
        """A sleeping local step (I/O): off the CPU for its duration."""
        dur = self.costs.work.get(op.work, self.costs.default_work)  # type: ignore[arg-type]
        self.now = t + dur
        self.ex.step(tid)
        self._check_violation()
        cat = self._category(op)
        self.stats.waits[cat] = self.stats.waits.get(cat, 0.0) + dur
        self.stats.wait_counts[cat] = self.stats.wait_counts.get(cat, 0) + 1
        self.stats.switches += 1
        if self.tasks[tid].done:
            self.finished_at[tid] = t + dur
        else:
            heapq.heappush(self.heap, (t + dur, self.ncpu + tid))
            heapq.heappush(self.timers, t + dur)
        self._next_on_cpu(c, t)

    def _timer(self, tid: int, t: float) -> None:
        """A task's I/O completed: make it runnable where the wake-up puts it."""
        c = self.balance.select(tid, self.task_cpu[tid], t)
        self._enqueue(tid, c, t + self.m.wakeup_ns * self.costs.wakeup_factor())

    def _enqueue(self, tid: int, c: int, t: float) -> None:
        """Task ``tid`` becomes runnable at ``t`` on CPU ``c``."""
        cur = self.cpu_task[c]
        if cur >= 0 and self.parked[c]:
            op = self.tasks[cur].pending
            if op is not None and op.sleeps:
                # the CPU's task was only spinning before sleeping: it sleeps now
                self.parked[c] = False
                cur = -1
        if cur < 0:
            self.balance.busy_again(c, t)
            self.cpu_task[c] = tid
            self.slice_end[c] = self.slice_end_at(t)
            heapq.heappush(self.heap, (t, c))
        else:
            # EEVDF with RUN_TO_PARITY: the running task keeps the CPU to
            # the end of its slice; the woken task waits in the queue
            self.rq[c].append(tid)

    def _wake(self, loc: Hashable, t: float, by: str = "", waker: int = -1) -> None:
        """Re-check the tasks parked on ``loc`` after a write to it at ``t`` by
        a step on CPU ``waker`` (-1: a sweep) and resume those now enabled."""
        lst = self.waiters[loc]
        keep: list[int] = []
        tasks = self.tasks
        for tid in lst:
            task = tasks[tid]
            op = task.pending
            if op is not None and not op.is_enabled():
                keep.append(tid)
                if op.readers is not None:
                    c = self.task_cpu[tid]
                    if (self.cpu_task[c] == tid and self.parked[c]
                            and not self._writer_spins(tid, op, t)):
                        # readers took the lock over while it spun on a writer
                        self._stop_spinning(c, t)
                continue
            self._resume(tid, t, op, by, waker)
        if keep:
            self.waiters[loc] = keep
        else:
            self.waiters.pop(loc, None)
            self.sweep.discard(loc)

    def _resume(self, tid: int, t: float, op: Op | None, by: str = "", waker: int = -1) -> None:
        """Task ``tid``'s wait ends at ``t``: a task spinning on its CPU goes
        on after a hand-over; a sleeping one is queued after ``wakeup_ns``, and
        if its CPU is idle and another CPU's step woke it, that step's CPU pays
        the wake-up IPI (``wakeup_ipi_ns``, added to the step that woke it)."""
        c = self.task_cpu[tid]
        waited = t - self.block_start[tid]
        if op is not None and op.readers is not None:
            # a writer is granted the lock: its owner field clears the mark
            self.spin_until.pop(tid, None)
            self.nonspinnable.discard(op.loc)
        if self.cpu_task[c] == tid and self.parked[c]:
            self.parked[c] = False
            writer = op is not None and op.wait is WaitKind.RWSEM_WRITE
            spinning = op is None or not op.sleeps or writer or waited <= self.m.rwsem_spin_ns
            if not spinning:
                # it slept on a CPU with nothing else to run: that CPU is idle
                self.balance.busy_again(c, t)
                lat = self.m.wakeup_ns * self.costs.wakeup_factor()
                if 0 <= waker != c:
                    self._ipi_owed += self.m.wakeup_ipi_ns * self.costs.wakeup_factor()
            elif op is not None and op.wait in _RWSEM:
                lat = self.m.rwsem_handoff_ns  # a contended rwsem changes hands
            else:
                lat = self.costs.transfer_ns()
            if not (writer and self._take_over(tid, c, t)):
                heapq.heappush(self.heap, (t + lat, c))
        else:
            c = self.balance.select(tid, c, t)
            lat = self.m.wakeup_ns * self.costs.wakeup_factor()
            if 0 <= waker != c and self.cpu_idle(c, t):
                self._ipi_owed += self.m.wakeup_ipi_ns * self.costs.wakeup_factor()
            self._enqueue(tid, c, t + lat)
        if op is not None:
            cat = self._category(op)
            self.stats.waits[cat] = self.stats.waits.get(cat, 0.0) + waited + lat
            self.stats.wait_counts[cat] = self.stats.wait_counts.get(cat, 0) + 1

    def _take_over(self, tid: int, c: int, t: float) -> bool:
        """A writer spinning on an rwsem takes it the moment the release
        wakes it (its spin loop's rwsem_try_write_lock_unqueued(), before a
        stealer could): its step runs now, its next one after
        ``rwsem_handoff_ns``.  True if that step ended the task."""
        self.ex.step(tid)
        self._run_steps += 1
        self._check_violation()
        if self.tasks[tid].done:
            self.finished_at[tid] = t
            self._next_on_cpu(c, t)
            return True
        return False

    def _sweep(self, t: float) -> None:
        for loc in list(self.sweep):
            if loc in self.waiters:
                self._wake(loc, t)
            else:
                self.sweep.discard(loc)

    def _sweep_all(self, t: float) -> bool:
        """Nothing is runnable: re-check every parked task.  True if one woke."""
        before = len(self.heap)
        for loc in list(self.waiters):
            self._wake(loc, t)
        return len(self.heap) > before

    def _no_runnable(self) -> None:
        stuck = [t for t in self.tasks if not t.done]
        if stuck:
            what = ", ".join(f"{t.name} waits in {t.pending.label if t.pending else '?'}"
                             for t in stuck[:4])
            self.ex.close()
            raise Violation("deadlock", f"every task is blocked: {what}")

    def _check_violation(self) -> None:
        v = self.ex.violation
        if v is not None:
            self.ex.close()
            raise v

    def _trace(self, t: float, dur: float, c: int, tid: int, label: str) -> None:
        lo, hi = self.trace_window  # type: ignore[misc]
        if lo <= t <= hi:
            self.trace.append(TraceEvent(t, dur, c, tid, label))

    def close(self) -> None:
        self.ex.close()


def make_driver(bodies: list, names: list[str], models: list, machine: Machine, smp: bool,
                preempt: bool, placement: list[int] | None = None,
                trace_window: tuple[float, float] | None = None,
                costs_factory: Callable[..., CostModel] = CostModel,
                busy: list[int] | None = None, weight: float = 1.0,
                seed: int = 0, pinned: bool = False) -> TimedDriver:
    """Build an Executor and a driver; ``placement`` defaults to the machine's
    (one CPU under SMP=n).  ``busy`` are the CPUs to count as running a task
    for SMT slow-down (default: ``placement``); ``weight`` is the mean-field
    multiplier of machine-wide demand (see :class:`CostModel`); ``seed`` draws
    the variation of line transfers (``costs.TRANSFER_SPREAD``) and the
    ticks of the load balancer; ``pinned`` tasks never leave their CPU."""
    n = len(bodies)
    if placement is None:
        placement = machine.placement(n) if smp else [0] * n
    scale = [1.0] * machine.cpus
    if smp and machine.threads_per_core > 1:
        used = set(busy if busy is not None else placement)
        for c in used:
            sib = (c + machine.cores) % machine.cpus if c < machine.cores else c - machine.cores
            if sib in used:
                scale[c] = machine.smt_work_factor
    costs = costs_factory(machine, smp, scale)
    costs.weight = weight
    costs.seed_jitter(seed)
    ex = Executor(bodies, names=names, models=models, record=False)
    return TimedDriver(ex, machine, costs, placement, preempt=preempt, trace_window=trace_window,
                       seed=seed, pinned=pinned)
