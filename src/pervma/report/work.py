"""Units of work the runner may spread over processes.  Each returns a plain,
picklable dict and never raises: a failure comes back as ``{"error": ...}``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pervma.report.section import describe


def _move_traces(tmp: Path, dest: Path, tag: str) -> list[str]:
    out = []
    if tmp.is_dir():
        for f in sorted(tmp.iterdir()):
            target = dest / f"{tag}.{f.name}"
            shutil.move(str(f), target)
            out.append(f"traces/{target.name}")
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_job(kw: dict[str, Any], trace_dir: str | None, tag: str) -> dict[str, Any]:
    """One ``run_check`` (or ``find_bug`` when ``kw`` has ``bug``)."""
    try:
        from pervma.check import api

        kw = dict(kw)
        tmp = Path(trace_dir) / f".tmp-{tag}" if trace_dir else None
        if tmp is not None:
            kw["trace_out"] = str(tmp)
        bug = kw.pop("bug", None)
        res = api.find_bug(bug, **kw) if bug else api.run_check(**kw)
        traces = _move_traces(tmp, Path(trace_dir), tag) if tmp and trace_dir else []
        return {"result": res.to_json(), "traces": traces}
    except Exception as exc:  # noqa: BLE001 - reported in the section
        return {"error": describe(exc)}


def sim_job(args: tuple[Any, ...]) -> dict[str, Any]:
    """One simulated point: ``(workload, preset, machine, kind, tasks, duration_ms, seed)``."""
    try:
        from pervma.sim.api import run_point

        wl, preset, machine, kind, tasks, duration, seed = args
        return {"point": run_point(wl, preset, machine, kind, tasks, duration, seed)}
    except Exception as exc:  # noqa: BLE001
        return {"error": describe(exc)}
