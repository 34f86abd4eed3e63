"""The kernel's tools/testing/vma suite (tests/merge.c, tests/mmap.c,
tests/vma.c), ported to the model: vma-merge-rules.md §A.4 items 1-16.

Each test keeps the kernel test's name, ranges (in pages), pgoffs and
expectations.  Where the kernel test only asserts "if X then a sticky bit is
set", the port asserts the exact sticky state mm/vma.c produces (sticky bits
are only ever ORed in).  Write-lock observations (§A.5) are asserted both
ways: the exact set of VMAs in the tree whose ``vma_start_write()`` ran.
"""

from __future__ import annotations

import errno
import itertools
from collections.abc import Iterator

import pytest
from vma_harness import BASE_FLAGS, PAGE, VmaTestEnv, span

from pervma.kernel.mm_types import VM_SPECIAL, VM_STICKY, VmAreaStruct, VmFlags
from pervma.kernel.mmap import mmap_region
from pervma.kernel.mmap_lock import vma_is_attached
from pervma.kernel.mremap import copy_vma
from pervma.kernel.vma import (
    VmaMergeState,
    vma_merge_extend,
    vma_merge_new_range,
    vma_modify_flags,
    vma_shrink,
)

SUCCESS = VmaMergeState.VMA_MERGE_SUCCESS
NOMERGE = VmaMergeState.VMA_MERGE_NOMERGE
ERROR_NOMEM = VmaMergeState.VMA_MERGE_ERROR_NOMEM
BOOLS = (False, True)


@pytest.fixture(params=["universal", "universal-up"])
def env(request: pytest.FixtureRequest) -> Iterator[VmaTestEnv]:
    e = VmaTestEnv(request.param)
    yield e
    e.teardown()


def sticky(flags: VmFlags, on: bool) -> VmFlags:
    return flags | VM_STICKY if on else flags


def has_sticky(vma: VmAreaStruct) -> bool:
    return bool(vma.vm_flags & VM_STICKY)


# ---------------------------------------------------------------------------
# tests/merge.c
# ---------------------------------------------------------------------------
def test_simple_merge(env: VmaTestEnv) -> None:
    """A new range exactly filling the gap merges both neighbours into prev."""
    left = env.alloc_vma(0, 1, 0)
    right = env.alloc_vma(2, 3, 2)
    assert env.attach_vma(left) == 0
    assert env.attach_vma(right) == 0
    vmg = env.vmg(1, 2, 1)

    vma = env.merge_new(vmg)

    assert vma is left
    assert vmg.state == SUCCESS
    assert span(vma) == (0, 3, 0)
    assert vma.vm_flags == BASE_FLAGS
    assert env.tree() == (left,)
    assert env.mm.map_count == 1
    assert env.cleanup_mm() == 1


def test_simple_modify(env: VmaTestEnv) -> None:
    """Modifying the interior of a VMA (same flags) splits it in three; the
    original VMA object is the middle piece.  Both splits write-lock the
    original and the new VMA."""
    init_vma = env.alloc_vma(0, 3, 0)
    assert env.attach_vma(init_vma) == 0
    env.write_started()  # linking write-locked it; start afresh

    vma = env.run(vma_modify_flags(init_vma, init_vma, 1 * PAGE, 2 * PAGE, BASE_FLAGS))

    assert vma is init_vma
    assert span(vma) == (1, 2, 1)
    assert env.spans() == [(0, 1, 0), (1, 2, 1), (2, 3, 2)]
    assert env.tree()[1] is init_vma
    assert env.mm.map_count == 3
    assert env.write_started() == list(env.tree())
    assert env.cleanup_mm() == 3


def test_simple_expand(env: VmaTestEnv) -> None:
    vma = env.alloc_vma(0, 1, 0)
    assert env.attach_vma(vma) == 0
    env.write_started()
    vmg = env.vmg(0, 3, 0)
    vmg.target = vma

    assert env.expand_existing(vmg) == 0

    assert span(vma) == (0, 3, 0)
    assert env.tree() == (vma,)
    assert env.write_started() == [vma]
    assert env.cleanup_mm() == 1


def test_simple_shrink(env: VmaTestEnv) -> None:
    vma = env.alloc_vma(0, 3, 0)
    assert env.attach_vma(vma) == 0
    env.write_started()

    assert env.run(vma_shrink(vma, 0, 1 * PAGE, 0)) == 0

    assert span(vma) == (0, 1, 0)
    assert env.tree() == (vma,)
    assert env.write_started() == [vma]
    assert env.cleanup_mm() == 1


