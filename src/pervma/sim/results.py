"""Results of simulated points: the :class:`Point` record and its CSV form.

The CSV is pfbench's long form, one row per point::

    workload,preset,machine,kind,tasks,faults_per_s,churn_ops_per_s,...

``faults_per_s`` means what pfbench prints: faults per second summed over the
measured tasks, or mmap+munmap pairs per second for ``mmap1``/``mmap2``.
The remaining columns say where time went (per measured window, summed over
tasks, milliseconds of task time) and carry the vmstat counters.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields


@dataclass(slots=True)
class Point:
    """One simulated (workload, preset, machine, kind, tasks) point."""

    workload: str
    preset: str
    machine: str
    kind: str  # "threads" or "processes"
    tasks: int
    faults_per_s: float
    churn_ops_per_s: float = 0.0
    sim_ms: float = 0.0  # measured window, simulated milliseconds
    lat_p50_us: float = 0.0  # fault latency percentiles (sampled faults)
    lat_p90_us: float = 0.0
    lat_p99_us: float = 0.0
    lat_max_us: float = 0.0
    mmap_lock_read_wait_ms: float = 0.0
    mmap_lock_write_wait_ms: float = 0.0
    vma_lock_wait_ms: float = 0.0
    other_wait_ms: float = 0.0
    io_ms: float = 0.0
    line_transfer_ms: float = 0.0
    line_wait_ms: float = 0.0
    tlb_shootdowns: int = 0
    tlb_ms: float = 0.0
    ipis: int = 0
    mem_bw_wait_ms: float = 0.0
    zone_wait_ms: float = 0.0
    fallbacks: int = 0  # faults that left the per-VMA path (abort + retry + miss)
    seed: int = 0
    simulated_tasks: int = 0  # tasks actually run (processes mode: mean field)
    steps: int = 0
    wall_s: float = 0.0
    cycles: int = 0  # whole cycles inside the window, summed over the measured tasks
    capped: bool = False  # the window hit its cap before every task completed its cycles
    vmstat: dict[str, int] = field(default_factory=dict)
    waits: dict[str, float] = field(default_factory=dict)  # category -> ms
    trace: str = ""  # Perfetto (Chrome JSON) trace of a window, when asked for

    def key(self) -> tuple[str, str, str, str, int]:
        return (self.workload, self.preset, self.machine, self.kind, self.tasks)


SCALAR_FIELDS = [f.name for f in fields(Point) if f.name not in ("vmstat", "waits", "trace")]
VMSTAT_COLUMNS = ("vma_lock_success", "vma_lock_abort", "vma_lock_retry", "vma_lock_miss")


def to_csv(points: Iterable[Point]) -> str:
    """CSV text (pfbench long form plus where-time-went and vmstat columns)."""
    pts = list(points)
    extra = sorted({k for p in pts for k in p.vmstat} - set(VMSTAT_COLUMNS))
    cols = SCALAR_FIELDS + [f"vmstat_{k}" for k in (*VMSTAT_COLUMNS, *extra)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for p in pts:
        d = asdict(p)
        row: list[object] = []
        for c in SCALAR_FIELDS:
            v = d[c]
            row.append(f"{v:.6g}" if isinstance(v, float) else v)
        row += [p.vmstat.get(k, 0) for k in (*VMSTAT_COLUMNS, *extra)]
        w.writerow(row)
    return buf.getvalue()


def ratio(points: Sequence[Point], workload: str, preset: str, tasks: int,
          num: str = "threads", den: str = "processes") -> float:
    """faults_per_s(num) / faults_per_s(den) at one task count (median over seeds)."""
    def val(kind: str) -> float:
        xs = [p.faults_per_s for p in points
              if p.workload == workload and p.preset == preset and p.kind == kind
              and p.tasks == tasks]
        if not xs:
            raise KeyError(f"no {workload}/{preset}/{kind}/{tasks} point")
        return statistics.median(xs)
    return val(num) / val(den)


def summary_table(points: Sequence[Point]) -> list[list[str]]:
    """Rows for a human table: one per (preset, tasks), threads vs processes."""
    rows: list[list[str]] = []
    keys = sorted({(p.preset, p.tasks) for p in points})
    for pre, n in keys:
        by = {p.kind: p for p in points if (p.preset, p.tasks) == (pre, n)}
        th, pr = by.get("threads"), by.get("processes")
        r = f"{th.faults_per_s / pr.faults_per_s:.3f}" if th and pr and pr.faults_per_s else "-"
        main = th or pr
        assert main is not None
        rows.append([
            pre, str(n),
            f"{th.faults_per_s:,.0f}" if th else "-",
            f"{pr.faults_per_s:,.0f}" if pr else "-",
            r,
            f"{main.lat_p50_us:.1f}/{main.lat_p99_us:.1f}",
            f"{main.mmap_lock_read_wait_ms + main.mmap_lock_write_wait_ms:.2f}",
            f"{main.vma_lock_wait_ms:.2f}",
            str(main.fallbacks),
            str(main.tlb_shootdowns),
        ])
    return rows


SUMMARY_HEADER = ["preset", "tasks", "threads/s", "processes/s", "thr/proc", "p50/p99 us",
                  "mmap_lock ms", "VMA lock ms", "fallbacks", "TLB sd"]
