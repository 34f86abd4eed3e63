"""Build a program's world: the setup (direct runner), then its threads.

:func:`build_world` runs the setup with the synchronous API and makes one
model thread per program thread; :meth:`FuzzWorld.instance` hands them to a
driver.  Each thread records, per call, the outcome (a comparable value: the
return, an errno name, ``SIGSEGV(...)``) and when it ran relative to the other
threads: how many calls of each thread had finished when it started and how
many had started when it ended.  That is all the serial-order oracle needs to
know which calls overlapped.  The same builder, without tracking, gives the
serial runs the oracle compares against (:meth:`FuzzWorld.run_serial`).
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass, field
from typing import Any

from pervma.check.fuzz.program import PROTS, Program, VmaSpec
from pervma.check.fuzz.registry import get_call
from pervma.check.scenario import Instance
from pervma.config import Config
from pervma.errors import InputError
from pervma.kernel import debug
from pervma.kernel.binder import BinderAlloc, binder_install_single_page
from pervma.kernel.mm_types import PAGE_SIZE, File, Page
from pervma.kernel.mmap import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_PRIVATE,
    MAP_SHARED,
)
from pervma.kernel.system import (
    AsyncMmuMirror,
    AsyncUserfaultfd,
    Killed,
    Process,
    Segfault,
    System,
    Thread,
)
from pervma.kernel.userfaultfd import UFFDIO_REGISTER_MODE_MISSING
from pervma.sched import Violation, drain_touched, run_direct, track_touches

#: The byte a uffd source page holds (what UFFDIO_COPY copies).
UFFD_SRC_BYTE = 0x5A
FILE_PAGES = 32

Outcome = int | str
#: The outcome of a call a thread would make after its ``exit``: it is not made.
EXITED = "exited"


def outcome(x: Any) -> Outcome:
    """A call's result as a small comparable value."""
    if isinstance(x, Segfault):
        return f"SIGSEGV({ {1: 'MAPERR', 2: 'ACCERR', 7: 'BUS', 12: 'OOM'}.get(x.code, x.code)})"
    if isinstance(x, Killed):
        return "killed"
    if isinstance(x, OSError):
        return _errno.errorcode.get(x.errno or 0, f"E{x.errno}")
    if x is None:
        return "ok"
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        return x
    if isinstance(x, Process):
        return "child"
    if isinstance(x, str):
        return x
    if isinstance(x, dict):  # PROCMAP_QUERY
        return f"{x.get('vma_start', 0):#x}-{x.get('vma_end', 0):#x}"
    if isinstance(x, list):
        return len(x)
    return type(x).__name__


def populate_byte(vma_index: int, page: int) -> int:
    """The byte the setup stores in page ``page`` of VMA ``vma_index``."""
    return 1 + (vma_index * 16 + page) % 250


@dataclass(slots=True)
class Ctx:
    """What calls need beyond their thread: the setup's objects."""

    kern: System
    procs: dict[str, Process]
    files: list[File] = field(default_factory=list)
    binder: dict[str, BinderAlloc] = field(default_factory=dict)  # process -> its buffer
    tcp: dict[str, int] = field(default_factory=dict)  # process -> receive area
    uffd: AsyncUserfaultfd | None = None
    uffd_src: int = 0
    uffd_closed: bool = False
    pages: dict[tuple[str, int], Page] = field(default_factory=dict)  # (process, vpn) after setup
    mirrors: dict[str, AsyncMmuMirror] = field(default_factory=dict)  # process -> its mirror

    def file(self) -> File:
        return self.files[0]


@dataclass(slots=True)
class CallLog:
    """Per thread, per call: outcome, finished counts at start, started counts
    at end, and whether the VMA a user access found appeared while it ran
    (:func:`_unmapped`).  Lives with the model threads (it is part of a state)."""

    started: list[int]
    finished: list[int]
    log: list[list[tuple[Outcome, tuple[int, ...], tuple[int, ...], bool]]]


#: The outcome of an access that found no VMA.
MAPERR = "SIGSEGV(MAPERR)"


def _unmapped(t: Thread, addr: int) -> bool:
    """No VMA of the thread's mm covers ``addr`` (bookkeeping read between two
    steps, as the call counts are).  An access that starts so and does not end
    with SIGSEGV(MAPERR) found a VMA that appeared while it ran: most often the
    stack its own fault grew (``lock_mm_and_find_vma()`` expands a
    VM_GROWSDOWN VMA under the write lock, then the fault runs and the
    instruction is retried), a change other threads see before the access
    itself lands, so the oracle does not take it as one step."""
    return not any(v.vm_start <= addr < v.vm_end for v in t.mm.mm_mt.snapshot())


def _vma_flags(v: VmaSpec) -> int:
    return {"anon": MAP_PRIVATE | MAP_ANONYMOUS, "guard": MAP_PRIVATE | MAP_ANONYMOUS,
            "shared-anon": MAP_SHARED | MAP_ANONYMOUS, "file": MAP_PRIVATE,
            "file-shared": MAP_SHARED,
            "growsdown": MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN}[v.kind] | MAP_FIXED


