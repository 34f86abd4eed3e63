"""The VMA_LOCK_* vmstat events (mm/vmstat.c, CONFIG_PER_VMA_LOCK_STATS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct

VMA_LOCK_EVENTS = ("vma_lock_success", "vma_lock_abort", "vma_lock_retry", "vma_lock_miss")


class VmEvents:
    """The event counters of /proc/vmstat (``vm_event_states``): per-CPU sums
    the kernel only ever adds to and reports; no kernel code decides anything
    by them, and neither does the model or any checker oracle (only the
    report and the simulator read them, through ``System.vmstat()``).

    Hidden from the checker's state key, as a Promela ``hidden`` variable is
    kept out of SPIN's state vector: two states that differ only in how many
    faults were counted (a fault that retried against one that did not) have
    the same future, and the stateful search explores it once.  A check that
    read these counters would make that unsound: keep them out of checks.
    The counts are in ``counts`` (a plain class, not a dict subclass: the
    checker's copier copies it field by field in C)."""

    __slots__ = ("counts",)
    __statekey_hidden__ = True

    def __init__(self, **counts: int) -> None:
        self.counts: dict[str, int] = dict(counts)


def count_vm_vma_lock_event(mm: MmStruct, event: str) -> None:
    """count_vm_vma_lock_event(): a per-CPU counter, not a shared step."""
    if mm.config.PER_VMA_LOCK_STATS:
        counters = mm.system.vm_events.counts
        counters[event] = counters.get(event, 0) + 1


def count_vm_event(mm: MmStruct, event: str) -> None:
    counters = mm.system.vm_events.counts
    counters[event] = counters.get(event, 0) + 1