@pytest.mark.parametrize(("is_sticky", "a_is_sticky", "b_is_sticky", "c_is_sticky"),
                         list(itertools.product(BOOLS, repeat=4)))
def test_merge_new(env: VmaTestEnv, is_sticky: bool, a_is_sticky: bool, b_is_sticky: bool,
                   c_is_sticky: bool) -> None:
    """New-range merges in every shape: none, both sides, prev only, next only,
    with anon_vma duplication from a removed next and close hooks on VMAs
    that are only extended.

        0123456789abc
        AA B       CC
    """
    flags = sticky(BASE_FLAGS, is_sticky)
    dummy = env.dummy_anon_vma
    vmg = env.vmg()

    vma_a = env.alloc_and_link_vma(0, 2, 0, flags)
    vma_a.vm_flags = sticky(vma_a.vm_flags, a_is_sticky)
    env.set_singular_chain(vma_a)
    vma_b = env.alloc_and_link_vma(3, 4, 3, flags)
    vma_b.vm_flags = sticky(vma_b.vm_flags, b_is_sticky)
    env.set_singular_chain(vma_b)
    vma_c = env.alloc_and_link_vma(0xB, 0xC, 0xB, flags)
    vma_c.vm_flags = sticky(vma_c.vm_flags, c_is_sticky)
    env.set_singular_chain(vma_c)

    # No merge:  AA B   **  CC
    vma_d, merged = env.try_merge_new_vma(vmg, 7, 9, 7, flags)
    env.set_singular_chain(vma_d)
    assert not merged
    assert span(vma_d) == (7, 9, 7)
    assert vma_d.anon_vma is None
    assert env.mm.map_count == 4
    assert env.write_started() == []

    # Merge both sides; A's close hook does not matter (A is not removed):
    # AA*B   DD  CC -> A takes B's anon_vma, B is removed.
    vma_a.vm_ops = env.close_ops
    vma_b.anon_vma = dummy
    vma, merged = env.try_merge_new_vma(vmg, 2, 3, 2, flags)
    assert merged and vma is vma_a
    assert span(vma) == (0, 4, 0)
    assert vma.anon_vma is dummy and dummy.was_cloned
    assert env.write_started() == [vma_a]
    assert env.mm.map_count == 3
    a_sticky = is_sticky or a_is_sticky or b_is_sticky
    assert has_sticky(vma) == a_sticky

    # Merge with prev:  AAAA*  DD  CC
    vma, merged = env.try_merge_new_vma(vmg, 4, 5, 4, flags)
    assert merged and vma is vma_a
    assert span(vma) == (0, 5, 0)
    assert vma.anon_vma is dummy
    assert env.write_started() == [vma_a]
    assert env.mm.map_count == 3
    assert has_sticky(vma) == a_sticky

    # Merge with next (prepend); D's close hook does not matter:
    # AAAAA *DD  CC
    vma_d.anon_vma = dummy
    vma_d.vm_ops = env.close_ops
    vma, merged = env.try_merge_new_vma(vmg, 6, 7, 6, flags)
    assert merged and vma is vma_d
    assert span(vma) == (6, 9, 6)
    assert vma.anon_vma is dummy
    assert env.write_started() == [vma_d]
    assert env.mm.map_count == 3
    assert has_sticky(vma) == is_sticky  # D uses is_sticky only

    # Merge both sides; D's close hook would otherwise keep D:
    # AAAAA*DDD  CC -> D is removed.
    vma_d.vm_ops = None
    vma, merged = env.try_merge_new_vma(vmg, 5, 6, 5, flags)
    assert merged and vma is vma_a
    assert span(vma) == (0, 9, 0)
    assert vma.anon_vma is dummy
    assert env.write_started() == [vma_a]
    assert env.mm.map_count == 2
    assert has_sticky(vma) == a_sticky

    # Merge with next:  AAAAAAAAA *CC
    vma_c.anon_vma = dummy
    vma, merged = env.try_merge_new_vma(vmg, 0xA, 0xB, 0xA, flags)
    assert merged and vma is vma_c
    assert span(vma) == (0xA, 0xC, 0xA)
    assert vma.anon_vma is dummy
    assert env.write_started() == [vma_c]
    assert env.mm.map_count == 2
    assert has_sticky(vma) == (is_sticky or c_is_sticky)

    # Merge both sides:  AAAAAAAAA*CCC -> C is removed.
    vma, merged = env.try_merge_new_vma(vmg, 9, 0xA, 9, flags)
    assert merged and vma is vma_a
    assert span(vma) == (0, 0xC, 0)
    assert vma.anon_vma is dummy
    assert env.write_started() == [vma_a]
    assert env.mm.map_count == 1
    assert has_sticky(vma) == (a_sticky or c_is_sticky)

    # Final state: exactly one VMA.
    assert env.tree() == (vma_a,)
    assert span(vma_a) == (0, 0xC, 0) and vma_a.anon_vma is dummy
    assert env.cleanup_mm() == 1


