"""The VMA_LOCK_* vmstat events (mm/vmstat.c, CONFIG_PER_VMA_LOCK_STATS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct

VMA_LOCK_EVENTS = ("vma_lock_success", "vma_lock_abort", "vma_lock_retry", "vma_lock_miss")


def count_vm_vma_lock_event(mm: MmStruct, event: str) -> None:
    """count_vm_vma_lock_event(): a per-CPU counter, not a shared step."""
    if mm.config.PER_VMA_LOCK_STATS:
        counters = mm.system.vm_events
        counters[event] = counters.get(event, 0) + 1


def count_vm_event(mm: MmStruct, event: str) -> None:
    counters = mm.system.vm_events
    counters[event] = counters.get(event, 0) + 1
