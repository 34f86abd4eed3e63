"""The running kernel's address-space syscalls, through ctypes.

Thin wrappers over libc's ``syscall(2)`` for mmap, munmap, mprotect, mremap,
madvise and brk: each returns what the kernel returned (an address, 0, or the
new break) or ``-errno``, never raising, so a caller can compare the result
with the model's one for one.  ``brk`` is the raw system call, not glibc's
wrapper (which returns 0/-1 and caches the break).

User stores and loads go through ``process_vm_writev``/``process_vm_readv`` on
the calling process: the kernel resolves the address with GUP, which honours
the VMA's permissions (no FOLL_FORCE) and faults pages in through
handle_mm_fault exactly as a user access would, but reports a bad access as
``-EFAULT`` instead of delivering SIGSEGV/SIGBUS.  That is what makes it safe
to probe any address of the caller's own address space.

Only Linux on x86_64, aarch64 and riscv64 is supported; :func:`unavailable`
says why not elsewhere.  Running these calls against one's own memory is
dangerous: callers confine them to a region they reserved (and do it in a
forked child).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys

# Syscall numbers: x86_64 has its own table; aarch64 and riscv64 use the generic one.
_NR = {
    "x86_64": {"mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12, "mremap": 25, "madvise": 28,
               "process_vm_readv": 310, "process_vm_writev": 311},
    "generic": {"mmap": 222, "mprotect": 226, "munmap": 215, "brk": 214, "mremap": 216,
                "madvise": 233, "process_vm_readv": 270, "process_vm_writev": 271},
}
_ARCH_TABLE = {"x86_64": "x86_64", "aarch64": "generic", "arm64": "generic", "riscv64": "generic"}

PROC_SELF_MAPS = "/proc/self/maps"


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def unavailable() -> str | None:
    """None if these wrappers work here, else the one-line reason they do not."""
    if not sys.platform.startswith("linux"):
        return f"the running kernel is not Linux ({sys.platform})"
    if _ARCH_TABLE.get(platform.machine()) is None:
        return f"no syscall table for {platform.machine()} (x86_64, aarch64 and riscv64 only)"
    try:
        _load_libc()
    except OSError as exc:
        return f"cannot load libc: {exc}"
    if not os.access(PROC_SELF_MAPS, os.R_OK):
        return f"{PROC_SELF_MAPS} is not readable (no /proc mounted?)"
    return None


_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _syscall(name: str, *args: int) -> int:
    """syscall(2): the kernel's return value, or -errno."""
    libc = _load_libc()
    nr = _NR[_ARCH_TABLE[platform.machine()]][name]
    ctypes.set_errno(0)
    ret = int(libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)))
    if ret == -1:
        err = ctypes.get_errno()
        if err:
            return -err
    return ret


def _signed(x: int) -> int:
    """An unsigned machine word (a pointer, ``size_t`` or ``off_t``) as the C
    ``long`` the register holds: any Python int, reduced modulo 2**64."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >> 63 else x


def _int(x: int) -> int:
    """A C ``int`` argument of glibc's wrapper: its low 32 bits, signed; the
    wrapper's ``(long)`` cast sign-extends it into the register."""
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x >> 31 else x


# The wrappers take their arguments as glibc's prototypes declare them
# (mmap(void *, size_t, int, int, int, off_t), mprotect(void *, size_t, int),
# mremap(void *, size_t, size_t, int, void *), madvise(void *, size_t, int)),
# so any Python int reaches the kernel as it would from a C program.
def mmap(addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
    return _syscall("mmap", _signed(addr), _signed(length), _int(prot), _int(flags), _int(fd),
                    _signed(offset))


def munmap(addr: int, length: int) -> int:
    return _syscall("munmap", _signed(addr), _signed(length))


def mprotect(addr: int, length: int, prot: int) -> int:
    return _syscall("mprotect", _signed(addr), _signed(length), _int(prot))


def mremap(old_addr: int, old_len: int, new_len: int, flags: int = 0, new_addr: int = 0) -> int:
    return _syscall("mremap", _signed(old_addr), _signed(old_len), _signed(new_len), _int(flags),
                    _signed(new_addr))


def madvise(addr: int, length: int, advice: int) -> int:
    return _syscall("madvise", _signed(addr), _signed(length), _int(advice))


def brk(addr: int) -> int:
    """The raw brk system call: the new break, or the unchanged one on failure.
    glibc's malloc caches the break: move it only where malloc cannot see."""
    return _syscall("brk", _signed(addr))


def _vm_rw(name: str, addr: int, buf: ctypes.Array[ctypes.c_char]) -> int:
    local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), len(buf))
    remote = _IoVec(addr, len(buf))
    return _syscall(name, os.getpid(), ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)


def store_byte(addr: int, value: int) -> int:
    """Write one byte at addr as a user store would (permissions honoured):
    0, or -EFAULT where the store would have raised SIGSEGV or SIGBUS."""
    buf = ctypes.create_string_buffer(bytes([value & 0xFF]), 1)
    ret = _vm_rw("process_vm_writev", addr, buf)
    return 0 if ret == 1 else (ret if ret < 0 else -14)


def load_byte(addr: int) -> int:
    """Read one byte at addr as a user load would: the byte, or -EFAULT."""
    buf = ctypes.create_string_buffer(1)
    ret = _vm_rw("process_vm_readv", addr, buf)
    return buf.raw[0] if ret == 1 else (ret if ret < 0 else -14)


def probe_vm_rw() -> str | None:
    """None if process_vm_writev/readv work on this process, else why not
    (a seccomp filter may refuse them with EPERM or ENOSYS)."""
    buf = ctypes.create_string_buffer(b"x", 1)
    ret = _vm_rw("process_vm_writev", ctypes.addressof(buf), buf)
    if ret < 0:
        return f"process_vm_writev on self fails with {os.strerror(-ret)}"
    return None


def memory_pages(path: str = "/proc/meminfo") -> tuple[int, int]:
    """(RAM, swap) in pages: MemTotal and SwapTotal, which are the
    totalram_pages() and total_swap_pages that overcommit checks against."""
    fields: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and name in ("MemTotal", "SwapTotal"):
                fields[name] = int(parts[0]) * 1024 // os.sysconf("SC_PAGE_SIZE")
    return fields.get("MemTotal", 0), fields.get("SwapTotal", 0)


def vm_sysctl(name: str) -> int:
    """An integer under /proc/sys/vm (overcommit_memory, mmap_min_addr, ...)."""
    with open(f"/proc/sys/vm/{name}") as f:
        return int(f.read().split()[0])


def kernel_version() -> tuple[int, int]:
    """(major, minor) of the running kernel."""
    release = platform.release()
    parts = release.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def maps_lines(start: int, end: int, path: str = PROC_SELF_MAPS) -> list[str]:
    """The /proc/self/maps lines (without newline) of every VMA that
    intersects [start, end), in address order."""
    out = []
    with open(path) as f:
        for line in f:
            dash = line.index("-")
            space = line.index(" ", dash)
            lo, hi = int(line[:dash], 16), int(line[dash + 1:space], 16)
            if lo < end and hi > start:
                out.append(line.rstrip("\n"))
            elif lo >= end:
                break
    return out


__all__ = ["PROC_SELF_MAPS", "brk", "kernel_version", "load_byte", "madvise", "maps_lines", "memory_pages",
           "mmap", "mprotect", "mremap", "munmap", "probe_vm_rw", "store_byte", "unavailable", "vm_sysctl"]
