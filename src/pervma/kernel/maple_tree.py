"""The VMA tree (mm->mm_mt), readable under RCU.

The tree is a root pointer to an immutable node (a sorted tuple of VMAs with
their ranges: the maple tree keeps each entry's range in the node as pivots,
so a lockless walk decides which VMA covers an address from the node alone,
never from the VMA's own ``vm_start``/``vm_end``, which a writer changes in
place under the VMA write lock before it stores the new range in the tree).
A writer (holding mmap_lock for write) builds a new node, publishes it in
one step and retires the old node through call_rcu, as the maple tree's
copy-on-write nodes are.  A lockless walk takes two steps, reading the root
and then the node, so it may see a stale version, and a walk by a reader
that is in neither an RCU section nor protected from writers may touch a
node that has already been freed (that is StackRot).
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Hashable
from dataclasses import dataclass, field

from pervma.kernel import debug
from pervma.kernel.mm_types import VmAreaStruct
from pervma.kernel.rcu import call_rcu
from pervma.kernel.slab import KmemCache, SlabObject
from pervma.sched import Op, read, write


@dataclass(eq=False, slots=True)
class MapleNode(SlabObject):
    vmas: tuple[VmAreaStruct, ...] = ()
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()  # the pivots: each entry's range is in the node
    mm_id: int = 0
    walk_step: Op = field(default=None, repr=False)  # type: ignore[assignment]  # set by _node

    def locations(self) -> tuple[Hashable, ...]:
        return (("maple_node", self.mm_id, self.slot),)


@functools.cache
def _walk_labels(label: str) -> tuple[str, str]:
    """The two step labels of a walk (made once per walker, not per walk)."""
    return f"{label}: root", f"{label}: node"


def _new_node(slot: int) -> MapleNode:
    return MapleNode()


class MapleTree:
    """mm->mm_mt: range -> VMA."""

    __slots__ = ("cache", "loc", "maps_log", "mm_id", "root", "stores", "walk_step")

    def __init__(self, mm_id: int, cache: KmemCache[MapleNode]) -> None:
        self.mm_id = mm_id
        self.loc = ("maple", mm_id)
        self.walk_step = read(self.loc, "mas_walk: root")  # the same step at every walk
        self.cache = cache
        self.root: MapleNode = self._node(())
        self.stores = 0
        self.maps_log: list[debug.MapsReadLog] | None = None  # /proc/pid/maps reads being checked

    def _node(self, vmas: tuple[VmAreaStruct, ...]) -> MapleNode:
        node = self.cache.alloc("mas_store")
        node.mm_id = self.mm_id
        node.vmas = vmas
        node.starts = tuple(v.vm_start for v in vmas)
        node.ends = tuple(v.vm_end for v in vmas)
        node.walk_step = read(("maple_node", self.mm_id, node.slot), "mas_walk: node")
        return node

    # -- writer side (caller holds mmap_lock for write) ----------------------
    def snapshot(self) -> tuple[VmAreaStruct, ...]:
        return self.root.vmas

    async def publish(self, vmas: list[VmAreaStruct], label: str) -> None:
        """Replace the root with a new node; the old one is freed after RCU."""
        vmas.sort(key=lambda v: v.vm_start)
        node = self._node(tuple(vmas))
        await write(self.loc, label)
        old, self.root = self.root, node
        self.stores += 1
        if self.maps_log is not None:
            debug.maps_record(self.maps_log, node.vmas)
        cache = self.cache
        call_rcu(lambda: cache.free(old, "mt_free_rcu"))

    def destroy(self) -> None:
        """__mt_destroy: the tree is gone (exit_mmap)."""
        old = self.root
        self.root = self._node(())
        self.cache.free(old, "__mt_destroy")
        if self.maps_log is not None:
            debug.maps_record(self.maps_log, ())

    # plain lookups for the lock holder
    def find_covering(self, addr: int) -> VmAreaStruct | None:
        node = self.root
        i = bisect.bisect_right(node.starts, addr) - 1
        if i >= 0 and node.vmas[i].vm_end > addr:
            return node.vmas[i]
        return None

    def find(self, addr: int) -> VmAreaStruct | None:
        """find_vma(): the first VMA ending above addr."""
        node = self.root
        i = bisect.bisect_right(node.starts, addr) - 1
        if i >= 0 and node.vmas[i].vm_end > addr:
            return node.vmas[i]
        return node.vmas[i + 1] if i + 1 < len(node.vmas) else None

    def prev_next(self, start: int, end: int) -> tuple[VmAreaStruct | None, VmAreaStruct | None]:
        """The VMAs immediately below start and at/above end."""
        node = self.root
        i = bisect.bisect_right(node.starts, start - 1) - 1
        prev = node.vmas[i] if i >= 0 and node.vmas[i].vm_end <= start else None
        if i >= 0 and node.vmas[i].vm_end > start:
            prev = node.vmas[i - 1] if i >= 1 else None
        j = bisect.bisect_left(node.starts, end)
        nxt = node.vmas[j] if j < len(node.vmas) else None
        return prev, nxt

    def overlapping(self, start: int, end: int) -> list[VmAreaStruct]:
        return [v for v in self.root.vmas if v.vm_start < end and v.vm_end > start]

    # -- reader side: steps, possibly stale ---------------------------------
    async def _load_node(self, label: str) -> MapleNode:
        root_label, node_label = _walk_labels(label)
        await read(self.loc, root_label)
        node = self.root
        await read(("maple_node", self.mm_id, node.slot), node_label)
        debug.kasan_check(node, label, "maple_node")
        return node

    async def mas_walk(self, addr: int) -> VmAreaStruct | None:
        """The VMA covering addr in the version the walk sees.  (The fault
        path's walk: _load_node's two steps written out, one coroutine less.)"""
        await self.walk_step  # read(self.loc, "mas_walk: root"), made once
        node = self.root
        await node.walk_step  # read(("maple_node", mm_id, node.slot), "mas_walk: node")
        if node.freed:  # KASAN's check inline, its report out of line
            debug.kasan_check(node, "mas_walk", "maple_node")
        i = bisect.bisect_right(node.starts, addr) - 1
        if i >= 0 and node.ends[i] > addr:
            return node.vmas[i]
        return None

    async def mas_find(self, addr: int, label: str = "mas_find") -> VmAreaStruct | None:
        """The first VMA ending above addr (find_vma / vma_next semantics)."""
        node = await self._load_node(label)
        i = bisect.bisect_right(node.starts, addr) - 1
        if i >= 0 and node.ends[i] > addr:
            return node.vmas[i]
        return node.vmas[i + 1] if i + 1 < len(node.vmas) else None

    async def mas_prev(self, addr: int) -> VmAreaStruct | None:
        """The last VMA starting below addr (find_vma_prev)."""
        node = await self._load_node("mas_prev")
        i = bisect.bisect_left(node.starts, addr) - 1
        return node.vmas[i] if i >= 0 else None
