"""Workloads as data: the built-in files, user files, CLI overrides, bad input,
windows stretched to whole cycles."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pervma.cli import main
from pervma.errors import UsageError
from pervma.sim.api import run_point
from pervma.sim.workloads import (
    PAGE,
    WORKLOADS,
    Extra,
    get_workload,
    parse_workload,
    with_task,
)

BUILTINS = ["page_fault1", "page_fault2", "page_fault3", "mmap1", "mmap2", "private", "shared",
            "churn", "churnsame", "pft-threads"]


def _code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_the_ten_builtins_are_files_in_their_old_order() -> None:
    assert list(WORKLOADS) == BUILTINS
    assert {n: (w.unit, w.extra_task) for n, w in WORKLOADS.items()} == {
        **{n: ("faults", False) for n in BUILTINS},
        "mmap1": ("pairs", False), "mmap2": ("pairs", False),
        "churn": ("faults", True), "churnsame": ("faults", True)}


def test_builtin_fields_say_what_the_benchmarks_do() -> None:
    pf2, sh, cs = WORKLOADS["page_fault2"], WORKLOADS["shared"], WORKLOADS["churnsame"]
    assert (pf2.region, pf2.backing, pf2.sharing, pf2.resident, pf2.end) == (
        128 << 20, "file", "private", True, "munmap")
    assert (sh.region, sh.layout, sh.lead_page, sh.end) == (32 << 20, "slice", True, "dontneed")
    assert cs.extras == (Extra("mprotect", PAGE, 0),)
    assert WORKLOADS["churn"].extras == (Extra("mmap-churn", PAGE, 0),)
    assert WORKLOADS["pft-threads"].first_pass == "zero"
    assert WORKLOADS["private"].nohugepage and not WORKLOADS["page_fault1"].nohugepage


def test_list_shows_every_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--list"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[:10]] == BUILTINS


def test_emit_probe_args_is_the_flat_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "churnsame", "--emit-probe-args"]) == 0
    assert capsys.readouterr().out == (
        "name=churnsame unit=faults region=33554432 backing=anon sharing=private layout=slice "
        "touch=write stride=4096 first_pass=random end=dontneed nohugepage=0 resident=0 "
        "lead_page=1 extra=mprotect:4096:0\n")


def test_cli_flags_replace_task_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "page_fault1", "--region", "16MiB", "--backing", "memfd",
                 "--sharing", "shared", "--touch", "read", "--end", "dontneed",
                 "--emit-probe-args"]) == 0
    out = capsys.readouterr().out
    assert "region=16777216 backing=memfd sharing=shared layout=own touch=read" in out
    assert "end=dontneed" in out


USER_FILE = """\
description = "mine: a shmem region per task, read every other page, DONTNEED"
unit = "faults"
modes = ["threads"]

[task]
region = "1MiB"
backing = "shmem"
sharing = "shared"
touch = "read"
stride = "8KiB"
first_pass = "zero"
end = "dontneed"

