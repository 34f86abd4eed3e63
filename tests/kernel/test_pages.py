"""Page contents through the user API: COW after fork both ways,
MADV_DONTNEED zero-fill, shared mappings seen by two processes, stack
growth.  Parametrised over presets: the bytes must not depend on locking."""

from __future__ import annotations

import errno

import pytest

from pervma import (
    MADV_DONTNEED,
    MADV_FREE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE,
    PROT_READ,
    PROT_WRITE,
    SEGV_ACCERR,
    SEGV_MAPERR,
    Config,
    Segfault,
    System,
)
from pervma.sched import Executor

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def test_cow_after_fork_both_ways(preset: str) -> None:
    kern = System(Config.preset(preset))
    p = kern.spawn()
    a = p.mmap(0, 2 * PAGE, RW, ANON)
    p.store(a, 10)
    p.store(a + PAGE, 20)
    c = p.fork()
    assert (c.load(a), c.load(a + PAGE)) == (10, 20)
    c.store(a, 11)  # child writes: parent keeps its byte
    p.store(a + PAGE, 21)  # parent writes: child keeps its byte
    assert (p.load(a), p.load(a + PAGE)) == (10, 21)
    assert (c.load(a), c.load(a + PAGE)) == (11, 20)
    # the page both still share was never copied
    pa = p.mm.pgtable[(a + PAGE) >> 12].page
    ca = c.mm.pgtable[(a + PAGE) >> 12].page
    assert pa is not ca
    p0 = p.mm.pgtable[a >> 12].page
    assert p0.mapcount == 1 and p0.data[0] == 10


def test_madv_dontneed_zero_fills(preset: str) -> None:
    kern = System(Config.preset(preset))
    p = kern.spawn()
    a = p.mmap(0, 4 * PAGE, RW, ANON)
    for i in range(4):
        p.store(a + i * PAGE + 5, 0x40 + i)
    p.madvise(a + PAGE, 2 * PAGE, MADV_DONTNEED)
    assert [p.load(a + i * PAGE + 5) for i in range(4)] == [0x40, 0, 0, 0x43]
    assert (a + PAGE) >> 12 not in p.mm.pgtable or p.mm.pgtable[(a + PAGE) >> 12].page.zero_page
    p.madvise(a, PAGE, MADV_FREE)
    assert p.load(a + 5) == 0x40  # lazily freed: no reclaim in the model


def test_madv_dontneed_takes_the_vma_lock_path() -> None:
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    a = p.mmap(0, 4 * PAGE, RW, ANON)
    p.store(a, 1)
    before = kern.vmstat()["vma_lock_abort"], kern.vmstat()["vma_lock_miss"]
    t = p.thread()
    ex = Executor([t.start(lambda t: t.madvise(a, 4 * PAGE, MADV_DONTNEED))], models=[t.task])
    while ex.runnable():
        ex.step(0)
    labels = [op.label for _, op in ex.trace]
    assert not any("mmap_lock" in label for label in labels)  # one VMA, read-locked
    assert "vma_start_read: late seq check" in labels and "zap_pte_range" in labels
    assert (kern.vmstat()["vma_lock_abort"], kern.vmstat()["vma_lock_miss"]) == before
    assert p.load(a) == 0


def test_shared_anonymous_mapping_is_shared_with_the_child(preset: str) -> None:
    kern = System(Config.preset(preset))
    p = kern.spawn()
    a = p.mmap(0, PAGE, RW, MAP_SHARED | MAP_ANONYMOUS)
    p.store(a, 1)
    c = p.fork()
    c.store(a + 1, 2)
    assert (p.load(a), p.load(a + 1)) == (1, 2)
    assert "/dev/zero (deleted)" in p.maps() and " rw-s " in p.maps()


def test_shared_file_mapping_seen_by_two_processes(preset: str) -> None:
    kern = System(Config.preset(preset))
    f = kern.create_file("/tmp/shared", 2)
    p, q = kern.spawn("p"), kern.spawn("q")
    a = p.mmap(0, 2 * PAGE, RW, MAP_SHARED, f, 0)
    b = q.mmap(0, PAGE, RW, MAP_SHARED, f, PAGE)  # q maps only the second page
    p.store(a + PAGE + 7, 0x5A)
    assert q.load(b + 7) == 0x5A
    q.store(b, 0x11)
    assert p.load(a + PAGE) == 0x11
    assert f.pages[1].data == {7: 0x5A, 0: 0x11}
    line = next(ln for ln in q.maps().splitlines() if ln.endswith("/tmp/shared"))
    assert line.split()[1:3] == ["rw-s", "00001000"]


