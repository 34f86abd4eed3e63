"""Fixtures for the layout tests: the running kernel's BTF and pahole."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pervma.layout import btf as B

VMLINUX = Path("/sys/kernel/btf/vmlinux")


@pytest.fixture(scope="session")
def vmlinux() -> B.Btf:
    if not VMLINUX.exists():
        pytest.skip("no /sys/kernel/btf/vmlinux (kernel without CONFIG_DEBUG_INFO_BTF)")
    return B.load(VMLINUX)


@pytest.fixture(scope="session")
def vmlinux_bytes() -> bytes:
    if not VMLINUX.exists():
        pytest.skip("no /sys/kernel/btf/vmlinux (kernel without CONFIG_DEBUG_INFO_BTF)")
    return VMLINUX.read_bytes()


def pahole_blocks(names: list[str]) -> dict[str, str]:
    """``pahole -C a,b,c`` output split per struct (pahole reads the kernel's BTF)."""
    out = subprocess.run(["pahole", "-C", ",".join(names)], capture_output=True, text=True,
                         check=False).stdout
    blocks: dict[str, str] = {}
    cur: list[str] = []
    for line in out.splitlines():
        cur.append(line)
        if line.startswith("}"):
            blocks[cur[0].split()[1]] = "\n".join(cur)
            cur = []
    return blocks


@pytest.fixture(scope="session")
def pahole() -> str:
    path = shutil.which("pahole")
    if path is None:
        pytest.skip("pahole not installed (Debian package dwarves)")
    if not VMLINUX.exists():
        pytest.skip("no /sys/kernel/btf/vmlinux for pahole to read")
    return path
