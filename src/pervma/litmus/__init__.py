"""``pervma litmus``: C litmus tests under the Linux-kernel memory model (LKMM).

An axiomatic, herd7-style engine: :func:`parse_litmus` reads a test in herd7's C
syntax, :func:`run_litmus` enumerates its candidate executions and keeps those
tools/memory-model/linux-kernel.cat allows, :func:`format_outcome` prints the
result as herd7 does.  :func:`litmus_file` does all three for a path.
"""

from __future__ import annotations

from pathlib import Path

from pervma.litmus.executions import Outcome, run_litmus
from pervma.litmus.output import format_outcome
from pervma.litmus.parser import parse_litmus
from pervma.litmus.syntax import Litmus, LitmusError

__all__ = ["Litmus", "LitmusError", "Outcome", "format_outcome", "litmus_file",
           "parse_litmus", "read_litmus", "run_litmus"]

MAX_FILE_BYTES = 1 << 20


def read_litmus(path: str | Path) -> Litmus:
    """Read and parse a litmus file; every failure is a one-line :class:`LitmusError`."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise LitmusError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise LitmusError(f"{p}: is a directory, not a litmus file") from None
    except OSError as exc:
        raise LitmusError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise LitmusError(f"{p}: larger than {MAX_FILE_BYTES} bytes; not a litmus test")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LitmusError(f"{p}: not UTF-8 text") from None
    try:
        return parse_litmus(text)
    except LitmusError as exc:
        raise LitmusError(f"{p}: {exc}") from None
    except RecursionError:
        raise LitmusError(f"{p}: nested too deeply") from None


def litmus_file(path: str | Path) -> tuple[Litmus, Outcome, str]:
    """Parse, run and format one test."""
    lit = read_litmus(path)
    try:
        out = run_litmus(lit)
    except LitmusError as exc:
        raise LitmusError(f"{path}: {exc}") from None
    except RecursionError:
        raise LitmusError(f"{path}: expressions nested too deeply") from None
    return lit, out, format_outcome(lit, out)
