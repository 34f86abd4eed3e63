"""How much work a report does: the default, ``--quick`` and an internal
``tiny`` profile (tests only).

Every check run is bounded by a number of executions, never by wall time, so
a report explores the same executions on any machine, under any load and with
any ``--jobs``.  The budgets below are the ones used, and the report prints
them.  The default budget (20000 per scenario run) is above what the largest
run needs (``vma-reuse-by-another-mm`` on ``universal``, stateful: 103
executions and 5238 pruned, since RCU grace periods and KASAN's grace period
on a freed VMA are dependencies), so every run completes; the bug runs
(without minimisation) need at most 795."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pervma.config import PRESET_NAMES, SWEEP_PRESETS

ALL_PRESETS = SWEEP_PRESETS


@dataclass(frozen=True, slots=True)
class Settings:
    name: str
    check_presets: tuple[str, ...]
    check_max_executions: int
    bug_max_executions: int
    check_seed: int
    sim_workloads: tuple[str, ...]
    sim_presets: tuple[str, ...]
    sim_tasks: tuple[int, ...]
    sim_duration_ms: float
    sim_machine: str
    sim_seed: int
    # The bug catalogue runs under every preset (all five, legacy-up included).
    bug_presets: tuple[str, ...] = PRESET_NAMES
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT = Settings(
    name="default",
    check_presets=SWEEP_PRESETS,
    check_max_executions=20000, bug_max_executions=5000, check_seed=0,
    # 40 ms windows: a private task's mmap/touch/munmap cycle of 32 MiB takes
    # ~15 ms, so shorter windows never see the munmaps that set the curve.
    sim_workloads=("shared", "private"),
    sim_presets=("legacy", "universal"),
    sim_tasks=(1, 4, 8, 16), sim_duration_ms=40.0, sim_machine="xeon16", sim_seed=0,
)

QUICK = Settings(
    name="quick",
    check_presets=("legacy", "universal"),
    check_max_executions=20000, bug_max_executions=5000, check_seed=0,
    sim_workloads=("private",),
    sim_presets=("legacy", "universal"),
    sim_tasks=(1, 16), sim_duration_ms=40.0, sim_machine="xeon16", sim_seed=0,
    notes=("--quick: the scenarios under legacy and universal only, one workload "
           "(private) at two task counts, 40 ms simulated windows",),
)

# For the test suite only (hidden --tiny): the same shape, small budgets (some
# scenario runs stop at them and are shown as incomplete).
TINY = Settings(
    name="tiny",
    check_presets=("legacy", "universal"),
    check_max_executions=40, bug_max_executions=1000, check_seed=0,
    sim_workloads=("shared",),
    sim_presets=("legacy", "universal"),
    sim_tasks=(1, 4), sim_duration_ms=0.5, sim_machine="xeon16", sim_seed=0,
    notes=("tiny: internal test profile",),
)

PROFILES = {s.name: s for s in (DEFAULT, QUICK, TINY)}


def settings_for(quick: bool = False, tiny: bool = False) -> Settings:
    return TINY if tiny else QUICK if quick else DEFAULT
