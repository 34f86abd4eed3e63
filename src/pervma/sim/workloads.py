"""Workloads: the loop bodies of will-it-scale, pfbench.c and mmtests pft, as data.

A workload is a TOML file (format: README, "Workload files"); the built-ins are
such files in ``sim/workloads/`` (``pervma simulate --list``), and
``pervma simulate FILE.toml`` runs any other.  :func:`build` turns a
:class:`Workload` into tasks on a fresh :class:`pervma.System`: in ``threads``
mode all measured tasks are threads of one process (one mm, one mmap_lock), in
``processes`` mode each task is its own process.  A body is an ``async def``
over the model's awaitable thread API, the user-space loop of the benchmark:

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

A *cycle* is one pass of a task's loop: (mmap,) touch, then what ends it
(munmap, MADV_DONTNEED or nothing); the recorder counts them so that the API
can stretch a window until every measured task has completed one.

In threads mode every thread gets a glibc-style stack mapping (8 MiB under a
PROT_NONE guard page), mapped after the benchmark's setup, as pthread_create()
does: it decides which later mappings can merge with which.

The first pass of a task starts at a random page of its region (from the
seed) so that tasks do not munmap in lock-step; will-it-scale's and pfbench's
real tasks desynchronise the same way within their warm-up.

The simulated window is the benchmark's steady state, which will-it-scale
reaches in its warm-up: page_fault2/3's file was filled by the earlier passes
and stays in the page cache (munmap does not drop it), so their faults find
every page there (``resident = true``): page_fault3 maps it, page_fault2
copies it (COW); neither allocates a page-cache page or clears it.
"""

from __future__ import annotations

import random
import re
import tomllib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from pervma import cliargs
from pervma.errors import UsageError

PAGE = 4096
PROT_READ, PROT_WRITE = 0x1, 0x2
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
MAP_STACK = 0x20000  # glibc's allocatestack.c maps thread stacks with it
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

    __slots__ = ("churn", "cycles", "drv", "lat", "lat_tick", "ops")

    def __init__(self, ntasks: int) -> None:
        self.ops = [0] * ntasks
        self.cycles = [0] * ntasks  # completed cycles (mmap..munmap, touch..DONTNEED)
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


BACKINGS = ("anon", "file", "memfd", "shmem")
SHARINGS = ("private", "shared")
LAYOUTS = ("own", "slice")
TOUCHES = ("write", "read", "none")
FIRST_PASSES = ("random", "zero")
ENDS = ("munmap", "dontneed", "none")
UNITS = ("faults", "pairs")
MODES = ("threads", "processes")
EXTRA_KINDS = ("mmap-churn", "mprotect", "maps-reader")
MAX_REGION = 1 << 40  # 1 TiB: beyond any machine the simulator models


@dataclass(frozen=True, slots=True)
class Extra:
    """A task beside the measured ones: ``mmap-churn`` maps and unmaps ``size``
    bytes of private anonymous memory; ``mprotect`` flips ``size`` bytes at
    ``offset`` into the shared region (``target = "region"``) read-only and
    back, splitting and re-merging that VMA; ``maps-reader`` reads
    /proc/self/maps.  Each loop iteration is one churn op."""

    kind: str
    size: int = PAGE
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Workload:
    """One workload (a file of ``sim/workloads/`` or the user's).  The fields
    below ``modes`` describe every measured task (README, "Workload files")."""

    name: str
    unit: str  # "faults": one op per touched page; "pairs": one op per cycle
    description: str
    modes: tuple[str, ...] = MODES
    region: int = PFBENCH_REGION  # bytes per task
    backing: str = "anon"
    sharing: str = "private"
    layout: str = "own"  # own region per task, or a slice of one region per mm
    touch: str = "write"
    stride: int = PAGE
    first_pass: str = "random"
    end: str = "munmap"
    nohugepage: bool = False
    resident: bool = False  # a file's pages are already in the page cache
    lead_page: bool = False  # slice layout: one page before the slices
    extras: tuple[Extra, ...] = ()
    source: str = ""  # the file it came from

    @property
    def extra_task(self) -> bool:
        return bool(self.extras)

    def probe_args(self) -> str:
        """The flattened ``key=value`` line ``bench/real/probe`` reads."""
        parts = [f"name={self.name}", f"unit={self.unit}", f"region={self.region}",
                 f"backing={self.backing}", f"sharing={self.sharing}", f"layout={self.layout}",
                 f"touch={self.touch}", f"stride={self.stride}", f"first_pass={self.first_pass}",
                 f"end={self.end}", f"nohugepage={int(self.nohugepage)}",
                 f"resident={int(self.resident)}", f"lead_page={int(self.lead_page)}"]
        parts += [f"extra={e.kind}:{e.size}:{e.offset}" for e in self.extras]
        return " ".join(parts)


