"""The report's SMP=n part: legacy-up against universal-up with a writer
sleeping on mmap_lock; every number is a run of this report."""

from __future__ import annotations

import csv
import io
import re

from pervma.report.html import fmt
from pervma.report.performance import UP_FAULTS, UP_GAP_US, UP_PRESETS
from pervma.sim.latency import writer_sleep_latency

from .conftest import Report


def test_up_csv_equals_writer_sleep_latency(small_report: Report) -> None:
    rows = list(csv.DictReader(io.StringIO((small_report.dir / "performance-up.csv")
                                           .read_text())))
    assert [r["preset"] for r in rows] == list(UP_PRESETS) == ["legacy-up", "universal-up"]
    s = small_report.settings
    for row in rows:
        r = writer_sleep_latency(row["preset"], machine=s.sim_machine, faults=UP_FAULTS,
                                 gap_ns=UP_GAP_US * 1e3, seed=s.sim_seed)
        assert row["smp"] == "0" and row["preempt"] == "1"
        assert row["per_vma_lock"] == ("1" if row["preset"] == "universal-up" else "0")
        assert int(row["faults"]) == r.faults == UP_FAULTS
        for col, v in (("lat_p50_us", r.p50_us), ("lat_p99_us", r.p99_us),
                       ("faults_per_s", r.faults_per_s), ("sim_ms", r.sim_ms),
                       ("mmap_lock_wait_ms", r.mmap_lock_wait_ms)):
            assert row[col] == f"{v:.6g}", col
        assert int(row["vmstat_vma_lock_success"]) == r.vmstat.get("vma_lock_success", 0)
    legacy, universal = rows
    # the tail: a legacy fault that finds the writer in its session waits out its I/O
    io_us = float(legacy["writer_io_us"])
    assert float(legacy["lat_max_us"]) > io_us > 2 * float(universal["lat_max_us"])
    # one such fault per writer session, a session per 4 ms turn (the slice ends
    # at the tick): under 1% of the faults, in the max and the mean, not the p99
    assert float(legacy["lat_p99_us"]) >= float(universal["lat_p99_us"])
    assert float(legacy["lat_mean_us"]) > float(universal["lat_mean_us"])
    assert float(universal["faults_per_s"]) > 1.03 * float(legacy["faults_per_s"])


def test_up_part_is_on_the_page_and_in_the_summary(small_report: Report) -> None:
    perf = re.search(r'<section id="performance">(.*?)</section>', small_report.html, re.S)
    assert perf
    html = perf.group(1)
    assert "SMP=n (one CPU): faults while a writer sleeps on mmap_lock" in html
    rows = list(csv.DictReader(io.StringIO((small_report.dir / "performance-up.csv")
                                           .read_text())))
    for row in rows:
        # the table shows the CSV's faults/s, rounded
        assert f"<td class=\"num\">{fmt(round(float(row['faults_per_s'])))}</td>" in html
    assert 'href="performance-up.csv"' in html
    assert "SMP=n, writer sleeping on mmap_lock: fault p99" in small_report.stdout


def test_progress_lines_name_each_section(small_report: Report) -> None:
    # not a terminal: one plain line per finished unit on stderr, none on stdout
    err = small_report.stderr.splitlines()
    assert "done: cost (1/1)" in err
    for part in ("correctness", "performance"):
        lines = [x for x in err if x.startswith(f"done: {part} (")]
        n = int(lines[-1].rsplit("/", 1)[1].rstrip(")"))
        assert len(lines) == n and lines[-1] == f"done: {part} ({n}/{n})"
    assert "done:" not in small_report.stdout
