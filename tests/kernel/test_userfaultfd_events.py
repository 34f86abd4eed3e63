"""userfaultfd's non-cooperative UFFD_EVENT_REMAP and UNMAP (kernel/userfaultfd.py):
mremap_userfaultfd_prep() raising ``mmap_changing`` under map_changing_lock,
the mremap thread sleeping in userfaultfd_event_wait_completion() after
dropping mmap_lock until the manager reads the event, and the fills,
UFFDIO_WRITEPROTECT and UFFDIO_MOVE failing with EAGAIN meanwhile
(fs/userfaultfd.c, mm/mremap.c's notify_uffd(), 7.0)."""

from __future__ import annotations

import errno

import pytest
from test_userfaultfd import PRESETS, A, blocked_in, executor, run, setup

from pervma import (
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE,
    UFFD_EVENT_REMAP,
    UFFD_EVENT_UNMAP,
    UFFD_FEATURE_EVENT_REMAP,
    UFFD_FEATURE_EVENT_UNMAP,
    UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
    UFFDIO_WRITEPROTECT_MODE_WP,
    Killed,
    Process,
    System,
    Thread,
)
from pervma.kernel.system import Userfaultfd
from pervma.kernel.userfaultfd import O_NONBLOCK

WAIT = "userfaultfd_event_wait_completion: schedule()"
B = A + 16 * PAGE  # where the registered VMA moves


def remap_setup(preset: str, features: int = UFFD_FEATURE_EVENT_REMAP
                ) -> tuple[System, Process, int, Userfaultfd]:
    kern, p, src = setup(preset)
    p.store(A, 1)
    u = p.userfaultfd()
    u.api(features)
    u.register(A, 4 * PAGE, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP)
    u.writeprotect(A, PAGE, UFFDIO_WRITEPROTECT_MODE_WP)
    return kern, p, src, u


async def remap(t: Thread) -> int:
    return await t.mremap(A, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, B)


@pytest.mark.parametrize("preset", PRESETS)
def test_remap_event_blocks_the_mremap_and_fills_get_eagain_until_read(preset: str) -> None:
    _, p, src, u = remap_setup(preset)
    m = p.thread()
    ex = executor((m, remap))
    run(ex, lambda: blocked_in(ex, 0, WAIT))
    # mmap_lock dropped, the VMA moved and still registered, the bit kept (EVENT_REMAP)
    assert p.mm.mmap_lock.writer is None and not p.mm.mmap_lock.readers and m.task.held == []
    vma = p.mm.mm_mt.find_covering(B)
    assert vma is not None and vma.vm_userfaultfd_ctx is u.ctx and u.ctx.mmap_changing == 1
    assert p.mm.pgtable[B // PAGE].uffd_wp
    for call, args in ((u.copy, (B + PAGE, src, PAGE)), (u.zeropage, (B + PAGE, PAGE)),
                       (u.move, (B + PAGE, src, PAGE))):
        with pytest.raises(OSError) as e:
            call(*args)
        assert e.value.errno == errno.EAGAIN and e.value.count == -errno.EAGAIN  # type: ignore[attr-defined]
    with pytest.raises(OSError) as e:
        u.writeprotect(B, PAGE, 0)
    assert e.value.errno == errno.EAGAIN and p.mm.pgtable[B // PAGE].uffd_wp
    assert (B + PAGE) // PAGE not in p.mm.pgtable
    assert u.read() == {"event": UFFD_EVENT_REMAP, "from": A, "to": B, "len": 4 * PAGE}
    run(ex)
    assert ex.tasks[0].result == B and u.ctx.mmap_changing == 0 and not u.ctx.event_wqh
    assert u.ctx.refcount == 1
    assert u.copy(B + PAGE, src, PAGE) == PAGE and p.load(B + PAGE) == 0x5A


def test_close_releases_the_waiting_mremap() -> None:
    _, p, _, u = remap_setup("universal")
    m, c = p.thread(), p.thread()

    async def close(t: Thread) -> None:
        await u.on(t).close()

    ex = executor((m, remap), (c, close))
    run(ex, lambda: blocked_in(ex, 0, WAIT))
    run(ex)
    assert ex.tasks[0].result == B and u.ctx.freed  # the last reference went with the event
    vma = p.mm.mm_mt.find_covering(B)
    assert vma is not None and vma.vm_userfaultfd_ctx is None


def test_a_fatal_signal_ends_the_wait() -> None:
    _, p, _, u = remap_setup("universal")
    m, k = p.thread(), p.thread()

    async def kill(t: Thread) -> None:
        await m.kill()

    ex = executor((m, remap), (k, kill))
    run(ex, lambda: blocked_in(ex, 0, WAIT))
    run(ex)
    assert isinstance(ex.tasks[0].result, Killed)
    assert u.ctx.mmap_changing == 0 and not u.ctx.event_wqh and u.ctx.refcount == 1


def test_without_event_remap_the_moved_vma_is_unregistered_and_nothing_waits() -> None:
    _, p, _, u = remap_setup("universal", features=0)
    assert p.mremap(A, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, B) == B
    vma = p.mm.mm_mt.find_covering(B)
    assert vma is not None and vma.vm_userfaultfd_ctx is None and not p.mm.pgtable[B // PAGE].uffd_wp
    assert u.ctx.mmap_changing == 0 and not u.ctx.event_wqh


# -- UFFD_EVENT_UNMAP (munmap: userfaultfd_unmap_prep in vms_gather_munmap_vmas) --------
@pytest.mark.parametrize("preset", PRESETS)
def test_unmap_event_after_the_lock_is_dropped(preset: str) -> None:
    _, p, src = setup(preset, pages=8)
    u = p.userfaultfd()
    u.api(UFFD_FEATURE_EVENT_UNMAP)
    u.register(A, 2 * PAGE, UFFDIO_REGISTER_MODE_MISSING)
    u.register(A + 2 * PAGE, 2 * PAGE, UFFDIO_REGISTER_MODE_WP)  # a second VMA, same context
    u.register(A + 6 * PAGE, 2 * PAGE, UFFDIO_REGISTER_MODE_MISSING)
    m = p.thread()

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, 5 * PAGE)

    ex = executor((m, unmap))
    run(ex, lambda: blocked_in(ex, 0, WAIT))
    assert p.mm.mmap_lock.writer is None and not p.mm.mmap_lock.readers
    assert p.mm.mm_mt.find_covering(A) is None and u.ctx.mmap_changing == 1  # one event for both VMAs
    with pytest.raises(OSError) as e:
        u.copy(A + 6 * PAGE, src, PAGE)
    assert e.value.errno == errno.EAGAIN and (A + 6 * PAGE) // PAGE not in p.mm.pgtable
    assert u.read() == {"event": UFFD_EVENT_UNMAP, "start": A, "end": A + 5 * PAGE}
    run(ex)
    assert ex.tasks[0].result == 0 and u.ctx.mmap_changing == 0 and u.ctx.refcount == 1
    assert u.copy(A + 6 * PAGE, src, PAGE) == PAGE


def test_munmap_of_unregistered_memory_sends_no_event() -> None:
    _, p, _ = setup("universal", pages=8)
    u = p.userfaultfd(O_NONBLOCK)
    u.api(UFFD_FEATURE_EVENT_UNMAP)
    u.register(A + 6 * PAGE, 2 * PAGE, UFFDIO_REGISTER_MODE_MISSING)
    assert p.munmap(A, 4 * PAGE) == 0
    assert u.ctx.mmap_changing == 0
    with pytest.raises(OSError) as e:
        u.read()
    assert e.value.errno == errno.EAGAIN
