"""The model's syscalls check like the kernel (issue #11 item 3): argument
reduction at the syscall entry, the kernel's errno and no state change on a
refused call, overcommit accounting with exact page counts, bounded populate."""

from __future__ import annotations

import errno

import pytest

from pervma import (
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_MAYMOVE,
    PAGE,
    PROT_READ,
    PROT_WRITE,
    Config,
    Segfault,
    System,
)
from pervma.errors import PervmaError, UsageError
from pervma.kernel.mm_types import VmFlags
from pervma.kernel.syscalls import NotModelled, c_int, c_int_as_ulong, c_ulong
from pervma.kernel.util import OVERCOMMIT_ALWAYS, OVERCOMMIT_NEVER
from pervma.sched import run_direct

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
STACK_PAGES = 33  # the fresh process's 132 KiB stack, VM_ACCOUNT
A = 0x10000000


def errno_of(fn, *args) -> int:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except OSError as e:
        return e.errno
    return 0


def accounted(kern: System) -> int:
    return sum(v.pages() for p in kern.processes if not p.mm.freed
               for v in p.mm.mm_mt.snapshot() if v.vm_flags & VmFlags.VM_ACCOUNT)


# ---------------------------------------------------------------------------
# The C types
# ---------------------------------------------------------------------------
def test_c_argument_types_reduce_as_a_c_caller_passes_them() -> None:
    assert c_ulong(-4096) == 2**64 - 4096
    assert c_ulong(2**64 + 5) == 5
    assert c_int(2**32 + 4) == 4
    assert c_int(0x80000000) == -(2**31)
    assert c_int(-1) == -1
    assert c_int_as_ulong(-1) == 2**64 - 1  # an int prot of -1 arrives sign-extended
    assert c_int_as_ulong(0x80000000) == 0xFFFFFFFF80000000
    assert c_int_as_ulong(2**32 | 1) == 1


# ---------------------------------------------------------------------------
# The calls
# ---------------------------------------------------------------------------
def test_madvise_wrapping_range_is_einval_and_zaps_nothing() -> None:
    p = System().spawn()
    a = p.mmap(A, 2 * PAGE, RW, ANON | MAP_FIXED)
    p.store(a, 42)
    assert errno_of(p.madvise, a, 2**64 - PAGE, MADV_DONTNEED) == errno.EINVAL
    assert p.load(a) == 42


def test_huge_populate_is_refused_at_once_by_overcommit() -> None:
    kern = System()
    p = kern.spawn()
    before = p.maps()
    assert errno_of(p.mmap, 0, 1 << 46, RW, ANON | MAP_POPULATE) == errno.ENOMEM
    assert p.maps() == before and kern.vm_committed_as == STACK_PAGES


def test_mmap_fixed_at_an_error_value_address_returns_that_error() -> None:
    p = System().spawn()
    before = p.maps()
    assert errno_of(p.mmap, 2**64 - 1, 1, 8, 0x32) == errno.EPERM
    assert errno_of(p.mmap, 2**64 - 12, 1, 8, 0x32) == errno.ENOMEM
    assert p.maps() == before


@pytest.mark.parametrize("call,args,err", [
    ("munmap", (A, -PAGE), errno.EINVAL),
    ("munmap", (-PAGE, PAGE), errno.EINVAL),
    ("mprotect", (A, -PAGE, PROT_READ), errno.ENOMEM),  # the range wraps
    ("mprotect", (A, PAGE, -1), errno.EINVAL),  # PROT_GROWSDOWN | PROT_GROWSUP
    ("mprotect", (A, PAGE, 0x02000000 | PROT_READ), errno.EINVAL),  # no VM_GROWSUP on x86
    ("madvise", (A, -1, MADV_DONTNEED), errno.EINVAL),  # rounds up to 0
    ("madvise", (A, PAGE, -(2**31)), errno.EINVAL),
    ("mremap", (A, PAGE, -PAGE, MREMAP_MAYMOVE), errno.EINVAL),
    ("mremap", (A, PAGE, 2 * PAGE, -1), errno.EINVAL),
    ("mmap", (A, PAGE, RW, MAP_FIXED | MAP_ANONYMOUS | 0x03), errno.EINVAL),  # anon MAP_SHARED_VALIDATE
    ("mmap", (0, PAGE, RW, MAP_PRIVATE), errno.EBADF),
    ("mmap", (A, 0, RW, ANON | MAP_FIXED), errno.EINVAL),
    ("mmap", (A, -PAGE, RW, ANON | MAP_FIXED), errno.ENOMEM),
    ("mmap", (0, PAGE, RW, MAP_FIXED | MAP_ANONYMOUS | MAP_PRIVATE), errno.EPERM),  # mmap_min_addr
    ("mmap", (A + 1, PAGE, RW, ANON | MAP_FIXED), errno.EINVAL),
])
def test_refused_calls_get_the_kernel_errno_and_change_nothing(call: str, args: tuple[int, ...],
                                                                err: int) -> None:
    kern = System()
    p = kern.spawn()
    a = p.mmap(A, 2 * PAGE, RW, ANON | MAP_FIXED)
    p.store(a, 7)
    p.store(a + PAGE, 9)
    before, committed = p.maps(), kern.vm_committed_as
    assert errno_of(getattr(p, call), *args) == err
    assert p.maps() == before and kern.vm_committed_as == committed
    assert (p.load(a), p.load(a + PAGE)) == (7, 9)


