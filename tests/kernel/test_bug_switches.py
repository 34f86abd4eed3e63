"""Bug switches (kernel/bugs.py) are read through one accessor, Config.bug(),
and every switch site names a catalogued bug: the sources are checked by AST,
so a new site that reads ``config.bugs`` directly, or names a bug the
catalogue lacks, fails here."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

from pervma.config import Config
from pervma.kernel.bugs import BUG_IDS

KERNEL = pathlib.Path(__file__).resolve().parents[2] / "src" / "pervma" / "kernel"


def _modules() -> list[tuple[str, ast.Module]]:
    return [(p.name, ast.parse(p.read_text())) for p in sorted(KERNEL.glob("*.py"))]


def test_bug_is_on_only_for_the_switched_bugs() -> None:
    cfg = Config.preset("universal").with_bugs("B13", "B16")
    assert [b for b in BUG_IDS if cfg.bug(b)] == ["B13", "B16"]
    assert not any(Config.preset("legacy").bug(b) for b in BUG_IDS)


def test_bug_refuses_an_id_outside_the_catalogue() -> None:
    with pytest.raises(AssertionError, match="unknown bug switch 'B99'"):
        Config.preset("universal").bug("B99")


def test_the_model_reads_bug_switches_only_through_config_bug() -> None:
    direct = [f"{name}:{n.lineno}" for name, tree in _modules() if name != "bugs.py"
              for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "bugs"]
    assert direct == []


def test_every_switch_site_names_a_catalogued_bug_and_every_bug_has_a_site() -> None:
    sites: dict[str, list[str]] = {}
    for name, tree in _modules():
        for n in ast.walk(tree):
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and n.func.attr == "bug" and n.args
                    and isinstance(n.args[0], ast.Constant)):
                sites.setdefault(n.args[0].value, []).append(f"{name}:{n.lineno}")
    assert set(sites) == set(BUG_IDS)


def test_historical_bodies_are_named_after_a_catalogued_bug() -> None:
    suffix = re.compile(r"_b(\d\d)$")
    named = {f"B{m.group(1)}" for _, tree in _modules() for n in ast.walk(tree)
             if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
             and (m := suffix.search(n.name))}
    assert named == {"B02", "B09", "B16"}