SPECIAL_FLAGS = (VmFlags.VM_IO, VmFlags.VM_DONTEXPAND, VmFlags.VM_PFNMAP, VmFlags.VM_MIXEDMAP)


def test_vma_merge_special_flags(env: VmaTestEnv) -> None:
    """A special flag on the proposed range prevents any merge, new or existing."""
    all_special = VmFlags.VM_NONE
    for f in SPECIAL_FLAGS:
        all_special |= f
    assert all_special == VM_SPECIAL

    vma_left = env.alloc_and_link_vma(0, 3, 0)
    vmg = env.vmg()

    # New range AAA* would merge but for the special flag.
    env.vmg_set_range(vmg, 3, 4, 3)
    for f in SPECIAL_FLAGS:
        vma_left.vm_flags = BASE_FLAGS | f
        vmg.flags = BASE_FLAGS | f
        assert env.merge_new(vmg) is None
        assert vmg.state == NOMERGE

    # Existing VMA AAAB: modifying B would merge but for the special flag.
    vma = env.alloc_and_link_vma(3, 4, 3)
    vmg.middle = vma
    for f in SPECIAL_FLAGS:
        vma_left.vm_flags = BASE_FLAGS | f
        vmg.flags = BASE_FLAGS | f
        assert env.merge_existing(vmg) is None
        assert vmg.state == NOMERGE

    assert env.write_started() == []
    assert env.spans() == [(0, 3, 0), (3, 4, 3)]
    assert env.cleanup_mm() == 2


def test_vma_merge_with_close(env: VmaTestEnv) -> None:
    """A VMA with a close hook is never removed by a merge; it may still be
    the VMA that grows."""
    vmg = env.vmg()

    # New range:  PPP**NNNN -> PPPPPNNNN  (next has close: not removed)
    vma_prev = env.alloc_and_link_vma(0, 3, 0)
    vma_next = env.alloc_and_link_vma(5, 9, 5)
    vma_next.vm_ops = env.close_ops
    env.vmg_set_range(vmg, 3, 5, 3)
    assert env.merge_new(vmg) is vma_prev
    assert vmg.state == SUCCESS
    assert span(vma_prev) == (0, 5, 0)
    assert span(vma_next) == (5, 9, 5)
    assert env.write_started() == [vma_prev]
    assert env.cleanup_mm() == 2

    # Existing, PPPVV, middle has close: middle would be removed -> no merge.
    vma_prev = env.alloc_and_link_vma(0, 3, 0)
    vma = env.alloc_and_link_vma(3, 5, 3)
    vma.vm_ops = env.close_ops
    env.vmg_set_range(vmg, 3, 5, 3)
    vmg.prev, vmg.middle = vma_prev, vma
    assert env.merge_existing(vmg) is None
    assert vmg.state == NOMERGE
    assert env.write_started() == []
    assert env.cleanup_mm() == 2

    # Existing, VVNNNN (no prev), middle has close -> no merge (not an OOM).
    vma = env.alloc_and_link_vma(3, 5, 3)
    vma_next = env.alloc_and_link_vma(5, 9, 5)
    vma.vm_ops = env.close_ops
    env.vmg_set_range(vmg, 3, 5, 3)
    vmg.middle = vma
    assert env.merge_existing(vmg) is None
    assert vmg.state == NOMERGE
    assert env.write_started() == []
    assert env.cleanup_mm() == 2

    # Existing, PPPVVNNNN, middle has close -> no merge.
    vma_prev = env.alloc_and_link_vma(0, 3, 0)
    vma = env.alloc_and_link_vma(3, 5, 3)
    vma_next = env.alloc_and_link_vma(5, 9, 5)
    vma.vm_ops = env.close_ops
    env.vmg_set_range(vmg, 3, 5, 3)
    vmg.prev, vmg.middle = vma_prev, vma
    assert env.merge_existing(vmg) is None
    assert vmg.state == NOMERGE
    assert env.write_started() == []
    assert env.cleanup_mm() == 3

    # Existing, PPPVVNNNN, next has close -> reduced to prev + middle.
    vma_prev = env.alloc_and_link_vma(0, 3, 0)
    vma = env.alloc_and_link_vma(3, 5, 3)
    vma_next = env.alloc_and_link_vma(5, 9, 5)
    vma_next.vm_ops = env.close_ops
    env.vmg_set_range(vmg, 3, 5, 3)
    vmg.prev, vmg.middle = vma_prev, vma
    assert env.merge_existing(vmg) is vma_prev
    assert vmg.state == SUCCESS
    assert span(vma_prev) == (0, 5, 0)
    assert span(vma_next) == (5, 9, 5)
    assert env.write_started() == [vma_prev]
    assert env.cleanup_mm() == 2


