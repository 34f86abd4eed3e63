"""The syscall boundary: how a C caller's integers reach the kernel.

A program calls glibc's wrapper with C types; the wrapper puts each argument
in a 64-bit register (an ``int`` is sign-extended, as the ``(long)`` cast in
glibc's syscall macros does), and SYSCALL_DEFINEn hands the kernel function
its declared type (include/linux/syscalls.h: ``unsigned long`` keeps the
register, ``int`` takes its low 32 bits).  pervma's ``sys_*`` entry points
reduce their Python-int arguments exactly once, here, so that ``-4096`` or
``2**64 - 4096`` behave as they would from C and the model below the entry
never sees a negative or over-wide address.

Return values go the other way: the kernel returns an ``unsigned long`` and a
value in the last page (IS_ERR_VALUE) is an error; the model returns -errno.
"""

from __future__ import annotations

from pervma.errors import PervmaError

ULONG_MAX = (1 << 64) - 1
MAX_ERRNO = 4095


class NotModelled(PervmaError):
    """A call Linux accepts that the model does not implement (for example
    anonymous MAP_HUGETLB or MAP_DROPPABLE).  Raised only once every check the
    kernel makes before that point has passed, so an invalid call still gets
    the kernel's errno."""


def c_ulong(x: int) -> int:
    """An ``unsigned long`` (or ``size_t``, a pointer) argument: modulo 2**64."""
    return int(x) & ULONG_MAX


def c_int(x: int) -> int:
    """An ``int`` argument: its low 32 bits, as a signed value."""
    x = int(x) & 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def c_int_as_ulong(x: int) -> int:
    """A C ``int`` the caller passed to glibc, received by the kernel as an
    ``unsigned long``: truncated to 32 bits, then sign-extended to 64."""
    return c_int(x) & ULONG_MAX


def IS_ERR_VALUE(x: int) -> bool:  # noqa: N802 - the kernel's name
    """An ``unsigned long`` in the last page of the address space is -errno."""
    return x >= ULONG_MAX - MAX_ERRNO + 1


def err_value(x: int) -> int:
    """An IS_ERR_VALUE() ``unsigned long`` as the model's -errno."""
    return x - (1 << 64)


__all__ = ["IS_ERR_VALUE", "MAX_ERRNO", "NotModelled", "ULONG_MAX", "c_int", "c_int_as_ulong", "c_ulong", "err_value"]
