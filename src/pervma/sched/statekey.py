"""A canonical key of the whole state of a set of model threads.

Stateful exploration (``pervma check``'s default) must recognise a state it
has already explored however it was reached.  The state of a model is
everything reachable from its threads: each thread's position (the chain of
suspended coroutine frames from its body down to the pending step: code
object and instruction offset of every frame) and locals, its ``preempt_count``
and whether it has finished, its task_struct (held locks, RCU nesting, pending
signal: lockdep's view is part of the state), and through those the kernel
objects: mm_structs, the VMA tree, VMAs, slab caches and their free lists,
page tables and page contents, pending RCU callbacks, wait queues.

The key is a walk of that object graph in a fixed order with every object
named by the order in which the walk first meets it (not by ``id()``), so two
executions that reach the same state through different schedules, with
different Python objects, give the same key.  Values are compared by value
(ints, strings, enums); functions and code by their qualified name (closures
are made when a scenario is built and never change afterwards); everything
else by its fields (``__dict__`` or ``__slots__``).  Dictionaries are walked
in insertion order and sets in a sorted order of their plain values, so a
state built in a different order may get a different key: that costs a merge,
never soundness (two different states never share a key unless the final
hash collides).  A list or dict subclass that sets
``__statekey_unordered__ = True`` is a set the model keeps in some order only
to walk it deterministically (``kernel.task.TaskSet``): it is walked as a set
too, its items (or pairs) sorted by how the walk names them.

What is left out, on purpose: a thread's step count (the livelock bound's
counter, not state), the contents of instances of a class that sets
``__statekey_hidden__ = True`` (Promela's ``hidden``: counters the model only
reports and nothing reads, ``kernel.vmstat.VmEvents``; per-site step caches,
``sched.StepCache``), the locals of a suspended frame that no path from its
suspension point reads again (:func:`_live_locals`, SPIN's dead variable
reduction), the driver's own bookkeeping (``Task.extra``) and the run-level
scope (``Task.run``: what the model learns across executions, such as
lockdep's dependency graph, which would otherwise make every state new).  The
key is a Python ``hash`` of the walk (64 bits): in one process two different
states collide with probability about n²/2⁶⁵ for n stored states (under
10⁻⁷ for a million).

Two walks compute the key.  :func:`_rows` below is the specification;
:mod:`pervma.sched._statekey` (C, built when a compiler is there) makes the
same rows in the same order and returns the same ``hash(tuple(rows))``,
10-20 times faster.  Both hand objects without a fast path to
:func:`_special`, so what counts as state is written once.
:func:`state_key` uses the C walk when it imported, unless
``PERVMA_PURE_STATEKEY=1`` is set in the environment.
"""

from __future__ import annotations

import dis
import enum
import operator
import os
import sys
import types
from collections.abc import Callable, Hashable, Iterable
from types import ModuleType
from typing import Any

from pervma.sched.task import Task

try:
    from pervma.sched import _frames
except ImportError:  # not built, or not CPython 3.11
    _frames = None  # type: ignore[assignment]

_ATOMS: frozenset[type] = frozenset({int, str, bytes, float, bool, type(None), complex, range})
_NAMED: frozenset[type] = frozenset({types.FunctionType, types.BuiltinFunctionType, type,
                                     types.CodeType, types.ModuleType,
                                     types.BuiltinMethodType, types.WrapperDescriptorType,
                                     types.MethodDescriptorType})
_CONTAINERS = (dict, list, set, frozenset)
_CORO = types.CoroutineType
_GEN = types.GeneratorType
_slots_cache: dict[type, tuple[str, ...] | None] = {}


def _slots_of(t: type) -> tuple[str, ...] | None:
    """Every ``__slots__`` name of ``t`` and its bases (None: no slots)."""
    try:
        return _slots_cache[t]
    except KeyError:
        pass
    names: list[str] = []
    found = False
    for k in reversed(t.__mro__):
        s = k.__dict__.get("__slots__")
        if s is None:
            continue
        found = True
        for n in ((s,) if isinstance(s, str) else s):
            if n not in ("__dict__", "__weakref__") and n not in names:
                names.append(n)
    out = tuple(names) if found else None
    _slots_cache[t] = out
    return out


