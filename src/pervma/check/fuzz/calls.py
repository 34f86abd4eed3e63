"""The registry's entries: every call of the model's API a program can make.

Syscalls (Thread's awaitable API), user loads and stores, and the
kernel-internal callers the model has (the /proc/pid/maps reader,
PROCMAP_QUERY, the rmap walker, binder's shrinker and page installer, TCP
zerocopy receive, the userfaultfd ioctls).  Adding an API: one
``@fuzz_call`` entry here (see :mod:`pervma.check.fuzz.registry`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pervma.check.fuzz.registry import Args, fuzz_call
from pervma.check.fuzz.world import Ctx
from pervma.kernel.binder import binder_alloc_free_page, binder_install_single_page
from pervma.kernel.madvise import (
    MADV_COLD,
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_NORMAL,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_RANDOM,
    MADV_WILLNEED,
)
from pervma.kernel.mempolicy import MPOL_BIND, MPOL_DEFAULT, MPOL_PREFERRED
from pervma.kernel.mm_types import PAGE_SIZE
from pervma.kernel.mmap import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED
from pervma.kernel.mremap import MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE
from pervma.kernel.rmap import rmap_walk_anon
from pervma.kernel.system import START_BRK
from pervma.kernel.tcp import tcp_zerocopy_receive

if TYPE_CHECKING:
    import random

    from pervma.check.fuzz.generate import Gen
    from pervma.kernel.system import Thread

PAGE = PAGE_SIZE
#: mmap's ``kind`` argument: 0 private anon, 1 shared anon, 2 private file, 3 shared file.
MMAP_KINDS = (MAP_PRIVATE | MAP_ANONYMOUS, MAP_SHARED | MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED)
MREMAP_FLAGS = (0, MREMAP_MAYMOVE, MREMAP_MAYMOVE | MREMAP_FIXED,
                MREMAP_MAYMOVE | MREMAP_DONTUNMAP)
ADVICES = (MADV_DONTNEED, MADV_DONTNEED, MADV_DONTNEED, MADV_FREE, MADV_WILLNEED, MADV_COLD,
           MADV_NORMAL, MADV_RANDOM, MADV_DONTFORK, MADV_DOFORK, MADV_POPULATE_READ,
           MADV_POPULATE_WRITE, MADV_DONTNEED)
# Not MADV_REMOVE: where it is valid (a shared writable file mapping) it punches
# a hole in the file, which the model does not do (NotModelled, mid-walk).


def gen_range(g: Gen, r: random.Random) -> Args:
    """``{"addr", "len"}`` from :meth:`Gen.range`."""
    addr, length = g.range(r)
    return {"addr": addr, "len": length}


# -- syscalls -------------------------------------------------------------------
def _gen_mmap(g: Gen, r: random.Random) -> Args:
    addr, length = g.range(r)
    return {"addr": addr, "len": length, "prot": g.prot(r), "kind": r.choice((0, 0, 0, 1, 2, 3)),
            "fixed": int(r.random() < 0.7)}


@fuzz_call("mmap", params=("addr", "len", "prot", "kind", "fixed"), gen=_gen_mmap, weight=3,
           walks=lambda a: [(a["addr"], a["len"])] if a["fixed"] else [])
async def _mmap(cx: Ctx, t: Thread, a: Args) -> Any:
    """mmap(2): anonymous or of the setup's file, MAP_FIXED or a hint."""
    kind = a["kind"] & 3
    flags = MMAP_KINDS[kind] | (MAP_FIXED if a["fixed"] else 0)
    return await t.mmap(a["addr"], a["len"], a["prot"], flags, cx.file() if kind >= 2 else None, 0)


@fuzz_call("munmap", params=("addr", "len"), gen=lambda g, r: gen_range(g, r),
           walks=lambda a: [(a["addr"], a["len"])], weight=3)
async def _munmap(cx: Ctx, t: Thread, a: Args) -> Any:
    """munmap(2)."""
    return await t.munmap(a["addr"], a["len"])


def _gen_mprotect(g: Gen, r: random.Random) -> Args:
    addr, length = g.range(r)
    return {"addr": addr, "len": length, "prot": g.prot(r)}


@fuzz_call("mprotect", params=("addr", "len", "prot"), gen=_gen_mprotect,
           walks=lambda a: [(a["addr"], a["len"])], weight=3)
async def _mprotect(cx: Ctx, t: Thread, a: Args) -> Any:
    """mprotect(2)."""
    return await t.mprotect(a["addr"], a["len"], a["prot"])


