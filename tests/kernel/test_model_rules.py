"""Rules the model's code must keep for every driver to work."""

from __future__ import annotations

import ast
from pathlib import Path

import pervma.kernel

KERNEL = Path(pervma.kernel.__file__).parent
SCHED = KERNEL.parent / "sched"


def _trees(folder: Path) -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text())) for p in sorted(folder.glob("*.py"))]


def test_no_await_in_a_finally_block() -> None:
    """A driver may stop (close) a thread at any step; an await in a finally
    block would then run model code outside the driver."""
    bad = []
    for path, tree in _trees(KERNEL):
        for node in ast.walk(tree):
            if isinstance(node, ast.Try):
                for stmt in node.finalbody:
                    if any(isinstance(n, ast.Await) for n in ast.walk(stmt)):
                        bad.append(f"{path.name}:{stmt.lineno}")
    assert bad == []


def test_model_imports_no_driver_and_no_nondeterminism() -> None:
    bad = []
    for folder, allowed in ((KERNEL, ("pervma.kernel", "pervma.sched", "pervma.config", "pervma.errors")),
                            (SCHED, ("pervma.sched",))):
        for path, tree in _trees(folder):
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    mods = [node.module]
                elif isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                else:
                    continue
                for m in mods:
                    if m.startswith("pervma") and not m.startswith(allowed):
                        bad.append(f"{path.name} imports {m}")
                    if m.split(".")[0] in ("random", "time", "asyncio", "threading"):
                        bad.append(f"{path.name} imports {m}")
    assert bad == []
