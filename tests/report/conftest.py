"""One ``pervma report --quick`` shared by the tests.

The folder name carries ``<script>`` so that every test also sees how the
report treats hostile text that comes from the system (its own path)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pervma.report.settings import QUICK, TINY, Settings

HOSTILE = "r<script>alert(1)</script>&\"x"


@dataclass
class Report:
    dir: Path
    rc: int
    stdout: str
    stderr: str
    settings: Settings

    @property
    def html(self) -> str:
        return (self.dir / "index.html").read_text(encoding="utf-8")


def run_cli(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pervma", *argv], capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    out = tmp_path_factory.mktemp("report") / HOSTILE
    p = run_cli("report", "--quick", "--jobs", "2", "--out", str(out))
    return Report(out, p.returncode, p.stdout, p.stderr, QUICK)


@pytest.fixture(scope="session")
def small_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """The same page with the internal tiny budgets, for tests that look at the
    HTML rather than the numbers (the browser test)."""
    out = tmp_path_factory.mktemp("small") / HOSTILE
    p = run_cli("report", "--tiny", "--jobs", "2", "--out", str(out))
    return Report(out, p.returncode, p.stdout, p.stderr, TINY)
