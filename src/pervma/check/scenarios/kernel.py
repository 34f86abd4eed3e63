"""The per-VMA locking scenarios: 2-4 threads over the model's user API or a
kernel-internal caller, each a race the lock protocol must survive.

Every scenario builds a fresh :class:`~pervma.System`, sets the address space
up with the synchronous API (direct runner), and returns threads whose bodies
use the awaitable API.  ``finish`` runs the model's ``validate_mm`` on every
live mm (sorted disjoint VMAs, map_count, vm_refcnt == 1 and no write lock
left, no PTE outside a VMA, rmap reachability) plus each scenario's own
user-visible checks (what a load may return).  ``snapshot`` shows the lock
state after each step: mmap_lock holder and waiters, mm_lock_seq, and each
VMA's range, vm_refcnt and write-lock state.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from typing import Any

from pervma import (
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PAGE,
    PROT_READ,
    PROT_WRITE,
    Config,
    Killed,
    Segfault,
    System,
)
from pervma.check.scenario import Expect, Instance, Scenario, register
from pervma.errors import ScenarioError
from pervma.kernel import debug
from pervma.kernel.mm_types import MmStruct
from pervma.kernel.mremap import MREMAP_DONTUNMAP, MREMAP_MAYMOVE
from pervma.kernel.system import STACK_SIZE, STACK_TOP, Process, Thread
from pervma.kernel.task import TaskStruct
from pervma.sched import drain_touched, track_touches, violation

A = 0x10000000  # where scenarios map their test range
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
FLAG = 0x40000000  # VM_REFCNT_EXCLUDE_READERS_FLAG

Body = Callable[[Thread], Awaitable[Any]]


# -- helpers --------------------------------------------------------------------
def _vma_state(mm: MmStruct) -> str:
    seq = mm.mm_lock_seq.sequence
    out = []
    for v in mm.mm_mt.snapshot():
        if not (A - 64 * PAGE <= v.vm_start < A + 64 * PAGE) and v.vm_start < STACK_TOP - 4 * STACK_SIZE:
            continue  # only the test range and the stack
        ref = v.vm_refcnt.counter
        r = f"X+{ref - FLAG}" if ref & FLAG else str(ref)
        w = "W" if mm.config.PER_VMA_LOCK and v.vm_lock_seq == seq and seq & 1 else ""
        out.append(f"{(v.vm_start - A) // PAGE if v.vm_start >= A - 64 * PAGE and v.vm_start < A + 64 * PAGE else 'stk'}"
                   f"+{(v.vm_end - v.vm_start) // PAGE}:r{r}{w}")
    return " ".join(out)


def lock_state(procs: list[tuple[str, Process]]) -> str:
    parts = []
    for tag, p in procs:
        mm = p.mm
        if mm.freed:
            parts.append(f"{tag}: freed")
            continue
        ml = mm.mmap_lock
        if ml.writer is not None:
            s = f"W({ml.writer.comm})"
        elif ml.readers:
            s = "R(" + ",".join(t.comm for t in ml.readers) + ")"
        else:
            s = "free"
        if ml.wait_list:
            s += f"+{len(ml.wait_list)}q"
        seq = f" seq{mm.mm_lock_seq.sequence}" if mm.config.PER_VMA_LOCK else ""
        parts.append(f"{tag}: mmap_lock {s}{seq} [{_vma_state(mm)}]")
    return "; ".join(parts)


def validate(procs: list[Process]) -> None:
    for p in procs:
        if not p.mm.freed:
            debug.validate_mm(p.mm)


class _Threads(list[tuple[str, Thread, "Body"]]):
    """A world's threads as its scenario declared them: fixed once the world
    is built, and not state (``__statekey_hidden__``): each thread's state is
    in its frames and task_struct."""

    __slots__ = ()
    __statekey_hidden__ = True


class _Bodies(list["Body"]):
    """The coroutine functions that run each thread's body and record its
    result (not state, as :class:`_Threads`)."""

    __slots__ = ()
    __statekey_hidden__ = True


class _Results(dict[TaskStruct, Any]):
    """What each finished thread returned, by task_struct: a set of pairs to
    the state key (``__statekey_unordered__``), since which thread finished
    first is not state."""

    __slots__ = ()
    __statekey_unordered__ = True


class World:
    """A system plus the bookkeeping a scenario needs."""

    def __init__(self, cfg: Config) -> None:
        self.kern = System(cfg)
        track_touches(True)  # the model declares its hidden writes (slab frees, recycling)
        self.p = self.kern.spawn("p")
        self.procs: list[tuple[str, Process]] = [("p", self.p)]
        self.threads = _Threads()
        self._wrapped = _Bodies()
        self.groups: dict[str, list[int]] = {}
        self._results = _Results()
        self.checks: list[Callable[[], None]] = []

    @property
    def results(self) -> dict[str, Any]:
        """What each finished thread returned, by thread name."""
        return {t.comm: r for t, r in sorted(self._results.items(), key=lambda kv: kv[0].comm)}

    def process(self, tag: str) -> Process:
        q = self.kern.spawn(tag)
        self.procs.append((tag, q))
        return q

    def thread(self, name: str, t: Thread, body: Body, group: str | None = None) -> None:
        """Add a thread running ``body``.  Threads given the same ``group``
        are interchangeable: the same ``body`` (one function object) in the
        same process, with nothing else telling them apart; the checker's
        stateful search then takes states that differ only in which of them
        is which for one state (:mod:`pervma.check.symmetry`)."""
        t.task.comm = name

        async def wrapped(th: Thread) -> None:
            try:
                result = await body(th)
            except Segfault as sf:
                result = sf
            except OSError as err:
                result = err
            self._results[th.task] = result

        if group is not None:
            members = self.groups.setdefault(group, [])
            if members:
                _, first, first_body = self.threads[members[0]]
                if first.process is not t.process or first_body is not body:
                    raise ScenarioError(f"thread {name} in group {group!r}: a group's threads "
                                        "must run the same body in the same process")
            members.append(len(self.threads))
        self.threads.append((name, t, body))
        self._wrapped.append(wrapped)

    def instance(self) -> Instance:
        procs = self.procs

        def finish() -> None:
            validate([p for _, p in procs] + [p for p in self.kern.processes
                                              if all(p is not q for _, q in procs)])
            for check in self.checks:
                check()

        return Instance(
            [t.start(b) for (_, t, _), b in zip(self.threads, self._wrapped, strict=True)],
            [n for n, _, _ in self.threads],
            [t.task for _, t, _ in self.threads],
            snapshot=lambda: lock_state(procs),
            finish=finish,
            effects=drain_touched,
            world=self,
            symmetry=tuple(tuple(m) for m in self.groups.values() if len(m) > 1),
        )


def _expect_byte(w: World, addr_owner: Process, addr: int, allowed: set[int], what: str
                 ) -> Callable[[], None]:
    def check() -> None:
        mm = addr_owner.mm
        if mm.freed:
            return
        val = _byte_at(mm, addr)
        if val not in allowed:
            violation("user-visible memory", f"{what}: byte at {addr:#x} is {val}, "
                      f"allowed {sorted(allowed)}")
    return check


def _failed_with(r: Any, code: int) -> bool:
    """Did the system call whose result (or raised error) is ``r`` fail with ``code``?"""
    return isinstance(r, OSError) and r.errno == code


def _byte_at(mm: MmStruct, addr: int) -> int:
    """The byte at ``addr`` as a load would see it now (0 if no PTE maps it)."""
    pte = mm.pgtable.get(addr // PAGE)
    return 0 if pte is None else pte.page.data.get(addr % PAGE, 0)


def _scenario(name: str, doc: str, tweak: Callable[[Config], Config] | None = None,
              **kw: Any) -> Callable[[Callable[[World], None]], Scenario]:
    """Register ``fill`` as a scenario; ``tweak`` adjusts the preset's config
    (the same way on every build, so replays agree)."""
    def wrap(fill: Callable[[World], None]) -> Scenario:
        def build(cfg: Config) -> Instance:
            w = World(tweak(cfg) if tweak is not None else cfg)
            fill(w)
            return w.instance()
        build.__doc__ = doc
        return register(Scenario(name, doc, build, **kw))
    return wrap


# -- the library ------------------------------------------------------------------
@_scenario("fault-vs-munmap", "a write fault races munmap of its VMA", bug="B13")
def _fault_vs_munmap(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)

    async def fault(t: Thread) -> None:
        await t.store(A, 1)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, 2 * PAGE)

    w.thread("fault", p.thread(), fault)
    w.thread("munmap", p.thread(), unmap)


@_scenario("fault-vs-munmap-deep-tree", "a write fault races munmap of its VMA in a tree of "
           "41 VMAs: the lockless walk reads the root, an internal node and a leaf, one per step, "
           "and munmap replaces the leaf (retired through RCU)")
def _fault_vs_munmap_deep(w: World) -> None:
    p = w.p
    for i in range(40):  # one page each, a page apart: no merging
        p.mmap(A + 2 * i * PAGE, PAGE, RW, ANON)
    target = A + 2 * 30 * PAGE

    async def fault(t: Thread) -> None:
        await t.store(target, 1)

    async def unmap(t: Thread) -> int:
        return await t.munmap(target, PAGE)

    w.thread("fault", p.thread(), fault)
    w.thread("munmap", p.thread(), unmap)


@_scenario("fault-vs-mprotect-split", "a fault in the middle page races mprotect splitting "
           "the VMA in three")
def _fault_vs_mprotect(w: World) -> None:
    p = w.p
    p.mmap(A, 3 * PAGE, RW, ANON)
    p.store(A, 1)

    async def fault(t: Thread) -> None:
        await t.store(A + PAGE, 2)

    async def split(t: Thread) -> int:
        return await t.mprotect(A + PAGE, PAGE, PROT_READ)

    w.thread("fault", p.thread(), fault)
    w.thread("mprotect", p.thread(), split)
    w.checks.append(_expect_byte(w, p, A, {1}, "untouched page"))


@_scenario("fork-vs-fault", "fork copies a VMA while a sibling thread stores to two of its "
           "pages, the first write-protected by the copy already", bug="B04")
def _fork_vs_fault(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A, 1)
    p.store(A + PAGE, 1)

    async def fork(t: Thread) -> Any:
        return await t.fork()

    async def stores(t: Thread) -> None:
        await t.store(A, 7)
        await t.store(A + PAGE, 8)

    w.thread("fork", p.thread(), fork)
    w.thread("stores", p.thread(), stores)
    w.checks.append(_expect_byte(w, p, A, {7}, "parent after its store"))
    w.checks.append(_expect_byte(w, p, A + PAGE, {8}, "parent after its store"))


@_scenario("mremap-dontunmap-vs-fault", "a fault races mremap(MREMAP_DONTUNMAP) unlinking "
           "the VMA's anon_vma", bug="B09")
def _mremap_dontunmap(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A, 1)  # the VMA gets an anon_vma

    async def fault(t: Thread) -> None:
        await t.store(A + PAGE, 2)

    async def move(t: Thread) -> int:
        return await t.mremap(A, 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP)

    w.thread("fault", p.thread(), fault)
    w.thread("mremap", p.thread(), move)

    def check() -> None:
        # the pages move and the old range stays mapped, empty; the store
        # lands in the old range (after the move) or travels with it (before)
        new = w.results.get("mremap")
        mm = w.p.mm
        if not isinstance(new, int) or new == A or mm.mm_mt.find_covering(new) is None:
            violation("mremap", f"mremap(MREMAP_DONTUNMAP) returned {new!r}, expected a new address")
            return
        if mm.mm_mt.find_covering(A) is None or A // PAGE in mm.pgtable:
            violation("mremap", "the old range is unmapped or still holds its first page")
        _expect_byte(w, p, new, {1}, "the moved page")()
        stored = [_byte_at(mm, A + PAGE), _byte_at(mm, new + PAGE)]
        if sorted(stored) != [0, 2]:
            violation("user-visible memory", f"the store of 2 is at A+PAGE / new+PAGE as {stored}, "
                      "expected in exactly one of them")
    w.checks.append(check)


@_scenario("fault-vs-mremap", "a load races mremap moving its VMA (the neighbour blocks "
           "growth in place)")
def _fault_vs_mremap(w: World) -> None:
    p = w.p
    p.mmap(A, PAGE, RW, ANON)
    p.store(A, 1)
    p.mmap(A + PAGE, PAGE, PROT_READ, ANON)  # forces the move

    async def load(t: Thread) -> int:
        return await t.load(A)

    async def move(t: Thread) -> int:
        return await t.mremap(A, PAGE, 2 * PAGE, MREMAP_MAYMOVE)

    w.thread("load", p.thread(), load)
    w.thread("mremap", p.thread(), move)

    def check() -> None:
        got = w.results.get("load")
        if not (got == 1 or isinstance(got, Segfault)):
            violation("user-visible memory", f"load of the moved page returned {got!r}, "
                      "expected 1 or SIGSEGV")
    w.checks.append(check)


@_scenario("brk-vs-fault", "the heap shrinks by a page and grows back by two (brk) while one "
           "fault reads the page the shrink unmaps and another writes the page that stays: the "
           "shrink ends its munmap under a downgraded mmap_lock, the growth (do_brk_flags) "
           "leaves one heap VMA")
def _brk_vs_fault(w: World) -> None:
    p = w.p
    b = p.mm.start_brk
    if p.brk(b + 2 * PAGE) != b + 2 * PAGE:
        raise ScenarioError("brk-vs-fault: the heap did not grow")
    p.store(b, 7)
    p.store(b + PAGE, 7)

    async def read(t: Thread) -> int:
        return await t.load(b + PAGE)

    async def write(t: Thread) -> None:
        await t.store(b, 9)

    async def heap(t: Thread) -> tuple[int, int]:
        return await t.brk(b + PAGE), await t.brk(b + 3 * PAGE)

    w.thread("read", p.thread(), read)
    w.thread("write", p.thread(), write)
    w.thread("brk", p.thread(), heap)

    def check() -> None:
        got = w.results.get("read")
        # before the shrink, after the regrowth (a fresh zero page), or in between
        if not (got in (7, 0) or isinstance(got, Segfault)):
            violation("user-visible memory", f"read of the heap's second page returned {got!r}, "
                      "expected 7, 0 or SIGSEGV")
        if w.results.get("brk") != (b + PAGE, b + 3 * PAGE):
            violation("user-visible memory", f"brk returned {w.results.get('brk')!r}, expected "
                      f"({b + PAGE:#x}, {b + 3 * PAGE:#x})")
        heap_vmas = [(v.vm_start, v.vm_end) for v in p.mm.mm_mt.snapshot()
                     if v.vm_start < b + 3 * PAGE and v.vm_end > b]
        if heap_vmas != [(b, b + 3 * PAGE)] or p.mm.brk != b + 3 * PAGE:
            violation("user-visible memory", f"the heap is {heap_vmas} with brk {p.mm.brk:#x}, "
                      f"expected one VMA [{b:#x}-{b + 3 * PAGE:#x}) and brk at its end")
    w.checks.append(check)
    w.checks.append(_expect_byte(w, p, b, {9}, "the write to the page the heap keeps"))
    w.checks.append(_expect_byte(w, p, b + PAGE, {0}, "the page unmapped and mapped again"))


@_scenario("stack-growth-vs-fault", "a fault grows the stack while another fault below the "
           "stack limit walks the VMA tree under mmap_read_lock and fails", bug="B02")
def _stack_growth(w: World) -> None:
    from pervma.kernel.mmap import RLIMIT_STACK

    p = w.p
    bottom = STACK_TOP - STACK_SIZE

    async def grow(t: Thread) -> None:
        await t.store(bottom - PAGE, 1)

    async def too_far(t: Thread) -> None:
        await t.store(STACK_TOP - RLIMIT_STACK - 2 * PAGE, 2)  # SIGSEGV: beyond RLIMIT_STACK

    w.thread("grow", p.thread(), grow)
    w.thread("walker", p.thread(), too_far)

    def check() -> None:
        if not isinstance(w.results.get("walker"), Segfault):
            violation("user-visible memory", "a store beyond RLIMIT_STACK did not raise SIGSEGV")
    w.checks.append(check)


@_scenario("fault-vs-merge", "a fault races mprotect merging its VMA with the neighbour")
def _fault_vs_merge(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.mprotect(A + PAGE, PAGE, PROT_READ)

    async def fault(t: Thread) -> None:
        await t.store(A, 1)

    async def merge(t: Thread) -> int:
        return await t.mprotect(A + PAGE, PAGE, RW)

    w.thread("fault", p.thread(), fault)
    w.thread("mprotect", p.thread(), merge)
    w.checks.append(_expect_byte(w, p, A, {1}, "the faulting store"))


@_scenario("mmap-vs-fault", "mmap publishes a new VMA while another thread faults on it",
           bug="B05")
def _mmap_vs_fault(w: World) -> None:
    p = w.p

    async def mapper(t: Thread) -> int:
        return await t.mmap(A, PAGE, RW, ANON)

    async def fault(t: Thread) -> None:
        await t.store(A, 3)

    w.thread("mmap", p.thread(), mapper)
    w.thread("fault", p.thread(), fault)


@_scenario("two-faults-vs-writer", "read faults on two neighbouring VMAs race an mprotect "
           "that write-locks the first")
def _two_faults(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.mprotect(A + PAGE, PAGE, PROT_READ)  # two VMAs

    async def f0(t: Thread) -> int:
        return await t.load(A)

    async def f1(t: Thread) -> int:
        return await t.load(A + PAGE)

    async def writer(t: Thread) -> int:
        return await t.mprotect(A, PAGE, 0)

    w.thread("fault0", p.thread(), f0)
    w.thread("fault1", p.thread(), f1)
    w.thread("mprotect", p.thread(), writer)


@_scenario("maps-reader-vs-munmap", "/proc/pid/maps (lock_next_vma) races munmap of a middle VMA")
def _maps_reader(w: World) -> None:
    p = w.p
    p.mmap(A, 3 * PAGE, RW, ANON)
    p.mprotect(A + PAGE, PAGE, PROT_READ)  # three VMAs

    async def reader(t: Thread) -> str:
        return await t.read_maps()

    async def unmap(t: Thread) -> int:
        return await t.munmap(A + PAGE, PAGE)

    w.thread("maps", p.thread(), reader)
    w.thread("munmap", p.thread(), unmap)

    def check() -> None:
        text = w.results.get("maps")
        if isinstance(text, str):
            starts = [int(line.split("-")[0], 16) for line in text.splitlines() if line]
            if starts != sorted(starts) or len(set(starts)) != len(starts):
                violation("maps reader", f"/proc/pid/maps lines out of order or repeated: {text!r}")
    w.checks.append(check)


@_scenario("maps-reader-vs-mprotect-split", "/proc/pid/maps (lock_next_vma) races mprotect "
           "splitting its one VMA in three: the VMA object keeps the middle, so the reader may "
           "find a VMA above its position and must recheck the gap below it")
def _maps_vs_split(w: World) -> None:
    p = w.p
    p.mmap(A, 3 * PAGE, RW, ANON)

    async def reader(t: Thread) -> str:
        return await t.read_maps()

    async def split(t: Thread) -> int:
        return await t.mprotect(A + PAGE, PAGE, PROT_READ)

    w.thread("maps", p.thread(), reader)
    w.thread("mprotect", p.thread(), split)


@_scenario("madvise-dontneed-vs-munmap", "MADV_DONTNEED zaps pages while munmap removes part "
           "of the range")
def _madvise_vs_munmap(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A, 1)
    p.store(A + PAGE, 2)

    async def dontneed(t: Thread) -> int:
        return await t.madvise(A, 2 * PAGE, MADV_DONTNEED)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A + PAGE, PAGE)

    w.thread("madvise", p.thread(), dontneed)
    w.thread("munmap", p.thread(), unmap)
    # in either order the first page is zapped: madvise covers it whole, or
    # zaps it and reports the hole munmap left (ENOMEM)
    w.checks.append(_expect_byte(w, p, A, {0}, "first page after DONTNEED"))


def _reuse(w: World, second_unmaps: bool, second_mprotects: bool = False) -> None:
    p = w.p
    q = w.process("q")
    p.mmap(A, PAGE, RW, ANON)

    async def fault(t: Thread) -> None:
        await t.load(A)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, PAGE)

    async def other(t: Thread) -> int:
        r = await t.mmap(A, PAGE, RW, ANON)
        if second_mprotects:
            await t.mprotect(A, PAGE, PROT_READ)
            await t.exit()
        if second_unmaps:
            await t.munmap(A, PAGE)
            await t.exit()
        return r

    w.thread("fault", p.thread(), fault)
    w.thread("munmap", p.thread(), unmap)
    w.thread("q-mmap", q.main, other)


@_scenario("vma-reuse-by-another-mm", "a fault's VMA is unmapped and recycled by another mm "
           "whose mprotect write-locks it, then that process exits", bug="B16")
def _reuse_other(w: World) -> None:
    _reuse(w, second_unmaps=False, second_mprotects=True)


@_scenario("vma-reuse-same-address", "a fault's VMA is unmapped and recycled by another mm "
           "at the same address", bug="B17")
def _reuse_same(w: World) -> None:
    _reuse(w, second_unmaps=False)


@_scenario("detach-vs-transient-reader", "munmap detaches a VMA a fault holds a transient "
           "reference on; another mm reuses the object", bug="B18")
def _detach_transient(w: World) -> None:
    _reuse(w, second_unmaps=False)


@_scenario("killable-write-lock-abort", "fork waits (killable) for a faulting reader's VMA "
           "lock and is killed meanwhile")
def _killable(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A, 1)
    forker = p.thread()

    async def fault(t: Thread) -> None:
        await t.store(A + PAGE, 2)

    async def fork(t: Thread) -> Any:
        try:
            return await t.fork()
        except Killed as k:
            return k

    async def kill(t: Thread) -> None:
        await forker.kill()

    w.thread("fault", p.thread(), fault)
    w.thread("fork", forker, fork)
    w.thread("kill", p.thread(), kill)


def _victim_exits(body: Body) -> Body:
    """``body``, then the thread's exit (exit_mm(): its mm_users reference
    goes), killed or not: what a stuck lock holder below waits for."""
    async def run(t: Thread) -> Any:
        try:
            ret = await body(t)
        except (Killed, OSError) as e:  # killed, or EINTR: it exits all the same
            ret = e
        await t.exit()
        return ret
    return run


def _stuck_until_exit(victim: Thread, hold: str) -> Body:
    """A thread that takes a lock and holds it until ``victim`` has exited:
    a holder stuck on something only the victim's death ends, as the OOM
    killer's victims meet.  ``hold``: ``"mmap-read"``; ``"mmap-write"``, and
    the VMA at A write-locked, as an mmap writer about to change it; or
    ``"vma-read"``, the VMA at A read-locked by a lookup
    (lock_vma_under_rcu(), as a fault does).  Only a killable wait lets the
    victim go; an uninterruptible one is a deadlock."""
    from pervma.kernel.mmap_lock import (
        lock_vma_under_rcu,
        mmap_read_lock,
        mmap_read_unlock,
        mmap_write_lock,
        mmap_write_unlock,
        vma_end_read,
        vma_start_write,
    )
    from pervma.sched.ops import block

    async def run(t: Thread) -> bool:
        mm = t.mm
        vma = None
        if hold == "mmap-write":
            await mmap_write_lock(mm)
            await vma_start_write(mm.mm_mt.snapshot()[0])
        elif hold == "mmap-read":
            await mmap_read_lock(mm)
        else:
            vma = await lock_vma_under_rcu(mm, A)
            if vma is None:  # a writer got there first (or no per-VMA locks): nothing held
                return False
        await block(mm.mm_users.loc, "stuck holder: until the victim exits",
                    lambda: victim.task.exited)
        if hold == "mmap-write":
            await mmap_write_unlock(mm)
        elif hold == "mmap-read":
            await mmap_read_unlock(mm)
        elif vma is not None:
            await vma_end_read(vma)
        return True
    return run


def _killed_or(w: World, name: str, allowed: set[Any]) -> Callable[[], None]:
    """``name`` was killed, got EINTR, or returned one of ``allowed``."""
    def check() -> None:
        r = w.results.get(name)
        if isinstance(r, Killed) or _failed_with(r, errno.EINTR):
            return
        if r not in allowed:
            violation("user-visible memory", f"{name} returned {r!r}: expected one of "
                      f"{sorted(allowed, key=repr)}, EINTR or death by SIGKILL")
    return check


def _killed_waiter(w: World, names: tuple[str, str], body: Body, hold: str,
                   allowed: set[Any]) -> None:
    """Thread ``names[0]`` runs ``body`` and exits; thread ``names[1]`` holds
    a lock (``hold``, as _stuck_until_exit) until then; a third kills the
    first.  The first must end: killed, EINTR, or one of ``allowed``."""
    p = w.p
    victim = p.thread()

    async def kill(t: Thread) -> None:
        await victim.kill()

    w.thread(names[0], victim, _victim_exits(body))
    w.thread(names[1], p.thread(), _stuck_until_exit(victim, hold))
    w.thread("kill", p.thread(), kill)
    w.checks.append(_killed_or(w, names[0], allowed))


@_scenario("killed-munmap-vs-stuck-mmap-reader", "munmap waits for mmap_lock (killable) behind "
           "a reader that holds it until munmap's thread exits, and is killed: the kill must end "
           "the wait")
def _killed_munmap(w: World) -> None:
    w.p.mmap(A, 2 * PAGE, RW, ANON)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, PAGE)

    _killed_waiter(w, ("munmap", "reader"), unmap, "mmap-read", {0})


@_scenario("killed-fault-vs-stuck-mmap-writer", "a fault falls back to mmap_lock (killable "
           "read) behind a writer that write-locked its VMA and holds mmap_lock until the "
           "faulting thread exits, and is killed: the kill must end the wait")
def _killed_fault(w: World) -> None:
    w.p.mmap(A, 2 * PAGE, RW, ANON)
    w.p.store(A, 3)  # the VMA has its anon_vma: the fault needs only the VMA lock when free

    async def fault(t: Thread) -> int:
        return await t.load(A + PAGE)  # not faulted in yet: the zero page

    _killed_waiter(w, ("fault", "writer"), fault, "mmap-write", {0})


@_scenario("killed-fork-vs-stuck-vma-reader", "fork write-locks each VMA (killable) while a "
           "lookup holds the VMA lock of A until fork's thread exits, and is killed: the kill "
           "must end the wait")
def _killed_fork(w: World) -> None:
    w.p.mmap(A, PAGE, RW, ANON)
    w.p.store(A, 3)

    async def fork(t: Thread) -> Any:
        child = await t.fork()
        return child.mm is not t.mm  # never the parent's mm

    _killed_waiter(w, ("fork", "reader"), fork, "vma-read", {True})


@_scenario("mmap-write-downgrade", "munmap downgrades mmap_lock while faults run on the "
           "neighbour and on the unmapped range")
def _downgrade(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.mprotect(A + PAGE, PAGE, PROT_READ)
    p.store(A, 1)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A + PAGE, PAGE)

    async def neighbour(t: Thread) -> None:
        await t.store(A, 5)

    async def gone(t: Thread) -> int:
        return await t.load(A + PAGE)

    w.thread("munmap", p.thread(), unmap)
    w.thread("fault", p.thread(), neighbour)
    w.thread("fault2", p.thread(), gone)
    w.checks.append(_expect_byte(w, p, A, {5}, "the neighbour's store"))


@_scenario("exit-vs-fault", "a forked child exits (exit_mmap zaps the shared COW pages) "
           "while the parent write-faults on one of them")
def _exit_vs_fault(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A, 1)
    p.store(A + PAGE, 1)
    child = p.fork()
    w.procs.append(("child", child))

    async def leave(t: Thread) -> None:
        await t.exit()

    async def cow(t: Thread) -> None:
        await t.store(A, 2)

    w.thread("child-exit", child.main, leave)
    w.thread("cow", p.thread(), cow)
    w.checks.append(_expect_byte(w, p, A, {2}, "the parent's COW store"))
    w.checks.append(_expect_byte(w, p, A + PAGE, {1}, "the untouched shared page"))


def _cow_stores(w: World, names: tuple[str, str], second_in_child: bool) -> None:
    """After fork the parent stores 1 at A and, in the parent again or in the
    child (``second_in_child``), a second thread stores 2 at A + 1, racing on
    the page fork left shared and write-protected (byte 5 at A).  Each
    process ends with exactly its own stores over the original bytes."""
    p = w.p
    p.mmap(A, PAGE, RW, ANON)
    p.store(A, 5)
    child = p.fork()
    w.procs.append(("child", child))

    async def first(t: Thread) -> None:
        await t.store(A, 1)

    async def second(t: Thread) -> None:
        await t.store(A + 1, 2)

    w.thread(names[0], p.thread(), first)
    w.thread(names[1], (child if second_in_child else p).thread(), second)
    w.checks += [_expect_byte(w, p, A, {1}, "the parent's first store"),
                 _expect_byte(w, p, A + 1, {0 if second_in_child else 2}, "the parent's second byte"),
                 _expect_byte(w, child, A, {5}, "the child's first byte"),
                 _expect_byte(w, child, A + 1, {2 if second_in_child else 0}, "the child's second byte")]


@_scenario("cow-store-vs-cow-store", "after fork, two threads of the parent store to two bytes "
           "of the same write-protected page: one copies it, the other reuses the copy or copies "
           "again; neither store is lost and the child keeps the original bytes")
def _cow_vs_cow(w: World) -> None:
    _cow_stores(w, ("store-a", "store-b"), second_in_child=False)


@_scenario("cow-parent-vs-child-store", "after fork, the parent and the child store to the page "
           "they share write-protected: one copies it, the other may reuse it once it is "
           "alone; each sees only its own store")
def _cow_parent_vs_child(w: World) -> None:
    _cow_stores(w, ("parent", "child"), second_in_child=True)


@_scenario("fork-enomem-vs-fault", "fork copies a VMA and then fails anon_vma_fork() on the "
           "next (no memory for its anon_vma_chain): dup_mmap() unwinds and the child is torn "
           "down, while a load faults on the parent's first VMA")
def _fork_enomem(w: World) -> None:
    p = w.p
    p.mmap(A, PAGE, RW, ANON)  # not faulted: no anon_vma, copied without allocating
    p.mmap(A + 2 * PAGE, PAGE, RW, ANON)
    p.store(A + 2 * PAGE, 7)  # an anon_vma: its fork clones the chain
    w.kern.fail_avc_alloc = 2  # anon_vma_clone()'s GFP_NOWAIT attempt, then GFP_KERNEL

    async def fork(t: Thread) -> Any:
        return await t.fork()

    async def load(t: Thread) -> int:  # a read fault maps the zero page: no anon_vma needed
        return await t.load(A)

    w.thread("fork", p.thread(), fork)
    w.thread("load", p.thread(), load)

    def check() -> None:
        r = w.results.get("fork")
        if not _failed_with(r, errno.ENOMEM):
            violation("fork", f"fork returned {r!r}, expected ENOMEM")
        if w.results.get("load") != 0:
            violation("user-visible memory", f"the load returned {w.results.get('load')!r}, expected 0")
        live = [q for q in w.kern.processes if q is not p and not q.mm.freed]
        if live:
            violation("fork", f"the failed fork left {len(live)} process(es) with a live mm")
        layout = [(v.vm_start, v.vm_end) for v in p.mm.mm_mt.snapshot() if A <= v.vm_start < A + 4 * PAGE]
        if layout != [(A, A + PAGE), (A + 2 * PAGE, A + 3 * PAGE)]:
            violation("VMA layout", f"the parent after the failed fork: {layout}")
    w.checks += [check, _expect_byte(w, p, A + 2 * PAGE, {7}, "the parent's second VMA")]


@_scenario("munmap-enomem-vs-fault", "munmap of a range over two VMAs detaches the first part "
           "and then fails to split the second (no memory for its anon_vma_chain): the first "
           "part is reattached, while a fault on it runs under the VMA lock")
def _munmap_enomem(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, PROT_READ, ANON)  # never written: no anon_vma, its split allocates nothing
    p.mmap(A + 2 * PAGE, 2 * PAGE, RW, ANON)
    p.store(A + 2 * PAGE, 7)  # an anon_vma: splitting this VMA clones its chain
    w.kern.fail_avc_alloc = 2  # anon_vma_clone()'s GFP_NOWAIT attempt, then GFP_KERNEL

    async def unmap(t: Thread) -> int:
        return await t.munmap(A + PAGE, 2 * PAGE)

    async def fault(t: Thread) -> int:
        return await t.load(A + PAGE)

    w.thread("munmap", p.thread(), unmap)
    w.thread("fault", p.thread(), fault)

    def check() -> None:
        r = w.results.get("munmap")
        if not _failed_with(r, errno.ENOMEM):
            violation("user-visible memory", f"munmap returned {r!r}, expected ENOMEM")
        if w.results.get("fault") != 0:
            violation("user-visible memory", f"the load of the page munmap kept returned "
                      f"{w.results.get('fault')!r}, expected 0")
        layout = [(v.vm_start, v.vm_end) for v in p.mm.mm_mt.snapshot() if A <= v.vm_start < A + 4 * PAGE]
        if layout != [(A, A + PAGE), (A + PAGE, A + 2 * PAGE), (A + 2 * PAGE, A + 4 * PAGE)]:
            violation("VMA layout", f"after the failed munmap: {[(hex(a), hex(b)) for a, b in layout]}, "
                      "expected the first VMA split at the start of the range and the rest as it was")
    w.checks.append(check)
    w.checks.append(_expect_byte(w, p, A + 2 * PAGE, {7}, "the page of the VMA munmap failed to split"))


def _pre_series(cfg: Config) -> Config:
    """7.0 without the series' caller changes (the mmap_lock fallbacks)."""
    return cfg.with_(SERIES_CALLERS=False)