#: Instructions after which control never falls through to the next one.
_NO_FALLTHROUGH = frozenset({"RETURN_VALUE", "RAISE_VARARGS", "RERAISE", "JUMP_FORWARD",
                             "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT"})
_liveness: dict[types.CodeType, dict[int, frozenset[str]]] = {}


def _analyse(code: types.CodeType) -> dict[int, frozenset[str]]:
    """The local variables live at each suspension point (``YIELD_VALUE``) of
    ``code``: read on some path from there, through normal and exception
    edges, before being stored or deleted.  Cell and free variables are
    always live.  CPython 3.11's bytecode only (another version: no table,
    every local is kept)."""
    if sys.version_info[:2] != (3, 11):
        return {}
    try:
        return _liveness_at_yields(code)
    except KeyError:  # a jump this pass does not understand: keep every local
        return {}


def _liveness_at_yields(code: types.CodeType) -> dict[int, frozenset[str]]:
    """:func:`_analyse`'s pass (raises KeyError on a jump to no instruction)."""
    ins = list(dis.get_instructions(code))
    at = {i.offset: n for n, i in enumerate(ins)}
    succ: list[list[int]] = [[] for _ in ins]
    for n, i in enumerate(ins):
        if i.opname not in _NO_FALLTHROUGH and n + 1 < len(ins):
            succ[n].append(n + 1)
        if i.opcode in dis.hasjrel or i.opcode in dis.hasjabs:
            succ[n].append(at[i.argval])
    for e in dis._parse_exception_table(code):  # type: ignore[attr-defined]
        for n, i in enumerate(ins):
            if e.start <= i.offset < e.end:
                succ[n].append(at[e.target])
    use = [frozenset({i.argval}) if i.opname == "LOAD_FAST" else frozenset() for i in ins]
    kill = [frozenset({i.argval}) if i.opname in ("STORE_FAST", "DELETE_FAST") else frozenset()
            for i in ins]
    live_in: list[frozenset[str]] = [frozenset()] * len(ins)
    changed = True
    while changed:
        changed = False
        for n in range(len(ins) - 1, -1, -1):
            out = frozenset().union(*(live_in[m] for m in succ[n]))
            new = use[n] | (out - kill[n])
            if new != live_in[n]:
                live_in[n], changed = new, True
    always = frozenset(code.co_cellvars) | frozenset(code.co_freevars)
    return {i.offset: always.union(*(live_in[m] for m in succ[n]))
            for n, i in enumerate(ins) if i.opname == "YIELD_VALUE"}


def _live_locals(code: types.CodeType, lasti: int) -> frozenset[str] | None:
    """The locals a frame of ``code`` suspended at ``lasti`` can still read
    (None: keep them all -- not suspended at a yield, or no analysis here).
    A dead local cannot change what the thread does next, so two states that
    differ only in one are the same state (SPIN's dead variable reduction)."""
    table = _liveness.get(code)
    if table is None:
        table = _liveness[code] = _analyse(code)
    return table.get(lasti)


_order_cache: dict[types.CodeType, dict[str, int]] = {}


def _in_order(code: types.CodeType, loc: dict[str, Any]) -> list[tuple[str, Any]]:
    """A frame's locals in the order CPython 3.11 keeps them (arguments and
    locals, then cell variables that are not arguments, then free
    variables): the C walk reads them there.  On another Python, f_locals'
    own order (the C walk reads f_locals there too)."""
    if sys.version_info[:2] != (3, 11):
        return list(loc.items())
    order = _order_cache.get(code)
    if order is None:
        names = code.co_varnames + tuple(c for c in code.co_cellvars
                                         if c not in code.co_varnames) + code.co_freevars
        order = _order_cache[code] = {n: i for i, n in enumerate(names)}
    return sorted(loc.items(), key=lambda kv: order.get(kv[0], len(order)))


