"""Copies of model state: a scenario's world built once, then copied.

A search starts thousands of executions of one scenario, each from the state
the scenario's setup leaves (issue #12 measured the rebuild at 15-26% of a
stateful search: spawning processes and mapping VMAs through the model's own
syscalls, step by step, every time).  The setup is deterministic, so its
result can be built once and copied: a :class:`WorldTemplate` keeps the
world a scenario built -- before any of its threads has run -- and every
later execution gets a fresh copy, then makes the threads' coroutines from
it.  The same copier makes the checker's checkpoints of whole executions
(:mod:`pervma.check.checkpoint`).

The copier is ``pervma.sched._frames.Copier`` (C, CPython 3.11): a deep copy
of the object graph with a memo, so shared and cyclic structure is copied
once.  What is copied and what is shared:

* The model's objects (System, processes, mm_structs, VMAs, page tables,
  slab caches, the scenario's result dicts), instances of plain classes,
  are copied field by field (``__slots__`` and ``__dict__``), containers
  item by item; a tuple whose items copy to themselves is shared.
* Functions with a closure (a scenario's thread bodies and checks capture
  the world they were built for) are copied with copies of their cells, so a
  copied body acts on the copied world.  Suspended coroutines are copied
  with their frames: locals, value stack and position.
* Code objects, classes, modules, functions without a closure, enum
  members, what pervma's modules hold at module level (a ``vm_ops`` table,
  a lockdep map: code compares them by identity), and the objects the
  caller names (the run-level scope, the config) are shared: the same
  object in every copy.
* Anything else goes through its ``__reduce_ex__``, as :mod:`copy` does
  (an iterator a suspended frame holds, an exception).

A world that cannot be copied (an open file or a thread lock reachable from
it), or a Python without the extension, has no template: the runner builds
it from scratch every time, as before.  Copying changes nothing the search
can see: a copy's state key equals that of a fresh build
(tests/check/test_template.py checks it on every scenario of the library
under every preset, and that whole searches give the same figures with and
without templates).  ``PERVMA_NO_TEMPLATE=1`` in the environment turns
templates off.
"""

from __future__ import annotations

import copy as _copy
import enum
import os
import sys
import types
from collections.abc import Iterable
from typing import Any

try:  # the copier and copies of suspended coroutines (CPython 3.11): _frames.c
    from pervma.sched import _frames
except ImportError:  # pragma: no cover - another Python, or no compiler
    _frames = None  # type: ignore[assignment]

FRAMES = _frames is not None

#: Instances of these (and members of classes made by EnumType) are shared.
_SHARED_TYPES = (types.CodeType, types.ModuleType, type, types.MethodDescriptorType,
                 types.WrapperDescriptorType, types.GetSetDescriptorType,
                 types.MemberDescriptorType, types.ClassMethodDescriptorType,
                 property, staticmethod, classmethod, enum.EnumType)
_ATOMS = frozenset({int, str, bytes, float, bool, type(None), complex})

#: What a copy raises for an object it cannot copy.
UNCOPYABLE = (TypeError, ValueError, AttributeError, RecursionError, RuntimeError)


def enabled() -> bool:
    """Templates are on where the copier is built, unless ``PERVMA_NO_TEMPLATE=1``."""
    return FRAMES and os.environ.get("PERVMA_NO_TEMPLATE", "") not in ("1", "yes", "true")


async def _finished_coro() -> None:
    return None


def _finished_gen() -> Any:
    yield None


def _finished(generator: bool) -> Any:
    """A finished coroutine (or generator) to stand for one that was."""
    g = _finished_gen() if generator else _finished_coro()
    g.close()
    return g


class _Probe:
    """A class made by a class statement: the copier copies the fields of
    instances of such classes (and hands C types to :func:`_fallback`)."""


def _fallback(o: Any, copier: Any) -> Any:
    """Copy an object the copier has no rule for: an exception (made
    without its ``__init__``, whatever that takes), or through its
    ``__reduce_ex__`` as :func:`copy.deepcopy` does, its parts copied within
    the same copy."""
    if isinstance(o, BaseException):
        args = copier.sub(o.args)
        e = type(o).__new__(type(o), *args)  # OSError's sets errno and strerror from them
        copier.remember(o, e)
        e.args = args
        d = getattr(o, "__dict__", None)
        if d:
            e.__dict__.update(copier.sub(d))
        return e
    # (list iterators and plain functools.partial objects have rules in C)
    rv = o.__reduce_ex__(4)
    if isinstance(rv, str):  # a global
        return o
    return _copy._reconstruct(o, {}, *rv,  # type: ignore[attr-defined]
                              deepcopy=lambda x, memo=None: copier.sub(x))


