"""SLUB's sizing rules (Linux 6.18): alignment, slot size, order, objects per slab.

Follows ``calculate_alignment()`` (mm/slab_common.c), ``calculate_sizes()``,
``calculate_order()`` and ``calc_slab_order()`` (mm/slub.c); docs: layout.md §3.
Everything is computed from the cache's inputs alone (object size, requested
alignment, flags, CPU counts, ``slub_min_objects``/``slub_min_order``/
``slub_max_order``), so the result can be checked against
``/sys/kernel/slab/<cache>``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pervma.errors import UsageError

PAGE_SIZE = 4096
MAX_OBJS_PER_PAGE = 32767
MAX_PAGE_ORDER = 10
PAGE_ALLOC_COSTLY_ORDER = 3

# kmalloc size classes (KMALLOC_MIN_SIZE 8 on x86; 96 and 192 exist when
# KMALLOC_MIN_SIZE <= 32 / 64), up to KMALLOC_MAX_CACHE_SIZE = 2 pages.
KMALLOC_SIZES = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class CacheFlags:
    """The flags that change sizing (debug flags as in sysfs)."""

    hwcache_align: bool = False
    typesafe_by_rcu: bool = False
    use_freeptr_offset: bool = False  # RCU cache with an in-object free pointer
    ctor: bool = False
    poison: bool = False
    red_zone: bool = False
    store_user: bool = False
    kmalloc: bool = False


@dataclass(frozen=True)
class Machine:
    """What SLUB reads from the machine: CPUs, cache line, boot parameters."""

    present_cpus: int = 2
    nr_cpu_ids: int = 2
    cache_line: int = 64
    page_size: int = PAGE_SIZE
    min_objects: int = 0  # slab_min_objects= (0: derived from the CPU count)
    min_order: int = 0
    max_order: int = PAGE_ALLOC_COSTLY_ORDER
    ptr: int = 8


@dataclass
class Sizing:
    """A cache's predicted geometry (names as in /sys/kernel/slab)."""

    object_size: int
    align: int
    slab_size: int
    order: int
    objs_per_slab: int
    min_objects: int
    freeptr_outside: bool
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def waste_per_slab(self) -> int:
        return (PAGE_SIZE << self.order) - self.objs_per_slab * self.slab_size


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def fls(x: int) -> int:
    """The kernel's fls(): index of the highest set bit, 1-based (0 for 0)."""
    return x.bit_length()


def get_order(size: int, page_size: int = PAGE_SIZE) -> int:
    """Smallest order o with ``page_size << o >= size``."""
    o = 0
    while (page_size << o) < size:
        o += 1
    return o


def calculate_alignment(flags: CacheFlags, align: int, size: int, m: Machine) -> int:
    """mm/slab_common.c calculate_alignment()."""
    if flags.hwcache_align:
        ralign = m.cache_line
        while size <= ralign // 2:
            ralign //= 2
        align = max(align, ralign)
    align = max(align, 8)  # arch_slab_minalign() = __alignof__(unsigned long long)
    return _align(align, m.ptr)


def slot_size(object_size: int, align: int, flags: CacheFlags, m: Machine) -> tuple[int, bool]:
    """mm/slub.c calculate_sizes(): ``(s->size, free pointer outside the object)``."""
    size = _align(object_size, m.ptr)
    if flags.red_zone and size == object_size:
        size += m.ptr
    outside = False
    if ((flags.typesafe_by_rcu and not flags.use_freeptr_offset) or flags.poison or flags.ctor
            or (flags.red_zone and object_size < m.ptr)):
        size += m.ptr
        outside = True
    if flags.store_user:
        track = 24 + 8 * 16 if m.ptr == 8 else 12 + 4 * 16  # addr, stack handle, cpu, pid, when
        size += 2 * track + (4 if flags.kmalloc else 0)
    if flags.red_zone:
        size += m.ptr
        size += _align(m.ptr, align)
    return _align(size, align), outside


def order_objects(order: int, size: int, page_size: int = PAGE_SIZE) -> int:
    return (page_size << order) // size


def default_min_objects(m: Machine) -> int:
    """4 * (fls(nr) + 1) with nr = present CPUs (nr_cpu_ids when only one)."""
    if m.min_objects:
        return m.min_objects
    nr = m.present_cpus
    if nr <= 1:
        nr = m.nr_cpu_ids
    return 4 * (fls(nr) + 1)


def calc_slab_order(size: int, min_order: int, max_order: int, fract_leftover: int,
                    page_size: int = PAGE_SIZE) -> int:
    for order in range(min_order, max_order + 1):
        slab_size = page_size << order
        if slab_size % size <= slab_size // fract_leftover:
            return order
    return max_order + 1


def calculate_order(size: int, m: Machine) -> int:
    """mm/slub.c calculate_order() (6.8+ shape)."""
    min_objects = default_min_objects(m)
    max_objects = max(order_objects(m.max_order, size, m.page_size), 1)
    min_objects = min(min_objects, max_objects)
    min_order = max(m.min_order, get_order(min_objects * size, m.page_size))
    if order_objects(min_order, size, m.page_size) > MAX_OBJS_PER_PAGE:
        return get_order(size * MAX_OBJS_PER_PAGE, m.page_size) - 1
    for fraction in (16, 8, 4, 2):
        order = calc_slab_order(size, min_order, m.max_order, fraction, m.page_size)
        if order <= m.max_order:
            return order
    order = get_order(size, m.page_size)
    if order <= MAX_PAGE_ORDER:
        return order
    raise UsageError(f"object of {size} B is too large for any slab")


def size_cache(object_size: int, align: int = 0, flags: CacheFlags | None = None,
               machine: Machine | None = None) -> Sizing:
    """Predict a cache's ``align``, ``slab_size``, ``order`` and ``objs_per_slab``."""
    if object_size <= 0:
        raise UsageError(f"object size must be positive, got {object_size}")
    if align < 0 or align & (align - 1):
        raise UsageError(f"alignment must be 0 or a power of two, got {align}")
    flags = flags or CacheFlags()
    m = machine or Machine()
    if m.present_cpus <= 0 or m.nr_cpu_ids <= 0:
        raise UsageError("CPU counts must be positive")
    if not 0 <= m.max_order <= MAX_PAGE_ORDER:
        raise UsageError(f"max order must be in 0..{MAX_PAGE_ORDER}, got {m.max_order}")
    a = calculate_alignment(flags, align, object_size, m)
    size, outside = slot_size(object_size, a, flags, m)
    order = calculate_order(size, m)
    return Sizing(object_size, a, size, order, order_objects(order, size, m.page_size),
                  default_min_objects(m), outside)


def kmalloc_size_class(size: int) -> int:
    """The kmalloc bucket a ``kmalloc(size)`` lands in (beyond 8 KiB: whole pages)."""
    if size <= 0:
        raise UsageError(f"kmalloc size must be positive, got {size}")
    for s in KMALLOC_SIZES:
        if size <= s:
            return s
    return PAGE_SIZE << get_order(size)


def kmalloc_align(size: int) -> int:
    """Alignment of kmalloc-<size>: the largest power of two dividing it (min 8)."""
    a = size & -size
    return max(8, a)
