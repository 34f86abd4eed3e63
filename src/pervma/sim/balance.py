"""Where tasks run: Linux's task placement and load balancing, for the timed driver.

The kernel (kernel/sched/fair.c, 6.18) moves a CFS task between CPUs in
three places, and :class:`Balancer` follows each for a driver whose tasks are
not pinned:

* **wake-up** (select_task_rq_fair() → select_idle_sibling()): the task's
  previous CPU if it is idle, else the first idle CPU of its LLC scanning on
  from it (select_idle_cpu()), else its previous CPU, where it waits for the
  running task's slice;
* **a CPU going idle** (sched_balance_newidle()): it pulls a queued task from
  the busiest CPU of its LLC, unless its average idle time (``rq->avg_idle``,
  updated as each idle period ends, 1/8 weight, at most twice
  ``sysctl_sched_migration_cost``) is below what a newidle balance of the
  LLC costs (``sd->max_newidle_lb_cost``; since 5.16 this replaced the
  0.5 ms ``sysctl_sched_migration_cost`` bar, 9a7e0a90a454): only a CPU that
  idles in gaps of a few microseconds skips it;
* **periodically** (sched_balance_domains() from the tick): every
  ``sd->balance_interval`` (the LLC's CPU count in ms), times
  ``busy_factor`` (16) on a busy CPU, sched_balance_rq() pulls one queued
  task from the busiest CPU when the imbalance allows it: an idle CPU pulls
  at once; a busy one compares loads (calculate_imbalance(),
  migrate_load: the least of the busiest's excess over the LLC's average
  and the local CPU's shortfall), and a task's load, halved for each failed
  attempt before (``sd->nr_balance_failed``), must fit in it.  Three
  CPU-bound tasks on two CPUs thus move every second attempt (every 64 ms
  on a 2-CPU LLC), and each gets about 2/3 of a CPU.

Each balance lands at a tick (the machine's ``tick_ns``, 4 ms at HZ=250),
and where a tick falls within the tasks' slices varies on a real machine with
everything else that runs; the driver's slices have exact lengths, so each
periodic balance is drawn uniformly within one tick after its interval
(seeded), or else the balance would meet the same task queued every time.

A queued task that stopped running less than ``sysctl_sched_migration_cost``
ago is cache-hot (task_hot()) and is not pulled unless the CPU's balancing
failed more than ``cache_nice_tries`` (1) times.  The queued task tried
first is the one that waited longest (detach_tasks() walks ``cfs_tasks``
from its tail, the least recently run).

Simplified: one balancing domain, the LLC (the socket; the NUMA and package
levels above it, which balance far less often, are left out); every task
weighs the same (nice 0: loads are task counts); no active balance (a
running task is never pushed away); no preference for idle SMT cores;
intervals are not rounded to jiffies.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pervma.sim.driver import TimedDriver

#: sysctl_sched_migration_cost: the cache-hot window (task_hot()) and half avg_idle's cap.
MIGRATION_COST_NS = 500_000.0
#: sd->max_newidle_lb_cost of an LLC, newidle's avg_idle bar: [estimate] a few
#: microseconds for a walk of one LLC's run queues (not measured: this VM's
#: kernel exposes neither schedstat nor the sched domains' debugfs files).
NEWIDLE_LB_COST_NS = 5_000.0
#: sd->busy_factor: a busy CPU balances this many times less often.
BUSY_FACTOR = 16
#: sd->cache_nice_tries at the LLC (MC) level.
CACHE_NICE_TRIES = 1
_INF = float("inf")


class Balancer:
    """Task placement and load balancing over a driver's CPUs (module
    docstring).  Off (no task ever moves) when ``on`` is false: one CPU, or
    pinned tasks."""

    def __init__(self, drv: TimedDriver, on: bool, seed: int = 0) -> None:
        self.d = drv
        m = drv.m
        n = drv.ncpu
        self.on = on and n > 1
        # each CPU's LLC, the others from the next one on, wrapping around
        self.llc = [[x for x in (list(range(c + 1, n)) + list(range(c)))
                     if m.socket_of(x) == m.socket_of(c)] for c in range(n)]
        self.interval = [(len(self.llc[c]) + 1) * 1e6 for c in range(n)]  # sd_weight ms
        self.failed = [0] * n  # sd->nr_balance_failed
        self.avg_idle = [2 * MIGRATION_COST_NS] * n  # rq->avg_idle starts at its cap
        self.idle_stamp = [-1.0] * n  # when the CPU went idle (-1: it is not)
        self.ran_at = [-_INF] * len(drv.tasks)  # when each task last stopped running
        self.rng = random.Random(seed)
        self.tick_ns = m.tick_ns
        # each CPU's first periodic balance, within one tick after one interval
        self.next = [self.interval[c] + self.rng.random() * self.tick_ns for c in range(n)]
        self.due = min(self.next) if self.on else _INF
        self.migrations = 0

    # -- the CPU's runnable tasks ---------------------------------------
    def nr_running(self, c: int, t: float) -> int:
        d = self.d
        return (not d.cpu_idle(c, t)) + sum(1 for x in d.rq[c] if not d.tasks[x].done)

    # -- wake-up --------------------------------------------------------
    def select(self, tid: int, prev: int, t: float) -> int:
        """select_idle_sibling(): the CPU a task waking at ``t`` is queued on."""
        idle = self.d.cpu_idle
        if not self.on or idle(prev, t):
            return prev
        for c in self.llc[prev]:
            if idle(c, t):
                self._moved(tid, c)
                return c
        return prev

    # -- idle periods ---------------------------------------------------
    def stopped(self, tid: int, t: float) -> None:
        """Task ``tid`` leaves its CPU at ``t`` (its se.exec_start)."""
        self.ran_at[tid] = t

    def went_idle(self, c: int, t: float) -> None:
        """CPU ``c`` has nothing to run at ``t``: newidle balance, else idle."""
        if self.on and self.avg_idle[c] >= NEWIDLE_LB_COST_NS and self._pull(c, t, True):
            return
        self.idle_stamp[c] = t

    def busy_again(self, c: int, t: float) -> None:
        """An idle CPU ``c`` gets a task at ``t``: its idle period ends
        (update_avg() of rq->avg_idle in ttwu_do_activate(), capped at
        twice max_idle_balance_cost)."""
        s = self.idle_stamp[c]
        if s >= 0.0:
            a = self.avg_idle[c]
            a += (t - s - a) / 8
            self.avg_idle[c] = min(a, 2 * MIGRATION_COST_NS)
            self.idle_stamp[c] = -1.0

    # -- periodic balance -----------------------------------------------
    def tick(self, t: float) -> None:
        """Every CPU whose balance is due at ``t`` balances (``self.due``:
        the earliest next one)."""
        d = self.d
        for c, nxt in enumerate(self.next):
            if nxt <= t:
                self._pull(c, t, False)
                busy = not d.cpu_idle(c, t)
                self.next[c] = (t + self.interval[c] * (BUSY_FACTOR if busy else 1)
                                + self.rng.random() * self.tick_ns)
        self.due = min(self.next)

    def _pull(self, c: int, t: float, newidle: bool) -> bool:
        """sched_balance_rq() for CPU ``c``: pull one queued task from the
        busiest CPU of its LLC if the imbalance allows.  True if one moved."""
        d = self.d
        nr = [self.nr_running(x, t) for x in self.llc[c]]
        busiest = max(range(len(nr)), key=nr.__getitem__, default=-1)
        if busiest < 0 or nr[busiest] < 2:
            if not newidle:
                self.failed[c] = 0  # out_balanced
            return False
        src = self.llc[c][busiest]
        local = self.nr_running(c, t)
        if local > 0:
            avg = (sum(nr) + local) / (len(nr) + 1)
            imbalance = min(nr[busiest] - avg, avg - local)
            if imbalance <= 0:
                if not newidle:
                    self.failed[c] = 0
                return False
            fits = 1.0 / (1 << min(self.failed[c], 30)) <= imbalance
        else:
            fits = True  # an idle CPU: migrate_task, one task
        if fits:
            for tid in d.rq[src]:
                if d.tasks[tid].done:
                    continue
                if t - self.ran_at[tid] < MIGRATION_COST_NS \
                        and self.failed[c] <= CACHE_NICE_TRIES:
                    continue  # cache-hot
                d.rq[src].remove(tid)
                self._moved(tid, c)
                self._start(tid, c, t)
                self.failed[c] = 0
                return True
        if not newidle:
            self.failed[c] += 1
        return False

    def _moved(self, tid: int, c: int) -> None:
        d = self.d
        d.task_cpu[tid] = c
        d.tasks[tid].cpu = c
        self.migrations += 1

    def _start(self, tid: int, c: int, t: float) -> None:
        """A pulled task joins CPU ``c``: it runs there after a context
        switch if the CPU is idle, else it queues."""
        self.d._enqueue(tid, c, t + self.d.m.context_switch_ns)
