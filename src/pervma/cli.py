"""The ``pervma`` command.

Each area registers its own subcommands from a ``cmd`` module
(``pervma.check.cmd``, ``pervma.sim.cmd``, ``pervma.layout.cmd``,
``pervma.report.cmd``), so the dispatcher stays small.  Errors a user can
cause (:class:`pervma.errors.PervmaError`) become one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except PervmaError as exc:
        sys.stderr.write(f"pervma: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("pervma: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
