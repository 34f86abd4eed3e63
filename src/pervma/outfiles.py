"""Writing output files safely: every command that writes goes through here.

The rules (nothing a user gave is lost or overwritten unasked):

* **Single files** (``simulate --csv/--plot/--trace``, ``check --trace-out``'s
  replay and trace files): :func:`check_file` validates the path before any
  work starts (its folder exists and is writable, it is not a folder, it does
  not exist unless ``force``); :func:`write_file` / :func:`atomic_file`
  write a temporary sibling and rename it into place only when complete, so an
  interrupted or failed write leaves the previous file intact.  Without
  ``force`` the final step is a hard link, which refuses atomically if the
  file appeared meanwhile.  ``force`` overwrites exactly the file named,
  nothing else.
* **Folders** (``report --out``): :func:`prepare_dir` validates the folder
  and returns a :class:`Staging` that builds into a temporary sibling
  ``DIR.pervma-tmp-XXXX``; :meth:`Staging.commit` writes
  :data:`MANIFEST` (the files pervma wrote) and swaps the new folder into
  place.  An existing folder is used only if it is empty or holds a manifest;
  then only the files its manifest lists are removed, and every other file in
  it is moved over into the new folder.  A non-empty folder without a manifest
  is refused (``force`` or not).

This module imports nothing of the model.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from pervma import __version__
from pervma.errors import OutputError

MANIFEST = ".pervma-manifest"
MANIFEST_HEADER = "# pervma-manifest/1"
TMP_INFIX = ".pervma-tmp-"
OLD_INFIX = ".pervma-old-"
_MAX_MANIFEST_BYTES = 1 << 20
_R = TypeVar("_R")


def _why(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def _existing_ancestor(p: Path) -> Path:
    q = p
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def _check_creatable(d: Path, what: str, target: Path | None = None) -> None:
    """``d`` is a folder or can be created: its nearest existing ancestor is a
    writable folder (``target``, default ``d``, is what the message names)."""
    anc = _existing_ancestor(d)
    shown = target or d
    if not anc.is_dir():
        raise OutputError(f"cannot write {what} {shown}: {anc} exists and is not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {shown}: {anc} is not writable")


def _guarded(fn: Callable[..., _R]) -> Callable[..., _R]:
    """A check whose file-system probes may fail (a name too long, a loop of
    symlinks): that becomes one :class:`OutputError` line."""

    @functools.wraps(fn)
    def run(path: str | Path, *a: Any, **k: Any) -> _R:
        try:
            return fn(path, *a, **k)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {_why(exc)}") from None

    return run


@_guarded
def check_file(path: str | Path, force: bool, what: str,
               suffixes: tuple[str, ...] = (), create_parent: bool = False) -> Path:
    """Validate an output file before the work starts; return the path that
    will be written (exactly this one: no suffix is ever added).  With
    ``create_parent`` its folder is created now if missing, so a folder that
    cannot be made is refused before the work rather than after it."""
    p = Path(path)
    if str(path).strip() == "" or "\x00" in str(path):
        raise OutputError(f"{what} wants a file name, got {str(path)!r}")
    if suffixes and p.suffix.lower() not in suffixes:
        raise OutputError(f"{what} {p}: the name must end in {', '.join(suffixes)} "
                          "(the format is taken from it)")
    if p.is_dir():
        raise OutputError(f"{what} {p} is a folder; name a file")
    if p.exists() or p.is_symlink():
        if not force:
            raise OutputError(f"{what} {p} exists; pass --force to overwrite it")
        if not p.is_file():
            raise OutputError(f"{what} {p} exists and is not a regular file")
    if create_parent:
        _check_creatable(p.parent, what, p)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot write {what} {p}: {_why(exc)}") from None
    elif not p.parent.is_dir():
        raise OutputError(f"{what} {p}: folder {p.parent} does not exist")
    elif not os.access(p.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {p}: folder {p.parent} is not writable")
    return p


def _commit_file(tmp: Path, p: Path, force: bool, what: str) -> None:
    if force:
        if p.is_dir():
            raise OutputError(f"{what} {p} is a folder; name a file")
        os.replace(tmp, p)
        return
    try:
        os.link(tmp, p)
    except FileExistsError:
        raise OutputError(f"{what} {p} exists; pass --force to overwrite it") from None
    except OSError:  # a file system without hard links: check, then rename
        if p.exists() or p.is_symlink():
            raise OutputError(f"{what} {p} exists; pass --force to overwrite it") from None
        os.replace(tmp, p)
        return
    tmp.unlink()


@contextlib.contextmanager
def atomic_file(path: str | Path, force: bool, what: str) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it becomes
    ``path`` (see the module docstring), on failure it is removed."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        # The temporary keeps the suffix: writers that take the format from it work.
        fd, name = tempfile.mkstemp(prefix=f".{p.name}{TMP_INFIX}", suffix=p.suffix,
                                    dir=p.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write {what} {p}: {_why(exc)}") from None
    tmp = Path(name)
    try:
        yield tmp
        _commit_file(tmp, p, force, what)
    except OSError as exc:
        raise OutputError(f"cannot write {what} {p}: {_why(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_file(path: str | Path, data: str | bytes, force: bool, what: str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_file`."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_file(path, force, what) as tmp:
        tmp.write_bytes(raw)
    return Path(path)


# -- folders ---------------------------------------------------------------------------

def _read_manifest(d: Path) -> set[str] | None:
    """The relative paths ``d``'s manifest lists, or None without one.  Lines
    that would reach outside ``d`` are ignored."""
    m = d / MANIFEST
    if not m.is_file() or m.is_symlink():
        return None
    try:
        with open(m, "rb") as f:
            raw = f.read(_MAX_MANIFEST_BYTES + 1)
    except OSError:
        return None
    if len(raw) > _MAX_MANIFEST_BYTES:
        return None
    lines = raw.decode("utf-8", "replace").splitlines()
    if not lines or lines[0].split(" ")[0:2] != MANIFEST_HEADER.split(" "):
        return None
    out = set()
    for line in lines[1:]:
        rel = PurePosixPath(line.strip())
        if not line.strip() or rel.is_absolute() or ".." in rel.parts or rel.parts[0] == ".":
            continue
        out.add(str(rel))
    return out


def _tree(d: Path) -> list[str]:
    """Every file (and symlink) under ``d``, relative, sorted."""
    out = []
    for root, dirs, files in os.walk(d):
        r = Path(root)
        for name in files + [x for x in dirs if (r / x).is_symlink()]:
            out.append((r / name).relative_to(d).as_posix())
    return sorted(out)


class Staging:
    """A folder being built next to its destination; see :func:`prepare_dir`."""

    def __init__(self, dest: Path, tmp: Path, what: str) -> None:
        self.dest = dest
        self.path = tmp
        self.what = what
        self.committed = False

    def abort(self) -> None:
        """Drop the unfinished folder (it holds only what this run wrote)."""
        if not self.committed:
            shutil.rmtree(self.path, ignore_errors=True)

    def commit(self) -> list[str]:
        """Write the manifest and put the new folder in place of ``dest``;
        return the files written (relative)."""
        files = [f for f in _tree(self.path) if f != MANIFEST]
        try:
            (self.path / MANIFEST).write_text(
                f"{MANIFEST_HEADER} pervma {__version__}: the files pervma wrote here; "
                "a later run replaces these and keeps everything else\n"
                + "".join(f + "\n" for f in files), encoding="utf-8")
            if self.dest.exists() or self.dest.is_symlink():
                self._swap(files)
            else:
                os.rename(self.path, self.dest)
        except OSError as exc:
            raise OutputError(f"cannot put the new {self.what} in place at {self.dest}: "
                              f"{_why(exc)}; it is complete in {self.path}") from None
        self.committed = True
        return files

    def _swap(self, files: list[str]) -> None:
        d = self.dest
        listed = _read_manifest(d)
        if listed is None:
            listed = set()
            if any(True for _ in d.iterdir()):
                raise OutputError(f"{d} is no longer empty and holds no {MANIFEST}; the "
                                  f"new {self.what} is complete in {self.path}")
        keep = [f for f in _tree(d) if f not in listed and f != MANIFEST]
        clash = sorted(set(keep) & set(files))
        if clash:
            raise OutputError(f"{d}/{clash[0]} is not pervma's (not in its {MANIFEST}) and "
                              f"the new {self.what} has a file of that name; the new "
                              f"{self.what} is complete in {self.path}")
        old = Path(tempfile.mkdtemp(prefix=d.name + OLD_INFIX, dir=d.parent))
        old.rmdir()
        os.rename(d, old)
        try:
            os.rename(self.path, d)
        except OSError:
            os.rename(old, d)
            raise
        for rel in keep:  # the user's files move over, untouched
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            os.rename(old / rel, d / rel)
        for rel in sorted(listed):  # only what pervma wrote is removed
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
                (old / rel).unlink()
        with contextlib.suppress(FileNotFoundError):
            (old / MANIFEST).unlink()
        for root, _dirs, _files in sorted(os.walk(old, topdown=False), key=lambda t: -len(t[0])):
            with contextlib.suppress(OSError):
                os.rmdir(root)


@_guarded
def prepare_dir(out: str | Path, what: str = "output", force: bool = False) -> Staging:
    """Validate ``out`` and start building its replacement next to it.

    ``out`` may be missing (it is created, with its parents), empty, or hold a
    :data:`MANIFEST` from an earlier run; any other folder is refused whether or
    not ``force`` is given (``force`` only ever overwrites single files)."""
    d = Path(out)
    if str(out).strip() == "" or "\x00" in str(out):
        raise OutputError(f"the {what} folder wants a name, got {str(out)!r}")
    if (d.exists() or d.is_symlink()) and not d.is_dir():
        raise OutputError(f"cannot write the {what} to {d}: it exists and is not a folder")
    if d.is_dir():
        try:
            entries = list(d.iterdir())
        except OSError as exc:
            raise OutputError(f"cannot write the {what} to {d}: {_why(exc)}") from None
        if entries and _read_manifest(d) is None:
            extra = (" (--force only overwrites single files you name, never a folder)"
                     if force else "")
            raise OutputError(f"{d} is not empty and holds no {MANIFEST} of an earlier pervma "
                              f"run; choose a new folder for the {what}{extra}")
    _check_creatable(d.parent, f"the {what} to", d)
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=d.name + TMP_INFIX, dir=d.parent))
    except OSError as exc:
        raise OutputError(f"cannot write the {what} to {d}: {_why(exc)}") from None
    return Staging(d, tmp, what)


@contextlib.contextmanager
def staged_dir(out: str | Path, what: str = "output", force: bool = False,
               on_commit: Callable[[list[str]], None] | None = None) -> Iterator[Staging]:
    """``prepare_dir`` as a context manager: commit when the body completes,
    abort (leaving ``out`` as it was) when it raises or is interrupted."""
    st = prepare_dir(out, what, force)
    try:
        yield st
    except BaseException:
        st.abort()
        raise
    files = st.commit()
    if on_commit:
        on_commit(files)