def _gen_mremap(g: Gen, r: random.Random) -> Args:
    addr, length = g.range(r)
    new_len = r.choice((length, length, length + PAGE, max(PAGE, length - PAGE)))
    return {"old_addr": addr, "old_len": length, "new_len": new_len,
            "flags": r.choice((0, 1, 1, 2, 3)), "new_addr": g.addr(r)}


@fuzz_call("mremap", params=("old_addr", "old_len", "new_len", "flags", "new_addr"),
           gen=_gen_mremap, weight=2,
           walks=lambda a: [(a["old_addr"], max(a["old_len"], a["new_len"])),
                            (a["new_addr"], a["new_len"])])
async def _mremap(cx: Ctx, t: Thread, a: Args) -> Any:
    """mremap(2); ``flags`` 0 none, 1 MAYMOVE, 2 MAYMOVE|FIXED, 3 MAYMOVE|DONTUNMAP."""
    return await t.mremap(a["old_addr"], a["old_len"], a["new_len"],
                          MREMAP_FLAGS[a["flags"] & 3], a["new_addr"])


def _gen_madvise(g: Gen, r: random.Random) -> Args:
    addr, length = g.range(r)
    return {"addr": addr, "len": length, "advice": r.choice(ADVICES)}


@fuzz_call("madvise", params=("addr", "len", "advice"), gen=_gen_madvise,
           walks=lambda a: [(a["addr"], a["len"])], weight=2)
async def _madvise(cx: Ctx, t: Thread, a: Args) -> Any:
    """madvise(2).  MADV_POPULATE_READ/WRITE check each VMA and fault its
    pages under one mmap_read_lock hold (7.0 mm/madvise.c madvise_populate()
    -> faultin_page_range(), ``kernel/gup.py``; checked again after a fault
    that dropped the lock), so an mprotect cannot come between a check and
    its faults: -EFAULT is a failed fault only, and the call is atomic with
    respect to the address space's writers as the other advice is."""
    return await t.madvise(a["addr"], a["len"], a["advice"])


@fuzz_call("brk", params=("pages",), gen=lambda g, r: {"pages": r.choice((0, 1, 2, 4))},
           walks=lambda a: [(START_BRK, 1 << 30)])
async def _brk(cx: Ctx, t: Thread, a: Args) -> Any:
    """brk(2) to ``pages`` pages above the process's initial break."""
    return await t.brk(t.mm.start_brk + a["pages"] * PAGE)


@fuzz_call("fork", weight=3)
async def _fork(cx: Ctx, t: Thread, a: Args) -> Any:
    """fork(2): the child is left alive (validate_mm checks it at the end)."""
    return await t.fork()


@fuzz_call("exit")
async def _exit(cx: Ctx, t: Thread, a: Args) -> Any:
    """exit(2) of the thread: exit_mm() drops its mm reference; the process's
    last thread to exit tears the mm down (exit_mmap).  Later calls of the
    thread are not made (outcome ``"exited"``)."""
    return await t.exit()


# -- user accesses ---------------------------------------------------------------
@fuzz_call("load", params=("addr",), gen=lambda g, r: {"addr": g.addr(r, access=True)},
           access=True, weight=4)
async def _load(cx: Ctx, t: Thread, a: Args) -> Any:
    """A one-byte user load."""
    return await t.load(a["addr"])


@fuzz_call("store", params=("addr", "value"),
           gen=lambda g, r: {"addr": g.addr(r, access=True), "value": r.randrange(1, 256)},
           access=True, weight=4)
async def _store(cx: Ctx, t: Thread, a: Args) -> Any:
    """A one-byte user store."""
    return await t.store(a["addr"], a["value"])


# -- kernel-internal callers -------------------------------------------------------
@fuzz_call("read_maps", atomic=False)
async def _read_maps(cx: Ctx, t: Thread, a: Args) -> Any:
    """Read /proc/pid/maps of the thread's process (lock_next_vma walk)."""
    return await t.read_maps()


@fuzz_call("procmap_query", params=("addr",), gen=lambda g, r: {"addr": g.addr(r)}, atomic=False)
async def _procmap_query(cx: Ctx, t: Thread, a: Args) -> Any:
    """ioctl(PROCMAP_QUERY) for the VMA covering ``addr``."""
    return await t.procmap_query(a["addr"])


@fuzz_call("rmap_walk", params=("addr",), gen=lambda g, r: {"addr": g.addr(r, access=True)},
           atomic=False)
