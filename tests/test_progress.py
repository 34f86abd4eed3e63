"""pervma.progress: plain lines off a terminal, rich bars on one, never stdout or files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pervma import progress
from pervma.cli import main
from pervma.progress import Tracker


def test_plain_lines_one_per_finished_unit() -> None:
    buf = io.StringIO()
    with Tracker(stream=buf, tty=False) as t:
        t.add("simulate shared", 2)
        t.advance("simulate shared", "universal threads 1")
        t.advance("simulate shared")
    assert buf.getvalue() == ("done: simulate shared universal threads 1 (1/2)\n"
                              "done: simulate shared (2/2)\n")


def test_absolute_updates_print_only_progress() -> None:
    buf = io.StringIO()
    with Tracker(stream=buf, tty=False) as t:
        t.update("cost", 0, 1)          # announced, nothing finished
        t.update("correctness", 1, 3)
        t.update("correctness", 1, 3)   # no news
        t.update("cost", 1, 1)
    assert buf.getvalue() == "done: correctness (1/3)\ndone: cost (1/1)\n"


def test_terminal_shows_bars_with_an_eta() -> None:
    buf = io.StringIO()
    with Tracker(stream=buf, tty=True) as t:
        t.add("check", 4)
        t.advance("check", "fault-vs-munmap [universal]")
    out = buf.getvalue()
    assert "check" in out and "ETA" in out and "1/4" in out
    assert "done:" not in out


def test_simulate_files_and_stdout_do_not_depend_on_the_display(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["simulate", "shared", "--preset", "legacy,universal", "--tasks", "1,2",
            "--duration-ms", "0.3"]
    outs = []
    for tty in (False, True):
        monkeypatch.setattr(progress, "_isatty", lambda _s, tty=tty: tty)
        csv = tmp_path / f"tty{tty}.csv"
        assert main([*argv, "--csv", str(csv)]) == 0
        cap = capsys.readouterr()
        outs.append((_without_wall_time(csv), cap.out.replace(str(csv), "CSV")))
        if tty:
            assert "ETA" in cap.err and "done:" not in cap.err
        else:
            assert cap.err.count("done: simulate shared") == 8
            assert cap.err.splitlines()[-1].endswith("(8/8)")
    assert outs[0] == outs[1]


def _without_wall_time(path: Path) -> list[dict[str, str]]:
    """The CSV's rows without the host's durations (``WALL_COLUMNS``, the only
    columns that vary from run to run)."""
    import csv

    from pervma.report.runner import WALL_COLUMNS

    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert rows and all(set(WALL_COLUMNS) <= r.keys() for r in rows)
    return [{k: v for k, v in r.items() if k not in WALL_COLUMNS} for r in rows]


def test_check_with_several_runs_reports_each(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "fault-vs-munmap", "fork-vs-fault", "--max-executions", "3"])
    err = capsys.readouterr().err.splitlines()
    assert code == 3  # clean but cut by the budget
    assert err == ["done: check fault-vs-munmap [universal] (1/2)",
                   "done: check fork-vs-fault [universal] (2/2)"]
