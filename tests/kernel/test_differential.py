"""Differential test: the model against the running kernel.

Hypothesis generates sequences of address-space calls confined to a reserved
region; each sequence runs on the real kernel (ctypes, in a forked child) and
on the model, and every return value and every /proc/self/maps line of the
region must be identical after every call.

Layout (the same in the child and in the model)::

    base            base+PAGE                              base+257*PAGE
    | guard (1 pg)  | region: 256 pages, PROT_NONE private  | guard (1 pg) |

The child reserves 258 pages PROT_NONE with a hint (no MAP_FIXED), then maps
one page of PROT_NONE *shared* anonymous memory over each end.  A shared
anonymous mapping is its own shmem file, so it never merges with anything:
the guards keep the VMAs of the region from merging with whatever the child
has next to it, and keep in-place mremap from growing out of the region.  The
model maps the same three VMAs at the same addresses with MAP_FIXED.

Every generated range lies inside the region (1-24 pages); mremap's
destination too.  Stores and loads in the child go through
``process_vm_writev``/``process_vm_readv`` on itself (pervma.host.usermm):
the kernel resolves the address with GUP, which honours the VMA permissions
(no FOLL_FORCE) and faults the page in through handle_mm_fault as a user
access would (so a store prepares the anon_vma, which changes later merges),
but reports a bad access as EFAULT instead of killing the child.  A store or
load compares "ok" against "fault" (SIGSEGV or SIGBUS in the model), and a
load also compares the byte, except after MADV_FREE, whose pages the real
kernel may reclaim at any time.

brk moves the child's real break, so it is compared relative to the initial
break, never goes below it, and glibc's malloc is kept away from it (a large
top pad, trimming off) for the child's short life.

Normalised in the comparison: the inode of shared anonymous mappings
(``/dev/zero (deleted)``) becomes its order of first appearance in the
sequence (the real inode is a global counter), and the line is re-padded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import pickle
import platform
import traceback
from typing import Any, NamedTuple

import pytest
from forkrun import run_in_child
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pervma import (
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_NORMAL,
    MADV_RANDOM,
    MADV_SEQUENTIAL,
    MADV_WILLNEED,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    Config,
    Segfault,
    System,
)
from pervma.host import usermm

# The model follows 7.0.  Linux 6.17 reworked mremap(): a same-size
# MREMAP_FIXED move may span several VMAs and the holes between them (see
# mremap(2)), and the parameter checks (an overlapping destination is EINVAL)
# come before the source VMA is looked up.  Older kernels answer those calls
# differently, so the test needs 6.17 or later (it was run against 6.18).
OLDEST_KERNEL = (6, 17)


def _skip_reason() -> str | None:
    reason = usermm.unavailable()
    if reason is None and usermm.kernel_version() < OLDEST_KERNEL:
        reason = (f"the running kernel {platform.release()} predates {OLDEST_KERNEL[0]}."
                  f"{OLDEST_KERNEL[1]}, whose mremap() the model follows")
    return reason or usermm.probe_vm_rw()


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"differential test: {_REASON}")

REGION_PAGES = 256
MAX_PAGES = 24
HINT = 0x3F0000000000  # a free spot in any x86_64/arm64 47/48-bit layout; only a hint
WINDOW = (REGION_PAGES + 2) * PAGE  # region plus its two guards
# CI runs 200 derandomised examples.  To shake harder:
#   PERVMA_DIFF_EXAMPLES=3000 PERVMA_DIFF_RANDOM=1 [PERVMA_DIFF_HOT=12] pytest -k running_kernel
EXAMPLES = int(os.environ.get("PERVMA_DIFF_EXAMPLES", "200"))
DERANDOMIZE = not os.environ.get("PERVMA_DIFF_RANDOM")
CHILD_TIMEOUT = 60.0

PROTS = (PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_EXEC)
ADVICE = (MADV_DONTNEED, MADV_FREE, MADV_WILLNEED, MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL,
          MADV_DONTFORK, MADV_DOFORK, MADV_DONTDUMP, MADV_DODUMP)


# ---------------------------------------------------------------------------
# Operations: pages are relative to the region's first page
# ---------------------------------------------------------------------------
class Mmap(NamedTuple):
    page: int
    npages: int
    prot: int
    shared: bool
    trim: int = 0  # bytes taken off the length (mmap rounds it up again)
    misalign: int = 0  # bytes added to the address (EINVAL)


class Munmap(NamedTuple):
    page: int
    npages: int
    trim: int = 0
    misalign: int = 0


class Mprotect(NamedTuple):
    page: int
    npages: int
    prot: int
    trim: int = 0
    misalign: int = 0


class MremapInPlace(NamedTuple):
    """mremap without flags: shrink, or grow in place (ENOMEM if it cannot)."""

    page: int
    old_npages: int
    new_npages: int
    misalign: int = 0


class MremapFixed(NamedTuple):
    """mremap(MREMAP_MAYMOVE | MREMAP_FIXED) to another page of the region."""

    page: int
    old_npages: int
    new_npages: int
    new_page: int
    misalign: int = 0


class Madvise(NamedTuple):
    page: int
    npages: int
    advice: int
    trim: int = 0
    misalign: int = 0


class Brk(NamedTuple):
    """brk(initial + pages * PAGE + extra); ``pages is None`` means brk(0)."""

    pages: int | None
    extra: int = 0


class Store(NamedTuple):
    page: int
    offset: int
    value: int


class Load(NamedTuple):
    page: int
    offset: int


Op = Mmap | Munmap | Mprotect | MremapInPlace | MremapFixed | Madvise | Brk | Store | Load


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------
# A misaligned address (EINVAL) now and then; hypothesis favours the ends of a
# range, so the one value that misaligns sits in its middle.
_misalign = st.integers(0, 63).map(lambda x: int(x == 37))
_trim = st.sampled_from([0, 0, 0, 1, PAGE - 1])
_prot = st.sampled_from(PROTS)
# Most ranges start in a hot window at the bottom of the region so that calls
# overlap, split and merge each other's VMAs; the rest anywhere in the region
# (PERVMA_DIFF_HOT narrows or widens it).
HOT_PAGES = int(os.environ.get("PERVMA_DIFF_HOT", "40"))


def _start(n: int) -> st.SearchStrategy[int]:
    return st.integers(0, HOT_PAGES - 1) | st.integers(0, REGION_PAGES - n)


_page_in_region = _start(1)


@st.composite
def _range(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(1, MAX_PAGES))
    return draw(_start(n)), n


@st.composite
def _mremap_fixed(draw: st.DrawFn) -> MremapFixed:
    page, old = draw(_range())
    new = draw(st.integers(1, MAX_PAGES))
    return MremapFixed(page, old, new, draw(_start(new)), draw(_misalign))


@st.composite
def _mremap_in_place(draw: st.DrawFn) -> MremapInPlace:
    page, old = draw(_range())
    new = draw(st.integers(1, min(MAX_PAGES, REGION_PAGES - page)))
    return MremapInPlace(page, old, new, draw(_misalign))


@st.composite
def _mmap(draw: st.DrawFn, prot: st.SearchStrategy[int] = _prot) -> Mmap:
    page, n = draw(_range())
    return Mmap(page, n, draw(prot), draw(st.booleans()), draw(_trim), draw(_misalign))


@st.composite
def _munmap(draw: st.DrawFn) -> Munmap:
    page, n = draw(_range())
    return Munmap(page, n, draw(_trim), draw(_misalign))


@st.composite
def _mprotect(draw: st.DrawFn) -> Mprotect:
    page, n = draw(_range())
    return Mprotect(page, n, draw(_prot), draw(_trim), draw(_misalign))


@st.composite
def _madvise(draw: st.DrawFn) -> Madvise:
    page, n = draw(_range())
    return Madvise(page, n, draw(st.sampled_from(ADVICE)), draw(_trim), draw(_misalign))


# Mapping calls come first so that shrinking prefers them; every kind appears.
operations: st.SearchStrategy[Op] = st.one_of(
    _mmap(),
    _munmap(),
    _mprotect(),
    st.builds(Store, _page_in_region, st.integers(0, PAGE - 1), st.integers(1, 255)),
    _mremap_in_place(),
    _mremap_fixed(),
    _madvise(),
    st.builds(Load, _page_in_region, st.integers(0, PAGE - 1)),
    st.builds(Brk, st.none() | st.integers(0, MAX_PAGES), st.sampled_from([0, 0, 1, PAGE - 1])),
)


@st.composite
def _map_and_touch(draw: st.DrawFn) -> list[Op]:
    """An mmap followed by stores and loads inside it: faulted-in pages give
    VMAs an anon_vma, which decides later merges."""
    m = draw(_mmap(st.sampled_from((PROT_READ | PROT_WRITE, *PROTS))))
    touches = draw(st.lists(st.tuples(st.integers(0, m.npages - 1), st.integers(0, PAGE - 1),
                                      st.integers(0, 255)), max_size=3))
    return [m, *(Store(m.page + i, off, v) if v else Load(m.page + i, off) for i, off, v in touches)]


sequences = st.lists(_map_and_touch() | operations.map(lambda op: [op]), min_size=1,
                     max_size=30).map(lambda chunks: [op for chunk in chunks for op in chunk])


# ---------------------------------------------------------------------------
# One executor for both worlds
# ---------------------------------------------------------------------------
class Backend:
    """The calls an op needs; each returns the syscall's result or -errno."""

    def mmap(self, addr: int, length: int, prot: int, flags: int) -> int: ...
    def munmap(self, addr: int, length: int) -> int: ...
    def mprotect(self, addr: int, length: int, prot: int) -> int: ...
    def mremap(self, addr: int, old: int, new: int, flags: int, new_addr: int) -> int: ...
    def madvise(self, addr: int, length: int, advice: int) -> int: ...
    def brk(self, addr: int) -> int: ...
    def store(self, addr: int, value: int) -> int: ...  # 0 or -EFAULT
    def load(self, addr: int) -> int: ...  # the byte or -EFAULT
    def maps(self, start: int, end: int) -> list[str]: ...


