"""VMA_LOCK_* vmstat counters: one scripted case each, exact deltas
(kernel-protocol.md §3.3)."""

from __future__ import annotations

from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PAGE,
    PROT_READ,
    PROT_WRITE,
    Config,
    System,
)
from pervma.kernel.mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from pervma.sched import Executor

A = 0x10000000
EVENTS = ("vma_lock_success", "vma_lock_abort", "vma_lock_retry", "vma_lock_miss")


def delta(kern: System, before: dict[str, int]) -> dict[str, int]:
    after = kern.vmstat()
    return {e: after[e] - before[e] for e in EVENTS}


def setup(arch: str = "x86_64"):
    kern = System(Config.preset("universal").with_(arch=arch))
    p = kern.spawn()
    p.mmap(A, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    p.store(A, 1)  # the VMA now has an anon_vma
    return kern, p


def test_success_counts_one_fault_under_the_vma_lock() -> None:
    kern, p = setup()
    before = kern.vmstat()
    p.store(A + PAGE, 2)
    assert delta(kern, before) == {"vma_lock_success": 1, "vma_lock_abort": 0,
                                   "vma_lock_retry": 0, "vma_lock_miss": 0}
    assert p.load(A + PAGE) == 2


def test_abort_when_no_vma_then_stack_grows_under_mmap_lock() -> None:
    kern, p = setup()
    before = kern.vmstat()
    stack = p.mm.mm_mt.find_covering(0x7FFFFFFFE000)
    below = stack.vm_start - PAGE
    p.store(below, 3)
    assert delta(kern, before) == {"vma_lock_success": 0, "vma_lock_abort": 1,
                                   "vma_lock_retry": 0, "vma_lock_miss": 0}
    assert p.mm.mm_mt.find_covering(below) is stack and stack.vm_start == below
    assert p.load(below) == 3


def test_abort_when_vma_write_locked() -> None:
    kern, p = setup()
    mm = p.mm
    vma = mm.mm_mt.find_covering(A)
    t0, t1 = p.thread(), p.thread()

    async def writer(t):
        await mmap_write_lock(mm)
        await vma_start_write(vma)
        await mmap_write_unlock(mm)

    async def faulter(t):
        await t.store(A + 2 * PAGE, 4)

    before = kern.vmstat()
    ex = Executor([t1.start(writer), t0.start(faulter)], models=[t1.task, t0.task])
    # the writer write-locks the VMA first, then the fault runs into it
    while not (vma.vm_lock_seq == mm.mm_lock_seq.sequence and vma.vm_refcnt.counter == 1):
        ex.step(0)
    while 1 in ex.runnable():
        ex.step(1)  # aborts, falls back and blocks on mmap_lock
    while ex.runnable():
        ex.step(ex.runnable()[0])
    assert ex.violation is None
    assert delta(kern, before) == {"vma_lock_success": 0, "vma_lock_abort": 1,
                                   "vma_lock_retry": 0, "vma_lock_miss": 0}
    assert p.load(A + 2 * PAGE) == 4


def test_retry_when_anon_vma_needs_mmap_lock_that_a_writer_holds() -> None:
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    p.mmap(A, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)  # no anon_vma yet
    mm = p.mm
    t0, t1 = p.thread(), p.thread()

    async def writer(t):
        await t.mmap(0x20000000, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)

    async def faulter(t):
        await t.store(A, 5)

    before = kern.vmstat()
    ex = Executor([t1.start(writer), t0.start(faulter)], models=[t1.task, t0.task])
    while mm.mmap_lock.writer is None:
        ex.step(0)  # the writer holds mmap_lock (write) but not this VMA
    while 1 in ex.runnable():
        ex.step(1)
    while ex.runnable():
        ex.step(ex.runnable()[0])
    assert ex.violation is None
    assert delta(kern, before) == {"vma_lock_success": 0, "vma_lock_abort": 0,
                                   "vma_lock_retry": 1, "vma_lock_miss": 0}
    assert p.load(A) == 5


def test_retry_when_a_file_page_needs_io() -> None:
    kern = System(Config.preset("universal"))
    f = kern.create_file("/data/file", 4)
    p = kern.spawn()
    a = p.mmap(0, 4 * PAGE, PROT_READ, 0x02, f, 0)  # MAP_PRIVATE file
    before = kern.vmstat()
    assert p.load(a) == 0
    assert delta(kern, before) == {"vma_lock_success": 0, "vma_lock_abort": 0,
                                   "vma_lock_retry": 1, "vma_lock_miss": 0}
    before = kern.vmstat()
    assert p.load(a + 8) == 0  # now in the page cache and mapped: no fault
    p.load(a + PAGE)
    assert delta(kern, before)["vma_lock_retry"] == 1


def test_miss_when_the_vma_is_detached_under_the_walk() -> None:
    kern, p = setup()
    mm = p.mm
    vma = mm.mm_mt.find_covering(A)
    t0, t1 = p.thread(), p.thread()

    async def unmapper(t):
        await t.munmap(A, 4 * PAGE)

    async def faulter(t):
        try:
            await t.store(A + PAGE, 6)
        except Exception as e:  # SIGSEGV once the range is gone
            return e
        return None

    before = kern.vmstat()
    ex = Executor([t1.start(unmapper), t0.start(faulter)], models=[t1.task, t0.task])
    # fault: walk (root, node) and the early check, before the writer starts
    while not ex.tasks[1].pending.label.startswith("vma_start_read: refcount"):
        ex.step(1)
    while vma.vm_refcnt.counter != 0:
        ex.step(0)  # write-lock and detach: still in the tree
    ex.step(1)  # refcount_inc_not_zero fails on 0 -> -EAGAIN -> MISS, walk again
    while ex.runnable():
        ex.step(ex.runnable()[0])
    assert ex.violation is None
    d = delta(kern, before)
    assert d["vma_lock_miss"] == 1
    assert d["vma_lock_success"] == 0
    assert d["vma_lock_abort"] == 1  # the retried walk finds it write-locked (or gone)
    assert type(ex.tasks[1].result).__name__ == "Segfault"


def test_arm64_counts_access_error_as_success_x86_falls_back() -> None:
    for arch, expect in (("x86_64", {"vma_lock_success": 0}), ("arm64", {"vma_lock_success": 1})):
        kern = System(Config.preset("universal").with_(arch=arch))
        p = kern.spawn()
        p.mmap(A, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
        before = kern.vmstat()
        try:
            p.store(A, 1)
        except Exception as e:
            assert type(e).__name__ == "Segfault" and e.code == 2  # SEGV_ACCERR
        d = delta(kern, before)
        assert d["vma_lock_success"] == expect["vma_lock_success"], arch
        assert d["vma_lock_abort"] == d["vma_lock_retry"] == d["vma_lock_miss"] == 0


def test_legacy_has_no_vma_lock_counters() -> None:
    kern = System(Config.preset("legacy"))
    p = kern.spawn()
    p.mmap(A, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    p.store(A, 1)
    assert not any(e in kern.vmstat() for e in EVENTS)
    assert kern.vmstat()["pgfault"] == 1


def test_a_resident_file_never_waits_for_io() -> None:
    # create_file(resident=True): every page is already in the page cache, so a
    # fault under the VMA lock succeeds at once (no RETRY for I/O) and maps the
    # file's own bytes, with no alloc_pages step and no I/O
    kern = System(Config.preset("universal"))
    f = kern.create_file("/data/warm", 4, resident=True)
    f.contents[2] = {5: 0x77}
    p = kern.spawn()
    a = p.mmap(0, 4 * PAGE, PROT_READ, 0x02, f, 0)  # MAP_PRIVATE file
    before = kern.vmstat()
    allocs = kern.page_cachep.total_allocs
    assert p.load(a + 2 * PAGE + 5) == 0x77
    assert delta(kern, before) == {"vma_lock_success": 1, "vma_lock_abort": 0,
                                   "vma_lock_retry": 0, "vma_lock_miss": 0}
    assert kern.page_cachep.total_allocs == allocs + 1  # the cache page itself, made on lookup
    assert sorted(f.pages) == [2]
    assert f.pages[2].mapcount == 1 and f.pages[2].refcount == 2
