"""Mutants of the model (pervma.check.mutants): the sites each operator
finds, the code a mutant compiles to, and the verdicts of a campaign's
judge on mutants of the real model."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from pervma.check import mutants as M

SOURCE = '''
import types

debug = types.SimpleNamespace()


async def lock(vma, write):
    """A docstring is not a statement to swap."""
    await vma.start_write()
    vma.seq = vma.mm_seq
    await store(Op("WRITE", True), seq_of, vma)
    touch(("VMA", 1))
    debug.kasan_check(vma, "lock")
    mmap_assert_locked(vma.mm)
    if vma.mm.config.bug("B05"):
        await vma.historical()
    else:
        await vma.mainline()
    if not vma.mm.config.bug("B17"):
        vma.check(True)
    return vma.seq == vma.mm_seq


async def _lock_b05(vma):
    await vma.start_write()


def count(xs):
    n = 0
    for x in xs:
        if x < 3:
            n += 1
    return n
'''


@pytest.fixture
def toy(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A module of SOURCE under a name no test imported before."""
    name = f"mutant_toy_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(SOURCE))
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    yield name
    sys.path.remove(str(tmp_path))
    sys.modules.pop(name, None)
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, M._Finder)]


def _texts(name: str, op: str) -> list[str]:
    return [m.text for m in M.mutants(name, (op,))]


def test_drop_finds_steps_but_not_oracles_declarations_or_historical_branches(toy: str) -> None:
    assert _texts(toy, "drop") == [
        "await vma.start_write()",
        "await vma.mainline()",   # the else of a switch is the mainline
        "vma.check(True)",        # the body of `if not bug(...)` is too
    ]


def test_swap_pairs_a_scheduling_point_with_its_neighbour(toy: str) -> None:
    assert _texts(toy, "swap") == ["await vma.start_write()  <->  vma.seq = vma.mm_seq"]


def test_cmp_and_bool_change_one_operator_or_argument(toy: str) -> None:
    assert _texts(toy, "cmp") == ["vma.seq == vma.mm_seq  ->  vma.seq != vma.mm_seq",
                                  "x < 3  ->  x <= 3"]
    assert _texts(toy, "bool") == ["vma.check(True): True -> False"]
    ms = M.mutants(toy)
    assert [m.op for m in ms] == ["drop"] * 3 + ["swap", "cmp", "cmp", "bool"]
    assert [m.function for m in ms if m.op == "cmp"] == ["lock", "count"]
    assert ms[0].describe() == f"{toy}.py:9 lock(): await vma.start_write()"
    assert not any("store(" in m.text or "touch(" in m.text for m in ms)  # declarations


def test_a_mutant_compiles_to_the_changed_code_and_counts_its_site(toy: str) -> None:
    (m,) = [x for x in M.mutants(toy, ("cmp",)) if x.function == "count"]
    M.HITS[0] = 0
    M.install(m)
    mod = importlib.import_module(toy)
    assert mod.count([1, 2, 3, 4]) == 3  # x <= 3: the original counts 2
    assert M.HITS[0] == 4  # the changed comparison ran once per element
    with pytest.raises(RuntimeError, match="already imported"):
        M.install(m)


def test_unknown_mutants_are_usage_errors(toy: str) -> None:
    with pytest.raises(M.UsageError, match="unknown mutation operator"):
        M.mutants(toy, ("delete",))
    with pytest.raises(M.UsageError, match="has no drop mutant 9"):
        M.mutated_code(M.Mutant(toy, "drop", 9, "lock", 1, "x"))
    with pytest.raises(M.UsageError, match="module:operator:index"):
        M.parse_ident("mmap_lock-drop-1")
    with pytest.raises(M.UsageError, match="has no swap mutant 100000"):
        M.parse_ident("mmap_lock:swap:100000")


def _real(module: str, op: str, text: str) -> M.Mutant:
    (m,) = [x for x in M.mutants(f"pervma.kernel.{module}", (op,)) if x.text == text]
    return m


def test_a_dropped_vma_write_lock_is_killed_where_the_vma_is_not_split() -> None:
    # a split write-locks the VMA on its own (vma_modify_flags): only an
    # mprotect of a whole VMA shows the missing vma_start_write()
    m = _real("mprotect", "drop", "await vma_start_write(vma)")
    plan = M.Plan(scenarios=("fault-vs-munmap", "fault-vs-mprotect-split", "two-faults-vs-writer"),
                  max_executions=5000)
    out = M.run_mutant(m, plan)
    assert out["status"] == "killed", out
    munmap, split, whole = out["runs"]
    assert not munmap["reached"] and munmap["verdict"] is None  # no mprotect_fixup() there
    assert split["reached"] and split["complete"] and split["verdict"] is None
    assert whole["reached"] and whole["verdict"] == "killed"
    assert whole["violation"][0] == "WARNING: vma_assert_write_locked"
    assert "vm_flags_reset_once <- mprotect_fixup" in whole["violation"][1]
    assert out["stateless"] == []  # a killed mutant is not searched again


def test_a_survivor_is_searched_again_statelessly_where_it_was_reached() -> None:
    # PTEs changed before the notifiers hear of it: no secondary MMU in
    # these scenarios sees the difference
    m = _real("mprotect", "swap", "await mmu_notifier_invalidate_range_start(rng)  <->  "
              "await change_protection(vma, start, end, newflags)")
    plan = M.Plan(scenarios=("fault-vs-munmap", "fault-vs-mprotect-split"), max_executions=5000,
                  stateless_executions=5000)
    out = M.run_mutant(m, plan)
    assert out["status"] == "survived", out
    assert [r["reached"] for r in out["runs"]] == [False, True]
    assert all(r["complete"] and r["verdict"] is None for r in out["runs"])
    (cross,) = out["stateless"]
    assert cross["scenario"] == "fault-vs-mprotect-split" and cross["reached"]
    assert cross["complete"] and cross["verdict"] is None


def test_the_unit_tests_catch_what_no_scenario_looks_at(tmp_path: Path) -> None:
    # copy_vma() without vma_dup_policy(): no scenario moves a VMA with a
    # policy, a unit test does (bench/mutation_bench.py --tests)
    m = _real("mremap", "drop", "vma_dup_policy(vma, new)")
    test = Path(__file__).parents[1] / "kernel" / "test_mempolicy.py"
    which = f"{test}::test_each_vma_owns_its_policy_through_split_fork_mremap_and_munmap"
    assert M.run_tests(m, [which]) == "killed"
    other = _real("mremap", "drop", "await unlink_anon_vmas(vma)")
    assert M.run_tests(other, [which]) == "passed"
    assert M.run_tests(m, [str(tmp_path / "no_such_test.py")]) == "failed"
