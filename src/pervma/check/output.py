"""Counterexample output: the column-per-thread table, the replay file and
the Chrome/Perfetto trace.

Replay file (``<scenario>.replay.json``; ``<scenario>.<preset>.replay.json`` when
one ``check`` runs several presets)::

    {"format": "pervma-replay/1", "scenario": "...", "preset": "universal",
     "bugs": ["B04"], "config": null | ".config fragment text",
     "schedule": [0, 0, 1, ...],          # thread index of every primitive step
     "strategy": "dpor", "seed": 0, "model_version": "0.1.0+3f2a9c1d0b7e",
     "violation": {"kind": "...", "message": "..."}, "preemptions": 1,
     "threads": ["T0", "T1"], "steps": ["T0 mmap_read_lock", ...],
     "run_scope": {"lockdep": [...]}}   # only when the model left replay data

The trace file (``<scenario>.trace.json``) uses the Trace Event Format
(``{"traceEvents": [...]}``): one complete event (``ph: "X"``) per step on the
thread's track, 10 us apart, with the location, kind and lock state in
``args``; an instant event marks the violation.  Open it in ui.perfetto.dev
or chrome://tracing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pervma import __version__
from pervma.check.engine import Replayed

RULE = "=" * 78


def model_version() -> str:
    """pervma's version plus a hash of the model and scheduler sources."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for sub in ("sched", "kernel"):
        for f in sorted((root / sub).glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def table(res: Replayed, names: list[str], headline: str, subtitle: str,
          width: int = 36, state_width: int = 70) -> str:
    """The KASAN/lockdep-style headline, then one column per thread and one
    row per step with the lock state after it; ``*`` marks a preemption."""
    lines = [RULE, headline, subtitle, "-" * 78]
    head = f"{'step':>5} | " + " | ".join(_fit(n, width).ljust(width) for n in names)
    has_state = any(res.snapshots)
    if has_state:
        head += " | state after the step"
    lines.append(head)
    lines.append("-" * len(head))
    pre = set(res.preempted_at)
    prev_state = None
    for i, (tid, op) in enumerate(res.ex.trace):
        cells = [" " * width] * len(names)
        cells[tid] = _fit(op.label, width).ljust(width)
        mark = "*" if i in pre else " "
        row = f"{i:>4}{mark} | " + " | ".join(cells)
        if has_state:
            st = res.snapshots[i] if i < len(res.snapshots) else ""
            row += " | " + (_fit(st, state_width) if st != prev_state else "  \"")
            prev_state = st
        lines.append(row.rstrip())
    lines.append("-" * len(head))
    if res.violation is not None:
        lines.append(f"==> {res.violation.kind}: {res.violation.message}")
    lines.append(RULE)
    return "\n".join(lines)


def replay_document(*, scenario: str, preset: str, bugs: list[str], config: str | None,
                    schedule: list[int], strategy: str, seed: int | None,
                    kind: str, message: str, preemptions: int, res: Replayed,
                    run_scope: dict[str, Any] | None = None,
                    plan: dict[tuple[int, int], int] | None = None,
                    reads_from: list[str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": "pervma-replay/1",
        "scenario": scenario,
        "preset": preset,
        "bugs": sorted(bugs),
        "config": config,
        "schedule": list(schedule),
        "strategy": strategy,
        "seed": seed,
        "model_version": model_version(),
        "violation": {"kind": kind, "message": message},
        "preemptions": preemptions,
        "threads": [t.name for t in res.ex.tasks],
        "steps": [f"{res.ex.tasks[tid].name} {op.label}" for tid, op in res.ex.trace],
    }
    if run_scope:  # what the model learnt in other executions (sched.RunScope.replay)
        doc["run_scope"] = run_scope
    if plan is not None:  # an execution under LKMM: the weak reads' choices (check/lkmm.py)
        doc["memory_model"] = "lkmm"
        doc["reads_from_plan"] = [[t, n, back] for (t, n), back in sorted(plan.items())]
        doc["reads_from"] = list(reads_from or [])
    return doc


def chrome_trace(res: Replayed, scenario: str, tick_us: int = 10) -> dict[str, Any]:
    events: list[dict[str, Any]] = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": f"pervma {scenario}"}}
    ]
    for t in res.ex.tasks:
        events.append({"ph": "M", "pid": 1, "tid": t.tid, "name": "thread_name",
                       "args": {"name": t.name}})
    pre = set(res.preempted_at)
    for i, (tid, op) in enumerate(res.ex.trace):
        args: dict[str, Any] = {"step": i, "kind": op.kind.name.lower(), "loc": repr(op.loc)}
        if i < len(res.snapshots) and res.snapshots[i]:
            args["state"] = res.snapshots[i]
        if i in pre:
            args["preemption"] = True
        events.append({"ph": "X", "pid": 1, "tid": tid, "ts": i * tick_us, "dur": tick_us,
                       "name": op.label, "cat": op.kind.name.lower(), "args": args})
    if res.violation is not None:
        last = res.ex.trace[-1][0] if res.ex.trace else 0
        events.append({"ph": "i", "pid": 1, "tid": last, "s": "g",
                       "ts": len(res.ex.trace) * tick_us, "name": res.violation.kind,
                       "args": {"message": res.violation.message}})
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def file_names(directory: str | Path, stem: str) -> tuple[Path, Path]:
    """The replay and trace files a counterexample named ``stem`` goes to."""
    d = Path(directory)
    return d / f"{stem}.replay.json", d / f"{stem}.trace.json"


def check_files(directory: str | Path, stems: list[str], force: bool) -> None:
    """Validate, before any run, every file ``--trace-out`` may write."""
    from pervma import outfiles

    for stem in stems:
        for f in file_names(directory, stem):
            outfiles.check_file(f, force, "--trace-out file", create_parent=True)


def write_files(directory: str | Path, stem: str, doc: dict[str, Any],
                trace: dict[str, Any], force: bool = False) -> list[str]:
    """Write ``<stem>.replay.json`` and ``<stem>.trace.json`` into ``directory``
    (created if missing), each complete or not at all; an existing file is
    refused unless ``force`` (:mod:`pervma.outfiles`)."""
    from pervma import outfiles

    rp, tp = file_names(directory, stem)
    for f in (rp, tp):
        outfiles.check_file(f, force, "--trace-out file", create_parent=True)
    outfiles.write_file(rp, json.dumps(doc, indent=1) + "\n", force, "--trace-out file")
    outfiles.write_file(tp, json.dumps(trace) + "\n", force, "--trace-out file")
    return [str(rp), str(tp)]


def write_trace_file(directory: str | Path, stem: str, trace: dict[str, Any],
                     force: bool = False) -> Path:
    """Write only ``<stem>.trace.json`` (``pervma replay --trace-out``)."""
    from pervma import outfiles

    tp = file_names(directory, stem)[1]
    outfiles.check_file(tp, force, "--trace-out file", create_parent=True)
    return outfiles.write_file(tp, json.dumps(trace) + "\n", force, "--trace-out file")