def _binder_body(w: World) -> None:
    from pervma.kernel.binder import binder_alloc_free_page, binder_install_single_page

    p = w.p
    alloc = p._run(p.main.binder_mmap(4))
    p._run(binder_install_single_page(alloc, alloc.buffer))

    async def shrink(t: Thread) -> bool:
        return await binder_alloc_free_page(alloc, alloc.buffer)

    async def unmap(t: Thread) -> int:
        return await t.munmap(alloc.buffer, 4 * PAGE)

    w.thread("shrinker", p.thread(), shrink)
    w.thread("munmap", p.thread(), unmap)


def _tcp_body(w: World) -> None:
    from pervma.kernel.tcp import tcp_zerocopy_receive

    p = w.p
    addr = p._run(p.main.tcp_mmap(2))

    async def receive(t: Thread) -> int:
        return await tcp_zerocopy_receive(t.mm, addr, 2)

    async def unmap(t: Thread) -> int:
        return await t.munmap(addr, 2 * PAGE)

    w.thread("tcp", p.thread(), receive)
    w.thread("munmap", p.thread(), unmap)


_scenario("binder-shrinker-vs-munmap", "the binder-like shrinker frees a buffer page while "
          "the receiver unmaps the buffer (series form where per-VMA locks exist)")(_binder_body)
