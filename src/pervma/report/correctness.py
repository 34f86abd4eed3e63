"""The Correctness section, from :mod:`pervma.check.api`:

* every scenario under every preset of the sweep (one line describing each);
* the bug catalogue under every preset (all five): found or not, and when not,
  why it cannot occur there, with each minimised counterexample and its
  trace files;
* the misuse scenarios, each with the report it must produce per preset;
* what the model leaves out, and its two assumptions.

Each part states a claim, and the section is ok only when every claim holds:
a scenario run of the unmodified model is complete and clean; a bug is found
under each preset where the catalogue says it can occur, and explored
completely and cleanly under each other one; a misuse scenario produces the
expected report.  Every run is bounded by executions, never by time, and no
time or path goes into this section's CSV files (they are in
``timings.csv``)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from pervma.report import html as H
from pervma.report.section import Section, describe
from pervma.report.settings import Settings

RUN_COLUMNS = ["scenario", "preset", "state", "complete", "executions", "pruned", "distinct",
               "states", "violation_kind", "violation_message", "incomplete", "traces"]
BUG_COLUMNS = ["bug", "preset", "scenario", "expected", "found", "ok", "executions", "pruned",
               "complete", "preemptions", "steps", "minimise_executions", "minimise_cut", "violation_kind",
               "violation_message", "reason_not_found", "traces", "title"]
MISUSE_COLUMNS = ["scenario", "preset", "expected", "got", "ok", "executions", "pruned",
                  "complete", "violation_message", "traces"]

# The README's "What the model leaves out" and "Two assumptions" (model section).
LEAVES_OUT = (
    "Exploration is sequentially consistent: no weak-memory reordering.",
    "TLBs are not modelled: page tables are the TLB; shootdowns are a cost in the simulator.",
    "MADV_FREE'd pages are never reclaimed; anon_vmas are never freed.",
    "THP, hugetlb, mempolicy and mlock are absent; userfaultfd is partial (no events, no uffd-wp PTEs).",
    "DPOR is only as precise as the model's Op locations: a plain read of state no step "
    "names (for example a fatal_signal test) is invisible to the dependency relation.",
    "A run is a proof only within its scenario: 2-4 threads, a fixed setup, and a "
    "livelock bound of steps per thread.",
)
ASSUMPTIONS = (
    "The series' RCU-based VMA lookup helper that waits for writers is modelled as "
    "lock_vma_under_rcu_wait(): try lock_vma_under_rcu(); on failure "
    "mmap_read_lock_killable(), vma_lookup(), vma_start_read_locked(), mmap_read_unlock(). "
    "binder and TCP use it in their series forms.",
    "The series' x86 patch (the sixth) has not been seen: the x86 fault handler follows 7.0.",
)


@dataclass
class Plan:
    """The check jobs as ``(tag, kwargs)``: scenario runs, bug runs (one per
    bug and preset) and misuse runs (one per misuse scenario and preset)."""

    runs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    bugs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    misuse: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    titles: dict[str, str] = field(default_factory=dict)
    docs: dict[str, str] = field(default_factory=dict)
    # (bug, preset) -> why the bug cannot occur there, or None: it must be found
    cannot: dict[tuple[str, str], str | None] = field(default_factory=dict)
    # (scenario, preset) -> (expected violation kind or None, why)
    expect: dict[tuple[str, str], tuple[str | None, str]] = field(default_factory=dict)
    bug_presets: tuple[str, ...] = ()
    errors: list[tuple[str, str]] = field(default_factory=list)
    minimise_executions: int = 0

    @property
    def jobs(self) -> list[tuple[str, dict[str, Any]]]:
        return self.runs + self.bugs + self.misuse


def plan(s: Settings) -> Plan:
    p = Plan(bug_presets=s.bug_presets)
    try:
        from pervma.check.catalogue import CATALOGUE
        from pervma.check.minimise import MINIMISE_EXECUTIONS
        from pervma.check.scenario import all_scenarios, misuse_scenarios
        from pervma.config import Config
    except Exception as exc:  # noqa: BLE001 - the engine is missing
        p.errors.append(("checker", f"pervma.check is not available ({describe(exc)})"))
        return p
    p.minimise_executions = MINIMISE_EXECUTIONS
    try:
        scenarios = all_scenarios()
        misuse = misuse_scenarios()
    except Exception as exc:  # noqa: BLE001
        p.errors.append(("scenario library", describe(exc)))
        scenarios, misuse = [], []
    if not scenarios and not p.errors:
        p.errors.append(("scenario library", "the checker has no (non-toy) scenarios "
                         "registered, so there is nothing to check"))
    # The table shows distinct traces, so the runs count them (--trace-stats).
    common = {"max_executions": s.check_max_executions, "seed": s.check_seed,
              "trace_stats": True}
    for sc in scenarios:
        p.docs[sc.name] = sc.doc
        for pre in s.check_presets:
            if pre in sc.presets:
                p.runs.append((f"{sc.name}.{pre}", dict(common, scenario=sc.name, preset=pre)))
    for sc in misuse:
        p.docs[sc.name] = sc.doc
        for e in sc.expect:
            p.expect[(sc.name, e.preset)] = (e.kind, e.why)
            p.misuse.append((f"{sc.name}.{e.preset}",
                             dict(common, scenario=sc.name, preset=e.preset)))
    for entry in CATALOGUE.values():
        p.titles[entry.id] = entry.title
        for pre in s.bug_presets:
            p.cannot[(entry.id, pre)] = entry.cannot_occur(Config.preset(pre))
            p.bugs.append((f"{entry.id}.{pre}", {"bug": entry.id, "preset": pre,
                                                "max_executions": s.bug_max_executions,
                                                "seed": s.check_seed}))
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
    sec.add(H.tag("p", "Stateful exploration (source-DPOR with sleep sets and a table of explored "
                  "states, pervma check's default), bounded by executions only "
                  "(the same executions on every machine and with any --jobs): each scenario "
                  f"under {', '.join(s.check_presets)} (pervma check SCENARIO --preset P "
                  f"--max-executions {s.check_max_executions} --seed {s.check_seed}); each "
                  f"catalogued bug under {', '.join(p.bug_presets)} (pervma check --bug ID "
                  f"--preset P --max-executions {s.bug_max_executions}); each counterexample "
                  f"minimised with at most {p.minimise_executions} executions. A run is "
                  "complete when every interleaving class was explored within its budget."))
    for what, msg in p.errors:
        sec.fail(what, msg)
    _render_runs(sec, p, results)
    _render_bugs(sec, p, results)
    _render_misuse(sec, p, results)
    _render_limits(sec)
    return sec


def _render_runs(sec: Section, p: Plan, results: dict[str, dict[str, Any]]) -> None:
    sec.add(H.tag("h3", "Scenarios × presets"))
    if not p.runs:
        sec.add(H.tag("p", "No scenario runs.", "muted"))
        return
    names = list(dict.fromkeys(kw["scenario"] for _, kw in p.runs))
    sec.add(H.table(["scenario", "what it does"],
                    [[n, p.docs.get(n, "")] for n in names], numeric=False))
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
                     r["distinct"], r.get("states"), f"{v.get('kind', '')}: {v.get('message', '')}" if v else "",
                     "; ".join(r.get("incomplete") or []), _trace_links(out["traces"])])
        classes.append("bad" if v else "good" if r["complete"] else "warn")
        csv_rows.append({"scenario": r["scenario"], "preset": r["preset"], "state": _state(r),
                         "complete": r["complete"], "executions": r["executions"],
                         "pruned": r["pruned"], "distinct": r["distinct"],
                         "states": r.get("states"),
                         "violation_kind": v.get("kind", ""),
                         "violation_message": v.get("message", ""),
                         "incomplete": "; ".join(r.get("incomplete") or []),
                         "traces": " ".join(out["traces"])})
        if v:
            sec.add(H.Raw(f"<details><summary>{H.esc(r['scenario'])} [{H.esc(r['preset'])}] "
                          f"counterexample</summary>{H.pre(r['counterexample']).html}</details>"))
    sec.add(H.table(["scenario", "preset", "state", "executions", "pruned", "distinct traces",
                     "states", "violation", "incomplete because", "traces"], rows, classes))
    sec.csv["correctness.csv"] = _csv(RUN_COLUMNS, csv_rows)
    sec.add(H.link("correctness.csv", "CSV"))
    bad = sum(1 for r in csv_rows if r["violation_kind"])
    complete = sum(1 for r in csv_rows if r["complete"] and not r["violation_kind"])
    incomplete = len(csv_rows) - complete - bad
    sec.summary.append(f"{len(csv_rows)} scenario runs: {complete} complete and clean, "
                       f"{incomplete} clean but incomplete, {bad} with a violation")
    if bad:
        sec.errors.append(f"{bad} scenario run(s) of the unmodified model found a violation")
    if incomplete:
        sec.errors.append(f"{incomplete} scenario run(s) stopped at the budget before every "
                          "interleaving was explored: clean so far, not proven clean")


def _short(why: str) -> str:
    """A reason without its parenthesised explanation (the legend has it)."""
    return why.split(" (", 1)[0]


def _mark(ok: bool) -> H.Raw:
    return H.tag("span", "✔ " if ok else "✘ ", "ok" if ok else "bad")


def _short_links(paths: list[str]) -> H.Raw:
    return H.join(H.join([" ", H.link(x, x.rsplit(".", 2)[-2] if x.count(".") >= 2 else x)])
                  for x in paths)


def _bug_cell(bug: str, preset: str, p: Plan, out: dict[str, Any]) -> tuple[H.Raw, bool, str]:
    """The matrix cell, whether the claim holds, and the reason for the CSV."""
    if "error" in out:
        return H.join([_mark(False), f"error: {out['error']}"]), False, ""
    r = out["result"]
    v = r.get("violation") or {}
    why = p.cannot.get((bug, preset))
    if v:
        ok = why is None
        detail = (f"{r['preemptions']} preemption(s), {len(r['schedule'])} steps"
                  + ("; minimisation stopped at its budget" if _minimise_cut(r) else ""))
        parts: list[object] = [_mark(ok), f"found: {v.get('kind', '')}", H.Raw("<br>"),
                               detail, H.Raw("<br>"), "files:", _short_links(out["traces"])]
        if not ok:
            parts += [H.Raw("<br>"), f"the catalogue says it cannot occur here: {why}"]
        return H.join(parts), ok, ""
    if why is None:
        state = "complete" if r["complete"] else "; ".join(r.get("incomplete") or [])
        return H.join([_mark(False), f"NOT found ({state}, {r['executions']} executions): "
                       "it must be found here"]), False, ""
    if not r["complete"]:
        return (H.join([_mark(False), f"not found but incomplete "
                        f"({'; '.join(r.get('incomplete') or [])}): {_short(why)}"]), False, why)
    return (H.join([_mark(True), f"not found: {_short(why)}", H.Raw("<br>"),
                    f"(complete, {r['executions']} executions)"]), True, why)


def _minimise_cut(r: dict[str, Any]) -> bool:
    return any(n.startswith("minimisation stopped") for n in r.get("notes") or [])


def _render_bugs(sec: Section, p: Plan, results: dict[str, dict[str, Any]]) -> None:
    sec.add(H.tag("h3", "The bug catalogue under every preset"))
    if not p.bugs:
        sec.add(H.tag("p", "No catalogue.", "muted"))
        return
    sec.add(H.tag("p", "Each bug's scenario with its switch on. A bug must be found under "
                  "every preset where the catalogue says it can occur; under the others the "
                  "exploration must be complete and clean, which shows the stated reason."))
    by_bug: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {}
    for tag, kw in p.bugs:
        out = results.get(tag, {"error": "not run"})
        preset = kw.get("preset") or (out.get("result") or {}).get("preset", "")
        by_bug.setdefault(kw["bug"], {})[preset] = (tag, out)
    presets = list(p.bug_presets) or sorted({pre for cells in by_bug.values() for pre in cells})
    rows: list[list[object]] = []
    csv_rows: list[dict[str, Any]] = []
    details: list[H.Raw] = []
    failed: list[str] = []
    found_n = expected_n = absent_ok = absent_n = 0
    for bug, cells in by_bug.items():
        row: list[object] = [bug, p.titles.get(bug, "")]
        for pre in presets:
            if pre not in cells:
                row.append("")
                continue
            _tag, out = cells[pre]
            cell, ok, why = _bug_cell(bug, pre, p, out)
            row.append(cell)
            if "error" in out:
                sec.fail(f"bug {bug} [{pre}]", out["error"])
                continue
            r = out["result"]
            v = r.get("violation") or {}
            must = p.cannot.get((bug, pre)) is None
            expected_n += must
            found_n += bool(v) and must
            absent_n += not must
            absent_ok += ok and not must
            if not ok:
                failed.append(f"{bug} [{pre}]")
            csv_rows.append({
                "bug": bug, "preset": pre, "scenario": r["scenario"],
                "expected": "found" if must else "not found", "found": bool(v), "ok": ok,
                "executions": r["executions"], "pruned": r["pruned"], "complete": r["complete"],
                "preemptions": r["preemptions"] if v else "",
                "steps": len(r["schedule"]) if v else "",
                "minimise_executions": r.get("minimise_executions", "") if v else "",
                "minimise_cut": _minimise_cut(r) if v else "",
                "violation_kind": v.get("kind", ""), "violation_message": v.get("message", ""),
                "reason_not_found": why, "traces": " ".join(out["traces"]),
                "title": p.titles.get(bug, "")})
            if v:
                details.append(H.Raw(f"<details><summary>{H.esc(bug)} [{H.esc(pre)}]: "
                                     f"minimised counterexample ({H.esc(v.get('kind', ''))})"
                                     f"</summary>{H.pre(r['counterexample']).html}</details>"))
        rows.append(row)
    sec.add(H.table(["bug", "what", *presets], rows, numeric=False))
    reasons = sorted({w for w in p.cannot.values() if w})
    if reasons:
        sec.add(H.tag("p", H.join(["Why a bug cannot occur under a preset: "]
                                  + [H.join([H.Raw("<br>"), "• ", w]) for w in reasons]),
                      "muted"))
    for d in details:
        sec.add(d)
    sec.csv["bugs.csv"] = _csv(BUG_COLUMNS, csv_rows)
    sec.add(H.link("bugs.csv", "CSV"))
    sec.summary.append(f"bug catalogue ({len(by_bug)} bugs × {len(presets)} presets): found "
                       f"{found_n} of {expected_n} where it can occur; absent (complete) "
                       f"{absent_ok} of {absent_n} where it cannot")
    if failed:
        sec.fail("bug catalogue", "the claim does not hold for " + ", ".join(failed)
                 + " (a bug not found where it can occur, found where the catalogue says it "
                 "cannot, or a run cut by its budget)")


def _render_misuse(sec: Section, p: Plan, results: dict[str, dict[str, Any]]) -> None:
    sec.add(H.tag("h3", "Misuse: what must be reported"))
    if not p.misuse:
        sec.add(H.tag("p", "No misuse scenarios.", "muted"))
        return
    by_sc: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for tag, kw in p.misuse:
        by_sc.setdefault(kw["scenario"], []).append((kw["preset"], results.get(
            tag, {"error": "not run"})))
    rows: list[list[object]] = []
    classes: list[str | None] = []
    csv_rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for name, cells in by_sc.items():
        parts: list[H.Raw] = []
        all_ok = True
        for pre, out in cells:
            kind, why = p.expect.get((name, pre), (None, ""))
            want = kind or f"no violation ({why})"
            if "error" in out:
                sec.fail(f"misuse {name} [{pre}]", out["error"])
                all_ok = False
                continue
            r = out["result"]
            v = r.get("violation") or {}
            got = v.get("kind")
            ok = got == kind and (kind is not None or r["complete"])
            all_ok &= ok
            if not ok:
                failed.append(f"{name} [{pre}]")
            mark = "✔" if ok else "✘"
            parts.append(H.tag("div", f"{pre}: {mark} expected {want}; got "
                               f"{got or ('nothing, complete' if r['complete'] else 'nothing, incomplete')}",
                               "good" if ok else "bad"))
            csv_rows.append({"scenario": name, "preset": pre, "expected": kind or "none",
                             "got": got or "none", "ok": ok, "executions": r["executions"],
                             "pruned": r["pruned"], "complete": r["complete"],
                             "violation_message": v.get("message", ""),
                             "traces": " ".join(out["traces"])})
        rows.append([name, p.docs.get(name, ""), H.join(parts)])
        classes.append("good" if all_ok else "bad")
    sec.add(H.table(["scenario", "what it does", "per preset: expected and got"], rows, classes,
                    numeric=False))
    sec.csv["misuse.csv"] = _csv(MISUSE_COLUMNS, csv_rows)
    sec.add(H.link("misuse.csv", "CSV"))
    good = sum(1 for r in csv_rows if r["ok"])
    sec.summary.append(f"misuse scenarios: {good} of {len(csv_rows)} runs report what they "
                       "must")
    if failed:
        sec.fail("misuse scenarios", "the expected report was not produced for "
                 + ", ".join(failed))


def _render_limits(sec: Section) -> None:
    sec.add(H.tag("h3", "What the model leaves out, and its two assumptions"))
    sec.add(H.tag("ul", H.join(H.tag("li", x) for x in LEAVES_OUT)))
    sec.add(H.tag("p", "Where upstream is unknown, the model assumes:"))
    sec.add(H.tag("ol", H.join(H.tag("li", x) for x in ASSUMPTIONS)))
