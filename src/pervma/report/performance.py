"""The Performance section: simulated throughput of the key workloads —
legacy vs universal, threads vs processes — with the real-16core
measurements overlaid where they exist, where the time goes, and SMP=n (one
CPU): fault latency and throughput of ``legacy-up`` against ``universal-up``
while a writer sleeps holding mmap_lock.  Points come from
:func:`pervma.sim.api.run_point`, the same call ``pervma simulate`` makes; the
SMP=n runs from :func:`pervma.sim.latency.writer_sleep_latency` (bounded by
their fault count, a fraction of a second each, so they run in this process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pervma.report import anchors
from pervma.report import html as H
from pervma.report.section import Section, describe
from pervma.report.settings import Settings

# SMP=n (one CPU): the pre-series uniprocessor world against the series.
UP_PRESETS = ("legacy-up", "universal-up")
UP_FAULTS = 400  # faults per run: the run is bounded by this count
UP_GAP_US = 20.0  # user work between two faults, and between two writer sessions

# Where time goes: Point fields in milliseconds of task time in the window.
TIME_FIELDS = (
    ("mmap_lock_read_wait_ms", "mmap_lock read wait"),
    ("mmap_lock_write_wait_ms", "mmap_lock write wait"),
    ("vma_lock_wait_ms", "VMA lock wait"),
    ("other_wait_ms", "other waits"),
    ("line_wait_ms", "cache-line wait"),
    ("line_transfer_ms", "cache-line transfer"),
    ("tlb_ms", "TLB shootdowns"),
    ("mem_bw_wait_ms", "memory bandwidth"),
    ("zone_wait_ms", "zone lock"),
    ("io_ms", "I/O"),
)


@dataclass
class Plan:
    points: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)


def plan(s: Settings) -> Plan:
    p = Plan()
    try:
        from pervma.sim.machine import load_machine
        from pervma.sim.workloads import get_workload

        load_machine(s.sim_machine)
    except Exception as exc:  # noqa: BLE001 - the engine is missing
        p.errors.append(("simulator", f"pervma.sim is not available ({describe(exc)})"))
        return p
    for wl in s.sim_workloads:
        try:
            w = get_workload(wl)
        except Exception as exc:  # noqa: BLE001
            p.errors.append((f"workload {wl}", describe(exc)))
            continue
        p.units[wl] = "pairs/s" if w.unit == "pairs" else "faults/s"
        p.descriptions[wl] = w.description
        # simulate()'s order: presets, then task counts, then kinds
        for pre in s.sim_presets:
            for n in s.sim_tasks:
                for kind in ("threads", "processes"):
                    if kind in w.modes:
                        args = (wl, pre, s.sim_machine, kind, n, s.sim_duration_ms, s.sim_seed)
                        p.points.append((f"{wl}.{pre}.{kind}.{n}", args))
    return p


def build(p: Plan, results: dict[str, dict[str, Any]], s: Settings) -> Section:
    sec = Section("performance", "Performance: what the locks buy in throughput (simulated)")
    sec.add(H.tag("p", f"Timed simulation on the {s.sim_machine} machine profile, "
                  f"{s.sim_duration_ms:g} ms simulated per point, seed {s.sim_seed} (pervma "
                  f"simulate WORKLOAD --preset {','.join(s.sim_presets)} --tasks "
                  f"{','.join(map(str, s.sim_tasks))} --duration-ms {s.sim_duration_ms:g} "
                  f"--min-cycles 0 --machine {s.sim_machine} --seed {s.sim_seed}: exact windows, "
                  f"not stretched to whole cycles). Simulated, not measured; "
                  f"black markers are measurements ({anchors.SOURCE})."))
    for what, msg in p.errors:
        sec.fail(what, msg)
    points = []
    for tag, _args in p.points:
        out = results.get(tag, {"error": "not run"})
        if "error" in out:
            sec.fail(f"simulate {tag}", out["error"])
        else:
            points.append(out["point"])
    if not points:
        return sec
    from pervma.sim.results import to_csv

    sec.csv["performance.csv"] = to_csv(points)
    measured_rows: list[tuple[str, str, int, float]] = []
    for wl in dict.fromkeys(p.units):
        pts = [pt for pt in points if pt.workload == wl]
        if pts:
            _render_workload(sec, wl, pts, p, measured_rows)
    if measured_rows:
        sec.csv["measured.csv"] = ("scenario,kind,tasks,faults_per_s_median\n" + "".join(
            f"{w},{k},{n},{v:.0f}\n" for w, k, n, v in measured_rows))
    sec.add(H.join([H.link("performance.csv", "simulated points (CSV)"), " · ",
                    H.link("measured.csv", "measurements (CSV)") if measured_rows else ""]))
    _render_time(sec, points)
    with sec.guard("SMP=n latency (pervma.sim.latency)"):
        _render_up(sec, s)
    return sec


UP_COLUMNS = ("preset", "smp", "preempt", "per_vma_lock", "machine", "seed", "faults",
              "gap_us", "writer_io_us", "sim_ms", "faults_per_s", "writer_sessions",
              "writer_sessions_per_s", "lat_p50_us", "lat_p99_us", "lat_max_us",
              "lat_mean_us", "mmap_lock_wait_ms", "vmstat_vma_lock_success", "vmstat_pgfault")


def _render_up(sec: Section, s: Settings) -> None:
    """SMP=n: faults on one CPU while another task sleeps holding mmap_lock for write."""
    from pervma.config import Config
    from pervma.report.plots import svg
    from pervma.sim.latency import writer_sleep_latency
    from pervma.sim.machine import load_machine
    from pervma.sim.plot import latency_figure

    mach = load_machine(s.sim_machine)
    io_us = mach.io_ns / 1e3
    sec.add(H.tag("h3", "SMP=n (one CPU): faults while a writer sleeps on mmap_lock"))
    sec.add(H.tag("p", f"One CPU. A writer task loops: mmap_write_lock, sleep {io_us:g} us "
                  f"(the {mach.name} profile's I/O time), mmap_write_unlock, {UP_GAP_US:g} us "
                  f"of user work. A second task of the same process faults {UP_FAULTS} fresh "
                  f"pages of a VMA the writer never touches, one every {UP_GAP_US:g} us of user "
                  "work. legacy-up is the kernel before the series with SMP=n (PER_VMA_LOCK "
                  "depended on SMP, so every fault takes mmap_lock); universal-up is the "
                  "series (the fault takes the VMA's lock and never looks at mmap_lock). On "
                  "one CPU the faulting task runs while the writer sleeps and keeps the CPU "
                  "for its slice once the writer is woken; a release of mmap_lock only wakes "
                  "the writer, so between writer sessions the faulting task steals the free "
                  "lock (rwsem lock stealing). Without per-VMA locks most faults therefore "
                  "cost what a fault costs, and the fault that finds the writer inside its "
                  "session (one per session) waits out its I/O: the difference is in the "
                  "tail and the mean, not the median. Latency is from the trap to the "
                  "fault's return; throughput is the faulting task's faults per simulated "
                  f"second. Simulated, seed {s.sim_seed}; pervma.sim.latency."
                  f"writer_sleep_latency(PRESET, faults={UP_FAULTS}, machine="
                  f"'{s.sim_machine}', seed={s.sim_seed})."))
    results = [writer_sleep_latency(pre, machine=mach, faults=UP_FAULTS,
                                    gap_ns=UP_GAP_US * 1e3, seed=s.sim_seed)
               for pre in UP_PRESETS]
    rows, csv_rows = [], []
    for r in results:
        cfg = Config.preset(r.preset)
        per_s = r.writer_sessions / (r.sim_ms / 1e3) if r.sim_ms else 0.0
        rows.append([r.preset, "y" if r.per_vma_lock else "n", r.faults,
                     round(r.p50_us, 2), round(r.p99_us, 2), round(r.max_us, 2),
                     round(r.faults_per_s), round(per_s), round(r.mmap_lock_wait_ms, 3),
                     r.vmstat.get("vma_lock_success", 0)])
        vals: list[object] = [r.preset, int(cfg.SMP), int(cfg.PREEMPT), int(r.per_vma_lock),
                              mach.name, s.sim_seed, r.faults, UP_GAP_US, io_us, r.sim_ms,
                              r.faults_per_s, r.writer_sessions, per_s, r.p50_us, r.p99_us,
                              r.max_us, r.mean_us, r.mmap_lock_wait_ms,
                              r.vmstat.get("vma_lock_success", 0), r.vmstat.get("pgfault", 0)]
        csv_rows.append(",".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in vals))
    sec.csv["performance-up.csv"] = ",".join(UP_COLUMNS) + "\n" + "".join(
        r + "\n" for r in csv_rows)
    sec.add(H.table(["preset", "PER_VMA_LOCK", "faults", "median latency us",
                     "p99 latency us", "max latency us", "faults/s (faulting task)",
                     "writer sessions/s", "mmap_lock wait ms", "vma_lock_success"], rows))
    sec.add(H.inline_svg(
        svg(latency_figure(results, title=f"SMP=n on {mach.name}: a writer sleeps "
                           f"{io_us:g} us holding mmap_lock")),
        "Left: the share of faults (y, %) that took at most x microseconds (log scale), "
        "one curve per preset, markers at every 10th percentile. Right: the faulting "
        "task's throughput in faults per simulated second, value on each bar."))
    sec.add(H.link("performance-up.csv", "SMP=n runs (CSV)"))
    by = {r.preset: r for r in results}
    lg, un = by["legacy-up"], by["universal-up"]
    sec.summary.append(f"SMP=n, writer sleeping on mmap_lock: fault p99 {lg.p99_us:.1f} us "
                       f"(legacy-up) vs {un.p99_us:.1f} us (universal-up), max "
                       f"{lg.max_us:.1f} vs {un.max_us:.1f} us, median {lg.p50_us:.1f} vs "
                       f"{un.p50_us:.1f} us; {lg.faults_per_s:,.0f} vs "
                       f"{un.faults_per_s:,.0f} faults/s")


def _render_workload(sec: Section, wl: str, pts: list[Any], p: Plan,
                     measured_rows: list[tuple[str, str, int, float]]) -> None:
    from pervma.report.plots import svg
    from pervma.sim.plot import legend_below, ratio_svg, throughput_figure

    sec.add(H.tag("h3", f"{wl}: {p.descriptions.get(wl, '')}"))
    meas = anchors.for_workload(wl)
    fig = throughput_figure(pts, title=f"{wl}: simulated throughput ({pts[0].machine})")
    unit = p.units.get(wl, "faults/s")
    if meas:
        ax = fig.axes[0]
        for kind, marker in (("threads", "s"), ("processes", "D")):
            ks = sorted(n for (k, n) in meas if k == kind)
            ax.plot(ks, [meas[(kind, n)] for n in ks], marker=marker, color="black",
                    markerfacecolor="none", linestyle=":", label=f"measured {kind}")
        ax.relim()  # the measured lines may reach above the simulated ones
        ax.autoscale(axis="y")
        ax.set_ylim(bottom=0)
        legend_below(ax)
        measured_rows += [(wl, k, n, v) for (k, n), v in sorted(meas.items())]
    sec.add(H.inline_svg(svg(fig), f"{wl}: simulated throughput (y: {unit} summed over all "
                         "tasks) against the number of tasks (x: threads sharing one mm, or "
                         "processes with one mm each), legacy vs universal; threads solid, "
                         "processes dashed, one marker shape per line"
                         + ("; measured (pfbench on real-16core, median of 3) in black, "
                            "hollow markers, dotted" if meas else "")
                         + ". A legend entry 'identical to ...' marks a line drawn exactly "
                         "over another, 'overlaps ...' one within 2% of the largest plotted value of "
                         "another (both with large hollow markers)."))
    kinds = {pt.kind for pt in pts}
    if {"threads", "processes"} <= kinds:
        sec.add(H.inline_svg(ratio_svg(pts, anchors.ratios(wl) or None,
                                       title=f"{wl}: threads / processes"),
                             f"{wl}: threads/processes ratio (y: threads' throughput divided "
                             "by processes' at the same task count; 1.0, the grey line, means "
                             "sharing one mm costs nothing) against tasks (x); 'identical to' "
                             "and 'overlaps' in the legend as above"
                             + ("; the measured ratio in black" if meas else "")))
    rows = []
    by = {(pt.preset, pt.kind, pt.tasks): pt for pt in pts}
    presets = list(dict.fromkeys(pt.preset for pt in pts))
    for n in sorted({pt.tasks for pt in pts}):
        row: list[object] = [n]
        for pre in presets:
            th, pr = by.get((pre, "threads", n)), by.get((pre, "processes", n))
            row += [th.faults_per_s if th else "-", pr.faults_per_s if pr else "-",
                    round(th.faults_per_s / pr.faults_per_s, 3) if th and pr and
                    pr.faults_per_s else "-"]
        mt, mp = meas.get(("threads", n)), meas.get(("processes", n))
        row += [mt if mt is not None else "-", mp if mp is not None else "-",
                round(mt / mp, 3) if mt and mp else "-"]
        rows.append(row)
    header = ["tasks"]
    for pre in presets:
        header += [f"{pre} threads {unit}", f"{pre} processes {unit}", f"{pre} thr/proc"]
    header += ["measured threads", "measured processes", "measured thr/proc"]
    sec.add(H.table(header, rows))
    top = max(pt.tasks for pt in pts)
    parts = []
    for pre in presets:
        th, pr = by.get((pre, "threads", top)), by.get((pre, "processes", top))
        if th:
            parts.append(f"{pre} {th.faults_per_s:,.0f}"
                         + (f" (thr/proc {th.faults_per_s / pr.faults_per_s:.2f})"
                            if pr and pr.faults_per_s else ""))
    m = anchors.ratios(wl).get(top)
    sec.summary.append(f"{wl} at {top} tasks, threads {unit}: " + "; ".join(parts)
                       + (f"; measured thr/proc {m:.2f}" if m else ""))


def _render_time(sec: Section, points: list[Any]) -> None:
    from pervma.report.plots import bars

    sec.add(H.tag("h3", "Where the time goes"))
    sec.add(H.tag("p", "Task time in the measured window at the largest task count, split by "
                  "what the tasks waited for; the rest is the work itself (simulated ms, "
                  "summed over tasks)."))
    top: dict[tuple[str, str, str], Any] = {}
    for pt in points:
        k = (pt.workload, pt.preset, pt.kind)
        if k not in top or pt.tasks > top[k].tasks:
            top[k] = pt
    labels, rows = [], []
    series: dict[str, list[float]] = {label: [] for _, label in TIME_FIELDS}
    series["work"] = []
    for (wl, pre, kind), pt in sorted(top.items()):
        labels.append(f"{wl} {pre} {kind} ×{pt.tasks}")
        total = pt.sim_ms * pt.tasks
        waits = [float(getattr(pt, f)) for f, _ in TIME_FIELDS]
        for (_, label), v in zip(TIME_FIELDS, waits, strict=True):
            series[label].append(v)
        series["work"].append(max(0.0, total - sum(waits)))
        rows.append([wl, pre, kind, pt.tasks, round(total, 3), *[round(v, 3) for v in waits],
                     pt.tlb_shootdowns, pt.fallbacks])
    series = {k: v for k, v in series.items() if any(v)}
    sec.add(H.inline_svg(bars(labels, series, "task time in window (simulated ms)",
                              "where the time goes", stacked=True),
                         "Where the time goes at the largest task count: one stack per "
                         "(workload, preset, threads or processes × tasks); y is simulated task "
                         "time in the measured window in ms, summed over tasks, split by what "
                         "the tasks waited for ('work' is the rest: the faults' own work and "
                         "user time); the total is on top of each stack"))
    sec.add(H.table(["workload", "preset", "kind", "tasks", "task ms",
                     *[label for _, label in TIME_FIELDS], "shootdowns", "fallbacks"], rows))
