"""The checker: explore thread interleavings of the model and report violations.

Layers (each its own module):

* :mod:`~pervma.check.scenario` — scenarios (config + setup + 2-4 threads) and
  their registry; the library is :mod:`pervma.check.scenarios`.
* :mod:`~pervma.check.engine` — one execution driven transition by transition
  (one-CPU presets switch only at the model's switch points), vector clocks,
  canonical trace keys, step-by-step replay.
* :mod:`~pervma.check.dpor` — source-DPOR with sleep sets (the default).
* :mod:`~pervma.check.strategies` — preemption bounding, random walk, PCT(d).
* :mod:`~pervma.check.minimise` — fewest preemptions, then fewest steps; re-verified.
* :mod:`~pervma.check.output` — the counterexample table, replay and Perfetto files.
* :mod:`~pervma.check.api` — ``run_check``, ``find_bug``, ``run_many``,
  ``replay_file`` (the Python API; see its docstring).
* :mod:`~pervma.check.cmd` — ``pervma check``, ``pervma replay``, ``pervma bugs``.

The API names are loaded on first use, so importing ``pervma.check.cmd`` (to
build the command's parser) does not import the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pervma import lazy_getattr

if TYPE_CHECKING:
    from pervma.check.api import CheckResult, find_bug, replay_file, run_check, run_many


__all__ = ["CheckResult", "find_bug", "replay_file", "run_check", "run_many"]
__getattr__ = lazy_getattr(__name__, dict.fromkeys(__all__, "pervma.check.api"), globals())
