"""Random syscall sequences keep validate_mm true (hypothesis state machine).

Every synchronous call runs validate_mm: VMAs sorted and disjoint, map_count
right, attached VMAs at vm_refcnt 1 with no write lock outstanding, no PTE
outside a VMA, every mapped anon page reachable by rmap.  On top, a shadow of
the bytes stored checks what loads return."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pervma import (
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_RANDOM,
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
from pervma.kernel import debug
from pervma.kernel.mm_types import VmFlags

BASE = 0x10000000
NPAGES = 48
pages = st.integers(0, NPAGES - 1)
lengths = st.integers(1, 12)
prots = st.sampled_from([PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_EXEC])


class AddressSpace(RuleBasedStateMachine):
    preset = "universal"

    def __init__(self) -> None:
        super().__init__()
        self.kern = System(Config.preset(self.preset))
        self.p = self.kern.spawn()
        self.child = None
        self.shadow: dict[int, int] = {}

    def _try(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            return -e.errno

    @rule(page=pages, n=lengths, prot=prots, shared=st.booleans())
    def mmap_fixed(self, page: int, n: int, prot: int, shared: bool) -> None:
        flags = (MAP_SHARED if shared else MAP_PRIVATE) | MAP_ANONYMOUS | MAP_FIXED
        addr = BASE + page * PAGE
        if self._try(self.p.mmap, addr, n * PAGE, prot, flags) == addr:
            self._forget(addr, n)

    @rule(page=pages, n=lengths)
    def munmap(self, page: int, n: int) -> None:
        addr = BASE + page * PAGE
        assert self._try(self.p.munmap, addr, n * PAGE) == 0
        self._forget(addr, n)

    @rule(page=pages, n=lengths, prot=prots)
    def mprotect(self, page: int, n: int, prot: int) -> None:
        self._try(self.p.mprotect, BASE + page * PAGE, n * PAGE, prot)

    @rule(page=pages, n=lengths, m=lengths, move_to=st.none() | pages)
    def mremap(self, page: int, n: int, m: int, move_to: int | None) -> None:
        addr = BASE + page * PAGE
        if move_to is None:
            self._try(self.p.mremap, addr, n * PAGE, m * PAGE, 0)
        else:
            self._try(self.p.mremap, addr, n * PAGE, m * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED,
                      BASE + move_to * PAGE)
        self.shadow.clear()  # contents moved: stop predicting them

    @rule(page=pages, n=lengths, advice=st.sampled_from(
        [MADV_DONTNEED, MADV_FREE, MADV_RANDOM, MADV_DONTFORK, MADV_DOFORK, MADV_DONTDUMP, MADV_DODUMP]))
    def madvise(self, page: int, n: int, advice: int) -> None:
        addr = BASE + page * PAGE
        if self._try(self.p.madvise, addr, n * PAGE, advice) in (0, -12) and advice == MADV_DONTNEED:
            self._forget(addr, n, zero_private=True)

    @rule(delta=st.integers(-3, 3))
    def brk(self, delta: int) -> None:
        cur = self.p.brk(0)
        self.p.brk(max(cur + delta * PAGE, self.p.mm.start_brk))

    @rule(page=pages, off=st.integers(0, PAGE - 1), value=st.integers(1, 255))
    def store(self, page: int, off: int, value: int) -> None:
        addr = BASE + page * PAGE + off
        try:
            self.p.store(addr, value)
            self.shadow[addr] = value
        except Segfault:
            pass

    @rule(page=pages, off=st.integers(0, PAGE - 1))
    def load(self, page: int, off: int) -> None:
        addr = BASE + page * PAGE + off
        try:
            got = self.p.load(addr)
        except Segfault:
            return
        if addr in self.shadow:
            assert got == self.shadow[addr]

    @precondition(lambda self: self.child is None)
    @rule()
    def fork(self) -> None:
        self.child = self.p.fork()

    @precondition(lambda self: self.child is not None)
    @rule(page=pages, value=st.integers(1, 255))
    def child_store(self, page: int, value: int) -> None:
        try:
            self.child.store(BASE + page * PAGE, value)
        except Segfault:
            pass

    @precondition(lambda self: self.child is not None)
    @rule()
    def child_exit(self) -> None:
        self.child.exit()
        assert self.child.mm.freed
        self.child = None

    def _forget(self, addr: int, n: int, zero_private: bool = False) -> None:
        for a in [a for a in self.shadow if addr <= a < addr + n * PAGE]:
            del self.shadow[a]

    @invariant()
    def committed_memory_is_the_accounted_vmas(self) -> None:
        """vm_committed_as holds exactly the pages of the live VM_ACCOUNT VMAs."""
        accounted = sum(v.pages() for proc in self.kern.processes if not proc.mm.freed
                        for v in proc.mm.mm_mt.snapshot() if v.vm_flags & VmFlags.VM_ACCOUNT)
        assert self.kern.vm_committed_as == accounted

    @invariant()
    def mm_is_valid(self) -> None:
        debug.validate_mm(self.p.mm)
        assert self.p.mm.map_count == len(self.p.maps().splitlines())
        for cpu in (self.p.main.task,):
            assert cpu.held == [] and cpu.rcu_depth == 0


AddressSpace.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow], derandomize=True)
TestAddressSpace = AddressSpace.TestCase


class LegacyAddressSpace(AddressSpace):
    preset = "legacy"


LegacyAddressSpace.TestCase.settings = AddressSpace.TestCase.settings
TestLegacyAddressSpace = LegacyAddressSpace.TestCase
