"""The registry of calls a generated program can make: the model's whole API.

Each entry names one call (a syscall, a user load or store, a kernel-internal
caller), the arguments it takes, how the generator draws them, how a thread
runs it, and what the serial-order oracle may assume of it.  A feature that
adds an API to the model adds one entry, next to the others in
:mod:`pervma.check.fuzz.calls`::

    @fuzz_call("mlock", params=("addr", "len"), gen=gen_range,
               walks=lambda a: [(a["addr"], a["len"])])
    async def _mlock(cx: Ctx, t: Thread, a: Args) -> Any:
        return await t.mlock(a["addr"], a["len"])

``run`` returns what the call returns (or raises ``OSError``/``Segfault`` as
the user API does); the world turns it into a comparable outcome.  The
oracle flags (README, "The serial-order oracle"):

* ``atomic_if``: the call is atomic only for the arguments it accepts (madvise:
  not MADV_POPULATE_READ/WRITE, which fault the range in through GUP with
  mmap_lock dropped and retaken, as a user access would).
* ``atomic=False``: the kernel does not make the call one step with respect to
  calls of other threads (the /proc/pid/maps reader, PROCMAP_QUERY, the rmap
  walker, binder's and TCP's callers, the userfaultfd ioctls): an execution in
  which it overlaps another thread's call is not judged by that oracle.
* ``walks``: the ranges the call walks page by page after changing the VMAs
  (munmap's and mprotect's zap/change_protection, madvise, mremap's page-table
  move, a MAP_FIXED mmap's zap of what it replaces): when a range covers more
  than one page and a user access of another thread into it overlaps the
  call, that execution is not judged either.
* ``access=True``: a user load or store.
* ``needs``: a setup feature the call needs (``"uffd"``, ``"binder"``, ``"tcp"``);
  the generator draws it only for setups that have it.
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pervma.errors import InputError

if TYPE_CHECKING:
    import random

    from pervma.check.fuzz.generate import Gen
    from pervma.check.fuzz.world import Ctx
    from pervma.kernel.system import Thread

Args = dict[str, int]
RunFn = Callable[["Ctx", "Thread", Args], Awaitable[Any]]
GenFn = Callable[["Gen", "random.Random"], Args]


@dataclass(frozen=True, slots=True)
class CallDef:
    name: str
    doc: str
    params: tuple[str, ...]
    run: RunFn
    gen: GenFn
    atomic: bool = True
    access: bool = False
    walks: Callable[[Args], list[tuple[int, int]]] | None = None  # [start, len) page by page
    needs: str | None = None
    weight: int = 1
    atomic_if: Callable[[Args], bool] | None = None  # atomic only for these arguments

    def is_atomic(self, args: Args) -> bool:
        """Whether the kernel makes the call with these arguments one step
        with respect to other threads' calls (``atomic`` and ``atomic_if``)."""
        return self.atomic and (self.atomic_if is None or self.atomic_if(args))

    def walked(self, args: Args, pages: int = 2) -> list[tuple[int, int]]:
        """The page-aligned ``[lo, hi)`` ranges the call walks one page after the
        other, those of ``pages`` pages or more only."""
        out = []
        for start, length in (self.walks(args) if self.walks is not None else []):
            lo = start & ~0xFFF
            hi = (start + length + 0xFFF) & ~0xFFF
            if hi - lo >= pages * 0x1000:
                out.append((lo, hi))
        return out


_CALLS: dict[str, CallDef] = {}


def fuzz_call(name: str, *, params: tuple[str, ...] = (), gen: GenFn | None = None,
              atomic: bool = True, access: bool = False,
              walks: Callable[[Args], list[tuple[int, int]]] | None = None,
              needs: str | None = None, weight: int = 1,
              atomic_if: Callable[[Args], bool] | None = None) -> Callable[[RunFn], RunFn]:
    """Register ``run`` as the call ``name`` (see the module docstring)."""

    def wrap(run: RunFn) -> RunFn:
        if name in _CALLS:
            raise ValueError(f"fuzz call {name!r} registered twice")
        _CALLS[name] = CallDef(name, (run.__doc__ or "").strip().splitlines()[0] if run.__doc__
                               else name, params, run, gen or (lambda g, r: {}), atomic,
                               access, walks, needs, weight, atomic_if)
        return run

    return wrap


def _load() -> None:
    from pervma.check.fuzz import calls  # noqa: F401 - registers the entries


def all_calls() -> list[CallDef]:
    _load()
    return list(_CALLS.values())


def get_call(name: str, where: str = "call") -> CallDef:
    _load()
    if name in _CALLS:
        return _CALLS[name]
    close = difflib.get_close_matches(name, list(_CALLS), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(_CALLS)}"
    raise InputError(f"{where}: unknown call {name!r}{hint}")
