"""Shared fixtures: a System per preset and helpers to build model threads."""

from __future__ import annotations

import pytest

from pervma import Config, System
from pervma.config import PRESET_NAMES


@pytest.fixture(params=PRESET_NAMES)
def preset(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def kern() -> System:
    return System(Config.preset("universal"))


def _findings_standin() -> None:
    """Until branch s7h1's ``pervma.check.fuzz.findings`` is merged: a tiny
    stand-in with its interface (signature = kind and message; no minimising),
    so the campaign's tests run.  Inert once the real module exists."""
    import importlib.util
    import sys
    import types
    from pathlib import Path
    from typing import Any

    if importlib.util.find_spec("pervma.check.fuzz.findings") is not None:
        return

    class Findings:
        def __init__(self, cfg: Any, bugs: list[str], preset: str) -> None:
            self.found: dict[tuple[str, str], dict[str, Any]] = {}

        def add(self, index: int, prog: Any, res: Any) -> str | None:
            sig = (res.violation[0], res.violation[1].splitlines()[0])
            f = self.found.get(sig)
            if f is None:
                f = self.found[sig] = {"id": f"finding-{len(self.found) + 1:04d}",
                                       "kind": sig[0], "message": sig[1], "hits": 0,
                                       "first_program": index, "program": prog.dumps(),
                                       "text": prog.describe() + "\n" + res.counterexample}
            f["hits"] += 1
            return str(f["id"])

        def summary(self) -> list[dict[str, Any]]:
            return [{k: v for k, v in f.items() if k not in ("program", "text")}
                    for f in self.found.values()]

        def write(self, directory: Path) -> None:
            for f in self.found.values():
                (directory / f"{f['id']}.program.json").write_text(f["program"])
                (directory / f"{f['id']}.txt").write_text(f["text"] + "\n")

    mod = types.ModuleType("pervma.check.fuzz.findings")
    mod.Findings = Findings  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod


_findings_standin()
