"""The fuzzing campaign (issue #15 items 3, 5, 6): rounds, corpus, executors
(this process, local worker processes, a real Dask LocalCluster), the files
and the exits.  Small budgets: each campaign is 8 programs of at most 40 DPOR
executions and 5 PCT samples."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pervma.check.fuzz import campaign as cmod
from pervma.check.fuzz.campaign import Campaign, InProcess, draw
from pervma.check.fuzz.corpus import Corpus
from pervma.check.fuzz.generate import generate
from pervma.cli import main
from pervma.config import Config

SMALL = ["--seed", "1", "--round-size", "4", "--max-executions", "40", "--pct", "5"]


def _run(tmp: Path, name: str, *extra: str) -> tuple[int, Path]:
    out = tmp / name
    code = main(["fuzz", *SMALL, *extra, "--out", str(out)])
    return code, out


def _corpus(out: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((out / "corpus").iterdir())}


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 8-program campaign of seed 1 in this process (--workers 1)."""
    code, out = _run(tmp_path_factory.mktemp("serial"), "one", "--programs", "8",
                     "--workers", "1")
    assert code == 0
    return out


def test_the_same_campaign_with_1_and_2_local_workers(serial: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, two = _run(tmp_path, "two", "--programs", "8", "--workers", "2")
    assert code == 0
    assert "on 2 local worker processes" in capsys.readouterr().out
    assert (two / "summary.json").read_text() == (serial / "summary.json").read_text()
    assert _corpus(two) == _corpus(serial)
    s = json.loads((serial / "summary.json").read_text())
    assert s["programs_done"] == 8 and s["rounds"] == 2 and s["stopped"] == "programs"
    # the second round mutates what the first put in the corpus
    assert any("parent" in r["origin"] for r in s["results"] if r["round"] == 1)


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A real dask.distributed LocalCluster of 2 worker processes; its address."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster:
        yield str(cluster.scheduler_address)


def test_a_dask_cluster_gives_the_local_result(serial: Path, scheduler: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(tmp_path, "dask", "--programs", "8", "--scheduler", scheduler)
    assert code == 0
    assert f"on the Dask scheduler at {scheduler} (2 workers)" in capsys.readouterr().out
    assert (out / "summary.json").read_text() == (serial / "summary.json").read_text()
    assert _corpus(out) == _corpus(serial)


def test_the_corpus_holds_exactly_the_programs_that_added_coverage(serial: Path) -> None:
    s = json.loads((serial / "summary.json").read_text())
    rows = s["results"]
    adders = [r["program"] for r in rows if r["new_racing_pairs"] and r["violation"] is None]
    assert adders and s["corpus"] == adders
    assert [r["program"] for r in rows if r["in_corpus"]] == adders
    assert sorted(_corpus(serial)) == [f"program-{i:06d}.json" for i in adders]
    assert sum(r["new_racing_pairs"] for r in rows) == len(s["coverage"])
    for r in rows:  # a mutation's parent was in the corpus when its round began
        if "parent" in r["origin"]:
            assert r["origin"]["parent"] in adders and r["origin"]["parent"] < 4 * r["round"]
    # a program found again adds nothing: it does not join
    c = Corpus()
    prog = generate(1, 0)
    assert c.consider(0, prog, {("pte", True, False)}) == [("pte", True, False)]
    assert c.consider(1, prog, {("pte", True, False)}) == []
    assert c.consider(2, prog, {("vm_refcnt", True, True)}, violation=True)
    assert [e.index for e in c.entries] == [0] and len(c.cover) == 2


def test_the_draw_depends_on_seed_round_slot_and_corpus_only() -> None:
    cfg = Config.preset("universal")
    c = Corpus()
    c.consider(7, generate(3, 7), {("pte", True, False)})
    parents = c.snapshot()
    a = [draw(3, 16 + s, 1, s, parents, cfg) for s in range(16)]
    b = [draw(3, 16 + s, 1, s, parents, cfg) for s in range(16)]
    assert [(p.dumps(), o) for p, o in a] == [(p.dumps(), o) for p, o in b]
    assert {o.parent for _, o in a} == {None, 7}  # both fresh programs and mutations
    for s, (p, o) in enumerate(a):
        if o.parent is None:  # a fresh slot is program 16 + s of the seed
            assert p.dumps() == generate(3, 16 + s).dumps()
    empty = [draw(3, s, 0, s, (), cfg) for s in range(4)]  # no corpus yet: all fresh
    assert all(o.parent is None for _, o in empty)


def test_coverage_csv_and_plot(serial: Path) -> None:
    s = json.loads((serial / "summary.json").read_text())
    lines = (serial / "coverage.csv").read_text().splitlines()
    assert lines[0] == ("program,round,seconds,executions,racing_pairs,corpus,"
                        "unique_violations,hits")
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(8))
    pairs = [int(r[4]) for r in rows]
    assert pairs == sorted(pairs) and pairs[-1] == len(s["coverage"])
    assert int(rows[-1][3]) == s["executions"] == sum(r["executions"] for r in s["results"])
    assert int(rows[-1][5]) == len(s["corpus"])
    png = (serial / "coverage.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize("addr, why", [
    ("localhost:8786", "--scheduler wants tcp://HOST:PORT (or tls://HOST:PORT), got "
                       "'localhost:8786'"),
    ("tcp://127.0.0.1:99999", "--scheduler wants tcp://HOST:PORT"),
    ("tcp://127.0.0.1:1", "cannot reach the Dask scheduler at tcp://127.0.0.1:1: "),
])
def test_a_bad_scheduler_is_one_line_and_exit_2(addr: str, why: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cmod, "CONNECT_TIMEOUT", 1.0)
    code, out = _run(tmp_path, "x", "--programs", "2", "--scheduler", addr)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"pervma: {why}") and err.count("\n") == 1
    assert not out.exists()


