"""``pervma report``: one command, one self-contained HTML report.

Five sections, each built from the Python API of its engine and never from
numbers of its own:

* **Cost** (:mod:`~pervma.report.cost`) — the running kernel's
  ``vm_area_struct``/``mm_struct`` layout and the system bill
  (:mod:`pervma.layout.api`);
* **Correctness** (:mod:`~pervma.report.correctness`) — every scenario under
  every preset and the bug catalogue (:mod:`pervma.check.api`);
* **Call sites** (:mod:`~pervma.report.sites`) — the series' call sites
  with their verdicts per preset (:mod:`pervma.check.sites`);
* **Performance** (:mod:`~pervma.report.performance`) — simulated curves with
  the real-16core measurements overlaid (:mod:`pervma.sim.api`);
* **Environment** (:mod:`~pervma.report.environment`).

:mod:`~pervma.report.runner` runs the work (optionally over processes) and
writes ``DIR/index.html``, ``DIR/*.csv`` and ``DIR/traces/*.json``;
:mod:`~pervma.report.outdir` applies the output-folder rules;
:mod:`~pervma.report.html` renders, escaping every piece of text.  A section
whose engine is missing or fails shows its error and makes the command exit 1.

The names below are loaded on first use, so building the ``pervma report``
parser imports no engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pervma import lazy_getattr

if TYPE_CHECKING:
    from pervma.report.runner import build_report
    from pervma.report.settings import Settings, settings_for

_LAZY = {"build_report": "pervma.report.runner", "Settings": "pervma.report.settings",
         "settings_for": "pervma.report.settings"}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())

__all__ = ["Settings", "build_report", "settings_for"]