def test_vma_merge_new_with_close(env: VmaTestEnv) -> None:
    """prev and next both have close: prev is extended over the new range and
    next is neither removed nor extended."""
    vma_prev = env.alloc_and_link_vma(0, 2, 0)
    vma_next = env.alloc_and_link_vma(5, 7, 5)
    vma_prev.vm_ops = env.close_ops
    vma_next.vm_ops = env.close_ops
    vmg = env.vmg()
    env.vmg_set_range(vmg, 2, 5, 2)

    vma = env.merge_new(vmg)

    assert vma is vma_prev
    assert vmg.state == SUCCESS
    assert span(vma) == (0, 5, 0)
    assert vma.vm_ops is env.close_ops
    assert env.write_started() == [vma_prev]
    assert env.mm.map_count == 2
    assert span(vma_next) == (5, 7, 5)
    assert env.cleanup_mm() == 2


@pytest.mark.parametrize(("prev_is_sticky", "middle_is_sticky", "next_is_sticky"),
                         list(itertools.product(BOOLS, repeat=3)))
def test_merge_existing(env: VmaTestEnv, prev_is_sticky: bool, middle_is_sticky: bool,
                        next_is_sticky: bool) -> None:
    """Existing-range merges: right partial/full, left partial/full, both, and
    the interior ranges that can never merge."""
    flags = sticky(BASE_FLAGS, middle_is_sticky)
    prev_flags = sticky(BASE_FLAGS, prev_is_sticky)
    next_flags = sticky(BASE_FLAGS, next_is_sticky)
    dummy = env.dummy_anon_vma
    vmg = env.vmg()

    # Merge right, partial span:  VVVVNNN -> VNNNNNN (close hooks do not matter)
    vma = env.alloc_and_link_vma(2, 6, 2, flags)
    vma.vm_ops = env.close_ops
    vma_next = env.alloc_and_link_vma(6, 9, 6, next_flags)
    vma_next.vm_ops = env.close_ops
    env.vmg_set_range(vmg, 3, 6, 3, flags, anon_vma=dummy)
    vmg.middle = vma
    vmg.prev = vma
    env.set_dummy_anon_vma(vma)
    assert env.merge_existing(vmg) is vma_next
    assert vmg.state == SUCCESS
    assert span(vma_next) == (3, 9, 3)
    assert vma_next.anon_vma is dummy
    assert span(vma) == (2, 3, 2)
    assert env.write_started() == [vma, vma_next]
    assert env.mm.map_count == 2
    assert has_sticky(vma_next) == (middle_is_sticky or next_is_sticky)
    assert vma_next.vm_flags & ~VM_STICKY == BASE_FLAGS
    assert env.cleanup_mm() == 2

    # Merge right, full span:  VVVVNNN -> NNNNNNN (next's close: not removed)
    vma = env.alloc_and_link_vma(2, 6, 2, flags)
    vma_next = env.alloc_and_link_vma(6, 9, 6, next_flags)
    vma_next.vm_ops = env.close_ops
    env.vmg_set_range(vmg, 2, 6, 2, flags, anon_vma=dummy)
    vmg.middle = vma
    env.set_dummy_anon_vma(vma)
    assert env.merge_existing(vmg) is vma_next
    assert vmg.state == SUCCESS
    assert span(vma_next) == (2, 9, 2)
    assert vma_next.anon_vma is dummy
    assert env.write_started() == [vma_next]
    assert env.mm.map_count == 1
    assert has_sticky(vma_next) == (middle_is_sticky or next_is_sticky)
    assert env.cleanup_mm() == 1

    # Merge left, partial span:  PPPVVVV -> PPPPPPV
    vma_prev = env.alloc_and_link_vma(0, 3, 0, prev_flags)
    vma_prev.vm_ops = env.close_ops
    vma = env.alloc_and_link_vma(3, 7, 3, flags)
    vma.vm_ops = env.close_ops
    env.vmg_set_range(vmg, 3, 6, 3, flags, anon_vma=dummy)
    vmg.prev, vmg.middle = vma_prev, vma
    env.set_dummy_anon_vma(vma)
    assert env.merge_existing(vmg) is vma_prev
    assert vmg.state == SUCCESS
    assert span(vma_prev) == (0, 6, 0)
    assert vma_prev.anon_vma is dummy
    assert span(vma) == (6, 7, 6)
    assert env.write_started() == [vma_prev, vma]
    assert env.mm.map_count == 2
    assert has_sticky(vma_prev) == (prev_is_sticky or middle_is_sticky)
    assert vma_prev.vm_flags & ~VM_STICKY == BASE_FLAGS
    assert env.cleanup_mm() == 2

    # Merge left, full span:  PPPVVVV -> PPPPPPP
    vma_prev = env.alloc_and_link_vma(0, 3, 0, prev_flags)
    vma_prev.vm_ops = env.close_ops
    vma = env.alloc_and_link_vma(3, 7, 3, flags)
    env.vmg_set_range(vmg, 3, 7, 3, flags, anon_vma=dummy)
    vmg.prev, vmg.middle = vma_prev, vma
    env.set_dummy_anon_vma(vma)
    assert env.merge_existing(vmg) is vma_prev
    assert vmg.state == SUCCESS
    assert span(vma_prev) == (0, 7, 0)
    assert vma_prev.anon_vma is dummy
    assert env.write_started() == [vma_prev]
    assert env.mm.map_count == 1
    assert has_sticky(vma_prev) == (prev_is_sticky or middle_is_sticky)
    assert env.cleanup_mm() == 1

    # Merge both:  PPPVVVVNNN -> PPPPPPPPPP
    vma_prev = env.alloc_and_link_vma(0, 3, 0, prev_flags)
    vma_prev.vm_ops = env.close_ops
    vma = env.alloc_and_link_vma(3, 7, 3, flags)
    vma_next = env.alloc_and_link_vma(7, 9, 7, next_flags)
    env.vmg_set_range(vmg, 3, 7, 3, flags, anon_vma=dummy)
    vmg.prev, vmg.middle = vma_prev, vma
    env.set_dummy_anon_vma(vma)
    assert env.merge_existing(vmg) is vma_prev
    assert vmg.state == SUCCESS
    assert span(vma_prev) == (0, 9, 0)
    assert vma_prev.anon_vma is dummy
    assert env.write_started() == [vma_prev]
    assert env.mm.map_count == 1
    assert has_sticky(vma_prev) == (prev_is_sticky or middle_is_sticky or next_is_sticky)
    assert env.cleanup_mm() == 1

    # Interior ranges never merge (vmg.anon_vma is still the dummy):
    # PPPVVVVVNNN with [4,5) [5,6) [6,7) [4,7) [4,6) [5,6), prev = middle.
    vma_prev = env.alloc_and_link_vma(0, 3, 0, prev_flags)
    vma = env.alloc_and_link_vma(3, 8, 3, flags)
    vma_next = env.alloc_and_link_vma(8, 0xA, 8, next_flags)
    for start, end in ((4, 5), (5, 6), (6, 7), (4, 7), (4, 6), (5, 6)):
        env.vmg_set_range(vmg, start, end, start, flags)
        vmg.prev = vma
        vmg.middle = vma
        assert env.merge_existing(vmg) is None
        assert vmg.state == NOMERGE
    assert env.write_started() == []
    assert env.spans() == [(0, 3, 0), (3, 8, 3), (8, 0xA, 8)]
    assert env.cleanup_mm() == 3


