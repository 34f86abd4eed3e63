"""Text from the model and the system is escaped in the HTML."""

from __future__ import annotations

import re
from typing import Any

from pervma.report import correctness, cost
from pervma.report import html as H
from pervma.report.runner import render
from pervma.report.section import Section
from pervma.report.settings import TINY

from .conftest import HOSTILE, Report

EVIL = "<script>alert('x')</script></pre><img src=x onerror=alert(1)>"


def _no_markup_from(text: str, page: str) -> None:
    assert re.search(r"<script", page, re.I) is None
    assert "<img" not in page
    assert H.esc(text) in page


def test_system_text_is_escaped_in_the_report(report: Report) -> None:
    page = report.html
    assert re.search(r"<script", page, re.I) is None
    assert H.esc(str(report.dir)) in page  # the output folder, named with <script>
    assert HOSTILE not in page


def test_model_text_is_escaped() -> None:
    """A violation message, counterexample, scenario name and trace file name
    from the checker, and a struct member name from BTF."""
    plan = correctness.Plan(runs=[("s.universal", {"scenario": EVIL, "preset": "universal"})],
                            bugs=[("B99", {"bug": "B99"})], titles={"B99": EVIL})
    result: dict[str, Any] = {
        "scenario": EVIL, "preset": "universal", "executions": 3, "pruned": 1, "distinct": 2,
        "elapsed": 0.1, "complete": True, "incomplete": [EVIL],
        "violation": {"kind": EVIL, "message": EVIL}, "counterexample": EVIL,
        "preemptions": 1, "schedule": [0, 1], "time_to_find": 0.01}
    results = {"s.universal": {"result": result, "traces": [f"traces/{EVIL}.json"]},
               "B99": {"result": result, "traces": [f"traces/{EVIL}.replay.json"]}}
    sec = correctness.build(plan, results, TINY)
    layout = {"size": 8, "align": 8, "padding": 0, "holes": [],
              "members": [{"name": EVIL, "type": EVIL, "offset": 0, "size": 8,
                           "bit_offset": 0, "bitfield_size": 0}]}
    lay = Section("cost", EVIL)
    lay.add(cost._layout_table(cost.flatten(layout, [EVIL])))
    lay.summary.append(EVIL)
    lay.fail(EVIL, EVIL)
    page = render([sec, lay], EVIL, TINY)
    _no_markup_from(EVIL, page)
    # a trace link keeps working: the href is escaped, not mangled
    assert f'href="{H.esc("traces/" + EVIL + ".json")}"' in page


def test_svg_is_inlined_without_prologue() -> None:
    svg = ('<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x">\n'
           '<svg xmlns="http://www.w3.org/2000/svg"><metadata>m</metadata><g/></svg>')
    out = H.inline_svg(svg, EVIL).html
    assert out.startswith('<figure class="plot"><svg role="img"')
    assert "<?xml" not in out and "DOCTYPE" not in out and "<metadata>" not in out
    assert H.esc(EVIL) in out and "<script" not in out
