"""A model thread a driver drops unfinished is closed by the garbage collector
outside any driver: its unwinding (unlocks, rcu_read_unlock) has no task to run
as, and must not surface as an exception ignored at an arbitrary later point."""

from __future__ import annotations

import gc
import sys

from pervma import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE, PROT_READ, PROT_WRITE, Config
from pervma.check.scenarios.kernel import World
from pervma.kernel.rmap import rmap_walk_anon
from pervma.kernel.system import Thread
from pervma.sched import Executor

A = 0x10000000


def test_a_dropped_thread_inside_rcu_and_a_lock_is_closed_quietly() -> None:
    w = World(Config.preset("universal"))
    w.p.mmap(A, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    w.p.store(A, 1)
    page = w.p.mm.pgtable[A // PAGE].page
    kern = w.kern

    async def walk(t: Thread) -> object:
        return await rmap_walk_anon(kern, page)

    w.thread("walker", w.p.thread(), walk)
    inst = w.instance()
    ex = Executor(inst.bodies, inst.names, inst.models)
    ex.step(0)  # the walker is now inside rcu_read_lock()
    assert ex.tasks[0].pending is not None and not ex.tasks[0].done
    seen: list[object] = []
    old = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(u.exc_value)
    try:
        del ex, inst, w
        gc.collect()
    finally:
        sys.unraisablehook = old
    assert seen == []
