"""The kernel primitives a litmus process may call, as linux-kernel.def maps them
to events: marked loads and stores, fences, RCU and SRCU, spinlocks, and every
``atomic_*``/``xchg*``/``cmpxchg*`` variant with its ordering tag."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pervma.litmus.syntax import Call, LitmusError, Value

if TYPE_CHECKING:
    from pervma.litmus.events import TVal, _Thread

F = frozenset
NONE: frozenset[int] = frozenset()

_ATOMIC_RMW = re.compile(
    r"^(?:atomic_(?:long_)?)?(?P<op>add|sub|inc|dec|and|or|xor|andnot)"
    r"(?P<kind>_return|_and_test)?(?P<order>_relaxed|_acquire|_release)?$")
_ATOMIC_FETCH = re.compile(
    r"^atomic_(?:long_)?fetch_(?P<op>add|sub|inc|dec|and|or|xor|andnot)"
    r"(?P<order>_relaxed|_acquire|_release)?$")
_XCHG = re.compile(r"^(?:atomic_(?:long_)?)?(?P<cmp>cmp)?xchg(?P<order>_relaxed|_acquire|_release)?$")
_ADD_NEGATIVE = re.compile(r"^atomic_(?:long_)?add_negative(?P<order>_relaxed|_acquire|_release)?$")


def _nargs(e: Call, n: int) -> None:
    if len(e.args) != n:
        raise LitmusError(f"line {e.line}: {e.fn}() takes {n} argument"
                          f"{'s' if n != 1 else ''}, got {len(e.args)}")


def _rmw(th: _Thread, loc: str, addr: frozenset[int], tag: str,
         compute: object, line: int) -> tuple[TVal, TVal | None]:
    """A read-modify-write: the read, then (if ``compute`` returns a value) the
    write; returns the old value and the new one (None when no write happened)."""
    tags = F({tag, "RMW"})
    i0 = len(th.path.events)
    old = th.load(loc, tags, addr)
    new = compute(old)  # type: ignore[operator]
    if new is None:
        # A failed conditional RMW is a plain marked read (its ordering tag is
        # dropped as linux-kernel.bell's FailedRMW filter does).
        ev = th.path.events[i0]
        ev.tags = F({"once", "RMW"})
        return old, None
    j = th.store(loc, new, tags, addr)
    th.path.rmw.append((i0, j))
    return old, new


def call_primitive(th: _Thread, e: Call) -> TVal:
    from pervma.litmus.events import FENCES, ORDER_SUFFIX, _arith

    fn, line = e.fn, e.line
    if fn in FENCES:
        _nargs(e, 0)
        th._event("F", None, None, F({FENCES[fn]}))
        return 0, NONE
    # Marked loads and stores (lvalue forms take '*x', pointer forms take 'x').
    if fn in ("READ_ONCE", "rcu_dereference"):
        _nargs(e, 1)
        loc, deps = th.lvalue(e.args[0])
        return th.load(loc, F({"once"}), deps)
    if fn in ("WRITE_ONCE", "rcu_assign_pointer", "smp_store_mb"):
        _nargs(e, 2)
        loc, deps = th.lvalue(e.args[0])
        v = th.eval(e.args[1])
        th.store(loc, v, F({"release" if fn == "rcu_assign_pointer" else "once"}), deps)
        if fn == "smp_store_mb":
            th._event("F", None, None, F({"mb"}))
        return 0, NONE
    if fn in ("smp_load_acquire", "atomic_read_acquire", "atomic_long_read_acquire"):
        _nargs(e, 1)
        loc, deps = th.pointer(e.args[0])
        return th.load(loc, F({"acquire"}), deps)
    if fn in ("atomic_read", "atomic_long_read"):
        _nargs(e, 1)
        loc, deps = th.pointer(e.args[0])
        return th.load(loc, F({"once"}), deps)
    if fn in ("smp_store_release", "atomic_set_release", "atomic_long_set_release",
              "atomic_set", "atomic_long_set"):
        _nargs(e, 2)
        loc, deps = th.pointer(e.args[0])
        v = th.eval(e.args[1])
        th.store(loc, v, F({"once" if fn.endswith("_set") else "release"}), deps)
        return 0, NONE
    # Spinlocks (lock.cat): LKR/LKW, UL, LF, RL/RU.
    if fn == "spin_lock":
        _nargs(e, 1)
        loc, deps = th.pointer(e.args[0])
        i = th.load(loc, F({"LKR"}), deps, fixed=0)[1]
        j = th.store(loc, (1, NONE), F({"LKW"}), deps)
        th.path.rmw.append((min(i), j))
        return 0, NONE
    if fn == "spin_unlock":
        _nargs(e, 1)
        loc, deps = th.pointer(e.args[0])
        th.store(loc, (0, NONE), F({"UL"}), deps)
        return 0, NONE
    if fn == "spin_trylock":
        _nargs(e, 1)
        loc, deps = th.pointer(e.args[0])
        if th.ch.pick(2) == 0:
            i = th.load(loc, F({"LKR"}), deps, fixed=0)[1]
            j = th.store(loc, (1, NONE), F({"LKW"}), deps)
            th.path.rmw.append((min(i), j))
            return 1, i
        r = th.load(loc, F({"LF"}), deps, fixed=1)
        return 0, r[1]
    if fn == "spin_is_locked":
        _nargs(e, 1)
        loc, deps = th.pointer(e.args[0])
        if th.ch.pick(2) == 0:
            return 1, th.load(loc, F({"RL"}), deps, fixed=1)[1]
        return 0, th.load(loc, F({"RU"}), deps, fixed=0)[1]
    # SRCU: the srcu_struct is a location read by srcu-lock and written by srcu-unlock.
    if fn in ("srcu_read_lock", "srcu_down_read"):
        _nargs(e, 1)
        loc, deps = th.pointer(e.args[0])
        return th.load(loc, F({"srcu-lock"}), deps)
    if fn in ("srcu_read_unlock", "srcu_up_read"):
        _nargs(e, 2)
        loc, deps = th.pointer(e.args[0])
        th.store(loc, th.eval(e.args[1]), F({"srcu-unlock"}), deps)
        return 0, NONE
    if fn in ("synchronize_srcu", "synchronize_srcu_expedited"):
        _nargs(e, 1)
        loc, deps = th.pointer(e.args[0])
        th._event("S", loc, None, F({"sync-srcu"}), deps)
        return 0, NONE
    # Atomics.
    m = _XCHG.match(fn)
    if m:
        tag = ORDER_SUFFIX[m.group("order") or ""]
        if m.group("cmp"):
            _nargs(e, 3)
            loc, deps = th.pointer(e.args[0])
            expect = th.eval(e.args[1])
            new = th.eval(e.args[2])
            old, _ = _rmw(th, loc, deps, tag,
                          lambda o: new if o[0] == expect[0] else None, line)
            return old
        _nargs(e, 2)
        loc, deps = th.pointer(e.args[0])
        new = th.eval(e.args[1])
        old, _ = _rmw(th, loc, deps, tag, lambda o: new, line)
        return old
    m = _ATOMIC_FETCH.match(fn)
    if m:
        return _arith_rmw(th, e, m.group("op"), ORDER_SUFFIX[m.group("order") or ""],
                          _arith, fetch=True)
    m = _ATOMIC_RMW.match(fn)
    if m and fn.startswith("atomic"):
        kind = m.group("kind")
        if kind is None:
            if m.group("order"):
                raise LitmusError(f"line {line}: unknown primitive '{fn}'")
            _arith_rmw(th, e, m.group("op"), "noreturn", _arith, fetch=False)
            return 0, NONE
        if kind == "_and_test":
            if m.group("order") or m.group("op") not in ("sub", "inc", "dec"):
                raise LitmusError(f"line {line}: unknown primitive '{fn}'")
            nv, nd = _arith_rmw(th, e, m.group("op"), "mb", _arith, fetch=False)
            return int(nv == 0), nd
        return _arith_rmw(th, e, m.group("op"), ORDER_SUFFIX[m.group("order") or ""],
                          _arith, fetch=False)
    m = _ADD_NEGATIVE.match(fn)
    if m:
        av, ad = _arith_rmw(th, e, "add", ORDER_SUFFIX[m.group("order") or ""], _arith,
                            fetch=False)
        return int(isinstance(av, int) and av < 0), ad
    if fn in ("atomic_add_unless", "atomic_long_add_unless"):
        _nargs(e, 3)
        loc, deps = th.pointer(e.args[0])
        a = th.eval(e.args[1])
        u = th.eval(e.args[2])

        def add(o: TVal) -> TVal | None:
            if o[0] == u[0]:
                return None
            return _arith("+", o[0], a[0], line), o[1] | a[1]

        uold, unew = _rmw(th, loc, deps, "mb", add, line)
        return int(unew is not None), uold[1]
    raise LitmusError(f"line {line}: unsupported construct '{fn}()'")


def _arith_rmw(th: _Thread, e: Call, op: str, tag: str, arith: object,
               fetch: bool) -> TVal:
    """atomic_<op>[_return|fetch_]: ``(V, X)`` or ``(X)`` for inc/dec."""
    if op in ("inc", "dec"):
        _nargs(e, 1)
        ptr = e.args[0]
        operand: TVal = (1, NONE)
    else:
        _nargs(e, 2)
        ptr = e.args[1]
        operand = th.eval(e.args[0])
    loc, deps = th.pointer(ptr)
    sym = {"add": "+", "inc": "+", "sub": "-", "dec": "-", "and": "&", "or": "|",
           "xor": "^", "andnot": "&~"}[op]

    def compute(o: TVal) -> TVal:
        v: Value = arith(sym, o[0], operand[0], e.line)  # type: ignore[operator]
        return v, operand[1]

    old, new = _rmw(th, loc, deps, tag, compute, e.line)
    if fetch or new is None:
        return old
    return new[0], old[1]
