"""Rules a scenario must keep for the stateful search to be sound on it.

A state met again is not explored again, so the checks run at an
execution's end see one of the executions that reach that state.  They may
read the model (every object a thread reaches is in the state key) and what
each thread returned (``World.results``, in the key too), but not a
container a thread body fills beside them: two ends that differ only in it
are one state, and the check runs on one of them (the twenty-third session's
``_rmap_walker`` kept its findings so, and the stateful search missed a walk
that lost its page).  This test reads the scenario library's source: no
thread body (an ``async def`` nested in a scenario's builder) changes a
container it did not make itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pervma.check.scenarios as scenarios_pkg

MUTATORS = {"append", "extend", "add", "update", "insert", "pop", "remove", "clear",
            "setdefault", "discard", "appendleft", "popleft"}


def _locals(fn: ast.AsyncFunctionDef) -> set[str]:
    """Names the body binds itself (parameters, assignments, loop targets)."""
    names = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def _outside_writes(fn: ast.AsyncFunctionDef) -> list[str]:
    own = _locals(fn)
    bad = []
    for node in ast.walk(fn):
        target = None
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in MUTATORS and isinstance(node.func.value, ast.Name)):
            target = node.func.value.id
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name):
                    target = t.value.id
        if target is not None and target not in own:
            bad.append(f"{fn.name}() line {node.lineno}: changes {target!r}")
    return sorted(bad, key=lambda b: int(b.split("line ")[1].split(":")[0]))


def _thread_bodies(tree: ast.Module) -> list[ast.AsyncFunctionDef]:
    """``async def`` functions nested in another function: a scenario's thread bodies."""
    out = []
    for top in tree.body:
        if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out += [n for n in ast.walk(top) if isinstance(n, ast.AsyncFunctionDef) and n is not top]
    return out


def test_no_thread_body_keeps_findings_outside_the_state() -> None:
    bad = []
    for path in sorted(Path(scenarios_pkg.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in _thread_bodies(tree):
            bad += [f"{path.name}: {b}" for b in _outside_writes(fn)]
    assert bad == []


def test_the_rule_sees_a_list_filled_beside_the_threads() -> None:
    src = '''
def build(w):
    found = []

    async def walk(t):
        mine = []
        mine.append(1)
        found.extend(await t.walk())
        seen[0] = 1
        return mine
'''
    (fn,) = _thread_bodies(ast.parse(src))
    assert _outside_writes(fn) == ["walk() line 8: changes 'found'", "walk() line 9: changes 'seen'"]