def test_dask_and_scheduler_exclude_each_other(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _run(tmp_path, "x", "--dask", "--scheduler", "tcp://127.0.0.1:8786")
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_an_interrupt_keeps_what_was_found(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real = cmod.explore_program
    calls = []

    def explore(prog, cfg, **kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(prog, cfg, **kw)

    monkeypatch.setattr(cmod, "explore_program", explore)
    code, out = _run(tmp_path, "int", "--programs", "8", "--workers", "1")
    cap = capsys.readouterr()
    assert code == 130
    assert cap.err.endswith(f"pervma: interrupted after 5 programs (saved in {out}/)\n")
    s = json.loads((out / "summary.json").read_text())
    assert s["stopped"] == "interrupted" and s["programs_done"] == 5 and s["rounds"] == 2
    assert len((out / "coverage.csv").read_text().splitlines()) == 1 + 5
    assert sorted(_corpus(out)) == [f"program-{i:06d}.json" for i in s["corpus"]]


def test_time_stops_starting_rounds(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "t", "--time", "0.001", "--workers", "1")
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    # the first round always runs; by its end the time is up
    assert s["stopped"] == "time" and s["rounds"] == 1 and s["programs_done"] == 4
    assert s["programs_asked"] is None and s["time_limit"] == 0.001


def test_a_violation_goes_to_the_findings_not_the_corpus() -> None:
    """A stand-in program that always violates: the campaign hands it to the
    findings, keeps it out of the corpus, and the exit is 1."""
    from pervma.check.fuzz.explore import ProgramResult

    class Found:
        def __init__(self) -> None:
            self.got: list[int] = []

        def add(self, index, prog, res):  # type: ignore[no-untyped-def]
            self.got.append(index)
            return "finding-0001"

        def summary(self):  # type: ignore[no-untyped-def]
            return [{"id": "finding-0001", "hits": len(self.got)}]

        def write(self, directory):  # type: ignore[no-untyped-def]
            pass

    class Violating(InProcess):
        def map(self, fn, tasks, lost):  # type: ignore[no-untyped-def]
            for t in tasks:
                yield ProgramResult(executions=1, violation=("lockdep", "x"),
                                    coverage={("pte", True, t.index % 2 == 0)}), None

    f = Found()
    camp = Campaign(1, "universal", [], f, 6, round_size=4)
    camp.run(Violating())
    assert f.got == list(range(6)) and camp.hits == 6 and camp.unique == ["finding-0001"]
    assert len(camp.corpus) == 0 and len(camp.corpus.cover) == 2
    assert [r["finding"] for r in camp.rows] == ["finding-0001"] * 6
    assert camp.summary(6)["findings"] == [{"id": "finding-0001", "hits": 6}]


def test_check_runs_on_the_same_dask_path(scheduler: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "fault-vs-munmap", "mmap-vs-fault", "--preset", "universal",
            "--max-executions", "20"]
    assert main(argv) == 3  # incomplete within 20 executions
    local = capsys.readouterr().out
    assert main(argv + ["--scheduler", scheduler]) == 3
    dask = capsys.readouterr().out

    def strip(text: str) -> str:  # the same runs, but for their timings
        return re.sub(r"\b\d+\.\d+s\b", "T", text)

    assert re.search(r"\d+ executions, \d+ pruned, T; \d+ states", strip(local))
    assert strip(dask) == strip(local) and "fault-vs-munmap" in local and "mmap-vs-fault" in local
    assert main(argv + ["--scheduler", "udp://x:1"]) == 2
    assert capsys.readouterr().err == ("pervma: --scheduler wants tcp://HOST:PORT (or "
                                       "tls://HOST:PORT), got 'udp://x:1'\n")


@pytest.mark.parametrize("where, shown", [
    ([], "2 local worker processes"), (["--dask"], "a local Dask cluster of 2 workers")])
def test_ctrl_c_with_worker_processes_saves_and_exits_130(where: list[str], shown: str,
                                                          tmp_path: Path) -> None:
    """A real SIGINT to the process group (as a terminal's ^C) after the first
    round: the workers are ended, what was found is saved, no traceback."""
    tests = Path(__file__).resolve().parents[1]
    out = tmp_path / "c"
    # SIGINT as a terminal's foreground command has it (a background job's
    # shell, for one, starts its children with SIGINT ignored)
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            f"import sys; sys.path.insert(0, {str(tests)!r}); import conftest\n"
            "from pervma.cli import main\n"
            f"sys.exit(main(['fuzz', *{SMALL!r}, '--round-size', '2', '--programs', '2000',"
            f" '--workers', '2', *{where!r}, '--out', {str(out)!r}]))\n")
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as p:
        try:
            assert p.stderr is not None
            first = p.stderr.readline()  # the first round's line (stderr is not a terminal)
            assert first.startswith(f"fuzz: round 0 ({shown}): 2/2000 programs, "), first
            os.killpg(p.pid, signal.SIGINT)
            rest = p.stderr.read()
            assert p.wait() == 130
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert "Traceback" not in rest and rest.endswith(f"(saved in {out}/)\n")
    s = json.loads((out / "summary.json").read_text())
    assert s["stopped"] == "interrupted" and s["programs_done"] >= 2


def test_a_program_that_fails_is_a_row_and_exit_70(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real = cmod.explore_program

    def explore(prog, cfg, **kw):  # type: ignore[no-untyped-def]
        if prog.dumps() == generate(1, 2).dumps():
            raise RuntimeError("boom\nsecond line")
        return real(prog, cfg, **kw)

    monkeypatch.setattr(cmod, "explore_program", explore)
    code, out = _run(tmp_path, "fail", "--programs", "4", "--workers", "1")
    assert code == 70
    text = capsys.readouterr().out
    assert "\nprogram 2 (fresh): internal error: RuntimeError: boom\n" in text
    assert "; 1 failed (internal error or a lost worker); results in " in text
    s = json.loads((out / "summary.json").read_text())
    assert s["results"][2] == {"program": 2, "round": 0, "origin": {"fresh": True},
                               "error": "internal error: RuntimeError: boom"}
    assert [r["program"] for r in s["results"]] == [0, 1, 2, 3]


def test_a_scheduler_without_workers_is_exit_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from distributed import LocalCluster

    monkeypatch.setattr(cmod, "CONNECT_TIMEOUT", 1.0)
    with LocalCluster(n_workers=0, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as empty:
        addr = str(empty.scheduler_address)
        code, out = _run(tmp_path, "x", "--programs", "2", "--scheduler", addr)
    assert code == 2
    assert capsys.readouterr().err == (f"pervma: the Dask scheduler at {addr} has no workers "
                                       "(waited 1 s)\n")
    assert not out.exists()


def test_a_ctrl_c_a_library_swallowed_still_stops_the_campaign() -> None:
    """^C raises KeyboardInterrupt wherever the main thread waits; a library
    waiting for a worker's result (Dask's client, under load) may swallow it
    and go on, and the campaign then ran on to its --time (the Dask ^C test
    once took its whole 600 s).  The campaign notes the signal and stops at the
    next result it takes."""
    from pervma.check.fuzz.explore import ProgramResult

    class Swallowing(InProcess):
        def map(self, fn, tasks, lost):  # type: ignore[no-untyped-def]
            for i, _task in enumerate(tasks):
                if i == 1:
                    try:
                        signal.raise_signal(signal.SIGINT)
                    except KeyboardInterrupt:
                        pass  # as a library waiting there may
                yield ProgramResult(executions=1, coverage={("pte", True, True)}), None

    # SIGINT as a terminal's foreground command has it (a background job's
    # shell starts its children with SIGINT ignored, and Python keeps that)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        camp = Campaign(1, "universal", [], None, 40, round_size=4)  # type: ignore[arg-type]
        camp.run(Swallowing())
        assert camp.stopped == "interrupted"
        assert len(camp.rows) == 1  # the result taken before the signal, none after
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGINT, before)
