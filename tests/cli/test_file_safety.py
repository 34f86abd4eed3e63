"""``check --trace-out`` and ``replay --trace-out``: distinct names per run, an
existing file is never replaced without --force, --force replaces only the
files named, and every path is checked before a run starts."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import run_main


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_one_preset_keeps_todays_names() -> None:
    r = run_main(["check", "toy-racy", "--trace-out", "out"])
    assert r.code == 1
    assert _names(Path("out")) == ["toy-racy.replay.json", "toy-racy.trace.json"]


def test_several_presets_write_one_file_pair_each() -> None:
    r = run_main(["check", "toy-racy", "--preset", "legacy,universal,universal-up",
                  "--trace-out", "out"])
    assert r.code == 1
    names = _names(Path("out"))
    assert names == sorted(f"toy-racy.{p}.{k}.json" for p in ("legacy", "universal",
                                                                "universal-up")
                           for k in ("replay", "trace"))
    for p in ("legacy", "universal", "universal-up"):
        doc = json.loads(Path(f"out/toy-racy.{p}.replay.json").read_text())
        assert doc["preset"] == p
        assert run_main(["replay", f"out/toy-racy.{p}.replay.json"]).code == 1
        assert f"  wrote out/toy-racy.{p}.replay.json" in r.out


def test_existing_replay_file_is_refused_before_the_run() -> None:
    out = Path("out")
    out.mkdir()
    (out / "toy-racy.replay.json").write_text("the user's")
    (out / "notes.txt").write_text("mine")
    r = run_main(["check", "toy-racy", "--trace-out", "out"])
    assert r.code == 2
    assert "toy-racy.replay.json exists; pass --force" in r.one_line_error()
    assert r.out == ""  # refused before the run: no result printed
    assert _names(out) == ["notes.txt", "toy-racy.replay.json"]
    assert (out / "toy-racy.replay.json").read_text() == "the user's"


def test_force_replaces_only_the_files_named() -> None:
    out = Path("out")
    out.mkdir()
    (out / "toy-racy.replay.json").write_text("old")
    (out / "toy-racy.trace.json").write_text("old")
    (out / "toy-abba.replay.json").write_text("another run's")
    (out / "notes.txt").write_text("mine")
    r = run_main(["check", "toy-racy", "--trace-out", "out", "--force"])
    assert r.code == 1
    assert json.loads((out / "toy-racy.replay.json").read_text())["scenario"] == "toy-racy"
    assert (out / "toy-abba.replay.json").read_text() == "another run's"
    assert (out / "notes.txt").read_text() == "mine"
    assert _names(out) == ["notes.txt", "toy-abba.replay.json", "toy-racy.replay.json",
                           "toy-racy.trace.json"]


def test_missing_folder_is_created_and_the_result_printed() -> None:
    r = run_main(["check", "toy-racy", "--trace-out", "a/b/c"])
    assert r.code == 1 and "BUG: assertion" in r.out
    assert "  wrote a/b/c/toy-racy.replay.json" in r.out
    assert _names(Path("a/b/c")) == ["toy-racy.replay.json", "toy-racy.trace.json"]


def test_trace_out_under_a_file_is_refused_before_the_run() -> None:
    Path("blocker").write_text("a file")
    r = run_main(["check", "toy-racy", "--trace-out", "blocker/out"])
    assert r.code == 2 and "blocker exists and is not a folder" in r.one_line_error()
    assert r.out == "" and Path("blocker").read_text() == "a file"


def test_same_run_twice_is_one_run() -> None:
    r = run_main(["check", "toy-racy", "toy-racy", "--preset", "universal,universal",
                  "--trace-out", "out", "--json"])
    assert r.code == 1
    assert len(json.loads(r.out)["results"]) == 1


def test_jobs_split_run_writes_its_files_once(tmp_path: Path) -> None:
    r = run_main(["check", "toy-racy", "--strategy", "random", "--max-executions", "40",
                  "--jobs", "2", "--trace-out", "out"])
    assert r.code == 1, r.err
    assert _names(Path("out")) == ["toy-racy.replay.json", "toy-racy.trace.json"]
    assert run_main(["replay", "out/toy-racy.replay.json"]).code == 1


def test_replay_trace_out_writes_only_the_trace_and_keeps_the_input() -> None:
    assert run_main(["check", "toy-racy", "--trace-out", "out"]).code == 1
    before = Path("out/toy-racy.replay.json").read_bytes()
    Path("out/toy-racy.trace.json").unlink()
    r = run_main(["replay", "out/toy-racy.replay.json", "--trace-out", "out"])
    assert r.code == 1
    assert Path("out/toy-racy.replay.json").read_bytes() == before
    assert json.loads(Path("out/toy-racy.trace.json").read_text())["traceEvents"]
    # Again: the trace exists now, so without --force it is refused before the replay.
    r = run_main(["replay", "out/toy-racy.replay.json", "--trace-out", "out"])
    assert r.code == 2 and "toy-racy.trace.json exists; pass --force" in r.one_line_error()
    assert run_main(["replay", "out/toy-racy.replay.json", "--trace-out", "out",
                     "--force"]).code == 1
