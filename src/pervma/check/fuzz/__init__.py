"""Generated programs and their exploration (issue #15, items 1-2): ``pervma fuzz``.

* :mod:`~pervma.check.fuzz.program` — a program (setup + 2-4 threads of calls)
  and its versioned JSON form.
* :mod:`~pervma.check.fuzz.registry` — the registry of calls (the model's whole
  API); the entries are in :mod:`~pervma.check.fuzz.calls`.
* :mod:`~pervma.check.fuzz.generate` — seed and index -> program, arguments
  drawn around the setup's VMA boundaries.
* :mod:`~pervma.check.fuzz.world` — builds a program's world and threads; the
  serial runs.
* :mod:`~pervma.check.fuzz.oracle` — the serial-order oracle.
* :mod:`~pervma.check.fuzz.explore` — DPOR up to a budget, then PCT samples.
* :mod:`~pervma.check.fuzz.cmd` — ``pervma fuzz`` and ``pervma check --program``.

The package never imports the scenario library: a program is a scenario of
its own, driven through the same scheduler interface.
"""
