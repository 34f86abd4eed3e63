"""Build a scenario's world once per run, then copy it for every execution.

A search starts thousands of executions of one scenario, each from the state
the scenario's setup leaves (issue #12 measured the rebuild at 15-26% of a
stateful search: spawning processes and mapping VMAs through the model's own
syscalls, step by step, every time).  The setup is deterministic, so its
result can be built once and copied: a :class:`WorldTemplate` pickles the
world a scenario built -- before any of its threads has run -- and every
later execution unpickles a fresh copy (C speed, a few tens of microseconds
for a kernel scenario), then makes the threads' coroutines from the copy.

What is copied and what is shared:

* The world's own objects (System, processes, mm_structs, VMAs, page
  tables, slab caches, the scenario's result dicts) are copied, field by
  field, as pickle does.
* Functions with a closure (a scenario's thread bodies and checks capture
  the world they were built for) are copied with copies of their cells, so a
  copied body acts on the copied world.
* Code objects, classes, modules and their globals, functions without a
  closure, enum members, and the objects the caller names (the run-level
  scope, the config) are shared: the same object in every copy.

A world that cannot be pickled (a coroutine or an open file reachable from
it) has no template: the runner builds it from scratch every time, as before.
Copying changes nothing the search can see: a copy's state key equals that
of a fresh build (tests/check/test_template.py checks it on every scenario of
the library under every preset, and that whole searches give the same
figures with and without templates).  ``PERVMA_NO_TEMPLATE=1`` in the
environment turns templates off.
"""

from __future__ import annotations

import enum
import io
import os
import pickle
import struct
import sys
import types
from collections.abc import Iterable
from typing import Any

_SHARED_TYPES = (types.CodeType, types.ModuleType, type, types.MethodDescriptorType,
                 types.WrapperDescriptorType, enum.Enum)

try:  # copies of suspended coroutines (CPython 3.11): see _frames.c
    from pervma.sched import _frames
except ImportError:  # pragma: no cover - another Python, or no compiler
    _frames = None  # type: ignore[assignment]


class _Null:
    """What stands for an empty local or stack slot in a saved frame."""

    __slots__ = ()

    def __reduce__(self) -> str:
        return "NULL"


NULL = _Null()
_ATOMS = frozenset({int, str, bytes, float, bool, type(None), complex})
if _frames is not None:
    _frames.set_null(NULL)
FRAMES = _frames is not None


class Sharing:
    """The objects every copy shares, for one run: classes, code, functions
    without a closure (and the originals of those with one), enum members,
    C functions, and the objects named when it is made (the run-level scope,
    the config).  Pickles made with one sharing refer to these by memo index:
    the pickler's memo is filled with them before each dump and the
    unpickler's before each load, so a shared object costs one memo lookup,
    not a Python call."""

    __slots__ = ("objects", "_ids", "_pickler", "_out", "_seed", "_seeded", "_modules")

    def __init__(self, named: Iterable[Any] = ()) -> None:
        self.objects: list[Any] = []
        self._ids: dict[int, tuple[int, Any]] = {}
        self._modules = 0
        for o in named:
            self.share(o)
        self._globals()
        self._out = io.BytesIO()
        self._pickler = _Pickler(self._out, self)
        self._seed: Any = None  # the memo every load starts from (an unpickler's)
        self._seeded = -1

    def share(self, o: Any) -> int:
        """``o``'s index, registering it (it then stays alive with the sharing)."""
        got = self._ids.get(id(o))
        if got is not None:
            return got[0]
        k = len(self.objects)
        self.objects.append(o)
        self._ids[id(o)] = (k, o)
        return k

    def _globals(self) -> None:
        """Share what pervma's modules hold at module level (and one level
        into their containers): the model's static objects (a ``vm_ops``
        table, a lock class, a constant op) are globals that a copy must
        refer to, not duplicate -- code compares them by identity."""
        mods = list(sys.modules.items())
        if len(mods) == self._modules:
            return
        self._modules = len(mods)
        for name, m in mods:
            if m is None or not (name == "pervma" or name.startswith("pervma.")):
                continue
            self.share(vars(m))
            for v in list(vars(m).values()):
                if type(v) in _ATOMS:
                    continue
                self.share(v)
                if type(v) in (dict, list, tuple, set, frozenset):
                    for x in (v.values() if type(v) is dict else v):
                        if type(x) not in _ATOMS:
                            self.share(x)

    def dumps(self, obj: Any) -> tuple[bytes, int]:
        """``obj`` as bytes, and how many shared objects its loads need;
        raises one of :data:`UNCOPYABLE` when it cannot be copied."""
        self._globals()
        out, p = self._out, self._pickler
        out.seek(0)
        out.truncate()
        n = len(self.objects)  # what this dump refers to by memo index
        p.memo = self._ids  # type: ignore[assignment]
        try:
            p.dump(obj)
        finally:
            p.clear_memo()
        return out.getvalue(), n

    def loads(self, data: bytes, nshared: int) -> Any:
        """A fresh copy of what :meth:`dumps` saved."""
        if self._seeded < nshared:
            self._reseed()
        u = pickle.Unpickler(io.BytesIO(data))
        u.memo = self._seed  # copied in C; 3.11 cannot start a memo from a dict
        _loading.append(self)
        try:
            return u.load()
        finally:
            _loading.pop()


    def _reseed(self) -> None:
        """An unpickler whose memo holds every shared object at its index."""
        objs = self.objects
        parts = [b"\x80\x03"]
        for i in range(len(objs)):
            parts.append(b"J" + struct.pack("<i", i) + b"Q")  # BININT i, BINPERSID
            parts.append(b"r" + struct.pack("<I", i) + b"0")  # LONG_BINPUT i, POP
        parts.append(b"N.")
        seed = _Seed(io.BytesIO(b"".join(parts)), objs)
        seed.load()
        self._seed = seed.memo
        self._seeded = len(objs)


