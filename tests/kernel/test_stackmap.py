"""The BPF stack map's build-ID lookup (kernel/stackmap.py): what it returns
for file-backed, anonymous and unmapped IPs, that it takes and drops the VMA
read lock (or, without per-VMA locks, mmap_lock), and that it never waits for
mmap_lock: with a writer holding it, the answer is the raw IP."""

from __future__ import annotations

import pytest
from test_userfaultfd import PRESETS, A, executor, run

from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PAGE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    Config,
    Process,
    System,
    Thread,
)
from pervma.kernel.stackmap import BPF_STACK_BUILD_ID_IP, BPF_STACK_BUILD_ID_VALID


def text_process(preset: str) -> tuple[System, Process, int]:
    kern = System(Config.preset(preset))
    p = kern.spawn()
    f = kern.create_file("/usr/bin/prog", 8, resident=True)
    # pages 2..5 of the file at A (vm_pgoff 2), an anonymous page after a hole
    p.mmap(A, 4 * PAGE, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED, f, 2 * PAGE)
    p.mmap(A + 6 * PAGE, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    return kern, p, f.inode


@pytest.mark.parametrize("preset", PRESETS)
def test_build_id_offsets_and_ip_fallbacks(preset: str) -> None:
    kern, p, inode = text_process(preset)
    ips = [A + 0x123, A + 3 * PAGE + 7, A + 5 * PAGE, A + 6 * PAGE + 1, 0x1000]
    assert p.bpf_stack_build_id(ips) == [
        (BPF_STACK_BUILD_ID_VALID, inode, 2 * PAGE + 0x123),
        (BPF_STACK_BUILD_ID_VALID, inode, 5 * PAGE + 7),
        (BPF_STACK_BUILD_ID_IP, 0, A + 5 * PAGE),  # the hole
        (BPF_STACK_BUILD_ID_IP, 0, A + 6 * PAGE + 1),  # anonymous
        (BPF_STACK_BUILD_ID_IP, 0, 0x1000),
    ]
    stats = kern.vmstat()
    if preset == "legacy":
        assert "vma_lock_abort" not in stats
    else:  # the two IPs with no VMA: lock_vma_under_rcu() found nothing (abort), then vma_lookup
        assert stats["vma_lock_abort"] == 2


@pytest.mark.parametrize("preset", PRESETS)
def test_a_writer_holding_mmap_lock_gives_the_ip_without_waiting(preset: str) -> None:
    _, p, _ = text_process(preset)
    w, b = p.thread(), p.thread()
    mm = p.mm

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, 4 * PAGE)

    async def bpf(t: Thread) -> list[tuple[int, int, int]]:
        return await t.bpf_stack_build_id([A + 0x10])

    ex = executor((w, unmap), (b, bpf))
    # the writer holds mmap_lock for write and has taken the VMA out of the tree
    run(ex, lambda: mm.mmap_lock.writer is not None and mm.mm_mt.find_covering(A) is None)
    assert not ex.tasks[0].done
    while not ex.tasks[1].done:  # the BPF side alone: it must finish, never blocking
        assert 1 in ex.runnable(), "the stack map lookup waited for mmap_lock"
        ex.step(1)
    assert ex.tasks[1].result == [(BPF_STACK_BUILD_ID_IP, 0, A + 0x10)]
    assert b.task.held == []
    run(ex)
    assert ex.tasks[0].result == 0
