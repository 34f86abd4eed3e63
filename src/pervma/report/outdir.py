"""The output folder of ``pervma report`` (rules in :mod:`pervma.outfiles`).

* the report is built in a temporary sibling ``DIR.pervma-tmp-XXXX`` and put in
  place only when complete: an interrupted or failed run leaves the previous
  report as it was;
* ``DIR`` may be missing (it is created), empty, or hold a ``.pervma-manifest``
  of an earlier run; then only the files that manifest lists are replaced and
  every other file in it is kept;
* any other non-empty folder is refused, ``--force`` or not (``--force`` only
  ever overwrites single files a user names), with a one-line error that
  suggests a new folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pervma import outfiles
from pervma.errors import OutputError

MANIFEST = outfiles.MANIFEST


def prepare(out: str | Path, force: bool = False) -> outfiles.Staging:
    """Validate ``out`` and start its replacement (with ``traces/``)."""
    st = outfiles.prepare_dir(out, "report", force)
    try:
        (st.path / "traces").mkdir()
    except OSError as exc:
        st.abort()
        raise OutputError(f"cannot write the report to {out}: {exc.strerror}") from None
    return st


@contextmanager
def staged(out: str | Path, force: bool = False) -> Iterator[outfiles.Staging]:
    """Build the report in ``st.path``; it replaces ``out`` when the body
    completes and is dropped when the body raises or is interrupted."""
    st = prepare(out, force)
    try:
        yield st
    except BaseException:
        st.abort()
        raise
    st.commit()