class _Seed(pickle.Unpickler):
    def __init__(self, f: io.BytesIO, objs: list[Any]) -> None:
        super().__init__(f)
        self._objs = objs

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102 - pickle's hook
        return self._objs[pid]


_loading: list[Sharing] = []


def _shared(k: int) -> Any:
    """A shared object met for the first time by the dump that refers to it."""
    return _loading[-1].objects[k]


#: What pickling raises for an object it cannot copy.
UNCOPYABLE = (TypeError, pickle.PicklingError, AttributeError, RecursionError, ValueError)


def enabled() -> bool:
    """Templates are on unless ``PERVMA_NO_TEMPLATE=1``."""
    return os.environ.get("PERVMA_NO_TEMPLATE", "") not in ("1", "yes", "true")


def _closure(code: types.CodeType, globs: dict[str, Any], name: str,
             defaults: tuple[Any, ...] | None, closure: tuple[types.CellType, ...],
             qualname: str, kwdefaults: dict[str, Any] | None,
             attrs: dict[str, Any] | None) -> types.FunctionType:
    """A copy of a function with a closure: its own cells (and defaults)."""
    f = types.FunctionType(code, globs, name, defaults, closure)
    f.__qualname__ = qualname
    if kwdefaults:
        f.__kwdefaults__ = kwdefaults
    if attrs:
        f.__dict__.update(attrs)
    return f


async def _finished_coro() -> None:
    return None


def _finished_gen() -> Any:
    yield None


def _finished(generator: bool) -> Any:
    """A finished coroutine (or generator) to stand for one that was."""
    g = _finished_gen() if generator else _finished_coro()
    g.close()
    return g


def _exception(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """An exception made without its ``__init__`` (its fields come after)."""
    e = cls.__new__(cls, *args)  # OSError's sets errno and strerror from them
    e.args = args
    return e


def _cell(*contents: Any) -> types.CellType:
    return types.CellType(*contents)


class _Pickler(pickle.Pickler):
    """Pickles a world (see the module docstring for what is copied)."""

    def __init__(self, out: io.BytesIO, sharing: Sharing) -> None:
        # Protocol 3: its memo writes name their index (BINPUT), so a load
        # whose memo starts with the shared objects sees the same indices.
        super().__init__(out, protocol=3)
        self._sharing = sharing

    def _shared(self, o: Any) -> Any:
        return (_shared, (self._sharing.share(o),))

    def reducer_override(self, o: Any) -> Any:  # noqa: D102 - pickle's hook
        t = type(o)
        if t is types.FunctionType:
            if o.__closure__ is None:
                return self._shared(o)
            return (_closure, (o.__code__, _Globals(o.__globals__), o.__name__, o.__defaults__,
                               o.__closure__, o.__qualname__, o.__kwdefaults__,
                               o.__dict__ or None))
        if t is _Globals:  # a module's globals: shared (met here the first time)
            return self._shared(o.d)
        if t is types.CellType:
            try:
                return (_cell, (o.cell_contents,))
            except ValueError:  # an empty cell (a name not bound yet)
                return (_cell, ())
        if t is types.CoroutineType or t is types.GeneratorType:
            if _frames is None:
                raise TypeError("cannot copy a coroutine here (no pervma.sched._frames)")
            # made empty first, its frame filled as its state: cycles through
            # its locals unpickle like any object's
            saved = _frames.save(o)
            if saved is None:  # finished: any finished coroutine will do
                return (_finished, (t is types.GeneratorType,))
            func, lasti, top, fstate, values, exc = saved
            return (_frames.new, (func,), (lasti, top, fstate, values, exc), None, None,
                    _frames.load)
        if t is types.BuiltinFunctionType:  # a C function; a bound C method is copied
            s = o.__self__
            return self._shared(o) if s is None or type(s) is types.ModuleType else NotImplemented
        if isinstance(o, _SHARED_TYPES) or o is NULL:
            return self._shared(o)
        if isinstance(o, BaseException):  # whatever its __init__ takes
            return (_exception, (t, o.args), o.__dict__ or None)
        return NotImplemented


class _Globals:
    """Marks a module's globals dict met as a function's: shared, not copied
    (once shared, the memo finds the dict itself)."""

    __slots__ = ("d",)

    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d


class WorldTemplate:
    """A built world, kept as bytes plus the objects every copy shares."""

    __slots__ = ("_data", "_nshared", "sharing", "copies")

    def __init__(self, data: bytes, nshared: int, sharing: Sharing) -> None:
        self._data = data
        self._nshared = nshared
        self.sharing = sharing
        self.copies = 0

    @classmethod
    def make(cls, world: Any, sharing: Sharing) -> WorldTemplate | None:
        """A template of ``world`` (nothing of it may have run yet), or None
        when it cannot be pickled."""
        try:
            data, n = sharing.dumps(world)
        except UNCOPYABLE:
            return None
        return cls(data, n, sharing)

    def copy(self) -> Any:
        """A fresh copy of the world."""
        self.copies += 1
        return self.sharing.loads(self._data, self._nshared)
