"""Run system calls on the real kernel in a forked child, for the
differential tests: the child makes its calls and pickles
``("ok", *results)`` or ``("error", traceback)`` into a pipe, then
``_exit()``s; the parent reads it with a timeout that only a hung child
reaches."""

from __future__ import annotations

import os
import pickle
import select
import signal
import warnings
from collections.abc import Callable
from typing import Any


def run_in_child(child: Callable[[int], None], timeout: float) -> tuple[Any, ...]:
    """Fork, run ``child(write_fd)`` there, and return its results (the tuple
    it pickled, without the leading ``"ok"``); a failed, dead or hung child
    fails the test."""
    rfd, wfd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() in a threaded process: the child
        # only makes system calls and writes a pipe, then _exit()s.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(rfd)
            child(wfd)
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([rfd], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the real-kernel child hung for {timeout}s")
            chunk = os.read(rfd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
    if not chunks:
        raise AssertionError(f"the real-kernel child died (wait status {status:#x})")
    result = pickle.loads(b"".join(chunks))
    if result[0] != "ok":
        raise AssertionError("the real-kernel child failed:\n" + result[1])
    return tuple(result[1:])
