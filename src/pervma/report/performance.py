"""The Performance section: simulated throughput of the key workloads —
legacy vs universal, threads vs processes — with the real-16core
measurements overlaid where they exist, and where the time goes.  Points come
from :func:`pervma.sim.api.run_point`, the same call ``pervma simulate`` makes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pervma.report import anchors
from pervma.report import html as H
from pervma.report.section import Section, describe
from pervma.report.settings import Settings

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
                  f"--machine {s.sim_machine} --seed {s.sim_seed}). Simulated, not measured; "
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
    return sec


def _render_workload(sec: Section, wl: str, pts: list[Any], p: Plan,
                     measured_rows: list[tuple[str, str, int, float]]) -> None:
    from pervma.report.plots import svg
    from pervma.sim.plot import ratio_svg, throughput_figure

    sec.add(H.tag("h3", f"{wl}: {p.descriptions.get(wl, '')}"))
    meas = anchors.for_workload(wl)
    fig = throughput_figure(pts, title=f"{wl}: simulated throughput ({pts[0].machine})")
    if meas:
        ax = fig.axes[0]
        for kind, marker in (("threads", "s"), ("processes", "D")):
            ks = sorted(n for (k, n) in meas if k == kind)
            ax.plot(ks, [meas[(kind, n)] for n in ks], marker=marker, color="black",
                    linestyle=":", label=f"measured {kind}")
        ax.legend(fontsize=7)
        measured_rows += [(wl, k, n, v) for (k, n), v in sorted(meas.items())]
    sec.add(H.inline_svg(svg(fig), f"{wl}: throughput against tasks, legacy vs universal, "
                         "threads (solid) vs processes (dashed)"
                         + ("; measured in black" if meas else "")))
    kinds = {pt.kind for pt in pts}
    if {"threads", "processes"} <= kinds:
        sec.add(H.inline_svg(ratio_svg(pts, anchors.ratios(wl) or None,
                                       title=f"{wl}: threads / processes"),
                             f"{wl}: threads/processes ratio"
                             + (" with the measured ratio" if meas else "")))
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
    unit = p.units.get(wl, "faults/s")
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
    sec.add(H.inline_svg(bars(labels, series, "task ms in window", "where the time goes",
                              stacked=True), "Where the time goes at the largest task count"))
    sec.add(H.table(["workload", "preset", "kind", "tasks", "task ms",
                     *[label for _, label in TIME_FIELDS], "shootdowns", "fallbacks"], rows))
