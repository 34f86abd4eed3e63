"""Bounded reads of the files a user names (``--config``, ``--btf``, ``--base``).

A path is read at most ``limit + 1`` bytes, so ``/dev/zero`` or a runaway
file is refused in one line instead of filling memory; directories are
refused; gzip data is inflated through the same bound (a gzip bomb cannot
expand past it).
"""

from __future__ import annotations

import gzip
import io
import os
import stat
from pathlib import Path

from pervma.errors import PervmaError

# A full allyesconfig .config is about 0.4 MB; vmlinux BTF is 5-10 MB
# (5.5 MB on the reference machine).
CONFIG_LIMIT = 8 << 20
BTF_LIMIT = 64 << 20


def read_bounded(path: str | Path, limit: int, what: str,
                 error: type[PervmaError]) -> bytes:
    """At most ``limit`` bytes of ``path``, else ``error`` naming the problem."""
    p = Path(path)
    if str(path) == "":
        raise error(f"{what}: empty path")
    try:
        st = os.stat(p)
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{what} {p} is a directory")
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what} {p} is larger than {limit >> 20} MiB; refusing to read it")
    return data


def gunzip_bounded(data: bytes, limit: int, what: str, error: type[PervmaError]) -> bytes:
    """Inflate gzip ``data`` to at most ``limit`` bytes."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as g:
            out = g.read(limit + 1)
    except (OSError, EOFError) as exc:
        raise error(f"{what}: corrupt gzip data ({exc})") from None
    if len(out) > limit:
        raise error(f"{what} inflates to more than {limit >> 20} MiB; refusing it")
    return out
