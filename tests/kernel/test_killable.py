"""Killable waits end on a fatal signal: three scenarios in which the lock
holder stays stuck until the waiting thread has exited (as an OOM victim's
lock holders can), so only a killable wait lets the victim go.  Each meets a
one-line regression that makes its wait uninterruptible: the checker then
reports every thread blocked.  (Found missing by the mutation campaign:
``mmap_lock:bool`` of the two ``killable=True`` and ``mmap_lock:cmp`` of the
TASK_KILLABLE test in ``__vma_start_exclude_readers()`` survived it.)"""

from __future__ import annotations

import pytest
from tests.kernel.test_oracles import PRESETS, _edited, _explore, _patch

import pervma.kernel.mmap as mmap_mod
import pervma.kernel.mmap_lock as mmap_lock
from pervma.check.scenario import get_scenario

SCENARIOS = ("killed-munmap-vs-stuck-mmap-reader", "killed-fault-vs-stuck-mmap-writer",
             "killed-fork-vs-stuck-vma-reader")


@pytest.mark.parametrize("name", SCENARIOS)
@pytest.mark.parametrize("preset", PRESETS)
def test_the_killed_waiter_always_gets_out(name: str, preset: str) -> None:
    kind, message, complete = _explore(get_scenario(name), preset)
    assert (kind, message, complete) == (None, "", True)


# (the function, its line, the line made uninterruptible, the scenario, the wait
# the victim is left in, the holder's thread)
REGRESSIONS = [
    ("mmap_write_lock_killable", "down_write(killable=True)", "down_write(killable=False)",
     "killed-munmap-vs-stuck-mmap-reader", "munmap waits in down_write(mmap_lock) wait", "reader"),
    ("mmap_read_lock_killable", "down_read(killable=True)", "down_read(killable=False)",
     "killed-fault-vs-stuck-mmap-writer", "fault waits in down_read(mmap_lock) wait", "writer"),
    ("__vma_start_exclude_readers", "ves.state == TASK_KILLABLE", "False",
     "killed-fork-vs-stuck-vma-reader",
     "fork waits in __vma_start_exclude_readers: wait for readers: sleep", "reader"),
]


@pytest.mark.parametrize(("func", "old", "new", "scenario", "victim", "holder"), REGRESSIONS,
                         ids=[r[0] for r in REGRESSIONS])
def test_an_uninterruptible_wait_deadlocks_with_its_stuck_holder(
        monkeypatch: pytest.MonkeyPatch, func: str, old: str, new: str, scenario: str,
        victim: str, holder: str) -> None:
    fn = getattr(mmap_lock, func)
    bad = _edited(fn, old, new)
    # munmap reaches mmap_write_lock_killable() through mmap.py's import of it
    _patch(monkeypatch, fn, bad, mmap_lock, *([mmap_mod] if func == "mmap_write_lock_killable" else []))
    kind, message, _ = _explore(get_scenario(scenario))
    assert kind == "deadlock"
    assert message == (f"every thread is blocked: {victim}, {holder} waits in stuck holder: "
                       "until the victim exits")