# -- workload files ------------------------------------------------------------
_TOP_KEYS = ("name", "description", "unit", "modes", "task", "extra")
_TASK_KEYS = ("region", "backing", "sharing", "layout", "touch", "stride", "first_pass", "end",
              "nohugepage", "resident", "lead_page")
_EXTRA_KEYS = ("kind", "size", "offset", "target")
_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20,
               "G": 1 << 30, "GIB": 1 << 30}


def parse_size(value: object, what: str) -> int:
    """Bytes from an integer or a string such as ``"128MiB"``: positive, whole pages."""
    if isinstance(value, bool):
        raise UsageError(f"{what}: wants a size such as 4096 or \"128MiB\", got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(-?\d+)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).upper() not in _SIZE_UNITS:
            raise UsageError(f"{what}: wants a size such as 4096 or \"128MiB\", got {value!r}")
        n = int(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]
    else:
        raise UsageError(f"{what}: wants a size such as 4096 or \"128MiB\", got {value!r}")
    if n < 0:
        raise UsageError(f"{what}: a size cannot be negative, got {value!r}")
    if n == 0 or n % PAGE:
        raise UsageError(f"{what}: wants a positive multiple of 4096 bytes, got {value!r}")
    if n > MAX_REGION:
        raise UsageError(f"{what}: at most 1 TiB, got {value!r}")
    return n


def _choice(table: dict[str, Any], key: str, choices: tuple[str, ...], default: str,
            where: str) -> str:
    v = table.get(key, default)
    if v not in choices:
        raise UsageError(f"{where}: {key} must be one of {', '.join(choices)}, got {v!r}")
    return str(v)


def _flag(table: dict[str, Any], key: str, where: str) -> bool:
    v = table.get(key, False)
    if not isinstance(v, bool):
        raise UsageError(f"{where}: {key} must be true or false, got {v!r}")
    return v


def _unknown(table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    extra = [k for k in table if k not in allowed]
    if extra:
        raise UsageError(f"{where}: unknown key {extra[0]!r}; expected one of {', '.join(allowed)}")


def parse_workload(text: str, name: str, source: str = "") -> Workload:
    """A :class:`Workload` from TOML text; every problem is a one-line UsageError
    naming the file (``source``) and the key."""
    where = source or name
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"workload {where}: not valid TOML: {exc}") from None
    _unknown(data, _TOP_KEYS, f"workload {where}")
    task = data.get("task")
    if not isinstance(task, dict):
        raise UsageError(f"workload {where}: needs a [task] table")
    tw = f"workload {where} [task]"
    _unknown(task, _TASK_KEYS, tw)
    if "region" not in task:
        raise UsageError(f"{tw}: needs a region size")
    name = data.get("name", name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.+-]{1,64}", name):
        raise UsageError(f"workload {where}: name must be 1-64 letters, digits or _.+-, "
                         f"got {name!r}")
    modes = data.get("modes", list(MODES))
    if (not isinstance(modes, list) or not modes or any(m not in MODES for m in modes)
            or len(set(modes)) != len(modes)):
        raise UsageError(f"workload {where}: modes must be a list of threads and/or processes, "
                         f"got {modes!r}")
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise UsageError(f"workload {where}: description must be a string")
    extras_in = data.get("extra", [])
    if not isinstance(extras_in, list) or not all(isinstance(e, dict) for e in extras_in):
        raise UsageError(f"workload {where}: extra tasks are [[extra]] tables")
    extras = []
    for k, e in enumerate(extras_in, 1):
        ew = f"workload {where} [[extra]] {k}"
        _unknown(e, _EXTRA_KEYS, ew)
        kind = _choice(e, "kind", EXTRA_KINDS, "", ew)
        if kind == "mprotect" and e.get("target", "region") != "region":
            raise UsageError(f"{ew}: target must be \"region\" (the shared region), "
                             f"got {e['target']!r}")
        if kind != "mprotect" and ("target" in e or "offset" in e):
            raise UsageError(f"{ew}: only an mprotect task takes a target and an offset")
        off = e.get("offset", 0)
        if isinstance(off, bool) or not isinstance(off, int) or off < 0 or off % PAGE:
            raise UsageError(f"{ew}: offset must be a non-negative multiple of 4096, got {off!r}")
        extras.append(Extra(kind, parse_size(e.get("size", PAGE), f"{ew} size"), off))
    w = Workload(
        name=name, unit=_choice(data, "unit", UNITS, "faults", f"workload {where}"),
        description=desc, modes=tuple(modes),
        region=parse_size(task["region"], f"{tw} region"),
        backing=_choice(task, "backing", BACKINGS, "anon", tw),
        sharing=_choice(task, "sharing", SHARINGS, "private", tw),
        layout=_choice(task, "layout", LAYOUTS, "own", tw),
        touch=_choice(task, "touch", TOUCHES, "write", tw),
        stride=parse_size(task.get("stride", PAGE), f"{tw} stride"),
        first_pass=_choice(task, "first_pass", FIRST_PASSES, "random", tw),
        end=_choice(task, "end", ENDS, "munmap", tw),
        nohugepage=_flag(task, "nohugepage", tw), resident=_flag(task, "resident", tw),
        lead_page=_flag(task, "lead_page", tw), extras=tuple(extras), source=source)
    return check_workload(w)


def check_workload(w: Workload) -> Workload:
    """Refuse combinations no benchmark loop could run (one line each)."""
    where = f"workload {w.source or w.name}"
    if w.backing == "anon" and w.sharing == "shared":
        raise UsageError(f"{where}: shared anonymous memory is backing = \"shmem\"")
    if w.backing == "shmem" and w.sharing == "private":
        raise UsageError(f"{where}: shmem is MAP_SHARED|MAP_ANONYMOUS: sharing = \"shared\"")
    if w.resident and w.backing not in ("file", "memfd"):
        raise UsageError(f"{where}: resident applies to a file or memfd backing only")
    if w.layout == "slice" and w.end == "munmap":
        raise UsageError(f"{where}: a slice of the shared region cannot end with munmap; "
                         "use end = \"dontneed\" or \"none\"")
    if w.lead_page and w.layout != "slice":
        raise UsageError(f"{where}: lead_page applies to layout = \"slice\" only")
    if w.stride > w.region:
        raise UsageError(f"{where}: stride is larger than the region")
    if w.touch == "none" and w.unit == "faults":
        raise UsageError(f"{where}: nothing is touched, so count unit = \"pairs\"")
    if w.touch == "none" and w.end != "munmap":
        raise UsageError(f"{where}: a cycle that touches nothing must end with munmap")
    if w.unit == "pairs" and w.end != "munmap":
        raise UsageError(f"{where}: unit = \"pairs\" counts mmap+munmap cycles: end = \"munmap\"")
    for e in w.extras:
        if e.kind == "mprotect":
            if w.layout != "slice":
                raise UsageError(f"{where}: an mprotect task needs the shared region "
                                 "(layout = \"slice\")")
            if e.offset + e.size > w.region + (PAGE if w.lead_page else 0):
                raise UsageError(f"{where}: the mprotect range passes the first slice's end")
    return w


def load_workload_file(path: str | Path) -> Workload:
    """Read and parse a user's workload file (one-line errors, exit 2)."""
    p = Path(path)
    text = cliargs.read_text(p, "workload file", 1 << 20)
    return parse_workload(text, p.stem, str(p))


def _builtin() -> dict[str, Workload]:
    pkg = resources.files("pervma.sim") / "workloads"
    out: dict[str, Workload] = {}
    for f in sorted(pkg.iterdir(), key=lambda f: f.name):
        if f.name.endswith(".toml"):
            w = parse_workload(f.read_text(), f.name[:-5], "")
            out[w.name] = w
    return out


LIST_ORDER = ("page_fault1", "page_fault2", "page_fault3", "mmap1", "mmap2", "private", "shared",
              "churn", "churnsame", "pft-threads")
_found = _builtin()
WORKLOADS: dict[str, Workload] = {n: _found[n] for n in (*LIST_ORDER, *sorted(_found))
                                  if n in _found}
del _found


def with_task(w: Workload, **changes: Any) -> Workload:
    """``w`` with some per-task fields replaced (the CLI's --region, --backing...)."""
    return check_workload(replace(w, **{k: v for k, v in changes.items() if v is not None}))


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


def get_workload(name: str | Workload) -> Workload:
    """A built-in by name, a ``.toml`` file by path, or ``name`` itself."""
    if isinstance(name, Workload):
        return name
    if name.endswith(".toml"):
        return load_workload_file(name)
    if name not in WORKLOADS:
        raise UsageError(f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)} "
                         "or name a .toml file")
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
def _cycle_body(rec: Recorder, i: int, w: Workload, file: Any, flags: int, base: int | None,
                first: int) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """One measured task's loop.  ``base`` is its slice of the shared region
    (slice layout), or None: the task maps its own region (once, or every
    cycle when the cycle ends with munmap)."""
    size, stride, write = w.region, w.stride, w.touch == "write"
    touch, end, pairs = w.touch != "none", w.end, w.unit == "pairs"
    ops, cycles = rec.ops, rec.cycles

    async def new_region(t: Any) -> int:
        a: int = await t.mmap(0, size, RW, flags, file, 0)
        if w.nohugepage:
            try:
                await t.madvise(a, size, MADV_NOHUGEPAGE)
            except OSError:
                pass
        return a

    async def body(t: Any) -> None:
        start = first
        a = base if base is not None else -1
        if a < 0 and end != "munmap":
            a = await new_region(t)
        while True:
            if end == "munmap":
                a = await new_region(t)
            if touch:
                # Write (or read) one byte every ``stride`` bytes: one op each;
                # every LAT_SAMPLE_EVERY-th access is timed (Recorder.sample).
                # (Inline, not a helper coroutine: every model step resumes
                # each coroutine between the driver and the step.)
                access = t.store if write else t.load
                for addr in range(a + start, a + size, stride):
                    if rec.lat_tick:  # not a kept fault
                        rec.lat_tick -= 1
                        await (access(addr, 1) if write else access(addr))
                    else:
                        t0 = rec.drv.now
                        await (access(addr, 1) if write else access(addr))
                        rec.sample(rec.drv.now - t0)
                    ops[i] += 1
            start = 0
            if end == "munmap":
                await t.munmap(a, size)
            elif end == "dontneed":
                await t.madvise(a, size, MADV_DONTNEED)
            if pairs:
                ops[i] += 1
            cycles[i] += 1
    return body


