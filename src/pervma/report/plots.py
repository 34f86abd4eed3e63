"""Small matplotlib helpers (Agg backend) returning SVG text."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams["svg.hashsalt"] = "pervma-report"  # stable ids across runs


def svg(fig: Any) -> str:
    """The figure as SVG text; the bounding box includes legends outside the axes."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _label(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.3g}"


def bars(labels: list[str], series: dict[str, list[float]], ylabel: str, title: str,
         stacked: bool = False, value_labels: bool = True) -> str:
    """:func:`bars_figure` as SVG text."""
    return svg(bars_figure(labels, series, ylabel, title, stacked, value_labels))


def bars_figure(labels: list[str], series: dict[str, list[float]], ylabel: str, title: str,
                stacked: bool = False, value_labels: bool = True) -> Any:
    """Grouped (or stacked) bars: one group per label, one bar per series.

    ``value_labels`` writes each bar's value on it (stacked: the total on top of
    each stack).  The legend (more than one series) sits right of the axes,
    outside the data."""
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    n = max(1, len(series))
    width = 0.8 if stacked else 0.8 / n
    bottom = [0.0] * len(labels)
    containers = []
    for i, (name, ys) in enumerate(series.items()):
        if stacked:
            containers.append(ax.bar(range(len(labels)), ys, width, bottom=bottom, label=name))
            bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
        else:
            xs = [x - 0.4 + width * (i + 0.5) for x in range(len(labels))]
            containers.append(ax.bar(xs, ys, width, label=name))
    if value_labels and containers:
        if stacked:
            ax.bar_label(containers[-1], labels=[_label(t) for t in bottom], fontsize=7,
                         padding=2)
            top = max(bottom, default=0.0)
        else:
            for c, ys in zip(containers, series.values(), strict=True):
                ax.bar_label(c, labels=[_label(y) for y in ys], fontsize=7, padding=2)
            top = max((y for ys in series.values() for y in ys), default=0.0)
        if top > 0:
            ax.set_ylim(0, top * 1.15)  # room for the labels inside the axes
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig
