"""Every entry of the call registry is drawn by the generator and runs, both
serially and under the explorer (a small budget), on a correct model without
a finding."""

from __future__ import annotations

import itertools

from pervma.check.fuzz.explore import explore_program
from pervma.check.fuzz.generate import generate
from pervma.check.fuzz.program import Program
from pervma.check.fuzz.registry import all_calls, get_call
from pervma.check.fuzz.world import FuzzWorld
from pervma.config import Config
from pervma.sched import RunScope, run_scope_active

SEED = 0
SEARCH = 1000  # programs looked at to find each entry drawn at least once
PLACEHOLDERS = {"no binder", "no tcp", "blocked"}


def _first_programs() -> dict[str, tuple[int, Program]]:
    want = {e.name for e in all_calls()}
    first: dict[str, tuple[int, Program]] = {}
    for i in range(SEARCH):
        prog = generate(SEED, i)
        for t in prog.threads:
            for c in t.calls:
                first.setdefault(c.call, (i, prog))
        if want <= set(first):
            break
    return first


def _serial(prog: Program, cfg: Config) -> tuple[list[tuple[int, int]], list[object]]:
    n = len(prog.threads)
    closer = [i for i, th in enumerate(prog.threads) if th.calls[0].call == "uffd_close"]
    rest = [i for i in range(n) if i not in closer]
    perms = [list(p) + closer for p in itertools.permutations(rest)] + [closer + rest]
    for perm in perms:
        order = [(t, k) for t in perm for k in range(len(prog.threads[t].calls))]
        with run_scope_active(RunScope()):
            outs = FuzzWorld(prog, cfg, track=False).run_serial(order)
        if "blocked" not in outs:
            break
    return order, list(outs)


def test_every_registry_entry_is_drawn_and_runs() -> None:
    cfg = Config.preset("universal")
    first = _first_programs()
    missing = sorted({e.name for e in all_calls()} - set(first))
    assert not missing, f"never drawn in {SEARCH} programs: {missing}"
    explored: dict[int, str] = {}
    for name, (i, prog) in sorted(first.items()):
        # Serially: each call of the program runs to an outcome of its own (the
        # first order of whole threads in which no fault waits on the userfaultfd:
        # its closer last, else first).
        order, outs = _serial(prog, cfg)
        assert len(outs) == len(order), (name, i, outs)
        got = [o for (t, k), o in zip(order, outs, strict=True)
               if prog.threads[t].calls[k].call == name]
        assert got and not any(str(o).startswith("violation") for o in got), (name, got)
        assert not PLACEHOLDERS & {str(o) for o in got}, (name, i, got)
        # Explored: a small budget, every oracle, no finding on the correct model.
        if i not in explored:
            res = explore_program(prog, cfg, dpor_executions=10, pct_executions=3, seed=SEED)
            assert res.violation is None, (i, res.violation)
            assert res.executions >= 1
            o = res.oracle
            assert o.judged + o.skipped + o.undecided >= 1  # the oracle saw the executions
            explored[i] = name


def test_registry_entries_are_well_formed() -> None:
    for e in all_calls():
        assert get_call(e.name) is e
        assert e.doc and e.weight >= 1
        assert e.needs in (None, "uffd", "binder", "tcp")
        if e.walks is not None:
            assert "addr" in e.params or "old_addr" in e.params or e.name == "brk"
    kernel_internal = {"read_maps", "procmap_query", "rmap_walk", "binder_free_page",
                       "binder_install_page", "tcp_receive", "uffd_copy", "uffd_zeropage",
                       "uffd_move", "uffd_unregister", "uffd_close", "uffd_writeprotect",
                       "truncate", "clear_refs", "bpf_stack_build_id", "uffd_wake",
                       "mirror_fault"}
    assert {e.name for e in all_calls() if not e.atomic} == kernel_internal
    assert {e.name for e in all_calls() if e.access} == {"load", "store"}
    assert {"mmap", "munmap", "mprotect", "mremap", "madvise", "brk", "fork"} <= \
        {e.name for e in all_calls()}


#: Thread API methods that are not calls of a program, and why.
NOT_CALLS = {
    "binder_mmap": "the setup's binder VMA kind",
    "tcp_mmap": "the setup's tcp VMA kind",
    "userfaultfd": "the setup's uffd (UFFDIO_API and UFFDIO_REGISTER there)",
    "mmu_notifier_register": "mirror_fault registers the process's mirror first",
    "user": "time in user space, a cost for the simulator: no kernel work",
    "kill": "a signal from outside the program (pervma check's killable scenarios)",
    "start": "the driver's entry, not an API call",
}


def test_every_thread_api_is_a_registered_call() -> None:
    """Every syscall and kernel-internal caller a model thread offers (the
    public methods of kernel/system.py's Thread, AsyncUserfaultfd and
    AsyncMmuMirror) is a registry entry or is listed above with its reason: a
    feature that adds an API to the model and not to the registry fails here."""
    import inspect

    from pervma.kernel.system import AsyncMmuMirror, AsyncUserfaultfd, Thread

    names = {e.name for e in all_calls()}
    thread_api = {n for n, f in inspect.getmembers(Thread, inspect.isfunction)
                  if not n.startswith("_")}
    missing = sorted(n for n in thread_api - set(NOT_CALLS) if n not in names)
    assert not missing, f"Thread API without a fuzz call: {missing}"
    uffd_api = {n for n, f in inspect.getmembers(AsyncUserfaultfd, inspect.isfunction)
                if not n.startswith("_")} - {"on", "api", "register", "read"}
    assert {f"uffd_{n}" for n in uffd_api} <= names, sorted(uffd_api)
    mirror_api = {n for n, f in inspect.getmembers(AsyncMmuMirror, inspect.isfunction)
                  if not n.startswith("_")} - {"on", "entries", "load", "store"}
    assert {f"mirror_{n}" for n in mirror_api} <= names, sorted(mirror_api)