def _churn_body(rec: Recorder, size: int) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def body(t: Any) -> None:
        while True:
            a = await t.mmap(0, size, RW, ANON, None, 0)
            await t.munmap(a, size)
            rec.churn += 1
    return body


def _mprotect_body(rec: Recorder, addr: int, size: int) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def body(t: Any) -> None:
        while True:
            await t.mprotect(addr, size, PROT_READ)
            await t.mprotect(addr, size, RW)
            rec.churn += 1
    return body


def _maps_body(rec: Recorder) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def body(t: Any) -> None:
        while True:
            await t.read_maps()
            rec.churn += 1
    return body


# -- building ------------------------------------------------------------------
def _flags(w: Workload) -> int:
    if w.backing == "anon":
        return ANON
    if w.backing == "shmem":
        return MAP_SHARED | MAP_ANONYMOUS
    return MAP_SHARED if w.sharing == "shared" else MAP_PRIVATE


def _backing_file(kern: Any, w: Workload, path: str, npages: int) -> Any:
    """The file a file or memfd backing maps: both are shmem files in the
    model (/tmp is a tmpfs on LKP; memfd_create makes a shmem file)."""
    if w.backing not in ("file", "memfd"):
        return None
    return _tmpfile(kern, path, npages, resident=w.resident)


def build(workload: str | Workload, kern: Any, mode: str, ntasks: int, seed: int) -> Built:
    """Create the processes, threads and bodies of one point on ``kern``."""
    w = get_workload(workload)
    if mode not in w.modes:
        raise UsageError(f"workload {w.name} has no {mode} mode; use {' or '.join(w.modes)}")
    rng = random.Random(seed)
    total = ntasks + len(w.extras)
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
    flags = _flags(w)
    prefix = "memfd:" if w.backing == "memfd" else "/tmp/willitscale."

    def first() -> int:
        if w.touch == "none" or w.first_pass == "zero":
            return 0
        return rng.randrange(w.region // w.stride) * w.stride

    regions: dict[int, int] = {}  # id(process) -> start of its shared region
    if w.layout == "own":
        for i in range(ntasks):
            file = _backing_file(kern, w, f"{prefix}{i}", w.region // PAGE)
            bodies.append(_cycle_body(rec, i, w, file, flags, None, first()))
    else:
        lead = PAGE if w.lead_page else 0
        length = w.region * ntasks + lead
        for k, q in enumerate(dict.fromkeys(procs)):  # one region per mm, set up before the run
            file = _backing_file(kern, w, f"{prefix}{k}", length // PAGE)
            regions[id(q)] = q.mmap(0, length, RW, flags, file)
        for i in range(ntasks):
            base = regions[id(procs[i])] + lead + i * w.region
            bodies.append(_cycle_body(rec, i, w, None, flags, base, first()))
    for k, e in enumerate(w.extras):
        if e.kind == "mmap-churn":
            bodies.append(_churn_body(rec, e.size))
        elif e.kind == "mprotect":
            bodies.append(_mprotect_body(rec, regions[id(procs[ntasks + k])] + e.offset, e.size))
        else:
            bodies.append(_maps_body(rec))
    if mode == "threads":
        # pthread_create() maps each thread's stack (8 MiB below a PROT_NONE guard
        # page) after the benchmark's own setup mappings, as in pfbench and
        # will-it-scale; the guard keeps later mappings from merging into them.
        # MAP_STACK makes them VM_NOHUGEPAGE (6.7+), so the stack's top does not
        # merge with the mapping above it either (the benchmark's region).
        for _ in range(total):
            stack = procs[0].mmap(0, THREAD_STACK + PAGE, RW, ANON | MAP_STACK)
            procs[0].mprotect(stack, PAGE, 0)
    coros: list[Coroutine[Any, Any, Any]] = []
    models: list[Any] = []
    for th, body in zip(threads, bodies, strict=True):
        coro, model = _start(th, body)
        coros.append(coro)
        models.append(model)
    names = [f"{w.name}/{i}" for i in range(ntasks)]
    names += ["churn" if len(w.extras) == 1 else f"churn/{k}" for k in range(len(w.extras))]
    return Built(coros, names, models, ntasks, rec, kern)
