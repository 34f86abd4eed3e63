"""SLUB sizing: worked examples, and every cache of the running kernel."""

from __future__ import annotations

import pytest

from pervma.host import proc
from pervma.layout import slub, validate

M2 = slub.Machine(present_cpus=2, nr_cpu_ids=2)


@pytest.mark.parametrize("size,flags,expected", [
    # (object size, flags) -> (align, slab_size, order, objs_per_slab)
    (192, slub.CacheFlags(True, True, True), (64, 192, 0, 21)),      # vm_area_struct 6.18
    (192, slub.CacheFlags(True, True, False), (64, 256, 0, 16)),     # without the in-object ptr
    (1568, slub.CacheFlags(True), (64, 1600, 3, 20)),                # mm_struct
    (624, slub.CacheFlags(ctor=True), (8, 632, 2, 25)),              # waste loop moves to order 2
    (51472, slub.CacheFlags(), (8, 51472, 4, 1)),                    # get_order(size) fallback
    (68, slub.CacheFlags(True), (64, 128, 0, 32)),                   # i386 tiny VMA, HWCACHE
    (32, slub.CacheFlags(True), (32, 32, 0, 128)),                   # HWCACHE halves for small
    (96, slub.CacheFlags(typesafe_by_rcu=True), (8, 104, 0, 39)),    # anon_vma grows by 8
])
def test_worked_examples(size: int, flags: slub.CacheFlags, expected: tuple[int, ...]) -> None:
    s = slub.size_cache(size, 0, flags, M2)
    assert (s.align, s.slab_size, s.order, s.objs_per_slab) == expected


def test_objects_per_slab_vs_cpus() -> None:
    f = slub.CacheFlags(True, True, True)
    got = [slub.size_cache(192, 0, f, slub.Machine(n, n)).objs_per_slab
           for n in (1, 2, 15, 16, 511, 512)]
    assert got == [21, 21, 21, 42, 42, 85]
    assert slub.default_min_objects(slub.Machine(2, 2)) == 12
    assert slub.default_min_objects(slub.Machine(1, 8)) == 4 * (4 + 1)


def test_max_order_caps_the_order() -> None:
    s = slub.size_cache(1568, 0, slub.CacheFlags(True), slub.Machine(2, 2, max_order=1))
    assert s.order == 1 and s.objs_per_slab == 5


def test_kmalloc_classes() -> None:
    assert [slub.kmalloc_size_class(n) for n in (1, 8, 9, 68, 96, 97, 136, 192, 193, 5000,
                                                 9000)] == \
        [8, 8, 16, 96, 96, 128, 192, 192, 256, 8192, 16384]
    assert slub.kmalloc_align(96) == 32 and slub.kmalloc_align(192) == 64


def _sysfs_or_skip() -> None:
    why = proc.sysfs_available()
    if why:
        pytest.skip(why)


def test_every_cache_of_the_running_kernel() -> None:
    _sysfs_or_skip()
    h = proc.read_machine()
    checks = validate.validate(proc.read_sysfs_caches(), h)
    assert len(checks) > 50
    bad = [(c.name, c.mismatches) for c in checks if c.mismatches]
    assert bad == []


def test_validation_discriminates() -> None:
    """A wrong min_objects must break some predictions (the check can fail)."""
    _sysfs_or_skip()
    h = proc.read_machine()
    caches = proc.read_sysfs_caches()
    h.min_objects = 64
    checks = validate.validate(caches, h)
    assert any(c.mismatches for c in checks)
