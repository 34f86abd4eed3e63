"""Item 3's start: racing-pair coverage of an exploration, and mutation."""

from __future__ import annotations

import random

from pervma.check.fuzz.explore import explore_program
from pervma.check.fuzz.generate import FUZZ_BASE, generate
from pervma.check.fuzz.mutate import OPERATORS, mutate
from pervma.check.fuzz.program import SCHEMA, VERSION, from_json
from pervma.config import Config

A = FUZZ_BASE


def test_coverage_names_the_racing_locations() -> None:
    prog = from_json({"schema": SCHEMA, "version": VERSION,
                      "setup": {"processes": [{"name": "p", "vmas": [
                          {"kind": "anon", "addr": hex(A), "pages": 1, "populate": False}]}]},
                      "threads": [{"process": "p", "calls": [
                          {"call": "munmap", "args": {"addr": hex(A), "len": 4096}}]},
                          {"process": "p", "calls": [{"call": "load", "args": {"addr": hex(A)}}]}]})
    res = explore_program(prog, Config.preset("universal"), dpor_executions=500, pct_executions=0)
    assert res.complete and res.violation is None
    # The load's fault races munmap: on the PTE, and (per-VMA locks) on the
    # VMA's refcount that munmap's write lock excludes readers through.
    assert ("pte", True, False) in res.coverage or ("pte", False, True) in res.coverage
    assert any(k == "vm_refcnt" for k, _, _ in res.coverage)
    legacy = explore_program(prog, Config.preset("legacy"), dpor_executions=500, pct_executions=0)
    assert not any(k == "vm_refcnt" for k, _, _ in legacy.coverage)  # no per-VMA locks there
    assert "racing pairs" in res.summary()


def test_mutations_are_valid_deterministic_and_use_every_operator() -> None:
    seen: set[str] = set()
    a: list[str] = []
    for i in range(30):
        prog = generate(5, i)
        r = random.Random(i)
        m, op = mutate(prog, r)
        seen.add(op)
        assert from_json(m.to_json()).dumps() == m.dumps()
        assert (op == "none") == (m.dumps() == prog.dumps()) or op in ("swap", "shift")
        closers = [t for t in m.threads if any(c.call == "uffd_close" for c in t.calls)]
        assert all(len(t.calls) == 1 for t in closers)
        a.append(m.dumps())
    assert seen >= set(OPERATORS)
    again = [mutate(generate(5, i), random.Random(i))[0].dumps() for i in range(30)]
    assert again == a


def test_mutated_programs_explore_clean() -> None:
    cfg = Config.preset("universal")
    r = random.Random(3)
    prog = generate(3, 2)
    for _ in range(4):
        prog, _op = mutate(prog, r, cfg)
        res = explore_program(prog, cfg, dpor_executions=30, pct_executions=5)
        assert res.violation is None, res.counterexample
