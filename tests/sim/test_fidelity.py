"""Fidelity against the real-16core anchor: threads/processes ratios.

The anchor (tests/sim/data/pfbench-private-shared.csv, a copy of
anchors/real-16core) is read here only; the simulator never sees it.  CI runs
a short simulated window (PERVMA_SIM_FIDELITY_MS, default 25 ms after a 5 ms
warm-up); ``bench/sim_bench.py --fidelity`` runs the full-length version.
"""

from __future__ import annotations

import csv
import os
import statistics
from pathlib import Path

import pytest

pytest.importorskip("pervma.kernel.system")

from pervma.sim.api import run_point  # noqa: E402

ANCHOR = Path(__file__).parent / "data" / "pfbench-private-shared.csv"
WINDOW_MS = float(os.environ.get("PERVMA_SIM_FIDELITY_MS", "25"))


def measured_ratio(scenario: str, tasks: int) -> float:
    vals: dict[str, list[float]] = {"threads": [], "processes": []}
    with ANCHOR.open() as f:
        for row in csv.DictReader(f):
            if row["scenario"] == scenario and int(row["tasks"]) == tasks:
                vals[row["kind"]].append(float(row["faults_per_s"]))
    assert len(vals["threads"]) == 3 and len(vals["processes"]) == 3
    return statistics.median(vals["threads"]) / statistics.median(vals["processes"])


@pytest.mark.parametrize("tasks", [1, 2, 4, 8, 12, 16])
@pytest.mark.parametrize("workload", ["private", "shared"])
def test_threads_processes_ratio_matches_real_16core(workload: str, tasks: int) -> None:
    def rate(kind: str) -> float:
        p = run_point(workload, "universal", "xeon16", kind, tasks, WINDOW_MS, seed=7,
                      warmup_ms=5.0)
        return p.faults_per_s

    simulated = rate("threads") / rate("processes")
    measured = measured_ratio(workload, tasks)
    assert simulated == pytest.approx(measured, rel=0.15), (
        f"{workload} {tasks} tasks: simulated {simulated:.3f}, measured {measured:.3f}")
