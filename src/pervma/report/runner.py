"""Run a report: prepare the folder, build the sections (the checker and
simulator jobs optionally over ``jobs`` processes), write the files."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pervma import __version__
from pervma.report import correctness, cost, environment, outdir, performance, sites, work
from pervma.report import html as H
from pervma.report.section import Section, describe
from pervma.report.settings import Settings

Progress = Callable[[str, int, int], None]  # (section, done, total)


@dataclass
class ReportResult:
    out: Path
    sections: list[Section]
    elapsed: float
    files: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every section was produced cleanly, else 1."""
        return 0 if all(s.ok for s in self.sections) else 1


@dataclass(frozen=True, slots=True)
class Job:
    section: str
    tag: str
    fn: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]
    weight: float


def _timed(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    out["seconds"] = time.perf_counter() - t0
    return out


def run_jobs(jobs: list[Job], n: int, progress: Progress | None = None) -> dict[str, dict[str, Any]]:
    """Run jobs (heaviest first over ``n`` processes); results keyed by tag."""
    totals: dict[str, int] = {}
    for j in jobs:
        totals[j.section] = totals.get(j.section, 0) + 1
    done: dict[str, int] = dict.fromkeys(totals, 0)
    results: dict[str, dict[str, Any]] = {}

    def finished(j: Job, out: dict[str, Any]) -> None:
        results[j.tag] = out
        done[j.section] += 1
        if progress:
            progress(j.section, done[j.section], totals[j.section])

    order = sorted(jobs, key=lambda j: -j.weight)
    if n <= 1 or len(order) <= 1:
        for j in order:
            finished(j, _timed(j.fn, j.args))
        return results
    with ProcessPoolExecutor(max_workers=n) as pool:
        futs: dict[Future[dict[str, Any]], Job] = {pool.submit(_timed, j.fn, j.args): j
                                                   for j in order}
        pending = set(futs)
        while pending:
            ready, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in ready:
                try:
                    out = f.result()
                except Exception as exc:  # noqa: BLE001 - a crashed worker
                    out = {"error": f"worker process failed: {describe(exc)}"}
                finished(futs[f], out)
    return results


def build_report(out: str | Path, settings: Settings, jobs: int = 1, force: bool = False,
                 progress: Progress | None = None, btf_path: str | None = None) -> ReportResult:
    """Write a full report into ``out`` (see :mod:`pervma.report`): it is built
    in a temporary sibling and replaces ``out`` only when complete
    (:mod:`pervma.report.outdir`)."""
    with outdir.staged(out, force) as st:
        res = _build_report(st.path, settings, jobs, progress, btf_path, shown=st.dest)
    res.out = st.dest
    return res


def _build_report(d: Path, settings: Settings, jobs: int, progress: Progress | None,
                  btf_path: str | None, shown: Path) -> ReportResult:
    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    times: dict[str, float] = {}

    if progress:
        progress("cost", 0, 1)
    t = time.perf_counter()
    cost_sec = cost.build(btf_path)
    times["cost"] = cost_sec.seconds = time.perf_counter() - t
    if progress:
        progress("cost", 1, 1)

    cplan = correctness.plan(settings)
    pplan = performance.plan(settings)
    trace_dir = str(d / "traces")
    job_list = [Job("correctness", tag, work.check_job, (kw, trace_dir, tag), 1e9)
                for tag, kw in cplan.jobs + sites.plan(settings)]
    job_list += [Job("performance", tag, work.sim_job, (args,), float(args[4] * args[5]))
                 for tag, args in pplan.points]
    t = time.perf_counter()
    results = run_jobs(job_list, jobs, progress)
    wall = time.perf_counter() - t
    for key in ("correctness", "performance"):
        times[key] = sum(r.get("seconds", 0.0) for j in job_list if j.section == key
                         for r in [results.get(j.tag, {})])
    times["checker+simulator wall"] = wall
    timings = sorted(((j.section, j.tag, results.get(j.tag, {}).get("seconds", 0.0))
                      for j in job_list), key=lambda r: -r[2])
    timings += [("correctness: time to find", tag, ttf) for tag, _ in cplan.bugs
                for ttf in [(results.get(tag, {}).get("result") or {}).get("time_to_find")]
                if ttf is not None]
    corr_sec = correctness.build(cplan, results, settings)
    corr_sec.seconds = times["correctness"]
    sites_sec = sites.build(cplan, results, settings)
    perf_sec = performance.build(pplan, results, settings)
    perf_sec.seconds = times["performance"]
    if "performance.csv" in perf_sec.csv:  # the simulator's own wall time is in timings.csv
        perf_sec.csv["performance.csv"] = drop_columns(perf_sec.csv["performance.csv"],
                                                       WALL_COLUMNS)
    elapsed = time.perf_counter() - t0
    moment = [row for s in (cost_sec, corr_sec, perf_sec) for row in s.moment]
    env_sec = environment.build(settings, shown, started, elapsed, times, timings, moment)
    sections = [cost_sec, corr_sec, sites_sec, perf_sec, env_sec]
    files = write(d, sections, started, settings)
    return ReportResult(d, sections, time.perf_counter() - t0, files)


#: Columns of an engine's CSV that hold wall-clock durations: left out of the
#: report's CSV files, whose every byte must be the same on every run (the
#: durations are in timings.csv, per job).
WALL_COLUMNS = ("wall_s",)


def drop_columns(text: str, names: tuple[str, ...]) -> str:
    """CSV ``text`` without the columns ``names``."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return text
    keep = [i for i, h in enumerate(rows[0]) if h not in names]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in rows:
        w.writerow([r[i] for i in keep if i < len(r)])
    return buf.getvalue()


def render(sections: list[Section], started: str, settings: Settings) -> str:
    glance = []
    for s in sections:
        mark = H.tag("span", "✔" if s.ok else "✘", "ok" if s.ok else "bad")
        lines = H.join(H.tag("li", x) for x in s.summary)
        errs = H.tag("li", f"{len(s.errors)} error(s): see the section", "bad") if s.errors \
            else H.Raw("")
        glance.append(H.tag("li", H.join([mark, " ", H.link(f"#{s.key}", s.title),
                                          H.tag("ul", H.join([lines, errs]))])))
    body = [H.Raw(f'<section id="glance"><h2>At a glance</h2>'
                  f"{H.tag('ul', H.join(glance)).html}</section>")]
    for s in sections:
        head = H.tag("h2", s.title)
        status = (H.error_box(f"Not ok: {len(s.errors)} problem(s) (a claim that does not "
                              "hold, or a part the engine could not produce); the numbers "
                              "shown are only those the engine produced.\n"
                              + "\n".join(s.errors)) if s.errors else H.Raw(""))
        body.append(H.Raw(f'<section id="{H.esc(s.key)}">{head.html}{status.html}'
                          + "".join(p.html for p in s.parts) + "</section>"))
    nav = [("glance", "At a glance")] + [(s.key, s.title.split(":")[0]) for s in sections]
    return H.page("pervma report: per-VMA locks on this machine",
                  f"pervma {__version__}, profile {settings.name}, started {started}",
                  nav, body)


def write(d: Path, sections: list[Section], started: str, settings: Settings) -> list[str]:
    files = []
    try:
        for s in sections:
            for name, text in s.csv.items():
                (d / name).write_text(text)
                files.append(name)
        (d / "index.html").write_text(render(sections, started, settings), encoding="utf-8")
        files.insert(0, "index.html")
    except OSError as exc:
        from pervma.errors import UsageError

        raise UsageError(f"cannot write the report to {d}: {exc.strerror}") from None
    files += sorted(f"traces/{p.name}" for p in (d / "traces").glob("*.json"))
    return files
