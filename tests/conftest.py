"""Shared fixtures: a System per preset and helpers to build model threads."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from pervma import Config, System
from pervma.check.engine import close_executor
from pervma.config import PRESET_NAMES
from pervma.sched import Executor, has_current


@pytest.fixture(params=PRESET_NAMES)
def preset(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def kern() -> System:
    return System(Config.preset("universal"))



@pytest.fixture(autouse=True)
def _close_dropped_executors(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close, when a test ends, every executor it left with unfinished
    threads.  Left to the garbage collector, their coroutines would be closed
    at some later moment, maybe in the middle of another test's step, and
    their ``finally`` blocks (an ``rcu_read_unlock``, an unlock) would run on
    that step's task (CI failed once so).  Closed here, outside any driver,
    the model code in them stops at once (``OutsideDriver``).  Weak
    references: a search's thousands of executions are not kept alive."""
    made: weakref.WeakSet[Executor] = weakref.WeakSet()
    init = Executor.__init__

    def record(self: Executor, *args: Any, **kwargs: Any) -> None:
        made.add(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Executor, "__init__", record)
    yield
    if not has_current():
        for ex in list(made):
            close_executor(ex)