async def _rmap_walk(cx: Ctx, t: Thread, a: Args) -> Any:
    """An rmap walk (reclaim) of the anonymous page mapped at ``addr`` after the
    setup; ``"no page"`` when the setup left none there."""
    page = cx.pages.get((t.process.name, a["addr"] // PAGE))
    if page is None:
        return "no page"
    return await rmap_walk_anon(cx.kern, page)


@fuzz_call("binder_free_page", params=("page",), gen=lambda g, r: {"page": r.randrange(0, 2)},
           atomic=False, needs="binder")
async def _binder_free(cx: Ctx, t: Thread, a: Args) -> Any:
    """binder's shrinker frees page ``page`` of the process's binder buffer."""
    alloc = _binder(cx, t)
    if alloc is None:
        return "no binder"
    return await binder_alloc_free_page(alloc, alloc.buffer + a["page"] * PAGE)


@fuzz_call("binder_install_page", params=("page",), gen=lambda g, r: {"page": r.randrange(0, 2)},
           atomic=False, needs="binder")
async def _binder_install(cx: Ctx, t: Thread, a: Args) -> Any:
    """binder installs page ``page`` of the process's binder buffer."""
    alloc = _binder(cx, t)
    if alloc is None:
        return "no binder"
    return await binder_install_single_page(alloc, alloc.buffer + a["page"] * PAGE)


def _binder(cx: Ctx, t: Thread) -> Any:
    return next((al for pn, al in cx.binder.items() if cx.procs[pn] is t.process), None)


@fuzz_call("tcp_receive", params=("pages",), gen=lambda g, r: {"pages": r.choice((1, 2))},
           atomic=False, needs="tcp")
async def _tcp_receive(cx: Ctx, t: Thread, a: Args) -> Any:
    """tcp_zerocopy_receive() of ``pages`` pages into the process's receive area."""
    addr = next((ad for pn, ad in cx.tcp.items() if cx.procs[pn] is t.process), None)
    if addr is None:
        return "no tcp"
    return await tcp_zerocopy_receive(t.mm, addr, a["pages"])


@fuzz_call("bpf_stack_build_id", params=("addr",),
           gen=lambda g, r: {"addr": g.addr(r, access=True)}, atomic=False)
async def _bpf_stack_build_id(cx: Ctx, t: Thread, a: Args) -> Any:
    """A BPF program asking for the build ID and file offset of the user IP
    ``addr`` (BPF_F_USER_BUILD_ID: per-VMA lock or mmap_read_trylock, never a
    wait): ``(status, offset)``, as the stack map holds it."""
    status, _build_id, off = (await t.bpf_stack_build_id([a["addr"]]))[0]
    return f"{status}:{off:#x}"


@fuzz_call("mirror_fault", params=("addr", "write"),
           gen=lambda g, r: {"addr": g.addr(r, access=True), "write": r.choice((0, 1))},
           atomic=False)
async def _mirror_fault(cx: Ctx, t: Thread, a: Args) -> Any:
    """A secondary MMU (a device driver's mirror of the process, kernel/mmu_mirror.py)
    faults ``addr`` in: the process's first such call registers the mirror
    (mmu_notifier_register, mm_take_all_locks) and the others share it."""
    m = cx.mirrors.get(t.process.name)
    if m is None:
        m = await t.mmu_notifier_register()
        cx.mirrors[t.process.name] = m
    return await m.on(t).fault(a["addr"], bool(a["write"]))


def _gen_uffd_range(g: Gen, r: random.Random) -> Args:
    lo, hi = g.uffd_range()
    start = lo + r.randrange(0, max(1, (hi - lo) // PAGE)) * PAGE
    return {"dst": start, "len": PAGE * r.choice((1, 1, 2))}


def _uffd(cx: Ctx, t: Thread) -> Any:
    """The setup's userfaultfd as used by ``t``; None once closed (EBADF)."""
    assert cx.uffd is not None
    return None if cx.uffd_closed else cx.uffd.on(t)


@fuzz_call("uffd_copy", params=("dst", "len"), gen=_gen_uffd_range, atomic=False, needs="uffd")
async def _uffd_copy(cx: Ctx, t: Thread, a: Args) -> Any:
    """UFFDIO_COPY of the setup's source page(s) to ``dst``."""
    u = _uffd(cx, t)
    return "EBADF" if u is None else await u.copy(a["dst"], cx.uffd_src, a["len"])


@fuzz_call("uffd_zeropage", params=("dst", "len"), gen=_gen_uffd_range, atomic=False,
           needs="uffd")
async def _uffd_zeropage(cx: Ctx, t: Thread, a: Args) -> Any:
    """UFFDIO_ZEROPAGE at ``dst``."""
    u = _uffd(cx, t)
    return "EBADF" if u is None else await u.zeropage(a["dst"], a["len"])


@fuzz_call("uffd_move", params=("dst",), gen=lambda g, r: {"dst": _gen_uffd_range(g, r)["dst"]},
           atomic=False, needs="uffd")
async def _uffd_move(cx: Ctx, t: Thread, a: Args) -> Any:
    """UFFDIO_MOVE of the setup's first source page to ``dst``."""
    u = _uffd(cx, t)
    return "EBADF" if u is None else await u.move(a["dst"], cx.uffd_src, PAGE)


def _gen_uffd_unreg(g: Gen, r: random.Random) -> Args:
    lo, hi = g.uffd_range()
    return {"addr": lo, "len": hi - lo} if r.random() < 0.5 else gen_range(g, r)


@fuzz_call("uffd_unregister", params=("addr", "len"), gen=_gen_uffd_unreg, atomic=False,
           needs="uffd")
async def _uffd_unregister(cx: Ctx, t: Thread, a: Args) -> Any:
    """UFFDIO_UNREGISTER of a range."""
    u = _uffd(cx, t)
    return "EBADF" if u is None else await u.unregister(a["addr"], a["len"])


@fuzz_call("uffd_wake", params=("dst", "len"), gen=_gen_uffd_range, atomic=False,
           needs="uffd")
async def _uffd_wake(cx: Ctx, t: Thread, a: Args) -> Any:
    """UFFDIO_WAKE of a range: the faults waiting there retry."""
    u = _uffd(cx, t)
    return "EBADF" if u is None else await u.wake(a["dst"], a["len"])


@fuzz_call("uffd_close", atomic=False, needs="uffd")
async def _uffd_close(cx: Ctx, t: Thread, a: Args) -> Any:
    """close(2) of the userfaultfd: wakes the faults waiting in handle_userfault()."""
    u = _uffd(cx, t)
    if u is None:
        return "EBADF"
    cx.uffd_closed = True
    return await u.close()


def _gen_mbind(g: Gen, r: random.Random) -> Args:
    addr, length = g.range(r)
    mode = r.choice((MPOL_DEFAULT, MPOL_BIND, MPOL_BIND, MPOL_PREFERRED))
    return {"addr": addr, "len": length, "mode": mode, "nodemask": 0 if mode == MPOL_DEFAULT else 1}


@fuzz_call("mbind", params=("addr", "len", "mode", "nodemask"), gen=_gen_mbind,
           walks=lambda a: [(a["addr"], a["len"])])
async def _mbind(cx: Ctx, t: Thread, a: Args) -> Any:
    """mbind(2): a policy over the range (splitting and merging VMAs by policy)."""
    return await t.mbind(a["addr"], a["len"], a["mode"], a["nodemask"])


@fuzz_call("mlock", params=("addr", "len"), gen=lambda g, r: gen_range(g, r),
           walks=lambda a: [(a["addr"], a["len"])])
async def _mlock(cx: Ctx, t: Thread, a: Args) -> Any:
    """mlock(2): VM_LOCKED over the range and its pages faulted in."""
    return await t.mlock(a["addr"], a["len"])


@fuzz_call("munlock", params=("addr", "len"), gen=lambda g, r: gen_range(g, r),
           walks=lambda a: [(a["addr"], a["len"])])
async def _munlock(cx: Ctx, t: Thread, a: Args) -> Any:
    """munlock(2)."""
    return await t.munlock(a["addr"], a["len"])


@fuzz_call("truncate", params=("pages",), gen=lambda g, r: {"pages": r.choice((0, 1, 2, 4))},
           atomic=False)
async def _truncate(cx: Ctx, t: Thread, a: Args) -> Any:
    """ftruncate(2) of the setup's file to ``pages`` pages: a mapping's pages
    beyond the new end are unmapped, and a later access there is SIGBUS."""
    return await t.truncate(cx.file(), a["pages"] * PAGE)


@fuzz_call("clear_refs", params=("value",), gen=lambda g, r: {"value": r.choice((1, 4, 5))},
           atomic=False)
async def _clear_refs(cx: Ctx, t: Thread, a: Args) -> Any:
    """A write to /proc/pid/clear_refs (4: soft-dirty, write-protecting PTEs)."""
    return await t.clear_refs(a["value"])


@fuzz_call("uffd_writeprotect", params=("dst", "len", "wp"),
           gen=lambda g, r: {**_gen_uffd_range(g, r), "wp": r.choice((0, 1))},
           atomic=False, needs="uffd")
async def _uffd_writeprotect(cx: Ctx, t: Thread, a: Args) -> Any:
    """UFFDIO_WRITEPROTECT of a range (``wp`` 1 sets, 0 clears and wakes)."""
    u = _uffd(cx, t)
    return "EBADF" if u is None else await u.writeprotect(a["dst"], a["len"], a["wp"])