def test_int_arguments_are_truncated_to_32_bits() -> None:
    p = System().spawn()
    a = p.mmap(A, 2 * PAGE, RW, ANON | MAP_FIXED)
    p.store(a, 5)
    p.madvise(a, PAGE, (1 << 32) | MADV_DONTNEED)  # an int: MADV_DONTNEED
    assert p.load(a) == 0
    p.mprotect(a, PAGE, (1 << 32) | PROT_READ)  # PROT_READ
    with pytest.raises(Segfault):
        p.store(a, 1)


def test_negative_addresses_fault_as_kernel_addresses() -> None:
    p = System().spawn()
    with pytest.raises(Segfault) as e:
        p.store(-PAGE, 1)
    assert e.value.addr == 2**64 - PAGE and e.value.code == 1


def test_thread_api_reduces_the_same_way() -> None:
    kern = System()
    p = kern.spawn()
    a = p.mmap(A, PAGE, RW, ANON | MAP_FIXED)
    p.store(a, 3)
    t = p.thread()

    async def body(th):  # type: ignore[no-untyped-def]
        out = []
        for call in (th.madvise(a, 2**64 - PAGE, MADV_DONTNEED), th.munmap(a, -PAGE),
                     th.mprotect(a, PAGE, -1)):
            try:
                out.append(await call)
            except OSError as e:
                out.append(-e.errno)
        return out

    assert run_direct(t.start(body), model=t.task) == [-errno.EINVAL, -errno.EINVAL, -errno.EINVAL]
    assert p.load(a) == 3


def test_valid_but_unmodelled_advice_raises_not_modelled_after_the_checks() -> None:
    p = System().spawn()
    a = p.mmap(A, PAGE, RW, ANON | MAP_FIXED)
    assert errno_of(p.madvise, a + 1, PAGE, 25) == errno.EINVAL  # checked first
    with pytest.raises(NotModelled, match="advice 25 is valid on Linux but not modelled"):
        p.madvise(a, PAGE, 25)  # MADV_COLLAPSE
    assert issubclass(NotModelled, PervmaError)


# ---------------------------------------------------------------------------
# Overcommit: OVERCOMMIT_GUESS
# ---------------------------------------------------------------------------
def test_guess_refuses_only_a_single_request_beyond_ram_plus_swap() -> None:
    kern = System(mem_pages=1000, swap_pages=24)
    p = kern.spawn()
    assert errno_of(p.mmap, 0, 1025 * PAGE, RW, ANON) == errno.ENOMEM
    assert p.mmap(A, 1024 * PAGE, RW, ANON | MAP_FIXED) == A
    assert p.mmap(0, 1024 * PAGE, RW, ANON) > 0  # a second one too: GUESS keeps no total
    assert kern.vm_committed_as == STACK_PAGES + 2048
    # Not accountable: read-only, MAP_NORESERVE; shared anonymous is checked by shmem.
    assert p.mmap(0, 1025 * PAGE, PROT_READ, ANON) > 0
    assert p.mmap(0, 1025 * PAGE, RW, ANON | MAP_NORESERVE) > 0
    assert errno_of(p.mmap, 0, 1025 * PAGE, RW, MAP_SHARED | MAP_ANONYMOUS) == errno.ENOMEM
    assert kern.vm_committed_as == STACK_PAGES + 2048