def test_private_file_mapping_cow_does_not_reach_the_file(preset: str) -> None:
    kern = System(Config.preset(preset))
    f = kern.create_file("/tmp/priv", 1)
    f.contents[0] = {3: 9}
    p = kern.spawn()
    a = p.mmap(0, PAGE, RW, MAP_PRIVATE, f, 0)
    assert p.load(a + 3) == 9
    p.store(a + 3, 10)
    assert p.load(a + 3) == 10
    assert f.pages[0].data == {3: 9}


def test_stack_grows_down_on_a_fault_below_it(preset: str) -> None:
    kern = System(Config.preset(preset))
    p = kern.spawn()
    stack = p.mm.mm_mt.find_covering(0x7FFFFFFFE000)
    start = stack.vm_start
    p.store(start - 3 * PAGE + 1, 0x77)
    assert stack.vm_start == start - 3 * PAGE
    assert p.load(start - 3 * PAGE + 1) == 0x77
    assert p.maps().splitlines()[-1].startswith(f"{start - 3 * PAGE:08x}-7ffffffff000 rw-p")
    assert p.maps().rstrip().endswith("[stack]")
    with pytest.raises(Segfault) as e:
        p.store(start - (9 << 20), 1)  # beyond RLIMIT_STACK (8 MiB)
    assert e.value.code == SEGV_MAPERR


def test_segfaults_have_the_right_code(preset: str) -> None:
    kern = System(Config.preset(preset))
    p = kern.spawn()
    a = p.mmap(0x10000000, PAGE, PROT_READ, ANON | MAP_FIXED)
    with pytest.raises(Segfault) as e:
        p.store(a, 1)
    assert e.value.code == SEGV_ACCERR
    assert p.load(a) == 0
    with pytest.raises(Segfault) as e:
        p.load(0x20000000)
    assert e.value.code == SEGV_MAPERR
    p.munmap(a, PAGE)
    with pytest.raises(Segfault):
        p.load(a)
    with pytest.raises(OSError) as oe:
        p.munmap(a + 1, PAGE)
    assert oe.value.errno == errno.EINVAL


def test_exit_frees_the_mm_and_its_vmas(preset: str) -> None:
    kern = System(Config.preset(preset))
    p = kern.spawn()
    a = p.mmap(0, 3 * PAGE, RW, ANON)
    p.store(a, 1)
    active = kern.vm_area_cachep.active
    p.exit()
    assert p.mm.freed
    assert kern.vm_area_cachep.active == active - 2  # the mapping and the stack


def test_a_cow_copy_that_raced_with_a_reuse_of_the_page_backs_off() -> None:
    """Two threads write one COW page that a fork child shares.  The first
    fault finds the page shared, drops the PTE lock and copies it; meanwhile
    the child unmaps its copy and the second thread's fault, finding the page
    exclusive now, reuses it (the entry made writable) and writes through it.
    The copy must then back off (wp_page_copy()'s pte_same() against the entry
    it read, not just the same page), or it installs a copy without the
    second thread's byte: a lost store (the fuzzer's finding on the correct
    model, universal, seed 2026 program 173)."""
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    a = p.mmap(0, PAGE, RW, ANON)
    p.store(a, 1)
    c = p.fork()
    w1, w0, cu = p.thread(), p.thread(), c.thread()

    async def store(t, addr, byte):  # type: ignore[no-untyped-def]
        await t.store(addr, byte)

    async def unmap(t):  # type: ignore[no-untyped-def]
        await t.munmap(a, PAGE)

    ex = Executor([w1.start(lambda t: store(t, a, 148)), cu.start(unmap),
                   w0.start(lambda t: store(t, a + 1, 81))],
                  models=[w1.task, cu.task, w0.task])
    labels = []
    while "copy_page" not in labels:  # the first fault has copied the shared page
        labels.append(ex.step(0).label)
    assert "alloc_pages" in labels and "wp_page_reuse" not in labels
    for tid in (1, 2, 0):  # the child's munmap, the reusing store, the copy's end
        while not ex.tasks[tid].done:
            ex.step(tid)
    assert ex.violation is None
    assert (p.load(a), p.load(a + 1)) == (148, 81)
    assert p.mm.pgtable[a >> 12].page.data == {0: 148, 1: 81}
