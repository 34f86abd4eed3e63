"""Cases that could hang or need a signal run in a subprocess.  The timeouts are
generous ceilings that only a hang reaches; nothing here measures time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import run_sub


@pytest.mark.parametrize("argv,msg", [
    (["simulate", "shared", "--duration-ms", "nan"], "argument --duration-ms: wants a finite"),
    (["check", "toy-locked", "--config", "/dev/zero"], "--config /dev/zero: larger than"),
    (["check", "toy-locked", "--jobs", "100000"], "argument --jobs: wants a whole number"),
    (["replay", "/dev/zero"], "replay file /dev/zero: larger than"),
    (["check", "toy-locked", "--config", "/dev/null", "--max-executions", "3"], None),
])
def test_would_hang_exits_promptly(argv: list[str], msg: str | None) -> None:
    p = run_sub(*argv, timeout=120)
    assert "Traceback" not in p.stderr
    if msg is None:
        assert p.returncode == 3, p.stderr  # an empty fragment is the universal preset
        return
    assert p.returncode == 2 and msg in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_broken_pipe_is_quiet(tmp_path: Path) -> None:
    p = subprocess.run(f"{sys.executable} -m pervma check --list | head -1", shell=True,
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.stdout.count("\n") == 1 and p.stderr == "", p.stderr


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigint_shows_the_finished_runs_and_exits_130(jobs: str, tmp_path: Path) -> None:
    """The first run finds its race within a few random executions; the second
    has a budget of a million random executions (minutes), so it is still
    running when SIGINT is sent, right after the first result is printed."""
    # SIGINT as a terminal's foreground command has it: a background job's shell
    # starts its children with SIGINT ignored, and Python keeps that.
    argv = ["check", "toy-racy", "toy-locked", "--strategy", "random", "--max-executions",
            "1000000", "--jobs", jobs]
    code = ("import runpy, signal, sys\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            f"sys.argv = ['pervma', *{argv!r}]\n"
            "runpy.run_module('pervma', run_name='__main__')\n")
    with subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "XDG_CACHE_HOME": str(tmp_path)}
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        try:
            first = proc.stdout.readline()
            assert first.startswith("toy-racy [universal] random: VIOLATION"), first
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        # Read through the text wrappers: readline() may have buffered more lines.
        out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err
    # the finished run's progress line ('done: check ...'), then the one-line notice
    lines = err.strip().splitlines()
    assert lines[-1] == "pervma: interrupted; 1 of 2 runs finished (shown above)", err
    assert all(x.startswith("done: check ") for x in lines[:-1]) and len(lines) <= 2, err
    assert "BUG: assertion: count == 1, expected 2 (lost update)" in out
    assert "toy-locked" not in first + out