def _stack_items(o: Any, sub: Any) -> tuple[Any, ...]:
    """What a suspended frame keeps on its value stack besides the object it
    awaits: a ``for`` loop's iterator (its position is state: two passes of
    a loop whose variable is dead at the await would otherwise be one state),
    the left operand of an expression the await is inside.  Python has no
    API for it; :mod:`pervma.sched._frames` reads it (CPython 3.11).  Without
    that module (not built, or another Python) the walk cannot see it."""
    if _frames is None:
        return ()
    return tuple(v for v in _frames.stack(o) if v is not sub)


def _reduced(o: Any, ref: Any) -> Hashable:
    """A built-in object without fields (a list or dict iterator held by a
    suspended frame): its pickle reduction names its contents and position."""
    t = type(o)
    if t.__module__ == "itertools":  # their reductions lose state (and are deprecated)
        raise TypeError(f"state_key: a live itertools.{t.__qualname__} in a model frame")
    try:
        red = o.__reduce_ex__(4)
    except Exception as exc:
        raise TypeError(f"state_key: cannot walk a {t.__qualname__}") from exc
    if not isinstance(red, tuple):
        raise TypeError(f"state_key: cannot walk a {t.__qualname__}")
    return (t.__qualname__, *map(ref, red))


def _getter(t: type) -> Any:
    """A callable returning the slot values of a ``t`` in one C call (None:
    the type has no slots)."""
    try:
        return _getter_cache[t]
    except KeyError:
        pass
    sl = _slots_of(t)
    g: Any = None
    if sl:
        f = operator.attrgetter(*sl)
        g = f if len(sl) > 1 else (lambda o, f=f: (f(o),))
    elif sl is not None:
        g = lambda o: ()  # noqa: E731
    _getter_cache[t] = g
    return g


_getter_cache: dict[type, Any] = {}
_kind: dict[type, int] = {}


def _classify(t: type) -> int:
    """How :func:`state_key` names a value of type ``t``: 1 a tuple (by its
    items), 2 a function, class or code object (by name) or an instance of a
    hidden class (by its class's name), 3 a bound method, 4 an enum member
    (by value), 0 an object (by its place in the walk)."""
    if t is tuple:
        k = 1
    elif t in _NAMED or issubclass(t, type):  # classes, enum classes included
        k = 2
    elif t is types.MethodType:
        k = 3
    elif issubclass(t, enum.Enum):
        k = 4
    elif getattr(t, "__statekey_hidden__", False):  # by its class name only: not state
        k = 2
    else:
        k = 0
    _kind[t] = k
    return k


def _special(o: Any, ref: Callable[[Any], Hashable]) -> list[Hashable]:
    """The rows of an object the walk has no fast path for (shared by both
    walks: the C one calls it with its own ``ref``)."""
    t = type(o)
    if getattr(t, "__statekey_unordered__", False):  # a set kept as a list or dict
        if isinstance(o, dict):
            vals: list[Any] = [(ref(k), ref(v)) for k, v in o.items()]
        else:
            vals = [ref(x) for x in o]
        try:
            vals.sort()
        except TypeError:
            vals.sort(key=repr)
        return [("u", *vals)]
    if isinstance(o, _CONTAINERS):  # not one of them exactly: a subclass
        raise TypeError(f"state_key: a {t.__qualname__} (a subclass of a built-in container: "
                        "its items are not fields; use a plain one, or set __statekey_hidden__)")
    if isinstance(o, BaseException):
        return [(t, *map(ref, o.args), *[(k, ref(v)) for k, v in vars(o).items()])]
    if isinstance(o, Task):  # the driver's view of a thread: step counts are not state
        return [("task", o.tid, o.done, o.preempt_count, ref(o.model), ref(o.coro))]
    g = _getter(t)
    d = getattr(o, "__dict__", None)
    if g is not None:
        rows: list[Hashable] = [(t, *map(ref, g(o)))]
        if d:
            rows.append(("d", *[(k, ref(v)) for k, v in d.items()]))
        return rows
    if d is None:
        return [_reduced(o, ref)]
    return [(t, *[(k, ref(v)) for k, v in d.items()])]