_scenario("binder-shrinker-vs-munmap-pre-series", "the same with binder's pre-series callers "
          "(mmap_read_trylock / mmap_lock fallback)", tweak=_pre_series)(_binder_body)
_scenario("tcp-zerocopy-vs-munmap", "tcp_zerocopy_receive maps pages while the receiver "
          "unmaps the area (series form where per-VMA locks exist)")(_tcp_body)
_scenario("tcp-zerocopy-vs-munmap-pre-series", "the same with the pre-series lookup "
          "(lock_vma_under_rcu, then mmap_read_lock)", tweak=_pre_series)(_tcp_body)


def _rmap_walker(w: World, expect_parent: bool, at: int = A,
                 mapped_at: tuple[int, ...] = ()) -> None:
    """A reclaim-like rmap walk of the page at ``at``: the walker isolated the
    page (holds a reference) before the race, walks under the anon_vma's lock
    and drops its reference at the end.  ``mapped_at``: the page stays mapped
    in this mm throughout, at one of these addresses, so the walk must find
    it there."""
    from pervma.kernel.memory import put_page
    from pervma.kernel.rmap import rmap_walk_anon

    p = w.p
    page = p.mm.pgtable[at // PAGE].page
    page.refcount += 1  # folio_isolate_lru(): the walker's reference

    async def walk(t: Thread) -> list[tuple[int, int]]:
        # what the walk found is its result: state the stateful search keys
        # (a list kept beside the threads would not be, and two ends that
        # differ only in it would be one state, its check run on one)
        found = [(vma.vm_mm.id, addr) for vma, addr in await rmap_walk_anon(w.kern, page)]
        put_page(t.mm, page, "walker: folio_put")
        return found

    def check() -> None:
        found = w.results.get("rmap-walk") or []
        if mapped_at:
            if not found or not set(found) <= {(p.mm.id, a) for a in mapped_at}:
                violation("rmap walk", f"the walk found {found} of a page mapped throughout at "
                          f"one of {[hex(a) for a in mapped_at]}")
            return
        if not set(found) <= {(q.mm.id, A) for q in w.kern.processes}:
            violation("rmap walk", f"the walk found {found}, not only mappings of A")
        if expect_parent and (p.mm.id, A) not in found:
            violation("rmap walk", f"the walk missed the parent's mapping of A, which stayed "
                      f"mapped throughout (found {found})")

    w.thread("rmap-walk", p.thread(), walk)
    w.checks.append(check)


@_scenario("rmap-walk-vs-munmap", "an rmap walker (reclaim) locks the anon_vma of a page while "
           "munmap unmaps it and frees the anon_vma (SLAB_TYPESAFE_BY_RCU, folio_mapped re-checks)")
def _rmap_vs_munmap(w: World) -> None:
    p = w.p
    p.mmap(A, PAGE, RW, ANON)
    p.store(A, 1)
    _rmap_walker(w, expect_parent=False)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, PAGE)

    w.thread("munmap", p.thread(), unmap)


