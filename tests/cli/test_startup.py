"""Start-up stays light: building the parser, ``--version`` and ``--help``
import no command module, no model, no engine, no rich or matplotlib; a
command's parser (and its module) is built only when it is used, with the
same help as before.  Counts of imported modules, never timings."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from pervma import cli

HEAVY = ("rich", "matplotlib", "pervma.kernel", "pervma.sim", "pervma.check.engine")


def _modules_after(code: str) -> list[str]:
    """The pervma/rich/matplotlib modules a fresh interpreter has imported after
    running ``code`` (which may end in SystemExit, as --version and --help do)."""
    prog = (
        "import sys, json\n"
        f"try:\n    exec({code!r})\nexcept SystemExit:\n    pass\n"
        "sys.stdout.flush()\n"
        "print('\\nMODULES', json.dumps(sorted(m for m in sys.modules if m.startswith("
        "('pervma', 'rich', 'matplotlib')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                         check=True).stdout
    return list(json.loads(out.rsplit("MODULES ", 1)[1]))


def test_build_parser_imports_no_heavy_module() -> None:
    # The check the issue names, verbatim.
    out = subprocess.run(
        [sys.executable, "-c", "import pervma.cli, sys; pervma.cli.build_parser(); "
         "print(sorted(m for m in sys.modules if m.startswith(('rich','matplotlib',"
         "'pervma.kernel','pervma.sim','pervma.check.engine'))))"],
        capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("argv", [["--version"], ["--help"], []])
def test_version_and_help_import_no_command_module(argv: list[str]) -> None:
    mods = _modules_after(f"import pervma.cli; pervma.cli.main({argv!r})")
    assert mods == ["pervma", "pervma.cli", "pervma.errors"]


def test_check_help_imports_only_the_check_command() -> None:
    mods = _modules_after("import pervma.cli; pervma.cli.main(['check', '--help'])")
    assert not [m for m in mods if m.startswith(HEAVY)]
    assert "pervma.check.cmd" in mods
    assert not [m for m in mods if m.endswith(".cmd") and m != "pervma.check.cmd"]
    assert not [m for m in mods if m.startswith("pervma.check.") and m != "pervma.check.cmd"]


def test_import_pervma_loads_the_model_only_when_a_name_is_used() -> None:
    mods = _modules_after("import pervma")
    assert mods == ["pervma"]
    mods = _modules_after("from pervma import System, PAGE; assert PAGE == 4096")
    assert "pervma.kernel.system" in mods


def test_pervma_lazy_names_are_the_real_objects() -> None:
    import pervma
    from pervma.kernel.mmap import PROT_WRITE
    from pervma.kernel.system import System

    assert pervma.System is System
    assert pervma.PROT_WRITE is PROT_WRITE == 2
    assert set(pervma.__all__) <= set(dir(pervma))
    with pytest.raises(AttributeError, match="no attribute 'Sistem'"):
        pervma.Sistem  # noqa: B018


def test_lazy_packages_still_export_their_api() -> None:
    import pervma.check
    import pervma.report
    from pervma.check.api import run_check
    from pervma.report.runner import build_report

    assert pervma.check.run_check is run_check
    assert pervma.report.build_report is build_report
    with pytest.raises(AttributeError):
        pervma.check.nothing_here  # noqa: B018


def test_the_command_table_matches_what_each_module_registers() -> None:
    parser = cli.build_parser()
    sub = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
    assert isinstance(sub, cli._LazySubcommands)
    names = [name for name, _, _ in cli.COMMANDS]
    assert list(sub.choices) == names
    parsers = sub.choices.values()  # loads every module
    assert all(p.prog == f"pervma {n}" for p, n in zip(parsers, names, strict=True))
    assert sub.registered_help == {name: help for name, _, help in cli.COMMANDS}
    shown = [(a.dest, a.help) for a in sub._choices_actions]
    assert shown == [(name, help) for name, _, help in cli.COMMANDS]


def test_a_command_parses_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["check", "fault-vs-munmap", "--max-executions", "7"])
    assert (args.command, args.scenarios, args.max_executions) == ("check", ["fault-vs-munmap"], 7)
    assert args.func.__module__ == "pervma.check.cmd"
    args = parser.parse_args(["slab", "--kmalloc", "136"])
    assert (args.command, args.kmalloc, args.func.__name__) == ("slab", 136, "cmd_slab")


def test_an_unknown_command_is_one_line_naming_the_choices(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["chek"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err == ("pervma: argument COMMAND: invalid choice: 'chek' (choose from 'report', "
                   "'check', 'replay', 'fuzz', 'bugs', 'sites', 'simulate', 'layout', 'slab', 'cost', "
                   "'litmus') "
                   "(see 'pervma --help')\n")


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^    (\w+) +(\S.*)$", out, re.M)
    assert listed == [(name, help) for name, _, help in cli.COMMANDS]
