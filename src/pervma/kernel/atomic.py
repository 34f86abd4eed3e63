"""atomic_t, refcount_t and seqcount_t.

Each operation is one awaited step on the variable's location, so a driver
may run another CPU between any two of them.  Each step carries the memory
ordering the kernel gives the operation (``pervma.sched.order``), checked
against Linux 7.0: include/linux/atomic/atomic-instrumented.h and
Documentation/atomic_t.txt for atomic_t (value-returning RMWs fully ordered,
the rest relaxed), include/linux/refcount.h and
Documentation/core-api/refcount-vs-atomic.rst for refcount_t (no full
barriers), include/linux/seqlock.h for seqcount_t.  A call site whose C
primitive differs from the method's default passes ``order=``.  Exploration
under sequential consistency ignores the orders.
"""

from __future__ import annotations

from collections.abc import Hashable

from pervma.sched import Op, StepCache, read, rmw, violation, write
from pervma.sched.memory import store
from pervma.sched.order import Order

UINT_MAX = 0xFFFFFFFF
REFCOUNT_SATURATED = 0xC0000000


class Atomic:
    """atomic_t: a shared int whose every access is a step."""

    __slots__ = ("_rmw_steps", "counter", "loc")

    def __init__(self, loc: Hashable, value: int = 0) -> None:
        self.loc = loc
        self.counter = value
        self._rmw_steps = StepCache()

    def _rmw(self, label: str, order: Order) -> Op:
        """``rmw(self.loc, label, order)``, made once per label: a
        read-modify-write of this variable at one call site is the same step
        (with the same ordering) every time."""
        ops = self._rmw_steps.ops
        op = ops.get(label)
        if op is None:
            op = ops[label] = rmw(self.loc, label, order)
        return op

    async def read(self, label: str = "atomic_read", order: Order = Order.ONCE) -> int:
        """atomic_read(): READ_ONCE() of the counter."""
        await read(self.loc, label, order)
        return self.counter

    async def set(self, value: int, label: str = "atomic_set", order: Order = Order.ONCE) -> None:
        """atomic_set(): WRITE_ONCE() of the counter."""
        await write(self.loc, label, order)
        self.counter = value

    async def add_return(self, delta: int, label: str = "atomic_add_return",
                         order: Order = Order.FULL) -> int:
        """atomic_add_return() and the value-returning forms built on it
        (atomic_dec_and_test()): fully ordered.  atomic_inc()/atomic_dec(),
        which return nothing, are relaxed: their call sites say so."""
        await self._rmw(label, order)
        self.counter += delta
        return self.counter

    async def add_unless(self, delta: int, unless: int, label: str = "atomic_add_unless",
                         order: Order = Order.FULL) -> bool:
        """atomic_add_unless() (atomic_inc_not_zero() with 1, 0): one step,
        fully ordered when it adds (atomic_t.txt: a failed conditional RMW
        is unordered)."""
        await self._rmw(label, order)
        if self.counter == unless:
            return False
        self.counter += delta
        return True

    async def cmpxchg(self, old: int, new: int, label: str = "atomic_cmpxchg",
                      order: Order = Order.FULL) -> int:
        """atomic_cmpxchg(): fully ordered when it succeeds."""
        await self._rmw(label, order)
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
        """``__refcount_inc_not_zero_limited_acquire`` (include/linux/refcount.h,
        7.0): increment unless the count is 0 or the result would exceed
        ``limit``; returns (ok, old).  An atomic_try_cmpxchg_acquire() loop:
        ACQUIRE on success (refcount-vs-atomic.rst, "increment-based RMW ops
        with acquire ordering").  ``allow_zero`` weakens it to a plain
        bounded increment."""
        await self._rmw(label, Order.ACQUIRE)
        old = self.counter
        if (old == 0 and not allow_zero) or old + 1 > limit:
            return False, old
        self.counter = old + 1
        return True, old

    async def add_not_zero(self, delta: int, label: str) -> tuple[bool, int]:
        """``__refcount_add_not_zero`` (7.0): add unless 0; returns (ok, old).
        atomic_try_cmpxchg_relaxed(): no barrier, only a control dependency
        on success orders later stores (refcount-vs-atomic.rst)."""
        await self._rmw(label, Order.CTRL)
        old = self.counter
        if old == 0:
            return False, old
        self.counter = old + delta
        self._check(label)
        return True, old

    async def sub_return(self, delta: int, label: str,
                         order: Order = Order.RELEASE_ACQUIRE) -> int:
        """``__refcount_sub_and_test`` returning the new value (0 = reached
        zero): atomic_fetch_sub_release(), then smp_acquire__after_ctrl_dep()
        when it reached zero: RELEASE, plus ACQUIRE on success
        (refcount-vs-atomic.rst).  ``order`` is for an atomic_t the model
        keeps as a refcount (mmdrop()'s atomic_dec_and_test(): FULL)."""
        await self._rmw(label, order)
        self.counter -= delta
        self._check(label)
        return self.counter

    async def dec_and_test(self, label: str, order: Order = Order.RELEASE_ACQUIRE) -> bool:
        """``refcount_dec_and_test``: as :meth:`sub_return`."""
        return await self.sub_return(1, label, order) == 0

    async def set_release(self, value: int, label: str) -> None:
        """``refcount_set_release`` (7.0): atomic_set_release(), RELEASE."""
        await write(self.loc, label, Order.RELEASE)
        self.counter = value