def test_refused_mprotect_mremap_and_brk_change_nothing() -> None:
    kern = System(mem_pages=1000)
    p = kern.spawn()
    a = p.mmap(A, 1001 * PAGE, PROT_READ, ANON | MAP_FIXED)
    b = p.mmap(A + 2000 * PAGE, 600 * PAGE, RW, ANON | MAP_FIXED)
    before, committed = p.maps(), kern.vm_committed_as
    assert errno_of(p.mprotect, a, 1001 * PAGE, RW) == errno.ENOMEM
    assert errno_of(p.mremap, b, 600 * PAGE, 1601 * PAGE, MREMAP_MAYMOVE) == errno.ENOMEM
    brk0 = p.brk(0)
    assert p.brk(brk0 + 1001 * PAGE) == brk0
    assert p.maps() == before and kern.vm_committed_as == committed == STACK_PAGES + 600


def test_map_fixed_over_an_accounted_mapping_charges_only_the_difference() -> None:
    kern = System(mem_pages=1000)
    p = kern.spawn()
    p.mmap(A, 600 * PAGE, RW, ANON | MAP_FIXED)
    # 900 new pages, 600 of them already charged: the request is 300 pages.
    assert p.mmap(A, 900 * PAGE, RW, ANON | MAP_FIXED) == A
    assert kern.vm_committed_as == STACK_PAGES + 900


def test_charges_follow_every_syscall_exactly() -> None:
    kern = System()
    p = kern.spawn()
    assert kern.vm_committed_as == STACK_PAGES
    a = p.mmap(A, 4 * PAGE, RW, ANON | MAP_FIXED)
    assert kern.vm_committed_as == STACK_PAGES + 4
    p.mprotect(a, 4 * PAGE, PROT_READ)  # unfaulted anonymous: uncharged
    assert kern.vm_committed_as == STACK_PAGES
    p.mprotect(a, 2 * PAGE, RW)  # charged again, for the two pages
    assert kern.vm_committed_as == STACK_PAGES + 2
    p.store(a, 1)
    p.mprotect(a, 2 * PAGE, PROT_READ)  # faulted (anon_vma): stays accounted
    assert kern.vm_committed_as == STACK_PAGES + 2
    b = p.mremap(a, 2 * PAGE, 3 * PAGE, MREMAP_MAYMOVE)  # the growth is charged
    assert kern.vm_committed_as == STACK_PAGES + 3
    brk0 = p.brk(0)
    p.brk(brk0 + 5 * PAGE)
    assert kern.vm_committed_as == STACK_PAGES + 3 + 5
    child = p.fork()  # the child's accounted VMAs are charged again
    assert kern.vm_committed_as == 2 * (STACK_PAGES + 3 + 5)
    child.exit()
    assert kern.vm_committed_as == STACK_PAGES + 3 + 5
    p.brk(brk0)
    p.munmap(A, 4 * PAGE)
    p.munmap(b, 3 * PAGE)
    assert kern.vm_committed_as == STACK_PAGES == accounted(kern)
    p.exit()
    assert kern.vm_committed_as == 0


# ---------------------------------------------------------------------------
# Overcommit: OVERCOMMIT_NEVER and OVERCOMMIT_ALWAYS
# ---------------------------------------------------------------------------
def test_never_refuses_at_the_commit_limit() -> None:
    # limit = 4096 * 50% - admin reserve (4096/32 = 128) - min(total_vm / 32, 128) = 2048 - 128 - 1;
    # the committed total after the charge (33 + n) must stay below it: n <= 1885.
    def mapped(npages: int) -> int:
        p = System(mem_pages=4096, overcommit_memory=OVERCOMMIT_NEVER).spawn()
        return errno_of(p.mmap, 0, npages * PAGE, RW, ANON)

    assert mapped(1885) == 0
    assert mapped(1886) == errno.ENOMEM


def test_never_counts_earlier_commitments_and_ignores_noreserve() -> None:
    kern = System(mem_pages=4096, overcommit_memory=OVERCOMMIT_NEVER)
    p = kern.spawn()
    p.mmap(0, 1000 * PAGE, RW, ANON)
    assert errno_of(p.mmap, 0, 900 * PAGE, RW, ANON) == errno.ENOMEM
    # MAP_NORESERVE is not honoured in strict mode.
    assert errno_of(p.mmap, 0, 900 * PAGE, RW, ANON | MAP_NORESERVE) == errno.ENOMEM
    assert kern.vm_committed_as == STACK_PAGES + 1000