def _rows(tasks: Iterable[Task]) -> list[Hashable]:
    """The walk: one row per object reached (the specification the C walk,
    :mod:`pervma.sched._statekey`, reproduces row for row)."""
    ids: dict[int, tuple[str, int]] = {}
    ids_get = ids.get
    keep: list[Any] = []  # objects made during the walk (frame locals) stay alive
    todo: list[Any] = []
    out: list[Hashable] = []
    app = out.append
    atoms = _ATOMS

    def ref(o: Any) -> Hashable:
        t = type(o)
        if t in atoms:
            return o
        r = ids_get(id(o))
        if r is not None:
            return r
        k = _kind.get(t)
        if k is None:
            k = _classify(t)
        if k == 1:
            return ("=", *map(ref, o))
        if k == 2:
            return ("@", getattr(o, "__qualname__", None) or getattr(o, "__name__", t.__name__))
        if k == 3:
            return ("@m", o.__func__.__qualname__, ref(o.__self__))
        if k == 4:
            return o
        r = ("#", len(ids))
        ids[id(o)] = r
        keep.append(o)
        todo.append(o)
        return r

    for task in tasks:
        app((task.done, task.preempt_count, ref(task.model), ref(task.coro), ref(task.result)))
    pop = todo.pop
    while todo:
        o = pop()
        t = type(o)
        g = _getter_cache.get(t)
        if g is not None:
            app((t, *[v if type(v) in atoms else ref(v) for v in g(o)]))
            d = getattr(o, "__dict__", None)
            if d:
                app(("d", *[(k, v if type(v) in atoms else ref(v)) for k, v in d.items()]))
        elif t is list:
            app(("l", *[v if type(v) in atoms else ref(v) for v in o]))
        elif t is dict:
            app(("d", *[(k if type(k) in atoms else ref(k), v if type(v) in atoms else ref(v))
                        for k, v in o.items()]))
        elif t is set or t is frozenset:
            vals: list[Any] = [ref(x) for x in o]
            try:
                vals.sort()
            except TypeError:
                vals.sort(key=repr)
            app(("s", *vals))
        elif t is _CORO or t is _GEN:
            f = o.cr_frame if t is _CORO else o.gi_frame
            if f is None:
                app(("finished",))
            else:
                loc = f.f_locals
                keep.append(loc)
                sub = o.cr_await if t is _CORO else o.gi_yieldfrom
                live = _live_locals(f.f_code, f.f_lasti)
                row = (f.f_code, f.f_lasti, ref(sub),
                       *[(k, v if type(v) in atoms else ref(v)) for k, v in _in_order(f.f_code, loc)
                         if live is None or k in live])
                stk = _stack_items(o, sub)
                app((*row, ("<stack>", ref(stk))) if stk else row)
        elif t is types.CellType:
            try:
                app(("c", ref(o.cell_contents)))
            except ValueError:
                app(("c",))
        else:
            out.extend(_special(o, ref))
    return out


def _py_state_key(tasks: Iterable[Task]) -> int:
    """:func:`state_key` in Python (the reference)."""
    return hash(tuple(_rows(tasks)))


def _load_c() -> ModuleType | None:
    """The C walk, set up with this module's callbacks (None: not built, or
    ``PERVMA_PURE_STATEKEY=1`` in the environment)."""
    if os.environ.get("PERVMA_PURE_STATEKEY") == "1":
        return None
    try:
        from pervma.sched import _statekey
    except ImportError:
        return None
    _statekey._setup(_special, _classify, _slots_of, Task, _live_locals)
    return _statekey


_c = _load_c()
_key: Callable[[Iterable[Task]], int] = _py_state_key if _c is None else _c.state_key
_rows_impl: Callable[[Iterable[Task]], list[Hashable]] = _rows if _c is None else _c.rows
IMPLEMENTATION = "python" if _c is None else "c"
"""Which walk :func:`state_key` uses: ``"c"`` (the extension) or ``"python"``."""


def state_key(tasks: Iterable[Task]) -> int:
    """The canonical key of the state of ``tasks`` and all they reach."""
    return _key(tasks)


def state_rows(tasks: Iterable[Task]) -> list[Hashable]:
    """The rows :func:`state_key` hashes (to see why two keys differ)."""
    return _rows_impl(tasks)
