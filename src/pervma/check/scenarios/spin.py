"""The SPIN shapes of issue #12: yardsticks for the explorer, not races of their own.

Each shape is N read faults on one anonymous VMA of one page racing a munmap of
that VMA (``NF+M``); the ``+R`` shapes add a second mm that maps the same
address, which may recycle the freed ``vm_area_struct`` (the cache is
SLAB_TYPESAFE_BY_RCU), and then changes its protection.  They are the shapes
a Promela model of the same protocol was measured on with SPIN 6.5.2, built
the way ``vma-reuse-by-another-mm`` and ``fault-vs-munmap`` are (the +R
second mm does not exit, which is the difference from
``vma-reuse-by-another-mm``: 1F+M+R was exactly the 1,025-trace run the issue
quotes, until slab allocations and frees of one cache became dependent steps;
it had 2,631 traces, 5,617 once RCU grace periods became dependent, and
8,732 once a freed VMA started a grace period for KASAN, and 4,788 once the
read-side steps of an rw_semaphore stopped racing each other).

They are tagged ``spin-shape``: kept out of ``pervma check --all`` and the
report (like the misuse scenarios), run by name (``pervma check spin-2f-m``)
and by ``bench/check_bench.py --spin-shapes``.  Every check is the library's:
``validate_mm`` on each live mm when all threads are done, plus the model's
own assertions, lockdep and KASAN-style checks on every step.
"""

from __future__ import annotations

from pervma import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE, PROT_READ, PROT_WRITE, Config
from pervma.check.scenario import Instance, Scenario, register
from pervma.check.scenarios.kernel import World
from pervma.kernel.system import Thread

A = 0x10000000  # the test range of the kernel scenarios
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
TAG = "spin-shape"
MAX_FAULTS = 4


def spin_shape_name(faults: int, reuse: bool) -> str:
    """The scenario name of a shape: ``spin-2f-m``, ``spin-2f-m-r``."""
    return f"spin-{faults}f-m" + ("-r" if reuse else "")


def spin_shape_label(faults: int, reuse: bool) -> str:
    """The issue's label of a shape: ``2F+M``, ``2F+M+R``."""
    return f"{faults}F+M" + ("+R" if reuse else "")


#: (label, scenario name) of every shape, in the issue's order.
SPIN_SHAPES: tuple[tuple[str, str], ...] = tuple(
    (spin_shape_label(n, r), spin_shape_name(n, r))
    for n in range(1, MAX_FAULTS + 1) for r in (False, True))


def _fill(w: World, faults: int, reuse: bool) -> None:
    p = w.p
    q = w.process("q") if reuse else None  # spawned first, as vma-reuse-by-another-mm does
    p.mmap(A, PAGE, RW, ANON)

    async def fault(t: Thread) -> int:
        return await t.load(A)

    async def unmap(t: Thread) -> int:
        return await t.munmap(A, PAGE)

    async def other(t: Thread) -> int:
        addr = await t.mmap(A, PAGE, RW, ANON)
        await t.mprotect(A, PAGE, PROT_READ)
        return addr

    for i in range(faults):
        w.thread("fault" if faults == 1 else f"fault{i + 1}", p.thread(), fault, group="fault")
    w.thread("munmap", p.thread(), unmap)
    if q is not None:
        w.thread("q-mmap", q.main, other)


def _register(faults: int, reuse: bool) -> Scenario:
    label = spin_shape_label(faults, reuse)
    doc = (f"SPIN shape {label}: {faults} read fault{'s' if faults > 1 else ''} on one anon "
           "VMA race its munmap" + ("; another mm maps the same address (reusing the freed "
                                     "VMA object) and mprotects it" if reuse else ""))

    def build(cfg: Config) -> Instance:
        w = World(cfg)
        _fill(w, faults, reuse)
        return w.instance()

    build.__doc__ = doc
    return register(Scenario(spin_shape_name(faults, reuse), doc, build, tags=(TAG,)))


for _n in range(1, MAX_FAULTS + 1):
    for _r in (False, True):
        _register(_n, _r)
