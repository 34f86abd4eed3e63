"""bench/real/fit.py: a profile's [fit] values make the simulated one-task
fault take calib's time."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from pervma.sim.machine import load_machine

FIT = Path(__file__).resolve().parents[2] / "bench" / "real" / "fit.py"


def _fit():
    spec = importlib.util.spec_from_file_location("fit", FIT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_xeon2vm_faults_take_calibs_times() -> None:
    # calib on the Intel VM, 4 December 2026: read_fault_ns 480.9, write_fault_ns 1250.3,
    # shared_write_fault_ns 763.3
    fit = _fit()
    m = load_machine("xeon2vm")
    assert fit.simulated_fault_ns(m, write=False) == pytest.approx(480.9, abs=1.0)
    assert fit.simulated_fault_ns(m, write=True) == pytest.approx(1250.3, abs=2.0)
    assert fit.simulated_fault_ns(m, write=True, shared=True) == pytest.approx(763.3, abs=2.0)


def test_the_solver_recovers_a_profiles_value() -> None:
    fit = _fit()
    m = load_machine("xeon2vm")
    target = fit.simulated_fault_ns(dataclasses.replace(m, page_alloc_ns=700.0), write=True)

    def write(v: float) -> float:
        return fit.simulated_fault_ns(dataclasses.replace(m, page_alloc_ns=v), write=True)

    assert fit._solve(write, target, 100.0) == pytest.approx(700.0, abs=1.0)
    # a read fault pays one trap and no page allocation
    assert (fit.simulated_fault_ns(dataclasses.replace(m, trap_ns=m.trap_ns + 100.0), False)
            == pytest.approx(fit.simulated_fault_ns(m, False) + 100.0))
    assert (fit.simulated_fault_ns(dataclasses.replace(m, page_alloc_ns=0.0), False)
            == pytest.approx(fit.simulated_fault_ns(m, False)))
