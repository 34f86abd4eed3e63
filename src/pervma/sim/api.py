"""The simulator's Python API (used by the CLI and the report).

>>> from pervma.sim.api import simulate
>>> pts = simulate("shared", preset="universal", machine="xeon16", mode="both",
...                tasks=[1, 4], duration_ms=5, seed=1)          # doctest: +SKIP
>>> [(p.kind, p.tasks, round(p.faults_per_s)) for p in pts]        # doctest: +SKIP

* :func:`run_point` simulates one (workload, preset, machine, kind, tasks)
  point and returns a :class:`~pervma.sim.results.Point`.
* :func:`simulate` sweeps task counts, kinds and presets (optionally in
  parallel worker processes) and returns the points in a stable order.
* Plots: :mod:`pervma.sim.plot` (``throughput_svg(points)``,
  ``ratio_svg(points)``); CSV: :func:`pervma.sim.results.to_csv`.

Processes mode is simulated in mean field beyond ``MEAN_FIELD_TASKS``
processes: the processes share nothing but machine-wide resources, so four
representative ones run and their demand on those resources is weighted by
``tasks / 4`` (``Point.simulated_tasks`` says how many ran).

The model runs with its debugging aids off (lockdep-style tracking, DEBUG_VM,
KASAN poisoning): they change no behaviour the simulator measures, only the
wall-clock time.  The simulated window is ``duration_ms`` after a warm-up of
``warmup_ms`` (default a quarter of the window, at least 1 ms).  With
``min_cycles`` the window is stretched, in steps, until every measured task
has run that many whole cycles of its loop inside it (from one munmap or
MADV_DONTNEED to the next), but never beyond ``max_window_ms``;
``Point.cycles`` says how many whole cycles the window holds (summed over the
measured tasks) and ``Point.capped`` whether the cap cut it short.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from pervma.config import PRESET_NAMES, Config
from pervma.errors import UsageError
from pervma.sim.driver import TimedDriver, TraceEvent, make_driver
from pervma.sim.machine import Machine, load_machine
from pervma.sim.results import Point
from pervma.sim.workloads import Workload, get_workload

KINDS = ("threads", "processes")
MEAN_FIELD_TASKS = 4  # processes mode simulates at most this many processes
MAX_WINDOW_MS = 200.0  # default cap of a window stretched to complete a cycle


def sim_config(preset: str, machine: Machine) -> Config:
    """The preset as the simulator runs it (debug aids off, the machine's CPUs)."""
    if preset not in PRESET_NAMES:
        raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    cfg = Config.preset(preset)
    cfg = cfg.with_(DEBUG_LOCK_ALLOC=False, DEBUG_VM=False, KASAN=False)
    if cfg.SMP:
        cfg = cfg.with_(nr_cpus=machine.cpus)
    return cfg


def _new_system(cfg: Config) -> Any:
    from pervma.kernel.system import System  # the model (imported late: optional until built)

    return System(cfg)


def run_point(workload: str | Workload, preset: str = "universal",
              machine: str | Machine = "xeon16", kind: str = "threads", tasks: int = 1,
              duration_ms: float = 20.0, seed: int = 0, warmup_ms: float | None = None,
              trace_window_ms: tuple[float, float] | None = None,
              config: Config | None = None, min_cycles: int = 0,
              max_window_ms: float = MAX_WINDOW_MS) -> Point:
    """Simulate one point (see module docstring).  ``workload`` is a built-in's
    name, a ``.toml`` path or a :class:`Workload`; ``config`` overrides the
    preset's configuration (its name still labels the point)."""
    mach = machine if isinstance(machine, Machine) else load_machine(machine)
    w = get_workload(workload)
    if kind not in w.modes:
        raise UsageError(f"workload {w.name} has no {kind} mode")
    if tasks < 1:
        raise UsageError("task counts must be at least 1")
    cfg = config or sim_config(preset, mach)
    warm = warmup_ms if warmup_ms is not None else max(1.0, duration_ms / 4)
    from pervma.sim.workloads import build

    wall0 = time.perf_counter()
    kern = _new_system(cfg)
    # Processes mode, mean field: processes share nothing but machine-wide
    # resources (memory bandwidth, the zone lock), so a few representative
    # processes stand for all of them, each of their requests to those
    # resources weighted by tasks / simulated.
    sim_tasks, weight = tasks, 1.0
    placement = busy = None
    if kind == "processes" and not w.extra_task and tasks > MEAN_FIELD_TASKS and cfg.SMP:
        sim_tasks = MEAN_FIELD_TASKS
        weight = tasks / sim_tasks
        busy = mach.placement(tasks)
        placement = [busy[i * tasks // sim_tasks] for i in range(sim_tasks)]
    built = build(w, kern, kind, sim_tasks, seed)
    win = None
    if trace_window_ms is not None:
        win = (trace_window_ms[0] * 1e6, trace_window_ms[1] * 1e6)
    drv = make_driver(built.coros, built.names, built.models, mach, cfg.SMP, cfg.PREEMPT,
                      placement=placement, trace_window=win, busy=busy, weight=weight,
                      seed=seed)
    built.recorder.drv = drv
    # The cyclic collector is paused while the point runs: the model makes few
    # reference cycles per step (a 40 ms window leaves ~150k objects, under
    # 100 MB in all), and its passes over the live model cost ~5% of the run.
    gc_on = gc.isenabled()
    gc.disable()
    try:
        point = measure(drv, built, kern, w.name, preset, mach.name, kind, tasks,
                        warm * 1e6, (warm + duration_ms) * 1e6, min_cycles,
                        (warm + max(duration_ms, max_window_ms)) * 1e6)
        point.simulated_tasks = sim_tasks
        if weight != 1.0:
            point.faults_per_s *= weight
            point.churn_ops_per_s *= weight
    finally:
        drv.close()
        if gc_on:
            gc.enable()
    point.seed = seed
    point.wall_s = time.perf_counter() - wall0
    if win is not None:
        point.trace = trace_json(drv.trace, built.names)
    return point


def _vmstat(kern: Any) -> dict[str, int]:
    try:
        return dict(kern.vmstat())
    except Exception:  # noqa: BLE001 - counters are best effort
        return {}


def measure(drv: TimedDriver, built: Any, kern: Any, workload: str, preset: str, machine: str,
            kind: str, tasks: int, t_warm: float, t_end: float, min_cycles: int = 0,
            t_cap: float = 0.0) -> Point:
    """Run warm-up then the window (stretched up to ``t_cap`` until every
    measured task completed ``min_cycles`` cycles); turn the deltas into a Point."""
    rec = built.recorder
    drv.run(t_warm)
    ops0 = list(rec.ops)
    cyc0 = list(rec.cycles)
    churn0 = rec.churn
    rec.lat.clear()
    st0 = drv.stats.copy()
    c = drv.costs
    c0 = (c.xfer_ns, c.line_wait_ns, c.tlb_ns, c.shootdowns, c.ipi_count, c.mem_wait_ns,
          c.zone_wait_ns)
    vm0 = _vmstat(kern)
    t_reached = drv.run(t_end)
    step = max(1e6, (t_end - t_warm) / 4)

    def full(i: int) -> int:
        """Task i's whole cycles inside the window: those between its first
        cycle end in the window and its last."""
        return max(0, rec.cycles[i] - cyc0[i] - 1)

    def short() -> bool:
        return any(full(i) < min_cycles for i in range(built.measured))

    while short() and t_reached < t_cap:
        t_end = min(t_cap, t_end + step)
        t_reached = drv.run(t_end)
    window = max(1e-9, t_reached - t_warm) / 1e9
    ops = sum(rec.ops[i] - ops0[i] for i in range(built.measured))
    vm1 = _vmstat(kern)
    vm = {k: vm1.get(k, 0) - vm0.get(k, 0) for k in vm1}
    waits = {k: (v - st0.waits.get(k, 0.0)) / 1e6 for k, v in drv.stats.waits.items()}
    lat = sorted(rec.lat)

    def pct(q: float) -> float:
        if not lat:
            return 0.0
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e3

    other = sum(v for k, v in waits.items()
                if k not in ("mmap_lock_read", "mmap_lock_write", "vma_lock", "io"))
    return Point(
        workload=workload, preset=preset, machine=machine, kind=kind, tasks=tasks,
        faults_per_s=ops / window,
        churn_ops_per_s=(rec.churn - churn0) / window,
        sim_ms=window * 1e3,
        lat_p50_us=pct(0.50), lat_p90_us=pct(0.90), lat_p99_us=pct(0.99),
        lat_max_us=lat[-1] / 1e3 if lat else 0.0,
        mmap_lock_read_wait_ms=waits.get("mmap_lock_read", 0.0),
        mmap_lock_write_wait_ms=waits.get("mmap_lock_write", 0.0),
        vma_lock_wait_ms=waits.get("vma_lock", 0.0),
        other_wait_ms=other,
        io_ms=waits.get("io", 0.0),
        line_transfer_ms=(c.xfer_ns - c0[0]) / 1e6,
        line_wait_ms=(c.line_wait_ns - c0[1]) / 1e6,
        tlb_ms=(c.tlb_ns - c0[2]) / 1e6,
        tlb_shootdowns=c.shootdowns - c0[3],
        ipis=c.ipi_count - c0[4],
        mem_bw_wait_ms=(c.mem_wait_ns - c0[5]) / 1e6,
        zone_wait_ms=(c.zone_wait_ns - c0[6]) / 1e6,
        fallbacks=sum(vm.get(k, 0) for k in ("vma_lock_abort", "vma_lock_retry", "vma_lock_miss")),
        steps=drv.stats.steps - st0.steps,
        cycles=sum(full(i) for i in range(built.measured)),
        capped=short(),
        vmstat=vm,
        waits={k: v for k, v in waits.items() if v},
    )


def _point_args(workload: Workload, presets: Sequence[str], machine: str, kinds: Sequence[str],
                tasks: Sequence[int], duration_ms: float, seed: int,
                warmup_ms: float | None, min_cycles: int,
                max_window_ms: float) -> list[tuple[Any, ...]]:
    return [(workload, pre, machine, k, n, duration_ms, seed, warmup_ms, min_cycles,
             max_window_ms) for pre in presets for n in tasks for k in kinds]


def _run_args(args: tuple[Any, ...]) -> Point:
    wl, pre, mach, k, n, dur, seed, warm, cycles, cap = args
    return run_point(wl, pre, mach, k, n, dur, seed, warm, min_cycles=cycles, max_window_ms=cap)


def simulate(workload: str | Workload, preset: str | Sequence[str] = "universal",
             machine: str = "xeon16", mode: str = "both", tasks: Iterable[int] = (1, 2, 4, 8, 16),
             duration_ms: float = 20.0, seed: int = 0, jobs: int = 1,
             warmup_ms: float | None = None,
             progress: Callable[[Point], None] | None = None, min_cycles: int = 0,
             max_window_ms: float = MAX_WINDOW_MS) -> list[Point]:
    """Sweep presets x task counts x kinds; ``mode`` is threads, processes or both.

    Points come back in (preset, tasks, kind) order whatever ``jobs`` is."""
    w = get_workload(workload)
    load_machine(machine)  # validate early
    presets = [preset] if isinstance(preset, str) else list(preset)
    for pre in presets:
        if pre not in PRESET_NAMES:
            raise UsageError(f"unknown preset {pre!r}; choose one of {', '.join(PRESET_NAMES)}")
    if mode == "both":
        kinds = [k for k in KINDS if k in w.modes]
    elif mode in KINDS:
        kinds = [mode]
    else:
        raise UsageError(f"unknown mode {mode!r}; choose threads, processes or both")
    args = _point_args(w, presets, machine, kinds, list(tasks), duration_ms, seed,
                       warmup_ms, min_cycles, max_window_ms)
    out: list[Point] = []
    if jobs <= 1 or len(args) <= 1:
        for a in args:
            p = _run_args(a)
            out.append(p)
            if progress:
                progress(p)
        return out
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futs = [pool.submit(_run_args, a) for a in args]
        res: dict[int, Point] = {}
        for i, f in enumerate(futs):
            res[i] = f.result()
            if progress:
                progress(res[i])
        out = [res[i] for i in range(len(args))]
    return out


def median_points(points: Sequence[Point]) -> list[Point]:
    """Collapse repeated seeds into one point per key (median faults_per_s)."""
    groups: dict[tuple[str, str, str, str, int], list[Point]] = {}
    for p in points:
        groups.setdefault(p.key(), []).append(p)
    out = []
    for ps in groups.values():
        ps = sorted(ps, key=lambda p: p.faults_per_s)
        mid = ps[len(ps) // 2]
        mid.faults_per_s = statistics.median(p.faults_per_s for p in ps)
        out.append(mid)
    return out


def trace_json(events: Sequence[TraceEvent], names: Sequence[str] | None = None) -> str:
    """A Chrome/Perfetto trace (JSON) of a window of steps: one track per CPU."""
    import json

    evs = [{"name": e.label, "ph": "X", "ts": e.t / 1e3, "dur": max(e.dur, 1.0) / 1e3,
            "pid": 0, "tid": e.cpu,
            "args": {"task": names[e.tid] if names else e.tid}} for e in events]
    return json.dumps({"traceEvents": evs, "displayTimeUnit": "ns"})
