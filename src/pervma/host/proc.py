"""Read the running kernel: /proc/*/maps, /proc/slabinfo, /sys/kernel/slab, CPUs.

Every reader raises :class:`pervma.errors.HostError` with one line saying what
is missing (no /proc, not root, no sysfs) instead of a traceback.  Paths are
parameters so tests can point them at fixtures.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pervma.errors import HostError

SLAB_SYSFS = Path("/sys/kernel/slab")
SLABINFO = Path("/proc/slabinfo")
PROC = Path("/proc")
CONFIG_GZ = Path("/proc/config.gz")
BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")


@dataclass
class MapsCount:
    """VMAs seen in /proc/[pid]/maps (thread-group leaders only)."""

    processes: int = 0  # processes with at least one VMA
    lines: int = 0
    gate: int = 0  # [vsyscall] lines: the static gate VMA, not a slab object
    unreadable: int = 0  # processes whose maps could not be read
    per_process: dict[int, int] = field(default_factory=dict)

    @property
    def vmas(self) -> int:
        return self.lines - self.gate


def count_maps(proc: Path = PROC) -> MapsCount:
    """Sum the lines of every /proc/[pid]/maps, minus the ``[vsyscall]`` gate VMAs."""
    if not proc.is_dir():
        raise HostError(f"{proc} is not mounted; cannot count VMAs")
    out = MapsCount()
    with os.scandir(proc) as it:
        entries = list(it)
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "maps"), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue  # process exited
        except OSError:
            out.unreadable += 1
            continue
        if not data:
            continue  # kernel thread
        n = data.count(b"\n")
        out.lines += n
        out.gate += data.count(b"[vsyscall]")
        out.processes += 1
        out.per_process[int(entry.name)] = n
    return out


@dataclass
class SlabinfoRow:
    """One /proc/slabinfo line."""

    name: str
    active_objs: int
    num_objs: int
    objsize: int
    objperslab: int
    pagesperslab: int
    active_slabs: int
    num_slabs: int

    @property
    def pages(self) -> int:
        return self.num_slabs * self.pagesperslab


def read_slabinfo(path: Path = SLABINFO) -> dict[str, SlabinfoRow]:
    """Parse /proc/slabinfo version 2.1 (root only)."""
    try:
        text = path.read_text()
    except PermissionError:
        raise HostError(f"{path} is readable by root only; run as root") from None
    except OSError as exc:
        raise HostError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows: dict[str, SlabinfoRow] = {}
    for line in text.splitlines():
        if line.startswith(("slabinfo", "#")) or not line.strip():
            continue
        parts = line.split()
        try:
            i = parts.index("slabdata")
            rows[parts[0]] = SlabinfoRow(parts[0], int(parts[1]), int(parts[2]), int(parts[3]),
                                         int(parts[4]), int(parts[5]), int(parts[i + 1]),
                                         int(parts[i + 2]))
        except (ValueError, IndexError):
            raise HostError(f"{path}: unexpected line {line!r}") from None
    return rows


_SYSFS_INT = ("object_size", "slab_size", "align", "order", "objs_per_slab", "destroy_by_rcu",
              "hwcache_align", "poison", "red_zone", "store_user", "reclaim_account",
              "sheaf_capacity", "cpu_partial", "min_partial")
_SYSFS_COUNT = ("objects", "total_objects", "slabs", "objects_partial")


@dataclass
class SysfsCache:
    """The attributes of one /sys/kernel/slab/<cache> directory."""

    name: str
    attrs: dict[str, int]
    ctor: str
    aliases: list[str] = field(default_factory=list)

    def get(self, key: str, default: int = 0) -> int:
        return self.attrs.get(key, default)


def _first_int(text: str) -> int:
    m = re.match(r"\s*(-?\d+)", text)
    if not m:
        raise ValueError(text)
    return int(m.group(1))


def sysfs_available(root: Path = SLAB_SYSFS) -> str | None:
    """None if /sys/kernel/slab can be read, else the one-line reason."""
    if not root.is_dir():
        return f"{root} does not exist (no sysfs or not SLUB)"
    probe = root / "kmalloc-64" / "slabs"
    try:
        with os.scandir(root) as it:
            next(it)
        if probe.exists():
            probe.read_text()
    except PermissionError:
        return f"{root} needs root (permission denied)"
    except (OSError, StopIteration) as exc:
        return f"cannot read {root}: {exc}"
    return None


def read_sysfs_caches(root: Path = SLAB_SYSFS, counts: bool = False) -> list[SysfsCache]:
    """Every real cache directory (alias symlinks are listed on their target)."""
    why = sysfs_available(root)
    if why:
        raise HostError(why)
    aliases: dict[str, list[str]] = {}
    dirs = []
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.is_symlink():
            aliases.setdefault(os.path.basename(os.readlink(e.path)), []).append(e.name)
        elif e.is_dir():
            dirs.append(e)
    out = []
    keys = _SYSFS_INT + (_SYSFS_COUNT if counts else ())
    for e in dirs:
        attrs: dict[str, int] = {}
        for k in keys:
            try:
                attrs[k] = _first_int(Path(e.path, k).read_text())
            except FileNotFoundError:
                continue
            except PermissionError:
                raise HostError(f"{root} needs root (permission denied)") from None
            except (OSError, ValueError):
                continue
        try:
            ctor = Path(e.path, "ctor").read_text().strip()
        except OSError:
            ctor = ""
        out.append(SysfsCache(e.name, attrs, ctor, aliases.get(e.name, [])))
    return out


def _cpu_list(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-")
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


@dataclass
class HostMachine:
    """CPU counts, cache line, page size and slab boot parameters of this machine."""

    present_cpus: int
    nr_cpu_ids: int
    cache_line: int
    page_size: int
    min_objects: int
    min_order: int
    max_order: int
    nodes: int


def read_machine(sys_root: Path = Path("/sys"), proc: Path = PROC) -> HostMachine:
    """Everything SLUB's sizing reads from the machine (layout.md §5)."""
    cpu = sys_root / "devices/system/cpu"
    try:
        present = len(_cpu_list((cpu / "present").read_text()))
        possible = _cpu_list((cpu / "possible").read_text())
        nr_cpu_ids = max(possible) + 1 if possible else present
    except (OSError, ValueError):
        present = nr_cpu_ids = os.cpu_count() or 1
    cache_line = 64
    try:
        m = re.search(r"^cache_alignment\s*:\s*(\d+)", (proc / "cpuinfo").read_text(), re.M)
        if m:
            cache_line = int(m.group(1))
    except OSError:
        pass
    params = {"min_objects": 0, "min_order": 0, "max_order": 3}
    try:
        cmdline = (proc / "cmdline").read_text()
    except OSError:
        cmdline = ""
    for word in cmdline.split():
        k, _, v = word.partition("=")
        for prefix in ("slab_", "slub_"):
            if k.startswith(prefix) and k[len(prefix):] in params and v.isdigit():
                params[k[len(prefix):]] = int(v)
    try:
        nodes = len(_cpu_list((sys_root / "devices/system/node/online").read_text()))
    except (OSError, ValueError):
        nodes = 1
    return HostMachine(present, nr_cpu_ids, cache_line, os.sysconf("SC_PAGE_SIZE"),
                       params["min_objects"], params["min_order"], params["max_order"], nodes)
