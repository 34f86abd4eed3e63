"""MMU notifier scenarios (issue #13, item 5): a secondary MMU that mirrors
the process's page table (kernel/mmu_mirror.py, KVM's invalidate counter)
races the core mm's PTE changes — munmap, mprotect, fork's write-protection
and the COW that follows, truncate's zap, mremap's move and migration — and registration (mm_take_all_locks()) races a
fault that holds only the VMA lock, and munmap.

Beside validate_mm, whose validate_mmu_mirrors() requires that no mirror
keeps an entry whose primary PTE changed or went away, each checks what the
mirror's user sees: the byte it read, or EFAULT once the page is gone.
"""

from __future__ import annotations

import errno
from typing import Any

from pervma import MAP_SHARED, PAGE, PROT_READ
from pervma.check.scenarios.kernel import ANON, RW, A, World, _expect_byte, _scenario
from pervma.check.scenarios.mempolicy import NODE1, _expect_node, _two_nodes
from pervma.check.scenarios.truncate import B, _mapped_file, file_rmap_check
from pervma.kernel.mempolicy import MPOL_BIND, MPOL_MF_MOVE
from pervma.kernel.mremap import MREMAP_FIXED, MREMAP_MAYMOVE
from pervma.kernel.system import Thread
from pervma.sched import violation


def _expect(w: World, name: str, allowed: set[Any], what: str) -> None:
    """The result of thread ``name`` is one of ``allowed`` (an errno for an OSError)."""
    def check() -> None:
        r = w.results.get(name)
        got = r.errno if isinstance(r, OSError) else r
        if got not in allowed:
            violation("user-visible memory", f"{what}: {name} returned {r!r}, allowed "
                      f"{sorted(allowed, key=repr)}")
    w.checks.append(check)


@_scenario("mirror-fault-vs-munmap", "a secondary MMU faults a page into its table while "
           "munmap zaps it: the mirror reads the byte or gets EFAULT, and keeps no entry")
def _mirror_vs_munmap(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A, 5)
    m = p.mmu_notifier_register()

    async def mirror(t: Thread) -> int:
        return await m.on(t).load(A)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, 2 * PAGE)

    w.thread("mirror", p.thread(), mirror)
    w.thread("munmap", p.thread(), unmap)
    _expect(w, "mirror", {5, errno.EFAULT}, "mirror load of an unmapped page")


@_scenario("mirror-fault-vs-mprotect", "a secondary MMU write-faults a page while mprotect "
           "makes it read-only: no writable mirror entry survives the protection change")
def _mirror_vs_mprotect(w: World) -> None:
    p = w.p
    p.mmap(A, PAGE, RW, ANON)
    p.store(A, 5)
    m = p.mmu_notifier_register()

    async def mirror(t: Thread) -> None:
        await m.on(t).store(A, 9)

    async def protect(t: Thread) -> int:
        return await t.mprotect(A, PAGE, PROT_READ)

    w.thread("mirror", p.thread(), mirror)
    w.thread("mprotect", p.thread(), protect)
    _expect(w, "mirror", {None, errno.EFAULT}, "mirror store racing mprotect")
    w.checks.append(_expect_byte(w, p, A, {5, 9}, "the page after the mirror's store"))


@_scenario("mirror-vs-cow-after-fork", "a secondary MMU reads a page while fork "
           "write-protects it and the parent's store copies it (wp_page_copy): the mirror "
           "must not keep the page the parent no longer maps")
def _mirror_vs_cow(w: World) -> None:
    p = w.p
    p.mmap(A, PAGE, RW, ANON)
    p.store(A, 5)
    m = p.mmu_notifier_register()

    async def fork_then_store(t: Thread) -> None:
        await t.fork()
        await t.store(A, 7)

    async def mirror(t: Thread) -> int:
        return await m.on(t).load(A)

    w.thread("fork", p.thread(), fork_then_store)
    w.thread("mirror", p.thread(), mirror)
    _expect(w, "mirror", {5, 7}, "mirror load across fork and COW")
    w.checks.append(_expect_byte(w, p, A, {7}, "parent after its store"))


@_scenario("mmu-register-vs-fault", "mmu_notifier_register (mm_take_all_locks) races a "
           "COW fault that holds only the VMA lock: registration waits for it, so the new "
           "mirror never copies the page the fault is replacing")
def _register_vs_fault(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A + PAGE, 1)  # the VMA has an anon_vma: the COW below needs no mmap_lock
    p.load(A)  # the zero page, read-only: the store below copies it

    async def fault(t: Thread) -> None:
        await t.store(A, 3)

    async def register(t: Thread) -> int:
        m = await t.mmu_notifier_register()
        return await m.load(A)

    w.thread("fault", p.thread(), fault)
    w.thread("register", p.thread(), register)
    _expect(w, "register", {0, 3}, "mirror load after registering")
    w.checks.append(_expect_byte(w, p, A, {3}, "the faulting store"))


