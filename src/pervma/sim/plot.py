"""Matplotlib plots of simulated points (Agg backend, no display needed).

* :func:`throughput_figure` - faults/s against tasks, one line per (preset, kind);
* :func:`ratio_figure` - threads/processes against tasks, one line per preset,
  optionally with measured reference ratios;
* :func:`throughput_svg` / :func:`ratio_svg` - the same as SVG text (for the report);
* :func:`save_plot` - the CLI's ``--plot FILE`` (format from the suffix);
* :func:`latency_figure` - fault latency distribution and throughput of
  :func:`pervma.sim.latency.writer_sleep_latency` runs (the report's SMP=n part).

Every line has markers; a line drawn exactly over another says so in its legend
entry ("identical to ..."), one within 2% of the largest plotted value
of another "overlaps ...", and both get large hollow markers; legends sit below the axes,
never over the data.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pervma.sim.results import Point  # noqa: E402


def _series(points: Sequence[Point]) -> dict[tuple[str, str, str], list[Point]]:
    out: dict[tuple[str, str, str], list[Point]] = {}
    for p in points:
        out.setdefault((p.workload, p.preset, p.kind), []).append(p)
    for v in out.values():
        v.sort(key=lambda p: p.tasks)
    return out


MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")
TASKS_LABEL = "tasks (threads of one process, or processes)"


def _unit(points: Sequence[Point]) -> str:
    return "pairs/s" if points and points[0].workload.startswith("mmap") else "faults/s"


def _tasks_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(TASKS_LABEL)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_lines(ax: Any, lines: Sequence[tuple[str, list[float], list[float], str]],
               close: float = 0.02) -> None:
    """Draw (label, xs, ys, linestyle) lines, each with its own marker.  A line
    drawn exactly over an earlier one says so in its label ("identical to ...");
    one within ``close`` of the y range of an earlier one everywhere says
    "overlaps ...".  Both get large hollow markers, so that neither hides the
    other."""
    top = max((abs(y) for _, _, ys, _ in lines for y in ys), default=0.0) or 1.0
    drawn: list[tuple[str, list[float], list[float]]] = []
    for i, (label, xs, ys, style) in enumerate(lines):
        kw: dict[str, Any] = {}
        for name, xs0, ys0 in drawn:
            if xs0 != xs:
                continue
            if ys0 == ys:
                label = f"{label} (identical to {name})"
            elif all(abs(a - b) <= close * top for a, b in zip(ys0, ys, strict=True)):
                label = f"{label} (overlaps {name})"
            else:
                continue
            kw = dict(markerfacecolor="none", markersize=9, markeredgewidth=1.5)
            break
        else:
            drawn.append((label, xs, ys))
        ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], linestyle=style, label=label, **kw)


def throughput_lines(points: Sequence[Point], with_workload: bool = True
                     ) -> list[tuple[str, list[float], list[float], str]]:
    out = []
    for (wl, pre, kind), ps in sorted(_series(points).items()):
        label = f"{wl} {pre} {kind}" if with_workload else f"{pre} {kind}"
        out.append((label, [float(p.tasks) for p in ps], [p.faults_per_s for p in ps],
                    "-" if kind == "threads" else "--"))
    return out


def ratio_lines(points: Sequence[Point], with_workload: bool = True
                ) -> list[tuple[str, list[float], list[float], str]]:
    out = []
    ser = _series(points)
    for (wl, pre, kind), ps in sorted(ser.items()):
        if kind != "threads" or (wl, pre, "processes") not in ser:
            continue
        proc = {p.tasks: p.faults_per_s for p in ser[(wl, pre, "processes")]}
        xs = [float(p.tasks) for p in ps if proc.get(p.tasks)]
        ys = [p.faults_per_s / proc[p.tasks] for p in ps if proc.get(p.tasks)]
        out.append((f"{wl} {pre} (simulated)" if with_workload else pre, xs, ys, "-"))
    return out


def throughput_figure(points: Sequence[Point], title: str | None = None) -> Any:
    """Throughput against tasks, one line per (workload, preset, kind); the
    legend sits below the axes (call :func:`legend_below` again after adding
    lines)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    plot_lines(ax, throughput_lines(points))
    _tasks_axis(ax)
    ax.set_ylabel(f"{_unit(points)} (sum over tasks)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    legend_below(ax)
    machine = points[0].machine if points else ""
    ax.set_title(title or f"simulated throughput on {machine}")
    fig.tight_layout()
    return fig


def ratio_figure(points: Sequence[Point], measured: Mapping[int, float] | None = None,
                 title: str | None = None) -> Any:
    """threads/processes against tasks (1.0: threads lose nothing to sharing an mm)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    lines = ratio_lines(points)
    if measured:
        ks = sorted(measured)
        lines.append(("measured", [float(k) for k in ks], [measured[k] for k in ks], ":"))
    plot_lines(ax, lines)
    if measured:
        ax.lines[-1].set_color("black")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    _tasks_axis(ax)
    ax.set_ylabel("threads / processes (throughput ratio)")
    ax.set_ylim(0, max([1.0] + [y for _, _, ys, _ in lines for y in ys]) * 1.08)
    ax.grid(alpha=0.3)
    legend_below(ax)
    ax.set_title(title or "threads vs processes")
    fig.tight_layout()
    return fig


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def throughput_svg(points: Sequence[Point], title: str | None = None) -> str:
    return _svg(throughput_figure(points, title))


def ratio_svg(points: Sequence[Point], measured: Mapping[int, float] | None = None,
              title: str | None = None) -> str:
    return _svg(ratio_figure(points, measured, title))


def save_plot(points: Sequence[Point], path: str) -> None:
    """Throughput (left) and threads/processes (right) in one file."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.4))
    plot_lines(a, throughput_lines(points, with_workload=False))
    plot_lines(b, ratio_lines(points, with_workload=False))
    wl = points[0].workload if points else ""
    a.set_title(f"{wl}: throughput ({points[0].machine if points else ''})")
    _tasks_axis(a)
    a.set_ylabel(f"{_unit(points)} (sum over tasks)")
    a.set_ylim(bottom=0)
    a.grid(alpha=0.3)
    legend_below(a)
    b.set_title("threads / processes")
    b.axhline(1.0, color="grey", linewidth=0.8)
    _tasks_axis(b)
    b.set_ylabel("threads / processes (throughput ratio)")
    b.set_ylim(bottom=0)
    b.grid(alpha=0.3)
    legend_below(b)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def latency_figure(results: Sequence[Any], title: str | None = None) -> Any:
    """Fault latency of :func:`pervma.sim.latency.writer_sleep_latency` runs:
    the cumulative distribution (left, log x) and the faulting task's
    throughput (right, bars labelled with their values)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.6), width_ratios=(3, 2))
    markers = ("o", "s", "D", "^", "v")
    curves: dict[tuple[float, ...], str] = {}
    for i, r in enumerate(results):
        lat = list(r.latencies_us)
        n = len(lat)
        ys = [100.0 * (k + 1) / n for k in range(n)]
        every = [min(n - 1, round(q * (n - 1) / 10)) for q in range(11)]
        label = r.preset
        if tuple(lat) in curves:  # drawn exactly over an earlier curve: say so
            label += f" (identical to {curves[tuple(lat)]})"
        curves.setdefault(tuple(lat), r.preset)
        a.step(lat, ys, where="post", marker=markers[i % len(markers)], markevery=every,
               markersize=5, label=label)
    a.set_xscale("log")
    a.set_xlabel("fault latency (us, log scale)")
    a.set_ylabel("faults taking at most x (%)")
    a.set_ylim(0, 102)
    a.grid(alpha=0.3)
    a.set_title("latency distribution", fontsize=9)
    legend_below(a, ncol=2)
    names = [r.preset for r in results]
    vals = [r.faults_per_s for r in results]
    bars = b.bar(range(len(vals)), vals, color=[f"C{i}" for i in range(len(vals))])
    b.bar_label(bars, labels=[f"{v:,.0f}" for v in vals], fontsize=8, padding=2)
    b.set_xticks(range(len(vals)))
    b.set_xticklabels(names, fontsize=8)
    b.set_ylabel("faults per simulated second")
    b.set_ylim(0, max(vals + [1.0]) * 1.2)
    b.grid(axis="y", alpha=0.3)
    b.set_title("faulting task's throughput", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def legend_below(ax: Any, ncol: int = 2, fontsize: float = 7) -> Any:
    """A legend under the axes (outside the data), or none when nothing is labelled."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    return ax.legend(handles, labels, fontsize=fontsize, loc="upper center",
                     bbox_to_anchor=(0.5, -0.22), ncol=ncol, frameon=False)
