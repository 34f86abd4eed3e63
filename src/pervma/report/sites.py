"""The Call sites section: the series' users of per-VMA locks (``pervma sites``).

One row per ``@call_site`` annotation of the model (:mod:`pervma.kernel.sites`):
the kernel site, its pre-series form, its series form, the model function, and
the checker's verdict for the site's scenarios under each preset of the sweep.
The verdicts reuse the Correctness section's runs (the same scenario and
preset, the same budget); a site that runs with another architecture (arm64)
adds its own runs, tagged ``sites:<scenario>.<preset>.<arch>``.  The claim:
every site is clean under every preset where its scenarios run.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from pervma.report import html as H
from pervma.report.section import Section
from pervma.report.settings import Settings

COLUMNS = ["site", "pre_series_form", "pre_series", "series", "model", "version", "arch",
           "preset", "verdict", "scenarios", "note"]
_CLASS = {"clean": "good", "n/a": None, "incomplete": "warn"}


def plan(s: Settings) -> list[tuple[str, dict[str, Any]]]:
    """The extra check jobs: the scenarios of sites that set an architecture."""
    try:
        from pervma.check.sites import plan as site_plan
        from pervma.kernel.sites import all_sites

        sites = [x for x in all_sites() if x.arch]
        runs = site_plan(sites, s.check_presets)
    except Exception:  # noqa: BLE001 - build() reports the same failure
        return []
    return [(f"sites:{key}", dict(kw, max_executions=s.check_max_executions, seed=s.check_seed))
            for key, kw in runs]


def _results(cplan: Any, results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run results keyed as :func:`pervma.check.sites.run_key` keys them."""
    out: dict[str, dict[str, Any]] = {}
    for tag, _ in cplan.runs:  # correctness runs are tagged "<scenario>.<preset>"
        got = results.get(tag, {"error": "not run"})
        out[tag] = got.get("result") or {"error": got.get("error", "no result")}
    for tag, got in results.items():
        if tag.startswith("sites:"):
            out[tag.removeprefix("sites:")] = got.get("result") or {
                "error": got.get("error", "no result")}
    return out


def build(cplan: Any, results: dict[str, dict[str, Any]], s: Settings) -> Section:
    sec = Section("sites", "Call sites: the series' users of per-VMA locks, before and after")
    with sec.guard("call sites"):
        from pervma.check.sites import site_rows
        from pervma.kernel.sites import PRE_FORMS, all_sites

        rows = site_rows(all_sites(), s.check_presets, _results(cplan, results))
        _render(sec, rows, s, PRE_FORMS)
    if not sec.parts:
        sec.add(H.tag("p", "No call sites could be read.", "muted"))
    return sec


def _render(sec: Section, rows: list[dict[str, Any]], s: Settings,
            forms: dict[str, str]) -> None:
    sec.add(H.tag("p", "Every model function that takes a VMA lock for a caller outside the "
                  "lock code carries an annotation naming the kernel site it models, what "
                  "that caller did before the series and what the series form does; the "
                  "verdict per preset is that of the Correctness section's runs of the "
                  "site's scenarios (pervma sites prints the same table). Pre-series forms: "
                  + "; ".join(f"{k}: {v}" for k, v in forms.items()) + "."))
    table: list[list[object]] = []
    classes: list[str | None] = []
    csv_rows: list[dict[str, Any]] = []
    bad: list[str] = []
    for r in rows:
        verdicts = [r["verdicts"][p]["verdict"] for p in s.check_presets]
        arch = f" ({r['arch']})" if r["arch"] else ""
        table.append([f"{r['site']}{arch}", f"[{r['pre_series_form']}] {r['pre_series']}",
                      r["series"], r["model"], *verdicts])
        worst = next((v for v in ("violation", "error", "incomplete") if v in verdicts), "clean")
        classes.append(_CLASS.get(worst, "bad"))
        for p, v in zip(s.check_presets, verdicts, strict=True):
            csv_rows.append({"site": r["site"], "pre_series_form": r["pre_series_form"],
                             "pre_series": r["pre_series"], "series": r["series"],
                             "model": r["model"], "version": r["version"],
                             "arch": r["arch"] or "", "preset": p, "verdict": v,
                             "scenarios": " ".join(x["scenario"]
                                                   for x in r["verdicts"][p]["runs"]),
                             "note": r["note"]})
            if v not in ("clean", "n/a"):
                bad.append(f"{r['site']} [{p}]: {v}")
    sec.add(H.table(["site", "pre-series form", "series form", "model", *s.check_presets],
                    table, classes, numeric=False))
    notes = [H.tag("li", f"{r['site']}: {r['note']}") for r in rows if r["note"]]
    if notes:
        sec.add(H.tag("p", "Where the model departs from the kernel version named:"))
        sec.add(H.tag("ul", H.join(notes)))
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(csv_rows)
    sec.csv["sites.csv"] = buf.getvalue()
    sec.add(H.link("sites.csv", "CSV"))
    clean = sum(1 for c in classes if c == "good")
    sec.summary.append(f"{len(rows)} call sites: {clean} clean under every preset where their "
                       f"scenarios run, {len(rows) - clean} not")
    if bad:
        sec.errors.append(f"{len(bad)} site verdict(s) not clean: " + "; ".join(bad[:5])
                          + (" ..." if len(bad) > 5 else ""))

