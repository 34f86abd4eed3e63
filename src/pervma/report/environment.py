"""The Environment section: what produced the report, where and with which
settings (pervma version, kernel, config source, machine profiles, seeds,
run time)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from pervma import __version__
from pervma.report import html as H
from pervma.report.section import Section
from pervma.report.settings import Settings

BTF = Path("/sys/kernel/btf/vmlinux")
CONFIG_GZ = Path("/proc/config.gz")


def _config_source() -> str:
    rel = platform.release()
    for p in (CONFIG_GZ, Path(f"/boot/config-{rel}")):
        if p.exists():
            return str(p)
    return "none found (/proc/config.gz, /boot/config-<release>)"


def facts(settings: Settings) -> list[tuple[str, str]]:
    """What produced the report: the same on every run on this host with these
    settings (no time, date, duration or path of this run; those are in
    :func:`run_facts` and ``timings.csv``)."""
    u = platform.uname()
    rows: list[tuple[str, str]] = [
        ("pervma", __version__),
        ("python", f"{sys.version.split()[0]} ({platform.python_implementation()})"),
        ("kernel (uname)", f"{u.system} {u.release} {u.version} {u.machine}"),
        ("host", u.node),
        ("CPUs", str(os.cpu_count() or 0)),
        ("kernel BTF (layout source)", str(BTF) if BTF.exists() else f"{BTF} missing"),
        ("kernel config source", _config_source()),
        ("model configs", "presets " + ", ".join(sorted(set(settings.check_presets)
                                                          | set(settings.bug_presets)
                                                          | set(settings.sim_presets)))),
    ]
    try:
        from pervma.sim.machine import load_machine

        m = load_machine(settings.sim_machine)
        rows.append(("machine profile (simulator)", f"{m.name}: {m.description}"))
    except Exception as exc:  # noqa: BLE001 - shown, not fatal here
        rows.append(("machine profile (simulator)", f"{settings.sim_machine} "
                     f"(not loadable: {exc})"))
    try:
        from pervma.host import proc

        hm = proc.read_machine()
        rows.append(("machine (SLUB sizing)", f"{hm.present_cpus} present CPUs, nr_cpu_ids "
                     f"{hm.nr_cpu_ids}, cache line {hm.cache_line} B, page {hm.page_size} B, "
                     f"slub_max_order {hm.max_order}"))
    except Exception as exc:  # noqa: BLE001
        rows.append(("machine (SLUB sizing)", f"unreadable: {exc}"))
    s = settings
    try:
        from pervma.check.minimise import MINIMISE_EXECUTIONS

        mini = f"; counterexamples minimised with at most {MINIMISE_EXECUTIONS} executions"
    except Exception:  # noqa: BLE001 - the checker's absence is shown in Correctness
        mini = ""
    rows += [
        ("profile", s.name + ("; " + "; ".join(s.notes) if s.notes else "")),
        ("checker", f"stateful DPOR bounded by executions only (no time limit): scenarios under "
         f"{', '.join(s.check_presets)}, at most {s.check_max_executions} executions per run; "
         f"bugs under {', '.join(s.bug_presets)}, at most {s.bug_max_executions}{mini}"),
        ("simulator", f"workloads {', '.join(s.sim_workloads)}; presets "
         f"{', '.join(s.sim_presets)}; tasks {','.join(map(str, s.sim_tasks))}; "
         f"{s.sim_duration_ms:g} ms simulated per point"),
        ("seeds", f"checker {s.check_seed}, simulator {s.sim_seed}"),
    ]
    return rows


def run_facts(out_dir: Path, started: str, elapsed: float,
              section_times: dict[str, float]) -> list[tuple[str, str]]:
    """This run's place and times (shown on the page and in ``timings.csv``)."""
    return [
        ("python executable", sys.executable),
        ("output folder", str(out_dir)),
        ("started", started),
        ("run time", f"{elapsed:.1f} s (" + ", ".join(f"{k} {v:.1f} s"
                                                     for k, v in section_times.items()) + ")"),
    ]


def timings_csv(run: list[tuple[str, str]], section_times: dict[str, float],
                timings: list[tuple[str, str, float]],
                moment: list[tuple[str, str, str]] | None = None) -> str:
    """``timings.csv``: every time, date, duration and path of the run, and the
    live system's counts of this moment, as ``kind,name,value`` rows (run
    facts, section seconds, job seconds, then the sections' ``moment`` rows)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "name", "value"])
    for k, v in run:
        w.writerow(["run", k, v])
    for k, secs in section_times.items():
        w.writerow(["section", k, f"{secs:.3f}"])
    for section, job, secs in timings:
        w.writerow([f"job:{section}", job, f"{secs:.3f}"])
    for row in moment or []:
        w.writerow(list(row))
    return buf.getvalue()


def build(settings: Settings, out_dir: Path, started: str, elapsed: float,
          section_times: dict[str, float],
          timings: list[tuple[str, str, float]] | None = None,
          moment: list[tuple[str, str, str]] | None = None) -> Section:
    sec = Section("environment", "Environment")
    with sec.guard("environment"):
        rows = facts(settings)
        run = run_facts(out_dir, started, elapsed, section_times)
        sec.add(H.table(["what", "value"], [list(r) for r in rows + run], numeric=False))
        sec.csv["environment.csv"] = _csv(rows)
        sec.csv["timings.csv"] = timings_csv(run, section_times, timings or [], moment)
        slow = ", ".join(f"{b} {c:.1f} s" for _, b, c in (timings or [])[:5])
        sec.add(H.tag("p", H.join(["Slowest jobs: ", slow or "none", ". Every time, date and "
                                   "path of this run is in ", H.link("timings.csv", "timings.csv"),
                                   "; the other CSV files are the same on every run."]),
                      "muted"))
        sec.summary.append(f"pervma {__version__} on {platform.uname().release}; "
                           f"profile {settings.name}; {elapsed:.1f} s")
    return sec


def _csv(rows: list[tuple[str, str]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["what", "value"])
    w.writerows(rows)
    return buf.getvalue()


def as_dict(rows: list[tuple[str, str]]) -> dict[str, Any]:
    return dict(rows)
