"""The ``pervma`` command.

Each area registers its own subcommands from a ``cmd`` module
(``pervma.check.cmd``, ``pervma.sim.cmd``, ``pervma.layout.cmd``,
``pervma.report.cmd``), so the dispatcher stays small; a module is imported
only when its command is parsed (:data:`COMMANDS`), which keeps
``pervma --version`` and ``pervma --help`` under 0.1 s CPU.  Errors a user can
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
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pervma import __version__
from pervma.errors import PervmaError

# The commands, in the order ``pervma --help`` lists them: name, the module
# whose ``register(subparsers)`` adds its parser (with ``func(args) -> int``),
# and the one-line help.  The module is imported only when its command is
# parsed, so ``pervma --version`` and ``pervma --help`` import no command module
# (and hence no model, engine, rich or matplotlib).  tests/cli/test_startup.py
# checks that each line here matches the help its module registers.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("report", "pervma.report.cmd",
     "the HTML report: cost, correctness, performance, environment"),
    ("check", "pervma.check.cmd",
     "explore thread interleavings of scenarios and report violations"),
    ("replay", "pervma.check.cmd", "re-run a recorded counterexample exactly"),
    ("fuzz", "pervma.check.fuzz.cmd", "generate programs and explore their interleavings"),
    ("bugs", "pervma.check.cmd", "list the catalogue of historical bugs"),
    ("sites", "pervma.check.sites",
     "the series' call sites: pre-series and series forms, checked per preset"),
    ("simulate", "pervma.sim.cmd",
     "run a workload under the timed simulator (throughput vs tasks)"),
    ("layout", "pervma.layout.cmd",
     "struct layout (pahole -C style) from BTF or the field tables"),
    ("slab", "pervma.layout.cmd", "SLUB geometry of caches: predicted vs /sys/kernel/slab"),
    ("cost", "pervma.layout.cmd",
     "the machine's bill: VMAs alive, slab pages, counterfactual layouts"),
    ("litmus", "pervma.litmus.cmd",
     "run C litmus tests under the Linux-kernel memory model (herd7-style)"),
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors in one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"pervma: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


class _LazyParsers(dict[str, Any]):
    """The name -> parser map of the subcommands, filled on first use: looking up
    a command whose module is not imported yet imports it and lets it register
    its parsers.  Membership and iteration (argparse's choice check and its
    'invalid choice' message) need only the names and import nothing."""

    def __init__(self, load: Callable[[str], None]) -> None:
        super().__init__()
        self._load = load

    def __getitem__(self, name: str) -> Any:
        value = super().__getitem__(name)
        if value is None:
            self._load(name)
            value = super().__getitem__(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def values(self) -> Any:
        return [self[n] for n in list(self)]

    def items(self) -> Any:
        return [(n, self[n]) for n in list(self)]


class _LazySubcommands(argparse._SubParsersAction):
    """Subcommands whose parsers are built only when one is used.

    ``add_lazy`` records a command's name, module and help (the help is shown by
    ``pervma --help`` without importing anything); the module's ``register``
    later fills in the parser through ``add_parser``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[str, str] = {}
        self.registered_help: dict[str, str | None] = {}
        self._name_parser_map = _LazyParsers(self._load)
        self.choices = self._name_parser_map

    def add_lazy(self, name: str, module: str, help: str) -> None:
        self._pending[name] = module
        self._choices_actions.append(self._ChoicesPseudoAction(name, (), help))
        dict.__setitem__(self._name_parser_map, name, None)

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name not in self._pending:
            return super().add_parser(name, **kwargs)
        del self._pending[name]
        self.registered_help[name] = kwargs.pop("help", None)
        kwargs.setdefault("prog", f"{self._prog_prefix} {name}")
        parser = self._parser_class(**kwargs)
        dict.__setitem__(self._name_parser_map, name, parser)
        return parser

    def _load(self, name: str) -> None:
        module = self._pending.get(name)
        if module is None:
            raise KeyError(name)
        importlib.import_module(module).register(self)
        if name in self._pending:
            raise RuntimeError(f"{module} did not register the command {name!r}")


def build_parser() -> argparse.ArgumentParser:
    """The ``pervma`` parser; a subcommand's own parser (and its module) is
    built when it is parsed or looked up, not here."""
    parser = _Parser(
        prog="pervma",
        description="An executable model of Linux's per-VMA locking.",
        epilog="example: pervma report --quick",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pervma {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser,
                                action=_LazySubcommands)
    assert isinstance(sub, _LazySubcommands)
    for name, module, help in COMMANDS:
        sub.add_lazy(name, module, help)
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
        # model threads dropped mid-run are not "never awaited" bugs: stay quiet
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
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
