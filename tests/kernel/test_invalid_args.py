"""Differential test of invalid and edge arguments: the model against the
running kernel, one call at a time.

Each case is one system call whose arguments are wrong, odd or at an edge
(unaligned, zero or huge lengths, ranges that wrap the address space, negative
Python ints as a C program would pass them, unknown prot bits, flags, advice
and mremap flag combinations, MAP_FIXED at odd addresses, the last page of
the address space).  Before each case both worlds lay out the same small
address space inside a reserved region; after it, three things must be
identical: the return value (errno), the /proc/self/maps lines of the region,
and one byte of every page of it (or EFAULT).

Layout (the same in the child and in the model, reset before every case)::

    window = guard page | region: 64 pages | guard page
    region pages  0-7   PROT_READ|PROT_WRITE private, a byte stored in each
                 10-11  PROT_READ|PROT_WRITE shared anonymous, bytes stored
                 14-15  PROT_READ private
                 20-23  PROT_READ|PROT_WRITE private, untouched
                 26-27  PROT_READ|PROT_WRITE private, MAP_LOCKED (populated)
                 34-35  PROT_READ|PROT_WRITE private, MAP_GROWSDOWN
                 the rest PROT_NONE private (the reservation)

No byte is read back from pages 30-35: below a VM_GROWSDOWN VMA a user load
grows the stack (the model's does), but process_vm_readv, which reads for the
child, never does.

The real calls run in a forked child (pervma.host.usermm), which first makes
itself an ordinary process: RLIMIT_MEMLOCK 8 MiB, and, if it runs as root, it
drops to nobody, so that capabilities (CAP_SYS_RAWIO for mmap_min_addr,
CAP_IPC_LOCK, CAP_SYS_ADMIN for memory-failure advice) do not apply, as they
do not to the model's tasks.  The model's System gets the machine's RAM and
swap (/proc/meminfo) and its overcommit mode, so overcommit refuses the same
mappings.

Safety: a case runs on the real kernel against the test's own address space,
so the generator only emits calls that either fail a check the kernel makes
before touching anything (wrapping ranges, lengths above TASK_SIZE, bad flags,
...) or whose effect, if they succeed, stays inside the window.  Calls that
would succeed somewhere else (a non-MAP_FIXED mapping, an mremap move without
a fixed destination) are generated only in forms that must fail.

Anonymous MAP_HUGETLB is compared only where the machine has no huge pages,
as the model's has none (every such mapping fails).  Not covered: advice and
flags Linux accepts that the model does not implement (MADV_COLLAPSE,
MADV_GUARD_*, MADV_REMOVE on shmem, MAP_HUGETLB | MAP_NORESERVE, a valid
MAP_DROPPABLE): the model raises NotModelled for those
(tests/kernel/test_syscall_checks.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import pickle
import random
import resource
import traceback
from typing import Any, NamedTuple

import pytest
from forkrun import run_in_child
from test_differential import _REASON, HINT, _park_malloc  # same host requirements
from test_differential import Model as _DiffModel

from pervma import PAGE, Config, System
from pervma.host import usermm
from pervma.kernel.mm_types import TASK_SIZE
from pervma.kernel.mmap import RLIMIT_MEMLOCK as MEMLOCK  # the model's, 8 MiB
from pervma.kernel.util import OVERCOMMIT_NEVER


def _skip_reason() -> str | None:
    if _REASON is not None:
        return _REASON
    if usermm.vm_sysctl("overcommit_memory") == OVERCOMMIT_NEVER:
        return ("vm.overcommit_memory is 2: strict overcommit depends on every commitment on the "
                "machine, which the model cannot know")
    hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    if os.geteuid() != 0 and hard != resource.RLIM_INFINITY and hard < MEMLOCK:
        return f"the RLIMIT_MEMLOCK hard limit ({hard} bytes) is below the model's {MEMLOCK}"
    return None


_REASON_HERE = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON_HERE is not None, reason=f"invalid-argument differential: {_REASON_HERE}")

PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC, PROT_SEM = 0, 1, 2, 4, 8
RW = PROT_READ | PROT_WRITE
MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE = 0x01, 0x02, 0x03
MAP_FIXED, MAP_ANONYMOUS, MAP_GROWSDOWN, MAP_LOCKED = 0x10, 0x20, 0x100, 0x2000
MAP_NORESERVE, MAP_POPULATE, MAP_STACK, MAP_FIXED_NOREPLACE = 0x4000, 0x8000, 0x20000, 0x100000
MAP_DROPPABLE, MAP_HUGETLB, MAP_HUGE_SHIFT = 0x08, 0x40000, 26
HUGE_SIZES = [0, 21 << MAP_HUGE_SHIFT, 30 << MAP_HUGE_SHIFT, 22 << MAP_HUGE_SHIFT, 63 << MAP_HUGE_SHIFT]
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4
MADV_FREE = 8
MADV_REMOVE = 9
ULONG = (1 << 64) - 1

REGION_PAGES = 64
WINDOW = (REGION_PAGES + 2) * PAGE
# CI runs 1200 derandomised cases (about 2 s).  To shake harder:
#   PERVMA_INVALID_CASES=20000 PERVMA_INVALID_SEED=7 pytest tests/kernel/test_invalid_args.py
CASES = int(os.environ.get("PERVMA_INVALID_CASES", "1200"))
CHUNK = 100
SEED = int(os.environ.get("PERVMA_INVALID_SEED", "20251202"))
CHILD_TIMEOUT = 60.0
# Where each case reads a byte back (page, offset).
PROBES = [(p, (p * 37) % PAGE) for p in (*range(0, 30), 40, 63)]
SETUP_STORES = [(p, (p * 37) % PAGE, 0x41 + p) for p in range(8)] + [(10, 370, 0x5A), (11, 407, 0x5B)]


class Rel(NamedTuple):
    """An address inside the region: page number and byte offset."""

    page: int
    off: int = 0


Arg = int | Rel


class Case(NamedTuple):
    call: str  # mmap munmap mprotect madvise mremap brk
    args: tuple[Arg, ...]

    def __repr__(self) -> str:
        shown = ", ".join(f"region+{a.page}*PAGE+{a.off}" if isinstance(a, Rel) else
                          (hex(a) if abs(a) > 4096 else str(a)) for a in self.args)
        return f"{self.call}({shown})"


# ---------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------
A_IN = [Rel(0), Rel(3), Rel(7), Rel(10), Rel(14), Rel(20), Rel(26), Rel(30), Rel(34)]
A_ODD = [Rel(0, 1), Rel(3, PAGE - 1), Rel(10, 2048), Rel(20, 7)]
A_BAD = [0, TASK_SIZE, TASK_SIZE + PAGE, 1 << 63, (1 << 64) - PAGE, -PAGE, -1, (1 << 64) - 1]
L_SMALL = [0, 1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE, 5 * PAGE - 1]
# Lengths that wrap the address space from any region address.
L_WRAP = [(1 << 64) - 1, (1 << 64) - PAGE, -PAGE, -1, -2 * PAGE, (1 << 64) - 2 * PAGE + 1]
# Above TASK_SIZE, so refused before anything happens where the call checks it.
L_OVER = [TASK_SIZE, 1 << 47, 1 << 63]
PROTS = [PROT_NONE, PROT_READ, RW, PROT_READ | PROT_EXEC, PROT_SEM, 0x10, -1, 0x01000000 | PROT_READ,
         0x02000000 | PROT_READ, 0x03000000, (1 << 32) | PROT_READ, 0x80000000]
ADVICE_OK = [0, 1, 2, 3, 4, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]
ADVICE_BAD = [5, 6, 7, 26, 27, 99, 104, 200, -1, (1 << 32) | 4, -(1 << 31)]
MAP_EXTRA = [0, MAP_NORESERVE, MAP_POPULATE, MAP_GROWSDOWN, MAP_LOCKED, MAP_STACK, MAP_FIXED_NOREPLACE,
             0x200, 0x400000, 0x80000000, 0x40, 0x80000]
MAP_TYPES = [MAP_PRIVATE, MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE, 0, 4, 0xF]
MREMAP_FLAGS = [0, MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_FIXED | MREMAP_MAYMOVE, MREMAP_DONTUNMAP,
                MREMAP_DONTUNMAP | MREMAP_MAYMOVE, MREMAP_DONTUNMAP | MREMAP_FIXED | MREMAP_MAYMOVE, 8, 0x10,
                -1, (1 << 32) | MREMAP_MAYMOVE]
RW_PRIVATE_PAGES = {0, 3, 20, 26, 34}  # region pages in an accounted (private writable) VMA


def _no_huge_pages() -> bool:
    """The model's machine has no huge pages; anonymous MAP_HUGETLB is
    compared only where the running one has none either."""
    try:
        with open("/proc/meminfo") as f:
            return not any(line.startswith("HugePages_Total:") and int(line.split()[1]) for line in f)
    except OSError:
        return False


NO_HUGE_PAGES = _no_huge_pages()


def _align(x: int) -> int:
    return (x + PAGE - 1) & ~(PAGE - 1) & ULONG


def _mremap_safe(addr: Arg, old_len: int, new_len: int, flags: int, new_addr: Arg) -> bool:
    """Could this mremap succeed somewhere outside the window?  Then it is not
    emitted.  Mirrors check_mremap_params() and the move decisions."""
    flags &= 0xFFFFFFFF
    flags = flags - (1 << 32) if flags >> 31 else flags
    flags &= ULONG
    old, new = _align(old_len & ULONG), _align(new_len & ULONG)
    if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
        return True
    if isinstance(addr, Rel) and addr.off:
        return True
    if not new or new > TASK_SIZE:
        return True
    implies_new = flags & (MREMAP_FIXED | MREMAP_DONTUNMAP)
    if implies_new:
        if isinstance(new_addr, Rel):
            if new_addr.off:
                return True
        else:
            na = new_addr & ULONG
            if na > TASK_SIZE - new or na & (PAGE - 1):
                return True
        if not flags & MREMAP_MAYMOVE:
            return True
        if flags & MREMAP_DONTUNMAP and old != new:
            return True
        if not flags & MREMAP_FIXED:
            return False  # DONTUNMAP with a hint: moves who knows where
        return new <= 4 * PAGE  # a fixed destination in the window, or at 0 (EPERM)
    if not isinstance(addr, Rel):
        return True  # no VMA there: -EFAULT
    if new <= old:
        return old <= 8 * PAGE or old > TASK_SIZE  # shrink in the window, or a munmap that fails
    if not flags & MREMAP_MAYMOVE:
        return True  # the region is full: growing in place fails
    return addr.page in RW_PRIVATE_PAGES and new >= 1 << 40  # the charge is refused


def generate_cases(n: int = CASES, seed: int = SEED) -> list[Case]:
    """n derandomised cases, every kind of call represented."""
    rng = random.Random(seed)
    pick = rng.choice

    def length_at(addr: Arg, lengths: list[int]) -> int:
        # From address 0 a "wrapping" or huge length covers the whole address
        # space without wrapping: a valid call that would wreck the child.
        return pick(L_SMALL) if addr == 0 else pick(lengths)

    def munmap() -> Case:
        addr = pick(A_IN + A_ODD + A_BAD)
        return Case("munmap", (addr, length_at(addr, L_SMALL + L_WRAP + L_OVER)))

    def mprotect() -> Case:
        addr = pick(A_IN + A_ODD + A_BAD)
        return Case("mprotect", (addr, length_at(addr, L_SMALL + L_WRAP), pick(PROTS)))

    def madvise() -> Case:
        advice = pick(ADVICE_OK + ADVICE_BAD)
        addr = pick(A_IN + A_ODD + A_BAD)
        if advice == MADV_REMOVE and addr == Rel(10):
            addr = Rel(0)  # punching a hole in shmem is not modelled
        return Case("madvise", (addr, length_at(addr, L_SMALL + L_WRAP), advice))

    def mmap_fixed() -> Case:
        addr = pick(A_IN + A_ODD + [0, (1 << 64) - 1, (1 << 64) - 12, (1 << 64) - PAGE + 1, -PAGE,
                                    TASK_SIZE, 1 << 63])
        length = length_at(addr, L_SMALL + L_OVER + [(1 << 64) - 1, -PAGE])
        flags = MAP_FIXED | MAP_ANONYMOUS | pick(MAP_TYPES) | pick(MAP_EXTRA)
        if rng.randrange(8) == 0:
            # MAP_DROPPABLE only where it is refused; MAP_HUGETLB at an address
            # that is never huge-page aligned (the window is 2 MiB aligned and
            # the region starts a page into it).
            if rng.randrange(2):
                flags = MAP_FIXED | MAP_ANONYMOUS | MAP_DROPPABLE | pick([MAP_LOCKED, MAP_GROWSDOWN])
            else:
                flags = MAP_FIXED | MAP_ANONYMOUS | pick([MAP_PRIVATE, MAP_SHARED]) | MAP_HUGETLB | pick(HUGE_SIZES)
                addr = pick(A_IN + A_ODD)
        return Case("mmap", (addr, length, pick(PROTS), flags, pick([0, 0, 0, 1, PAGE, 1 << 63, -PAGE])))

    def mmap_anywhere() -> Case:
        """Without MAP_FIXED: only in forms that must fail."""
        addr = pick([0, Rel(30), 1 << 63, -1])
        kind = rng.randrange(9 if NO_HUGE_PAGES else 8)
        anon = MAP_ANONYMOUS
        prot, typ, length, offset, extra = pick(PROTS), MAP_PRIVATE, pick(L_SMALL[1:]), 0, 0
        if kind == 0:
            length = 0
        elif kind == 1:
            length = pick([(1 << 64) - 1, -PAGE, 1 << 63, TASK_SIZE + 1])
        elif kind == 2:
            length, prot = pick([1 << 40, 1 << 46]), RW  # overcommit (accountable)
        elif kind == 3:
            length, typ = pick([1 << 40, 1 << 45]), MAP_SHARED  # shmem_acct_size()
        elif kind == 4:
            typ = pick([0, MAP_SHARED_VALIDATE, 0xF, 4])
        elif kind == 5:
            anon = 0  # fd -1: EBADF
            typ = pick([MAP_PRIVATE, MAP_SHARED, 0])
        elif kind == 6:
            offset = pick([1, PAGE - 1, -1])
        elif kind == 7:
            typ, extra = pick([(MAP_SHARED, MAP_GROWSDOWN), (MAP_PRIVATE, MAP_LOCKED)])
            prot = RW
            if extra == MAP_LOCKED:
                length = 16 << 20  # beyond RLIMIT_MEMLOCK: EAGAIN
        else:  # no huge page to reserve (-ENOMEM), or no such huge page size (-EINVAL)
            typ = pick([MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE, 0])
            extra = MAP_HUGETLB | pick(HUGE_SIZES)
            length = pick([1, 2 << 20, 1 << 30, 0, (1 << 64) - 1])
        return Case("mmap", (addr, length, prot, typ | anon | extra, offset))

    def mremap() -> Case:
        while True:
            addr = pick([Rel(0), Rel(3), Rel(10), Rel(14), Rel(20), Rel(26), Rel(30), Rel(34)] + A_ODD
                        + [0, (1 << 64) - PAGE, TASK_SIZE])
            old_len = pick([0, PAGE, 2 * PAGE, 3 * PAGE - 1, 4 * PAGE, (1 << 64) - 1, -PAGE])
            new_len = pick([0, 1, PAGE, 2 * PAGE, 4 * PAGE, TASK_SIZE + PAGE, (1 << 64) - 1, -PAGE, 1 << 40])
            flags = pick(MREMAP_FLAGS)
            new_addr = pick([0, Rel(40), Rel(40, 5), Rel(1), (1 << 64) - PAGE, TASK_SIZE, -PAGE])
            if _mremap_safe(addr, old_len, new_len, flags, new_addr):
                return Case("mremap", (addr, old_len, new_len, flags, new_addr))

    def brk() -> Case:
        return Case("brk", (pick([0, 1, -1, -PAGE, 1 << 63, TASK_SIZE, (1 << 64) - 1, (1 << 47) + 5, PAGE]),))

    kinds = [munmap, mprotect, madvise, madvise, mmap_fixed, mmap_fixed, mmap_anywhere, mremap, mremap, brk]
    return [kinds[i % len(kinds)]() if i < len(kinds) else pick(kinds)() for i in range(n)]


# ---------------------------------------------------------------------------
# Running a case
# ---------------------------------------------------------------------------
class Outcome(NamedTuple):
    ret: int
    maps: list[str]
    probes: list[int]


class World:
    """The calls a case needs; each returns the result or -errno."""

    def call(self, name: str, args: tuple[int, ...]) -> int: ...
    def store(self, addr: int, value: int) -> int: ...
    def load(self, addr: int) -> int: ...
    def maps(self, start: int, end: int) -> list[str]: ...


def run_case(w: World, base: int, brk0: int, case: Case) -> Outcome:
    region = base + PAGE

    def at(page: int, off: int = 0) -> int:
        return region + page * PAGE + off

    fixed = MAP_FIXED | MAP_ANONYMOUS
    for page, n, prot, typ in ((0, REGION_PAGES, PROT_NONE, MAP_PRIVATE), (0, 8, RW, MAP_PRIVATE),
                               (10, 2, RW, MAP_SHARED), (14, 2, PROT_READ, MAP_PRIVATE),
                               (20, 4, RW, MAP_PRIVATE), (26, 2, RW, MAP_PRIVATE | MAP_LOCKED),
                               (34, 2, RW, MAP_PRIVATE | MAP_GROWSDOWN)):
        r = w.call("mmap", (at(page), n * PAGE, prot, typ | fixed, 0))
        assert r == at(page), f"setting up the region: mmap returned {r}"
    for page, off, value in SETUP_STORES:
        assert w.store(at(page, off), value) == 0
    args = tuple(at(a.page, a.off) if isinstance(a, Rel) else a for a in case.args)
    ret = w.call(case.call, args)
    if case.call == "brk":
        ret -= brk0
    probes = [w.load(at(page, off)) for page, off in PROBES]
    return Outcome(ret, w.maps(base, base + WINDOW), probes)


class RealKernel(World):
    def call(self, name: str, args: tuple[int, ...]) -> int:
        if name == "mmap":
            addr, length, prot, flags, offset = args
            return usermm.mmap(addr, length, prot, flags, -1, offset)
        return int(getattr(usermm, name)(*args))

    store = staticmethod(usermm.store_byte)  # type: ignore[assignment]
    load = staticmethod(usermm.load_byte)  # type: ignore[assignment]
    maps = staticmethod(usermm.maps_lines)  # type: ignore[assignment]


PR_SET_DUMPABLE = 4
NOBODY = 65534


def _become_ordinary() -> None:
    """RLIMIT_MEMLOCK at the kernel's default, and no capabilities."""
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (MEMLOCK, MEMLOCK))
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # changing uid made /proc/self root's


