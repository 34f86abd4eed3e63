"""The output folder rules of ``pervma report``.

* a missing folder is created;
* a folder holding an earlier report (it has the :data:`MARKER` file) is
  emptied and reused;
* any other non-empty folder needs ``--force`` (then files are overwritten,
  nothing else is removed);
* a folder that cannot be created or written is a one-line usage error.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pervma import __version__
from pervma.errors import UsageError

MARKER = ".pervma-report"


def _why(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def prepare(out: str | Path, force: bool = False) -> Path:
    """Make ``out`` ready for a new report; return it (see module docstring)."""
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise UsageError(f"cannot write the report to {d}: it exists and is not a folder")
    if d.is_dir():
        try:
            entries = list(d.iterdir())
        except OSError as exc:
            raise UsageError(f"cannot write the report to {d}: {_why(exc)}") from None
        if entries and (d / MARKER).is_file():
            for e in entries:
                try:
                    if e.is_dir() and not e.is_symlink():
                        shutil.rmtree(e)
                    else:
                        e.unlink()
                except OSError as exc:
                    raise UsageError(f"cannot replace the earlier report in {d}: "
                                     f"{_why(exc)}") from None
        elif entries and not force:
            raise UsageError(f"{d} is not empty and holds no earlier pervma report; "
                             "pass --force to write into it or choose another --out")
    try:
        d.mkdir(parents=True, exist_ok=True)
        (d / MARKER).write_text(f"pervma {__version__} report\n")
        (d / "traces").mkdir(exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write the report to {d}: {_why(exc)}") from None
    return d
