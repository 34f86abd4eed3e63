"""The Python API: determinism, ordering, CSV, plots, mean field."""

from __future__ import annotations

import csv

import pytest

from pervma.errors import UsageError  # noqa: E402
from pervma.sim.api import run_point, simulate  # noqa: E402
from pervma.sim.plot import ratio_svg, throughput_svg  # noqa: E402
from pervma.sim.results import to_csv  # noqa: E402


def test_same_seed_same_result() -> None:
    a = run_point("private", "universal", "xeon16", "threads", 3, 0.6, seed=5)
    b = run_point("private", "universal", "xeon16", "threads", 3, 0.6, seed=5)
    assert a.faults_per_s == b.faults_per_s and a.steps == b.steps and a.vmstat == b.vmstat


def test_parallel_sweep_keeps_order_and_values() -> None:
    kw = dict(preset=["legacy", "universal"], machine="xeon16", mode="both", tasks=[1, 2],
              duration_ms=0.3, seed=2)
    serial = simulate("shared", jobs=1, **kw)  # type: ignore[arg-type]
    parallel = simulate("shared", jobs=2, **kw)  # type: ignore[arg-type]
    assert [p.key() for p in serial] == [p.key() for p in parallel]
    assert [p.faults_per_s for p in serial] == [p.faults_per_s for p in parallel]
    assert [p.key()[1:] for p in serial][:2] == [("legacy", "xeon16", "threads", 1),
                                                 ("legacy", "xeon16", "processes", 1)]


def test_processes_beyond_four_run_in_mean_field() -> None:
    p = run_point("private", "universal", "xeon16", "processes", 12, 0.4, seed=1)
    assert p.simulated_tasks == 4 and p.tasks == 12
    one = run_point("private", "universal", "xeon16", "processes", 1, 0.4, seed=1)
    assert 6 * one.faults_per_s < p.faults_per_s < 12.5 * one.faults_per_s


def test_csv_is_pfbench_long_form_with_vmstat() -> None:
    pts = simulate("shared", "universal", "xeon16", "threads", [2], 0.3)
    rows = list(csv.DictReader(to_csv(pts).splitlines()))
    assert list(rows[0])[:6] == ["workload", "preset", "machine", "kind", "tasks", "faults_per_s"]
    assert int(rows[0]["vmstat_vma_lock_success"]) > 0
    assert float(rows[0]["lat_p50_us"]) > 0


def test_plots_are_svg_text() -> None:
    pts = simulate("shared", "universal", "xeon16", "both", [1, 2], 0.2)
    assert throughput_svg(pts).lstrip().startswith("<?xml")
    assert "<svg" in ratio_svg(pts, measured={1: 0.9, 2: 0.91})


def test_legacy_faults_never_take_the_per_vma_path() -> None:
    p = run_point("shared", "legacy", "xeon16", "threads", 2, 0.3)
    assert p.vmstat.get("vma_lock_success", 0) == 0
    assert p.vmstat.get("pgfault", 0) > 0


def test_bad_requests_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown mode"):
        simulate("shared", mode="fibers")
    with pytest.raises(UsageError, match="at least 1"):
        run_point("shared", tasks=0)