def _setup_vma(cx: Ctx, pname: str, p: Process, j: int, v: VmaSpec) -> None:
    where = f"setup: process {pname} vma {j} ({v.kind} at {v.addr:#x}, {v.pages} pages)"
    prot = 0 if v.kind == "guard" else PROTS[v.prot]
    try:
        if v.kind == "binder":
            alloc = p._run(p.main.binder_mmap(v.pages))
            p._run(binder_install_single_page(alloc, alloc.buffer))
            cx.binder[pname] = alloc
            return
        if v.kind == "tcp":
            cx.tcp[pname] = p._run(p.main.tcp_mmap(v.pages))
            return
        f = cx.file() if v.kind in ("file", "file-shared") else None
        got = p.mmap(v.addr, v.pages * PAGE_SIZE, prot, _vma_flags(v), f, 0)
    except OSError as exc:
        raise InputError(f"{where}: mmap failed with {outcome(exc)}") from None
    if got != v.addr:
        raise InputError(f"{where}: mapped at {got:#x}")
    if not v.populate:
        return
    for i in range(v.pages):
        a = v.addr + i * PAGE_SIZE
        try:
            if prot & 2:
                p.store(a, populate_byte(j, i))
            elif prot & 1:
                p.load(a)
        except (Segfault, OSError):  # e.g. a read-only shared file beyond its end
            pass


class FuzzWorld:
    """One built program: system, setup, threads and their call log."""

    def __init__(self, prog: Program, cfg: Config, track: bool = True) -> None:
        self.prog = prog
        kern = System(cfg)
        if track:
            track_touches(True)  # the model declares its hidden writes
        self.kern = kern
        cx = Ctx(kern, {})
        cx.files.append(kern.create_file("/data", FILE_PAGES, resident=True))
        self.cx = cx
        for ps in prog.processes:
            if ps.fork_of is not None:
                p = cx.procs[ps.fork_of].fork()
                p.name = ps.name
            else:
                p = kern.spawn(ps.name)
            cx.procs[ps.name] = p
            for j, v in enumerate(ps.vmas):
                _setup_vma(cx, ps.name, p, j, v)
        if prog.uffd is not None:
            pname, vi = prog.uffd
            p = cx.procs[pname]
            v = prog.process(pname).vmas[vi]
            cx.uffd_src = p.mmap(0, 2 * PAGE_SIZE, 3, MAP_PRIVATE | MAP_ANONYMOUS)
            p.store(cx.uffd_src, UFFD_SRC_BYTE)
            p.store(cx.uffd_src + PAGE_SIZE, UFFD_SRC_BYTE)
            u = p.userfaultfd()
            u.api()
            try:
                u.register(v.addr, v.pages * PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
            except OSError as exc:
                raise InputError(f"setup.uffd: UFFDIO_REGISTER failed with {outcome(exc)}") from None
            cx.uffd = u.on(p.main)
        for pname, p in cx.procs.items():  # the pages an rmap walk may start from
            for vpn, pte in sorted(p.mm.pgtable.items()):
                cx.pages[(pname, vpn)] = pte.page
        # A process's first program thread is its main thread, the others are
        # CLONE_VM threads: a process whose only program thread exits drops its
        # mm's last user (exit_mmap), as a single-threaded process does.
        self.threads: list[Thread] = []
        used: set[str] = set()
        for i, ts in enumerate(prog.threads):
            p = cx.procs[ts.process]
            t = p.main if ts.process not in used else p.thread()
            used.add(ts.process)
            t.task.comm = f"T{i}"
            self.threads.append(t)
        n = len(prog.threads)
        self.calls = CallLog([0] * n, [0] * n, [[] for _ in range(n)])

    # -- concurrent form --------------------------------------------------------
    def _body(self, i: int) -> Any:
        spec = self.prog.threads[i]
        entries = [get_call(c.call) for c in spec.calls]
        cx, cl = self.cx, self.calls

        async def body(t: Thread) -> None:
            for c, e in zip(spec.calls, entries, strict=True):
                cl.started[i] += 1
                fin = tuple(cl.finished)
                outside = e.access and not t.exited and _unmapped(t, c.args["addr"])
                try:
                    r = EXITED if t.exited else outcome(await e.run(cx, t, c.args))
                except (Segfault, OSError, Killed) as exc:
                    r = outcome(exc)
                cl.log[i].append((r, fin, tuple(cl.started), outside and r != MAPERR))
                cl.finished[i] += 1

        return body

    def instance(self, judge: Any = None) -> Instance:
        """The threads for a driver; ``finish`` runs validate_mm on every live
        mm, after ``judge(log)`` (the serial-order oracle)."""
        kern, calls = self.kern, self.calls

        def finish() -> None:
            if judge is not None:  # what the user saw first, then the structures
                judge(calls.log)
            for p in kern.processes:
                if not p.mm.freed:
                    debug.validate_mm(p.mm)

        return Instance([t.start(self._body(i)) for i, t in enumerate(self.threads)],
                        [f"T{i}:{ts.process}" for i, ts in enumerate(self.prog.threads)],
                        [t.task for t in self.threads], finish=finish, effects=drain_touched)

    # -- serial form (the oracle's reference) ----------------------------------
    def run_serial(self, order: list[tuple[int, int]]) -> list[Outcome]:
        """Run the calls ``(thread, index)`` one after the other, each to
        completion (direct runner); a call that would block or trips a model
        check gives ``"blocked"`` / ``"violation:<kind>"``."""
        out: list[Outcome] = []
        for i, k in order:
            c = self.prog.threads[i].calls[k]
            t = self.threads[i]
            e = get_call(c.call)
            try:
                r = EXITED if t.exited else outcome(run_direct(t._guard(e.run(self.cx, t, c.args)),
                                                               model=t.task))
            except (Segfault, OSError, Killed) as exc:
                r = outcome(exc)
            except Violation as v:
                r = "blocked" if v.kind == "deadlock" else f"violation:{v.kind}"
                out.append(r)
                break  # the world is no longer trustworthy
            out.append(r)
        return out
