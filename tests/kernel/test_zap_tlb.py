"""zap_pte_range()'s TLB flushes (mm/memory.c, mm/mmu_gather.c, 6.18): a
dirty page of a shared file or shmem mapping delays its rmap removal until a
flush before its PTE page's lock is dropped; a full mmu_gather is flushed
where it filled; the rest once at the end (tlb_finish_mmu)."""

from __future__ import annotations

from typing import Any

import pytest

from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE,
    PROT_READ,
    PROT_WRITE,
    Config,
    System,
)
from pervma.kernel import memory

A = 0x40000000  # 2 MiB aligned: 512 pages per PTE page
DELAYED = "zap_pte_range: tlb_flush_mmu_tlbonly (delayed rmap)"
FULL = "zap_pte_range: tlb_flush_mmu (gather full)"
FINISH = "tlb_finish_mmu"


def _flushes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    labels: list[str] = []
    flush = memory.flush_tlb

    async def recorded(mm: Any, label: str) -> None:
        labels.append(label)
        await flush(mm, label)

    monkeypatch.setattr(memory, "flush_tlb", recorded)
    return labels


def _unmap_after(monkeypatch: pytest.MonkeyPatch, flags: int, pages: int, write: bool) -> list[str]:
    p = System(Config.preset("universal")).spawn()
    assert p.mmap(A, pages * PAGE, PROT_READ | PROT_WRITE, flags | MAP_FIXED) == A
    for i in range(pages):
        if write:
            p.store(A + i * PAGE, 1)
        else:
            p.load(A + i * PAGE)
    labels = _flushes(monkeypatch)
    assert p.munmap(A, pages * PAGE) == 0
    assert not any(A // PAGE <= vpn < A // PAGE + pages for vpn in p.mm.pgtable)
    return labels


def test_written_shared_pages_are_flushed_once_per_pte_page(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _unmap_after(monkeypatch, MAP_SHARED | MAP_ANONYMOUS, 600, write=True) == [DELAYED] * 2  # 512 + 88 pages


def test_clean_shared_and_private_anonymous_pages_are_flushed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _unmap_after(monkeypatch, MAP_SHARED | MAP_ANONYMOUS, 600, write=False) == [FINISH]
    assert _unmap_after(monkeypatch, MAP_PRIVATE | MAP_ANONYMOUS, 600, write=True) == [FINISH]


def test_a_full_gather_is_flushed_where_it_filled(monkeypatch: pytest.MonkeyPatch) -> None:
    assert memory.MMU_GATHER_PAGES == 7 + 19 * 509  # x86-64, 4 KiB pages
    monkeypatch.setattr(memory, "MMU_GATHER_PAGES", 100)  # a smaller gather, the same rule
    assert _unmap_after(monkeypatch, MAP_PRIVATE | MAP_ANONYMOUS, 250, write=True) == [FULL, FULL, FINISH]
    assert _unmap_after(monkeypatch, MAP_PRIVATE | MAP_ANONYMOUS, 200, write=True) == [FULL, FULL]
