"""Properties of :mod:`pervma.outfiles` over generated folders: whatever an
earlier run wrote and whatever a user added, a new run loses no user file,
leaves only its own files from pervma, and leaves no temporary behind."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pervma import outfiles
from pervma.errors import OutputError

# Paths that can coexist (no name is both a file and a folder).
NAMES = ["index.html", "a.csv", "b.csv", "traces/x.json", "traces/y.json", "d/e/f.txt",
         "notes.txt", "traces/mine.txt"]
PROPS = settings(max_examples=60, derandomize=True, deadline=60_000,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _tree(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): p.read_text() for p in d.rglob("*")
            if p.is_file() and p.name != outfiles.MANIFEST}


@given(first=st.sets(st.sampled_from(NAMES)), user=st.sets(st.sampled_from(NAMES)),
       second=st.sets(st.sampled_from(NAMES)), interrupt=st.booleans())
@PROPS
def test_a_second_run_keeps_every_user_file(first: set[str], user: set[str], second: set[str],
                                            interrupt: bool) -> None:
    base = Path(tempfile.mkdtemp(dir="."))
    out = base / "out"
    with outfiles.staged_dir(out, "report") as st1:
        _write(st1.path, {f: "v1" for f in first})
    user = user - first  # a user's file is one pervma did not write
    _write(out, {f: "user" for f in user})
    before = _tree(out)
    if interrupt:
        with pytest.raises(KeyboardInterrupt), outfiles.staged_dir(out, "report") as st2:
            _write(st2.path, {f: "v2" for f in second})
            raise KeyboardInterrupt
        assert _tree(out) == before
    elif user & second:
        with pytest.raises(OutputError, match="is not pervma's"):
            with outfiles.staged_dir(out, "report") as st2:
                _write(st2.path, {f: "v2" for f in second})
        assert _tree(out) == before  # nothing replaced; the new run waits in its temp folder
        return
    else:
        with outfiles.staged_dir(out, "report") as st2:
            _write(st2.path, {f: "v2" for f in second})
        assert _tree(out) == {**{f: "user" for f in user}, **{f: "v2" for f in second}}
        listed = (out / outfiles.MANIFEST).read_text().splitlines()[1:]
        assert listed == sorted(second)
    assert sorted(p.name for p in base.iterdir()) == ["out"]


@given(st.sampled_from([b"", b"old"]), st.booleans(), st.booleans())
@PROPS
def test_single_file_rules(old: bytes, exists: bool, force: bool) -> None:
    d = Path(tempfile.mkdtemp(dir="."))
    f = d / "x.csv"
    if exists:
        f.write_bytes(old)
    if exists and not force:
        with pytest.raises(OutputError, match="exists; pass --force"):
            outfiles.check_file(f, force, "--csv")
        with pytest.raises(OutputError, match="exists; pass --force"):
            outfiles.write_file(f, "new", force, "--csv")
        assert f.read_bytes() == old
    else:
        assert outfiles.check_file(f, force, "--csv") == f
        outfiles.write_file(f, "new", force, "--csv")
        assert f.read_text() == "new"
    assert [p.name for p in d.iterdir()] == ["x.csv"]  # no temporary left
