"""The series' call sites: an annotation for model functions that take a VMA
lock for a caller outside the lock code (``pervma sites`` and the report's
table read it).

Each model function that calls ``lock_vma_under_rcu``, ``lock_next_vma``,
``lock_vma_under_rcu_wait`` or ``vma_start_read_locked`` carries
``@call_site(...)``: the kernel file and function it models, what the caller
did before the series (``pre_form`` is one of :data:`PRE_FORMS`, ``pre_series``
says it in words), what the series form does instead, and the checker
scenarios that exercise it.  ``tests/test_sites.py`` finds such functions by
AST and fails when one is not annotated.

The decorator records into a module-level list and returns the function
itself: no wrapper, no cost on the hot path, nothing reachable from a model
thread (so the checker's state key never sees the registry).

Forms (what the kernel sources say, 7.0 and the 6.x history):

* ``ifdef``: ``#ifdef CONFIG_PER_VMA_LOCK`` around the per-VMA form with an
  mmap_lock ``#else`` (fs/proc/task_mmu.c, mm/userfaultfd.c, mm/mmap_lock.c's
  lock_next_vma);
* ``stub-fallback``: no ``#ifdef`` since 6.6 ("mm: remove CONFIG_PER_VMA_LOCK
  ifdefs" gave ``lock_vma_under_rcu()`` a NULL stub): the caller tries the
  per-VMA lock and falls back to mmap_lock, which is all it ever takes
  without PER_VMA_LOCK (arch fault handlers, madvise, binder, TCP);
* ``mmap-lock``: mmap_lock only;
* ``new``: the helper does not exist before the series.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

PRE_FORMS: dict[str, str] = {
    "ifdef": "#ifdef CONFIG_PER_VMA_LOCK, mmap_lock #else",
    "stub-fallback": "lock_vma_under_rcu() (NULL stub without PER_VMA_LOCK), mmap_lock fallback",
    "mmap-lock": "mmap_lock only",
    "new": "none (added by the series)",
}

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class CallSite:
    """One annotated model function and the kernel call site it models."""

    kernel_file: str
    kernel_function: str
    pre_form: str
    pre_series: str
    series: str
    scenarios: tuple[str, ...]
    model_file: str
    model_function: str
    version: str
    # Run the scenarios with this Config.arch (None: the preset's own).
    arch: str | None = None
    # Where the model departs from the kernel version named.
    note: str = ""

    @property
    def site(self) -> str:
        return f"{self.kernel_file}:{self.kernel_function}"

    @property
    def model(self) -> str:
        return f"{self.model_file}:{self.model_function}"


_SITES: list[CallSite] = []


def call_site(kernel: str, *, pre_form: str, pre_series: str, series: str,
              scenarios: tuple[str, ...], version: str = "7.0", arch: str | None = None,
              note: str = "") -> Callable[[_F], _F]:
    """Annotate a model function as the model of ``kernel`` (``file:function``).

    Returns a decorator that records the site and hands back the function
    unchanged; several may stack on one function (one per kernel site)."""
    if pre_form not in PRE_FORMS:
        raise ValueError(f"call_site {kernel}: pre_form {pre_form!r} is not one of "
                         f"{', '.join(PRE_FORMS)}")
    kfile, sep, kfunc = kernel.partition(":")
    if not sep or not kfile or not kfunc:
        raise ValueError(f"call_site {kernel!r}: want 'kernel/file.c:function'")

    def record(fn: _F) -> _F:
        module = fn.__module__
        model_file = module.removeprefix("pervma.").replace(".", "/") + ".py"
        _SITES.append(CallSite(kfile, kfunc, pre_form, pre_series, series, tuple(scenarios),
                               model_file, fn.__qualname__, version, arch, note))
        return fn

    return record


def all_sites() -> list[CallSite]:
    """Every annotated site, in model-file order then source order: imports
    each module of :mod:`pervma.kernel` so that all annotations are seen."""
    import importlib
    import pkgutil

    import pervma.kernel as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        importlib.import_module(f"{pkg.__name__}.{info.name}")
    unique = {(s.site, s.model): s for s in _SITES}  # a re-imported module records again
    return sorted(unique.values(), key=lambda s: s.model_file)