@_scenario("rmap-walk-vs-fork", "an rmap walker walks the anon_vma tree while fork links the "
           "child VMA to it (anon_vma_fork) and copies the PTE")
def _rmap_vs_fork(w: World) -> None:
    p = w.p
    p.mmap(A, PAGE, RW, ANON)
    p.store(A, 1)
    _rmap_walker(w, expect_parent=True)

    async def fork(t: Thread) -> Any:
        return await t.fork()

    w.thread("fork", p.thread(), fork)


@_scenario("lock-vma-under-rcu-wait", "the wait-for-writers lookup (correct use) against "
           "mprotect of the same VMA: deadlock-free")
def _wait_ok(w: World) -> None:
    from pervma.kernel.mmap_lock import lock_vma_under_rcu_wait, vma_end_read

    p = w.p
    p.mmap(A, PAGE, RW, ANON)

    async def lookup(t: Thread) -> bool:
        vma = await lock_vma_under_rcu_wait(t.mm, A)
        if vma is not None and t.mm.config.PER_VMA_LOCK:
            await vma_end_read(vma)
        return vma is not None

    async def writer(t: Thread) -> int:
        return await t.mprotect(A, PAGE, PROT_READ)

    w.thread("lookup", p.thread(), lookup)
    w.thread("mprotect", p.thread(), writer)


@_scenario("lock-vma-under-rcu-wait-misuse", "the wait-for-writers lookup called while "
           "holding another VMA's read lock that a queued writer needs: lockdep reports the "
           "circular dependency (a deadlock with lockdep off)",
           tags=("expect-violation",), presets=("universal", "universal-up",
                                                "universal-up-nopreempt"),
           expect=(Expect("universal", "WARNING: possible circular locking dependency detected"),
                   Expect("universal-up", "WARNING: possible circular locking dependency detected"),
                   Expect("universal-up-nopreempt", None,
                          "needs preemption inside the kernel: neither lookup sleeps when "
                          "both VMAs are free, so munmap cannot queue between them")))
def _wait_misuse(w: World) -> None:
    from pervma.kernel.mmap_lock import lock_vma_under_rcu, lock_vma_under_rcu_wait, vma_end_read

    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.mprotect(A + PAGE, PAGE, PROT_READ)  # two VMAs: A and A + PAGE

    async def misuse(t: Thread) -> bool:
        held = await lock_vma_under_rcu(t.mm, A + PAGE)
        vma = await lock_vma_under_rcu_wait(t.mm, A)
        if vma is not None:
            await vma_end_read(vma)
        if held is not None:
            await vma_end_read(held)
        return vma is not None

    async def writer(t: Thread) -> int:
        return await t.munmap(A, 2 * PAGE)  # write-locks A, then A + PAGE

    w.thread("misuse", p.thread(), misuse)
    w.thread("munmap", p.thread(), writer)


