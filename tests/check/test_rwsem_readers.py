"""An rw_semaphore's read-side steps commute, and the checker relies on it.

``down_read``, ``down_read_trylock`` and ``up_read`` are of the shared kinds
(``OpKind.ACQUIRE_SHARED``/``RELEASE_SHARED``): the checker's dependency
counts them as reads of the lock's location, so two of them never race.
That is sound only if they reach the same state in either order and a
waiter's step, an observer (``rwsem_is_locked``) and the write side still
race them.  Here: the kinds and the state; against enumeration with no
reduction, ``tests/check/test_exhaustive.py`` (``killable-write-lock-abort``
under legacy caught a waiter's step left a read).
"""

from __future__ import annotations

from pervma.check.engine import op_access
from pervma.check.scenarios.kernel import World
from pervma.config import Config
from pervma.kernel.system import Thread
from pervma.sched import Op, OpKind
from pervma.sched.statekey import state_key


def test_read_side_steps_do_not_race_each_other_but_race_the_rest() -> None:
    loc = ("mmap_lock", 0)
    down = Op(OpKind.ACQUIRE_SHARED, loc, "down_read")
    up = Op(OpKind.RELEASE_SHARED, loc, "up_read")
    waiter = Op(OpKind.OBSERVE, loc, "down_write wait", lambda: True)
    writer = Op(OpKind.ACQUIRE, loc, "down_write")
    assert op_access(down) == [(loc, False)] and op_access(up) == [(loc, False)]
    assert not down.dependent(up) and not up.dependent(up)
    assert down.dependent(waiter) and up.dependent(writer)
    # what the cache sees is unchanged: a read-side step writes the lock word
    assert down.kind.writes and up.kind.writes and not waiter.kind.writes


def test_two_readers_reach_one_state_in_either_order() -> None:
    keys = []
    for order in ((0, 1), (1, 0)):
        w = World(Config.preset("universal"))
        ts = [w.p.thread(), w.p.thread()]
        sem = w.p.mm.mmap_lock

        async def read(t: Thread) -> None:
            await t.mm.mmap_lock.down_read()

        for i in range(2):
            w.thread(f"r{i}", ts[i], read)
        inst = w.instance()
        from pervma.sched import Executor
        ex = Executor(inst.bodies, inst.names, inst.models)
        for tid in order:
            while not ex.tasks[tid].done:
                ex.step(tid)
        assert [t.pid for t in sem.readers] == sorted(t.task.pid for t in ts)
        keys.append(state_key(ex.tasks))
    assert keys[0] == keys[1]