def test_anon_vma_non_mergeable(env: VmaTestEnv) -> None:
    """prev and next are each compatible with the proposal but carry
    different anon_vmas: only prev merges, and next is never write-locked."""
    dummy, other = env.dummy_anon_vma, env.dummy_anon_vma_2
    vmg = env.vmg()

    # Existing:  PPPVVVVNNN -> PPPPPPPNNN
    vma_prev = env.alloc_and_link_vma(0, 3, 0)
    vma = env.alloc_and_link_vma(3, 7, 3)
    vma_next = env.alloc_and_link_vma(7, 9, 7)
    env.vmg_set_range(vmg, 3, 7, 3, anon_vma=None)
    vmg.prev, vmg.middle = vma_prev, vma
    env.set_dummy_anon_vma(vma_prev)
    env.set_dummy_anon_vma(vma_next, other)
    assert env.merge_existing(vmg) is vma_prev
    assert vmg.state == SUCCESS
    assert span(vma_prev) == (0, 7, 0)
    assert env.vma_write_started(vma_prev)
    assert not env.vma_write_started(vma_next)
    assert env.spans() == [(0, 7, 0), (7, 9, 7)]
    assert vma_prev.anon_vma is dummy
    assert vma_next.anon_vma is other
    assert env.cleanup_mm() == 2

    # New range:  PPP****NNN -> PPPPPPPNNN
    vma_prev = env.alloc_and_link_vma(0, 3, 0)
    vma_next = env.alloc_and_link_vma(7, 9, 7)
    env.vmg_set_range(vmg, 3, 7, 3, anon_vma=None)
    env.set_dummy_anon_vma(vma_prev)
    env.set_dummy_anon_vma(vma_next, other)
    vmg.anon_vma = None
    assert env.merge_new(vmg) is vma_prev
    assert vmg.state == SUCCESS
    assert span(vma_prev) == (0, 7, 0)
    assert env.vma_write_started(vma_prev)
    assert not env.vma_write_started(vma_next)
    assert env.spans() == [(0, 7, 0), (7, 9, 7)]
    assert vma_prev.anon_vma is dummy
    assert vma_next.anon_vma is other
    assert env.cleanup_mm() == 2


