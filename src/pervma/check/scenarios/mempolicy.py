"""mempolicy and mlock scenarios (issue #13 item 6): the page-table walker's
users racing what matters to them.

``mbind-vs-fault`` is the policy-lifetime race: the fault reads
``vma->vm_policy`` under its VMA read lock (get_vma_policy) while mbind
replaces and frees that policy (vma_replace_policy).  7.0 is safe because
mbind's walk write-locks each VMA (PGWALK_WRLOCK) before the old policy is
put; the 6.5 bug fixed by "mm/mempolicy: Take VMA lock before replacing
policy" is a KASAN use-after-free here.  ``mbind-split-vs-fault`` splits a
VMA by policy beside a fault on the other half.  ``mlock-vs-munmap`` races
mlock (apply_vma_lock_flags, the PGWALK_WRLOCK_VERIFY walk, __mm_populate
outside mmap_lock) against munmap of a page inside the range.
``clear-refs-vs-fault`` races the soft-dirty reset of /proc/pid/clear_refs
(the third page-walk user) against stores.

The scenarios run on a two-node machine (``System(nodes=2)``) and check what
the user sees: where the page ended up, its bytes, the policy and the
VM_LOCKED state of each VMA.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from pervma import PAGE
from pervma.check.scenarios.kernel import ANON, RW, A, World, _expect_byte, _failed_with, _scenario
from pervma.kernel.mempolicy import MPOL_BIND, MPOL_MF_MOVE, MPOL_PREFERRED, Mempolicy
from pervma.kernel.mm_types import VmFlags
from pervma.kernel.system import Process, Thread
from pervma.sched import violation

NODE0, NODE1 = 0b01, 0b10


def _two_nodes(w: World) -> Process:
    """The scenario's machine has two NUMA nodes (System(nodes=2)); set before
    anything is allocated on it."""
    w.kern.nodes = 2
    return w.p


def _expect_node(w: World, addr: int, nid: int, what: str) -> Callable[[], None]:
    def check() -> None:
        pte = w.p.mm.pgtable.get(addr // PAGE)
        if pte is None or pte.page.nid != nid:
            violation("mempolicy", f"{what}: the page at {addr:#x} is "
                      f"{'not mapped' if pte is None else f'on node {pte.page.nid}'}, expected node {nid}")
    return check


def _expect_policy(w: World, addr: int, mode: int, nodes: int, what: str) -> Callable[[], None]:
    def check() -> None:
        vma = w.p.mm.mm_mt.find_covering(addr)
        pol = None if vma is None else vma.vm_policy
        if not isinstance(pol, Mempolicy) or pol.freed or (pol.mode, pol.nodes) != (mode, nodes):
            violation("mempolicy", f"{what}: the VMA at {addr:#x} has policy {pol}, expected mode "
                      f"{mode} nodes {nodes:#x}")
    return check


@_scenario("mbind-vs-fault", "a write fault allocating by the VMA's policy races mbind replacing "
           "(and freeing) that policy and moving the VMA's pages to node 1")
def _mbind_vs_fault(w: World) -> None:
    p = _two_nodes(w)
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.mbind(A, 2 * PAGE, MPOL_PREFERRED, NODE0)
    p.store(A + PAGE, 7)  # the VMA has its anon_vma: the fault stays under the VMA lock

    async def fault(t: Thread) -> None:
        await t.store(A, 1)

    async def mbind(t: Thread) -> int:
        return await t.mbind(A, 2 * PAGE, MPOL_BIND, NODE1, MPOL_MF_MOVE)

    w.thread("fault", p.thread(), fault)
    w.thread("mbind", p.thread(), mbind)
    w.checks += [_expect_byte(w, p, A, {1}, "the faulted page"),
                 _expect_byte(w, p, A + PAGE, {7}, "the migrated page"),
                 _expect_node(w, A, 1, "the faulted page (allocated on, or moved to, node 1)"),
                 _expect_node(w, A + PAGE, 1, "the page mbind moved"),
                 _expect_policy(w, A, MPOL_BIND, NODE1, "after mbind")]


@_scenario("mbind-split-vs-fault", "mbind of the upper page splits the VMA by policy while a "
           "fault on the lower page runs under the VMA lock")
def _mbind_split_vs_fault(w: World) -> None:
    p = _two_nodes(w)
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A + PAGE, 7)

    async def fault(t: Thread) -> None:
        await t.store(A, 1)

    async def mbind(t: Thread) -> int:
        return await t.mbind(A + PAGE, PAGE, MPOL_BIND, NODE1)

    w.thread("fault", p.thread(), fault)
    w.thread("mbind", p.thread(), mbind)

    def check() -> None:
        if w.results.get("mbind") != 0:
            violation("mempolicy", f"mbind returned {w.results.get('mbind')!r}")
        lower = w.p.mm.mm_mt.find_covering(A)
        if lower is None or lower.vm_end != A + PAGE or lower.vm_policy is not None:
            violation("mempolicy", f"the lower page's VMA is {lower} with policy "
                      f"{None if lower is None else lower.vm_policy}, expected [A, A+PAGE) with none")
    w.checks += [check, _expect_byte(w, p, A, {1}, "the faulted page"),
                 _expect_node(w, A, 0, "the lower page (default policy)"),
                 _expect_node(w, A + PAGE, 0, "the upper page (no MPOL_MF_MOVE)"),
                 _expect_policy(w, A + PAGE, MPOL_BIND, NODE1, "the upper page")]


@_scenario("mlock-vs-munmap", "mlock of four pages races munmap of the second: mlock fails "
           "(ENOMEM, a hole) or every page still mapped is VM_LOCKED and populated")
def _mlock_vs_munmap(w: World) -> None:
    p = _two_nodes(w)
    p.mmap(A, 4 * PAGE, RW, ANON)
    p.store(A, 3)

    async def mlock(t: Thread) -> int:
        return await t.mlock(A, 4 * PAGE)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A + PAGE, PAGE)

    w.thread("mlock", p.thread(), mlock)
    w.thread("munmap", p.thread(), unmap)

    def check() -> None:
        mm = w.p.mm
        r = w.results.get("mlock")
        if w.results.get("munmap") != 0 or mm.mm_mt.find_covering(A + PAGE) is not None:
            violation("mlock", f"munmap returned {w.results.get('munmap')!r}; A+PAGE still mapped")
        if _failed_with(r, errno.ENOMEM):
            return
        if r != 0:
            violation("mlock", f"mlock returned {r!r}, expected 0 or ENOMEM")
            return
        for v in mm.mm_mt.overlapping(A, A + 4 * PAGE):
            if not v.vm_flags & VmFlags.VM_LOCKED or v.vm_flags & VmFlags.VM_IO:
                violation("mlock", f"mlock succeeded but {v} has flags {int(v.vm_flags):#x}")
            for vpn in range(v.vm_start // PAGE, v.vm_end // PAGE):
                if vpn not in mm.pgtable:
                    violation("mlock", f"mlock succeeded but {vpn * PAGE:#x} is not populated")
    w.checks += [check, _expect_byte(w, p, A, {3}, "the first page")]


@_scenario("clear-refs-vs-fault", "writing 4 to /proc/pid/clear_refs (VM_SOFTDIRTY cleared, "
           "PTEs write-protected by a PGWALK_WRLOCK walk) races stores to a mapped and an "
           "unmapped page")
def _clear_refs_vs_fault(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A, 1)

    async def clear(t: Thread) -> int:
        return await t.clear_refs(4)

    async def stores(t: Thread) -> None:
        await t.store(A + PAGE, 2)
        await t.store(A, 3)

    w.thread("clear_refs", p.thread(), clear)
    w.thread("stores", p.thread(), stores)
    w.checks += [_expect_byte(w, p, A, {3}, "the page written twice"),
                 _expect_byte(w, p, A + PAGE, {2}, "the page faulted in")]
