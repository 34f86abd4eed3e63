"""Kernel-internal users of VMA locks: binder, TCP zerocopy, the maps
reader and the rmap walker, in their pre-series and series forms."""

from __future__ import annotations

import pytest

from pervma import MAP_ANONYMOUS, MAP_PRIVATE, PAGE, PROT_READ, PROT_WRITE, Config, System
from pervma.kernel import binder, tcp
from pervma.kernel.mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from pervma.kernel.rmap import rmap_walk_anon
from pervma.sched import Executor, run_direct


def cfg(series: bool) -> Config:
    return Config.preset("universal").with_(SERIES_CALLERS=series)


def labels(ex: Executor, tid: int) -> list[str]:
    return [op.label for t, op in ex.trace if t == tid]


@pytest.mark.parametrize("series", [False, True])
def test_binder_install_waits_for_a_writer_the_series_way(series: bool) -> None:
    kern = System(cfg(series))
    p = kern.spawn()
    alloc = p._run(p.main.binder_mmap(4))
    vma = p.mm.mm_mt.find_covering(alloc.buffer)
    w, t = p.thread(), p.thread()

    async def writer(th):
        await mmap_write_lock(p.mm)
        await vma_start_write(vma)
        await mmap_write_unlock(p.mm)

    async def installer(th):
        return await binder.binder_install_single_page(alloc, alloc.buffer + PAGE)

    ex = Executor([w.start(writer), t.start(installer)], models=[w.task, t.task])
    while not (vma.vm_lock_seq == p.mm.mm_lock_seq.sequence and vma.vm_refcnt.counter == 1):
        ex.step(0)
    while 1 in ex.runnable():
        ex.step(1)  # lock_vma_under_rcu fails; then it queues on mmap_lock
    assert ex.tasks[1].pending.label.startswith("down_read(mmap_lock) wait")
    while ex.runnable():
        ex.step(ex.runnable()[0])
    assert ex.violation is None and ex.tasks[1].result == 0
    assert alloc.buffer + PAGE in alloc.pages
    mine = labels(ex, 1)
    # series: the wait-for-writers helper hands over to the VMA read lock
    assert ("vma_start_read_locked" in mine) is series


@pytest.mark.parametrize("series", [False, True])
def test_binder_shrinker_under_an_mmap_writer(series: bool) -> None:
    """Pre-series the shrinker's mmap_read_trylock fails and the page is
    skipped; the series' shrinker needs only the VMA lock, which an mmap
    writer that does not touch this VMA leaves free."""
    kern = System(cfg(series))
    p = kern.spawn()
    alloc = p._run(p.main.binder_mmap(2))
    run_direct(p.main._guard(binder.binder_install_single_page(alloc, alloc.buffer)), model=p.main.task)
    shrinker = kern.spawn("kswapd").main
    w = p.thread()

    async def writer(th):
        await mmap_write_lock(p.mm)

    ex = Executor([w.start(writer), shrinker.start(
        lambda th: binder.binder_alloc_free_page(alloc, alloc.buffer))], models=[w.task, shrinker.task])
    while p.mm.mmap_lock.writer is None:
        ex.step(0)  # mmap_lock write-held; the writer is not run to its end (it would
        # end holding the lock: do_exit()'s check)
    while 1 in ex.runnable():
        ex.step(1)
    assert ex.tasks[1].result is series
    assert (alloc.buffer in alloc.pages) is not series


def test_binder_shrinker_series_uses_only_the_vma_lock() -> None:
    kern = System(cfg(True))
    p = kern.spawn()
    alloc = p._run(p.main.binder_mmap(2))
    run_direct(p.main._guard(binder.binder_install_single_page(alloc, alloc.buffer)), model=p.main.task)
    k = kern.spawn("kswapd").main
    ex = Executor([k.start(lambda th: binder.binder_alloc_free_page(alloc, alloc.buffer))], models=[k.task])
    while ex.runnable():
        ex.step(0)
    assert ex.tasks[0].result is True and alloc.buffer not in alloc.pages
    assert not any("mmap_lock" in label for label in labels(ex, 0))


@pytest.mark.parametrize("series", [False, True])
def test_tcp_zerocopy_maps_pages_and_refuses_other_vmas(series: bool) -> None:
    kern = System(cfg(series))
    p = kern.spawn()
    a = p._run(p.main.tcp_mmap(4))
    got = run_direct(p.main._guard(tcp.tcp_zerocopy_receive(p.mm, a, 3)), model=p.main.task)
    assert got == 3 and [p.load(a + i * PAGE) for i in range(4)] == [0x7C, 0x7C, 0x7C, 0]
    b = p.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert run_direct(p.main._guard(tcp.tcp_zerocopy_receive(p.mm, b, 1)), model=p.main.task) == -22


def test_legacy_callers_use_mmap_lock() -> None:
    kern = System(Config.preset("legacy"))
    p = kern.spawn()
    a = p._run(p.main.tcp_mmap(1))
    t = p.thread()
    ex = Executor([t.start(lambda th: tcp.tcp_zerocopy_receive(p.mm, a, 1))], models=[t.task])
    while ex.runnable():
        ex.step(0)
    assert ex.tasks[0].result == 1
    assert "down_read(mmap_lock)" in labels(ex, 0)


def test_maps_reader_matches_the_file() -> None:
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    for _ in range(3):
        p.mmap(0, 2 * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
        p.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    text = run_direct(p.main._guard(p.main.read_maps()), model=p.main.task)
    assert text == p.maps() and len(text.splitlines()) == 7


def test_rmap_walk_finds_parent_and_child_after_fork() -> None:
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    a = p.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(a, 1)
    c = p.fork()
    page = p.mm.pgtable[a >> 12].page
    found = run_direct(p.main._guard(rmap_walk_anon(kern, page)), model=p.main.task)
    assert sorted((v.vm_mm.id, addr) for v, addr in found) == sorted([(p.mm.id, a), (c.mm.id, a)])
