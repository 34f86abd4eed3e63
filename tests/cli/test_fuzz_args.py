"""Hypothesis fuzzing of command-line arguments, in-process through
``pervma.cli.main``: whatever the arguments, no traceback, an exit code from the
command's documented set (never 70), and nothing written outside the test's
folder.  Work is bounded by counts (a small execution budget, sub-millisecond
simulated windows) so a valid argv costs little; the deadline only catches an
example that runs away."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import DONE, EXPLORING, REPLAY, assert_clean, run_main

FUZZ = settings(max_examples=60, derandomize=True, deadline=60_000,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# Values that break naive parsing: non-finite, negative, zero, huge, non-ASCII
# digits, blanks, separators, option look-alikes.
HOSTILE = st.sampled_from([
    "", " ", "nan", "NaN", "inf", "-inf", "+inf", "-1", "0", "-0", "1e308", "1e-320",
    "99999999999999999999999", "9" * 40, "0x10", "1_000", "²", "٣", "1.5", "3", "1,", ",",
    ",,", "--all", "-", "a\tb", "é", "legacy,", "universal,universal", "../x", "\u202e",
])
SMALL_INT = st.integers(min_value=1, max_value=4).map(str)


def _value(good: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Mostly a sensible value (so runs happen), sometimes a hostile one."""
    return st.one_of(good, good, good, HOSTILE)


CHECK_FLAGS = {
    "--preset": _value(st.sampled_from(["legacy", "universal", "universal-up",
                                        "legacy,universal", "univeral"])),
    "--strategy": _value(st.sampled_from(["dpor", "bounded", "random", "pct", "magic"])),
    "--max-executions": _value(st.integers(1, 30).map(str)),
    "--time": _value(st.sampled_from(["30", "1e5"])),
    "--seed": _value(st.integers(0, 2**70).map(str)),
    "--depth": _value(st.integers(-3, 30).map(str)),
    "--max-bound": _value(st.integers(-2, 3).map(str)),
    "--jobs": _value(st.sampled_from(["1", "100000", "2"])),
    "--bug": _value(st.sampled_from(["B04", "b13", "B99"])),
}
CHECK_SWITCHES = ["--no-minimise", "--json", "--force", "--list"]


@st.composite
def check_argv(draw: st.DrawFn) -> list[str]:
    argv = ["check", "--max-executions", "20"]
    argv += draw(st.lists(st.sampled_from(["toy-racy", "toy-locked", "toy-readers", "toy-abba",
                                           "toy-spin", "toy-preempt", "no-such", ""]),
                          min_size=1, max_size=2))
    for flag in draw(st.lists(st.sampled_from(sorted(CHECK_FLAGS)), max_size=3, unique=True)):
        argv += [flag, draw(CHECK_FLAGS[flag])]
    argv += draw(st.lists(st.sampled_from(CHECK_SWITCHES), max_size=2, unique=True))
    return argv


SIM_FLAGS = {
    "--tasks": _value(st.sampled_from(["1", "1,2", "2,1,2", "0", "1,,2", "100000"])),
    "--mode": _value(st.sampled_from(["threads", "processes", "both", "fibers"])),
    "--preset": _value(st.sampled_from(["universal", "legacy,universal", "universal-up"])),
    "--machine": _value(st.sampled_from(["xeon16", "e5-2690v4", "m1"])),
    "--duration-ms": _value(st.sampled_from(["0.05", "0.1", "1e-9"])),
    "--warmup-ms": _value(st.sampled_from(["0", "0.05"])),
    "--seed": _value(st.integers(0, 2**64).map(str)),
    "--jobs": _value(st.sampled_from(["1", "100000"])),
}


@st.composite
def simulate_argv(draw: st.DrawFn) -> list[str]:
    argv = ["simulate", draw(st.sampled_from(["shared", "shared", "private", "nope", ""])),
            "--tasks", "1", "--mode", "threads", "--duration-ms", "0.05", "--warmup-ms", "0.05"]
    for flag in draw(st.lists(st.sampled_from(sorted(SIM_FLAGS)), max_size=2, unique=True)):
        argv += [flag, draw(SIM_FLAGS[flag])]
    return argv


@given(check_argv())
@FUZZ
def test_check_arguments(argv: list[str]) -> None:
    r = run_main(argv)
    assert_clean(r, EXPLORING)


@given(simulate_argv(), st.sampled_from(["--csv", "--plot", "--trace", None]),
       st.sampled_from(["out.csv", "out.png", "out", "", "sub", "missing/x.svg"]))
@FUZZ
def test_simulate_arguments(argv: list[str], flag: str | None, name: str) -> None:
    d = Path(tempfile.mkdtemp(dir="."))
    (d / "sub").mkdir()
    if flag:
        argv = [*argv, flag, str(d / name) if name else ""]
    r = run_main(argv)
    assert_clean(r, DONE)
    written = sorted(p.name for p in d.iterdir())
    if r.code != 0:
        assert written == ["sub"], (argv, written)  # refused: nothing written


@given(st.lists(st.sampled_from(["--jobs", "--out", "--quick", "--force", "--btf"]),
                max_size=3, unique=True), st.lists(HOSTILE, min_size=3, max_size=3))
@FUZZ
def test_report_arguments_never_touch_a_foreign_folder(flags: list[str], vals: list[str]) -> None:
    d = Path(tempfile.mkdtemp(dir="."))
    (d / "mine.txt").write_text("mine")
    argv = ["report", "--out", str(d)]
    for flag, v in zip(flags, vals, strict=False):
        argv += [flag] if flag in ("--quick", "--force") else [flag, v]
    if "--out" in flags:  # the fuzzed --out came last and wins: point it back at d
        argv += ["--out", str(d)]
    r = run_main(argv)
    assert_clean(r, {2})
    assert sorted(p.name for p in d.iterdir()) == ["mine.txt"]


@given(st.lists(st.one_of(HOSTILE, st.sampled_from(
    ["replay", "bugs", "check", "simulate", "report", "--json", "--trace-out", "--force",
     "--help", "--version", "-h", "x.replay.json"])), min_size=1, max_size=4))
@FUZZ
def test_any_words(argv: list[str]) -> None:
    argv = [a for a in argv if a != "--all"]  # every scenario: bounded, but slow here
    if "check" in argv and not any(a in argv for a in ("--help", "-h", "--version")):
        argv = [*argv, "--max-executions", "5"]
    if "simulate" in argv or "report" in argv:
        argv = [*argv, "--jobs", "0"]  # argparse refuses before any work, whatever else
    r = run_main(argv)
    assert_clean(r, EXPLORING | REPLAY | DONE)
