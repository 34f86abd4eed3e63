"""Matplotlib plots of simulated points (Agg backend, no display needed).

* :func:`throughput_figure` - faults/s against tasks, one line per (preset, kind);
* :func:`ratio_figure` - threads/processes against tasks, one line per preset,
  optionally with measured reference ratios;
* :func:`throughput_svg` / :func:`ratio_svg` - the same as SVG text (for the report);
* :func:`save_plot` - the CLI's ``--plot FILE`` (format from the suffix).
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


def throughput_figure(points: Sequence[Point], title: str | None = None) -> Any:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    unit = "pairs/s" if points and points[0].workload.startswith("mmap") else "faults/s"
    for (wl, pre, kind), ps in sorted(_series(points).items()):
        ax.plot([p.tasks for p in ps], [p.faults_per_s for p in ps], marker="o",
                linestyle="-" if kind == "threads" else "--", label=f"{wl} {pre} {kind}")
    ax.set_xlabel("tasks")
    ax.set_ylabel(f"{unit} (sum over tasks)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    machine = points[0].machine if points else ""
    ax.set_title(title or f"simulated throughput on {machine}")
    fig.tight_layout()
    return fig


def ratio_figure(points: Sequence[Point], measured: Mapping[int, float] | None = None,
                 title: str | None = None) -> Any:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ser = _series(points)
    for (wl, pre, kind), ps in sorted(ser.items()):
        if kind != "threads" or (wl, pre, "processes") not in ser:
            continue
        proc = {p.tasks: p.faults_per_s for p in ser[(wl, pre, "processes")]}
        xs = [p.tasks for p in ps if proc.get(p.tasks)]
        ys = [p.faults_per_s / proc[p.tasks] for p in ps if proc.get(p.tasks)]
        ax.plot(xs, ys, marker="o", label=f"{wl} {pre} (simulated)")
    if measured:
        ks = sorted(measured)
        ax.plot(ks, [measured[k] for k in ks], marker="s", color="black", linestyle=":",
                label="measured")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("tasks")
    ax.set_ylabel("threads / processes")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "threads vs processes")
    fig.tight_layout()
    return fig


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    return buf.getvalue()


def throughput_svg(points: Sequence[Point], title: str | None = None) -> str:
    return _svg(throughput_figure(points, title))


def ratio_svg(points: Sequence[Point], measured: Mapping[int, float] | None = None,
              title: str | None = None) -> str:
    return _svg(ratio_figure(points, measured, title))


def save_plot(points: Sequence[Point], path: str) -> None:
    """Throughput (left) and threads/processes (right) in one file."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.0))
    ser = _series(points)
    for (wl, pre, kind), ps in sorted(ser.items()):
        a.plot([p.tasks for p in ps], [p.faults_per_s for p in ps], marker="o",
               linestyle="-" if kind == "threads" else "--", label=f"{pre} {kind}")
        if kind == "threads" and (wl, pre, "processes") in ser:
            proc = {p.tasks: p.faults_per_s for p in ser[(wl, pre, "processes")]}
            xs = [p.tasks for p in ps if proc.get(p.tasks)]
            b.plot(xs, [p.faults_per_s / proc[p.tasks] for p in ps if proc.get(p.tasks)],
                   marker="o", label=pre)
    wl = points[0].workload if points else ""
    a.set_title(f"{wl}: throughput ({points[0].machine if points else ''})")
    a.set_xlabel("tasks")
    a.set_ylabel("ops/s")
    a.set_ylim(bottom=0)
    a.grid(alpha=0.3)
    a.legend(fontsize=7)
    b.set_title("threads / processes")
    b.axhline(1.0, color="grey", linewidth=0.8)
    b.set_xlabel("tasks")
    b.set_ylim(bottom=0)
    b.grid(alpha=0.3)
    if b.lines[1:]:
        b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
