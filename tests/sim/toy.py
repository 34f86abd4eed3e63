"""Toy model threads written directly with sched primitives (no kernel model)."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

from pervma.sched import Op, OpKind, acquire, block, read, release, rmw, step, work
from pervma.sim.driver import TimedDriver, make_driver
from pervma.sim.machine import Machine, load_machine


class Lock:
    """A sleeping mutex: acquire blocks until free."""

    def __init__(self, loc: Any) -> None:
        self.loc = loc
        self.owner: int | None = None

    async def lock(self, me: int) -> None:
        await acquire(self.loc, "lock", sleeps=False)
        if self.owner is not None:
            await block(self.loc, "lock wait", lambda: self.owner is None)
        self.owner = me

    async def unlock(self) -> None:
        await release(self.loc, "unlock")
        self.owner = None


async def toy_fault(refcnt: Any, page: int) -> None:
    """A fault: trap, refcount rmw on the VMA's line, page work, PTE write, put."""
    await work("trap")
    await read(("mm_lock_seq", 0), "seq check")
    await rmw(refcnt, "vma_start_read")
    await work("page_alloc")
    await work("clear_page")
    await rmw(("pte", 0, page), "set_pte")
    await rmw(("lru",), "lru_add")
    await rmw(refcnt, "vma_end_read")


def machine(**changes: Any) -> Machine:
    return replace(load_machine("xeon16"), **changes)


def driver(bodies: list[Coroutine[Any, Any, Any]], m: Machine, smp: bool = True,
           preempt: bool = True) -> TimedDriver:
    return make_driver(bodies, [f"T{i}" for i in range(len(bodies))], [None] * len(bodies),
                       m, smp, preempt)


def io_op() -> Any:
    return step(Op(OpKind.LOCAL, None, "io", None, "io", True))