def test_dup_anon_vma(env: VmaTestEnv) -> None:
    """Whichever VMA grows takes over the anon_vma of a VMA it absorbs or
    whose range it takes, through anon_vma_clone()."""
    dummy = env.dummy_anon_vma
    vmg = env.vmg()
    env.reset_dummy_anon_vma()

    # Expanding over next duplicates next's anon_vma into the target.
    vma_prev = env.alloc_and_link_vma(0, 3, 0)
    vma_next = env.alloc_and_link_vma(3, 5, 3)
    vma_next.anon_vma = dummy
    env.vmg_set_range(vmg, 0, 5, 0)
    vmg.target, vmg.next = vma_prev, vma_next
    assert env.expand_existing(vmg) == 0
    assert vma_prev.anon_vma is dummy
    assert dummy.was_cloned
    assert env.spans() == [(0, 5, 0)]
    env.cleanup_mm()

    # next has the anon_vma; prev extends, middle and next are removed.
    vma_prev = env.alloc_and_link_vma(0, 3, 0)
    vma = env.alloc_and_link_vma(3, 5, 3)
    vma_next = env.alloc_and_link_vma(5, 8, 5)
    env.set_singular_chain(vma_next)
    vma_next.anon_vma = dummy
    env.vmg_set_range(vmg, 3, 5, 3)
    vmg.prev, vmg.middle = vma_prev, vma
    assert env.merge_existing(vmg) is vma_prev
    assert vmg.state == SUCCESS
    assert span(vma_prev)[:2] == (0, 8)
    assert vma_prev.anon_vma is dummy
    assert dummy.was_cloned
    env.cleanup_mm()

    # middle has the anon_vma (set in vmg before vmg_set_range, which keeps it).
    vma_prev = env.alloc_and_link_vma(0, 3, 0)
    vma = env.alloc_and_link_vma(3, 5, 3)
    vma_next = env.alloc_and_link_vma(5, 8, 5)
    vmg.anon_vma = dummy
    env.set_dummy_anon_vma(vma)
    env.vmg_set_range(vmg, 3, 5, 3)
    vmg.prev, vmg.middle = vma_prev, vma
    assert env.merge_existing(vmg) is vma_prev
    assert vmg.state == SUCCESS
    assert span(vma_prev)[:2] == (0, 8)
    assert vma_prev.anon_vma is dummy
    assert dummy.was_cloned
    env.cleanup_mm()

    # middle has the anon_vma; prev extends, middle shrinks.
    vma_prev = env.alloc_and_link_vma(0, 3, 0)
    vma = env.alloc_and_link_vma(3, 8, 3)
    env.set_dummy_anon_vma(vma)
    env.vmg_set_range(vmg, 3, 5, 3)
    vmg.prev, vmg.middle = vma_prev, vma
    assert env.merge_existing(vmg) is vma_prev
    assert vmg.state == SUCCESS
    assert span(vma_prev)[:2] == (0, 5)
    assert span(vma) == (5, 8, 5)
    assert vma_prev.anon_vma is dummy
    assert dummy.was_cloned
    env.cleanup_mm()

    # middle has the anon_vma; middle shrinks, next extends.
    vma = env.alloc_and_link_vma(0, 5, 0)
    vma_next = env.alloc_and_link_vma(5, 8, 5)
    env.set_dummy_anon_vma(vma)
    env.vmg_set_range(vmg, 3, 5, 3)
    vmg.prev = vma
    vmg.middle = vma
    assert env.merge_existing(vmg) is vma_next
    assert vmg.state == SUCCESS
    assert span(vma_next)[:2] == (3, 8)
    assert span(vma) == (0, 3, 0)
    assert vma_next.anon_vma is dummy
    assert dummy.was_cloned
    env.cleanup_mm()


