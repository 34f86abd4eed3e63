"""The model's imports: module-scope imports among ``pervma.kernel.*`` form no
cycle, and every import made inside a function (a deferred import) is one of
a named list, each with the reason it cannot be at module scope.

Read from the sources by AST: module scope is what runs at import time
(class bodies included), minus ``if TYPE_CHECKING:`` blocks; an import inside
a function body is deferred.  A new deferred import fails here until it is
listed with its reason; a listed one that no longer closes a cycle fails too
(move it to module scope and drop it from the list)."""

from __future__ import annotations

import ast
from pathlib import Path

KERNEL = Path(__file__).resolve().parents[2] / "src" / "pervma" / "kernel"
PACKAGE = "pervma.kernel"

#: (module, function, imported module) -> why the import is deferred.
ALLOWED_DEFERRED: dict[tuple[str, str, str], str] = {
    # Natural, as the kernel's mm/memory.c <-> mm/mmap.c: the fault path's
    # lock_mm_and_find_vma() grows the stack (mmap.py), and mmap.py's syscalls
    # and populate reach the fault path (mmap -> fault -> memory -> mmap_lock).
    ("mmap_lock", "lock_mm_and_find_vma", "mmap"):
        "fault <-> stack expansion, natural as mm/memory.c <-> mm/mmap.c",
    ("mmap_lock", "_lock_mm_and_find_vma_b02", "mmap"):
        "the same call in the historical B02 body beside it",
    ("memory", "_handle_userfault", "userfaultfd"):
        "a fault hands over to userfaultfd, whose ioctls fault pages in (mm/memory.c <-> "
        "fs/userfaultfd.c)",
    ("vma", "vms_gather_munmap_vmas", "userfaultfd"):
        "munmap's gather prepares userfaultfd UNMAP events; userfaultfd registers VMAs through "
        "vma_modify (mm/vma.c <-> fs/userfaultfd.c)",
    ("userfaultfd_mm", "_mmput", "mmap"):
        "mmput() tears the mm down in mmap.py, which duplicates and releases userfaultfd "
        "contexts (kernel/fork.c <-> fs/userfaultfd.c)",
    ("debug", "validate_mm", "mm_types"):
        "debug.py sits below mm_types (locks and slab report through it); validate_mm reads "
        "VM_REFCNT_EXCLUDE_READERS_FLAG",
    ("debug", "_validate_pte", "mm_types"):
        "the same: the PTE check reads VmFlags",
    ("debug", "_validate_committed", "mm_types"):
        "the same: the overcommit check reads VmFlags.VM_ACCOUNT",
    ("mmu_notifier", "__mmu_notifier_register", "vma"):
        "registration takes mm_take_all_locks() (mm/vma.c), whose zap reaches the notifier "
        "hooks (vma -> memory -> mmu_notifier)",
    # lockdep.py sits below debug.py, whose lockdep_acquire/release feed its graph; its
    # reports go out through debug.report (kernel/locking/lockdep.c prints through printk).
    ("lockdep", "_circular", "debug"): "the circular-dependency report goes through debug.report",
    ("lockdep", "recursive", "debug"): "the recursive-locking report goes through debug.report",
    ("lockdep", "might_sleep", "debug"): "the sleeping-in-atomic report goes through debug.report",
    ("lockdep", "might_sleep", "locks"):
        "might_sleep() asks whether a held lock is a spinlock; locks.py calls into lockdep",
    # mm/mempolicy.c <-> mm/vma.c and mm/memory.c: VMA surgery duplicates, compares and
    # puts policies, the fault reads them (vma.py, memory.py -> mempolicy.py); mbind in turn
    # splits and merges VMAs and migrates pages.
    ("mempolicy", "mbind_range", "vma"):
        "mbind_range() -> vma_modify_policy(); vma.py uses mpol_equal/mpol_put/vma_dup_policy",
    ("mempolicy", "migrate_pages", "memory"):
        "migration allocates pages and sets PTEs; the fault path reads the VMA policy",
    # No cycle: these may move to module scope; left as they are while their
    # files take concurrent edits (issue #13), to keep the merge small.
    ("task_mmu", "do_procmap_query", "mmap"): "no cycle: may move to module scope",
    ("task_mmu", "do_procmap_query", "userfaultfd_mm"): "no cycle: may move to module scope",
    ("userfaultfd_mm", "copy_from_user", "fault"): "no cycle: may move to module scope",
}
NO_CYCLE = {k for k, why in ALLOWED_DEFERRED.items() if why.startswith("no cycle")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.Import | ast.ImportFrom, modules: set[str]) -> list[str]:
    """The pervma.kernel modules an import statement loads (short names)."""
    names: list[str] = []
    if isinstance(node, ast.ImportFrom):
        assert node.level == 0, "the model uses absolute imports"
        base = node.module or ""
        for alias in node.names:
            full = f"{base}.{alias.name}"  # from pervma.kernel import debug
            names.append(full if full.removeprefix(PACKAGE + ".") in modules else base)
    else:
        names = [alias.name for alias in node.names]
    return sorted({n.removeprefix(PACKAGE + ".") for n in names
                   if n.startswith(PACKAGE + ".") and n.removeprefix(PACKAGE + ".") in modules})


