"""bench/real/probe: a smoke run on the real kernel, bounded by cycles (not time),
and its CSV in the simulator's long form."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import pytest

from pervma.sim.machine import machine_names
from pervma.sim.results import SCALAR_FIELDS
from pervma.sim.workloads import PAGE, WORKLOADS, Workload, with_task

REAL = Path(__file__).resolve().parents[2] / "bench" / "real"


@pytest.fixture(scope="module")
def probe() -> Path:
    """The probe as .ci/run builds it (make is a no-op when it is up to date)."""
    subprocess.run(["make", "-s", "-C", str(REAL), "probe"], check=True, capture_output=True)
    return REAL / "probe"


def _run(probe: Path, w: Workload, kind: str, tasks: int, cycles: int = 2) -> dict[str, str]:
    out = subprocess.run([str(probe), "--mode", kind, "--tasks", str(tasks), "--cycles",
                          str(cycles), "--machine", "test", *w.probe_args().split()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    (row,) = csv.DictReader(io.StringIO(out))
    return row


def test_header_is_the_long_form_plus_cpu_and_run_queue(probe: Path) -> None:
    w = with_task(WORKLOADS["private"], region=16 * PAGE)
    out = subprocess.run([str(probe), "--cycles", "1", *w.probe_args().split()], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    assert out.splitlines()[0].split(",") == [*SCALAR_FIELDS, "cpu_s", "runq_s", "sleeps",
                                              "extra_cpu_s"]


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_extra_cpu_s_is_the_extra_tasks_share(probe: Path, kind: str) -> None:
    """extra_cpu_s: the CPU time of the extra tasks alone (0 without any),
    part of cpu_s, the time of all tasks."""
    churn = _run(probe, with_task(WORKLOADS["churn"], region=64 * PAGE), kind, 1, cycles=200)
    alone = _run(probe, with_task(WORKLOADS["shared"], region=64 * PAGE), kind, 1, cycles=200)
    assert float(alone["extra_cpu_s"]) == 0.0
    assert 0.0 < float(churn["extra_cpu_s"]) < float(churn["cpu_s"])


@pytest.mark.parametrize("name", list(WORKLOADS))
@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_every_builtin_runs_two_cycles_per_task(probe: Path, name: str, kind: str) -> None:
    w = with_task(WORKLOADS[name], region=32 * PAGE)  # the same loop on 128 KiB
    row = _run(probe, w, kind, 2)
    assert (row["workload"], row["preset"], row["machine"], row["kind"], row["tasks"]) == (
        name, "real", "test", kind, "2")
    assert int(row["cycles"]) == 4  # two measured tasks, two cycles each
    assert float(row["faults_per_s"]) > 0 and row["capped"] == "False"
    assert (float(row["churn_ops_per_s"]) > 0) == bool(w.extras)


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_pinned_tasks_run_their_cycles(probe: Path, kind: str) -> None:
    """--pin binds task i to CPU i modulo the online CPUs (will-it-scale's
    placement); the run is the same otherwise."""
    w = with_task(WORKLOADS["churn"], region=16 * PAGE)  # a measured task and an extra one
    out = subprocess.run([str(probe), "--mode", kind, "--tasks", "3", "--cycles", "2", "--pin",
                          "--machine", "test", *w.probe_args().split()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    (row,) = csv.DictReader(io.StringIO(out))
    assert (row["kind"], row["tasks"], row["cycles"]) == (kind, "3", "6")
    assert float(row["churn_ops_per_s"]) > 0


def test_read_touch_and_memfd_and_shmem(probe: Path) -> None:
    for backing, sharing in (("memfd", "shared"), ("shmem", "shared"), ("file", "private")):
        w = with_task(WORKLOADS["page_fault1"], region=16 * PAGE, backing=backing,
                      sharing=sharing, touch="read")
        row = _run(probe, w, "threads", 1, cycles=3)
        assert int(row["cycles"]) == 3 and float(row["faults_per_s"]) > 0


@pytest.mark.parametrize("args,msg", [
    (["name=x", "region=4096", "backing=anon", "colour=red"], "probe: unknown key colour"),
    (["name=x", "region=-4096", "backing=anon"], "probe: negative value for region"),
    (["name=x", "region=1000", "backing=anon"], "probe: region and stride must be whole pages"),
    (["--mode", "fibers"], "probe: --mode wants threads or processes, got fibers"),
    ([], "probe: no workload"),
])
def test_bad_input_is_one_line_exit_2(probe: Path, args: list[str], msg: str) -> None:
    r = subprocess.run([str(probe), *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(msg) and r.stderr.count("\n") == 1


# -- validate.py --real-csv: the simulator again against saved probe rows -------

def _validate(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, str(REAL / "validate.py"), *args],
                          capture_output=True, text=True, timeout=600)


def _saved_row(tmp_path: Path, kinds: tuple[str, ...]) -> Path:
    cols = [*SCALAR_FIELDS, "cpu_s", "runq_s"]
    path = tmp_path / "real.csv"
    with path.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=cols, restval="0")
        wr.writeheader()
        for k in kinds:
            wr.writerow({"workload": "mmap1", "preset": "real", "machine": "epyc2vm", "kind": k,
                         "tasks": 1, "faults_per_s": 200000, "wall_s": 1.0, "cpu_s": 1.0,
                         "runq_s": 0.0})
    return path


def test_validate_simulates_against_saved_real_rows(tmp_path: Path) -> None:
    r = _validate("--real-csv", str(_saved_row(tmp_path, ("threads", "processes"))),
                  "--workloads", "mmap1", "--tasks", "1", "--sim-ms", "1", "--machine", "epyc2vm")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"real rows from {tmp_path / 'real.csv'}"
    assert lines[1] == "machine profile: epyc2vm"
    rows = [ln for ln in lines if ln.startswith("| mmap1 | 1 |")]
    assert [ln.split(" | ")[2] for ln in rows] == ["threads", "processes"]
    # the saved rate is the real column: 200,000 raw, no run-queue delay
    assert all("| 200,000 (200,000) | 200,000 | 200,000, 200,000-200,000 |" in ln for ln in rows)
    ratios = [float(ln.split(" | ")[7]) for ln in rows]
    inside = sum(abs(x - 1) <= 0.15 for x in ratios)
    assert lines[-2] == f"within 15%: {inside} of 2 points"


def test_validate_picks_this_machines_profile_by_cpu_vendor(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("validate", REAL / "validate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.HOST_PROFILES == {"AuthenticAMD": "epyc2vm", "GenuineIntel": "xeon2vm"}
    assert set(mod.HOST_PROFILES.values()) <= set(machine_names())
    r = _validate("--real-csv", str(_saved_row(tmp_path, ("threads", "processes"))),
                  "--workloads", "mmap1", "--tasks", "1", "--sim-ms", "1")
    host = mod.host_machine()
    if host is None:  # not one of the project's VMs: a one-line error, exit 2
        assert r.returncode == 2
        assert r.stderr.strip() == ("validate: no bundled profile of this machine; "
                                    "name one with --machine")
    else:
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[1] == f"machine profile: {host}"


def test_validate_without_saved_rows_for_a_point_is_one_line_exit_2(tmp_path: Path) -> None:
    path = _saved_row(tmp_path, ("threads",))
    r = _validate("--real-csv", str(path), "--workloads", "mmap1", "--tasks", "1",
                  "--sim-ms", "1", "--machine", "epyc2vm")
    assert r.returncode == 2
    assert r.stderr.strip() == f"validate: {path} has no rows for mmap1 at 1 tasks"


def test_treefill_reports_a_rate_per_count_of_small_mappings() -> None:
    """bench/real/treefill: one n:pairs_per_s field per n from 0 to --max, a
    positive rate each (--pairs bounds the work); bad arguments exit 2 with
    a one-line message."""
    subprocess.run(["make", "-s", "-C", str(REAL), "treefill"], check=True, capture_output=True)
    tool = str(REAL / "treefill")
    out = subprocess.run([tool, "--max", "3", "--pairs", "200"], check=True,
                         capture_output=True, text=True, timeout=60).stdout.split()
    assert [f.split(":")[0] for f in out] == ["0", "1", "2", "3"]
    assert all(float(f.split(":")[1]) > 0 for f in out)
    for bad in (["--max", "x"], ["--pairs", "-1"], ["--bogus"]):
        r = subprocess.run([tool, *bad], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stdout == ""
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("treefill: ")
