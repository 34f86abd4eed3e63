"""``coverage.png``: a campaign's coverage over time (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pervma.check.fuzz.campaign import Point


def plot_coverage(points: Sequence[Point], path: Path, title: str) -> None:
    """Racing pairs, corpus size and unique violations against programs
    (left) and against executions (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    try:
        x = [p.program + 1 for p in points]
        ex = [p.executions for p in points]
        pairs = [p.racing_pairs for p in points]
        left.step(x, pairs, where="post", label="racing pairs")
        left.step(x, [p.corpus for p in points], where="post", label="corpus programs")
        left.step(x, [p.unique_violations for p in points], where="post",
                  label="unique violations")
        left.set_xlabel("programs")
        left.set_ylabel("count")
        left.legend(loc="upper left")
        left.grid(alpha=0.3)
        right.step(ex, pairs, where="post", label="racing pairs")
        right.set_xlabel("executions")
        right.set_ylabel("racing pairs")
        right.grid(alpha=0.3)
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
