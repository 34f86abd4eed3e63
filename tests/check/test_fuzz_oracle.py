"""The serial-order oracle: silent on the correct model (fixed seeds, every
preset), and catching realistic regressions made here by a one-line edit of a
model function."""

from __future__ import annotations

import json

import pytest

import pervma.kernel.vma as vma_mod
from pervma.check.fuzz.explore import explore_program
from pervma.check.fuzz.generate import FUZZ_BASE, generate
from pervma.check.fuzz.oracle import SerialOracle
from pervma.check.fuzz.program import SCHEMA, VERSION, from_json
from pervma.cli import main
from pervma.config import PRESET_NAMES, Config
from pervma.kernel.mmap_lock import mmap_read_unlock, mmap_write_downgrade

A = FUZZ_BASE
PAGE = 4096


def _prog(threads: list[list[dict]], pages: int = 1) -> dict:
    return {"schema": SCHEMA, "version": VERSION,
            "setup": {"processes": [{"name": "p", "vmas": [
                {"kind": "anon", "addr": hex(A), "pages": pages, "populate": True}]}]},
            "threads": [{"process": "p", "calls": c} for c in threads]}


def _call(name: str, **args: int) -> dict:
    return {"call": name, "args": args}


#: munmap against a MAP_FIXED mmap of the same page, then a store and a load of it.
REMAP = _prog([[_call("munmap", addr=A, len=PAGE)],
               [_call("mmap", addr=A, len=PAGE, prot=3, kind=0, fixed=1),
                _call("store", addr=A, value=9), _call("load", addr=A)]])


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_clean_model_no_findings_on_fixed_seeds(preset: str) -> None:
    cfg = Config.preset(preset)
    judged = 0
    for i in range(4):
        res = explore_program(generate(11, i), cfg, dpor_executions=30, pct_executions=8,
                              seed=11)
        assert res.violation is None, (preset, i, res.violation, res.counterexample)
        judged += res.oracle.judged
        assert res.oracle.undecided == 0
    assert judged > 0  # the oracle did judge executions


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_remap_race_is_serialisable_on_the_correct_model(preset: str) -> None:
    res = explore_program(from_json(REMAP), Config.preset(preset), dpor_executions=5000,
                          pct_executions=0)
    assert res.violation is None and res.complete
    # skipped: the store faulted (MAPERR) while the load read the old PTE (below)
    assert res.oracle.judged > 0 and res.oracle.skipped < res.oracle.judged


async def _late_zap(vms: vma_mod.VmaMunmapStruct) -> None:
    """vms_complete_munmap_vmas() with the zap moved after the unlock."""
    mm = vms.mm
    mm.map_count -= len(vms.vmas)
    for v in vms.vmas:
        mm.total_vm -= v.pages()
    if vms.nr_accounted:
        vma_mod.vm_unacct_memory(mm.system, vms.nr_accounted)
    if vms.unlock:
        await mmap_write_downgrade(mm)
        await mmap_read_unlock(mm)  # <- the regression: released before the zap
    await vma_mod.zap_page_range(mm, vms.start, vms.end)
    await vma_mod.unlink_vmas_rmap(vms.vmas)
    for v in vms.vmas:
        await vma_mod.remove_vma(v)


def test_oracle_catches_munmap_zapping_after_the_unlock(monkeypatch, tmp_path, capsys) -> None:
    """munmap drops mmap_lock before zapping: a MAP_FIXED mmap of the same page
    slips in, and the late zap wipes the new page: the load after the store
    reads 0, which no serial order gives."""
    monkeypatch.setattr(vma_mod, "vms_complete_munmap_vmas", _late_zap)
    res = explore_program(from_json(REMAP), Config.preset("universal"), dpor_executions=5000,
                          pct_executions=0)
    assert res.violation is not None
    kind, msg = res.violation
    assert kind == "serial-order"
    assert msg == ("no serial order of the calls gives these results: "
                   "T0.munmap(0x10000000,0x1000)=0; T1.mmap(0x10000000,0x1000,3,0,1)=0x10000000; "
                   "T1.store(0x10000000,9)=ok; T1.load(0x10000000)=0")
    assert "BUG: serial-order:" in res.counterexample and "zap_pte_range" in res.counterexample
    f = tmp_path / "remap.json"
    f.write_text(json.dumps(REMAP))
    assert main(["check", "--program", str(f)]) == 1
    assert "BUG: serial-order: no serial order" in capsys.readouterr().out


