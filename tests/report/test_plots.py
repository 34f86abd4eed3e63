"""The report's plots: markers on every line, identical lines named, legends off
the data, values on the bars, labelled axes."""

from __future__ import annotations

from typing import Any

import pytest

from pervma.report.plots import bars_figure
from pervma.sim.latency import writer_sleep_latency
from pervma.sim.plot import latency_figure, ratio_figure, throughput_figure
from pervma.sim.results import Point


def _points(same: bool) -> list[Point]:
    pts = []
    for pre, thr, proc in (("legacy", 0.8, 1.0),
                           ("universal", 0.8 if same else 0.95, 1.0 if same else 1.1)):
        for kind, k in (("threads", thr), ("processes", proc)):
            for n in (1, 4, 16):
                pts.append(Point("shared", pre, "xeon16", kind, n, 1e5 * n * k))
    return pts


def _legend_is_off_the_axes(fig: Any) -> None:
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None:
            assert not leg.get_window_extent(r).overlaps(ax.get_window_extent(r))


def _every_line_has_a_marker(fig: Any) -> int:
    n = 0
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_label().startswith("_"):  # reference lines (1.0), not data
                continue
            assert line.get_marker() not in (None, "", "None", " ")
            n += 1
    return n


def _labels(fig: Any) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]


@pytest.mark.parametrize("make", [throughput_figure, ratio_figure])
def test_lines_have_markers_and_the_legend_is_below(make: Any) -> None:
    fig = make(_points(same=False))
    assert _every_line_has_a_marker(fig) == (4 if make is throughput_figure else 2)
    _legend_is_off_the_axes(fig)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("tasks") and ax.get_ylabel()
    assert not any("identical" in t for t in _labels(fig))


def test_a_line_drawn_over_another_is_named_identical() -> None:
    fig = throughput_figure(_points(same=True))
    labels = _labels(fig)
    assert "shared universal threads (identical to shared legacy threads)" in labels
    assert "shared universal processes (identical to shared legacy processes)" in labels
    assert "shared legacy threads" in labels
    ratio = ratio_figure(_points(same=True))
    assert _labels(ratio) == ["shared legacy (simulated)",
                              "shared universal (simulated) (identical to shared legacy "
                              "(simulated))"]


def test_a_line_within_two_percent_of_another_is_named_overlapping() -> None:
    pts = [Point("shared", pre, "xeon16", "threads", n, 1e5 * n * (1.0 if pre == "legacy"
                                                                   else 0.99))
           for pre in ("legacy", "universal") for n in (1, 4, 16)]
    fig = throughput_figure(pts)
    assert _labels(fig) == ["shared legacy threads",
                            "shared universal threads (overlaps shared legacy threads)"]
    over = fig.axes[0].get_lines()[1]
    assert over.get_markerfacecolor() == "none"  # hollow: the line below shows through


def test_bars_carry_their_values_and_keep_the_legend_outside() -> None:
    fig = bars_figure(["running", "gated"], {"bytes per VMA": [192.0, 176.0]},
                      "bytes per VMA", "bytes")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["192", "176"]
    stacked = bars_figure(["a", "b"], {"wait": [1.0, 2.5], "work": [3.0, 4.0]}, "ms", "t",
                          stacked=True)
    assert [t.get_text() for t in stacked.axes[0].texts] == ["4", "6.5"]
    _legend_is_off_the_axes(stacked)


def test_latency_figure_labels_its_axes_and_bars() -> None:
    res = [writer_sleep_latency(p, faults=40) for p in ("legacy-up", "universal-up")]
    fig = latency_figure(res)
    assert _every_line_has_a_marker(fig) == 2
    _legend_is_off_the_axes(fig)
    cdf, thr = fig.axes
    assert "us" in cdf.get_xlabel() and "%" in cdf.get_ylabel()
    assert "second" in thr.get_ylabel()
    assert [t.get_text() for t in thr.texts] == [f"{r.faults_per_s:,.0f}" for r in res]
