"""The simulator's figures do not move when its driver is reorganised or made
faster: every built-in workload, threads and processes, at 1, 2 and 4 tasks,
under the legacy, universal and universal-up presets, in short windows, against the figures recorded at commit 07d0c7f (before the
driver was split into parts and the location kinds named).  A change that is
meant to move them re-records the file (``python tests/sim/test_figures_unchanged.py``)
and says so in its commit."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from pervma.sim.api import run_point
from pervma.sim.workloads import WORKLOADS

DATA = Path(__file__).parent / "data" / "figures-07d0c7f.json"
TASKS = (1, 2, 4)
PRESETS = ("legacy", "universal", "universal-up")


def figures(preset: str, workload: str, kind: str, tasks: int) -> dict[str, Any]:
    p = run_point(workload, preset, "xeon16", kind, tasks, 0.3, seed=1, warmup_ms=0.1)
    out = asdict(p)
    del out["wall_s"]  # the only figure that is not simulated
    return out


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_figures_identical_to_the_recorded_ones(workload: str, preset: str) -> None:
    recorded = json.loads(DATA.read_text())
    for kind in ("threads", "processes"):
        for n in TASKS:
            # a JSON round trip, as recorded (floats exactly, dicts by key)
            key = f"{preset}/{workload}/{kind}/{n}"
            now = json.loads(json.dumps(figures(preset, workload, kind, n)))
            assert now["steps"] > 0
            assert now == recorded[key], key


if __name__ == "__main__":
    rec = {f"{p}/{w}/{k}/{n}": figures(p, w, k, n) for p in PRESETS for w in sorted(WORKLOADS)
           for k in ("threads", "processes") for n in TASKS}
    DATA.write_text(json.dumps(rec, indent=1, sort_keys=True))
    print(f"recorded {len(rec)} points in {DATA}", file=sys.stderr)