def test_munmap_returning_without_zapping_is_caught_by_validate_mm(monkeypatch) -> None:
    """The zap dropped from munmap: the serial runs the oracle compares with run
    the same model, so the load's stale byte is what a serial order gives too
    (that is the differential tests' business); validate_mm, which judges every
    execution as well, sees the PTE left outside every VMA."""
    async def no_zap(mm: object, start: int, end: int) -> int:
        return 0

    monkeypatch.setattr(vma_mod, "zap_page_range", no_zap)
    prog = from_json(_prog([[_call("munmap", addr=A, len=PAGE), _call("load", addr=A)],
                            [_call("load", addr=A + PAGE)]], pages=2))
    res = explore_program(prog, Config.preset("universal"), dpor_executions=200,
                          pct_executions=0)
    assert res.violation == ("validate_mm", "PTE for 0x10000000 outside every VMA")
    assert res.oracle.judged >= 1  # the serial-order oracle ran first and agreed


def test_overlap_rules_decide_what_is_judged() -> None:
    """A maps read overlapping another thread's call is not judged; a
    multi-page munmap overlapping a load into its range is not; one before
    the other is."""
    prog = from_json(_prog([[_call("munmap", addr=A, len=2 * PAGE)],
                            [_call("load", addr=A + PAGE)], [_call("read_maps")]], pages=2))
    o = SerialOracle(prog, Config.preset("universal"))
    # (outcome, finished counts of every thread at start, started counts at end,
    # whether an access found a VMA that appeared while it ran)
    overlap = [[(0, (0, 0, 0), (1, 1, 1), False)], [("SIGSEGV(MAPERR)", (0, 0, 0), (1, 1, 1), False)],
               [("text", (0, 0, 0), (1, 1, 1), False)]]
    assert not o.judgeable(overlap)
    serial = [[(0, (0, 0, 0), (1, 0, 0), False)], [("SIGSEGV(MAPERR)", (1, 0, 0), (1, 1, 0), False)],
              [("text", (1, 1, 0), (1, 1, 1), False)]]
    assert o.judgeable(serial)
    prog1 = from_json(_prog([[_call("munmap", addr=A, len=PAGE)], [_call("load", addr=A)]]))
    o1 = SerialOracle(prog1, Config.preset("universal"))
    both = [[(0, (0, 0), (1, 1), False)], [("SIGSEGV(MAPERR)", (0, 0), (1, 1), False)]]
    assert o1.judgeable(both)  # a one-page munmap is atomic for a load
    assert o1.search(both) is True
    assert o1.search([[(0, (0, 0), (1, 1), False)], [(7, (0, 0), (1, 1), False)]]) is False
    # Real time: the load began after munmap ended, so 1 (the old byte) is impossible.
    assert o1.search([[(0, (0, 0), (1, 0), False)], [(1, (1, 0), (1, 1), False)]]) is False
    assert o1.search([[(0, (0, 0), (1, 1), False)], [(1, (0, 0), (1, 1), False)]]) is True


def test_madvise_populate_against_a_concurrent_mprotect_is_judged_and_serial() -> None:
    """MADV_POPULATE_READ checks each VMA and faults its pages in under one
    mmap_read_lock hold (7.0 faultin_page_range(), ``kernel/gup.py``), so an
    mprotect(PROT_NONE) lands before the check (EINVAL) or after the faults
    (0), never in between (EFAULT, which no serial order gives: the model
    once dropped the lock there, and the fuzzer found it).  The call is
    atomic for the oracle, and every execution is judged and serial."""
    from pervma.check.fuzz.registry import get_call
    from pervma.kernel.madvise import MADV_POPULATE_READ

    madvise = get_call("madvise")
    assert madvise.is_atomic({"addr": A, "len": PAGE, "advice": MADV_POPULATE_READ})
    prog = from_json(_prog([[_call("mprotect", addr=A, len=2 * PAGE, prot=0)],
                            [_call("madvise", addr=A + PAGE, len=PAGE, advice=MADV_POPULATE_READ)]],
                           pages=2))
    res = explore_program(prog, Config.preset("universal"), dpor_executions=200, pct_executions=0)
    assert res.complete and res.violation is None
    assert res.oracle.skipped == 0 and res.oracle.judged >= 2  # EINVAL and 0, both judged


