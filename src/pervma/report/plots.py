"""Small matplotlib helpers (Agg backend) returning SVG text."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams["svg.hashsalt"] = "pervma-report"  # stable ids across runs


def svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    return buf.getvalue()


def bars(labels: list[str], series: dict[str, list[float]], ylabel: str, title: str,
         stacked: bool = False) -> str:
    """Grouped (or stacked) bars: one group per label, one bar per series."""
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    n = max(1, len(series))
    width = 0.8 if stacked else 0.8 / n
    bottom = [0.0] * len(labels)
    for i, (name, ys) in enumerate(series.items()):
        if stacked:
            ax.bar(range(len(labels)), ys, width, bottom=bottom, label=name)
            bottom = [b + y for b, y in zip(bottom, ys, strict=True)]
        else:
            xs = [x - 0.4 + width * (i + 0.5) for x in range(len(labels))]
            ax.bar(xs, ys, width, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return svg(fig)
