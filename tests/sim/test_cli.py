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
    (["simulate", "shared", "--duration-ms", "0"], "--duration-ms: wants a finite number above 0"),
    (["simulate", "shared", "--duration-ms", "nan"], "--duration-ms: wants a finite number"),
    (["simulate", "shared", "--warmup-ms", "-1"], "--warmup-ms: wants a finite number at least 0"),
    (["simulate", "shared", "--preset", ""], "--preset: wants a value, got an empty string"),
    (["simulate", "shared", "--preset", "legacy,,universal"], "--preset wants names separated"),
    (["simulate", "shared", "--jobs", "100000"], "--jobs: wants a whole number from 1 to"),
    (["simulate"], "name a workload"),
])
def test_bad_arguments_exit_2_with_one_line(argv: list[str], msg: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _code(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def _code(argv: list[str]) -> int:
    """main()'s exit code, whether returned or raised by argparse."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


FAST = ["simulate", "shared", "--tasks", "1", "--mode", "threads", "--duration-ms", "0.2"]


@pytest.mark.parametrize("flag,name,msg", [
    ("--plot", "curve", "the name must end in .png, .svg, .pdf"),
    ("--plot", "curve.jpeg2", "the name must end in .png, .svg, .pdf"),
    ("--csv", "sub", "is a folder; name a file"),
    ("--csv", "missing/x.csv", "does not exist"),
])
def test_output_path_refused_before_the_run(tmp_path: Path, flag: str, name: str, msg: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sub").mkdir()
    assert main([*FAST, flag, str(tmp_path / name), "--force"]) == 2
    err = capsys.readouterr()
    assert msg in err.err and err.err.count("\n") == 1
    assert err.out == ""  # refused before any simulation ran: no table printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_two_flags_naming_one_file_are_refused(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "x.svg"
    assert main([*FAST, "--csv", str(f), "--plot", str(f)]) == 2
    assert "--csv and --plot name the same file" in capsys.readouterr().err
    assert not f.exists()


def test_force_overwrites_only_the_named_file(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("old\n")
    (tmp_path / "s.png").write_text("not touched")
    (tmp_path / "notes.txt").write_text("mine")
    assert main([*FAST, "--csv", str(tmp_path / "s.csv"), "--force"]) == 0
    assert (tmp_path / "s.csv").read_text().startswith("workload,preset,machine")
    assert (tmp_path / "s.png").read_text() == "not touched"
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "s.csv", "s.png"]


def test_failed_write_leaves_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import pervma.sim.plot

    def broken(points: object, path: str) -> None:
        Path(path).write_bytes(b"half a png")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pervma.sim.plot, "save_plot", broken)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    png = tmp_path / "s.png"
    png.write_bytes(b"the previous plot")
    assert main([*FAST, "--plot", str(png), "--force"]) == 70
    err = capsys.readouterr().err
    assert err.startswith("done: simulate shared universal threads 1 (1/1)\n"), err
    err = err.split("\n", 1)[1]  # the progress line of the finished point, then the error
    assert err.startswith("pervma: internal error: RuntimeError: disk on fire; traceback saved to")
    assert err.count("\n") == 1 and "Traceback" not in err
    saved = Path(err.rsplit("traceback saved to ", 1)[1].strip())
    assert saved.is_relative_to(tmp_path / "cache") and "disk on fire" in saved.read_text()
    assert png.read_bytes() == b"the previous plot"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "s.png"]


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