def apply(b: Backend, region: int, brk0: int, op: Op) -> int:
    """Run op on backend b; the region starts at ``region``; a brk result is
    returned relative to ``brk0``."""
    def at(page: int, misalign: int = 0) -> int:
        return region + page * PAGE + misalign

    match op:
        case Mmap(page, n, prot, shared, trim, mis):
            kind = MAP_SHARED if shared else MAP_PRIVATE
            return b.mmap(at(page, mis), n * PAGE - trim, prot, kind | MAP_ANONYMOUS | MAP_FIXED)
        case Munmap(page, n, trim, mis):
            return b.munmap(at(page, mis), n * PAGE - trim)
        case Mprotect(page, n, prot, trim, mis):
            return b.mprotect(at(page, mis), n * PAGE - trim, prot)
        case MremapInPlace(page, old, new, mis):
            return b.mremap(at(page, mis), old * PAGE, new * PAGE, 0, 0)
        case MremapFixed(page, old, new, dest, mis):
            return b.mremap(at(page, mis), old * PAGE, new * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED,
                            at(dest))
        case Madvise(page, n, advice, trim, mis):
            return b.madvise(at(page, mis), n * PAGE - trim, advice)
        case Brk(pages, extra):
            target = 0 if pages is None else brk0 + pages * PAGE + extra
            return b.brk(target) - brk0
        case Store(page, offset, value):
            return b.store(at(page) + offset, value)
        case Load(page, offset):
            return b.load(at(page) + offset)
    raise AssertionError(op)