def _child(cases: list[Case], wfd: int) -> None:
    try:
        _park_malloc()
        _become_ordinary()
        base = usermm.mmap(HINT, WINDOW, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS)
        if base < 0:
            raise OSError(-base, "reserving the window")
        if base % (2 << 20):  # the hint was not honoured: MAP_HUGETLB cases would not be safe
            raise OSError(errno.EADDRINUSE, f"the window landed at {base:#x}, not at {HINT:#x}")
        for guard in (base, base + WINDOW - PAGE):
            r = usermm.mmap(guard, PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
            if r != guard:
                raise OSError(-r, "mapping a guard page")
        brk0 = usermm.brk(0)
        w = RealKernel()
        result: Any = ("ok", base, brk0, [run_case(w, base, brk0, c) for c in cases])
    except BaseException:
        result = ("error", traceback.format_exc())
    data = memoryview(pickle.dumps(result))
    while data:
        data = data[os.write(wfd, data):]


def run_real(cases: list[Case]) -> tuple[int, int, list[Outcome]]:
    return run_in_child(lambda wfd: _child(cases, wfd), CHILD_TIMEOUT)  # type: ignore[return-value]


class Model(World):
    def __init__(self, base: int, brk0: int) -> None:
        ram, swap = usermm.memory_pages()
        self.kern = System(Config.preset("universal"), mem_pages=ram, swap_pages=swap,
                           overcommit_memory=usermm.vm_sysctl("overcommit_memory"),
                           overcommit_ratio=usermm.vm_sysctl("overcommit_ratio"))
        p = self.p = self.kern.spawn("invalid-args")
        assert p.mmap(base, WINDOW, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED) == base
        for guard in (base, base + WINDOW - PAGE):
            assert p.mmap(guard, PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED) == guard
        start = p.brk(0)
        self.brk0 = p.brk(start + brk0 % PAGE) if brk0 % PAGE else start

    def call(self, name: str, args: tuple[int, ...]) -> int:
        try:
            if name == "mmap":
                addr, length, prot, flags, offset = args
                return self.p.mmap(addr, length, prot, flags, None, offset)
            return int(getattr(self.p, name)(*args))
        except OSError as e:
            return -e.errno

    # the same accessors as the syscall-sequence differential's model side
    store = _DiffModel.store
    load = _DiffModel.load
    maps = _DiffModel.maps


def _normalise(lines: list[str]) -> list[str]:
    """The shared anonymous mapping's inode is a global counter: drop it."""
    out = []
    for line in lines:
        f = line.split(maxsplit=5)
        name = f[5] if len(f) > 5 else ""
        if name == "/dev/zero (deleted)":
            f[4] = "shm"
        out.append(" ".join(f[:5]) + (" " + name if name else ""))
    return out


def _show(x: int) -> str:
    if x < 0 and -x in errno.errorcode:
        return "-" + errno.errorcode[-x]
    return hex(x) if abs(x) > 4096 else str(x)


def _differences(case: Case, real: Outcome, model: Outcome) -> list[str]:
    out = []
    if real.ret != model.ret:
        out.append(f"return: kernel {_show(real.ret)}, model {_show(model.ret)}")
    rmaps, mmaps = _normalise(real.maps), _normalise(model.maps)
    if rmaps != mmaps:
        out.append("maps:\n      kernel " + "\n             ".join(rmaps)
                   + "\n      model  " + "\n             ".join(mmaps))
    rp, mp = real.probes, model.probes
    if case.call == "madvise" and case.args[2] == MADV_FREE:
        rp, mp = [min(x, 0) for x in rp], [min(x, 0) for x in mp]  # lazily freed bytes may go
    if rp != mp:
        diff = [f"page {PROBES[i][0]}: kernel {_show(r)}, model {_show(m)}"
                for i, (r, m) in enumerate(zip(rp, mp, strict=True)) if r != m]
        out.append("bytes: " + "; ".join(diff))
    return out


def check_cases(cases: list[Case]) -> None:
    base, brk0, real = run_real(cases)
    model = Model(base, brk0)
    failures = []
    for case, r in zip(cases, real, strict=True):
        try:
            m = run_case(model, base, model.brk0, case)
        except Exception as e:  # a traceback is itself a failure to report
            failures.append(f"{case!r}: the model raised {type(e).__name__}: {e}")
            model = Model(base, brk0)
            continue
        diff = _differences(case, r, m)
        if diff:
            failures.append(f"{case!r}\n    " + "\n    ".join(diff))
    assert not failures, (f"{len(failures)} of {len(cases)} cases differ from the running kernel "
                          f"(region at {base + PAGE:#x}):\n" + "\n".join(failures))


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------
ALL_CASES = generate_cases()


def test_cases_cover_every_call_and_are_enough() -> None:
    kinds = {c.call for c in ALL_CASES}
    assert kinds == {"mmap", "munmap", "mprotect", "madvise", "mremap", "brk"}
    assert len(ALL_CASES) >= 300
    assert generate_cases() == ALL_CASES  # derandomised: the same cases every run


@pytest.mark.parametrize("chunk", range(0, CASES, CHUNK), ids=lambda c: f"cases{c}-{c + CHUNK - 1}")
def test_invalid_arguments_match_running_kernel(chunk: int) -> None:
    check_cases(ALL_CASES[chunk:chunk + CHUNK])


@pytest.mark.parametrize("case", [
    pytest.param(Case("madvise", (Rel(0), (1 << 64) - PAGE, 4)), id="madvise-wrap-zaps-nothing"),
    pytest.param(Case("mmap", ((1 << 64) - 1, 1, 8, 0x32, 0)), id="mmap-fixed-error-value-address"),
    pytest.param(Case("mmap", (0, 1 << 46, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, 0)),
                 id="mmap-huge-populate"),
    pytest.param(Case("munmap", (Rel(3), -PAGE)), id="munmap-negative-length"),
    pytest.param(Case("mprotect", (Rel(0), 2 * PAGE, (1 << 32) | PROT_READ)), id="mprotect-int-truncation"),
    pytest.param(Case("madvise", (Rel(0), 2 * PAGE, (1 << 32) | 4)), id="madvise-int-truncation"),
    pytest.param(Case("mremap", (Rel(0), 2 * PAGE, 2 * PAGE, MREMAP_FIXED | MREMAP_MAYMOVE, 0)),
                 id="mremap-fixed-to-zero"),
    # new_len == TASK_SIZE passes check_mremap_params() (only above it is
    # EINVAL) and fails the growth in place: ENOMEM
    pytest.param(Case("mremap", (Rel(0), PAGE, TASK_SIZE, 0, 0)), id="mremap-to-task-size"),
    pytest.param(Case("mmap", (Rel(0), PAGE, RW, MAP_FIXED | MAP_ANONYMOUS | MAP_SHARED_VALIDATE, 0)),
                 id="mmap-anon-shared-validate"),
])
def test_known_invalid_calls(case: Case) -> None:
    check_cases([case])
