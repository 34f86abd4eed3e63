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


def test_configs_csv_equals_pervma_cost_configs(capsys: pytest.CaptureFixture[str]) -> None:
    """The report's cost-configs.csv holds what `pervma cost --configs --json` prints."""
    import csv
    import io
    import json

    from pervma.cli import main
    from pervma.host import proc
    from pervma.layout import configs
    from pervma.report.section import Section

    cpus = proc.read_machine().present_cpus
    sec = Section("cost", "t")
    cost._render_configs(sec, configs.table(cpus, 64, gcc=False))
    assert not sec.errors or all("running kernel" in e for e in sec.errors)
    rows = list(csv.DictReader(io.StringIO(sec.csv["cost-configs.csv"])))
    assert main(["cost", "--configs", "--json", "--no-gcc", "--cpus", str(cpus)]) == 0
    want = json.loads(capsys.readouterr().out)["configs"]
    assert [r["key"] for r in rows] == [w["key"] for w in want]
    for r, w in zip(rows, want, strict=True):
        assert (int(r["sizeof_before"]), int(r["sizeof_after"])) == \
            (w["before"]["sizeof"], w["after"]["sizeof"])
        assert int(r["slab_size_after"]) == w["after"]["slab"]["slab_size"]
        assert int(r["pages_per_10000_difference"]) == w["difference"]["pages_per_10000"]
        assert r["thread_sizeof"] == str(w["thread_sizeof"] or "")
    html = "".join(p.html for p in sec.parts)
    assert "<svg" in html and "size the thread states" in html
    assert "68" in html and "256" in html
