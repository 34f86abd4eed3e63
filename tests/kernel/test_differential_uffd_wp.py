"""Differential test of userfaultfd's write-protect mode: one fixed sequence
runs on the running kernel (ctypes, in a forked child) and on the model, and
every user-visible result must be identical — the ioctls' returns, the fault
message, the bytes, and each page's (present, uffd-wp) pair, which the
kernel shows in /proc/self/pagemap (bit 63 present, bit 57 PM_UFFD_WP).

The layout and the traps are test_differential_uffd.py's: the faulting store
is made by the child's only thread while a forked grandchild reads the
message and resolves it with UFFDIO_WRITEPROTECT mode 0 (which wakes the
fault); the context is UFFD_USER_MODE_ONLY.  Skipped with the kernel's
reason where it refuses userfaultfd or write-protect registration.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pickle
import select
import struct
import traceback
from typing import Any

import pytest
from forkrun import run_in_child
from test_differential_uffd import _REASON, CHILD_TIMEOUT, FLAGS, HINT, RW, _ioctl, _layout, _uffd

from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE,
    PROT_NONE,
    PROT_READ,
    UFFD_FEATURE_EVENT_REMAP,
    UFFDIO_API,
    UFFDIO_COPY,
    UFFDIO_COPY_MODE_WP,
    UFFDIO_REGISTER,
    UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
    UFFDIO_UNREGISTER,
    UFFDIO_WAKE,
    UFFDIO_WRITEPROTECT,
    UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
    UFFDIO_WRITEPROTECT_MODE_WP,
    Config,
    Process,
    System,
)
from pervma.host import usermm
from pervma.sched import Executor

WP = UFFDIO_REGISTER_MODE_WP
PROTECT = UFFDIO_WRITEPROTECT_MODE_WP
DONTWAKE = UFFDIO_WRITEPROTECT_MODE_DONTWAKE
# (start page, pages, mode) relative to the region: the error cases, in order
WP_ERRORS = ((0, 1, PROTECT | DONTWAKE), (0, 1, 4), (-1, 1, PROTECT), (5, 1, PROTECT))


# ---------------------------------------------------------------------------
# The real kernel (in the forked child)
# ---------------------------------------------------------------------------
def _pagemap(reg: int, pages: int = 4) -> list[tuple[bool, bool]]:
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        raw = os.pread(fd, 8 * pages, (reg // PAGE) * 8)
    finally:
        os.close(fd)
    return [(bool(e >> 63 & 1), bool(e >> 57 & 1)) for e in struct.unpack(f"{pages}Q", raw)]


def _real(wfd: int) -> None:
    try:
        out = _real_sequence()
        os.write(wfd, pickle.dumps(("ok", out)))
    except BaseException:
        os.write(wfd, pickle.dumps(("error", traceback.format_exc())))


def _real_sequence() -> dict[str, Any]:
    r: dict[str, Any] = {}
    base = usermm.mmap(HINT, 6 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS)
    for page in (0, 5):
        usermm.mmap(base + page * PAGE, PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    reg = base + PAGE
    usermm.mmap(reg, 4 * PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    src = usermm.mmap(0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    ctypes.memset(src, 0x5A, 1)
    for i in (0, 1):
        ctypes.memset(reg + i * PAGE, i + 1, 1)
    fd = _uffd(FLAGS)
    if fd < 0:
        return {"refused": f"userfaultfd(UFFD_USER_MODE_ONLY) failed: {os.strerror(-fd)}"}
    _ioctl(fd, UFFDIO_API, "QQQ", 0xAA, 0, 0)
    ret, reg_out = _ioctl(fd, UFFDIO_REGISTER, "QQQQ", reg, 4 * PAGE, WP, 0)
    if ret:
        return {"refused": f"UFFDIO_REGISTER_MODE_WP failed: {os.strerror(-ret)}"}
    r["reg"] = reg_out[3]
    r["layout_reg"] = _layout(base)
    r["wp_unaligned"] = _ioctl(fd, UFFDIO_WRITEPROTECT, "QQQ", reg + 1, PAGE, PROTECT)[0]
    r["wp_errors"] = [_ioctl(fd, UFFDIO_WRITEPROTECT, "QQQ", reg + first * PAGE, n * PAGE, mode)[0]
                      for first, n, mode in WP_ERRORS]
    r["pagemap_before"] = _pagemap(reg)
    r["wp"] = _ioctl(fd, UFFDIO_WRITEPROTECT, "QQQ", reg, 4 * PAGE, PROTECT)[0]
    r["pagemap_wp"] = _pagemap(reg)
    r["load"] = ctypes.c_ubyte.from_address(reg + PAGE).value  # reads are not trapped
    pid = os.fork()
    if pid == 0:  # the handler: another process
        code = 1
        try:
            ready, _, _ = select.select([fd], [], [], 10.0)
            msg = os.read(fd, 32) if ready else b""
            event, flags, addr = (msg[0], *struct.unpack_from("QQ", msg, 8)) if msg else (0, 0, 0)
            res = _ioctl(fd, UFFDIO_WRITEPROTECT, "QQQ", addr, PAGE, 0)[0] if msg else None
            rfd = os.open(f"/tmp/.pervma-uffd-wp-{os.getppid()}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.write(rfd, pickle.dumps((event, flags, addr - base, res)))
            os.close(rfd)
            code = 0
        finally:
            os._exit(code)
    ctypes.memset(reg + PAGE + 9, 0x42, 1)  # write-protected: sleeps until resolved
    os.waitpid(pid, 0)
    path = f"/tmp/.pervma-uffd-wp-{os.getpid()}"
    with open(path, "rb") as f:
        r["handler"] = pickle.load(f)
    os.unlink(path)
    r["stored"] = ctypes.c_ubyte.from_address(reg + PAGE + 9).value
    r["pagemap_resolved"] = _pagemap(reg)
    r["copy_wp"] = _ioctl(fd, UFFDIO_COPY, "QQQQq", reg + 2 * PAGE, src, PAGE, UFFDIO_COPY_MODE_WP, 0)
    r["pagemap_copy_wp"] = _pagemap(reg)
    r["copy_wp_load"] = ctypes.c_ubyte.from_address(reg + 2 * PAGE).value
    usermm.mprotect(reg, PAGE, PROT_READ)
    usermm.mprotect(reg, PAGE, RW)
    r["layout_mprotect"] = _layout(base)
    r["pagemap_mprotect"] = _pagemap(reg)
    r["resolve_dontwake"] = _ioctl(fd, UFFDIO_WRITEPROTECT, "QQQ", reg + 2 * PAGE, PAGE, DONTWAKE)[0]
    r["wake"] = _ioctl(fd, UFFDIO_WAKE, "QQ", reg + 2 * PAGE, PAGE)[0]
    ctypes.memset(reg + 2 * PAGE + 1, 0x17, 1)  # resolved: no trap
    r["pagemap_dontwake"] = _pagemap(reg)
    r["unreg"] = _ioctl(fd, UFFDIO_UNREGISTER, "QQ", reg, 4 * PAGE)[0]
    r["pagemap_unreg"] = _pagemap(reg)
    ctypes.memset(reg, 0x66, 1)  # unregistered: page 0's protection is gone
    r["bytes"] = [ctypes.c_ubyte.from_address(reg + off).value
                  for off in (0, PAGE, PAGE + 9, 2 * PAGE, 2 * PAGE + 1)]
    r["layout_unreg"] = _layout(base)
    return r


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------
def _model_pagemap(p: Process, reg: int, pages: int = 4) -> list[tuple[bool, bool]]:
    out = []
    for i in range(pages):
        pte = p.mm.pgtable.get(reg // PAGE + i)
        out.append((pte is not None, pte is not None and pte.uffd_wp))
    return out


def _model(preset: str, base: int) -> dict[str, Any]:
    r: dict[str, Any] = {}
    kern = System(Config.preset(preset))
    p = kern.spawn()
    p.mmap(base, 6 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    for page in (0, 5):
        p.mmap(base + page * PAGE, PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    reg = base + PAGE
    p.mmap(reg, 4 * PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    src = p.mmap(0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(src, 0x5A)
    for i in (0, 1):
        p.store(reg + i * PAGE, i + 1)
    u = p.userfaultfd(FLAGS)
    u.api()

    def err(f: Any, *a: Any) -> int:
        try:
            f(*a)
        except OSError as e:
            return -(e.errno or 0)
        return 0

    def layout() -> list[tuple[int, int, str]]:
        return [((v.vm_start - base) // PAGE, (v.vm_end - base) // PAGE,
                 ("r" if v.vm_flags & 1 else "-") + ("w" if v.vm_flags & 2 else "-")
                 + ("x" if v.vm_flags & 4 else "-") + ("s" if v.vm_flags & 0x80 else "p"))
                for v in p.mm.mm_mt.overlapping(base, base + 6 * PAGE)]

    r["reg"] = u.register(reg, 4 * PAGE, WP)
    r["layout_reg"] = layout()
    r["wp_unaligned"] = err(u.writeprotect, reg + 1, PAGE, PROTECT)
    r["wp_errors"] = [err(u.writeprotect, reg + first * PAGE, n * PAGE, mode) for first, n, mode in WP_ERRORS]
    r["pagemap_before"] = _model_pagemap(p, reg)
    r["wp"] = u.writeprotect(reg, 4 * PAGE, PROTECT)
    r["pagemap_wp"] = _model_pagemap(p, reg)
    r["load"] = p.load(reg + PAGE)
    handler = p.fork()
    f = p.thread()
    uh = u.on(handler.main)

    async def write(t: Any) -> None:
        await t.store(reg + PAGE + 9, 0x42)

    async def handle(t: Any) -> tuple[int, ...]:
        while True:
            try:
                m = await uh.read()
                break
            except OSError:
                await t.user("poll")
        res = await uh.writeprotect(m["address"], PAGE, 0)
        return (m["event"], m["flags"], m["address"] - base, res)

    ex = Executor([f.start(write), handler.main.start(handle)], models=[f.task, handler.main.task])
    while not ex.finished():
        runnable = ex.runnable()
        assert runnable, ex.deadlock()
        ex.step(runnable[0])  # the write first: it sleeps before the handler polls
    assert ex.violation is None
    r["handler"] = ex.tasks[1].result
    r["stored"] = p.load(reg + PAGE + 9)
    r["pagemap_resolved"] = _model_pagemap(p, reg)
    try:
        n = u.copy(reg + 2 * PAGE, src, PAGE, UFFDIO_COPY_MODE_WP)
        r["copy_wp"] = (0, (reg + 2 * PAGE, src, PAGE, UFFDIO_COPY_MODE_WP, n))
    except OSError as e:
        r["copy_wp"] = (-(e.errno or 0), (reg + 2 * PAGE, src, PAGE, UFFDIO_COPY_MODE_WP, getattr(e, "count", 0)))
    r["pagemap_copy_wp"] = _model_pagemap(p, reg)
    r["copy_wp_load"] = p.load(reg + 2 * PAGE)
    p.mprotect(reg, PAGE, PROT_READ)
    p.mprotect(reg, PAGE, RW)
    r["layout_mprotect"] = layout()
    r["pagemap_mprotect"] = _model_pagemap(p, reg)
    r["resolve_dontwake"] = err(u.writeprotect, reg + 2 * PAGE, PAGE, DONTWAKE)
    r["wake"] = err(u.wake, reg + 2 * PAGE, PAGE)
    p.store(reg + 2 * PAGE + 1, 0x17)
    r["pagemap_dontwake"] = _model_pagemap(p, reg)
    r["unreg"] = err(u.unregister, reg, 4 * PAGE)
    r["pagemap_unreg"] = _model_pagemap(p, reg)
    p.store(reg, 0x66)
    r["bytes"] = [p.load(reg + off) for off in (0, PAGE, PAGE + 9, 2 * PAGE, 2 * PAGE + 1)]
    r["layout_unreg"] = layout()
    return r


@pytest.mark.skipif(_REASON is not None, reason=f"differential test: {_REASON}")
@pytest.mark.parametrize("preset", ["universal", "legacy"])
def test_write_protect_mode_matches_the_running_kernel(preset: str) -> None:
    """23 compared results: the WP registration's ioctls and layouts, five
    UFFDIO_WRITEPROTECT errors, the fault message and its resolution, the
    uffd-wp bits of four pages at seven points, COPY_MODE_WP, WAKE, mprotect
    keeping the bit, unregister clearing it, and the bytes."""
    (real,) = run_in_child(_real, CHILD_TIMEOUT)
    if "refused" in real:
        pytest.skip(real["refused"])
    model = _model(preset, HINT)
    ret, fields = real["copy_wp"]
    assert (ret, fields[-1]) == (model["copy_wp"][0], model["copy_wp"][1][-1])
    keys = [k for k in real if k != "copy_wp"]
    assert len(keys) == 22
    for key in keys:
        assert real[key] == model[key], key


# ---------------------------------------------------------------------------
# UFFD_EVENT_REMAP: the handler's fill gets EAGAIN until it reads the event
# ---------------------------------------------------------------------------
MOVED = 8  # pages from the region's base where mremap moves it


def _real_remap(wfd: int) -> None:
    try:
        out = _real_remap_sequence()
        os.write(wfd, pickle.dumps(("ok", out)))
    except BaseException:
        os.write(wfd, pickle.dumps(("error", traceback.format_exc())))


def _real_remap_sequence() -> dict[str, Any]:
    r: dict[str, Any] = {}
    base = usermm.mmap(HINT, 16 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS)
    reg = base + PAGE
    usermm.mmap(reg, 2 * PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    src = usermm.mmap(0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    ctypes.memset(src, 0x5A, 1)
    fd = _uffd(FLAGS)
    if fd < 0:
        return {"refused": f"userfaultfd(UFFD_USER_MODE_ONLY) failed: {os.strerror(-fd)}"}
    r["api"] = _ioctl(fd, UFFDIO_API, "QQQ", 0xAA, UFFD_FEATURE_EVENT_REMAP, 0)[0]
    r["reg"] = _ioctl(fd, UFFDIO_REGISTER, "QQQQ", reg, 2 * PAGE, UFFDIO_REGISTER_MODE_MISSING, 0)[0]
    new = base + MOVED * PAGE
    pid = os.fork()
    if pid == 0:  # the handler
        code = 1
        try:
            ready, _, _ = select.select([fd], [], [], 10.0)
            before = _ioctl(fd, UFFDIO_COPY, "QQQQq", new, src, PAGE, 0, 0) if ready else None
            msg = os.read(fd, 32) if ready else b""
            event = msg[0] if msg else 0
            frm, to, length = struct.unpack_from("QQQ", msg, 8) if msg else (0, 0, 0)
            rfd = os.open(f"/tmp/.pervma-uffd-remap-{os.getppid()}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.write(rfd, pickle.dumps((before, event, frm - base, to - base, length)))
            os.close(rfd)
            code = 0
        finally:
            os._exit(code)
    moved = usermm.mremap(reg, 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, new)  # waits for the read
    r["mremap"] = moved - base if moved > 0 else moved
    os.waitpid(pid, 0)
    path = f"/tmp/.pervma-uffd-remap-{os.getpid()}"
    with open(path, "rb") as f:
        r["handler"] = pickle.load(f)
    os.unlink(path)
    r["copy_after"] = _ioctl(fd, UFFDIO_COPY, "QQQQq", new, src, PAGE, 0, 0)
    r["load"] = ctypes.c_ubyte.from_address(new).value
    r["layout"] = _layout(base)
    return r


def _model_remap(preset: str, base: int) -> dict[str, Any]:
    r: dict[str, Any] = {}
    kern = System(Config.preset(preset))
    p = kern.spawn()
    p.mmap(base, 16 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    reg = base + PAGE
    p.mmap(reg, 2 * PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    src = p.mmap(0, PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(src, 0x5A)
    u = p.userfaultfd(FLAGS)
    u.api(UFFD_FEATURE_EVENT_REMAP)
    r["api"] = 0
    r["reg"] = 0 if u.register(reg, 2 * PAGE, UFFDIO_REGISTER_MODE_MISSING) else -1
    new = base + MOVED * PAGE
    handler = p.fork()
    m = p.thread()
    uh = u.on(handler.main)

    async def remap(t: Any) -> int:
        return int(await t.mremap(reg, 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, new))

    async def handle(t: Any) -> tuple[Any, ...]:
        while not u.ctx.event_wqh:  # select(): readable once the event is queued
            await t.user("poll")
        try:
            before: Any = (0, (new, src, PAGE, 0, await uh.copy(new, src, PAGE)))
        except OSError as e:
            before = (-(e.errno or 0), (new, src, PAGE, 0, getattr(e, "count", 0)))
        msg = await uh.read()
        return (before, msg["event"], msg["from"] - base, msg["to"] - base, msg["len"])

    ex = Executor([m.start(remap), handler.main.start(handle)], models=[m.task, handler.main.task])
    while not ex.finished():
        runnable = ex.runnable()
        assert runnable, ex.deadlock()
        ex.step(runnable[0])
    assert ex.violation is None
    r["mremap"] = ex.tasks[0].result - base
    r["handler"] = ex.tasks[1].result
    n = u.copy(new, src, PAGE)
    r["copy_after"] = (0, (new, src, PAGE, 0, n))
    r["load"] = p.load(new)
    r["layout"] = [((v.vm_start - base) // PAGE, (v.vm_end - base) // PAGE,
                    ("r" if v.vm_flags & 1 else "-") + ("w" if v.vm_flags & 2 else "-")
                    + ("x" if v.vm_flags & 4 else "-") + ("s" if v.vm_flags & 0x80 else "p"))
                   for v in p.mm.mm_mt.overlapping(base, base + 6 * PAGE)]
    return r


@pytest.mark.skipif(_REASON is not None, reason=f"differential test: {_REASON}")
@pytest.mark.parametrize("preset", ["universal", "legacy"])
def test_remap_event_matches_the_running_kernel(preset: str) -> None:
    """9 compared results: UFFDIO_API with EVENT_REMAP, the registration, the
    handler's UFFDIO_COPY into the moved range while the event is unread
    (EAGAIN, the count field -EAGAIN), the event (type, from, to, len), the
    mremap's result once it is read, the copy afterwards and the byte."""
    (real,) = run_in_child(_real_remap, CHILD_TIMEOUT)
    if "refused" in real:
        pytest.skip(real["refused"])
    model = _model_remap(preset, HINT)
    (rb, *rmsg), (mb, *mmsg) = real["handler"], model["handler"]
    assert (rb[0], rb[1][-1]) == (mb[0], mb[1][-1]) == (-errno.EAGAIN, -errno.EAGAIN)
    assert rmsg == mmsg
    ret, fields = real["copy_after"]
    assert (ret, fields[-1]) == (model["copy_after"][0], model["copy_after"][1][-1]) == (0, PAGE)
    for key in ("api", "reg", "mremap", "load", "layout"):
        assert real[key] == model[key], key