[[extra]]
kind = "mmap-churn"
size = "8KiB"
"""


def test_a_user_file_runs_from_the_cli(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(USER_FILE)
    out = tmp_path / "mine.csv"
    assert main(["simulate", str(f), "--tasks", "2", "--mode", "threads", "--duration-ms", "0.5",
                 "--csv", str(out)]) == 0
    (row,) = csv.DictReader(out.read_text().splitlines())
    assert (row["workload"], row["kind"], row["tasks"]) == ("mine", "threads", "2")
    assert float(row["faults_per_s"]) > 0 and float(row["churn_ops_per_s"]) > 0
    assert int(row["cycles"]) >= 2 and row["capped"] == "False"


def test_a_processes_only_file_refuses_threads(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.toml"
    f.write_text(USER_FILE.replace('["threads"]', '["processes"]'))
    assert _code(["simulate", str(f), "--mode", "threads", "--tasks", "1"]) == 2
    assert "workload p has no threads mode" in capsys.readouterr().err


@pytest.mark.parametrize("text,msg", [
    ("[task\nregion = 1", "not valid TOML: "),
    ("colour = 1\n[task]\nregion = 4096", "unknown key 'colour'; expected one of name,"),
    ("[task]\nregion = 4096\nsize = 4096", "[task]: unknown key 'size'"),
    ("[task]\nregion = -4096", "region: a size cannot be negative, got -4096"),
    ("[task]\nregion = \"-1MiB\"", "region: a size cannot be negative"),
    ("[task]\nregion = 1000", "region: wants a positive multiple of 4096 bytes, got 1000"),
    ("[task]\nregion = \"12 parsecs\"", "region: wants a size such as 4096"),
    ("unit = \"faults\"", "needs a [task] table"),
    ("[task]\nbacking = \"anon\"", "[task]: needs a region size"),
    ("[task]\nregion = 4096\nbacking = \"nvme\"", "backing must be one of anon, file, memfd, shmem"),
    ("[task]\nregion = 4096\nbacking = \"shmem\"", "shmem is MAP_SHARED|MAP_ANONYMOUS"),
    ("[task]\nregion = 4096\nlayout = \"slice\"", "cannot end with munmap"),
    ("[task]\nregion = 4096\ntouch = \"none\"", "nothing is touched, so count unit"),
    ("[task]\nregion = 4096\n[[extra]]\nkind = \"mprotect\"", "an mprotect task needs the "
     "shared region"),
    ("[task]\nregion = 4096\n[[extra]]\nkind = \"fork-bomb\"", "kind must be one of mmap-churn,"),
    ("modes = [\"fibers\"]\n[task]\nregion = 4096", "modes must be a list of threads"),
    ("[task]\nregion = 4096\nresident = \"yes\"", "resident must be true or false"),
])
def test_bad_workload_file_is_one_line_exit_2(tmp_path: Path, text: str, msg: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    assert _code(["simulate", str(f), "--tasks", "1"]) == 2
    err = capsys.readouterr().err
    assert msg in err and str(f) in err and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_missing_workload_file_is_one_line_exit_2(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert _code(["simulate", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert "workload file" in err and "nope.toml: no such file" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv,msg", [
    (["--region=-8KiB"], "--region: a size cannot be negative"),
    (["--region", "3"], "--region: wants a positive multiple of 4096"),
    (["--backing", "nvme"], "--backing: choose one of anon, file, memfd, shmem"),
    (["--end", "exit"], "--end: choose one of munmap, dontneed, none"),
    (["--touch", "none"], "nothing is touched, so count unit"),
])
def test_bad_override_flags_are_one_line_exit_2(argv: list[str], msg: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert _code(["simulate", "page_fault1", *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_with_task_keeps_the_checks() -> None:
    with pytest.raises(UsageError, match="shared anonymous memory is backing"):
        with_task(WORKLOADS["private"], sharing="shared")


def test_mprotect_target_must_be_the_region() -> None:
    with pytest.raises(UsageError, match='target must be "region"'):
        parse_workload('[task]\nregion = 8192\nlayout = "slice"\nend = "none"\n'
                       '[[extra]]\nkind = "mprotect"\ntarget = "stack"', "x")


def _small(name: str, **kw: object) -> object:
    return with_task(get_workload(name), region=64 * PAGE, **kw)


def test_page_fault2_window_reaches_munmap() -> None:
    """The issue's complaint: page_fault2 never munmapped within a window.  A
    stretched window holds a whole cycle (from one munmap to the next) of
    every task; a 2 MiB region keeps the test short (128 MiB works alike)."""
    w = with_task(WORKLOADS["page_fault2"], region=512 * PAGE)
    short = run_point(w, "universal", "epyc2vm", "threads", 2, 0.1, seed=1, warmup_ms=0.1)
    p = run_point(w, "universal", "epyc2vm", "threads", 2, 0.1, seed=1, warmup_ms=0.1,
                  min_cycles=1, max_window_ms=200)
    assert short.cycles == 0 and p.cycles >= 2 and not p.capped
    assert p.sim_ms > 512 * 1.0e-3  # one 512-page pass at more than 1 us a fault
    assert p.tlb_shootdowns > 0  # munmap flushed the other thread's CPU


def test_min_cycles_zero_keeps_the_window() -> None:
    p = run_point("page_fault2", "universal", "epyc2vm", "threads", 1, 0.3, seed=1,
                  warmup_ms=0.1)
    assert p.sim_ms == pytest.approx(0.3, rel=0.01) and p.cycles == 0 and not p.capped


def test_capped_window_says_how_many_cycles() -> None:
    w = with_task(WORKLOADS["private"], region=256 * PAGE)
    p = run_point(w, "universal", "xeon16", "processes", 2, 0.2, seed=1, warmup_ms=0.1,
                  min_cycles=100, max_window_ms=1.0)
    assert p.capped and p.sim_ms == pytest.approx(1.0, rel=0.01)
    assert 0 < p.cycles < 200  # a 1 MiB cycle takes ~0.5 ms: a few whole ones, not 100 each


@pytest.mark.parametrize("backing,sharing", [("file", "shared"), ("memfd", "private"),
                                             ("shmem", "shared"), ("anon", "private")])
def test_every_backing_faults_in_pages(backing: str, sharing: str) -> None:
    w = _small("page_fault1", backing=backing, sharing=sharing)
    p = run_point(w, "universal", "xeon16", "processes", 1, 0.3, seed=2, warmup_ms=0.05,
                  min_cycles=1)
    assert p.faults_per_s > 0 and p.cycles >= 1 and p.vmstat.get("pgfault", 0) > 0


def test_mprotect_extra_write_locks_the_faulted_vma_only_in_threads_mode() -> None:
    """churnsame's extra task mprotects the head of the VMA the threads fault
    in: in threads mode (one mm) faults meet the VMA write-locked and leave the
    per-VMA path; in processes mode the extra task's region is its own."""
    w = with_task(WORKLOADS["churnsame"], region=64 * PAGE)
    thr = run_point(w, "universal", "xeon16", "threads", 2, 0.4, seed=1, warmup_ms=0.05)
    pro = run_point(w, "universal", "xeon16", "processes", 2, 0.4, seed=1, warmup_ms=0.05)
    assert thr.churn_ops_per_s > 0 and pro.churn_ops_per_s > 0
    assert thr.fallbacks > 0 and pro.fallbacks == 0


def test_maps_reader_counts_reads() -> None:
    w = parse_workload('[task]\nregion = "256KiB"\nend = "dontneed"\n'
                       '[[extra]]\nkind = "maps-reader"', "reader")
    p = run_point(w, "universal", "xeon16", "threads", 1, 0.3, seed=1, warmup_ms=0.05)
    assert p.churn_ops_per_s > 0 and p.faults_per_s > 0
