"""Helpers for the CLI tests: run ``pervma.cli.main`` in-process with the
output captured, or ``python -m pervma`` in a subprocess (hangs, signals)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pervma.cli import main

#: Exit codes each command may return (README, "Exit codes, errors and the files
#: pervma writes"); 70 (internal error) is never acceptable in these tests.
EXPLORING = {0, 1, 2, 3}
REPLAY = {0, 1, 2}
DONE = {0, 2}


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def one_line_error(self) -> str:
        """The single stderr line of a refused command (progress lines of the
        parts that finished before it, 'done: ...', are not errors)."""
        lines = [x for x in self.err.strip().splitlines() if not x.startswith("done: ")]
        assert len(lines) == 1 and lines[0].startswith("pervma: "), self.err
        return lines[0]


def run_main(argv: list[str]) -> Ran:
    """``main(argv)`` with stdout/stderr captured; argparse's SystemExit is its code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return Ran(code, out.getvalue(), err.getvalue())


def assert_clean(r: Ran, allowed: set[int]) -> None:
    """No traceback, an exit code from the documented set, no internal error."""
    assert "Traceback" not in r.text, r.text
    assert "internal error" not in r.err, r.err
    assert r.code in allowed, (r.code, r.err[-500:])


def run_sub(*argv: str, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pervma", *argv], capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


@pytest.fixture(autouse=True)
def _sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test runs in its own folder (relative paths land there), and crash
    tracebacks are saved under it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".cache"))
    monkeypatch.setenv("COLUMNS", "120")
    yield tmp_path

