"""Machine profiles: the hardware and kernel costs the timed simulator charges.

One TOML file per machine in ``sim/machines/``.  Every cost sits in the
``[costs]`` table and has a matching entry in ``[sources]`` saying where the
number comes from (a section of performance.md, a datasheet, or "[fit]" for the
few xeon16 values calibrated against the machine-level behaviour of the
real-16core anchor).  Profiles hold no per-workload parameters.

Times are nanoseconds, bandwidths GB/s (1e9 bytes per second).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources

from pervma.errors import UsageError


@dataclass(frozen=True, slots=True)
class Machine:
    """A machine profile (see module docstring).  All ``*_ns`` are nanoseconds."""

    name: str
    description: str
    cpus: int
    sockets: int
    threads_per_core: int
    virtual: bool
    # cache lines
    line_hit_ns: float
    atomic_local_ns: float
    line_transfer_ns: float
    line_transfer_cross_ns: float
    line_transfer_hop_ns: float  # extra hop when the line's home socket is a third one
    # local work
    trap_ns: float
    syscall_ns: float
    page_alloc_ns: float
    clear_page_ns: float
    copy_page_ns: float
    pte_install_ns: float
    dirty_page_ns: float
    zap_page_ns: float
    vma_alloc_ns: float
    vma_free_ns: float  # a VMA a merge detached and freed (vma_complete)
    vma_dup_ns: float  # the new VMA of a split (__split_vma: vm_area_dup)
    change_pte_ns: float  # one PTE changed by mprotect (change_pte_range)
    mprotect_work_ns: float  # mprotect's own work under mmap_lock, no split/merge/PTE
    mmap_work_ns: float
    munmap_work_ns: float
    io_ns: float
    default_work_ns: float
    # TLB shootdown
    tlb_flush_local_ns: float
    ipi_send_base_ns: float
    ipi_send_per_cpu_ns: float
    ipi_receive_ns: float
    # scheduling
    wakeup_ns: float
    wakeup_ipi_ns: float  # the waker's cost of waking a task asleep on another, idle CPU
    wakeup_spread: float  # each wake-up's latency and IPI vary uniformly by +-this fraction
    context_switch_ns: float
    timeslice_ns: float
    tick_ns: float  # the scheduler tick (1 / CONFIG_HZ), where an expired slice is noticed
    rwsem_spin_ns: float
    rwsem_handoff_ns: float
    # machine-wide ceilings
    mem_bandwidth_gbps: float
    zone_lock_hold_ns: float
    pcp_batch: int
    smt_work_factor: float
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def cores(self) -> int:
        return max(1, self.cpus // self.threads_per_core)

    def socket_of(self, cpu: int) -> int:
        """Linux numbering: cores socket by socket, then their SMT siblings."""
        core = cpu % self.cores
        per = max(1, self.cores // self.sockets)
        return min(core // per, self.sockets - 1)

    def placement(self, ntasks: int) -> list[int]:
        """CPU for each task: one task per core, spreading over sockets first
        (as the load balancer and will-it-scale's hwloc binding do), then SMT
        siblings, then wrapping around (time-shared CPUs)."""
        per = max(1, self.cores // self.sockets)
        base = [s * per + i for i in range(per) for s in range(self.sockets)]
        order = base + [c + k * self.cores for k in range(1, self.threads_per_core) for c in base]
        order = [c for c in order if c < self.cpus] or [0]
        return [order[i % len(order)] for i in range(ntasks)]

    def work_costs(self) -> dict[str, float]:
        """Local work name -> ns (``op.work``); unknown names cost ``default_work_ns``."""
        return {
            "trap": self.trap_ns,
            "syscall": self.syscall_ns,
            "page_alloc": self.page_alloc_ns,
            "clear_page": self.clear_page_ns,
            "copy_page": self.copy_page_ns,
            "pte_install": self.pte_install_ns,
            "dirty_page": self.dirty_page_ns,
            "zap_page": self.zap_page_ns,
            "vma_alloc": self.vma_alloc_ns,
            "vma_free": self.vma_free_ns,
            "vma_dup": self.vma_dup_ns,
            "change_pte": self.change_pte_ns,
            "mprotect_work": self.mprotect_work_ns,
            "mmap_work": self.mmap_work_ns,
            "munmap_work": self.munmap_work_ns,
            "io": self.io_ns,
            "user": 0.0,
        }


_COST_FIELDS = tuple(
    f.name for f in fields(Machine) if f.name not in ("name", "description", "sources")
)


def machine_names() -> list[str]:
    """Names of the bundled profiles, sorted."""
    pkg = resources.files("pervma.sim") / "machines"
    return sorted(p.name[:-5] for p in pkg.iterdir() if p.name.endswith(".toml"))


def parse_machine(text: str, name: str) -> Machine:
    """Parse one profile; every cost needs a value and a source."""
    data = tomllib.loads(text)
    costs = data.get("costs", {})
    sources = data.get("sources", {})
    missing = [k for k in _COST_FIELDS if k not in costs]
    if missing:
        raise UsageError(f"machine {name!r}: missing values {', '.join(missing)}")
    unsourced = [k for k in _COST_FIELDS if k not in sources]
    if unsourced:
        raise UsageError(f"machine {name!r}: values without a source: {', '.join(unsourced)}")
    extra = sorted(set(costs) - set(_COST_FIELDS))
    if extra:
        raise UsageError(f"machine {name!r}: unknown values {', '.join(extra)}")
    kw: dict[str, object] = {k: costs[k] for k in _COST_FIELDS}
    bad = [k for k, v in kw.items() if isinstance(v, str)
           or not isinstance(v, int | float | bool) or (not isinstance(v, bool) and v < 0)]
    if bad:
        raise UsageError(f"machine {name!r}: values must be non-negative numbers: {', '.join(bad)}")
    return Machine(name=name, description=str(data.get("description", "")),
                   sources={str(k): str(v) for k, v in sources.items()}, **kw)  # type: ignore[arg-type]


def load_machine(name: str) -> Machine:
    """Load a bundled profile by name; an unknown name is a one-line UsageError."""
    names = machine_names()
    if name not in names:
        raise UsageError(f"unknown machine {name!r}; choose one of {', '.join(names)}")
    text = (resources.files("pervma.sim") / "machines" / f"{name}.toml").read_text()
    return parse_machine(text, name)
