"""Copy-on-write after fork, raced: two stores of the parent to one shared
page, and a store of each process.  The scenarios (``cow-store-vs-cow-store``,
``cow-parent-vs-child-store``) are clean on every preset and check every
byte of both processes; a one-line regression of ``do_wp_page()`` that drops
the ``pte_same()`` recheck loses one of the parent's stores (the page that
held it is left mapped by nothing)."""

from __future__ import annotations

import pytest
from tests.kernel.test_oracles import PRESETS, _edited, _explore

import pervma.kernel.memory as memory
from pervma.check.scenario import get_scenario


@pytest.mark.parametrize("name", ["cow-store-vs-cow-store", "cow-parent-vs-child-store"])
@pytest.mark.parametrize("preset", PRESETS)
def test_each_process_keeps_exactly_its_own_stores(name: str, preset: str) -> None:
    assert _explore(get_scenario(name), preset) == (None, "", True)


@pytest.mark.parametrize("preset", ["universal", "legacy"])
def test_a_copy_installed_without_the_pte_same_recheck_loses_the_other_store(
        monkeypatch: pytest.MonkeyPatch, preset: str) -> None:
    # the second copier copied the page before the first one's store and
    # installs its copy over the first one's: the first copy (page 3) is left
    # counted as mapped by no PTE, and with it the store it holds; validate_mm's
    # page counts see it before the scenario's byte checks do
    bad = _edited(memory.do_wp_page, "    if mm.pgtable.get(vmf.vpn) is not pte:", "    if False:")
    monkeypatch.setattr(memory, "do_wp_page", bad)
    assert _explore(get_scenario("cow-store-vs-cow-store"), preset) == (
        "BUG: Bad page map", "page 3 (allocated at alloc_pages): _mapcount 1, but 0 PTEs map it", False)
