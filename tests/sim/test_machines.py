"""Machine profiles: complete, sourced, no per-workload parameters."""

from __future__ import annotations

import pytest

from pervma.errors import UsageError
from pervma.sim.machine import load_machine, machine_names, parse_machine


def test_bundled_machines() -> None:
    assert {"xeon16", "e5-2690v4", "icl-2sp", "skl-4sp"} <= set(machine_names())


@pytest.mark.parametrize("name", machine_names())
def test_every_value_has_a_source(name: str) -> None:
    m = load_machine(name)
    assert m.cpus >= 1 and m.sockets >= 1
    for key, src in m.sources.items():
        assert src.strip(), key
    assert not any(w in k for k in m.sources for w in ("page_fault", "mmap1", "pft", "shared"))


def test_xeon16_says_it_is_a_vm() -> None:
    m = load_machine("xeon16")
    assert m.virtual and "VM" in m.description and m.cpus == 16


def test_unknown_machine_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown machine 'nope'; choose one of"):
        load_machine("nope")


def test_unsourced_value_is_refused() -> None:
    from importlib import resources

    text = (resources.files("pervma.sim") / "machines" / "xeon16.toml").read_text()
    broken = text.replace('trap_ns = "', 'trap_nsX = "')
    with pytest.raises(UsageError, match="without a source: trap_ns"):
        parse_machine(broken, "broken")


def test_placement_spreads_over_sockets_then_siblings() -> None:
    m = load_machine("e5-2690v4")
    pl = m.placement(56)
    assert sorted(pl) == list(range(56))
    assert {m.socket_of(c) for c in pl[:2]} == {0, 1}
    assert max(pl[:28]) < 28  # physical cores before hyperthreads
