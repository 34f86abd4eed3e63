"""Where tasks run: wake-up placement and load balancing (sim/balance.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pervma.sched import work
from pervma.sim.balance import MIGRATION_COST_NS, NEWIDLE_LB_COST_NS, Balancer
from pervma.sim.driver import TimedDriver, make_driver

from .toy import io_op, machine


def _two_cpus(**changes: Any) -> Any:
    return machine(cpus=2, sockets=1, threads_per_core=1, trap_ns=50_000.0,
                   context_switch_ns=1_000.0, timeslice_ns=1_500_000.0, **changes)


def _hogs(n: int, counts: list[int]) -> list[Any]:
    async def hog(i: int) -> None:
        while True:
            await work("trap", "hog")
            counts[i] += 1
    return [hog(i) for i in range(n)]


def _drv(bodies: list[Any], m: Any, placement: list[int] | None = None, pinned: bool = False,
         seed: int = 0) -> TimedDriver:
    return make_driver(bodies, [f"T{i}" for i in range(len(bodies))], [None] * len(bodies),
                       m, True, True, placement=placement, seed=seed, pinned=pinned)


def test_three_cpu_bound_tasks_on_two_cpus_share_them_by_migrating() -> None:
    # placed once, tasks 0 and 2 share CPU 0 and task 1 has CPU 1 to itself;
    # the periodic balance moves a queued task every second attempt, so over
    # two seconds each task gets about 2/3 of a CPU
    counts = [0, 0, 0]
    d = _drv(_hogs(3, counts), _two_cpus())
    d.run(2e9)
    per_cpu = sum(counts) / 2
    assert d.balance.migrations >= 10
    assert all(0.55 < c / per_cpu < 0.78 for c in counts), counts
    pinned = [0, 0, 0]
    p = _drv(_hogs(3, pinned), _two_cpus(), pinned=True)
    p.run(2e9)
    assert p.balance.migrations == 0
    assert pinned[1] / (sum(pinned) / 2) > 0.97
    assert pinned[0] == pytest.approx(pinned[2], rel=0.05)


def test_a_busy_cpu_pulls_a_task_only_when_the_imbalance_allows_and_it_is_cache_cold() -> None:
    # CPU 1 runs one task, CPU 0 runs one and queues another: an imbalance of
    # half a task, which a whole task's load fits only after one failed
    # attempt (nr_balance_failed halves it); a task that stopped running less
    # than sysctl_sched_migration_cost ago is cache-hot, and is pulled only
    # after more than cache_nice_tries (1) failures
    d = _drv(_hogs(3, [0, 0, 0]), _two_cpus())
    b = d.balance
    assert list(d.rq[0]) == [2] and d.cpu_task[1] == 1
    t = 10e6
    b.ran_at[2] = t - MIGRATION_COST_NS / 5  # hot
    assert not b._pull(1, t, False) and b.failed[1] == 1  # a whole task > half a task
    assert not b._pull(1, t, False) and b.failed[1] == 2  # fits now, but hot
    assert b._pull(1, t, False) and b.failed[1] == 0  # more than cache_nice_tries: moves
    assert d.task_cpu[2] == 1 and list(d.rq[1]) == [2] and not d.rq[0]
    # the same with a cold task: the second attempt moves it
    d = _drv(_hogs(3, [0, 0, 0]), _two_cpus())
    b = d.balance
    assert not b._pull(1, t, False)
    assert b._pull(1, t, False) and d.task_cpu[2] == 1
    # the CPU with two tasks finds nothing to pull: balanced
    d = _drv(_hogs(3, [0, 0, 0]), _two_cpus())
    assert not d.balance._pull(0, t, False) and d.balance.failed[0] == 0


def _woken_after_io(pinned: bool) -> tuple[float, int, float]:
    """Task 1 sleeps on I/O while task 2, queued behind it on CPU 1, runs
    there; task 0 leaves CPU 0 early.  When, and on which CPU, task 1 runs
    after its I/O; and when the I/O ended."""
    m = _two_cpus(io_ns=500_000.0, wakeup_ns=20_000.0, wakeup_ipi_ns=0.0)
    got: dict[str, Any] = {}
    d: TimedDriver | None = None

    async def short() -> None:  # done after task 1 went to sleep: nothing left to pull
        for _ in range(3):
            await work("trap", "short")

    async def sleeper() -> None:
        await io_op()
        got["io_end"] = d.now  # type: ignore[union-attr]
        await work("trap", "after")
        got["ran"] = d.now  # type: ignore[union-attr]
        got["cpu"] = d.task_cpu[1]  # type: ignore[union-attr]

    async def hog() -> None:
        while True:
            await work("trap", "hog")

    d = _drv([short(), sleeper(), hog()], m, placement=[0, 1, 1], pinned=pinned)
    d.run(20e6)
    return got["ran"], got["cpu"], got["io_end"]


def test_a_woken_task_whose_cpu_is_busy_runs_on_an_idle_one() -> None:
    # select_idle_sibling(): the previous CPU runs the hog, CPU 0 is idle,
    # so the wake-up lands there after wakeup_ns and one 50 us step; pinned,
    # it waits on CPU 1 for the hog's 1.5 ms slice
    ran, cpu, _ = _woken_after_io(False)
    assert cpu == 0
    assert ran <= 500_000.0 + 20_000.0 + 50_000.0 + 2 * 50_000.0
    ran_p, cpu_p, _ = _woken_after_io(True)
    assert cpu_p == 1
    assert ran_p >= 1_500_000.0


def test_avg_idle_follows_update_avg_and_gates_newidle_balance() -> None:
    # rq->avg_idle starts at twice sysctl_sched_migration_cost (1 ms); each
    # idle period's length enters with weight 1/8; a CPU whose avg_idle is
    # below the cost of a newidle balance does not pull when it goes idle
    d = _drv(_hogs(3, [0, 0, 0]), _two_cpus())
    b: Balancer = d.balance
    want = 2 * MIGRATION_COST_NS
    t = 0.0
    periods = 0
    while b.avg_idle[1] >= NEWIDLE_LB_COST_NS:
        b.idle_stamp[1] = t
        b.busy_again(1, t + 1_000.0)  # 1 us idle gaps
        want += (1_000.0 - want) / 8
        t += 20_000.0
        periods += 1
        assert b.avg_idle[1] == pytest.approx(want)
    # 1 us + 999 us * (7/8)^n < 5 us from n = 42 on
    assert periods == 42
    d.cpu_task[1] = -1  # CPU 1 goes idle while CPU 0 queues task 2 (cold)
    b.went_idle(1, 5e6)
    assert d.task_cpu[2] == 0 and b.idle_stamp[1] == 5e6
    b.avg_idle[1] = NEWIDLE_LB_COST_NS
    b.idle_stamp[1] = -1.0
    b.went_idle(1, 6e6)
    assert d.task_cpu[2] == 1 and d.cpu_task[1] == 2 and not d.rq[0]


def test_one_cpu_and_pinned_tasks_never_move() -> None:
    counts = [0, 0]
    d = make_driver(_hogs(2, counts), ["a", "b"], [None, None], _two_cpus(), False, True)
    d.run(5e7)
    assert not d.balance.on and d.balance.migrations == 0
    assert min(counts) > 0