def test_always_refuses_nothing() -> None:
    kern = System(mem_pages=16, overcommit_memory=OVERCOMMIT_ALWAYS)
    p = kern.spawn()
    assert p.mmap(0, 1 << 40, RW, ANON) > 0
    assert kern.vm_committed_as == STACK_PAGES + (1 << 28)


# ---------------------------------------------------------------------------
# Populate
# ---------------------------------------------------------------------------
def test_populate_that_runs_out_of_pages_stops_and_mmap_succeeds() -> None:
    kern = System(mem_pages=100, swap_pages=1000)
    p = kern.spawn()
    free = kern.mem_pages - kern.page_cachep.active
    a = p.mmap(0, 500 * PAGE, RW, ANON | MAP_POPULATE)
    present = [vpn for vpn in p.mm.pgtable if a >> 12 <= vpn < (a >> 12) + 500]
    assert len(present) == free
    assert kern.page_cachep.active == kern.mem_pages


def test_huge_read_only_populate_is_bounded_by_memory() -> None:
    kern = System(mem_pages=256)
    p = kern.spawn()
    free = kern.mem_pages - kern.page_cachep.active
    a = p.mmap(0, 1 << 46, PROT_READ, ANON | MAP_POPULATE)
    assert a > 0
    assert len(p.mm.pgtable) == free  # zero-page PTEs, one per free page


def test_populate_writes_only_private_writable_mappings() -> None:
    p = System().spawn()
    a = p.mmap(0, 2 * PAGE, RW, ANON | MAP_POPULATE)
    s = p.mmap(0, 2 * PAGE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE)
    assert all(p.mm.pgtable[(a >> 12) + i].writable for i in range(2))
    assert all(not p.mm.pgtable[(s >> 12) + i].page.zero_page for i in range(2))


