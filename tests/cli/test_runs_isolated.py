"""``check`` over several runs: each run's failure is that run's result and the
other runs complete, in one process and over a worker pool.

Three broken scenarios are registered for these tests only: one whose setup
raises a model violation (a ``BaseException`` that cannot be pickled back from
a worker), one whose setup raises an ordinary exception, and one whose setup
kills its process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pervma import sched
from pervma.check import api
from pervma.check.scenario import _REGISTRY, Instance, Scenario, register
from pervma.config import Config

from .conftest import run_main


def _setup_violation(cfg: Config) -> Instance:
    raise sched.Violation("KASAN: use-after-free", "vma freed while the scenario was set up")


def _setup_exception(cfg: Config) -> Instance:
    raise KeyError("no such mm")


def _setup_kills_process(cfg: Config) -> Instance:
    os._exit(9)


BROKEN = {"t-setup-violation": _setup_violation, "t-setup-exception": _setup_exception,
          "t-setup-kills": _setup_kills_process}


@pytest.fixture(autouse=True)
def broken_scenarios() -> Iterator[None]:
    for name, build in BROKEN.items():
        register(Scenario(name, "test only", build, tags=("toy",)))
    yield
    for name in BROKEN:
        _REGISTRY.pop(name, None)


def _kw(name: str) -> dict[str, object]:
    return {"scenario": name, "preset": "universal", "max_executions": 50}


def test_setup_violation_is_the_runs_violation_in_process() -> None:
    res = api.run_many([_kw("toy-locked"), _kw("t-setup-violation"), _kw("toy-readers")], 1)
    assert [r.scenario for r in res] == ["toy-locked", "t-setup-violation", "toy-readers"]
    assert [r.exit_code for r in res] == [0, 1, 0]
    assert res[1].violation == ("KASAN: use-after-free", "vma freed while the scenario was set up")
    assert (res[2].executions, res[2].states) == (1, 16) and res[2].complete


def test_every_failure_over_a_pool_is_its_runs_result() -> None:
    names = ["toy-locked", "t-setup-violation", "t-setup-kills", "t-setup-exception",
             "toy-readers", "toy-racy"]
    res = api.run_many([_kw(n) for n in names], 2)
    assert [r.scenario for r in res] == names
    by = dict(zip(names, res, strict=True))
    assert by["toy-locked"].exit_code == 0 and by["toy-locked"].complete
    assert (by["toy-readers"].executions, by["toy-readers"].states) == (1, 16)
    assert by["toy-readers"].complete
    assert by["toy-racy"].violation == ("assertion", "count == 1, expected 2 (lost update)")
    assert by["t-setup-violation"].violation is not None
    assert by["t-setup-violation"].violation[0] == "KASAN: use-after-free"
    assert by["t-setup-kills"].error == "worker process died while running it"
    assert by["t-setup-kills"].exit_code == 70
    err = by["t-setup-exception"].error
    assert err is not None and err.startswith("internal error: KeyError: 'no such mm'")
    assert "Traceback" in (by["t-setup-exception"].error_traceback or "")


def test_cli_shows_every_run_and_saves_the_traceback(tmp_path: Path) -> None:
    r = run_main(["check", "toy-locked", "t-setup-exception", "toy-readers", "--jobs", "2"])
    assert r.code == 70  # no violation, one run failed
    lines = r.out.splitlines()
    assert lines[0].startswith("toy-locked [universal] dpor: complete, clean")
    assert any(x.startswith("t-setup-exception [universal] dpor: FAILED: internal error: "
                            "KeyError") for x in lines)
    assert any(x.startswith("toy-readers [universal] dpor: complete, clean") for x in lines)
    assert "3 runs: 2 complete and clean, 0 with a violation, 0 incomplete, 1 failed" in r.out
    line = r.one_line_error()
    assert "t-setup-exception [universal] failed: internal error: KeyError" in line
    saved = Path(line.rsplit("traceback saved to ", 1)[1])
    assert saved.is_relative_to(tmp_path) and "KeyError" in saved.read_text()


def test_cli_violation_outranks_a_failed_run() -> None:
    r = run_main(["check", "t-setup-violation", "t-setup-kills", "toy-locked", "--jobs", "2",
                  "--json"])
    assert r.code == 1
    import json

    doc = json.loads(r.out)
    assert [x["exit_code"] for x in doc["results"]] == [1, 70, 0]
    assert doc["exit_code"] == 1
