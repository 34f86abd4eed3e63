"""PROCMAP_QUERY (kernel/task_mmu.py): the answers, the errnos in the kernel's
order, and the locks: per-VMA (lock_next_vma) with per-VMA locks, mmap_lock
without; plus a query racing munmap."""

from __future__ import annotations

import errno

import pytest

from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE,
    PROCMAP_QUERY_COVERING_OR_NEXT_VMA,
    PROCMAP_QUERY_FILE_BACKED_VMA,
    PROCMAP_QUERY_SIZE,
    PROCMAP_QUERY_VMA_EXECUTABLE,
    PROCMAP_QUERY_VMA_READABLE,
    PROCMAP_QUERY_VMA_SHARED,
    PROCMAP_QUERY_VMA_WRITABLE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    Config,
    Process,
    System,
    Thread,
)
from pervma.kernel.system import STACK_SIZE, STACK_TOP
from pervma.sched import Executor

A = 0x10000000
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
PRESETS = ("legacy", "universal", "universal-up", "universal-up-nopreempt")
COVER_NEXT = PROCMAP_QUERY_COVERING_OR_NEXT_VMA


def setup(preset: str = "universal") -> tuple[System, Process]:
    """[A, A+2) rw anon, [A+2, A+3) r-x anon, [A+4, A+6) a private file
    mapping at offset 1 page, [A+8, A+9) shared anon."""
    kern = System(Config.preset(preset))
    p = kern.spawn()
    p.mmap(A, 3 * PAGE, RW, ANON)
    p.mprotect(A + 2 * PAGE, PAGE, PROT_READ | PROT_EXEC)
    f = kern.create_file("/data/lib.so", 8)
    p.mmap(A + 4 * PAGE, 2 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, f, PAGE)
    p.mmap(A + 8 * PAGE, PAGE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    return kern, p


def span(q: dict[str, object]) -> tuple[int, int]:
    return (int(q["vma_start"]) - A) // PAGE, (int(q["vma_end"]) - A) // PAGE  # type: ignore[call-overload]


@pytest.mark.parametrize("preset", PRESETS)
def test_covering_vma_answer(preset: str) -> None:
    kern, p = setup(preset)
    q = p.procmap_query(A + PAGE + 5)
    assert q == {"size": PROCMAP_QUERY_SIZE, "query_flags": 0, "query_addr": A + PAGE + 5,
                 "vma_start": A, "vma_end": A + 2 * PAGE,
                 "vma_flags": PROCMAP_QUERY_VMA_READABLE | PROCMAP_QUERY_VMA_WRITABLE,
                 "vma_page_size": PAGE, "vma_offset": 0, "inode": 0, "dev_major": 0,
                 "dev_minor": 0, "vma_name_size": 0, "build_id_size": 0, "vma_name": ""}
    f = p.procmap_query(A + 5 * PAGE)
    file = p.mm.mm_mt.find_covering(A + 5 * PAGE).vm_file
    assert (f["vma_offset"], f["inode"], f["dev_major"], f["dev_minor"]) == (PAGE, file.inode, 8, 1)
    assert f["vma_name"] == "/data/lib.so" and f["vma_name_size"] == len("/data/lib.so") + 1
    s = p.procmap_query(STACK_TOP - 8)
    assert s["vma_name"] == "[stack]" and s["vma_start"] == STACK_TOP - STACK_SIZE
    sh = p.procmap_query(A + 8 * PAGE)
    assert sh["vma_flags"] & PROCMAP_QUERY_VMA_SHARED and sh["vma_name"] == "/dev/zero (deleted)"
    if preset != "legacy":  # the per-VMA path counts nothing (lock_next_vma is not a fault)
        assert kern.vmstat()["vma_lock_success"] == 0


def test_gap_is_enoent_unless_covering_or_next() -> None:
    _, p = setup()
    with pytest.raises(OSError) as e:
        p.procmap_query(A + 3 * PAGE)
    assert e.value.errno == errno.ENOENT
    assert span(p.procmap_query(A + 3 * PAGE, COVER_NEXT)) == (4, 6)
    assert span(p.procmap_query(A - 1, COVER_NEXT)) == (0, 2)
    with pytest.raises(OSError) as e:
        p.procmap_query(STACK_TOP, COVER_NEXT)
    assert e.value.errno == errno.ENOENT


def test_flags_filter_the_walk() -> None:
    _, p = setup()
    assert span(p.procmap_query(A, COVER_NEXT | PROCMAP_QUERY_VMA_EXECUTABLE)) == (2, 3)
    assert span(p.procmap_query(A, COVER_NEXT | PROCMAP_QUERY_FILE_BACKED_VMA)) == (4, 6)
    # a covering VMA without the asked permission: ENOENT without COVERING_OR_NEXT
    with pytest.raises(OSError) as e:
        p.procmap_query(A, PROCMAP_QUERY_VMA_EXECUTABLE)
    assert e.value.errno == errno.ENOENT
    w = p.procmap_query(A + 2 * PAGE, COVER_NEXT | PROCMAP_QUERY_VMA_WRITABLE | PROCMAP_QUERY_VMA_SHARED)
    assert span(w) == (8, 9)


@pytest.mark.parametrize(("kw", "err"), [
    ({"size": 4097}, errno.E2BIG),
    ({"size": 23}, errno.EINVAL),
    ({"flags": 0x40}, errno.EINVAL),
    ({"flags": 1 << 32}, errno.EINVAL),
    ({"vma_name_size": 5}, errno.ENAMETOOLONG),
])
def test_bad_arguments(kw: dict[str, int], err: int) -> None:
    _, p = setup()
    addr = A + 4 * PAGE
    with pytest.raises(OSError) as e:
        p.procmap_query(addr, **kw)
    assert e.value.errno == err


def test_small_size_and_no_name_buffer() -> None:
    _, p = setup()
    q = p.procmap_query(A + 4 * PAGE, size=24, vma_name_size=0)
    assert q["size"] == 24 and q["vma_name_size"] == 0 and q["vma_name"] == ""


@pytest.mark.parametrize("preset", PRESETS)
def test_query_locks_the_vma_or_mmap_lock(preset: str) -> None:
    _, p = setup(preset)
    t = p.thread()

    async def query(th: Thread) -> dict[str, object]:
        return await th.procmap_query(A + PAGE)

    ex = Executor([t.start(query)], models=[t.task])
    seen = None
    while not ex.finished():
        op = ex.tasks[0].pending
        if op is not None and op.label == "do_procmap_query: read the VMA":
            vma = p.mm.mm_mt.find_covering(A + PAGE)
            seen = (vma.vm_refcnt.counter, len(p.mm.mmap_lock.readers))
        ex.step(0)
    assert seen == ((0, 1) if preset == "legacy" else (2, 0))
    assert span(ex.tasks[0].result) == (0, 2)
    labels = [op.label for _, op in ex.trace]
    assert ("vma_start_read: refcount_inc_not_zero_limited" in labels) == (preset != "legacy")


@pytest.mark.parametrize("preset", PRESETS)
def test_query_racing_munmap_sees_the_vma_or_nothing(preset: str) -> None:
    """Every interleaving (round-robin from each start) answers with the whole
    VMA or ENOENT, never a freed or foreign one."""
    answers = set()
    for first in (0, 1):
        for stride in range(1, 12):
            _, p = setup(preset)
            q, w = p.thread(), p.thread()

            async def query(th: Thread) -> object:
                try:
                    return span(await th.procmap_query(A + PAGE))
                except OSError as err:
                    return err.errno

            async def unmap(th: Thread) -> int:
                return await th.munmap(A, 2 * PAGE)

            ex = Executor([q.start(query), w.start(unmap)], models=[q.task, w.task])
            n = 0
            while not ex.finished():
                r = ex.runnable()
                assert r, ex.deadlock()
                tid = first if first in r and n % stride else r[-1]
                ex.step(tid)
                n += 1
            assert ex.violation is None
            answers.add(ex.tasks[0].result)
    assert answers <= {(0, 2), errno.ENOENT} and (0, 2) in answers
