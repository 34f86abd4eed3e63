"""The inputs of issue #11, one by one: each is one line on stderr with exit 2
(never a traceback, never exit 1), and an unexpected internal error is exit 70
with the traceback saved to a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pervma.check.cmd
from pervma.check.replayfile import FORMAT_V1

from .conftest import run_main


@pytest.mark.parametrize("argv,msg", [
    (["check", "toy-locked", "--strategy", "pct", "--depth", "1000"],
     "argument --depth: wants a whole number from 1 to 20, got '1000'"),
    (["check", "toy-locked", "--preset", ""], "argument --preset: wants a value"),
    (["check", "toy-locked", "--preset", "legacy,"], "--preset wants names separated by commas"),
    (["check", "toy-locked", "--time", "nan"], "argument --time: wants a finite number above 0"),
    (["check", "toy-locked", "--time", "inf"], "argument --time: wants a finite number above 0"),
    (["check", "toy-locked", "--time", "-3"], "argument --time: wants a finite number above 0"),
    (["check", "toy-locked", "--jobs", "100000"], "argument --jobs: wants a whole number from 1"),
    (["check", "toy-locked", "--max-executions", "1e9"], "argument --max-executions: wants"),
    (["check", "toy-locked", "--seed", "-1"], "argument --seed: wants a whole number from 0"),
    (["check", "toy-locked", "--seed", "9" * 30], "argument --seed: wants a whole number"),
    (["check", "toy-locked", "--max-bound", "²"], "argument --max-bound: wants a whole number"),
    (["check", ""], "argument SCENARIO: wants a value, got an empty string"),
    (["check", "--bug", ""], "argument --bug: wants a value"),
    (["check", "toy-locked", "--trace-out", ""], "argument --trace-out: wants a value"),
    (["check", "toy-locked", "--config", ""], "argument --config: wants a value"),
    (["check", "--all", "--preset", "legacy-up"], "no scenario of --all is meant for preset"),
    (["simulate", "shared", "--duration-ms", "nan"], "argument --duration-ms: wants a finite"),
    (["simulate", "shared", "--duration-ms", "1e12"], "and at most 1000"),
    (["simulate", "shared", "--warmup-ms", "-1"], "argument --warmup-ms: wants a finite number"),
    (["simulate", "shared", "--tasks", ""], "argument --tasks: wants a value"),
    (["simulate", "shared", "--machine", " "], "argument --machine: wants a value"),
    (["simulate", "shared", "--jobs", "0"], "argument --jobs: wants a whole number from 1"),
    (["report", "--out", ""], "argument --out: wants a value"),
    (["report", "--jobs", "100000"], "argument --jobs: wants a whole number from 1"),
    (["replay", ""], "argument FILE: wants a value"),
    (["report", "--btf", "/dev/zero", "--out", "r"], "--btf /dev/zero: not a regular file"),
    (["report", "--btf", "missing.btf", "--out", "r"], "--btf missing.btf: no such file"),
])
def test_bad_argument_is_one_line_and_exit_2(argv: list[str], msg: str) -> None:
    r = run_main(argv)
    assert r.code == 2 and msg in r.one_line_error(), r.err
    assert r.out == ""
    assert not Path("r").exists()


@pytest.mark.parametrize("data,msg", [
    (b"CONFIG_SMP=y\n\xff\xfeCONFIG_PREEMPT=y\n", "not UTF-8 text (byte 13, line 2)"),
    (b"CONFIG_NR_CPUS=\xc2\xb2\n", "line 1: CONFIG_NR_CPUS wants a positive number"),
    (b"CONFIG_NR_CPUS=99999999999999999999\n", "CONFIG_NR_CPUS wants a positive number"),
    (b"CONFIG_SMP=maybe\n", "line 1: CONFIG_SMP is a bool"),
    (b"x" * (1 << 20) + b"y", "larger than 1048576 bytes"),
])
def test_bad_config_file_is_one_line(data: bytes, msg: str) -> None:
    Path("frag.config").write_bytes(data)
    r = run_main(["check", "toy-locked", "--config", "frag.config"])
    assert r.code == 2 and msg in r.one_line_error(), r.err


def test_config_that_is_a_folder_or_missing(tmp_path: Path) -> None:
    r = run_main(["check", "toy-locked", "--config", str(tmp_path)])
    assert r.code == 2 and "is a folder, not a file" in r.one_line_error()
    r = run_main(["check", "toy-locked", "--config", "nope.config"])
    assert r.code == 2 and "nope.config: no such file" in r.one_line_error()


def _replay_doc() -> dict[str, object]:
    r = run_main(["check", "toy-racy", "--trace-out", "orig"])
    assert r.code == 1
    doc: dict[str, object] = json.loads(Path("orig/toy-racy.replay.json").read_text())
    return doc


@pytest.mark.parametrize("edit,msg", [
    ({"bugs": ["B99"]}, "field 'bugs' item 0: unknown bug 'B99'"),
    ({"bugs": "B04"}, "field 'bugs' wants a list, got str"),
    ({"schedule": "0,1,1,0"}, "field 'schedule' wants a list, got str"),
    ({"schedule": [0, 1, True, 0]}, "field 'schedule' item 2: wants a whole number from 0 to 63"),
    ({"schedule": [0, -1]}, "field 'schedule' item 1: wants a whole number from 0 to 63"),
    ({"schedule": [0, 1.0]}, "field 'schedule' item 1: wants a whole number"),
    ({"schedule": [0, 10**30]}, "field 'schedule' item 1: wants a whole number"),
    ({"scenario": "toy-racey"}, "field 'scenario' unknown scenario 'toy-racey'"),
    ({"preset": "univeral"}, "field 'preset' unknown preset 'univeral'"),
    ({"violation": None}, "field 'violation' wants an object {kind, message}, got NoneType"),
    ({"violation": {"kind": "x"}}, "field 'violation' lacks 'message'"),
    ({"format": "pervma-replay/9"}, "not a replay file of a known format"),
    ({"config": 7}, "field 'config' wants a string, got int"),
    ({"config": "CONFIG_SMP=maybe"}, "CONFIG_SMP is a bool"),
    ({"schedule": None}, "field 'schedule' wants a list, got NoneType"),
])
def test_malformed_replay_file_is_named_not_did_not_reproduce(edit: dict[str, object],
                                                               msg: str) -> None:
    doc = _replay_doc()
    doc.update(edit)
    Path("bad.replay.json").write_text(json.dumps(doc))
    r = run_main(["replay", "bad.replay.json"])
    assert r.code == 2 and msg in r.one_line_error(), r.err
    assert "did not reproduce" not in r.out


def test_replay_schedule_of_a_thread_that_does_not_exist() -> None:
    doc = _replay_doc()
    doc["schedule"] = [5, 0, 1]
    Path("bad.replay.json").write_text(json.dumps(doc))
    r = run_main(["replay", "bad.replay.json"])
    assert r.code == 2, r.err
    r.one_line_error()


def test_replay_nested_50000_levels_is_one_line() -> None:
    Path("deep.replay.json").write_text("[" * 50_000 + "]" * 50_000)
    r = run_main(["replay", "deep.replay.json"])
    assert r.code == 2
    assert r.one_line_error() == ("pervma: deep.replay.json: JSON nested 50000 levels deep; "
                                  "at most 16 allowed")


def test_valid_replay_and_unknown_field_warning() -> None:
    doc = _replay_doc()
    assert doc["format"] == FORMAT_V1
    doc["comment"] = "added by hand"
    Path("ok.replay.json").write_text(json.dumps(doc))
    r = run_main(["replay", "ok.replay.json"])
    assert r.code == 1 and r.out.rstrip().endswith("reproduced")
    assert "warning: unknown field 'comment' ignored" in r.err


def test_internal_error_is_exit_70_with_a_saved_traceback(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    def boom(args: object) -> int:
        raise ZeroDivisionError("the model divided by zero")

    monkeypatch.setattr(pervma.check.cmd, "cmd_bugs", boom)
    # register() bound the old function into the parser; rebuild it through main.
    r = run_main(["bugs"])
    assert r.code == 70
    line = r.one_line_error()
    assert line.startswith("pervma: internal error: ZeroDivisionError: the model divided by "
                           "zero; traceback saved to ")
    saved = Path(line.rsplit("traceback saved to ", 1)[1])
    assert saved.is_relative_to(tmp_path / ".cache" / "pervma" / "crashes")
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "ZeroDivisionError" in text
    assert "Traceback" not in r.out + r.err


def test_internal_error_with_no_writable_cache_still_one_line(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def boom(args: object) -> int:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(pervma.check.cmd, "cmd_bugs", boom)
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # not a folder: falls back to /tmp
    r = run_main(["bugs"])
    assert r.code == 70
    line = r.one_line_error()
    assert "internal error: RecursionError" in line and "traceback saved to /" in line
    Path(line.rsplit("traceback saved to ", 1)[1]).unlink()


LONG = "a" * 300  # longer than NAME_MAX: every probe of it fails with ENAMETOOLONG


@pytest.mark.parametrize("argv", [
    ["simulate", "shared", "--csv", f"{LONG}.csv"],
    ["check", "toy-racy", "--trace-out", LONG],
    ["report", "--out", LONG],
    ["check", "toy-racy", "--trace-out", "/proc/pervma-out"],  # cannot be created, even by root
])
def test_unwritable_output_is_refused_before_the_work(argv: list[str]) -> None:
    r = run_main(argv)
    assert r.code == 2 and "cannot write" in r.one_line_error(), r.err
    assert r.out == ""  # refused before any run: no result printed
