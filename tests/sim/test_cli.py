"""``pervma simulate``: arguments, errors, outputs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pervma.cli import main


@pytest.mark.parametrize("argv,msg", [
    (["simulate", "nope"], "unknown workload 'nope'"),
    (["simulate", "shared", "--tasks", "1,x"], "--tasks wants numbers"),
    (["simulate", "shared", "--tasks", "0"], "--tasks wants positive numbers"),
    (["simulate", "shared", "--preset", "univeral"], "unknown preset 'univeral'"),
    (["simulate", "shared", "--machine", "m1"], "unknown machine 'm1'"),
    (["simulate", "shared", "--mode", "fibers"], "unknown mode 'fibers'"),
    (["simulate", "shared", "--duration-ms", "0"], "--duration-ms must be positive"),
    (["simulate"], "name a workload"),
])
def test_bad_arguments_exit_2_with_one_line(argv: list[str], msg: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_existing_csv_is_not_overwritten(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine.csv"
    out.write_text("precious\n")
    assert main(["simulate", "shared", "--csv", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "precious\n"


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    assert "pervma simulate shared" in capsys.readouterr().out


def test_trace_is_perfetto_json(tmp_path: Path) -> None:
    import json

    tr = tmp_path / "t.json"
    assert main(["simulate", "shared", "--tasks", "2", "--mode", "threads", "--duration-ms",
                 "0.3", "--trace", str(tr)]) == 0
    events = json.loads(tr.read_text())["traceEvents"]
    assert events and {"name", "ph", "ts", "dur", "tid"} <= set(events[0])


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--list"]) == 0
    out = capsys.readouterr().out
    assert "pft-threads" in out and "xeon16" in out


def test_csv_and_plot(tmp_path: Path) -> None:
    out, png = tmp_path / "s.csv", tmp_path / "s.png"
    assert main(["simulate", "shared", "--tasks", "1,2", "--duration-ms", "0.5",
                 "--csv", str(out), "--plot", str(png)]) == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [(r["kind"], r["tasks"]) for r in rows] == [
        ("threads", "1"), ("processes", "1"), ("threads", "2"), ("processes", "2")]
    assert list(rows[0])[:6] == ["workload", "preset", "machine", "kind", "tasks", "faults_per_s"]
    assert float(rows[0]["faults_per_s"]) > 0
    assert png.stat().st_size > 1000
    assert main(["simulate", "shared", "--tasks", "1", "--duration-ms", "0.2",
                 "--csv", str(out), "--force", "--mode", "threads"]) == 0
    assert len(list(csv.DictReader(out.read_text().splitlines()))) == 1
