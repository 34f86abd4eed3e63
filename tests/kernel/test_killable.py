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


def test_an_uninterruptible_mmap_write_lock_deadlocks_with_its_stuck_reader(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _edited(mmap_lock.mmap_write_lock_killable, "down_write(killable=True)",
                  "down_write(killable=False)")
    _patch(monkeypatch, mmap_lock.mmap_write_lock_killable, bad, mmap_lock, mmap_mod)  # munmap's
    kind, message, _ = _explore(get_scenario("killed-munmap-vs-stuck-mmap-reader"))
    assert kind == "deadlock"
    assert message == ("every thread is blocked: munmap waits in down_write(mmap_lock) wait, "
                       "reader waits in stuck holder: until the victim exits")


def test_an_uninterruptible_fault_fallback_deadlocks_with_its_stuck_writer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _edited(mmap_lock.mmap_read_lock_killable, "down_read(killable=True)",
                  "down_read(killable=False)")
    monkeypatch.setattr(mmap_lock, "mmap_read_lock_killable", bad)
    kind, message, _ = _explore(get_scenario("killed-fault-vs-stuck-mmap-writer"))
    assert kind == "deadlock"
    assert message == ("every thread is blocked: fault waits in down_read(mmap_lock) wait, "
                       "writer waits in stuck holder: until the victim exits")


def test_a_vma_write_lock_ignoring_the_signal_deadlocks_with_its_stuck_reader(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _edited(mmap_lock.__vma_start_exclude_readers, "ves.state == TASK_KILLABLE",
                  "False")
    monkeypatch.setattr(mmap_lock, "__vma_start_exclude_readers", bad)
    kind, message, _ = _explore(get_scenario("killed-fork-vs-stuck-vma-reader"))
    assert kind == "deadlock"
    assert message == ("every thread is blocked: fork waits in __vma_start_exclude_readers: wait "
                       "for readers: sleep, reader waits in stuck holder: until the victim exits")
