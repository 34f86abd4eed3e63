"""The report in headless Chromium: no console errors, every plot renders."""

from __future__ import annotations

import io

import pytest

from . import browser
from .conftest import Report


def _non_blank(png: bytes) -> int:
    """The number of distinct colours in a screenshot (1 = blank)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    return len(img.getcolors(maxcolors=1 << 24) or [])


def test_report_renders_without_console_errors(small_report: Report) -> None:
    report = small_report
    why = browser.missing()
    if why:
        pytest.skip(why)
    with browser.chromium() as drv:
        drv.get((report.dir / "index.html").resolve().as_uri())
        assert drv.title.startswith("pervma report")
        errors = [e for e in drv.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
        assert errors == []
        plots = drv.find_elements("css selector", "figure.plot svg")
        assert len(plots) >= 4, "cost bars, throughput, where-time-goes and SMP=n plots"
        labels = [p.get_attribute("aria-label") for p in plots]
        assert any(x.startswith("Left: the share of faults") for x in labels)
        for svg in plots:
            drv.execute_script("arguments[0].scrollIntoView()", svg)
            size = svg.size
            assert size["width"] > 100 and size["height"] > 100
            assert _non_blank(svg.screenshot_as_png) > 8
        # the page has no scripts and loads nothing from the network
        assert drv.execute_script("return document.scripts.length") == 0
        res = drv.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert [r for r in res if not r.startswith(("file:", "data:"))] == []
