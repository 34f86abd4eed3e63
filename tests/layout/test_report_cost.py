"""The report's Cost section shows what ``pervma layout`` shows (issue #10):
the same holes (nested ones included), padding and alignment."""

from __future__ import annotations

import re

import pytest

from pervma.layout import api
from pervma.layout.pahole import render
from pervma.report import cost

HOLE = re.compile(r"/\* XXX (\d+) bytes? hole")


@pytest.mark.parametrize("struct", ["vm_area_struct", "mm_struct"])
def test_holes_and_alignment_match_pervma_layout(vmlinux, struct: str) -> None:  # noqa: ANN001
    text = render(api.running_composite(struct))
    printed = [int(x) for x in HOLE.findall(text)]
    lay = api.running_layout(struct)
    rows = cost.flatten(lay, cost.MM_LOCK_FIELDS + cost.VMA_LOCK_FIELDS)
    holes = [r for r in rows if r["type"] == "hole"]
    assert [h["size"] for h in holes] == printed
    head = cost._layout_head(struct, lay)
    assert f"{sum(printed)} bytes in {len(printed)} holes" in head
    forced = [int(x) for x in re.findall(r"__aligned__\((\d+)\)", text)]
    assert lay["align"] == max([8, *forced])
    assert f"alignment {lay['align']}," in head
    # each hole sits right after the member it follows
    for i, r in enumerate(rows):
        if r["kind"] == "hole" and r["type"] == "hole":
            prev = rows[i - 1]
            assert prev["offset"] + prev["size"] == r["offset"]


def test_mm_struct_is_64_aligned_with_nested_holes(vmlinux) -> None:  # noqa: ANN001
    lay = api.running_layout("mm_struct")
    assert lay["align"] == 64  # the mm_count sub-struct is ____cacheline_aligned_in_smp
    assert lay["holes"], "mm_struct's holes are inside its anonymous struct"
    assert all(h["offset"] > 0 for h in lay["holes"])
