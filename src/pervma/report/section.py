"""A report section: its HTML parts, CSV files, terminal summary and errors."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pervma.errors import PervmaError
from pervma.report.html import Raw, error_box


@dataclass
class Section:
    key: str
    title: str
    parts: list[Raw] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    csv: dict[str, str] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Facts of this moment that a later run need not repeat (the live system's
    # counts): ``(kind, name, value)`` rows that go to timings.csv, never to
    # the section's own CSV files, which are the same on every run.
    moment: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, part: Raw) -> None:
        self.parts.append(part)

    def fail(self, what: str, message: str) -> None:
        """Record an error: shown in place and in the section's error list."""
        text = f"{what}: {message}"
        self.errors.append(text)
        self.parts.append(error_box(text))

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Run a block; an exception becomes an error shown in this section."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - a report shows every failure
            self.fail(what, describe(exc))


def _where(frame: traceback.FrameSummary) -> str:
    parts = frame.filename.replace("\\", "/").split("/")
    tail = parts[parts.index("pervma") + 1:] if "pervma" in parts else parts[-1:]
    return f"{'/'.join(tail)}:{frame.lineno}"


def describe(exc: BaseException) -> str:
    """One line for an exception; for unexpected ones, where it was raised and
    the innermost model or engine frame that led there."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, PervmaError):
        return msg or exc.__class__.__name__
    tb = traceback.extract_tb(exc.__traceback__)
    where = ""
    if tb:
        where = f" (at {_where(tb[-1])}"
        here = tb[-1].filename.rsplit("/", 1)[0] + "/"
        caller = next((f for f in reversed(tb[:-1]) if "/pervma/" in f.filename
                       and not f.filename.startswith(here)), None)
        where += f", called from {_where(caller)})" if caller else ")"
    return f"{exc.__class__.__name__}: {msg}{where}" if msg else f"{exc.__class__.__name__}{where}"


Builder = Callable[..., Section]
