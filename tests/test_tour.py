"""The README's tour and every ``--help`` example run as written.

Each command goes through ``pervma.cli.main`` in-process, in a fresh folder, and
must exit with the status the README documents next to it (tour) or the one
listed in EXAMPLE_EXIT below (``--help`` examples; a new example without an
entry fails the test).  Where a command would take long, a smaller budget is
substituted, and that is the only change (see :func:`bounded`):

* ``pervma report`` and ``pervma report --quick`` run with the hidden ``--tiny``
  profile (the same page with minimal budgets, which cut some scenario runs: exit
  1, not 0; ``tests/report`` checks that ``--quick`` itself exits 0);
* ``pervma simulate`` runs 0.3 ms simulated windows (``--duration-ms 0.3``);
* ``pervma check --all`` runs at most 20 executions per run
  (``--max-executions 20``), so its runs end incomplete: exit 3, not 0;
* ``--out /tmp/r`` writes into this test's temporary folder instead;
* ``pervma litmus`` reads its ``tests/litmus/...`` files from the source tree.

Commands that read the running kernel still run; where the host lacks what
they read (BTF, /sys/kernel/slab, /proc/config.gz) they must fail with the
documented status 2 and a one-line error.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from pervma.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
BTF = Path("/sys/kernel/btf/vmlinux")
SLAB = Path("/sys/kernel/slab")
CONFIG_GZ = Path("/proc/config.gz")

# Exit status of each --help example as written (before bounded()).
EXAMPLE_EXIT = {
    "pervma report --quick": 0,
    "pervma report": 0,
    "pervma report --out /tmp/r": 0,
    "pervma check fault-vs-munmap": 0,
    "pervma check --all --preset legacy,universal,universal-up,universal-up-nopreempt "
    "--jobs 2": 0,
    "pervma check --bug B04 --trace-out out/": 1,
    "pervma check fork-vs-fault --strategy pct --max-executions 500 --seed 7": 3,
    "pervma check --list": 0,
    "pervma replay out/fork-vs-fault.replay.json": 1,
    "pervma bugs --json": 0,
    "pervma sites --no-check": 0,
    "pervma sites --preset legacy": 0,
    "pervma sites --json --preset universal-up --jobs 2": 0,
    "pervma simulate shared --preset universal --machine xeon16 --tasks 1,2,4,8,16": 0,
    "pervma simulate mmap1 --preset legacy,universal --mode threads --csv mmap1.csv "
    "--plot mmap1.png": 0,
    "pervma simulate pft-threads --machine e5-2690v4 --tasks 1,4,12,28,56 --mode threads "
    "--jobs 2": 0,
    "pervma simulate --list": 0,
    "pervma layout vm_area_struct": 0,
    "pervma layout mm_struct --json": 0,
    "pervma layout vm_area_struct --preset i386-tiny": 0,
    "pervma layout vm_area_struct --arch x86_64 --version 6.14 --config /proc/config.gz "
    "--set CONFIG_DEBUG_LOCK_ALLOC=y": 0,
    "pervma slab vm_area_struct mm_struct": 0,
    "pervma slab --validate": 0,
    "pervma slab --size 160 --cpus 64": 0,
    "pervma slab --size 192 --hwcache --rcu --freeptr-offset --json": 0,
    "pervma slab --kmalloc 136": 0,
    "pervma cost": 0,
    "pervma cost --json": 0,
    "pervma cost --configs": 0,
    "pervma cost --configs --json --cpus 64": 0,
    "pervma litmus tests/litmus/lkmm/MP+pooncerelease+poacquireonce.litmus": 0,
    "pervma litmus --check-result tests/litmus/lkmm/SB+poonceonces.litmus "
    "tests/litmus/doc/RM-broken.litmus": 0,
    "pervma fuzz --seed 1 --programs 50": 0,
    "pervma fuzz --seed 1 --programs 20 --bug B13 --preset universal-up": 0,
    "pervma fuzz --seed 1 --programs 64 --workers 2 --out camp": 0,
    "pervma check --program out/finding-000.program.json": 2,  # no campaign ran in the tmp dir
    "pervma simulate churnsame --emit-probe-args": 0,
    "pervma simulate my-workload.toml --tasks 1,2 --csv mine.csv": 2,  # the user's own file
    "pervma simulate page_fault1 --region 16MiB --backing memfd --sharing shared --tasks 1,2": 0,
}


def needs(argv: list[str]) -> Path | None:
    """What of the running kernel a command reads (None: nothing)."""
    cmd = argv[0]
    if "--config" in argv and CONFIG_GZ.as_posix() in argv:
        return CONFIG_GZ
    if cmd == "cost" or (cmd == "layout" and not {"--preset", "--arch", "--version"} & set(argv)):
        return BTF
    if cmd == "slab" and ("--validate" in argv or (argv[1:] and not argv[1].startswith("-"))):
        return SLAB
    return None


def bounded(argv: list[str], tmp: Path) -> tuple[list[str], int | None]:
    """The command with a smaller budget, and the exit status that budget
    implies when it differs from the documented one (see the module docstring)."""
    out = [str(tmp / "r") if a == "/tmp/r" else a for a in argv]
    out = [str(ROOT / a) if a.startswith("tests/litmus/") else a for a in out]
    if out[0] == "report":
        # --tiny's 40 executions cut some scenario runs, so the Correctness panel
        # is rightly not ok: exit 1 (tests/report checks that --quick exits 0)
        return [a for a in out if a != "--quick"] + ["--tiny"], 1
    if out[0] == "simulate" and "--list" not in out and "--emit-probe-args" not in out:
        out += ["--duration-ms", "0.3", "--min-cycles", "0"]
    if out[0] == "fuzz":  # two programs, small budgets: the campaign's shape, not its length
        i = out.index("--programs")
        out[i + 1] = "2"
        return out + ["--max-executions", "30", "--pct", "0"], None
    if out[0] == "check" and "--all" in out:
        return out + ["--max-executions", "20"], 3
    return out, None


def run(command: str, expected: int, tmp: Path, capsys: pytest.CaptureFixture[str]
        ) -> str | None:
    """Run one documented command; a description of what went wrong, or None."""
    argv = shlex.split(command)
    assert argv[0] == "pervma"
    argv, bound_exit = bounded(argv[1:], tmp)
    need = needs(argv)
    if need is not None and not need.exists():
        expected, bound_exit = 2, None
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    want = bound_exit if bound_exit is not None else expected
    if code != want:
        return f"{command!r} (run as pervma {shlex.join(argv)}): exit {code}, want {want}; " \
               f"stderr: {err.strip()[-300:]}"
    if code == 2:
        lines = err.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("pervma: "):
            return f"{command!r}: exit 2 without a one-line error: {err!r}"
    if "Traceback" in err:
        return f"{command!r}: traceback on stderr"
    return None


TOUR_LINE = re.compile(r"^(pervma [^#]*?)\s*#\s*exit (\d+)(?: \((\d+) without ([^):]+)\))?")


def tour() -> list[tuple[str, int]]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- section: tour -->", 1)[1].split("<!-- section:", 1)[0]
    code = "\n".join(re.findall(r"```sh\n(.*?)```", block, re.S))
    out = []
    for line in code.splitlines():
        if not line.strip():
            continue
        m = TOUR_LINE.match(line)
        assert m, f"tour line without a documented exit status: {line!r}"
        out.append((m.group(1), int(m.group(2))))
    return out


def examples() -> list[str]:
    """Every example in every --help epilog (top level and each subcommand)."""
    parser = build_parser()
    parsers: list[argparse.ArgumentParser] = [parser]
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        choices: Any = action.choices
        parsers += list(dict.fromkeys(choices.values()))
    out: list[str] = []
    for p in parsers:
        for line in (p.epilog or "").splitlines():
            line = line.strip()
            if line.startswith("example: "):
                line = line[len("example: "):]
            if not line.startswith("pervma "):
                continue
            for cmd in line.split("#", 1)[0].split(" ; "):
                if cmd.strip() not in out:
                    out.append(cmd.strip())
    return out


def test_the_tour_is_documented_command_by_command() -> None:
    cmds = [c for c, _ in tour()]
    assert cmds[:3] == ["pervma check fault-vs-munmap --preset universal",
                        "pervma check --bug B04 --trace-out out/",
                        "pervma replay out/fork-vs-fault.replay.json"]
    assert "pervma report --quick" in cmds


def test_the_tour_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    problems = [p for cmd, code in tour() if (p := run(cmd, code, tmp_path, capsys))]
    assert problems == []
    # what the tour says it writes
    assert (tmp_path / "out" / "fork-vs-fault.replay.json").is_file()
    assert (tmp_path / "pervma-report" / "index.html").is_file()


def test_every_help_example_is_listed() -> None:
    assert sorted(examples()) == sorted(EXAMPLE_EXIT)


def test_every_help_example_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    problems = []
    done: set[tuple[str, ...]] = set()
    for cmd in examples():
        argv = tuple(bounded(shlex.split(cmd)[1:], tmp_path)[0])
        if argv in done:  # e.g. 'report' and 'report --quick' both run as 'report --tiny'
            continue
        done.add(argv)
        if (p := run(cmd, EXAMPLE_EXIT.get(cmd, -1), tmp_path, capsys)):
            problems.append(p)
    assert problems == []
    assert (tmp_path / "mmap1.csv").is_file() and (tmp_path / "mmap1.png").is_file()
