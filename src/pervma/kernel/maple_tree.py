"""The VMA tree (mm->mm_mt), readable under RCU.

A B-tree of maple nodes, as lib/maple_tree.c keeps it in RCU mode
(MT_FLAGS_USE_RCU), reduced to what per-VMA locking meets:

* Nodes hold up to ``MAPLE_RANGE64_SLOTS`` slots.  A leaf's slots are its
  VMAs and the gaps between them; each entry's range is in the node (the
  pivots), so a lockless walk decides which VMA covers an address from the
  node alone, never from the VMA's own ``vm_start``/``vm_end``, which a writer
  changes in place under the VMA write lock before it stores the new range.
  An internal node's pivots split its range among its children.
* A lockless walk reads the root pointer, then one node per step down to
  the leaf: it may meet an old version of any node, and a walk by a reader
  that is in neither an RCU section nor protected from writers may touch a
  node that has already been freed (that is StackRot).
* A writer (holding mmap_lock for write) never changes a node a reader may
  see: in RCU mode every store builds new nodes.  A store inside one leaf
  replaces that leaf (a full leaf splits, and its parent is replaced in
  turn, up to a new root); a store that spans leaves rebuilds the subtree
  under their lowest common ancestor (mas_wr_spanning_store).  The new
  subtree is published by one pointer store, into the parent's slot or the
  root, and every replaced node retires through call_rcu (mt_free_rcu).
* Not modelled: rebalancing of under-full nodes (an emptied leaf stays), the
  kernel's choice of split point (the model splits in the middle) and
  in-place slot stores, so node shapes after a history of stores differ
  from the kernel's; what readers can observe (old or new node, freed or
  not) does not.
* Orderings (lib/maple_tree.c, 7.0): a walk reads the root and every slot
  with rcu_dereference_check() (mas_root(), mt_slot()), and the writer
  publishes the new subtree with rcu_assign_pointer() (mas_put_in_tree()):
  RCU_DEREFERENCE and RCU_ASSIGN steps.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.mm_types import VmAreaStruct
from pervma.kernel.rcu import call_rcu
from pervma.kernel.slab import KmemCache, SlabObject
from pervma.kernel.task import current_task_or_none
from pervma.sched import Op, read, write
from pervma.sched.locations import MAPLE, MAPLE_NODE
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.locks import RwSemaphore

#: maple_range_64 nodes: slots per node, leaves and internal nodes alike.
MAPLE_RANGE64_SLOTS = 16
#: The index space (unsigned long): every tree covers [0, MAPLE_MAX).
MAPLE_MAX = 1 << 64

Entry = tuple[int, int, VmAreaStruct]


@dataclass(eq=False, slots=True)
class MapleNode(SlabObject):
    """A leaf (``vmas`` with their ``starts``/``ends``) or an internal node
    (``children``, and ``pivots``: child i covers [pivots[i-1], pivots[i])),
    covering [``min``, ``max``)."""

    vmas: tuple[VmAreaStruct, ...] = ()
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()  # the pivots of a leaf: each entry's range is in the node
    children: tuple[MapleNode, ...] = ()
    pivots: tuple[int, ...] = ()
    min: int = 0
    max: int = MAPLE_MAX
    leaf: bool = True
    mm_id: int = 0
    walk_step: Op = field(default=None, repr=False)  # type: ignore[assignment]  # set by _node

    def locations(self) -> tuple[Hashable, ...]:
        return ((MAPLE_NODE, self.mm_id, self.slot),)

    def entries(self) -> list[Entry]:
        return list(zip(self.starts, self.ends, self.vmas, strict=True))


@functools.cache
def _walk_labels(label: str) -> tuple[str, str]:
    """The two step labels of a walk (made once per walker, not per walk)."""
    return f"{label}: root", f"{label}: node"


def _new_node(slot: int) -> MapleNode:
    return MapleNode()


def _mt_free_rcu(cache: KmemCache[MapleNode], nodes: list[MapleNode]) -> None:
    for node in nodes:
        cache.free(node, "mt_free_rcu")


def leaf_slots(entries: list[Entry], lo: int, hi: int) -> int:
    """Slots a leaf over [lo, hi) needs: one per entry and one per gap."""
    n, at = 0, lo
    for s, e, _ in entries:
        n += 1 + (s > at)
        at = e
    return n + (at < hi)


def _halves(n: int, parts: int) -> list[int]:
    """Split n items into ``parts`` runs as even as can be: the run sizes."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


