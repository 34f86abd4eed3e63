"""Differential test of truncate of a mapped file: one fixed sequence runs on
the running kernel (in a forked child, on a file in a temporary directory)
and on the model, and every user-visible result must be identical: the
mappings, the bytes read before the new end (a partial last page has its
tail zeroed), SIGBUS beyond it for shared pages and private COW copies
alike, and zeroes once the file grows again.

Layout (both sides), addresses compared relative to base::

    base    base+P                    base+5P                     base+9P  base+10P
    | guard | file, shared, 4 pages rw | file, private, 4 pages rw | guard |

Each access the test compares is made by a forked grandchild, so a SIGBUS
ends only it: the result is the byte (an exit status) or the signal.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import pickle
import shutil
import signal
import tempfile
import traceback
from typing import Any

import pytest
from forkrun import run_in_child

from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    Config,
    Segfault,
    System,
)
from pervma.host import usermm
from pervma.kernel.fault import SIGBUS_FAULT

HINT = 0x3D0000000000
RW = PROT_READ | PROT_WRITE
CHILD_TIMEOUT = 30.0
SHARED, PRIVATE = PAGE, 5 * PAGE  # the two file mappings, relative to base
#: (what, offset from base, write): the accesses compared after the shrink
AFTER_SHRINK = [
    ("shared page 0", SHARED + 10, False),
    ("shared partial page", SHARED + PAGE + 10, False),
    ("shared partial page, beyond i_size", SHARED + PAGE + 4000, False),
    ("shared page 2", SHARED + 2 * PAGE, False),
    ("shared page 3", SHARED + 3 * PAGE + 10, False),
    ("shared store beyond EOF", SHARED + 2 * PAGE + 1, True),
    ("private page 1", PRIVATE + PAGE + 100, False),
    ("private COW copy beyond EOF", PRIVATE + 3 * PAGE, False),
    ("private page 2", PRIVATE + 2 * PAGE + 100, False),
]
AFTER_GROW = [
    ("shared page 3, grown", SHARED + 3 * PAGE + 10, False),
    ("private page 3, grown", PRIVATE + 3 * PAGE, False),
    ("private page 0", PRIVATE + 10, False),
]
SHRINK_TO = PAGE + 200


# ---------------------------------------------------------------------------
# The real kernel (in the forked child)
# ---------------------------------------------------------------------------
def _access(addr: int, write: bool) -> int:
    """The byte a grandchild reads at addr (or 0 after a store), or -signal."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the grandchild
        code = 100
        try:
            faulthandler.disable()
            if write:
                ctypes.c_ubyte.from_address(addr).value = 1
                code = 0
            else:
                code = ctypes.c_ubyte.from_address(addr).value
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _layout(base: int) -> list[tuple[int, int, str]]:
    return [((int(a, 16) - base) // PAGE, (int(b, 16) - base) // PAGE, line.split()[1])
            for line in usermm.maps_lines(base, base + 10 * PAGE)
            for a, b in [line.split()[0].split("-")]]


def _ftruncate(fd: int, length: int) -> int:
    try:
        os.ftruncate(fd, length)
        return 0
    except OSError as err:
        return -(err.errno or 0)


def _real(wfd: int) -> None:
    try:
        out = _real_sequence()
        os.write(wfd, pickle.dumps(("ok", out)))
    except BaseException:
        os.write(wfd, pickle.dumps(("error", traceback.format_exc())))


def _real_sequence() -> dict[str, Any]:
    r: dict[str, Any] = {}
    d = tempfile.mkdtemp(prefix="pervma-trunc-")
    try:
        fd = os.open(os.path.join(d, "f"), os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, 4 * PAGE)
        for i in range(4):
            os.pwrite(fd, bytes([i + 1]), i * PAGE + 10)
            os.pwrite(fd, bytes([0x40 + i]), i * PAGE + 100)
        base = usermm.mmap(HINT, 10 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS)
        for page in (0, 9):
            usermm.mmap(base + page * PAGE, PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
        r["mmap_shared"] = usermm.mmap(base + SHARED, 4 * PAGE, RW, MAP_SHARED | MAP_FIXED, fd, 0) - base
        r["mmap_private"] = usermm.mmap(base + PRIVATE, 4 * PAGE, RW, MAP_PRIVATE | MAP_FIXED, fd, 0) - base
        r["loads"] = [ctypes.c_ubyte.from_address(base + SHARED + i * PAGE + 10).value for i in range(4)]
        ctypes.c_ubyte.from_address(base + PRIVATE + 3 * PAGE).value = 9
        ctypes.c_ubyte.from_address(base + SHARED + PAGE + 4000).value = 0x55
        r["layout_before"] = _layout(base)
        r["negative"] = _ftruncate(fd, -1)
        r["shrink"] = _ftruncate(fd, SHRINK_TO)
        r["size"] = os.fstat(fd).st_size
        r["layout_after"] = _layout(base)
        r["after_shrink"] = [_access(base + off, w) for _, off, w in AFTER_SHRINK]
        r["grow"] = _ftruncate(fd, 4 * PAGE)
        r["after_grow"] = [_access(base + off, w) for _, off, w in AFTER_GROW]
        r["layout_end"] = _layout(base)
        os.close(fd)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return r


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------
def _model(preset: str, base: int) -> dict[str, Any]:
    r: dict[str, Any] = {}
    kern = System(Config.preset(preset))
    f = kern.create_file("/tmp/f", 4)
    for i in range(4):
        f.contents[i] = {10: i + 1, 100: 0x40 + i}
    p = kern.spawn()
    p.mmap(base, 10 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    for page in (0, 9):
        p.mmap(base + page * PAGE, PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    r["mmap_shared"] = p.mmap(base + SHARED, 4 * PAGE, RW, MAP_SHARED | MAP_FIXED, f, 0) - base
    r["mmap_private"] = p.mmap(base + PRIVATE, 4 * PAGE, RW, MAP_PRIVATE | MAP_FIXED, f, 0) - base
    r["loads"] = [p.load(base + SHARED + i * PAGE + 10) for i in range(4)]
    p.store(base + PRIVATE + 3 * PAGE, 9)
    p.store(base + SHARED + PAGE + 4000, 0x55)

    def layout() -> list[tuple[int, int, str]]:
        return [((v.vm_start - base) // PAGE, (v.vm_end - base) // PAGE,
                 ("r" if v.vm_flags & 1 else "-") + ("w" if v.vm_flags & 2 else "-")
                 + ("x" if v.vm_flags & 4 else "-") + ("s" if v.vm_flags & 0x80 else "p"))
                for v in p.mm.mm_mt.overlapping(base, base + 10 * PAGE)]

    def truncate(length: int) -> int:
        try:
            kern.truncate(f, length)
            return 0
        except OSError as err:
            return -(err.errno or 0)

    def access(addr: int, write: bool) -> int:
        try:
            if write:
                p.store(addr, 1)
                return 0
            return p.load(addr)
        except Segfault as sf:
            return -int(signal.SIGBUS) if sf.code == SIGBUS_FAULT else -int(signal.SIGSEGV)

    r["layout_before"] = layout()
    r["negative"] = truncate(-1)
    r["shrink"] = truncate(SHRINK_TO)
    r["size"] = f.i_size
    r["layout_after"] = layout()
    r["after_shrink"] = [access(base + off, w) for _, off, w in AFTER_SHRINK]
    r["grow"] = truncate(4 * PAGE)
    r["after_grow"] = [access(base + off, w) for _, off, w in AFTER_GROW]
    r["layout_end"] = layout()
    return r


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    why = usermm.unavailable()
    if why:
        pytest.skip(why)
    (r,) = run_in_child(_real, CHILD_TIMEOUT)
    return r


@pytest.mark.parametrize("preset", ["legacy", "universal", "universal-up", "universal-up-nopreempt"])
def test_truncate_of_a_mapped_file_matches_the_running_kernel(real: dict[str, Any], preset: str) -> None:
    model = _model(preset, HINT)
    assert model == real, [(k, model.get(k), real.get(k)) for k in real if model.get(k) != real.get(k)]


def test_the_sequence_sees_what_it_is_meant_to(real: dict[str, Any]) -> None:
    """The running kernel's answers are the ones the sequence is built to
    show (so a comparison of two wrong models cannot pass unnoticed)."""
    sigbus = -int(signal.SIGBUS)
    assert real["loads"] == [1, 2, 3, 4] and real["negative"] < 0 and real["shrink"] == 0
    assert real["size"] == SHRINK_TO and real["layout_after"] == real["layout_before"]
    assert real["after_shrink"] == [1, 2, 0, sigbus, sigbus, sigbus, 0x41, sigbus, sigbus]
    assert real["after_grow"] == [0, 0, 1]
