"""pervma check / replay / bugs: exit codes, JSON, files, usage errors; the
toy racy program found, minimised and replayed; strategies seeded."""

from __future__ import annotations

import json

import pytest

from pervma.check.api import run_check
from pervma.cli import main


def test_racy_toy_is_found_minimised_and_replays(tmp_path, capsys) -> None:
    code = main(["check", "toy-racy", "--trace-out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "BUG: assertion: count == 1, expected 2 (lost update)" in out
    assert "1 preemption(s), 4 steps" in out
    doc = json.loads((tmp_path / "toy-racy.replay.json").read_text())
    assert doc["format"] == "pervma-replay/1" and doc["schedule"] == [0, 1, 1, 0]
    assert doc["model_version"].startswith("0.")
    assert main(["replay", str(tmp_path / "toy-racy.replay.json")]) == 1
    assert "reproduced" in capsys.readouterr().out
    # A schedule that does not lose the update: replay exits 0.
    doc["schedule"] = [0, 0, 1, 1]
    other = tmp_path / "other.replay.json"
    other.write_text(json.dumps(doc))
    assert main(["replay", str(other)]) == 0


def test_exit_codes_clean_incomplete_violation(capsys) -> None:
    assert main(["check", "toy-locked"]) == 0
    assert main(["check", "toy-livelock"]) == 3  # the stateful search closes the cycle
    assert main(["check", "toy-spin", "--stateless"]) == 3  # the livelock bound
    assert main(["check", "toy-spin"]) == 0  # a spin-wait another thread ends: a closed cycle
    assert main(["check", "toy-readers", "--max-executions", "3"]) == 3
    assert main(["check", "toy-abba"]) == 1
    out = capsys.readouterr().out
    assert "deadlock" in out and "livelock bound" in out


def test_json_output(capsys) -> None:
    assert main(["check", "toy-readers", "--json", "--stateless", "--trace-stats"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (res,) = doc["results"]
    assert (res["executions"], res["distinct"], res["complete"], res["exit_code"]) == (8, 8, True, 0)
    assert res["states"] is None
    assert main(["check", "toy-readers", "--json"]) == 0
    (res,) = json.loads(capsys.readouterr().out)["results"]
    # 1 writer, 3 readers: every order of the reads around the write ends in one of 16 states
    assert (res["executions"], res["states"], res["complete"], res["exit_code"]) == (1, 16, True, 0)
    assert res["redundancy"] is None  # not asked for


@pytest.mark.parametrize("argv", [
    ["check"],
    ["check", "no-such-scenario"],
    ["check", "toy-racy", "--preset", "univeral"],
    ["check", "toy-racy", "--max-executions", "0"],
    ["check", "--bug", "B99"],
    ["check", "toy-racy", "--strategy", "magic"],
    ["replay", "/nonexistent.replay.json"],
])
def test_usage_errors_exit_2_with_one_line(argv, capsys) -> None:
    assert _code(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pervma:")


def _code(argv: list[str]) -> int:
    """main()'s exit code, whether returned or raised by argparse."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_bad_replay_file_is_a_usage_error(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["replay", str(bad)]) == 2


def test_bugs_lists_the_catalogue(capsys) -> None:
    assert main(["bugs"]) == 0
    out = capsys.readouterr().out
    for bug in ("B02", "B04", "B05", "B09", "B12", "B13", "B16", "B17", "B18"):
        assert f"pervma check --bug {bug}" in out
    assert "missing" not in out
    assert main(["bugs", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["bugs"]) == 9


def test_help_has_an_example(capsys) -> None:
    for cmd in ("check", "replay", "bugs"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "example" in capsys.readouterr().out


@pytest.mark.parametrize("strategy", ["random", "pct", "bounded"])
def test_other_strategies_find_the_race_and_are_seeded(strategy: str) -> None:
    a = run_check("toy-racy", strategy=strategy, seed=5, max_executions=500)
    b = run_check("toy-racy", strategy=strategy, seed=5, max_executions=500)
    assert a.violation is not None and a.schedule == b.schedule
    assert a.executions == b.executions
    if strategy == "pct":
        assert any("probability >= 1/(n*k^(d-1))" in n for n in a.notes)


def test_random_and_pct_are_never_complete() -> None:
    for strategy in ("random", "pct"):
        res = run_check("toy-locked", strategy=strategy, max_executions=50)
        assert res.exit_code == 3


def test_bounded_is_complete_when_no_schedule_reaches_the_bound() -> None:
    res = run_check("toy-readers", strategy="bounded", max_bound=10)
    assert res.exit_code == 0


def test_jobs_spread_runs_over_processes(capsys) -> None:
    assert main(["check", "toy-locked", "toy-readers", "toy-writers", "--jobs", "2"]) == 0
    assert main(["check", "toy-racy", "--strategy", "random", "--jobs", "2",
                 "--max-executions", "40"]) == 1
    assert "2 worker processes" in capsys.readouterr().out


def test_one_cpu_preset_via_config_fragment(tmp_path) -> None:
    frag = tmp_path / "up.config"
    frag.write_text("# CONFIG_SMP is not set\nCONFIG_PREEMPT=y\n")
    assert main(["check", "toy-preempt", "--config", str(frag)]) == 0
    assert main(["check", "toy-preempt"]) == 1