def test_two_accesses_into_a_page_being_unmapped_are_not_judged() -> None:
    """munmap removes the VMA, then zaps its PTEs: in between, a store that
    needs a fault (a read-only zero page) gets SIGSEGV(MAPERR) while the
    thread's next load still reads 0 through the old PTE (the campaign of seed
    1, program 15, on the correct model).  Each access lands before or after
    the munmap on its own, not in program order, so such an execution is not
    judged; judged, no serial order gives it."""
    doc = _prog([[_call("munmap", addr=A, len=PAGE)],
                 [_call("store", addr=A, value=5), _call("load", addr=A)]])
    doc["setup"]["processes"][0]["vmas"][0]["prot"] = "r"
    oracle = SerialOracle(from_json(doc), Config.preset("universal"))
    # munmap spans both accesses: (outcome, finished counts at the start,
    # started counts at the end, a VMA that appeared during an access) per call
    log = [[(0, (0, 0), (1, 2), False)],
           [("SIGSEGV(MAPERR)", (0, 0), (1, 1), False), (0, (0, 1), (1, 2), False)]]
    assert not oracle.judgeable(log)
    assert oracle.search(log) is False  # judged anyway, it would be reported
    # one access only, or none faulting: judged as before
    assert oracle.judgeable([[(0, (0, 0), (1, 1), False)], [("SIGSEGV(MAPERR)", (0, 0), (1, 1), False)]])
    assert oracle.judgeable([[(0, (0, 0), (1, 2), False)], [(0, (0, 0), (1, 1), False), (0, (0, 1), (1, 2), False)]])


#: The page just below the setup's stack (setup_arg_pages: [0x7ffffffde000, 0x7ffffffff000)).
BELOW_STACK = 0x7FFFFFFDD000


@pytest.mark.parametrize("preset", ["universal", "universal-up-nopreempt"])
def test_a_store_that_grows_the_stack_is_two_steps_for_the_oracle(preset: str) -> None:
    """A store into the page below the stack: its fault grows the stack
    (``lock_mm_and_find_vma()`` expands the VM_GROWSDOWN VMA under the write
    lock and handles the fault), then the store is retried.  An mprotect of
    that page in between succeeds (the page is now mapped) and the retried
    store gets SIGSEGV(ACCERR): no serial order gives both (the store first
    succeeds, the mprotect first fails with ENOMEM).  The 30-minute
    universal-up-nopreempt campaign of seed 2026 reported it on the correct
    model (program 12528).  Such an access is not judged against a call it
    overlapped; the same calls in one thread are judged, and serial."""
    doc = _prog([[_call("store", addr=BELOW_STACK + 1, value=7)],
                 [_call("mprotect", addr=BELOW_STACK, len=PAGE, prot=1)]])
    res = explore_program(from_json(doc), Config.preset(preset), dpor_executions=2000,
                          pct_executions=0)
    assert res.complete and res.violation is None, res.violation
    assert res.oracle.skipped > 0 and res.oracle.judged == 0  # every execution overlapped them
    one = _prog([[_call("store", addr=BELOW_STACK + 1, value=7),
                  _call("mprotect", addr=BELOW_STACK, len=PAGE, prot=1),
                  _call("store", addr=BELOW_STACK + 2, value=8)]])
    res = explore_program(from_json(one), Config.preset(preset), dpor_executions=50,
                          pct_executions=0)
    assert res.complete and res.violation is None and res.oracle.judged >= 1


def test_the_grown_flag_decides_alone() -> None:
    """The log entry's flag alone makes an overlapping pair unjudgeable: the
    same outcomes unflagged are judged, and no serial order gives them."""
    doc = _prog([[_call("store", addr=BELOW_STACK + 1, value=7)],
                 [_call("mprotect", addr=BELOW_STACK, len=PAGE, prot=1)]])
    oracle = SerialOracle(from_json(doc), Config.preset("universal"))
    grown = [[("SIGSEGV(ACCERR)", (0, 0), (1, 1), True)], [(0, (0, 0), (1, 1), False)]]
    assert not oracle.judgeable(grown)
    flat = [[("SIGSEGV(ACCERR)", (0, 0), (1, 1), False)], [(0, (0, 0), (1, 1), False)]]
    assert oracle.judgeable(flat)
    assert oracle.search(flat) is False
