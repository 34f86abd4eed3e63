"""How much work a report does: the default, ``--quick`` and an internal
``tiny`` profile (tests only).  Check runs are bounded by executions (which
keeps them deterministic) and by a time limit as a safety net."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ALL_PRESETS = ("legacy", "universal", "universal-up", "universal-up-nopreempt")


@dataclass(frozen=True, slots=True)
class Settings:
    name: str
    check_presets: tuple[str, ...]
    check_max_executions: int
    check_time_limit: float
    bug_max_executions: int
    bug_time_limit: float
    check_seed: int
    sim_workloads: tuple[str, ...]
    sim_presets: tuple[str, ...]
    sim_tasks: tuple[int, ...]
    sim_duration_ms: float
    sim_machine: str
    sim_seed: int
    # CPU seconds all check runs may share: each run's time limit is at most
    # check_cpu_budget / number of runs (and at least 1 s), so the section's
    # wall time stays bounded however many scenarios the library grows.
    check_cpu_budget: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT = Settings(
    name="default",
    check_presets=ALL_PRESETS,
    check_max_executions=5000, check_time_limit=20.0,
    bug_max_executions=5000, bug_time_limit=30.0, check_seed=0,
    # 40 ms windows: a private task's mmap/touch/munmap cycle of 32 MiB takes
    # ~15 ms, so shorter windows never see the munmaps that set the curve.
    sim_workloads=("shared", "private"),
    sim_presets=("legacy", "universal"),
    sim_tasks=(1, 4, 8, 16), sim_duration_ms=40.0, sim_machine="xeon16", sim_seed=0,
    check_cpu_budget=300.0,
)

QUICK = Settings(
    name="quick",
    check_presets=("legacy", "universal"),
    check_max_executions=300, check_time_limit=5.0,
    bug_max_executions=1000, bug_time_limit=10.0, check_seed=0,
    sim_workloads=("private",),
    sim_presets=("legacy", "universal"),
    sim_tasks=(1, 16), sim_duration_ms=40.0, sim_machine="xeon16", sim_seed=0,
    check_cpu_budget=70.0,
    notes=("--quick: two presets for the checker, small execution budgets, one workload "
           "(private) at two task counts, 40 ms simulated windows",),
)

# For the test suite only (hidden --tiny): the same shape, minimal budgets.
TINY = Settings(
    name="tiny",
    check_presets=("legacy", "universal"),
    check_max_executions=40, check_time_limit=60.0,
    bug_max_executions=200, bug_time_limit=60.0, check_seed=0,
    sim_workloads=("shared",),
    sim_presets=("legacy", "universal"),
    sim_tasks=(1, 4), sim_duration_ms=0.5, sim_machine="xeon16", sim_seed=0,
    notes=("tiny: internal test profile",),
)

PROFILES = {s.name: s for s in (DEFAULT, QUICK, TINY)}


def settings_for(quick: bool = False, tiny: bool = False) -> Settings:
    return TINY if tiny else QUICK if quick else DEFAULT
