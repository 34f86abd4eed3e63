"""Fuzz findings (issue #15 item 4): one finding per signature with its hit
count, the program minimised to the calls that matter, a replay file that
``pervma replay`` reproduces, the ``--bug`` rule (a violation the same schedule
gives with the switches off is not counted) and deterministic output.

The bug is B13 (vma_start_read succeeds on a VMA detached while it was
locking): munmap detaches the VMA that a user load is faulting on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_fuzz_oracle import REMAP, _late_zap

import pervma.kernel.vma as vma_mod
from pervma.check.fuzz.explore import explore_program
from pervma.check.fuzz.findings import Findings, sizes
from pervma.check.fuzz.program import SCHEMA, VERSION, Program, from_json
from pervma.cli import main
from pervma.config import Config

A = 0x10000000
BUDGET = {"dpor_executions": 100, "pct_executions": 10, "seed": 1}
KASAN = "KASAN: use-after-free"


def _call(name: str, **args: int) -> dict[str, Any]:
    return {"call": name, "args": args}


def _prog(threads: list[list[dict[str, Any]]], vmas: list[dict[str, Any]]) -> Program:
    return from_json({"schema": SCHEMA, "version": VERSION,
                      "setup": {"processes": [{"name": "p", "vmas": vmas}]},
                      "threads": [{"process": "p", "calls": c} for c in threads]})


TARGET = {"kind": "anon", "addr": hex(A + 0x5000), "pages": 2, "prot": "rwx"}
MUNMAP = _call("munmap", addr=A + 0x5000, len=0x2000)
LOAD = _call("load", addr=A + 0x5000)
#: munmap against a user load (a fault) of one page of the same VMA, nothing else.
SMALL = _prog([[MUNMAP], [LOAD]], [TARGET])
#: the same race padded: another populated VMA, an mbind of it, two loads from it.
PADDED = _prog([[_call("mbind", addr=A, len=0x1000, mode=1, nodemask=1), MUNMAP],
                [_call("load", addr=A + 0x1000), LOAD],
                [_call("load", addr=A + 0x2000)]],
               [{"kind": "anon", "addr": hex(A), "pages": 3, "populate": True}, TARGET])
B13 = Config.preset("universal").with_bugs("B13")


@pytest.fixture(scope="module")
def found() -> tuple[Findings, list[str | None]]:
    fs = Findings(B13, ["B13"], "universal", **BUDGET)
    ids = []
    for i, prog in enumerate((PADDED, SMALL)):
        res = explore_program(prog, B13, **BUDGET)
        assert res.violation is not None and res.violation[0] == KASAN
        ids.append(fs.add(i, prog, res))
    return fs, ids


def test_one_signature_is_one_finding_with_two_hits(found) -> None:
    fs, ids = found
    assert ids == ["finding-0001", "finding-0001"]
    [entry] = fs.summary()
    assert entry["id"] == "finding-0001" and entry["hits"] == 2 and fs.hits == 2
    assert entry["first_program"] == 0 and entry["programs"] == [0, 1]
    assert entry["kind"] == KASAN
    assert entry["site"] == "kernel/memory.py:check_fault_vma"  # the fault's VMA check
    assert entry["locks"] == ["vm_lock:read"]  # the reader holds the VMA lock it should not
    assert entry["message"].startswith("access to freed vm_area_struct #")
    assert fs.not_caused == []


def test_minimisation_keeps_the_calls_that_matter(found) -> None:
    fs, _ = found
    [f] = fs.findings
    assert f.original == {"processes": 1, "vmas": 2, "threads": 3, "calls": 5}
    assert sizes(f.program) == {"processes": 1, "vmas": 1, "threads": 2, "calls": 2}
    assert [[c.call for c in t.calls] for t in f.program.threads] == [["munmap"], ["load"]]
    assert f.program.processes[0].vmas[0].addr == A + 0x5000
    assert not f.cut and 0 < f.candidates <= 40
    entry = fs.summary()[0]["minimised"]
    assert entry["threads"] == 2 and entry["calls"] == 2 and entry["steps"] > 0
    # the minimised program fails on its own, the same way
    res = explore_program(f.program, B13, **BUDGET)
    assert res.violation is not None and res.violation[0] == KASAN


def test_replay_file_reproduces_the_finding(found, tmp_path: Path, capsys) -> None:
    fs, _ = found
    fs.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "finding-0001.program.json", "finding-0001.replay.json", "finding-0001.txt"]
    doc = json.loads((tmp_path / "finding-0001.replay.json").read_text())
    assert doc["format"] == "pervma-replay/2" and doc["scenario"] == "fuzz-program"
    assert doc["bugs"] == ["B13"] and doc["preset"] == "universal"
    assert from_json(doc["program"]) == fs.findings[0].program
    message = fs.summary()[0]["message"]
    assert doc["violation"] == {"kind": KASAN, "message": message}
    assert main(["replay", str(tmp_path / "finding-0001.replay.json")]) == 1
    out = capsys.readouterr().out
    assert f"BUG: {KASAN}: {message}" in out and out.rstrip().endswith("\nreproduced")
    txt = (tmp_path / "finding-0001.txt").read_text()
    assert txt.startswith(f"finding-0001: {KASAN} at kernel/memory.py:check_fault_vma "
                          "holding vm_lock:read\n2 hit(s), first by program 0; minimised "
                          "from 3 threads, 5 calls, 2 VMAs to 2 threads, 2 calls, 1 VMAs\n")
    assert "T0 (p): munmap(addr=0x10005000, len=0x2000)\nT1 (p): load(" in txt
    # the program file runs under check --program too
    assert main(["check", "--program", str(tmp_path / "finding-0001.program.json"),
                 "--bug", "B13"]) == 1
    capsys.readouterr()
    # the program and its scenario name go together
    del doc["program"]
    (tmp_path / "bad.replay.json").write_text(json.dumps(doc))
    assert main(["replay", str(tmp_path / "bad.replay.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("scenario 'fuzz-program' and field 'program' go together")
    assert "\n" not in err


def test_without_the_switch_the_same_schedule_is_clean(found) -> None:
    fs, _ = found
    f = fs.findings[0]
    assert fs._off(f.program, f.result) is None
    assert Findings(Config.preset("universal"), [], "universal")._off(f.program, f.result) \
        is None


def test_a_violation_the_switch_did_not_cause_is_not_counted(monkeypatch, tmp_path,
                                                             capsys) -> None:
    """A regression of the model itself (munmap zapping after its unlock, as in
    test_fuzz_oracle) under --bug B13: the schedule fails with the switches off
    too, so the campaign lists it under not_caused_by_switch and counts nothing."""
    monkeypatch.setattr(vma_mod, "vms_complete_munmap_vmas", _late_zap)
    prog = from_json(REMAP)
    res = explore_program(prog, B13, dpor_executions=5000, pct_executions=0)
    assert res.violation is not None and res.violation[0] == "serial-order"
    fs = Findings(B13, ["B13"], "universal", dpor_executions=5000, pct_executions=0)
    assert fs.add(3, prog, res) is None
    assert fs.summary() == [] and fs.hits == 0
    [nc] = fs.not_caused
    assert nc["program"] == 3 and nc["kind"] == "serial-order"
    assert nc["without_switches"]["kind"] == "serial-order"
    # what the user sees: a line per such program, exit 0, no finding saved
    import pervma.check.fuzz.campaign as campaign_mod

    monkeypatch.setattr(campaign_mod, "generate", lambda seed, i, cfg=None: prog)
    monkeypatch.chdir(tmp_path)
    assert main(["fuzz", "--programs", "1", "--workers", "1", "--bug", "B13",
                 "--max-executions", "5000",
                 "--pct", "0", "--out", "o"]) == 0
    out = capsys.readouterr().out
    assert ("program 0: the same schedule fails with every bug switch off: not counted "
            "(summary.json: not_caused_by_switch)") in out
    assert "1 programs, 1 with a violation: 0 unique violations (0 hits); " in out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["findings"] == [] and summary["results"][0]["finding"] is None
    assert summary["not_caused_by_switch"][0]["kind"] == "serial-order"
    assert not list((tmp_path / "o").glob("finding-*"))  # no finding saved


def test_campaign_output_is_deterministic(tmp_path, monkeypatch, capsys) -> None:
    """Two campaigns of the same seed give identical files; the generator's
    program 1 of seed 59 hits B13 within these budgets."""
    monkeypatch.chdir(tmp_path)
    args = ["fuzz", "--seed", "59", "--programs", "2", "--bug", "B13", "--max-executions", "60",
            "--pct", "10"]
    assert main(args + ["--out", "a"]) == 1
    assert main(args + ["--out", "b"]) == 1
    out = capsys.readouterr().out
    assert "2 programs, 1 with a violation: 1 unique violations (1 hits); " in out
    a, b = tmp_path / "a", tmp_path / "b"
    # the findings and the summary (coverage.csv/png hold wall-clock seconds)
    names = sorted(p.name for p in a.glob("[fs]*"))
    assert names == ["finding-0001.program.json", "finding-0001.replay.json",
                     "finding-0001.txt", "summary.json"]
    assert names == sorted(p.name for p in b.glob("[fs]*"))
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
    summary = json.loads((a / "summary.json").read_text())
    [entry] = summary["findings"]
    assert entry["hits"] == 1 and entry["first_program"] == 1
    assert entry["minimised"]["calls"] < entry["original"]["calls"]
    assert [r["finding"] for r in summary["results"]] == [None, "finding-0001"]


def test_signature_of_checks_made_at_the_end(monkeypatch) -> None:
    """validate_mm, run once the threads are done, is named with its message
    (numbers left out: two different addresses) and no locks, so one check hit
    by two programs is one finding."""
    async def no_zap(mm: object, start: int, end: int) -> int:
        return 0

    monkeypatch.setattr(vma_mod, "zap_page_range", no_zap)
    cfg = Config.preset("universal")
    fs = Findings(cfg, [], "universal", dpor_executions=200, pct_executions=0)
    for i, first in enumerate((0, 1)):  # munmap of the first page, then of the second
        prog = _prog([[_call("munmap", addr=A + first * 0x1000, len=0x1000)],
                      [_call("load", addr=A + 0x2000)]],
                     [{"kind": "anon", "addr": hex(A), "pages": 3, "populate": True}])
        res = explore_program(prog, cfg, dpor_executions=200, pct_executions=0)
        assert res.violation is not None and res.violation[0] == "validate_mm"
        assert fs.add(i, prog, res) == "finding-0001"
    [entry] = fs.summary()
    assert entry["site"] == "kernel/debug.py:validate_mm: PTE for N outside every VMA"
    assert entry["locks"] == [] and entry["hits"] == 2
    assert entry["minimised"]["threads"] == 1  # the load was not needed


def test_a_violation_while_the_setup_runs_is_minimised_and_replays(tmp_path, capsys) -> None:
    """B09 fires while the setup runs (the store that populates a private file
    VMA prepares its anon_vma under the VMA lock alone, and the fork after it
    is padding): the finding keeps only what the setup needs, its lock state is
    the setup thread's (the same signature as when a thread's store fires it),
    and its replay file (an empty schedule) reproduces."""
    file_vma = {"kind": "file", "addr": hex(A + 0x3000), "pages": 1, "prot": "rwx"}
    doc = {"schema": SCHEMA, "version": VERSION,
           "setup": {"processes": [
               {"name": "p", "vmas": [{"kind": "anon", "addr": hex(A), "pages": 3, "prot": "r"},
                                      {**file_vma, "populate": True},
                                      {"kind": "guard", "addr": hex(A + 0x4000), "pages": 4}]},
               {"name": "q", "fork_of": "p", "vmas": []}]},
           "threads": [{"process": "q", "calls": [_call("mmap", addr=A + 0x3000, len=0x2000,
                                                         prot=3, kind=0, fixed=0)]},
                       {"process": "p", "calls": [_call("load", addr=A)]}]}
    prog = from_json(doc)
    cfg = Config.preset("universal").with_bugs("B09")
    res = explore_program(prog, cfg, dpor_executions=100, pct_executions=20, seed=2)
    assert res.violation is not None and res.violation[0] == "WARNING: mmap_assert_locked"
    fs = Findings(cfg, ["B09"], "universal", dpor_executions=100, pct_executions=20, seed=2)
    assert fs.add(2, prog, res) == "finding-0001"
    [entry] = fs.summary()
    assert entry["site"] == "kernel/rmap.py:find_mergeable_anon_vma" and entry["step"] == "setup"
    assert entry["locks"] == ["vm_lock:read"]
    assert entry["original"]["vmas"] == 3
    assert entry["minimised"]["vmas"] == 1 and entry["minimised"]["calls"] == 1
    assert entry["minimised"]["steps"] == 0
    fs.write(tmp_path)
    assert json.loads((tmp_path / "finding-0001.replay.json").read_text())["schedule"] == []
    assert main(["replay", str(tmp_path / "finding-0001.replay.json")]) == 1
    out = capsys.readouterr().out
    assert "(raised while the scenario was being set up" in out
    assert out.rstrip().endswith("\nreproduced")
    # The same check fired by a thread's store (the VMA not populated by the
    # setup) is the same finding: one signature, two hits.
    stored = _prog([[_call("store", addr=A + 0x3000, value=5)]], [file_vma])
    res2 = explore_program(stored, cfg, dpor_executions=100, pct_executions=20, seed=2)
    assert res2.violation is not None and res2.violation[0] == "WARNING: mmap_assert_locked"
    assert fs.add(3, stored, res2) == "finding-0001"
    assert fs.summary()[0]["hits"] == 2
