"""atomic_t, refcount_t and seqcount_t.

Each operation is one awaited step on the variable's location, so a driver
may run another CPU between any two of them.  Orderings (acquire/release)
are not modelled separately: exploration is sequentially consistent.
"""

from __future__ import annotations

from collections.abc import Hashable

from pervma.sched import Op, read, rmw, violation, write

UINT_MAX = 0xFFFFFFFF
REFCOUNT_SATURATED = 0xC0000000


class Atomic:
    """atomic_t: a shared int whose every access is a step."""

    __slots__ = ("_rmw_steps", "counter", "loc")

    def __init__(self, loc: Hashable, value: int = 0) -> None:
        self.loc = loc
        self.counter = value
        self._rmw_steps: dict[str, Op] = {}

    def _rmw(self, label: str) -> Op:
        """``rmw(self.loc, label)``, made once per label: a read-modify-write
        of this variable at one call site is the same step every time."""
        op = self._rmw_steps.get(label)
        if op is None:
            op = self._rmw_steps[label] = rmw(self.loc, label)
        return op

    async def read(self, label: str = "atomic_read") -> int:
        await read(self.loc, label)
        return self.counter

    async def set(self, value: int, label: str = "atomic_set") -> None:
        await write(self.loc, label)
        self.counter = value

    async def add_return(self, delta: int, label: str = "atomic_add_return") -> int:
        await self._rmw(label)
        self.counter += delta
        return self.counter

    async def add_unless(self, delta: int, unless: int, label: str = "atomic_add_unless") -> bool:
        """atomic_add_unless() (atomic_inc_not_zero() with 1, 0): one step."""
        await self._rmw(label)
        if self.counter == unless:
            return False
        self.counter += delta
        return True

    async def cmpxchg(self, old: int, new: int, label: str = "atomic_cmpxchg") -> int:
        await self._rmw(label)
        cur = self.counter
        if cur == old:
            self.counter = new
        return cur


class Refcount(Atomic):
    """refcount_t with the bounded operations the VMA lock needs.

    Overflow (past ``REFCOUNT_SATURATED``) and underflow are reported through
    the violation primitive, as refcount_t's WARNs would be.
    """

    __slots__ = ()

    def _check(self, where: str) -> None:
        if self.counter < 0:
            violation("refcount_t: underflow", f"{where} on {self.loc!r}; use-after-free")
        if self.counter >= REFCOUNT_SATURATED:
            violation("refcount_t: saturated", f"{where} on {self.loc!r}")

    async def inc_not_zero_limited(self, limit: int, label: str,
                                   allow_zero: bool = False) -> tuple[bool, int]:
        """``__refcount_inc_not_zero_limited_acquire``: increment unless the
        count is 0 or the result would exceed ``limit``; returns (ok, old).
        ``allow_zero`` weakens it to a plain bounded increment."""
        await self._rmw(label)
        old = self.counter
        if (old == 0 and not allow_zero) or old + 1 > limit:
            return False, old
        self.counter = old + 1
        return True, old

    async def add_not_zero(self, delta: int, label: str) -> tuple[bool, int]:
        """``__refcount_add_not_zero``: add unless 0; returns (ok, old)."""
        await self._rmw(label)
        old = self.counter
        if old == 0:
            return False, old
        self.counter = old + delta
        self._check(label)
        return True, old

    async def sub_return(self, delta: int, label: str) -> int:
        """``__refcount_sub_and_test`` returning the new value (0 = reached zero)."""
        await self._rmw(label)
        self.counter -= delta
        self._check(label)
        return self.counter

    async def dec_and_test(self, label: str) -> bool:
        return await self.sub_return(1, label) == 0

    async def set_release(self, value: int, label: str) -> None:
        await write(self.loc, label)
        self.counter = value


class SeqCount:
    """seqcount_t as mm_lock_seq uses it: odd while a write section is open."""

    __slots__ = ("loc", "sequence")

    def __init__(self, loc: Hashable) -> None:
        self.loc = loc
        self.sequence = 0

    async def write_begin(self, label: str = "raw_write_seqcount_begin") -> None:
        await write(self.loc, label)
        self.sequence = (self.sequence + 1) & UINT_MAX

    async def write_end(self, label: str = "raw_write_seqcount_end") -> None:
        await write(self.loc, label)
        self.sequence = (self.sequence + 1) & UINT_MAX

    async def raw_read(self, label: str = "raw_read_seqcount") -> int:
        await read(self.loc, label)
        return self.sequence

    async def try_begin(self, label: str = "raw_seqcount_try_begin") -> tuple[bool, int]:
        await read(self.loc, label)
        s = self.sequence
        return (s & 1) == 0, s

    async def retry(self, start: int, label: str = "read_seqcount_retry") -> bool:
        await read(self.loc, label)
        return self.sequence != start
