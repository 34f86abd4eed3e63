"""Argument types and bounded file reads shared by the command modules.

Every numeric argument is range-checked here (nan, inf, negative, zero where
meaningless, absurdly large), every string argument must be non-empty, and
every file pervma reads goes through :func:`read_text` (bounded in size,
decoded as UTF-8 with a one-line error).  The ``argparse`` types raise
:class:`argparse.ArgumentTypeError`, which the CLI's parser turns into one
line and exit 2.  This module imports nothing of the model.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from pervma.errors import InputError

#: The largest file pervma reads as text unless a caller says otherwise.
MAX_TEXT_BYTES = 1 << 20


def _bad(what: str, got: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"wants {what}, got {got!r}")


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An ``int`` in ``[lo, hi]`` (decimal digits only)."""

    def parse(text: str) -> int:
        s = text.strip()
        body = s[1:] if s[:1] in "+-" else s
        if not body.isascii() or not body.isdigit() or len(body) > 20:
            raise _bad(f"a whole number from {lo} to {hi}", text)
        n = int(s)
        if not lo <= n <= hi:
            raise _bad(f"a whole number from {lo} to {hi}", text)
        return n

    parse.__name__ = "int"
    return parse


def finite_float(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[str], float]:
    """A finite ``float`` in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    low = f"above {lo:g}" if lo_open else f"at least {lo:g}"

    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise _bad(f"a number {low} and at most {hi:g}", text) from None
        if not math.isfinite(x) or x > hi or x < lo or (lo_open and x == lo):
            raise _bad(f"a finite number {low} and at most {hi:g}", text)
        return x

    parse.__name__ = "float"
    return parse


def nonempty(text: str) -> str:
    """A string that is not empty or blank (an empty string is never "default")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("wants a value, got an empty string")
    if "\x00" in text:
        raise argparse.ArgumentTypeError(f"contains a NUL character: {text!r}")
    return text


def max_jobs() -> int:
    return os.cpu_count() or 1


def jobs(text: str) -> int:
    """Worker processes: 1 .. ``os.cpu_count()``."""
    return bounded_int(1, max_jobs())(text)


def name_list(text: str, flag: str) -> list[str]:
    """``a,b,c`` -> names; an empty item (``a,,b`` or ``''``) is an error."""
    from pervma.errors import UsageError

    items = [x.strip() for x in text.split(",")]
    if not text.strip() or any(not x for x in items):
        raise UsageError(f"{flag} wants names separated by commas, got {text!r}")
    return items


def read_text(path: str | Path, what: str, limit: int = MAX_TEXT_BYTES) -> str:
    """Read a text file of at most ``limit`` bytes as UTF-8.

    A missing, unreadable, oversized or undecodable file is one
    :class:`~pervma.errors.InputError` naming it; at most ``limit + 1`` bytes
    are ever read, so ``/dev/zero`` is refused rather than read forever.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{what} {p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{what} {p}: is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"{what} {p}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise InputError(f"{what} {p!r}: {exc}") from None
    if len(data) > limit:
        raise InputError(f"{what} {p}: larger than {limit} bytes; not a file pervma reads")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{what} {p}: not UTF-8 text (byte {exc.start}, line {line})") from None


def check_input_file(path: str | Path, what: str, limit: int) -> Path:
    """A file a library will read whole: it must be a regular file of at most
    ``limit`` bytes (so ``/dev/zero`` or a FIFO cannot make the read endless)."""
    import stat

    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{what} {p}: no such file") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{what} {p}: cannot read it ({getattr(exc, 'strerror', None) or exc})"
                         ) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {p}: is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {p}: not a regular file")
    if st.st_size > limit:
        raise InputError(f"{what} {p}: larger than {limit} bytes; not a file pervma reads")
    return p