class SeqCount:
    """seqcount_t as mm_lock_seq uses it: odd while a write section is open.

    Orderings of include/linux/seqlock.h (7.0): the write side increments
    the sequence (plain C inside a KCSAN atomic region, treated as marked)
    with smp_wmb() after it at begin and before it at end; a reader's
    snapshot (raw_read_seqcount(), raw_seqcount_try_begin()) is
    smp_load_acquire() of the sequence (__seqprop_sequence()), and
    read_seqcount_retry() is smp_rmb() then READ_ONCE().
    """

    __slots__ = ("loc", "sequence")

    def __init__(self, loc: Hashable) -> None:
        self.loc = loc
        self.sequence = 0

    async def write_begin(self, label: str = "raw_write_seqcount_begin") -> None:
        """do_raw_write_seqcount_begin(): ``sequence++; smp_wmb();``."""
        await store(write(self.loc, label, Order.ONCE_WMB), seqcount_sequence, self)
        self.sequence = (self.sequence + 1) & UINT_MAX

    async def write_end(self, label: str = "raw_write_seqcount_end",
                        order: Order = Order.WMB_ONCE) -> None:
        """do_raw_write_seqcount_end(): ``smp_wmb(); sequence++;``: the
        write-side "release" readers' acquire snapshot pairs with.  ``order``
        is for a historical caller that bumped the sequence with WRITE_ONCE()."""
        await store(write(self.loc, label, order), seqcount_sequence, self)
        self.sequence = (self.sequence + 1) & UINT_MAX

    async def raw_read(self, label: str = "raw_read_seqcount") -> int:
        """raw_read_seqcount(): an acquire load of the sequence."""
        await read(self.loc, label, Order.ACQUIRE)
        return self.sequence

    async def try_begin(self, label: str = "raw_seqcount_try_begin") -> tuple[bool, int]:
        """raw_seqcount_try_begin(): raw_read_seqcount(), ACQUIRE."""
        await read(self.loc, label, Order.ACQUIRE)
        s = self.sequence
        return (s & 1) == 0, s

    async def retry(self, start: int, label: str = "read_seqcount_retry") -> bool:
        """read_seqcount_retry(): ``smp_rmb(); READ_ONCE(sequence)``."""
        await read(self.loc, label, Order.RMB_ONCE)
        return self.sequence != start


def seqcount_sequence(s: SeqCount) -> int:
    """The sequence, as the memory layer reads it back (``sched.memory``)."""
    return s.sequence