@_scenario("lock-vma-under-rcu-wait-mmap-lock-misuse", "the wait-for-writers lookup called "
           "while holding mmap_read_lock, with a writer queued behind it: lockdep reports recursive "
           "locking (a deadlock with lockdep off)",
           tags=("expect-violation",), presets=("universal", "universal-up",
                                                "universal-up-nopreempt"),
           expect=tuple(Expect(p, "lockdep: recursive locking") for p in (
               "universal", "universal-up", "universal-up-nopreempt")))
def _wait_misuse_mmap(w: World) -> None:
    from pervma.kernel.mmap_lock import (
        lock_vma_under_rcu_wait,
        mmap_read_lock,
        mmap_read_unlock,
        vma_end_read,
    )

    p = w.p
    p.mmap(A, PAGE, RW, ANON)

    async def misuse(t: Thread) -> bool:
        await mmap_read_lock(t.mm)
        # Nothing is mapped here, so the RCU lookup fails and the helper
        # queues on mmap_lock behind the writer: a recursive read lock.
        vma = await lock_vma_under_rcu_wait(t.mm, A + 8 * PAGE)
        if vma is not None:
            await vma_end_read(vma)
        await mmap_read_unlock(t.mm)
        return vma is not None

    async def writer(t: Thread) -> int:
        return await t.mprotect(A, PAGE, PROT_READ)

    w.thread("misuse", p.thread(), misuse)
    w.thread("mprotect", p.thread(), writer)
