"""Toy programs written directly with ``sched`` primitives.

They are the checker's own oracles (DPOR execution counts, a racy counter
with an assertion, a lock-order deadlock) and run without the kernel model.
Tagged ``toy``: ``pervma check --all`` skips them, ``pervma check toy-racy``
runs one.
"""

from __future__ import annotations

from collections.abc import Callable

from pervma import sched
from pervma.check.scenario import Instance, Scenario, register
from pervma.config import Config


class ToyMemory:
    """Shared words and sleeping locks for toy threads."""

    def __init__(self) -> None:
        self.words: dict[str, int] = {}
        self.owner: dict[str, str | None] = {}

    async def load(self, name: str) -> int:
        await sched.read(("word", name), f"load {name}")
        return self.words.get(name, 0)

    async def store(self, name: str, value: int) -> None:
        await sched.write(("word", name), f"store {name}={value}")
        self.words[name] = value

    async def lock(self, name: str) -> None:
        await sched.acquire(("lock", name), f"lock {name}",
                            enabled=lambda: self.owner.get(name) is None)
        self.owner[name] = sched.current().name

    async def unlock(self, name: str) -> None:
        await sched.release(("lock", name), f"unlock {name}")
        self.owner[name] = None

    def snapshot(self) -> str:
        held = [f"{k}:{v}" for k, v in sorted(self.owner.items()) if v]
        words = [f"{k}={v}" for k, v in sorted(self.words.items())]
        return " ".join(words + (["held " + ",".join(held)] if held else []))


def writers(n: int) -> Callable[[Config], Instance]:
    """``n`` threads, each writing its own word: one trace."""

    def build(cfg: Config) -> Instance:
        mem = ToyMemory()

        def body(i: int):
            async def run() -> None:
                await mem.store(f"x{i}", 1)
                await mem.store(f"x{i}", 2)
            return run()

        return Instance([body(i) for i in range(n)], [f"W{i}" for i in range(n)],
                        snapshot=mem.snapshot)

    return build


def readers(n: int) -> Callable[[Config], Instance]:
    """One writer and ``n`` readers of one word: 2**n traces."""

    def build(cfg: Config) -> Instance:
        mem = ToyMemory()

        async def writer() -> None:
            await mem.store("x", 1)

        async def reader() -> None:
            await mem.load("x")

        return Instance([writer()] + [reader() for _ in range(n)],
                        ["W"] + [f"R{i}" for i in range(n)], snapshot=mem.snapshot)

    return build


def racy_counter(cfg: Config) -> Instance:
    """Two threads increment a counter with load+store; the final value must be 2."""
    mem = ToyMemory()

    async def inc() -> None:
        v = await mem.load("count")
        await mem.store("count", v + 1)

    def finish() -> None:
        if mem.words.get("count") != 2:
            sched.violation("assertion", f"count == {mem.words.get('count')}, expected 2 "
                            "(lost update)")

    return Instance([inc(), inc()], ["A", "B"], snapshot=mem.snapshot, finish=finish)


def locked_counter(cfg: Config) -> Instance:
    """The same counter under a sleeping lock: clean."""
    mem = ToyMemory()

    async def inc() -> None:
        await mem.lock("m")
        v = await mem.load("count")
        await mem.store("count", v + 1)
        await mem.unlock("m")

    def finish() -> None:
        if mem.words.get("count") != 3:
            sched.violation("assertion", f"count == {mem.words.get('count')}, expected 3")

    return Instance([inc(), inc(), inc()], ["A", "B", "C"], snapshot=mem.snapshot, finish=finish)


def lock_order(cfg: Config) -> Instance:
    """ABBA lock order: a deadlock exists."""
    mem = ToyMemory()

    def body(first: str, second: str):
        async def run() -> None:
            await mem.lock(first)
            await mem.lock(second)
            await mem.store("x", 1)
            await mem.unlock(second)
            await mem.unlock(first)
        return run()

    return Instance([body("a", "b"), body("b", "a")], ["A", "B"], snapshot=mem.snapshot)


def spinner(cfg: Config) -> Instance:
    """A thread spins until a flag is set: the livelock bound cuts unfair schedules."""
    mem = ToyMemory()

    async def spin() -> None:
        while await mem.load("flag") == 0:
            pass

    async def setter() -> None:
        await mem.store("flag", 1)

    return Instance([spin(), setter()], ["S", "T"], snapshot=mem.snapshot)


def stuck_spinner(cfg: Config) -> Instance:
    """S spins on a flag while holding the lock T needs to set it: when S
    takes the lock first it loops forever (a livelock: the stateful search
    finds the cycle no other thread can break, the stateless one the
    livelock bound)."""
    mem = ToyMemory()

    async def spin() -> None:
        await mem.lock("l")
        while await mem.load("flag") == 0:
            pass
        await mem.unlock("l")

    async def setter() -> None:
        await mem.lock("l")
        await mem.store("flag", 1)
        await mem.unlock("l")

    return Instance([spin(), setter()], ["S", "T"], snapshot=mem.snapshot)


def preempt_counter(cfg: Config) -> Instance:
    """Load+store inside a preempt-disabled region: racy on SMP, clean on one CPU."""
    mem = ToyMemory()

    async def inc() -> None:
        sched.preempt_disable()
        v = await mem.load("count")
        await mem.store("count", v + 1)
        sched.preempt_enable()
        await mem.store("done", 1)

    def finish() -> None:
        if mem.words.get("count") != 2:
            sched.violation("assertion", f"count == {mem.words.get('count')}, expected 2")

    return Instance([inc(), inc()], ["A", "B"], snapshot=mem.snapshot, finish=finish)


_T = ("toy",)
register(Scenario("toy-writers", "3 independent writers (DPOR oracle: 1 execution)",
                  writers(3), tags=_T))
register(Scenario("toy-readers", "1 writer and 3 readers of one word (DPOR oracle: 8)",
                  readers(3), tags=_T))
register(Scenario("toy-racy", "lost update: two unlocked increments", racy_counter, tags=_T))
register(Scenario("toy-locked", "three increments under a lock: clean", locked_counter, tags=_T))
register(Scenario("toy-abba", "ABBA lock order: deadlock", lock_order, tags=_T))
register(Scenario("toy-spin", "spin loop on a flag: livelock bound", spinner, tags=_T,
                  max_steps=50))
register(Scenario("toy-livelock", "spin on a flag holding the lock its setter needs: livelock", stuck_spinner,
                  tags=_T, max_steps=50))
register(Scenario("toy-preempt", "increment with preemption disabled", preempt_counter, tags=_T))
