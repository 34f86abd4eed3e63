"""The Correctness section: every scenario under every preset, and the bug
catalogue (each bug found or not, how fast, its minimised counterexample and
its trace files), all from :mod:`pervma.check.api`."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from pervma.report import html as H
from pervma.report.section import Section, describe
from pervma.report.settings import Settings

RUN_COLUMNS = ["scenario", "preset", "state", "complete", "executions", "pruned", "distinct",
               "elapsed_s", "violation_kind", "violation_message", "incomplete", "traces"]
BUG_COLUMNS = ["bug", "scenario", "preset", "found", "executions", "pruned", "time_to_find_s",
               "elapsed_s", "preemptions", "steps", "violation_kind", "violation_message",
               "complete", "traces", "title"]


@dataclass
class Plan:
    """The check jobs: ``(tag, kwargs)`` for scenario runs and bug runs."""

    runs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    bugs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    titles: dict[str, str] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)
    run_time_limit: float = 0.0
    bug_time_limit: float = 0.0


def plan(s: Settings) -> Plan:
    p = Plan()
    try:
        from pervma.check.catalogue import CATALOGUE
        from pervma.check.scenario import all_scenarios
    except Exception as exc:  # noqa: BLE001 - the engine is missing
        p.errors.append(("checker", f"pervma.check is not available ({describe(exc)})"))
        return p
    try:
        scenarios = all_scenarios()
    except Exception as exc:  # noqa: BLE001
        p.errors.append(("scenario library", describe(exc)))
        scenarios = []
    if not scenarios and not p.errors:
        p.errors.append(("scenario library", "the checker has no (non-toy) scenarios "
                         "registered, so there is nothing to check"))
    pairs = [(sc.name, pre) for sc in scenarios for pre in s.check_presets
             if pre in sc.presets]
    share = s.check_cpu_budget / max(1, len(pairs) + len(CATALOGUE)) \
        if s.check_cpu_budget else float("inf")
    p.run_time_limit = round(max(1.0, min(s.check_time_limit, share)), 1)
    p.bug_time_limit = round(max(1.0, min(s.bug_time_limit, share)), 1)
    common = {"max_executions": s.check_max_executions, "time_limit": p.run_time_limit,
              "seed": s.check_seed}
    for name, pre in pairs:
        p.runs.append((f"{name}.{pre}", dict(common, scenario=name, preset=pre)))
    for e in CATALOGUE.values():
        p.titles[e.id] = e.title
        p.bugs.append((e.id, {"bug": e.id, "max_executions": s.bug_max_executions,
                              "time_limit": p.bug_time_limit, "seed": s.check_seed}))
    return p


def _state(r: dict[str, Any]) -> str:
    if r.get("violation"):
        return "VIOLATION"
    return "clean, complete" if r["complete"] else "clean, incomplete"


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([r.get(c, "") for c in columns])
    return buf.getvalue()


def _trace_links(paths: list[str]) -> H.Raw:
    return H.join(H.join([H.link(p, p.rsplit("/", 1)[-1]), H.Raw("<br>")]) for p in paths)


def build(p: Plan, results: dict[str, dict[str, Any]], s: Settings) -> Section:
    sec = Section("correctness", "Correctness: every scenario, every preset, every known bug")
    sec.add(H.tag("p", f"Source-DPOR exploration of each scenario (pervma check SCENARIO "
                  f"--preset P --max-executions {s.check_max_executions} --time "
                  f"{p.run_time_limit:g}); a run is complete when every interleaving class "
                  "was explored within the budget. The bug catalogue runs each bug's scenario "
                  f"with its switch on (pervma check --bug ID --max-executions "
                  f"{s.bug_max_executions} --time {p.bug_time_limit:g})."
                  + (f" The time limits share a budget of {s.check_cpu_budget:g} CPU seconds."
                     if s.check_cpu_budget else "")))
    for what, msg in p.errors:
        sec.fail(what, msg)
    _render_runs(sec, p, results)
    _render_bugs(sec, p, results)
    return sec


def _render_runs(sec: Section, p: Plan, results: dict[str, dict[str, Any]]) -> None:
    sec.add(H.tag("h3", "Scenarios × presets"))
    if not p.runs:
        sec.add(H.tag("p", "No scenario runs.", "muted"))
        return
    rows: list[list[object]] = []
    classes: list[str | None] = []
    csv_rows: list[dict[str, Any]] = []
    for tag, kw in p.runs:
        out = results.get(tag, {"error": "not run"})
        if "error" in out:
            sec.fail(f"check {kw['scenario']} [{kw['preset']}]", out["error"])
            continue
        r = out["result"]
        v = r.get("violation") or {}
        rows.append([r["scenario"], r["preset"], _state(r), r["executions"], r["pruned"],
                     r["distinct"], round(r["elapsed"], 2),
                     f"{v.get('kind', '')}: {v.get('message', '')}" if v else "",
                     "; ".join(r.get("incomplete") or []), _trace_links(out["traces"])])
        classes.append("bad" if v else "good" if r["complete"] else "warn")
        csv_rows.append({"scenario": r["scenario"], "preset": r["preset"], "state": _state(r),
                         "complete": r["complete"], "executions": r["executions"],
                         "pruned": r["pruned"], "distinct": r["distinct"],
                         "elapsed_s": round(r["elapsed"], 3), "violation_kind": v.get("kind", ""),
                         "violation_message": v.get("message", ""),
                         "incomplete": "; ".join(r.get("incomplete") or []),
                         "traces": " ".join(out["traces"])})
        if v:
            sec.add(H.Raw(f"<details><summary>{H.esc(r['scenario'])} [{H.esc(r['preset'])}] "
                          f"counterexample</summary>{H.pre(r['counterexample']).html}</details>"))
    sec.add(H.table(["scenario", "preset", "state", "executions", "pruned", "distinct traces",
                     "time s", "violation", "incomplete because", "traces"], rows, classes))
    sec.csv["correctness.csv"] = _csv(RUN_COLUMNS, csv_rows)
    sec.add(H.link("correctness.csv", "CSV"))
    bad = sum(1 for r in csv_rows if r["violation_kind"])
    complete = sum(1 for r in csv_rows if r["complete"] and not r["violation_kind"])
    sec.summary.append(f"{len(csv_rows)} scenario runs: {complete} complete and clean, "
                       f"{len(csv_rows) - complete - bad} clean but incomplete, {bad} with a "
                       "violation")
    if bad:
        sec.errors.append(f"{bad} scenario run(s) of the unmodified model found a violation")


def _render_bugs(sec: Section, p: Plan, results: dict[str, dict[str, Any]]) -> None:
    sec.add(H.tag("h3", "The bug catalogue"))
    if not p.bugs:
        sec.add(H.tag("p", "No catalogue.", "muted"))
        return
    rows: list[list[object]] = []
    classes: list[str | None] = []
    csv_rows: list[dict[str, Any]] = []
    details: list[H.Raw] = []
    for bug, _kw in p.bugs:
        out = results.get(bug, {"error": "not run"})
        if "error" in out:
            sec.fail(f"bug {bug}", out["error"])
            rows.append([bug, p.titles.get(bug, ""), "", "", "error", "", "", "", "", ""])
            classes.append("bad")
            continue
        r = out["result"]
        v = r.get("violation") or {}
        found = bool(v)
        ttf = r.get("time_to_find")
        rows.append([bug, p.titles.get(bug, ""), r["scenario"], r["preset"],
                     "found" if found else "not found", r["executions"],
                     round(ttf, 2) if ttf is not None else "-",
                     f"{r['preemptions']} / {len(r['schedule'])}" if found else "-",
                     v.get("kind", "") if found else
                     ("complete, clean" if r["complete"] else "; ".join(r["incomplete"])),
                     _trace_links(out["traces"])])
        classes.append("good" if found else "bad")
        csv_rows.append({"bug": bug, "scenario": r["scenario"], "preset": r["preset"],
                         "found": found, "executions": r["executions"], "pruned": r["pruned"],
                         "time_to_find_s": round(ttf, 3) if ttf is not None else "",
                         "elapsed_s": round(r["elapsed"], 3), "preemptions": r["preemptions"],
                         "steps": len(r["schedule"]), "violation_kind": v.get("kind", ""),
                         "violation_message": v.get("message", ""), "complete": r["complete"],
                         "traces": " ".join(out["traces"]), "title": p.titles.get(bug, "")})
        if found:
            details.append(H.Raw(f"<details><summary>{H.esc(bug)}: minimised counterexample "
                                 f"({H.esc(v.get('kind', ''))})</summary>"
                                 f"{H.pre(r['counterexample']).html}</details>"))
    sec.add(H.table(["bug", "what", "scenario", "preset", "result", "executions",
                     "time to find s", "preemptions / steps", "violation", "trace files"],
                    rows, classes))
    for d in details:
        sec.add(d)
    sec.csv["bugs.csv"] = _csv(BUG_COLUMNS, csv_rows)
    sec.add(H.link("bugs.csv", "CSV"))
    found_n = sum(1 for r in csv_rows if r["found"])
    sec.summary.append(f"bug catalogue: {found_n} of {len(p.bugs)} found"
                       + (f" ({', '.join(r['bug'] for r in csv_rows if r['found'])})"
                          if found_n else ""))
