"""The pinned user API: constants, C argument order, errno, maps format."""

from __future__ import annotations

import errno
import mmap as pymmap

import pytest

import pervma
from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_PRIVATE,
    PAGE,
    PROT_READ,
    PROT_WRITE,
    Config,
    System,
)


def test_constants_have_linux_values() -> None:
    assert (pervma.PROT_READ, pervma.PROT_WRITE, pervma.PROT_EXEC) == (
        pymmap.PROT_READ, pymmap.PROT_WRITE, pymmap.PROT_EXEC)
    assert (pervma.MAP_SHARED, pervma.MAP_PRIVATE, pervma.MAP_ANONYMOUS) == (
        pymmap.MAP_SHARED, pymmap.MAP_PRIVATE, pymmap.MAP_ANONYMOUS)
    assert pervma.MADV_DONTNEED == pymmap.MADV_DONTNEED and pervma.MADV_FREE == 8
    assert (pervma.MREMAP_MAYMOVE, pervma.MREMAP_FIXED, pervma.MREMAP_DONTUNMAP) == (1, 2, 4)
    assert pervma.PAGE == 4096 and (pervma.SEGV_MAPERR, pervma.SEGV_ACCERR) == (1, 2)
    assert issubclass(pervma.Segfault, Exception) and not issubclass(pervma.Segfault, OSError)


def test_new_process_layout() -> None:
    p = System().spawn()
    assert p.maps() == ("7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0"
                        + " " * 26 + "[stack]\n")
    a = p.mmap(0, 2 * PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
    assert a == 0x7FFFF7FFF000 - 2 * PAGE  # top-down below mmap_base
    b = p.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    assert b == a - PAGE
    assert p.brk(0) == 0x555555559000


def test_errors_carry_linux_errno() -> None:
    p = System(Config.preset("universal")).spawn()
    cases = [
        (lambda: p.mmap(0, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS), errno.EINVAL),
        (lambda: p.mmap(0x10000001, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED), errno.EINVAL),
        (lambda: p.mmap(0, PAGE, PROT_READ, MAP_ANONYMOUS), errno.EINVAL),
        (lambda: p.munmap(0x10000001, PAGE), errno.EINVAL),
        (lambda: p.mprotect(0x10000000, PAGE, PROT_READ), errno.ENOMEM),
        (lambda: p.mremap(0x10000000, PAGE, 2 * PAGE, 0), errno.EFAULT),
        (lambda: p.madvise(0x10000000, PAGE, 4), errno.ENOMEM),
        (lambda: p.madvise(0x10000000, PAGE, 999), errno.EINVAL),
    ]
    for call, want in cases:
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == want
    a = p.mmap(0x10000000, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    with pytest.raises(OSError) as e:
        p.mmap(a, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    assert e.value.errno == errno.EEXIST


def test_max_map_count() -> None:
    kern = System(Config.preset("universal").with_(max_map_count=4))
    p = kern.spawn()  # 1 VMA: the stack
    for i in range(3):  # alternate prot so nothing merges
        p.mmap(0x10000000 + 2 * i * PAGE, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    with pytest.raises(OSError) as e:
        p.mmap(0x20000000, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    assert e.value.errno == errno.ENOMEM
    p.mprotect(0x10000000, PAGE, PROT_READ | PROT_WRITE)  # no split needed
    stack = p.mm.mm_mt.find_covering(0x7FFFFFFFE000)
    with pytest.raises(OSError) as e:
        p.mprotect(stack.vm_start + PAGE, PAGE, PROT_READ)  # would split the stack in three
    assert e.value.errno == errno.ENOMEM
    assert p.mm.map_count == 4


def test_growsdown_mapping_and_maps_name() -> None:
    p = System().spawn()
    a = p.mmap(0x20000000, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_FIXED)
    p.store(a - PAGE, 1)  # grows
    assert p.mm.mm_mt.find_covering(a - PAGE).vm_start == a - PAGE
