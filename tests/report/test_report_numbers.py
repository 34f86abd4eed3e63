"""``pervma report --quick``: every section is there and its numbers equal
what the individual commands print, exactly (times are only in timings.csv);
two ``--tiny`` runs with different ``--jobs`` into different folders write the
same CSV and trace files."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from pervma.report.cost import MM_LOCK_FIELDS, VMA_LOCK_FIELDS, flatten
from pervma.report.runner import WALL_COLUMNS

from .conftest import Report, run_cli

SECTIONS = ("cost", "correctness", "sites", "performance", "environment")


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


def test_quick_report_claims_hold(report: Report) -> None:
    """--quick's budgets let every check run complete: the Correctness and
    Performance panels hold whatever the host (the Cost section needs BTF), and
    with BTF and /proc readable the whole report is ok (exit 0, as the tour says)."""
    for key in ("correctness", "sites", "performance"):
        assert not _has_error(report.html, key), (key, report.stderr[-2000:])
    if Path("/sys/kernel/btf/vmlinux").is_file():
        assert report.rc == 0, report.stderr[-2000:]


def test_exit_status_says_whether_a_section_failed(report: Report) -> None:
    failed = [k for k in SECTIONS if _has_error(report.html, k)]
    assert report.rc == (1 if failed else 0), (failed, report.stderr[-2000:])
    assert "Traceback" not in report.stderr


@pytest.mark.parametrize("struct,locks", [("vm_area_struct", VMA_LOCK_FIELDS),
                                          ("mm_struct", MM_LOCK_FIELDS)])
def test_layout_equals_pervma_layout_json(report: Report, struct: str,
                                          locks: tuple[str, ...]) -> None:
    p = run_cli("layout", struct, "--json")
    assert p.returncode == 0, p.stderr[-2000:]
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
    assert p.returncode == 0, p.stderr[-2000:]
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
    # the bill priced on the live VMAs is in timings.csv, one row per variant and count
    live = {r["name"]: r["value"] for r in _rows(report.dir / "timings.csv")
            if r["kind"] == "system bill"}
    assert int(live["VMAs alive"]) > 0
    for name in want:
        assert int(live[f"{name}.bytes"]) == int(live[f"{name}.pages"]) * 4096, name
        assert "pages" not in got[name] and "bytes" not in got[name]


def _check_json(*argv: str) -> tuple[int, Any]:
    """``pervma check ... --json``; a failed command fails the test."""
    p = run_cli("check", *argv, "--json")
    assert p.returncode in (0, 1, 3), (argv, p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr
    return p.returncode, json.loads(p.stdout)


def test_bug_catalogue_equals_pervma_check_bug(report: Report) -> None:
    """Every bug under every preset: the report's row is what ``pervma check
    --bug ID --preset P`` prints, number for number."""
    p = run_cli("bugs", "--json")
    assert p.returncode == 0, p.stderr
    s = report.settings
    ids = [b["id"] for b in json.loads(p.stdout)["bugs"]]
    rc, data = _check_json("--bug", *ids, "--preset", ",".join(s.bug_presets),
                           "--max-executions", str(s.bug_max_executions), "--jobs", "2")
    assert rc == 1  # the catalogue's bugs are found
    got = {(r["bug"], r["preset"]): r for r in _rows(report.dir / "bugs.csv")}
    assert len(data["results"]) == len(got) == len(ids) * len(s.bug_presets)
    section = _section(report.html, "correctness")
    for r in data["results"]:
        (bid,) = r["bugs"]
        g = got[(bid, r["preset"])]
        found = r["violation"] is not None
        assert g["found"] == str(found), (bid, r["preset"])
        assert g["scenario"] == r["scenario"]
        assert (g["executions"], g["pruned"], g["complete"]) == \
            (str(r["executions"]), str(r["pruned"]), str(r["complete"]))
        assert g["ok"] == str(found == (g["expected"] == "found"))
        if found:
            assert g["violation_kind"] == r["violation"]["kind"]
            assert g["violation_message"] == r["violation"]["message"]
            assert (g["preemptions"], g["steps"], g["minimise_executions"]) == \
                (str(r["preemptions"]), str(len(r["schedule"])), str(r["minimise_executions"]))
            traces = g["traces"].split()
            assert traces and all((report.dir / t).is_file() for t in traces)
            assert all(t.startswith("traces/") and t.endswith(".json") for t in traces)
            for t in traces:
                assert f'href="{t}"' in section
            replay = json.loads((report.dir / traces[0]).read_text())
            assert replay["schedule"] == r["schedule"]
        else:
            assert g["reason_not_found"] and _esc(g["reason_not_found"]) in section
    # the quick profile's budgets find every bug where it can occur
    assert all(g["ok"] == "True" for g in got.values())


def test_scenario_matrix_equals_pervma_check_all(report: Report) -> None:
    s = report.settings
    rc, data = _check_json("--all", "--preset", ",".join(s.check_presets),
                           "--max-executions", str(s.check_max_executions), "--jobs", "2",
                           "--trace-stats")  # the report counts distinct traces
    assert data["results"], "the scenario library is empty"
    got = {(r["scenario"], r["preset"]): r for r in _rows(report.dir / "correctness.csv")}
    assert len(got) == len(data["results"])
    for r in data["results"]:
        g = got[(r["scenario"], r["preset"])]
        assert (g["executions"], g["pruned"], g["distinct"], g["complete"]) == \
            (str(r["executions"]), str(r["pruned"]), str(r["distinct"]), str(r["complete"]))
        assert g["violation_kind"] == (r["violation"]["kind"] if r["violation"] else "")
        assert g["incomplete"] == "; ".join(r["incomplete"])
    # the section is ok exactly when every run is complete and clean
    clean = rc == 0
    assert clean == all(g["complete"] == "True" and not g["violation_kind"]
                        for g in got.values())
    assert _has_error(report.html, "correctness") == (not clean)


def test_misuse_rows_equal_pervma_check(report: Report) -> None:
    from pervma.check.scenario import misuse_scenarios

    s = report.settings
    got = {(r["scenario"], r["preset"]): r for r in _rows(report.dir / "misuse.csv")}
    scs = misuse_scenarios()
    assert scs and len(got) == sum(len(sc.expect) for sc in scs)
    section = _section(report.html, "correctness")
    for sc in scs:
        assert _esc(sc.doc) in section
        _rc, data = _check_json(sc.name, "--preset", ",".join(e.preset for e in sc.expect),
                                "--max-executions", str(s.check_max_executions))
        for e, r in zip(sc.expect, data["results"], strict=True):
            g = got[(sc.name, e.preset)]
            kind = r["violation"]["kind"] if r["violation"] else None
            assert g["got"] == (kind or "none") and g["expected"] == (e.kind or "none")
            assert (g["executions"], g["complete"]) == (str(r["executions"]), str(r["complete"]))
            assert g["ok"] == "True", (sc.name, e.preset, kind)


def test_every_scenario_has_its_one_line(report: Report) -> None:
    from pervma.check.scenario import all_scenarios

    section = _section(report.html, "correctness")
    for sc in all_scenarios():
        assert sc.doc and _esc(sc.doc) in section, sc.name
    assert "What the model leaves out" in section and "lock_vma_under_rcu_wait()" in section


def _stable_csvs(d: Path) -> dict[str, str]:
    """Every CSV but timings.csv, byte for byte (the live system's counts are
    in timings.csv too)."""
    return {p.name: p.read_text() for p in sorted(d.glob("*.csv")) if p.name != "timings.csv"}


def test_two_runs_into_different_folders_give_the_same_csv_files(
        small_report: Report, tmp_path: Path) -> None:
    """--tiny with --jobs 2 (the fixture) and with --jobs 1 into another folder:
    the explored executions, counterexamples and traces do not depend on the
    worker count, the folder or the clock; times and paths are in timings.csv."""
    other = tmp_path / "second"
    p = run_cli("report", "--tiny", "--jobs", "1", "--out", str(other))
    assert p.returncode == small_report.rc, p.stderr[-2000:]
    first, second = _stable_csvs(small_report.dir), _stable_csvs(other)
    assert set(first) == set(second) >= {"correctness.csv", "bugs.csv", "misuse.csv",
                                         "environment.csv", "performance.csv"}
    for name in first:
        assert first[name] == second[name], name
    traces = sorted(x.name for x in (small_report.dir / "traces").iterdir())
    assert traces == sorted(x.name for x in (other / "traces").iterdir()) and traces
    for name in traces:
        assert (small_report.dir / "traces" / name).read_bytes() == \
            (other / "traces" / name).read_bytes(), name
    for d in (small_report.dir, other):
        run = {r["name"]: r["value"] for r in _rows(d / "timings.csv") if r["kind"] == "run"}
        assert run["output folder"] == str(d) and run["started"]
        for name, text in _stable_csvs(d).items():
            assert str(d.parent) not in text and "started" not in text, name
        header = (d / "performance.csv").read_text().splitlines()[0].split(",")
        assert not set(WALL_COLUMNS) & set(header)  # the simulator's durations: timings.csv


def test_tiny_budget_cut_runs_are_not_ok(small_report: Report) -> None:
    """Tiny stops most scenario runs at 40 executions: the panel says so and
    the command exits 1, though nothing was found."""
    rows = _rows(small_report.dir / "correctness.csv")
    cut = [r for r in rows if r["complete"] == "False"]
    assert cut and all(r["incomplete"] == "stopped at --max-executions 40" for r in cut)
    assert all(not r["violation_kind"] for r in rows)
    assert small_report.rc == 1
    assert "Correctness: every scenario, every preset, every known bug — 1 error(s)" in \
        small_report.stdout
    assert f"{len(cut)} scenario run(s) stopped at the budget" in small_report.stdout


@pytest.mark.parametrize("mode", [("--stateless",), ("--max-executions", "1000000")])
def test_cli_check_explores_the_same_with_any_jobs(mode: tuple[str, ...]) -> None:
    # A stateless run, or a stateful one under a budget, explores the same
    # executions with any --jobs; an unbudgeted stateful run split over
    # workers keeps only the verdict (tests/check/test_pstateful.py).
    runs = []
    for jobs in ("1", "2"):
        _rc, data = _check_json("vma-reuse-same-address", "--bug", "B17", "--jobs", jobs, *mode)
        (r,) = data["results"]
        for timing in ("elapsed", "time_to_find"):
            r.pop(timing)
        r["notes"] = [n for n in r["notes"] if "worker processes" not in n]
        runs.append(r)
    assert runs[0] == runs[1]
    assert runs[0]["violation"]["kind"] == "BUG: fault on a VMA of another mm"


def test_performance_equals_pervma_simulate_csv(report: Report, tmp_path: Path) -> None:
    s = report.settings
    section = _section(report.html, "performance")
    for wl in s.sim_workloads:
        out = tmp_path / f"{wl}.csv"
        p = run_cli("simulate", wl, "--preset", ",".join(s.sim_presets), "--tasks",
                    ",".join(map(str, s.sim_tasks)), "--duration-ms", str(s.sim_duration_ms),
                    "--min-cycles", "0",  # the report's windows are exact (its text says so)
                    "--machine", s.sim_machine, "--seed", str(s.sim_seed), "--jobs", "2",
                    "--csv", str(out))
        assert p.returncode == 0, p.stderr[-2000:]
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
    assert f"at most {report.settings.check_max_executions} executions per run" in env
    assert " s per run" not in env
    facts = dict((r["what"], r["value"]) for r in _rows(report.dir / "environment.csv"))
    assert "output folder" not in facts and "started" not in facts and "run time" not in facts


def test_terminal_summary_names_every_section(report: Report) -> None:
    for title in ("Cost", "Correctness", "Performance", "Environment"):
        assert title in report.stdout
    assert "index.html" in report.stdout


def _esc(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def _result(scenario: str, preset: str, *, found: str | None = None,
            complete: bool = True) -> dict[str, Any]:
    return {"result": {"scenario": scenario, "preset": preset, "executions": 7, "pruned": 0,
                       "distinct": 7, "complete": complete and found is None,
                       "incomplete": [] if complete else ["stopped at --max-executions 7"],
                       "violation": {"kind": found, "message": "m"} if found else None,
                       "counterexample": "c", "preemptions": 1, "schedule": [0, 1],
                       "notes": []},
            "traces": []}


def _claims(cannot: dict[tuple[str, str], str | None],
            results: dict[str, dict[str, Any]],
            expect: dict[tuple[str, str], tuple[str | None, str]] | None = None) -> Any:
    from pervma.report import correctness
    from pervma.report.settings import TINY

    p = correctness.Plan(bugs=[(f"{b}.{pre}", {"bug": b, "preset": pre}) for b, pre in cannot],
                         cannot=cannot, bug_presets=tuple(dict.fromkeys(p for _, p in cannot)),
                         expect=expect or {},
                         misuse=[(f"{s}.{pre}", {"scenario": s, "preset": pre})
                                 for s, pre in (expect or {})])
    return correctness.build(p, results, TINY)


def test_bug_panel_is_ok_only_when_the_catalogue_claim_holds() -> None:
    why = "needs per-VMA locks (PER_VMA_LOCK=n: every fault and lookup takes mmap_lock)"
    cannot = {("B04", "universal"): None, ("B04", "legacy"): why}
    good = {"B04.universal": _result("fork-vs-fault", "universal", found="fork snapshot broken"),
            "B04.legacy": _result("fork-vs-fault", "legacy")}
    assert _claims(cannot, good).ok
    missed = dict(good, **{"B04.universal": _result("fork-vs-fault", "universal")})
    sec = _claims(cannot, missed)
    assert not sec.ok and "B04 [universal]" in sec.errors[-1]
    unexpected = dict(good, **{"B04.legacy": _result("fork-vs-fault", "legacy", found="x")})
    assert not _claims(cannot, unexpected).ok
    cut = dict(good, **{"B04.legacy": _result("fork-vs-fault", "legacy", complete=False)})
    assert not _claims(cannot, cut).ok
    assert "not found: needs per-VMA locks" in "".join(x.html for x in _claims(cannot, good).parts)


def test_misuse_panel_is_ok_only_when_the_expected_report_is_produced() -> None:
    expect = {("wait-misuse", "universal"): ("deadlock", ""),
              ("wait-misuse", "universal-up-nopreempt"): (None, "needs preemption")}
    good = {"wait-misuse.universal": _result("wait-misuse", "universal", found="deadlock"),
            "wait-misuse.universal-up-nopreempt": _result("wait-misuse",
                                                          "universal-up-nopreempt")}
    assert _claims({}, good, expect).ok
    other = dict(good, **{"wait-misuse.universal": _result("wait-misuse", "universal",
                                                           found="KASAN: use-after-free")})
    assert not _claims({}, other, expect).ok
    cut = dict(good, **{"wait-misuse.universal-up-nopreempt": _result(
        "wait-misuse", "universal-up-nopreempt", complete=False)})
    assert not _claims({}, cut, expect).ok


def test_sites_table_equals_pervma_sites_json(report: Report) -> None:
    presets = report.settings.check_presets
    p = run_cli("sites", "--json", "--preset", ",".join(presets), "--jobs", "2")
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(p.stdout)
    want = [(x["site"], x["model"], pre, x["verdicts"][pre]["verdict"],
             " ".join(r["scenario"] for r in x["verdicts"][pre]["runs"]))
            for x in doc["sites"] for pre in presets]
    got = [(r["site"], r["model"], r["preset"], r["verdict"], r["scenarios"])
           for r in _rows(report.dir / "sites.csv")]
    assert got == want
    assert {v for *_, v, _ in got} == {"clean"}
    section = _section(report.html, "sites")
    for x in doc["sites"]:
        assert _esc(x["site"]) in section and _esc(x["series"]) in section
    assert 'href="sites.csv"' in section
