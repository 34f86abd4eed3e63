"""Scenarios: a config, a setup, and 2-4 model threads.

A :class:`Scenario` is a recipe: ``build(cfg)`` returns a fresh
:class:`Instance` (new system, new coroutines) every time it is called, and the
same config always builds the same instance, so a stateless explorer can run
the scenario again and again from scratch.  An instance carries the coroutines
for the :class:`~pervma.sched.Executor`, an optional ``snapshot()`` (the lock
state shown after each step of a counterexample) and an optional ``finish()``
run once every thread has returned (end-of-run invariants; it reports through
:func:`pervma.sched.violation`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from pervma.config import Config
from pervma.errors import UsageError
from pervma.sched import RunScope


@dataclass(slots=True)
class Instance:
    """One built scenario, ready to be driven once."""

    bodies: Sequence[Coroutine[Any, Any, Any]]
    names: Sequence[str]
    models: Sequence[Any] | None = None
    snapshot: Callable[[], str] | None = None
    finish: Callable[[], None] | None = None
    effects: Callable[[], list[Any]] | None = None
    run: RunScope | None = None  # the run-level scope its threads share (set by the Runner)
    # The world the instance was made from, when ``world.instance()`` makes
    # another instance of the same state from it (or from a copy of it: a
    # runner keeps one as a :class:`~pervma.check.template.WorldTemplate`).
    world: Any = None
    # The memory layer of an execution under LKMM (pervma.sched.memory; set
    # by the Runner); None under sequential consistency.
    memory: Any = None
    # Groups of interchangeable threads (indices into ``bodies``): the same
    # code in the same process, told apart by nothing but their names
    # (pervma.check.symmetry).
    symmetry: tuple[tuple[int, ...], ...] = ()
    # The instances of a copy the instance was made from (its world, copied
    # from a template): handed to the execution that drives it, which breaks
    # them up when the search drops it (pervma.check.template.drop).
    owned: list[Any] | None = None


@dataclass(frozen=True, slots=True)
class Expect:
    """What a misuse scenario must produce under one preset: a violation of
    ``kind``, or (``kind`` None) a complete, clean run, for the reason ``why``."""

    preset: str
    kind: str | None
    why: str = ""


@dataclass(slots=True)
class Scenario:
    """A named recipe for an :class:`Instance`.

    ``doc`` is the one line that describes it; ``presets`` lists the presets
    the scenario is meaningful under (the four of the sweeps by default);
    ``bug`` names the catalogue entry this scenario exposes when its switch is
    on; ``max_steps`` overrides the per-thread livelock bound; ``expect``
    (misuse scenarios, tagged ``expect-violation``) says what each preset must
    report; ``tags`` hide a scenario from ``--all`` and the report: ``toy``
    (the checker's oracles), ``expect-violation`` (misuse scenarios),
    ``spin-shape`` (issue #12's bench shapes, :func:`spin_shapes`).
    """

    name: str
    doc: str
    build: Callable[[Config], Instance]
    presets: tuple[str, ...] = ("legacy", "universal", "universal-up", "universal-up-nopreempt")
    bug: str | None = None
    max_steps: int | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    expect: tuple[Expect, ...] = ()


_REGISTRY: dict[str, Scenario] = {}

#: Tags of the scenarios ``--all`` and the report leave out (run them by name).
HIDDEN_TAGS = ("toy", "expect-violation", "spin-shape")


def register(scenario: Scenario) -> Scenario:
    if scenario.name in _REGISTRY:
        raise ValueError(f"scenario {scenario.name!r} registered twice")
    _REGISTRY[scenario.name] = scenario
    return scenario


def scenario(name: str, doc: str, **kw: Any) -> Callable[[Callable[[Config], Instance]], Scenario]:
    """Decorator form of :func:`register`."""

    def wrap(build: Callable[[Config], Instance]) -> Scenario:
        return register(Scenario(name, doc, build, **kw))

    return wrap


def _load() -> None:
    # Import for the side effect of registering the library.
    from pervma.check import scenarios  # noqa: F401


def all_scenarios(include_toys: bool = False) -> list[Scenario]:
    _load()
    hidden = () if include_toys else HIDDEN_TAGS
    return [s for s in _REGISTRY.values() if not any(t in s.tags for t in hidden)]


def misuse_scenarios() -> list[Scenario]:
    """The scenarios that must report a violation (not part of ``--all``)."""
    _load()
    return [s for s in _REGISTRY.values() if "expect-violation" in s.tags and "toy" not in s.tags]


def spin_shapes() -> list[Scenario]:
    """The SPIN shapes of issue #12 (bench yardsticks, not part of ``--all``),
    in the issue's order: 1F+M, 1F+M+R, ..., 4F+M+R."""
    _load()
    return [s for s in _REGISTRY.values() if "spin-shape" in s.tags]


def get_scenario(name: str) -> Scenario:
    _load()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see 'pervma check --list'"
    raise UsageError(f"unknown scenario {name!r}{hint}")
