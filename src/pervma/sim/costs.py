"""The cost model: what one model step costs on a simulated CPU.

Shared locations live on cache lines.  A line is either owned exclusively by
one CPU (after a write or atomic) or shared by a set of CPUs (after reads).
Touching a line this CPU already holds costs an L1 hit (read) or a local
atomic (write/RMW/lock op); otherwise the line is transferred from its last
writer, at the same-socket or cross-socket cost.  A line's home is the socket
that touched it first (first-touch NUMA placement); on machines with more than
two sockets a transfer between two sockets neither of which is the home takes
one more hop (``line_transfer_hop_ns``: the request goes through the home's
directory).  Each transfer varies by up to ``TRANSFER_SPREAD`` around its mean,
from a table drawn with the point's seed, which keeps identical tasks from
staying in lock-step.  A line can be in flight to
only one CPU at a time, so exclusive transfers serialise: a line written on
every step has a ceiling of one transfer per ``line_transfer_ns`` (this is
what flattens pft-threads and what a shared mmap_lock count costs).

Which line a location lives on (:meth:`CostModel.line_key`, by the placement
of its kind in :data:`pervma.sched.locations.KINDS`):

* ``("vm_refcnt", slot)``: its own line under SMP (the cache-line-aligned
  refcount of 6.15+); under SMP=n it shares the VMA's first line
  ``("vma", slot)``, as does ``("vm_lock_seq", slot)``.
* ``("mm_lock_seq", mm)``: the mmap_lock's line.  In the 6.18 mm_struct (BTF,
  ``pervma layout mm_struct``) it sits in the cache line of the rwsem's
  owner and wait list, which every writer dirties when it takes the lock, so
  a write session's seqcount updates are hits.
* ``("pte", mm, page)``: eight 8-byte PTEs per line.
* ``("ptl", mm, ...)``: one line per lock as named by the model.
* ``("rcu",)``: per-CPU (preemptible RCU keeps a per-task nesting count).
* ``("page", pfn)``: the user's own data page, just cleared by this CPU: a hit.
* ``("lru",)``, ``("zone",)``: per-CPU lines (the per-CPU page lists and LRU
  batches); every ``pcp_batch``-th use on a CPU refills from the zone under a
  machine-wide lock, a fluid server of ``zone_lock_hold_ns`` per refill.
* anything else: the location itself.

A VMA allocated on a CPU (``vma_alloc`` work) has its lines local to that CPU
on first touch, as SLUB's per-CPU freelists make them.

The write-session interference path (issue #16 item 3), each price measured by
``bench/real/calib`` on epyc2vm and cited in its profile.  The model's steps
decide what happens (the order of mainline mm/vma.c's __split_vma() and
mm/mprotect.c's mprotect_fixup(), read at torvalds/linux 003fde4: the new
object is allocated before any VMA is write-locked); these only price them:

* a split's new VMA (``vma_dup`` work, loc ``("vma", slot)``: __split_vma's
  vm_area_dup) costs ``vma_dup_ns`` and its lines start owned by the
  splitting CPU, so a faulting thread on another CPU fetches them (cold for
  it); a merge's VMA detached and freed (``vma_free``, vma_complete) costs
  ``vma_free_ns``;
* mprotect's own work under mmap_lock (``mprotect_work``) costs
  ``mprotect_work_ns`` and stands in for the session stopgap below (a session
  that priced its work is not charged ``mmap_work_ns`` again at its end); each
  PTE mprotect changes (``change_pte``) costs ``change_pte_ns``; its TLB flush
  is a shootdown as above (IPIs only where other CPUs run the mm: threads);
* a faulting reader's abort, retry and fallback are the model's own steps
  (vm_refcnt and PTE lines, lock_mm_and_find_vma); sleeping on mmap_lock and
  waking costs ``wakeup_ns`` (the driver: waits).

``work_ns``/``work_count`` accumulate these (and ``tlb_flush``) per work name:
the per-category accounting the tests read.

The end of an mmap_lock write session (``up_write``/``downgrade_write``)
also costs ``mmap_work_ns``/``munmap_work_ns``: the syscalls' bookkeeping the
model does not spell out as steps (a stopgap that switches itself off once the
model emits ``mmap_work``/``munmap_work`` work steps).

Work (``op.work``) costs the machine's value for that name, scaled on SMT
siblings that share a busy core; unknown names cost ``default_work_ns``.
``clear_page``/``copy_page`` also queue for machine-wide memory bandwidth
(loaded latency, :class:`_Loaded`), and ``tlb_flush`` (loc ``("tlb", mm)``) sends IPIs to every
other CPU in the mm's cpumask (the CPUs that have touched that mm), charging
the sender ``ipi_send_base_ns + ipi_send_per_cpu_ns * k`` and each receiver
``ipi_receive_ns`` on its next step.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Any

from pervma.sched import Op, OpKind
from pervma.sched.locations import KINDS, MMAP_LOCK, PAGE_FRAME, VM_REFCNT, VMA, Placement
from pervma.sim.machine import Machine

_LOCAL = OpKind.LOCAL
_RELEASE = OpKind.RELEASE
_MAX_LINES = 400_000  # forget line states beyond this (bounded memory on long runs)
# How each location kind is priced (pervma.sched.locations); an unnamed kind
# is priced as its own line (tests/sim fails on any kind the model emits that
# KINDS does not name).
_PLACEMENT = {name: k.placement for name, k in KINDS.items()}
_PERCPU = frozenset(n for n, k in KINDS.items()
                    if k.placement in (Placement.PER_CPU, Placement.PCP, Placement.PAGE_FRAME))
_PCP = frozenset(n for n, k in KINDS.items() if k.placement is Placement.PCP)
_VMA_LOCS = frozenset(n for n, k in KINDS.items() if k.vma)
_MM_LOCS = frozenset(n for n, k in KINDS.items() if k.mm)
PAGE_BYTES = 4096
_JITTER_N = 4096  # entries in the transfer-variation table (a power of two)
ACCOUNTED_WORK = ("vma_dup", "vma_free", "change_pte", "mprotect_work", "tlb_flush")
"""Work names whose time and count :class:`CostModel` accumulates (``work_ns``)."""
TRANSFER_SPREAD = 0.02
"""How much one line transfer varies around its mean (uniform, +-2%;
[estimate]: mesh position and uncore queueing).  Its job is to break
lock-step: without it, tasks doing identical work keep their start-up order
on a contended line for ever (a FIFO of CPUs numbered socket by socket), so
far more transfers stay inside a socket than on a real machine.  At +-5%
instead, the legacy page_fault3 gap on skl-4sp is 25x instead of 28x and the
pft-threads 12/1 speedup 10.1 instead of 9.9."""
MISSING: Any = object()  # not in a cache (None means per-CPU data)


class Line:
    """One cache line: last writer, sharer bitmask, busy-until time, home socket."""

    __slots__ = ("free_at", "home", "mm", "owner", "sharers")

    def __init__(self) -> None:
        self.owner = -1  # CPU holding it exclusively, -1 when shared or never touched
        self.sharers = 0  # bitmask of CPUs holding a copy
        self.free_at = 0.0  # an exclusive transfer is in flight until then
        self.home = -1  # socket whose memory holds it (first touch), -1 until touched
        self.mm: Hashable | None = None  # the mm whose cpumask a toucher joins


class _Fluid:
    """A machine-wide resource served at a fixed rate; out-of-order arrivals
    (merged local steps run slightly ahead) do not inflate it."""

    __slots__ = ("backlog", "busy", "last")

    def __init__(self) -> None:
        self.backlog = 0.0
        self.last = 0.0
        self.busy = 0.0

    def serve(self, t: float, service: float) -> float:
        """Time from ``t`` until this request is done (queueing + service)."""
        if t > self.last:
            self.backlog = max(0.0, self.backlog - (t - self.last))
            self.last = t
        self.backlog += service
        self.busy += service
        return self.backlog


class _Loaded:
    """Memory bandwidth as loaded latency: an M/M/1-like queue whose
    utilisation is an exponentially weighted estimate of recent demand.  A
    request costs ``service * rho / (1 - rho)`` of queueing on top of its
    local time, so latency grows smoothly with load, as DRAM loaded-latency
    curves do, instead of a hard knee; a fluid queue of the same rate keeps the
    total under the bandwidth when the machine is overloaded."""

    __slots__ = ("busy", "fluid", "last", "load", "tau")

    def __init__(self, tau: float) -> None:
        self.tau = tau
        self.load = 0.0
        self.last = 0.0
        self.busy = 0.0
        self.fluid = _Fluid()  # the hard ceiling: never more than the bandwidth

    def wait(self, t: float, service: float, weight: float = 1.0) -> float:
        dt = t - self.last
        if dt > 0.0:
            self.last = t
            self.load = self.load * (1.0 - dt / self.tau) if dt < self.tau else 0.0
        demand = service * weight
        self.load += demand / self.tau
        rho = self.load if self.load < 0.9 else 0.9
        w = service * rho / (1.0 - rho)
        backlog = self.fluid.serve(t, demand) - demand
        if backlog > w:
            w = backlog
        self.busy += w
        return w


class CostModel:
    """Per-step costs on one machine (see module docstring)."""

    def __init__(self, machine: Machine, smp: bool, cpu_scale: list[float] | None = None) -> None:
        m = machine
        self.m = m
        self.smp = smp
        self.ncpu = m.cpus
        self.socket = [m.socket_of(c) for c in range(m.cpus)]
        self.scale = cpu_scale or [1.0] * m.cpus
        self.work = m.work_costs()
        self.default_work = m.default_work_ns
        self.hit = m.line_hit_ns
        self.atomic = m.atomic_local_ns
        self.xfer_same = m.line_transfer_ns
        self.xfer_cross = m.line_transfer_cross_ns
        self.xfer_hop = m.line_transfer_hop_ns
        self._jit: list[float] = []
        self._jit_i = 0
        self._wjit: list[float] = []
        self._wjit_i = 0
        self.seed_jitter(0)
        self.lines: dict[Hashable, Line | None] = {}
        self._lock_lines: dict[Hashable, Line | None] = {}
        self.cpumask: dict[Hashable, int] = {}
        self.debt = [0.0] * m.cpus  # IPI handling owed by each CPU
        self.pcp_count = [0] * m.cpus
        self.mem = _Loaded(tau=20_000.0)
        self.fresh_vma = [False] * m.cpus  # a vma_alloc awaits its first touch
        # the CPU's mmap_lock write session priced its own work (mprotect_work)
        self.session_priced = [False] * m.cpus
        # Mean-field multiplier: each simulated request to a machine-wide
        # resource stands for ``weight`` identical ones (processes mode runs a
        # few representative processes for many; see pervma.sim.api).
        self.weight = 1.0
        # Until the model emits mmap_work/munmap_work steps, charge them at the
        # end of each mmap_lock write session (see _session_work).
        self.session_work = True
        self.zone = _Fluid()
        self.page_service = PAGE_BYTES / m.mem_bandwidth_gbps  # ns per 4 KiB
        # accounting (ns)
        self.xfer_ns = 0.0
        self.line_wait_ns = 0.0
        self.tlb_ns = 0.0
        self.ipi_count = 0
        self.shootdowns = 0
        self.mem_wait_ns = 0.0
        self.zone_wait_ns = 0.0
        self.work_ns: dict[str, float] = dict.fromkeys(ACCOUNTED_WORK, 0.0)
        self.work_count: dict[str, int] = dict.fromkeys(ACCOUNTED_WORK, 0)

    # -- lines ----------------------------------------------------------
    def line_key(self, loc: Hashable) -> Hashable | None:
        """The cache line of a location; None for per-CPU data."""
        if not isinstance(loc, tuple) or not loc:
            return loc
        kind = loc[0]
        if kind in _PERCPU:
            return None
        place = _PLACEMENT.get(kind, Placement.LINE)
        if place is Placement.LINE:
            return loc
        if place is Placement.REFCNT_LINE:
            return loc if self.smp else (VMA, *loc[1:])
        if place is Placement.VMA_LINE:
            return (VMA, *loc[1:])
        if place is Placement.MMAP_LOCK_LINE:
            return (MMAP_LOCK, *loc[1:])
        if place is Placement.PTE_LINE and len(loc) >= 3 and isinstance(loc[2], int):
            return (loc[0], loc[1], loc[2] >> 3)
        return loc

    def _line(self, loc: Hashable) -> Line | None:
        """The Line of a location (None for per-CPU data), created on first use."""
        line = self._lock_lines.get(loc, MISSING)
        if line is not MISSING:
            return line
        line = self.lines.get(loc, MISSING)
        if line is not MISSING:
            return line
        return self._new_line(loc)

    def inline_line(self, loc: Hashable) -> Any:
        """The line of a location the driver has not seen yet, for pricing a
        step without :meth:`charge`: None for per-CPU data, ``MISSING`` for
        mmap_lock (its steps always come through charge())."""
        if isinstance(loc, tuple) and loc and loc[0] == MMAP_LOCK:
            return MISSING
        return self._new_line(loc)

    def _new_line(self, loc: Hashable) -> Line | None:
        """_line() for a location in neither cache."""
        kind = loc[0] if isinstance(loc, tuple) and loc else None
        if kind == PAGE_FRAME:
            return None  # per-CPU data, not worth remembering
        if kind == MMAP_LOCK:
            line = self._lock_lines.get(loc, MISSING)
            if line is not MISSING:
                return line
        lines = self.lines
        if len(lines) > _MAX_LINES:
            lines.clear()  # rare: every line starts again as never touched
            self._lock_lines.clear()
        key = self.line_key(loc)
        line = None
        if key is not None:
            # locations mapping to the same line share one Line object
            alias = ("__line__", key)
            line = lines.get(alias)
            if line is None:
                line = Line()
                if isinstance(loc, tuple) and len(loc) >= 2 and loc[0] in _MM_LOCS:
                    line.mm = loc[1]
                lines[alias] = line
        if kind == MMAP_LOCK:
            self._lock_lines[loc] = line  # kept out of ``lines``: its steps come through charge()
        else:
            lines[loc] = line
        return line

    def _fresh_slot(self, loc: Hashable, cpu: int) -> bool:
        """The first touch of a VMA after ``vma_alloc`` on this CPU: SLUB hands
        out objects from the allocating CPU's own freelist, so their lines are
        local (the model's one global freelist would make them cold)."""
        if not (isinstance(loc, tuple) and len(loc) == 2 and loc[0] in _VMA_LOCS):
            return False
        self.fresh_vma[cpu] = False
        self._own_vma_lines(loc[1], cpu)
        return True

    def _own_vma_lines(self, slot: Any, cpu: int) -> None:
        """A VMA object fresh from ``cpu``'s slab freelist: its lines (the
        VMA's and vm_refcnt's) are that CPU's, whoever held the slot's before."""
        bit = 1 << cpu
        for kind in (VMA, VM_REFCNT):
            line = self._line((kind, slot))
            if line is not None:
                line.owner, line.sharers, line.free_at = cpu, bit, 0.0
                line.home = self.socket[cpu]

    def touch(self, loc: Hashable, write: bool, cpu: int, t: float) -> float:
        """Cost of one access to ``loc`` by ``cpu`` at time ``t``."""
        if self.fresh_vma[cpu] and self._fresh_slot(loc, cpu):
            return self.atomic if write else self.hit
        line = self.lines.get(loc, MISSING)
        if line is MISSING:
            line = self._new_line(loc)
        if line is None:
            kind = loc[0] if isinstance(loc, tuple) else None
            if kind == PAGE_FRAME:
                return self.hit
            if write and kind in _PCP:
                self.pcp_count[cpu] += 1
                if self.pcp_count[cpu] >= self.m.pcp_batch:
                    self.pcp_count[cpu] = 0
                    hold = self.m.zone_lock_hold_ns
                    done = self.zone.serve(t, hold * self.weight) - hold * (self.weight - 1.0)
                    self.zone_wait_ns += done - hold
                    return self.atomic + done
            return self.atomic if write else self.hit
        return self.access(line, write, cpu, t)

    def access(self, line: Line, write: bool, cpu: int, t: float) -> float:
        """Cost of one access to a known line (``touch`` once the line is found)."""
        owner = line.owner
        if owner == cpu:
            return self.atomic if write else self.hit
        bit = 1 << cpu
        sharers = line.sharers
        if not write and sharers & bit:
            return self.hit
        if owner < 0:
            if sharers == 0:  # first touch: the line comes from this CPU's memory
                if line.home < 0:
                    line.home = self.socket[cpu]
                if line.mm is not None:
                    self.cpumask[line.mm] = self.cpumask.get(line.mm, 0) | bit
                if write:
                    line.owner = cpu
                line.sharers = bit
                return self.atomic if write else self.hit
            src = _any(sharers, cpu)
            if src < 0:  # only this CPU shares it: upgrade in place
                line.owner = cpu
                return self.atomic
        else:
            src = owner
        if line.mm is not None:
            self.cpumask[line.mm] = self.cpumask.get(line.mm, 0) | bit
        start = line.free_at if line.free_at > t else t
        # one transfer; a third socket as the line's home (its directory) adds a hop
        sock = self.socket
        s_src, s_dst = sock[src], sock[cpu]
        if s_src == s_dst:
            x = self.xfer_same
        else:
            home = line.home
            if home < 0 or home == s_src or home == s_dst:
                x = self.xfer_cross
            else:
                x = self.xfer_cross + self.xfer_hop
        j = self._jit_i = (self._jit_i + 1) & (_JITTER_N - 1)
        x *= self._jit[j]
        self.xfer_ns += x
        wait = start - t
        self.line_wait_ns += wait
        if write:
            line.owner, line.sharers = cpu, bit
            line.free_at = start + x
            return wait + x + self.atomic
        line.owner = -1
        line.sharers = sharers | bit
        return wait + x

    def seed_jitter(self, seed: int, spread: float = TRANSFER_SPREAD) -> None:
        """Draw the transfer-variation table (see TRANSFER_SPREAD) from ``seed``,
        and the wake-up table (the machine's ``wakeup_spread``) after it."""
        rng = random.Random(seed)
        self._jit = [1.0 + spread * (2.0 * rng.random() - 1.0) for _ in range(_JITTER_N)]
        self._jit_i = 0
        ws = self.m.wakeup_spread
        self._wjit = [1.0 + ws * (2.0 * rng.random() - 1.0) for _ in range(_JITTER_N)]
        self._wjit_i = 0

    def wakeup_factor(self) -> float:
        """The next wake-up's variation: a factor on ``wakeup_ns`` or
        ``wakeup_ipi_ns`` (uniform within the machine's ``wakeup_spread``;
        1.0 when it is 0)."""
        j = self._wjit_i = (self._wjit_i + 1) & (_JITTER_N - 1)
        return self._wjit[j]

    # -- whole steps ----------------------------------------------------
    def charge(self, op: Op, cpu: int, t: float) -> float:
        """Cost of a step that does not sleep (shared access + named work)."""
        kind = op.kind
        cost = 0.0
        if op.loc is not None and kind is not _LOCAL:
            writes = kind.writes
            cost = self.touch(op.loc, writes, cpu, t)
            also = op.also
            if also is not None:
                cost += self.touch(also, writes, cpu, t + cost)
        if op.work is not None:
            cost += self.work_cost(op, cpu, t + cost)
        elif (kind is _RELEASE and self.session_work and isinstance(op.loc, tuple)
              and op.loc[0] == MMAP_LOCK):
            cost += self._session_work(op.label, cpu)
        debt = self.debt[cpu]
        if debt:
            self.debt[cpu] = 0.0
            cost += debt
        return cost

    def _session_work(self, label: str, cpu: int) -> float:
        """Bookkeeping of a write session on mmap_lock that the model does not
        spell out as steps (performance.md row 11: ~1.9 us per mmap+munmap
        pair, 40/60), charged to the holder just before it releases: a
        session ending in ``downgrade_write`` is munmap's, one ending in
        ``up_write`` is mmap's (or madvise's, brk's).  A session that priced
        its own work (mprotect's ``mprotect_work``) owes nothing here."""
        if label.startswith("up_write"):
            w = self.m.mmap_work_ns
        elif label.startswith("downgrade_write"):
            w = self.m.munmap_work_ns
        else:
            return 0.0
        if self.session_priced[cpu]:
            self.session_priced[cpu] = False
            return 0.0
        return w

    def work_cost(self, op: Op, cpu: int, t: float) -> float:
        name = op.work
        if name == "mmap_work" or name == "munmap_work":
            self.session_work = False  # the model spells its work out itself
        base = self.work.get(name, self.default_work) * self.scale[cpu]  # type: ignore[arg-type]
        if name == "clear_page" or name == "copy_page":
            service = self.page_service * (2.0 if name == "copy_page" else 1.0)
            w = self.mem.wait(t, service, self.weight)
            self.mem_wait_ns += w
            return base + w
        if name == "tlb_flush":
            cost = self.shootdown(op.loc, cpu)
            self.work_ns[name] += cost
            self.work_count[name] += 1
            return cost
        if name == "vma_alloc":
            self.fresh_vma[cpu] = True
        elif name in self.work_count:
            self._account(op, name, cpu)
            self.work_ns[name] += base
        return base

    def _account(self, op: Op, name: str, cpu: int) -> None:
        """The interference path's work (module docstring): count it, and do
        what its price implies beyond time."""
        self.work_count[name] += 1
        if name == "mprotect_work":
            self.session_priced[cpu] = True
        elif name == "vma_dup":
            # a new object from this CPU's slab freelist: its lines are this
            # CPU's (vm_refcnt has its own line under SMP), whoever held the
            # slot's lines before
            loc = op.loc
            if isinstance(loc, tuple) and len(loc) == 2:
                self._own_vma_lines(loc[1], cpu)

    def shootdown(self, loc: Hashable, cpu: int) -> float:
        """flush_tlb_mm_range(): flush locally, IPI every other CPU of the mm."""
        self.shootdowns += 1
        cost = self.m.tlb_flush_local_ns
        mm = loc[1] if isinstance(loc, tuple) and len(loc) >= 2 else None
        mask = self.cpumask.get(mm, 0) & ~(1 << cpu) if mm is not None else 0
        if mask:
            k = 0
            recv = self.m.ipi_receive_ns
            c = 0
            while mask:
                if mask & 1:
                    self.debt[c] += recv
                    k += 1
                mask >>= 1
                c += 1
            self.ipi_count += k
            cost += self.m.ipi_send_base_ns + self.m.ipi_send_per_cpu_ns * k
        self.tlb_ns += cost
        return cost

    def transfer_ns(self) -> float:
        """Latency of handing a line (or a lock) to a spinning waiter."""
        return self.xfer_same


def _any(mask: int, not_cpu: int) -> int:
    """Some CPU in ``mask`` other than ``not_cpu`` (-1 if none)."""
    mask &= ~(1 << not_cpu)
    if not mask:
        return -1
    return (mask & -mask).bit_length() - 1