def _scan() -> tuple[dict[str, set[str]], set[tuple[str, str, str]]]:
    """Module-scope import graph, and the deferred imports as
    (module, function qualname, imported module)."""
    modules = {p.stem for p in KERNEL.glob("*.py") if p.stem != "__init__"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    deferred: set[tuple[str, str, str]] = set()

    def walk(mod: str, body: list[ast.stmt], func: str | None, scope: str) -> None:
        for node in body:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                walk(mod, node.orelse, func, scope)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for t in _targets(node, modules):
                    if func is None:
                        graph[mod].add(t)
                    else:
                        deferred.add((mod, func, t))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                walk(mod, node.body, func or scope + node.name, scope + node.name + ".")
            elif isinstance(node, ast.ClassDef):
                walk(mod, node.body, func, scope + node.name + ".")
            else:  # if, try, with, for, while: their blocks run where they stand
                for field in ("body", "orelse", "finalbody"):
                    sub = getattr(node, field, None)
                    if isinstance(sub, list):
                        walk(mod, sub, func, scope)
                for handler in getattr(node, "handlers", []):
                    walk(mod, handler.body, func, scope)

    for mod in sorted(modules):
        walk(mod, ast.parse((KERNEL / f"{mod}.py").read_text()).body, None, "")
    return graph, deferred


def _path(graph: dict[str, set[str]], src: str, dst: str) -> list[str] | None:
    """A chain of module-scope imports from src to dst, if any (depth-first)."""
    stack, seen = [[src]], {src}
    while stack:
        chain = stack.pop()
        if chain[-1] == dst:
            return chain
        for nxt in sorted(graph[chain[-1]], reverse=True):
            if nxt not in seen:
                seen.add(nxt)
                stack.append([*chain, nxt])
    return None


def test_the_scan_sees_the_model_imports() -> None:
    graph, deferred = _scan()
    assert {"debug", "mm_types"} <= graph["mmap_lock"]  # from pervma.kernel import debug, ...
    assert "mmap_lock" not in graph["debug"]  # the VM_REFCNT_* constants live in mm_types
    assert ("mmap_lock", "lock_mm_and_find_vma", "mmap") in deferred


def test_module_scope_imports_of_the_model_are_acyclic() -> None:
    graph, _ = _scan()
    cycles = [" -> ".join([m, *chain]) for m in sorted(graph) for n in sorted(graph[m])
              if (chain := _path(graph, n, m))]
    assert cycles == []


def test_deferred_imports_are_exactly_the_allowed_ones() -> None:
    _, deferred = _scan()
    assert sorted(deferred - ALLOWED_DEFERRED.keys()) == [], "list it with its reason, or import it at module scope"
    assert sorted(ALLOWED_DEFERRED.keys() - deferred) == [], "gone from the sources: drop it from the list"


def test_each_deferred_import_listed_as_needed_would_close_a_cycle() -> None:
    graph, _ = _scan()
    closes = {(m, f, t): _path(graph, t, m) is not None for m, f, t in ALLOWED_DEFERRED}
    assert {k for k, c in closes.items() if not c} == NO_CYCLE