def run_sequence(b: Backend, base: int, brk0: int, ops: list[Op]) -> list[tuple[int, list[str]]]:
    """(result, maps lines of the window) before the first op and after each."""
    out = [(0, b.maps(base, base + WINDOW))]
    for op in ops:
        ret = apply(b, base + PAGE, brk0, op)
        out.append((ret, b.maps(base, base + WINDOW)))
    return out


# ---------------------------------------------------------------------------
# The real kernel, in a forked child
# ---------------------------------------------------------------------------
class RealKernel(Backend):
    mmap = staticmethod(lambda addr, length, prot, flags: usermm.mmap(addr, length, prot, flags))
    munmap = staticmethod(usermm.munmap)
    mprotect = staticmethod(usermm.mprotect)
    mremap = staticmethod(usermm.mremap)
    madvise = staticmethod(usermm.madvise)
    brk = staticmethod(usermm.brk)
    store = staticmethod(usermm.store_byte)
    load = staticmethod(usermm.load_byte)
    maps = staticmethod(usermm.maps_lines)


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def _park_malloc() -> bool:
    """Keep glibc's malloc off the break for the child's life: disable
    trimming, then grow the heap once by a large top pad so that no later
    allocation needs sbrk().  False if this is not glibc (no brk ops then)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(M_TOP_PAD, 16 << 20)
    libc.free(libc.malloc(16 << 20))
    return True


def _child(ops: list[Op], wfd: int) -> None:
    """Runs in the forked child: reserve the window, run ops, report."""
    try:
        have_brk = _park_malloc()
        base = usermm.mmap(HINT, WINDOW, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS)
        if base < 0:
            raise OSError(-base, "reserving the region")
        for guard in (base, base + WINDOW - PAGE):
            r = usermm.mmap(guard, PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
            if r != guard:
                raise OSError(-r, "mapping a guard page")
        brk0 = usermm.brk(0)
        if not have_brk:
            ops = [op for op in ops if not isinstance(op, Brk)]
        result: Any = ("ok", base, brk0, have_brk, run_sequence(RealKernel(), base, brk0, ops))
    except BaseException:
        result = ("error", traceback.format_exc())
    data = pickle.dumps(result)
    view = memoryview(data)
    while view:
        view = view[os.write(wfd, view):]


def run_real(ops: list[Op]) -> tuple[int, int, bool, list[tuple[int, list[str]]]]:
    return run_in_child(lambda wfd: _child(ops, wfd), CHILD_TIMEOUT)  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------
class Model(Backend):
    def __init__(self, base: int, brk0: int) -> None:
        self.kern = System(Config.preset("universal"))
        self.p = self.kern.spawn("differential")
        p = self.p
        assert p.mmap(base, WINDOW, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED) == base
        for guard in (base, base + WINDOW - PAGE):
            assert p.mmap(guard, PAGE, PROT_NONE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED) == guard
        # The model's break starts page-aligned; give it the child's offset into its page.
        start = p.brk(0)
        self.brk0 = p.brk(start + brk0 % PAGE) if brk0 % PAGE else start

    def _call(self, fn: Any, *args: int) -> int:
        try:
            return int(fn(*args))
        except OSError as e:
            return -e.errno

    def mmap(self, addr: int, length: int, prot: int, flags: int) -> int:
        return self._call(self.p.mmap, addr, length, prot, flags)

    def munmap(self, addr: int, length: int) -> int:
        return self._call(self.p.munmap, addr, length)

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        return self._call(self.p.mprotect, addr, length, prot)

    def mremap(self, addr: int, old: int, new: int, flags: int, new_addr: int) -> int:
        return self._call(self.p.mremap, addr, old, new, flags, new_addr)

    def madvise(self, addr: int, length: int, advice: int) -> int:
        return self._call(self.p.madvise, addr, length, advice)

    def brk(self, addr: int) -> int:
        # brk(0) must stay below the model's start_brk, as it is for the child.
        return self._call(self.p.brk, addr)

    def store(self, addr: int, value: int) -> int:
        try:
            self.p.store(addr, value)
        except Segfault:
            return -errno.EFAULT
        return 0

    def load(self, addr: int) -> int:
        try:
            return self.p.load(addr)
        except Segfault:
            return -errno.EFAULT

    def maps(self, start: int, end: int) -> list[str]:
        out = []
        for line in self.p.maps().splitlines():
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo < end and hi > start:
                out.append(line)
        return out


def run_model(base: int, brk0: int, ops: list[Op]) -> list[tuple[int, list[str]]]:
    m = Model(base, brk0)
    return run_sequence(m, base, m.brk0, ops)


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------
_WIDTH = 25 + 8 * 6 - 1  # show_map_vma's seq_setwidth() on 64-bit


def normalise(steps: list[tuple[int, list[str]]]) -> list[list[str]]:
    """Each shared anonymous mapping's inode becomes its order of first
    appearance; lines are re-padded as the kernel pads them."""
    inodes: dict[str, int] = {}
    out = []
    for _, lines in steps:
        norm = []
        for line in lines:
            fields = line.split(maxsplit=5)
            name = fields[5] if len(fields) > 5 else ""
            if name == "/dev/zero (deleted)":
                fields[4] = f"shm#{inodes.setdefault(fields[4], len(inodes))}"
            text = " ".join(fields[:5]) + " "
            norm.append(text.ljust(_WIDTH) + " " + name if name else text)
        out.append(norm)
    return out


def _show(op: Op | None, ret: int) -> str:
    if isinstance(ret, int) and ret < 0 and -ret in errno.errorcode:
        return f"-{errno.errorcode[-ret]}"
    return hex(ret) if ret > 4096 else str(ret)


def compare(ops: list[Op], base: int, real: list[tuple[int, list[str]]],
            model: list[tuple[int, list[str]]]) -> None:
    rmaps, mmaps = normalise(real), normalise(model)
    freed = False
    for i in range(len(real)):
        op = ops[i - 1] if i else None
        rret, mret = real[i][0], model[i][0]
        if isinstance(op, Madvise) and op.advice == MADV_FREE:
            freed = True
        if isinstance(op, Load) and freed:
            # MADV_FREE'd bytes may be gone in the real kernel: compare ok/fault only.
            rret, mret = min(rret, 0), min(mret, 0)
        if rret != mret or rmaps[i] != mmaps[i]:
            history = "\n".join(f"  {j}: {o!r} -> {_show(o, real[j + 1][0])}"
                                for j, o in enumerate(ops[:i]))
            raise AssertionError(
                f"model diverges from the running kernel at step {i}: {op!r}\n"
                f"region base {base:#x} (region = base + {PAGE:#x})\n"
                f"return: kernel {_show(op, rret)}, model {_show(op, mret)}\n"
                "kernel maps:\n    " + "\n    ".join(rmaps[i]) + "\n"
                "model maps:\n    " + "\n    ".join(mmaps[i]) + "\n"
                f"history:\n{history}")


def check(ops: list[Op]) -> None:
    base, brk0, have_brk, real = run_real(ops)
    if not have_brk:
        ops = [op for op in ops if not isinstance(op, Brk)]
    model = run_model(base, brk0, ops)
    compare(ops, base, real, model)


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------
@settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sequences)
def test_model_matches_running_kernel(ops: list[Op]) -> None:
    check(ops)


@pytest.mark.parametrize("ops", [
    pytest.param([Mmap(0, 4, PROT_READ | PROT_WRITE, False), Store(1, 0, 7), Load(1, 0),
                  Mprotect(0, 2, PROT_READ), Mmap(4, 2, PROT_READ | PROT_WRITE, False)],
                 id="split-and-anon_vma"),
    pytest.param([Mmap(0, 4, PROT_READ | PROT_WRITE, True), Store(3, 5, 9),
                  MremapFixed(2, 2, 2, 10), Load(11, 5), MremapInPlace(10, 2, 4), Store(13, 0, 1)],
                 id="shared-move-and-grow"),
    pytest.param([Mmap(8, 4, PROT_READ | PROT_WRITE, False), Madvise(9, 1, MADV_DONTFORK),
                  Madvise(8, 4, MADV_DOFORK), Munmap(20, 3), Madvise(10, 12, MADV_WILLNEED)],
                 id="madvise-split-merge-hole"),
    pytest.param([Brk(3, 1), Brk(None), Brk(1), Brk(0)], id="brk"),
    pytest.param([Munmap(0, 4), MremapFixed(0, 2, 2, 1), MremapFixed(0, 2, 3, 1)],
                 id="mremap-overlap-before-lookup"),
    pytest.param([Mmap(0, 1, PROT_READ | PROT_WRITE, False), Mmap(1, 1, PROT_READ, False),
                  Munmap(2, 1), Mmap(3, 1, PROT_READ, True), MremapFixed(0, 4, 4, 10)],
                 id="mremap-move-several-vmas"),
    pytest.param([Munmap(1, 1), MremapInPlace(0, 3, 1), MremapInPlace(0, 1, 1)],
                 id="mremap-shrink-across-hole"),
    pytest.param([Mmap(0, 1, PROT_NONE, False), Mmap(1, 1, PROT_READ, False),
                  Mprotect(0, 2, PROT_READ)], id="mprotect-merge-with-next"),
])
def test_known_sequences(ops: list[Op]) -> None:
    check(ops)
