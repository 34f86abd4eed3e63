"""The VMA tree in finer steps (issue #13, item 7): maple nodes of
MAPLE_RANGE64_SLOTS slots, a lockless walk that reads one node per step,
stores that replace only the nodes they change, replaced nodes retired
through RCU."""

from __future__ import annotations

import pytest
from tests.kernel.test_oracles import PRESETS, _edited, _explore

import pervma.kernel.maple_tree as mt
from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PAGE,
    PROT_READ,
    PROT_WRITE,
    Config,
    System,
)
from pervma.check.scenario import get_scenario
from pervma.kernel.rcu import rcu_read_lock, rcu_read_unlock
from pervma.sched import run_direct

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
BASE = 0x10000000


def _many(n: int, preset: str = "universal") -> tuple[System, object]:
    """n one-page mappings with a one-page gap between each (no merging)."""
    kern = System(Config.preset(preset))
    p = kern.spawn()
    for i in range(n):
        p.mmap(BASE + 2 * i * PAGE, PAGE, RW, ANON)
    return kern, p


def _nodes(node: mt.MapleNode) -> list[mt.MapleNode]:
    return [node, *(n for c in node.children for n in _nodes(c))]


def test_a_few_vmas_live_in_one_leaf_at_the_root() -> None:
    _kern, p = _many(3)
    tree = p.mm.mm_mt
    assert tree.root.leaf and tree.height() == 1
    assert [v for _, _, v in tree.entries()] == list(tree.snapshot())


def test_forty_vmas_make_a_two_level_tree_whose_leaves_fit_their_slots() -> None:
    _kern, p = _many(40)
    tree = p.mm.mm_mt
    assert tree.height() == 2 and not tree.root.leaf
    leaves = [n for n in _nodes(tree.root) if n.leaf]
    assert len(leaves) == len(tree.root.children) >= 5
    for leaf in leaves:
        assert mt.leaf_slots(leaf.entries(), leaf.min, leaf.max) <= mt.MAPLE_RANGE64_SLOTS
    # the leaves tile the index space and hold every VMA in order
    assert leaves[0].min == 0 and leaves[-1].max == mt.MAPLE_MAX
    assert all(a.max == b.min for a, b in zip(leaves, leaves[1:], strict=False))
    assert [v for _, _, v in tree.entries()] == list(tree.snapshot())
    assert len(tree.snapshot()) == 41  # and the stack


def test_a_lockless_walk_reads_the_root_then_one_node_per_level() -> None:
    _kern, p = _many(40)
    tree = p.mm.mm_mt
    target = BASE + 2 * 30 * PAGE
    coro = tree.mas_walk(target + 5)
    steps: list[tuple[str, object]] = []
    try:
        op = coro.send(None)
        while True:
            steps.append((op.label, op.loc))
            op = coro.send(None)
    except StopIteration as stop:
        vma = stop.value
    leaf = tree._path(target)[-1][0]
    assert steps == [("mas_walk: root", ("maple", p.mm.id)),
                     ("mas_walk: node", ("maple_node", p.mm.id, tree.root.slot)),
                     ("mas_walk: node", ("maple_node", p.mm.id, leaf.slot))]
    assert vma is tree.find_covering(target)


def test_a_store_in_one_leaf_replaces_only_that_leaf_and_retires_it() -> None:
    kern, p = _many(40)
    tree = p.mm.mm_mt
    root = tree.root
    before = _nodes(root)
    leaf = tree._path(BASE + 2 * 30 * PAGE)[-1][0]
    p.munmap(BASE + 2 * 30 * PAGE, PAGE)
    assert tree.root is root  # the root's slot was rewritten in place
    after = _nodes(tree.root)
    assert leaf.freed and leaf not in after  # retired through RCU (no reader: at once)
    assert [n for n in before if n not in after] == [leaf]
    assert tree.find_covering(BASE + 2 * 30 * PAGE) is None


def test_an_rcu_reader_keeps_the_replaced_leaf_until_its_grace_period() -> None:
    _kern, p = _many(40)
    tree = p.mm.mm_mt
    addr = BASE + 2 * 30 * PAGE
    leaf = tree._path(addr)[-1][0]
    reader = p.thread()

    async def hold() -> None:
        rcu_read_lock()

    async def release() -> None:
        rcu_read_unlock()

    run_direct(hold(), model=reader.task)
    p.munmap(addr, PAGE)
    assert not leaf.freed  # the reader may still be walking it
    run_direct(release(), model=reader.task)
    assert leaf.freed


def test_a_spanning_store_rebuilds_under_the_common_ancestor() -> None:
    _kern, p = _many(40)
    tree = p.mm.mm_mt
    # one mapping over 30 old ones: the leaves holding them are replaced
    p.mmap(BASE + 4 * PAGE, 60 * PAGE, PROT_READ, ANON)
    assert [v for _, _, v in tree.entries()] == list(tree.snapshot())
    assert tree.find_covering(BASE + 10 * PAGE).vm_end == BASE + 64 * PAGE
    for leaf in (n for n in _nodes(tree.root) if n.leaf):
        assert mt.leaf_slots(leaf.entries(), leaf.min, leaf.max) <= mt.MAPLE_RANGE64_SLOTS
    assert all(not n.freed for n in _nodes(tree.root))


def test_a_full_leaf_splits_and_the_root_grows() -> None:
    _kern, p = _many(2)
    tree = p.mm.mm_mt
    i = 2
    while mt.leaf_slots(tree.entries(), 0, mt.MAPLE_MAX) <= mt.MAPLE_RANGE64_SLOTS:
        assert tree.height() == 1  # one leaf while its slots suffice
        p.mmap(BASE + 2 * i * PAGE, PAGE, RW, ANON)
        i += 1
    assert tree.height() == 2 and len(tree.root.children) == 2
    assert [v for _, _, v in tree.entries()] == list(tree.snapshot())


@pytest.mark.parametrize("preset", PRESETS)
def test_the_deep_tree_scenario_is_complete_and_clean(preset: str) -> None:
    assert _explore(get_scenario("fault-vs-munmap-deep-tree"), preset) == (None, "", True)


def test_freeing_replaced_nodes_without_rcu_is_a_use_after_free_in_the_walk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # mt_free_rcu replaced by an immediate free: a fault's lockless walk that read
    # the parent reads a freed leaf.
    bad = _edited(mt.MapleTree._publish, "call_rcu(functools.partial(_mt_free_rcu, self.cache, retired))",
                  "_mt_free_rcu(self.cache, retired)")
    monkeypatch.setattr(mt.MapleTree, "_publish", bad)
    kind, message, _ = _explore(get_scenario("fault-vs-munmap-deep-tree"))
    assert kind == "KASAN: use-after-free"
    assert message.startswith("access to freed maple_node #")
    assert " in mas_walk;" in message and message.endswith("freed at mt_free_rcu")