def test_vmi_prealloc_fail(env: VmaTestEnv) -> None:
    """A preallocation failure after the anon_vma was duplicated unlinks the
    duplicate and reports ERROR_NOMEM; no range changes.

    As the kernel suite does, prev->anon_vma is still the dummy: the
    harness links mm/vma.c against the suite's unlink_anon_vmas() stub,
    which only records the call (the real one, in rmap.py, clears the field
    and is tested with the rmap oracles).
    """
    dummy = env.dummy_anon_vma
    vmg = env.vmg()

    # Existing merge of middle into prev, middle has an anon_vma.
    vma_prev = env.alloc_and_link_vma(0, 3, 0)
    vma = env.alloc_and_link_vma(3, 5, 3)
    vma.anon_vma = dummy
    env.vmg_set_range(vmg, 3, 5, 3, anon_vma=dummy)
    vmg.prev, vmg.middle = vma_prev, vma
    env.set_dummy_anon_vma(vma)
    env.kern.fail_prealloc = True
    assert env.merge_existing(vmg) is None
    assert vmg.state == ERROR_NOMEM
    assert dummy.was_cloned
    assert dummy.was_unlinked
    assert vma_prev.anon_vma is dummy  # the suite's stub leaves it (see docstring)
    assert vma.anon_vma is dummy
    assert env.spans() == [(0, 3, 0), (3, 5, 3)]
    assert env.mm.map_count == 2
    # Decide, then lock: both were write-locked before the commit failed.
    assert env.write_started() == [vma_prev, vma]
    env.cleanup_mm()  # also clears fail_prealloc
    assert not env.kern.fail_prealloc

    # The same through vma_expand() (what new-range merges use).
    vma_prev = env.alloc_and_link_vma(0, 3, 0)
    vma = env.alloc_and_link_vma(3, 5, 3)
    vma.anon_vma = dummy
    env.vmg_set_range(vmg, 0, 5, 3)  # the suite passes pgoff 3; nothing depends on it
    vmg.target, vmg.next = vma_prev, vma
    env.kern.fail_prealloc = True
    assert env.expand_existing(vmg) == -errno.ENOMEM
    assert vmg.state == ERROR_NOMEM
    assert dummy.was_cloned
    assert dummy.was_unlinked
    assert vma_prev.anon_vma is dummy  # the suite's stub leaves it (see docstring)
    assert env.spans() == [(0, 3, 0), (3, 5, 3)]
    assert env.mm.map_count == 2
    env.cleanup_mm()


def test_merge_extend(env: VmaTestEnv) -> None:
    """Growing a VMA into the gap up to the next VMA merges the next one."""
    vma = env.alloc_and_link_vma(0, 1, 0)
    other = env.alloc_and_link_vma(3, 4, 3)

    assert env.run(vma_merge_extend(vma, 2 * PAGE)) is vma

    assert span(vma) == (0, 4, 0)
    assert env.tree() == (vma,)
    assert other.freed
    assert env.write_started() == [vma]
    assert env.mm.map_count == 1
    env.cleanup_mm()


def test_expand_only_mode(env: VmaTestEnv) -> None:
    """just_expand: prev grows over the new range without looking further.

    The suite also asserts that the VMA iterator still points at page 3
    (vma_merge_new_range() must not step back to the VMA before prev); the
    model has no VMA iterator, so the port asserts instead that the VMA before
    prev is neither changed nor write-locked."""
    vmg = env.vmg(5, 9, 5)
    before = env.alloc_and_link_vma(0, 2, 0)
    vma_prev = env.alloc_and_link_vma(3, 5, 3)
    vmg.prev = vma_prev
    vmg.just_expand = True

    vma = env.run(vma_merge_new_range(vmg))

    assert vma is vma_prev
    assert vmg.state == SUCCESS
    assert span(vma) == (3, 9, 3)
    assert vma_is_attached(vma)
    assert env.write_started() == [vma_prev]
    assert span(before) == (0, 2, 0)
    assert env.spans() == [(0, 2, 0), (3, 9, 3)]
    env.cleanup_mm()