class Sharing:
    """One run's copier: what every copy shares (see the module docstring),
    the objects named when it is made included (the run-level scope, the
    config)."""

    __slots__ = ("_copier", "_modules")

    def __init__(self, named: Iterable[Any] = ()) -> None:
        if _frames is None:
            raise TypeError("no copier here (pervma.sched._frames is built for CPython 3.11)")
        self._copier = _frames.Copier(_SHARED_TYPES, _fallback, _finished, _Probe)
        self._modules = 0
        for o in named:
            self._copier.share(o)
        self._globals()

    def share(self, o: Any) -> None:
        """Never copy ``o``: every copy refers to it."""
        self._copier.share(o)

    def _globals(self) -> None:
        """Share what pervma's modules hold at module level (and one level
        into their containers): the model's static objects are globals that
        a copy must refer to, not duplicate."""
        if len(sys.modules) == self._modules:  # nothing imported since: the hot path
            return
        mods = list(sys.modules.items())
        self._modules = len(mods)
        share = self._copier.share
        for name, m in mods:
            if m is None or not (name == "pervma" or name.startswith("pervma.")):
                continue
            for v in list(vars(m).values()):
                if type(v) in _ATOMS:
                    continue
                share(v)
                if type(v) in (dict, list, tuple, set, frozenset):
                    for x in (v.values() if type(v) is dict else v):
                        if type(x) not in _ATOMS:
                            share(x)

    def copy(self, obj: Any, owned: list[Any] | None = None) -> tuple[Any, list[Any]]:
        """A copy of ``obj`` and the coroutines the copy made; raises one
        of :data:`UNCOPYABLE` when it cannot be copied.  With ``owned``, the
        instances of plain classes hashed by identity that the copy made (the
        model's objects) are appended to it, for :func:`drop` once the copy
        is of no more use."""
        self._globals()
        return self._copier.copy(obj, owned)


def kill_chains(coros: list[Any]) -> None:
    """Mark suspended coroutines (generators), and every coroutine each is
    suspended in, finished without running them: when they are freed, none
    of their ``finally`` blocks runs (as a :class:`Frozen` snapshot's)."""
    _frames.kill_chains(coros)


def drop(owned: list[Any]) -> None:
    """Break up a copy that will never be used again: clear the fields
    (``__slots__`` and ``__dict__``) of every instance it made (``owned``,
    from :meth:`Sharing.copy`).  A copied execution is one cyclic graph (an
    mm and its VMAs, a world and the closures of its threads' bodies), which
    reference counting alone never frees: left to the cyclic garbage
    collector, a search's dropped copies were a fifth of its time
    (spin-2f-m-r).  Cleared, the graph is freed at once.  Only for a copy
    nothing outside it uses any more: an execution the search is done with,
    after its threads were abandoned (``engine.abandon_executor``).  Left
    alone: what its own steps made, containers, and values hashed by content
    (a recorded event keeps clock lists and locations that came from the
    copy)."""
    _frames.clear_owned(owned)
    owned.clear()


class Frozen:
    """An object graph kept only to be copied (a world template, a
    checkpoint), with the coroutines its copy made.  Those are never run, so
    they are marked finished from the start: whenever they are dropped --
    also by the garbage collector, in whatever order it finalizes a cycle
    and under whatever thread a driver is stepping then -- none of their
    ``finally`` blocks runs.  :meth:`copy` gives them back their suspended
    states for the length of a copy."""

    __slots__ = ("obj", "_coros", "_states")

    def __init__(self, obj: Any, coros: list[Any]) -> None:
        self.obj = obj
        self._coros = coros
        self._states = _frames.kill(coros) if _frames is not None and coros else b""

    def copy(self, sharing: Sharing, owned: list[Any] | None = None) -> tuple[Any, list[Any]]:
        """A live copy of the object (and the coroutines it made); ``owned``:
        see :meth:`Sharing.copy`."""
        if not self._coros:
            return sharing.copy(self.obj, owned)
        _frames.revive(self._coros, self._states)
        try:
            return sharing.copy(self.obj, owned)
        finally:
            _frames.kill(self._coros)


class WorldTemplate:
    """A built world, kept pristine, copied for every execution."""

    __slots__ = ("_world", "sharing", "copies")

    def __init__(self, world: Frozen, sharing: Sharing) -> None:
        self._world = world
        self.sharing = sharing
        self.copies = 0

    @classmethod
    def make(cls, world: Any, sharing: Sharing) -> WorldTemplate | None:
        """A template of ``world`` (nothing of it may have run yet), or None
        when it cannot be copied."""
        try:
            w, coros = sharing.copy(world)
        except UNCOPYABLE:
            return None
        return cls(Frozen(w, coros), sharing)

    def copy(self, owned: list[Any] | None = None) -> Any:
        """A fresh copy of the world (``owned``: see :meth:`Sharing.copy`)."""
        self.copies += 1
        return self._world.copy(self.sharing, owned)[0]
