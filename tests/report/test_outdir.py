"""The output folder rules of ``pervma report``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pervma.errors import UsageError
from pervma.report import outdir

from .conftest import run_cli


def test_missing_folder_is_created_with_marker(tmp_path: Path) -> None:
    d = outdir.prepare(tmp_path / "a" / "b")
    assert (d / outdir.MARKER).is_file() and (d / "traces").is_dir()


def test_earlier_report_is_replaced(tmp_path: Path) -> None:
    d = outdir.prepare(tmp_path / "r")
    (d / "index.html").write_text("old")
    (d / "traces" / "old.json").write_text("{}")
    (d / "stale.csv").write_text("x")
    outdir.prepare(d)
    assert sorted(p.name for p in d.iterdir()) == [outdir.MARKER, "traces"]
    assert list((d / "traces").iterdir()) == []


def test_empty_folder_is_used(tmp_path: Path) -> None:
    outdir.prepare(tmp_path)
    assert (tmp_path / outdir.MARKER).is_file()


def test_foreign_folder_needs_force(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="not empty.*--force"):
        outdir.prepare(tmp_path)
    outdir.prepare(tmp_path, force=True)
    assert (tmp_path / "thesis.tex").read_text() == "precious"  # --force removes nothing


def test_cli_refuses_foreign_folder_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    p = run_cli("report", "--quick", "--out", str(tmp_path), timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "--force" in lines[0] and lines[0].startswith("pervma: ")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["notes.txt"]


def test_cli_unwritable_folder_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = run_cli("report", "--quick", "--out", str(blocker / "sub"), timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write the report" in lines[0], p.stderr
    p = run_cli("report", "--quick", "--out", str(blocker), timeout=60)
    assert p.returncode == 2 and "not a folder" in p.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_folder_is_one_line_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(UsageError, match="cannot write the report"):
            outdir.prepare(ro / "sub")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("argv,msg", [(["--jobs", "0"], "--jobs wants a number >= 1"),
                                      (["--jobs", "x"], "invalid int value")])
def test_bad_jobs_is_a_usage_error(tmp_path: Path, argv: list[str], msg: str) -> None:
    p = run_cli("report", "--out", str(tmp_path / "r"), *argv, timeout=60)
    assert p.returncode == 2 and msg in p.stderr
    assert not (tmp_path / "r").exists()


def test_help_has_an_example() -> None:
    p = run_cli("report", "--help", timeout=60)
    assert p.returncode == 0 and "pervma report --quick" in p.stdout
    assert "--tiny" not in p.stdout