@_scenario("mmu-register-vs-munmap", "mmu_notifier_register races munmap of a VMA it must "
           "write-lock: the mirror then reads the byte or gets EFAULT")
def _register_vs_munmap(w: World) -> None:
    p = w.p
    p.mmap(A, 2 * PAGE, RW, ANON)
    p.store(A, 5)

    async def register(t: Thread) -> int:
        m = await t.mmu_notifier_register()
        return await m.load(A)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, 2 * PAGE)

    w.thread("register", p.thread(), register)
    w.thread("munmap", p.thread(), unmap)
    _expect(w, "register", {5, errno.EFAULT}, "mirror load racing munmap")


@_scenario("mirror-fault-vs-truncate", "a secondary MMU faults the second page of a shared "
           "file mapping while ftruncate zaps it (unmap_mapping_range: no mm lock, only "
           "i_mmap_rwsem): the mirror reads the byte or gets EFAULT, and keeps no entry "
           "beyond the new end")
def _mirror_vs_truncate(w: World) -> None:
    p, f = _mapped_file(w, 2, MAP_SHARED)
    p.load(A + PAGE)  # the primary PTE is there: the mirror copies it
    m = p.mmu_notifier_register()

    async def mirror(t: Thread) -> int:
        return await m.on(t).load(A + PAGE)

    async def truncate(t: Thread) -> int:
        return await t.truncate(f, PAGE)

    w.thread("mirror", p.thread(), mirror)
    w.thread("truncate", p.thread(), truncate)
    _expect(w, "mirror", {2, errno.EFAULT}, "mirror load of a page truncate removes")
    w.checks.append(file_rmap_check(w, f))


@_scenario("mirror-fault-vs-mremap", "a secondary MMU faults a page while mremap moves it "
           "(move_page_tables): the mirror reads the byte or gets EFAULT, keeps no entry "
           "for the old address, and the page moves with its contents")
def _mirror_vs_mremap(w: World) -> None:
    p = w.p
    p.mmap(A, PAGE, RW, ANON)
    p.store(A, 5)
    m = p.mmu_notifier_register()

    async def mirror(t: Thread) -> int:
        return await m.on(t).load(A)

    async def move(t: Thread) -> int:
        return await t.mremap(A, PAGE, PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, B)

    w.thread("mirror", p.thread(), mirror)
    w.thread("mremap", p.thread(), move)
    _expect(w, "mirror", {5, errno.EFAULT}, "mirror load of a page mremap moves")
    _expect(w, "mremap", {B}, "mremap to a fixed address")
    w.checks.append(_expect_byte(w, p, B, {5}, "the moved page"))


@_scenario("mirror-fault-vs-mbind-migrate", "a secondary MMU faults a page while mbind "
           "(MPOL_MF_MOVE) migrates it to node 1: the mirror reads the byte and keeps no "
           "entry for the page migration freed")
def _mirror_vs_migrate(w: World) -> None:
    p = _two_nodes(w)
    p.mmap(A, PAGE, RW, ANON)
    p.store(A, 5)
    m = p.mmu_notifier_register()

    async def mirror(t: Thread) -> int:
        return await m.on(t).load(A)

    async def mbind(t: Thread) -> int:
        return await t.mbind(A, PAGE, MPOL_BIND, NODE1, MPOL_MF_MOVE)

    w.thread("mirror", p.thread(), mirror)
    w.thread("mbind", p.thread(), mbind)
    _expect(w, "mirror", {5}, "mirror load of a page being migrated")
    w.checks += [_expect_byte(w, p, A, {5}, "the migrated page"),
                 _expect_node(w, A, 1, "the page mbind moved")]


@_scenario("mmu-register-vs-truncate", "mmu_notifier_register (mm_take_all_locks: every file "
           "mapping's i_mmap_rwsem too) races ftruncate zapping a page of a mapped file: a "
           "truncate that started its invalidation before the mirror existed has ended it "
           "before registration completes, so the mirror never sees an end without its start")
def _register_vs_truncate(w: World) -> None:
    p, f = _mapped_file(w, 2, MAP_SHARED)
    p.load(A + PAGE)  # mapped: truncate's zap has a PTE to clear

    async def register(t: Thread) -> int:
        m = await t.mmu_notifier_register()
        return await m.load(A)

    async def truncate(t: Thread) -> int:
        return await t.truncate(f, PAGE)

    w.thread("register", p.thread(), register)
    w.thread("truncate", p.thread(), truncate)
    _expect(w, "register", {1}, "mirror load of the page truncate keeps")
    w.checks.append(file_rmap_check(w, f))
