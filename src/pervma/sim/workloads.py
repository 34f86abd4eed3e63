"""Workloads: the loop bodies of will-it-scale, pfbench.c and mmtests pft.

Each workload builds its tasks on a fresh :class:`pervma.System`: in
``threads`` mode all measured tasks are threads of one process (one mm, one
mmap_lock), in ``processes`` mode each task is its own process.  A body is an
``async def`` over the model's awaitable thread API, exactly the user-space loop
of the original benchmark:

==============  ===========================================================  =========
workload        loop (per task)                                              op =
==============  ===========================================================  =========
page_fault1     mmap 128 MiB anon private, write 1 byte/page, munmap        fault
page_fault2     same on a private mapping of the task's own 128 MiB file    fault
page_fault3     same on a shared mapping of the task's own 128 MiB file     fault
mmap1           mmap 128 MiB anon private, munmap (nothing touched)         pair
mmap2           same on the task's own 128 MiB file                         pair
private         pfbench: mmap 32 MiB anon, MADV_NOHUGEPAGE, touch, munmap   fault
shared          pfbench: one VMA for all; touch own 32 MiB slice, DONTNEED  fault
churn           shared + one extra task looping mmap+munmap of 4 KiB         fault
churnsame       shared + one extra task flipping a guard page RO/RW with    fault
                mprotect at the start of the same VMA (split + merge)
pft-threads     mmtests pft: threads fault disjoint chunks of one region    fault
==============  ===========================================================  =========

In threads mode every thread gets a glibc-style stack mapping (8 MiB under a
PROT_NONE guard page), mapped after the benchmark's setup, as pthread_create()
does: it decides which later mappings can merge with which.

The first pass of a task starts at a random page of its region (from the
seed) so that tasks do not munmap in lock-step; will-it-scale's and pfbench's
real tasks desynchronise the same way within their warm-up.

The simulated window is the benchmark's steady state, which will-it-scale
reaches in its warm-up: page_fault2/3's file was filled by the earlier passes
and stays in the page cache (munmap does not drop it), so their faults find
every page there (``create_file(resident=True)``): page_fault3 maps it,
page_fault2 copies it (COW); neither allocates a page-cache page or clears it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from pervma.errors import UsageError

PAGE = 4096
PROT_READ, PROT_WRITE = 0x1, 0x2
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
MADV_DONTNEED, MADV_NOHUGEPAGE = 4, 15
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
WIS_MEMSIZE = 128 << 20  # will-it-scale MEMSIZE
PFBENCH_REGION = 32 << 20  # pfbench.c REGION
THREAD_STACK = 8 << 20  # glibc's default pthread stack
PFT_CHUNK = 256 << 20  # per-thread share of the pft region (never exhausted in a run)
LAT_SAMPLE_EVERY = 4  # keep every 4th fault latency


class _NoClock:
    now = 0.0


class Recorder:
    """What the bodies report: ops per task, sampled fault latencies, churn ops.

    ``drv.now`` is the driver's virtual time (ns) when model code runs; the
    driver is attached once it exists."""

    __slots__ = ("churn", "drv", "lat", "lat_tick", "ops")

    def __init__(self, ntasks: int) -> None:
        self.ops = [0] * ntasks
        self.churn = 0
        self.lat: list[float] = []
        self.lat_tick = 0
        self.drv: Any = _NoClock()

    def sample(self, ns: float) -> None:
        """Keep one fault's latency; the touch loops then skip the next
        LAT_SAMPLE_EVERY - 1 faults (``lat_tick`` counts them down, so the
        faults they do not keep are not even timed)."""
        self.lat_tick = LAT_SAMPLE_EVERY - 1
        self.lat.append(ns)


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    unit: str  # "faults" or "pairs"
    description: str
    extra_task: bool = False  # a churn task beside the measured ones
    modes: tuple[str, ...] = ("threads", "processes")


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("page_fault1", "faults", "will-it-scale page_fault1: anon 128 MiB mmap, touch, munmap"),
    Workload("page_fault2", "faults", "will-it-scale page_fault2: private file mapping (COW faults)"),
    Workload("page_fault3", "faults", "will-it-scale page_fault3: shared file mapping (write faults)"),
    Workload("mmap1", "pairs", "will-it-scale mmap1: anon 128 MiB mmap + munmap, untouched"),
    Workload("mmap2", "pairs", "will-it-scale mmap2: file 128 MiB mmap + munmap, untouched"),
    Workload("private", "faults", "pfbench private: own 32 MiB region, touch, munmap"),
    Workload("shared", "faults", "pfbench shared: one VMA, own slice, MADV_DONTNEED"),
    Workload("churn", "faults", "pfbench churn: shared + a 4 KiB mmap/munmap task", True),
    Workload("churnsame", "faults", "pfbench churnsame: shared + mprotect split/merge of the same VMA", True),
    Workload("pft-threads", "faults", "mmtests pft: threads fault disjoint chunks of one region"),
)}


@dataclass(slots=True)
class Built:
    """Tasks ready for the driver."""

    coros: list[Coroutine[Any, Any, Any]]
    names: list[str]
    models: list[Any]
    measured: int  # tasks 0..measured-1 count toward faults_per_s
    recorder: Recorder
    kern: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def get_workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise UsageError(f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)}")
    return WORKLOADS[name]


def _tmpfile(kern: Any, path: str, npages: int, resident: bool = False) -> Any:
    """will-it-scale's mkstemp + ftruncate file: a hole, so no page is ever
    read from disk; modelled as a tmpfs (shmem) file, as /tmp is on LKP.
    ``resident``: the earlier passes of the loop have filled it (module
    docstring)."""
    f = kern.create_file(path, npages, resident=resident)
    f.shmem = True
    f.vm_ops = kern.shmem_ops
    return f


def _start(th: Any, body: Callable[[Any], Coroutine[Any, Any, Any]]) -> tuple[Any, Any]:
    """(coroutine, model) for a model Thread: ``Thread.start(body)``."""
    coro = th.start(body)
    model = getattr(th, "task", None) or getattr(th, "tsk", None) or getattr(th, "model", None)
    return coro, model


# -- bodies --------------------------------------------------------------------
async def _touch_pages(rec: Recorder, i: int, t: Any, lo: int, hi: int) -> None:
    """Write one byte to each page of [lo, hi): one op each for task ``i``;
    every LAT_SAMPLE_EVERY-th store is timed (Recorder.sample)."""
    ops = rec.ops
    for addr in range(lo, hi, PAGE):
        if rec.lat_tick:  # not a kept fault
            rec.lat_tick -= 1
            await t.store(addr, 1)
        else:
            t0 = rec.drv.now
            await t.store(addr, 1)
            rec.sample(rec.drv.now - t0)
        ops[i] += 1


def _touch_loop_body(rec: Recorder, i: int, size: int, flags: int, file: Any, first: int,
                     nohuge: bool) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def body(t: Any) -> None:
        start = first
        while True:
            a = await t.mmap(0, size, RW, flags, file, 0)
            if nohuge:
                try:
                    await t.madvise(a, size, MADV_NOHUGEPAGE)
                except OSError:
                    pass
            await _touch_pages(rec, i, t, a + start, a + size)
            start = 0
            await t.munmap(a, size)
    return body


def _mmap_loop_body(rec: Recorder, i: int, size: int, flags: int,
                    file: Any) -> Callable[[Any], Coroutine[Any, Any, None]]:
    ops = rec.ops

    async def body(t: Any) -> None:
        while True:
            a = await t.mmap(0, size, RW, flags, file, 0)
            await t.munmap(a, size)
            ops[i] += 1
    return body


def _slice_body(rec: Recorder, i: int, base: int, size: int, first: int,
                dontneed: bool) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def body(t: Any) -> None:
        start = first
        while True:
            await _touch_pages(rec, i, t, base + start, base + size)
            start = 0
            if dontneed:
                await t.madvise(base, size, MADV_DONTNEED)
    return body


def _churn_body(rec: Recorder) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def body(t: Any) -> None:
        while True:
            a = await t.mmap(0, PAGE, RW, ANON, None, 0)
            await t.munmap(a, PAGE)
            rec.churn += 1
    return body


def _churnsame_body(rec: Recorder, guard: int) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def body(t: Any) -> None:
        while True:
            await t.mprotect(guard, PAGE, PROT_READ)
            await t.mprotect(guard, PAGE, RW)
            rec.churn += 1
    return body


# -- building ------------------------------------------------------------------
def build(workload: str, kern: Any, mode: str, ntasks: int, seed: int) -> Built:
    """Create the processes, threads and bodies of one point on ``kern``."""
    w = get_workload(workload)
    if mode not in w.modes:
        raise UsageError(f"workload {workload} has no {mode} mode; use {' or '.join(w.modes)}")
    rng = random.Random(seed)
    total = ntasks + (1 if w.extra_task else 0)
    rec = Recorder(total)
    threads: list[Any] = []
    procs: list[Any] = []
    if mode == "threads":
        p = kern.spawn()
        procs = [p] * total
        threads = [p.thread() for _ in range(total)]
    else:
        procs = [kern.spawn() for _ in range(total)]
        threads = [q.thread() for q in procs]
    bodies: list[Callable[[Any], Coroutine[Any, Any, None]]] = []
    name = w.name

    def first(size: int) -> int:
        return rng.randrange(size // PAGE) * PAGE

    if name in ("page_fault1", "page_fault2", "page_fault3", "private"):
        size = PFBENCH_REGION if name == "private" else WIS_MEMSIZE
        for i in range(ntasks):
            file = None
            flags = ANON
            if name != "page_fault1" and name != "private":
                file = _tmpfile(kern, f"/tmp/willitscale.{i}", size // PAGE, resident=True)
                flags = MAP_PRIVATE if name == "page_fault2" else MAP_SHARED
            bodies.append(_touch_loop_body(rec, i, size, flags, file, first(size),
                                           nohuge=name == "private"))
    elif name in ("mmap1", "mmap2"):
        for i in range(ntasks):
            file = _tmpfile(kern, f"/tmp/willitscale.{i}", WIS_MEMSIZE // PAGE) \
                if name == "mmap2" else None
            bodies.append(_mmap_loop_body(rec, i, WIS_MEMSIZE, MAP_PRIVATE if file else ANON, file))
    elif name in ("shared", "churn", "churnsame"):
        length = PFBENCH_REGION * ntasks + PAGE
        bases: dict[int, int] = {}
        for q in dict.fromkeys(procs):  # one region per mm, set up before the run
            r = q.mmap(0, length, RW, ANON)
            bases[id(q)] = r + PAGE
        for i in range(ntasks):
            base = bases[id(procs[i])] + i * PFBENCH_REGION
            bodies.append(_slice_body(rec, i, base, PFBENCH_REGION, first(PFBENCH_REGION), True))
        if name == "churn":
            bodies.append(_churn_body(rec))
        elif name == "churnsame":
            bodies.append(_churnsame_body(rec, bases[id(procs[ntasks])] - PAGE))
    elif name == "pft-threads":
        length = PFT_CHUNK * ntasks
        bases = {id(q): q.mmap(0, length, RW, ANON) for q in dict.fromkeys(procs)}
        for i in range(ntasks):
            base = bases[id(procs[i])] + i * PFT_CHUNK
            bodies.append(_slice_body(rec, i, base, PFT_CHUNK, 0, True))
    if mode == "threads":
        # pthread_create() maps each thread's stack (8 MiB below a PROT_NONE guard
        # page) after the benchmark's own setup mappings, as in pfbench and
        # will-it-scale; the guard keeps later mappings from merging into them.
        for _ in range(total):
            stack = procs[0].mmap(0, THREAD_STACK + PAGE, RW, ANON)
            procs[0].mprotect(stack, PAGE, 0)
    coros: list[Coroutine[Any, Any, Any]] = []
    models: list[Any] = []
    for th, body in zip(threads, bodies, strict=True):
        coro, model = _start(th, body)
        coros.append(coro)
        models.append(model)
    names = [f"{name}/{i}" for i in range(ntasks)] + (["churn"] if w.extra_task else [])
    return Built(coros, names, models, ntasks, rec, kern)
