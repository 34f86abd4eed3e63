"""Progress of long commands (``report``, ``simulate``, ``check`` with several runs).

On a terminal: a rich progress bar per part with counts, elapsed time and an
ETA.  Otherwise (a pipe, a log file, CI): one plain line per finished unit,
``done: <part> (i/n)``.  Either way it goes to stderr only, so the progress
display never changes what a command prints on stdout or writes to a file.

    with Tracker() as track:
        track.add("simulate", total=len(points))
        for p in points:
            run(p)
            track.advance("simulate", label=str(p))

:meth:`Tracker.update` takes absolute counts, as the report runner's callback
``(section, done, total)`` gives them.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, TextIO


class Tracker:
    """Progress of named parts, each with a known number of units.

    ``tty`` forces the display (``True``: rich bars, ``False``: plain lines);
    the default asks whether ``stream`` (default stderr) is a terminal."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None,
                 transient: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self.transient = transient
        self._rich: Any = None
        self._ids: dict[str, Any] = {}
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}

    def __enter__(self) -> Tracker:
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            console = Console(file=self.stream, force_terminal=True, stderr=True)
            self._rich = Progress(TextColumn("{task.description:<14}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("ETA"), TimeRemainingColumn(),
                                  TextColumn("{task.fields[label]}"),
                                  console=console, transient=self.transient)
            self._rich.__enter__()
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.__exit__(typ, exc, tb)
            self._rich = None

    def add(self, part: str, total: int) -> None:
        """Announce ``part`` with ``total`` units (again: change its total)."""
        self.totals[part] = total
        self.done.setdefault(part, 0)
        if self._rich is not None:
            if part in self._ids:
                self._rich.update(self._ids[part], total=total)
            else:
                self._ids[part] = self._rich.add_task(part, total=total, label="")

    def advance(self, part: str, label: str = "") -> None:
        """One unit of ``part`` finished (``label`` names it)."""
        if part not in self.totals:
            self.add(part, 1)
        self.update(part, self.done[part] + 1, self.totals[part], label)

    def update(self, part: str, done: int, total: int, label: str = "") -> None:
        """``done`` of ``total`` units of ``part`` are finished."""
        if self.totals.get(part) != total:
            self.add(part, total)
        before = self.done.get(part, 0)
        self.done[part] = done
        if self._rich is not None:
            self._rich.update(self._ids[part], completed=done, label=label)
        elif done > before:
            what = f"{part} {label}" if label else part
            self.stream.write(f"done: {what} ({done}/{total})\n")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
