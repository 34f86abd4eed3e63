"""``pervma report --quick``: every section is there and its
numbers equal what the individual commands print (timings aside)."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from pervma.report.cost import MM_LOCK_FIELDS, VMA_LOCK_FIELDS, flatten

from .conftest import Report, run_cli

SECTIONS = ("cost", "correctness", "performance", "environment")


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _section(html: str, key: str) -> str:
    m = re.search(rf'<section id="{key}">(.*?)</section>', html, re.S)
    assert m, f"section {key} missing"
    return m.group(1)


def _has_error(html: str, key: str) -> bool:
    return 'class="error"' in _section(html, key)


def test_every_section_is_present(report: Report) -> None:
    html = report.html
    for key in SECTIONS:
        _section(html, key)
    assert "<title>pervma report" in html
    for name in ("layout-vm_area_struct.csv", "layout-mm_struct.csv", "cost-variants.csv",
                 "environment.csv"):
        assert (report.dir / name).is_file(), name
    assert "index.html" in (report.dir / ".pervma-manifest").read_text().splitlines()


def test_exit_status_says_whether_a_section_failed(report: Report) -> None:
    failed = [k for k in SECTIONS if _has_error(report.html, k)]
    assert report.rc == (1 if failed else 0), (failed, report.stderr[-2000:])
    assert "Traceback" not in report.stderr


@pytest.mark.parametrize("struct,locks", [("vm_area_struct", VMA_LOCK_FIELDS),
                                          ("mm_struct", MM_LOCK_FIELDS)])
def test_layout_equals_pervma_layout_json(report: Report, struct: str,
                                          locks: tuple[str, ...]) -> None:
    p = run_cli("layout", struct, "--json")
    if p.returncode != 0:
        assert _has_error(report.html, "cost")
        assert p.stderr.strip().splitlines()[-1].split(": ", 1)[-1] in report.html
        return
    want = flatten(json.loads(p.stdout), locks)
    got = _rows(report.dir / f"layout-{struct}.csv")
    assert [(r["name"] or "", str(r["offset"]), str(r["size"])) for r in want] == \
        [(r["name"], r["offset"], r["size"]) for r in got]
    size = json.loads(p.stdout)["size"]
    assert f"struct {struct}: {size} bytes" in report.html
    lock_rows = [r for r in got if r["lock"] == "True"]
    assert lock_rows, "lock fields are highlighted"
    assert all(r["name"] in locks for r in lock_rows)


def test_bill_equals_pervma_cost_json(report: Report) -> None:
    p = run_cli("cost", "--json")
    if p.returncode != 0:
        assert _has_error(report.html, "cost")
        return
    want = {v["name"]: v for v in json.loads(p.stdout)["variants"]}
    got = {r["name"]: r for r in _rows(report.dir / "cost-variants.csv")}
    assert set(got) == set(want)
    # live VMA counts move between two reads of /proc; the geometry does not
    for name, v in want.items():
        for k in ("sizeof", "align", "slab_size", "objs_per_slab", "order", "bytes_per_vma",
                  "pages_per_1000"):
            assert str(v[k]) == got[name][k], (name, k)
    for name in ("running", "gated", "smp_off", "lockdep"):
        if name in want:
            assert name in _section(report.html, "cost")


def _check_json(*argv: str) -> tuple[int, Any, str]:
    p = run_cli("check", *argv, "--json")
    data = json.loads(p.stdout) if p.stdout.strip().startswith("{") else None
    return p.returncode, data, p.stderr.strip()


def test_bug_catalogue_equals_pervma_check_bug(report: Report) -> None:
    p = run_cli("bugs", "--json")
    if p.returncode != 0:
        assert _has_error(report.html, "correctness")
        return
    s = report.settings
    got = {r["bug"]: r for r in _rows(report.dir / "bugs.csv")} \
        if (report.dir / "bugs.csv").exists() else {}
    section = _section(report.html, "correctness")
    for bug in json.loads(p.stdout)["bugs"]:
        bid = bug["id"]
        rc, data, err = _check_json("--bug", bid, "--max-executions",
                                    str(s.bug_max_executions), "--time", str(s.bug_time_limit))
        if data is None:  # the command failed: the report shows the same error
            assert rc == 2
            msg = err.splitlines()[-1].removeprefix("pervma: ")
            assert f"bug {bid}: " in section and _esc(msg) in section, (bid, msg)
            assert bid not in got
            continue
        r = data["results"][0]
        found = r["violation"] is not None
        assert got[bid]["found"] == str(found), bid
        assert got[bid]["executions"] == str(r["executions"])
        assert got[bid]["scenario"] == r["scenario"] and got[bid]["preset"] == r["preset"]
        if found:
            assert got[bid]["violation_kind"] == r["violation"]["kind"]
            assert got[bid]["steps"] == str(len(r["schedule"]))
            traces = got[bid]["traces"].split()
            assert traces and all((report.dir / t).is_file() for t in traces)
            assert all(t.startswith("traces/") and t.endswith(".json") for t in traces)
            for t in traces:
                assert f'href="{t}"' in section


def test_scenario_matrix_equals_pervma_check_all(report: Report) -> None:
    s = report.settings
    rc, data, err = _check_json("--all", "--preset", ",".join(s.check_presets),
                                "--max-executions", str(s.check_max_executions),
                                "--time", str(s.check_time_limit))
    section = _section(report.html, "correctness")
    if data is None or not data["results"]:
        # no checker or no scenarios: the report says so instead of an empty matrix
        assert 'class="error"' in section
        assert "scenario library" in section or "checker" in section
        return
    got = {(r["scenario"], r["preset"]): r for r in _rows(report.dir / "correctness.csv")}
    assert len(got) == len(data["results"])
    for r in data["results"]:
        g = got[(r["scenario"], r["preset"])]
        assert g["executions"] == str(r["executions"])
        assert g["complete"] == str(r["complete"])
        assert g["violation_kind"] == (r["violation"]["kind"] if r["violation"] else "")


def test_performance_equals_pervma_simulate_csv(report: Report, tmp_path: Path) -> None:
    s = report.settings
    section = _section(report.html, "performance")
    for wl in s.sim_workloads:
        out = tmp_path / f"{wl}.csv"
        p = run_cli("simulate", wl, "--preset", ",".join(s.sim_presets), "--tasks",
                    ",".join(map(str, s.sim_tasks)), "--duration-ms", str(s.sim_duration_ms),
                    "--machine", s.sim_machine, "--seed", str(s.sim_seed), "--jobs", "2",
                    "--csv", str(out))
        if p.returncode != 0:
            assert 'class="error"' in section
            continue
        want = [r for r in _rows(out)]
        got = [r for r in _rows(report.dir / "performance.csv") if r["workload"] == wl]
        assert len(got) == len(want) > 0
        key = ("workload", "preset", "machine", "kind", "tasks")
        got_by = {tuple(r[k] for k in key): r for r in got}
        for w in want:
            g = got_by[tuple(w[k] for k in key)]
            for col, val in w.items():
                if col != "wall_s":  # wall-clock time of the simulation itself
                    assert g[col] == val, (w["kind"], w["tasks"], col)
    assert section.count("<svg") >= 2, "throughput and where-time-goes plots"
    if "shared" in s.sim_workloads:
        assert "measured threads" in section  # the real-16core overlay


def test_environment_states_version_kernel_and_settings(report: Report) -> None:
    import platform

    from pervma import __version__

    env = _section(report.html, "environment")
    assert __version__ in env and _esc(platform.release()) in env
    for what in ("kernel config source", "machine profile (simulator)", "seeds", "run time"):
        assert what in env
    assert f"checker {report.settings.check_seed}, simulator {report.settings.sim_seed}" in env


def test_terminal_summary_names_every_section(report: Report) -> None:
    for title in ("Cost", "Correctness", "Performance", "Environment"):
        assert title in report.stdout
    assert "index.html" in report.stdout


def _esc(text: str) -> str:
    import html

    return html.escape(text, quote=True)
