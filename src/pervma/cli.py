"""The ``pervma`` command.

Each area registers its own subcommands from a ``cmd`` module
(``pervma.check.cmd``, ``pervma.sim.cmd``, ``pervma.layout.cmd``,
``pervma.report.cmd``), so the dispatcher stays small.  Errors a user can
cause (:class:`pervma.errors.PervmaError`) become one line on stderr and exit 2.

Exit codes, for every command: 0 done (for check/replay: clean / did not
reproduce), 1 the result the command exists to report (a violation found, a
reproduced replay, an incomplete report section), 3 an exploring command's
clean but incomplete run, 2 a usage or input/output error, 130 interrupted,
70 an unexpected internal error: one line naming it and the file its
traceback was saved to, never a bare traceback.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from pervma import __version__
from pervma.errors import PervmaError

# Modules that provide ``register(subparsers)``; each adds parsers whose
# ``func(args) -> int`` runs the command.
_COMMAND_MODULES = (
    "pervma.report.cmd",
    "pervma.check.cmd",
    "pervma.sim.cmd",
    "pervma.layout.cmd",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"pervma: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pervma",
        description="An executable model of Linux's per-VMA locking.",
        epilog="example: pervma report --quick",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pervma {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        mod.register(sub)
    return parser


EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def crash_dir() -> Path:
    """Where internal-error tracebacks are saved: ``$XDG_CACHE_HOME/pervma/crashes``
    (default ``~/.cache``), else the system temporary folder."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pervma" / "crashes"


def save_traceback(text: str) -> str:
    """Save a traceback text; return its path ("" when nothing could be written)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for d in (crash_dir(), Path(tempfile.gettempdir())):
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f"pervma-crash-{stamp}-", suffix=".txt", dir=d)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(f"pervma {__version__}\nargv: {sys.argv!r}\n\n{text}")
            return name
        except OSError:
            continue
    return ""


def internal_error(exc: BaseException) -> int:
    """One line for an unexpected exception; the traceback goes to a file."""
    text = "".join(traceback.format_exception(exc))
    path = save_traceback(text)
    what = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    if len(what) > 300:
        what = what[:297] + "..."
    where = f"traceback saved to {path}" if path else "the traceback could not be saved"
    sys.stderr.write(f"pervma: internal error: {what}; {where}\n")
    return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (argparse's ``--help`` and usage
    errors raise ``SystemExit`` with 0 and 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except PervmaError as exc:
        msg = " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__
        sys.stderr.write(f"pervma: {msg}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("pervma: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``pervma check --list | head``): stop quietly.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place every unexpected error ends
        return internal_error(exc)
    except BaseException as exc:  # a model Violation escaping its driver, GeneratorExit...
        if isinstance(exc, SystemExit):
            raise
        return internal_error(exc)