# ---------------------------------------------------------------------------
# tests/mmap.c
# ---------------------------------------------------------------------------
def test_mmap_region_basic(env: VmaTestEnv) -> None:
    """Four anonymous 3-page mappings; the second pair each merges with one
    of the first pair."""
    for page in (0x300, 0x250, 0x303, 0x24D):
        addr = env.run(mmap_region(env.mm, None, page * PAGE, 3 * PAGE, BASE_FLAGS, page))
        assert addr == page * PAGE

    assert env.mm.map_count == 2
    assert env.spans() == [(0x24D, 0x253, 0x24D), (0x300, 0x306, 0x300)]
    env.cleanup_mm()


# ---------------------------------------------------------------------------
# tests/vma.c
# ---------------------------------------------------------------------------
def test_copy_vma(env: VmaTestEnv) -> None:
    """mremap's copy_vma(): a new VMA when nothing merges, else the neighbour
    it merged into."""
    # Move backwards, no merge.
    vma = env.alloc_and_link_vma(3, 5, 3)
    vma_new, need_rmap_locks = env.run(copy_vma(vma, 0, 2 * PAGE, 0))
    assert vma_new is not None and vma_new is not vma and not need_rmap_locks
    assert span(vma_new) == (0, 2, 0)
    assert vma_is_attached(vma_new)
    assert env.spans() == [(0, 2, 0), (3, 5, 3)]
    assert env.mm.map_count == 2
    env.cleanup_mm()

    # Move next to another VMA and merge with it.
    vma = env.alloc_and_link_vma(0, 2, 0)
    vma_next = env.alloc_and_link_vma(6, 8, 6)
    vma_new, need_rmap_locks = env.run(copy_vma(vma, 4 * PAGE, 2 * PAGE, 4))
    assert vma_new is vma_next and not need_rmap_locks  # vm_pgoff 4 > 0: walked after the source
    assert vma_is_attached(vma_new)
    assert span(vma_next) == (4, 8, 4)  # implied by the code, not asserted by the suite
    assert env.spans() == [(0, 2, 0), (4, 8, 4)]
    env.cleanup_mm()


def test_commit_merge_writes_the_changed_vma_before_the_adjusted_one(
        env: VmaTestEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """commit_merge() (mm/vma.c, 7.0) sets the range of the VMA it changes (the
    target; middle when next is the adjusted one) before vmg_adjust_set_range()
    moves the start of the VMA the merge only partly takes over."""
    import pervma.kernel.vma as vma_mod

    writes: list[VmAreaStruct] = []
    real = vma_mod.vma_write_fields

    async def spy(vma: VmAreaStruct, label: str) -> None:
        writes.append(vma)
        await real(vma, label)

    monkeypatch.setattr(vma_mod, "vma_write_fields", spy)
    vmg = env.vmg()

    # Merge left, partial span:  PPPVVVV -> PPPPPPV
    vma_prev = env.alloc_and_link_vma(0, 3, 0, BASE_FLAGS)
    vma = env.alloc_and_link_vma(3, 7, 3, BASE_FLAGS)
    env.vmg_set_range(vmg, 3, 6, 3, BASE_FLAGS)
    vmg.prev, vmg.middle = vma_prev, vma
    assert env.merge_existing(vmg) is vma_prev
    assert (writes, env.spans()) == ([vma_prev, vma], [(0, 6, 0), (6, 7, 6)])
    assert env.cleanup_mm() == 2

    # Merge right, partial span:  VVVVNNN -> VNNNNNN
    writes.clear()
    vma = env.alloc_and_link_vma(2, 6, 2, BASE_FLAGS)
    vma_next = env.alloc_and_link_vma(6, 9, 6, BASE_FLAGS)
    env.vmg_set_range(vmg, 3, 6, 3, BASE_FLAGS)
    vmg.prev, vmg.middle = vma, vma
    assert env.merge_existing(vmg) is vma_next
    assert (writes, env.spans()) == ([vma, vma_next], [(2, 3, 2), (3, 9, 3)])
    assert env.cleanup_mm() == 2