# ---------------------------------------------------------------------------
# System arguments
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    ({"mem_pages": 0}, "System(mem_pages=0): a machine needs at least one page"),
    ({"mem_pages": -5}, "System(mem_pages=-5): need a whole number >= 0"),
    ({"swap_pages": 1.5}, "System(swap_pages=1.5): need a whole number >= 0"),
    ({"overcommit_memory": 3}, "System(overcommit_memory=3): choose 0 (guess), 1 (always) or 2 (never)"),
    ({"mem_pages": 8}, "System(mem_pages=8): too small for a process's stack"),
])
def test_impossible_system_is_a_one_line_usage_error(kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(UsageError) as e:
        System(Config.preset("universal"), **kwargs).spawn()
    assert str(e.value) == message


def test_default_memory_is_a_small_machine_scaled_by_cpus() -> None:
    assert System().mem_pages == (1 << 30) // PAGE  # the presets' 4 CPUs: 1 GiB
    assert System(Config.preset("universal-up")).mem_pages == (1 << 30) // PAGE
    big = System(Config.preset("universal").with_(nr_cpus=56))
    assert big.mem_pages == 56 * (256 << 20) // PAGE
    # mmtests pft maps 256 MiB per thread: 56 threads fit a 56-CPU machine exactly.
    assert big.spawn().mmap(0, 56 * (256 << 20), RW, ANON) > 0


# ---------------------------------------------------------------------------
# MAP_HUGETLB on a machine without huge pages, MAP_DROPPABLE
# ---------------------------------------------------------------------------
HUGETLB = 0x40000


@pytest.mark.parametrize("length,flags,err", [
    (2 << 20, ANON | HUGETLB, errno.ENOMEM),  # no huge page to reserve
    (1, ANON | HUGETLB, errno.ENOMEM),  # the length is rounded up to 2 MiB
    (1 << 30, ANON | HUGETLB | (30 << 26), errno.ENOMEM),  # 1 GiB pages
    (2 << 20, ANON | HUGETLB | (22 << 26), errno.EINVAL),  # no 4 MiB huge pages
    (0, ANON | HUGETLB, errno.EINVAL),
    (2 << 20, MAP_ANONYMOUS | HUGETLB, errno.EINVAL),  # no MAP_TYPE
    (2 << 20, ANON | HUGETLB | 0x100, errno.EINVAL),  # MAP_GROWSDOWN on a file
    (PAGE, ANON | 0x08 | 0x2000, errno.EINVAL),  # MAP_DROPPABLE | MAP_LOCKED
])
def test_hugetlb_and_droppable_errors(length: int, flags: int, err: int) -> None:
    p = System().spawn()
    assert errno_of(p.mmap, 0, length, RW, flags) == err


def test_failed_fixed_hugetlb_leaves_the_replaced_range_unmapped() -> None:
    """As 6.18: the old PTEs were cleared before hugetlbfs's ->mmap failed."""
    kern = System()
    p = kern.spawn()
    b = 0x3F0000000000
    p.mmap(b, 4 << 20, RW, ANON | MAP_FIXED)
    p.store(b + 5, 9)
    assert errno_of(p.mmap, b, 2 << 20, RW, ANON | MAP_FIXED | HUGETLB) == errno.ENOMEM
    assert p.maps().splitlines()[0] == "3f0000200000-3f0000400000 rw-p 00000000 00:00 0 "
    assert kern.vm_committed_as == STACK_PAGES + 512 == accounted(kern)
    # A MAP_FIXED address that is not huge-page aligned is refused before anything changes.
    assert errno_of(p.mmap, b + (2 << 20) - PAGE, 2 * PAGE, RW, ANON | MAP_FIXED | HUGETLB) == errno.EINVAL
    assert p.maps().splitlines()[0] == "3f0000200000-3f0000400000 rw-p 00000000 00:00 0 "


def test_not_modelled_calls_leave_no_lock_held() -> None:
    p = System().spawn()
    with pytest.raises(NotModelled):
        p.mmap(0, 2 << 20, RW, ANON | HUGETLB | MAP_NORESERVE)
    with pytest.raises(NotModelled):
        p.mmap(0, PAGE, RW, MAP_ANONYMOUS | 0x08)  # MAP_DROPPABLE
    s = p.mmap(0, PAGE, RW, MAP_SHARED | MAP_ANONYMOUS)
    with pytest.raises(NotModelled):
        p.madvise(s, PAGE, 9)  # MADV_REMOVE on shmem
    assert p.mmap(A, PAGE, RW, ANON | MAP_FIXED) == A  # mmap_lock is free again


# ---------------------------------------------------------------------------
# MADV_POPULATE_READ/WRITE, MADV_MERGEABLE/UNMERGEABLE
# ---------------------------------------------------------------------------
def test_madv_populate_faults_in_and_stops_at_the_first_bad_vma() -> None:
    p = System().spawn()
    p.mmap(A, 2 * PAGE, RW, ANON | MAP_FIXED)
    p.mmap(A + 2 * PAGE, 2 * PAGE, PROT_READ, ANON | MAP_FIXED)
    assert errno_of(p.madvise, A, 4 * PAGE, 23) == errno.EINVAL  # POPULATE_WRITE meets a read-only VMA
    vpn = A >> 12
    assert [vpn + i in p.mm.pgtable for i in range(4)] == [True, True, False, False]
    assert all(p.mm.pgtable[vpn + i].writable for i in range(2))
    assert p.madvise(A, 4 * PAGE, 22) == 0  # POPULATE_READ: all four, the read-only ones the zero page
    assert p.mm.pgtable[vpn + 3].page.zero_page
    assert errno_of(p.madvise, A + 2 * PAGE, 4 * PAGE, 22) == errno.ENOMEM  # a hole after the VMA


def test_madv_mergeable_splits_and_unmergeable_merges_back() -> None:
    p = System().spawn()
    p.mmap(A, 4 * PAGE, RW, ANON | MAP_FIXED)
    assert p.madvise(A, PAGE, 12) == 0  # MADV_MERGEABLE: VM_MERGEABLE on the first page
    assert p.maps().count("rw-p") == 3  # the split VMA pair and the stack
    assert p.madvise(A, PAGE, 13) == 0  # MADV_UNMERGEABLE
    assert p.maps().count("rw-p") == 2
    s = p.mmap(0, PAGE, RW, MAP_SHARED | MAP_ANONYMOUS)
    assert p.madvise(s, PAGE, 12) == 0  # shared: ignored
    assert not p.mm.mm_mt.find(s).vm_flags & VmFlags.VM_MERGEABLE


def test_map_sync_on_a_disk_file_is_eopnotsupp_and_anonymous_ones_do_not_merge() -> None:
    kern = System()
    p = kern.spawn()
    f = kern.create_file("/data", 8)
    p.mmap(A, 4 * PAGE, RW, ANON | MAP_FIXED)
    for flags in (MAP_SHARED, MAP_PRIVATE, 0x03):
        assert errno_of(p.mmap, 0, PAGE, RW, flags | 0x80000, f, 0) == errno.EOPNOTSUPP
    # MAP_FIXED: ->mmap refuses after the old page was cleared, which stays unmapped.
    assert errno_of(p.mmap, A, PAGE, RW, MAP_PRIVATE | MAP_FIXED | 0x80000, f, 0) == errno.EOPNOTSUPP
    assert p.maps().splitlines()[0] == "10001000-10004000 rw-p 00000000 00:00 0 "
    assert kern.vm_committed_as == STACK_PAGES + 3 == accounted(kern)
    p.mmap(A, PAGE, RW, ANON | MAP_FIXED | 0x80000)  # VM_SYNC: no merge with its neighbour
    assert p.maps().splitlines()[:2] == ["10000000-10001000 rw-p 00000000 00:00 0 ",
                                         "10001000-10004000 rw-p 00000000 00:00 0 "]


LOOKUP_BOUND = 10_000


class _CountingTable(dict):  # type: ignore[type-arg]
    """A page table that counts lookups and fails past LOOKUP_BOUND: work must
    follow the PTEs, not the range (a per-page walk fails fast, not hangs)."""

    lookups = 0

    def _count(self) -> None:
        _CountingTable.lookups += 1
        assert _CountingTable.lookups < LOOKUP_BOUND, "a per-page walk of a huge range"

    def get(self, key, default=None):  # type: ignore[no-untyped-def]
        self._count()
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._count()
        return super().__contains__(key)


def test_huge_sparse_mappings_cost_their_ptes_not_their_length() -> None:
    p = System().spawn()
    p.mm.pgtable = _CountingTable(p.mm.pgtable)
    a = p.mmap(0, 1 << 40, PROT_READ, ANON)  # not accountable: allowed
    p.load(a)
    p.load(a + (1 << 39))
    b = p.mremap(a, 1 << 40, 1 << 40, MREMAP_MAYMOVE | 2, a - (1 << 41))  # MREMAP_FIXED
    assert (p.load(b), p.load(b + (1 << 39))) == (0, 0)
    assert len(p.mm.pgtable) == 2
    assert errno_of(p.mprotect, b, 1 << 40, PROT_READ | PROT_WRITE) == errno.ENOMEM  # the charge
    p.mprotect(b, 1 << 40, 0)
    p.madvise(b, 1 << 40, MADV_DONTNEED)
    p.fork().exit()
    p.munmap(b, 1 << 40)
    assert _CountingTable.lookups < LOOKUP_BOUND  # 2**28 pages: a per-page walk is far above


@pytest.mark.parametrize("change", ["mprotect", "madvise", "mlock"])
def test_a_change_undone_merges_back_into_the_lowest_vma(change: str) -> None:
    # the VMA before the changed range is the first of the tree: vma_prev()
    # must find it, or the pieces never merge back (vma_modify()'s prev)
    p = System().spawn()
    p.mmap(A, 2 * PAGE, RW, ANON | MAP_FIXED)
    assert p.mm.mm_mt.snapshot()[0].vm_start == A  # nothing below the range
    do, undo = {"mprotect": (lambda: p.mprotect(A + PAGE, PAGE, PROT_READ),
                             lambda: p.mprotect(A + PAGE, PAGE, RW)),
                "madvise": (lambda: p.madvise(A + PAGE, PAGE, 10),  # MADV_DONTFORK
                            lambda: p.madvise(A + PAGE, PAGE, 11)),  # MADV_DOFORK
                "mlock": (lambda: p.mlock(A + PAGE, PAGE), lambda: p.munlock(A + PAGE, PAGE))}[change]
    assert do() == 0
    assert [(v.vm_start, v.vm_end) for v in p.mm.mm_mt.overlapping(A, A + 2 * PAGE)] == [
        (A, A + PAGE), (A + PAGE, A + 2 * PAGE)]
    assert undo() == 0
    assert [(v.vm_start, v.vm_end) for v in p.mm.mm_mt.overlapping(A, A + 2 * PAGE)] == [
        (A, A + 2 * PAGE)]
