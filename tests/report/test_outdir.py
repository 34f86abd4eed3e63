"""The output folder of ``pervma report``: built next to DIR, put in place when
complete; only files listed in DIR/.pervma-manifest are ever removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pervma.cli import main
from pervma.errors import OutputError
from pervma.outfiles import MANIFEST, MANIFEST_HEADER
from pervma.report import outdir

from .conftest import run_cli


def _report(out: Path, files: dict[str, str]) -> list[str]:
    """A stand-in report: ``files`` written through the real staging."""
    with outdir.staged(out) as st:
        for rel, text in files.items():
            (st.path / rel).parent.mkdir(parents=True, exist_ok=True)
            (st.path / rel).write_text(text)
    return sorted(files)


def _tree(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): p.read_text() for p in sorted(d.rglob("*"))
            if p.is_file()}


def _siblings(d: Path) -> list[str]:
    return sorted(p.name for p in d.parent.iterdir())


def test_missing_folder_is_created_with_a_manifest(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    _report(out, {"index.html": "v1", "traces/x.json": "{}"})
    tree = _tree(out)
    assert sorted(tree) == [MANIFEST, "index.html", "traces/x.json"]
    assert (tree["index.html"], tree["traces/x.json"]) == ("v1", "{}")
    lines = (out / MANIFEST).read_text().splitlines()
    assert lines[0].startswith(MANIFEST_HEADER) and lines[1:] == ["index.html", "traces/x.json"]
    assert _siblings(out) == ["b"]  # no temporary folder left behind


def test_earlier_report_is_replaced_and_user_files_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "r"
    _report(out, {"index.html": "v1", "stale.csv": "old", "traces/old.json": "{}"})
    (out / "notes.txt").write_text("mine")
    (out / "traces" / "my-trace.json").write_text("mine too")
    (out / "mydir").mkdir()
    (out / "mydir" / "deep.txt").write_text("deep")
    _report(out, {"index.html": "v2", "traces/new.json": "[]"})
    tree = _tree(out)
    del tree[MANIFEST]
    assert tree == {"index.html": "v2", "traces/new.json": "[]", "notes.txt": "mine",
                    "traces/my-trace.json": "mine too", "mydir/deep.txt": "deep"}
    listed = (out / MANIFEST).read_text().splitlines()[1:]
    assert listed == ["index.html", "traces/new.json"]  # the user's files are not pervma's
    assert _siblings(out) == ["r"]


@pytest.mark.parametrize("force", [False, True])
def test_foreign_folder_is_refused_even_with_force(tmp_path: Path, force: bool) -> None:
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="not empty and holds no .pervma-manifest.*new folder"):
        outdir.prepare(d, force=force)
    assert _tree(d) == {"thesis.tex": "precious"}
    assert _siblings(d) == ["mine"]


def test_old_marker_alone_does_not_make_a_folder_pervmas(tmp_path: Path) -> None:
    # An earlier --force left the marker in a user's folder: it is not a licence to empty it.
    (tmp_path / ".pervma-report").write_text("pervma 0.1.0 report\n")
    (tmp_path / "data.csv").write_text("mine")
    with pytest.raises(OutputError, match="holds no .pervma-manifest"):
        outdir.prepare(tmp_path)
    assert _tree(tmp_path) == {".pervma-report": "pervma 0.1.0 report\n", "data.csv": "mine"}


def test_failed_or_interrupted_build_leaves_the_previous_report(tmp_path: Path) -> None:
    out = tmp_path / "r"
    _report(out, {"index.html": "v1", "traces/a.json": "{}"})
    before = _tree(out)
    for exc in (RuntimeError("engine failed"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), outdir.staged(out) as st:
            (st.path / "index.html").write_text("half")
            raise exc
        assert _tree(out) == before
        assert _siblings(out) == ["r"]


def test_a_new_file_named_like_a_user_file_is_not_put_over_it(tmp_path: Path) -> None:
    out = tmp_path / "r"
    _report(out, {"index.html": "v1"})
    (out / "bugs.csv").write_text("the user's")
    with pytest.raises(OutputError, match="bugs.csv is not pervma's.*complete in"):
        _report(out, {"index.html": "v2", "bugs.csv": "pervma's"})
    assert (out / "bugs.csv").read_text() == "the user's"
    assert (out / "index.html").read_text() == "v1"


def test_a_hostile_manifest_cannot_remove_files_outside_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "r"
    _report(out, {"index.html": "v1"})
    (tmp_path / "outside.txt").write_text("keep")
    (out / MANIFEST).write_text(f"{MANIFEST_HEADER}\nindex.html\n../outside.txt\n"
                                f"{tmp_path}/outside.txt\n")
    _report(out, {"index.html": "v2"})
    assert (tmp_path / "outside.txt").read_text() == "keep"
    assert (out / "index.html").read_text() == "v2"


def test_interrupted_report_command_leaves_the_previous_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pervma.report import cost

    out = tmp_path / "r"
    _report(out, {"index.html": "the previous report"})
    before = _tree(out)

    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cost, "build", interrupted)
    assert main(["report", "--tiny", "--out", str(out)]) == 130
    assert _tree(out) == before and _siblings(out) == ["r"]


def test_cli_refuses_foreign_folder_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    p = run_cli("report", "--quick", "--out", str(tmp_path), "--force", timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pervma: ") and "new folder" in lines[0]
    assert "--force only overwrites single files" in lines[0]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["notes.txt"]


def test_cli_unwritable_folder_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    p = run_cli("report", "--quick", "--out", str(blocker / "sub"), timeout=60)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a folder" in lines[0], p.stderr
    p = run_cli("report", "--quick", "--out", str(blocker), timeout=60)
    assert p.returncode == 2 and "not a folder" in p.stderr
    assert blocker.read_text() == ""


def test_folder_that_cannot_be_created_is_one_line_error() -> None:
    # /proc refuses new entries even to root (a chmod-ed folder would not stop root).
    with pytest.raises(OutputError, match="cannot write the report to /proc/pervma-out"):
        outdir.prepare("/proc/pervma-out")
    assert not Path("/proc/pervma-out").exists()


@pytest.mark.parametrize("argv,msg", [
    (["--jobs", "0"], "argument --jobs: wants a whole number from 1 to"),
    (["--jobs", "x"], "argument --jobs: wants a whole number from 1 to"),
    (["--jobs", str((os.cpu_count() or 1) + 1)], "argument --jobs: wants a whole number"),
])
def test_bad_jobs_is_a_usage_error(tmp_path: Path, argv: list[str], msg: str) -> None:
    p = run_cli("report", "--out", str(tmp_path / "r"), *argv, timeout=60)
    assert p.returncode == 2 and msg in p.stderr
    assert not (tmp_path / "r").exists()


def test_help_has_an_example() -> None:
    p = run_cli("report", "--help", timeout=60)
    assert p.returncode == 0 and "pervma report --quick" in p.stdout
    assert "--tiny" not in p.stdout