class ExternalLock:
    """mt_set_external_lock(): the lock that serialises the tree's writers and
    guards its plain readers (mm->mmap_lock for mm->mm_mt).  Set once when the
    mm is made and never changed: not state."""

    __slots__ = ("lock",)
    __statekey_hidden__ = True

    def __init__(self, lock: RwSemaphore) -> None:
        self.lock = lock


class MapleTree:
    """mm->mm_mt: range -> VMA."""

    __slots__ = ("_ends", "_flat", "_starts", "cache", "loc", "ma_external_lock", "maps_log",
                 "mm_id", "root", "stores", "walk_step")

    def __init__(self, mm_id: int, cache: KmemCache[MapleNode]) -> None:
        self.mm_id = mm_id
        self.loc = (MAPLE, mm_id)
        self.walk_step = read(self.loc, "mas_walk: root",  # the same step at every walk
                              Order.RCU_DEREFERENCE)
        self.cache = cache
        self.root: MapleNode = self._leaf([], 0, MAPLE_MAX)
        self.stores = 0
        self.maps_log: list[debug.MapsReadLog] | None = None  # /proc/pid/maps reads being checked
        self.ma_external_lock: ExternalLock | None = None
        self._set_flat([])

    def set_external_lock(self, lock: RwSemaphore) -> None:
        """mt_set_external_lock() (mm_init() passes &mm->mmap_lock)."""
        self.ma_external_lock = ExternalLock(lock)

    def assert_locked(self, what: str) -> None:
        """A walk of the tree by a model thread outside the tree's own
        read-side (the stepped walks below take it): the walker holds the
        external lock or is in an RCU read-side section.  The kernel's
        checks, with lockdep: find_vma()'s mmap_assert_locked() and, for the
        VMA iterator (vma_next(), vma_prev(), for_each_vma_range()), the
        rcu_dereference_check() of every node it reads.  A lookup from outside
        the model's threads (a scenario's setup, the final checks) is the
        test harness reading, not the kernel."""
        ext = self.ma_external_lock
        if ext is None:
            return
        tsk = current_task_or_none()
        if tsk is None or tsk.rcu_depth:
            return
        lock = ext.lock
        if lock.writer is not tsk and tsk not in lock.readers:
            debug.report("WARNING: suspicious RCU usage",
                         f"{what}: {tsk.comm}/{tsk.pid} walks mm {self.mm_id}'s VMA tree holding neither "
                         "mmap_lock nor rcu_read_lock")

    # -- nodes -----------------------------------------------------------------
    def _destroyed_root(self) -> MapleNode:
        """What a destroyed tree's root points at: the kernel's ma_root is
        NULL (every node freed); the model keeps an empty leaf so that a
        lookup on an exited mm still finds nothing, made outside the node
        cache (slot -1: no object of it, so no leak when the mm goes)."""
        node = MapleNode()
        node.slot = -1
        node.mm_id, node.min, node.max, node.leaf = self.mm_id, 0, MAPLE_MAX, True
        node.walk_step = read((MAPLE_NODE, self.mm_id, -1), "mas_walk: node", Order.RCU_DEREFERENCE)
        return node

    def _alloc(self, lo: int, hi: int, leaf: bool) -> MapleNode:
        node = self.cache.alloc("mas_store")
        node.mm_id = self.mm_id
        node.min, node.max, node.leaf = lo, hi, leaf
        node.walk_step = read((MAPLE_NODE, self.mm_id, node.slot), "mas_walk: node",
                              Order.RCU_DEREFERENCE)
        return node

    def _leaf(self, entries: list[Entry], lo: int, hi: int) -> MapleNode:
        node = self._alloc(lo, hi, True)
        node.starts = tuple(s for s, _, _ in entries)
        node.ends = tuple(e for _, e, _ in entries)
        node.vmas = tuple(v for _, _, v in entries)
        node.children, node.pivots = (), ()
        return node

    def _internal(self, children: list[MapleNode]) -> MapleNode:
        node = self._alloc(children[0].min, children[-1].max, False)
        node.children = tuple(children)
        node.pivots = tuple(c.max for c in children)
        node.vmas = node.starts = node.ends = ()
        return node

    def _leaves_for(self, entries: list[Entry], lo: int, hi: int) -> list[MapleNode]:
        """Leaves over [lo, hi) holding entries, each within its slots (the
        runs as even as can be; a boundary falls at an entry's start)."""
        parts = 1
        while True:
            sizes = _halves(len(entries), parts)
            runs, at = [], 0
            for size in sizes:
                runs.append(entries[at:at + size])
                at += size
            bounds = [lo] + [run[0][0] for run in runs[1:]] + [hi]
            if all(leaf_slots(run, bounds[i], bounds[i + 1]) <= MAPLE_RANGE64_SLOTS
                   for i, run in enumerate(runs)) or parts >= max(1, len(entries)):
                return [self._leaf(run, bounds[i], bounds[i + 1]) for i, run in enumerate(runs)]
            parts += 1

    def _build(self, entries: list[Entry], lo: int, hi: int, height: int | None = None
               ) -> list[MapleNode]:
        """A subtree over [lo, hi): the top level's nodes (one unless
        ``height`` forced a level that did not fit)."""
        level = self._leaves_for(entries, lo, hi)
        h = 0
        while (len(level) > 1 and height is None) or (height is not None and h < height):
            groups = _halves(len(level), -(-len(level) // MAPLE_RANGE64_SLOTS))
            nxt, at = [], 0
            for size in groups:
                nxt.append(self._internal(level[at:at + size]))
                at += size
            level, h = nxt, h + 1
        return level

    def _path(self, index: int) -> list[tuple[MapleNode, int]]:
        """(node, child index) from the root down to the leaf covering index."""
        out = []
        node = self.root
        while not node.leaf:
            i = min(bisect.bisect_right(node.pivots, index), len(node.children) - 1)
            out.append((node, i))
            node = node.children[i]
        out.append((node, -1))
        return out

    def _subtree_nodes(self, node: MapleNode) -> list[MapleNode]:
        out = [node]
        for c in node.children:
            out.extend(self._subtree_nodes(c))
        return out

    def _set_flat(self, entries: list[Entry]) -> None:
        self._flat = tuple(v for _, _, v in entries)
        self._starts = tuple(s for s, _, _ in entries)
        self._ends = tuple(e for _, e, _ in entries)

    def entries(self) -> list[Entry]:
        """Every entry, read from the leaves (validate_mm's view of the tree)."""
        out: list[Entry] = []

        def walk(node: MapleNode) -> None:
            if node.leaf:
                out.extend(node.entries())
            for c in node.children:
                walk(c)
        walk(self.root)
        return out

    def height(self) -> int:
        h, node = 1, self.root
        while not node.leaf:
            h, node = h + 1, node.children[0]
        return h

    # -- writer side (caller holds mmap_lock for write) ----------------------
    def snapshot(self) -> tuple[VmAreaStruct, ...]:
        return self._flat

    async def publish(self, vmas: list[VmAreaStruct], label: str) -> None:
        """Store the tree's new contents (every VMA at its current range):
        new nodes for what changed, published by one pointer store; the
        replaced nodes are freed after RCU."""
        vmas.sort(key=lambda v: v.vm_start)
        new = [(v.vm_start, v.vm_end, v) for v in vmas]
        old = list(zip(self._starts, self._ends, self._flat, strict=True))
        i = 0
        while i < len(old) and i < len(new) and old[i] == new[i]:
            i += 1
        jo, jn = len(old), len(new)
        while jo > i and jn > i and old[jo - 1] == new[jn - 1]:
            jo, jn = jo - 1, jn - 1
        changed = old[i:jo] + new[i:jn]
        if changed:
            lo, hi = min(s for s, _, _ in changed), max(e for _, e, _ in changed) - 1
        else:  # the same contents stored again: rewrite the first leaf
            lo = hi = 0
        top, replacement = self._replace(new, lo, hi)
        await self._publish(top, replacement, label)
        self._set_flat(new)
        self.stores += 1
        if self.maps_log is not None:
            debug.maps_record(self.maps_log, self._flat)

    def _replace(self, new: list[Entry], lo: int, hi: int) -> tuple[list[tuple[MapleNode, int]],
                                                                       MapleNode]:
        """The nodes a store of [lo, hi] replaces: the path to the node whose
        slot changes (its last element is the replaced subtree's root, with
        the parent above it) and the new subtree."""
        a, b = self._path(lo), self._path(hi)
        depth = 0
        while depth < min(len(a), len(b)) and a[depth][0] is b[depth][0] and a[depth][1] == b[depth][1] \
                and not a[depth][0].leaf:
            depth += 1
        # a[depth][0] is the lowest common ancestor (a leaf when one leaf holds the range)
        path = a[:depth + 1]
        node = path[-1][0]
        inside = [x for x in new if node.min <= x[0] < node.max]
        height = len(a) - 1 - depth  # levels under node
        tops = self._build(inside, node.min, node.max, height)
        while len(tops) > 1:  # the node split: its parent gains the new nodes
            if len(path) == 1:  # a new root above them
                tops = [self._internal(tops)]
                break
            path.pop()
            parent, idx = path[-1]
            kids = list(parent.children[:idx]) + tops + list(parent.children[idx + 1:])
            if len(kids) <= MAPLE_RANGE64_SLOTS:
                tops = [self._internal(kids)]
            else:
                half = len(kids) // 2
                tops = [self._internal(kids[:half]), self._internal(kids[half:])]
        return path, tops[0]

    async def _publish(self, path: list[tuple[MapleNode, int]], new: MapleNode, label: str) -> None:
        old = path[-1][0]
        if len(path) == 1:
            await write(self.loc, label, Order.RCU_ASSIGN)  # rcu_assign_pointer(ma_root)
            self.root = new
        else:
            parent, idx = path[-2]
            await write((MAPLE_NODE, self.mm_id, parent.slot), label,  # rcu_assign_pointer
                        Order.RCU_ASSIGN)
            parent.children = parent.children[:idx] + (new,) + parent.children[idx + 1:]
        retired = [n for n in self._subtree_nodes(old) if not self._reachable(n, new)]
        call_rcu(functools.partial(_mt_free_rcu, self.cache, retired))

    @staticmethod
    def _reachable(node: MapleNode, top: MapleNode) -> bool:
        """Is node part of the new subtree (kept, not replaced)?"""
        if node is top:
            return True
        return any(MapleTree._reachable(node, c) for c in top.children)

    def destroy(self) -> None:
        """__mt_destroy: the tree is gone (exit_mmap)."""
        old = self.root
        self.root = self._destroyed_root()
        for n in self._subtree_nodes(old):
            self.cache.free(n, "__mt_destroy")
        self._set_flat([])
        if self.maps_log is not None:
            debug.maps_record(self.maps_log, ())

    def nodes(self) -> int:
        """How many nodes of the node cache the tree holds now (debug's
        kmemleak view; a destroyed tree holds none)."""
        return sum(1 for n in self._subtree_nodes(self.root) if n.slot >= 0)

    # plain lookups for the lock holder
    def find_covering(self, addr: int) -> VmAreaStruct | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and self._ends[i] > addr:
            return self._flat[i]
        return None

    def find(self, addr: int) -> VmAreaStruct | None:
        """find_vma(): the first VMA ending above addr (mmap_assert_locked())."""
        self.assert_locked("find_vma")
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and self._ends[i] > addr:
            return self._flat[i]
        return self._flat[i + 1] if i + 1 < len(self._flat) else None

    def prev_next(self, start: int, end: int) -> tuple[VmAreaStruct | None, VmAreaStruct | None]:
        """The VMAs immediately below start and at/above end."""
        self.assert_locked("vma_prev/vma_next")
        flat, starts, ends = self._flat, self._starts, self._ends
        i = bisect.bisect_right(starts, start - 1) - 1
        prev = flat[i] if i >= 0 and ends[i] <= start else None
        if i >= 0 and ends[i] > start:
            prev = flat[i - 1] if i >= 1 else None
        j = bisect.bisect_left(starts, end)
        nxt = flat[j] if j < len(flat) else None
        return prev, nxt

    def overlapping(self, start: int, end: int) -> list[VmAreaStruct]:
        """for_each_vma_range(): the VMAs meeting [start, end)."""
        self.assert_locked("for_each_vma_range")
        return [v for v in self._flat if v.vm_start < end and v.vm_end > start]

    # -- reader side: steps, possibly stale ---------------------------------
    async def _descend(self, index: int, label: str, node_label: str) -> MapleNode:
        """From the root pointer (already read) to the leaf covering index,
        one node per step."""
        node = self.root
        while True:
            if node.walk_step.label == node_label:
                await node.walk_step
            else:
                await read((MAPLE_NODE, self.mm_id, node.slot), node_label, Order.RCU_DEREFERENCE)
            if node.freed:  # KASAN's check inline, its report out of line
                debug.kasan_check(node, label, "maple_node")
            if node.leaf:
                return node
            i = min(bisect.bisect_right(node.pivots, index), len(node.children) - 1)
            node = node.children[i]

    async def mas_walk(self, addr: int) -> VmAreaStruct | None:
        """The VMA covering addr in the version the walk sees."""
        await self.walk_step  # read(self.loc, "mas_walk: root"), made once
        node = await self._descend(addr, "mas_walk", "mas_walk: node")
        i = bisect.bisect_right(node.starts, addr) - 1
        if i >= 0 and node.ends[i] > addr:
            return node.vmas[i]
        return None

    async def mas_find(self, addr: int, label: str = "mas_find") -> VmAreaStruct | None:
        """The first VMA ending above addr (find_vma / vma_next semantics):
        on to the next leaf while this one has none."""
        root_label, node_label = _walk_labels(label)
        while True:
            await read(self.loc, root_label, Order.RCU_DEREFERENCE)
            node = await self._descend(addr, label, node_label)
            i = bisect.bisect_right(node.starts, addr) - 1
            if i >= 0 and node.ends[i] > addr:
                return node.vmas[i]
            if i + 1 < len(node.vmas):
                return node.vmas[i + 1]
            if node.max >= MAPLE_MAX or node.max <= addr:
                return None
            addr = node.max

    async def mas_prev(self, addr: int) -> VmAreaStruct | None:
        """The last VMA starting below addr (find_vma_prev): back to the
        previous leaf while this one has none."""
        root_label, node_label = _walk_labels("mas_prev")
        index = addr - 1 if addr else 0
        while True:
            await read(self.loc, root_label, Order.RCU_DEREFERENCE)
            node = await self._descend(index, "mas_prev", node_label)
            i = bisect.bisect_left(node.starts, addr) - 1
            if i >= 0:
                return node.vmas[i]
            if node.min == 0 or node.min > index:
                return None
            index = node.min - 1
