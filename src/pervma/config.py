"""Kconfig-like options that change the model's behaviour, and the presets.

``Config.from_fragment(text)`` reads a ``.config`` fragment (``CONFIG_X=y``,
``# CONFIG_X is not set``); a malformed line is a one-line
:class:`~pervma.errors.ConfigError` naming the line, and options pervma does
not model are listed in ``Config.unknown``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from pervma.errors import ConfigError

ARCHES = ("x86_64", "arm64", "i386")

PRESETS: dict[str, dict[str, object]] = {
    # Before the series, on an arch without ARCH_SUPPORTS_PER_VMA_LOCK: mmap_lock only.
    "legacy": dict(SMP=True, PREEMPT=True, PER_VMA_LOCK=False, PER_VMA_LOCK_STATS=False,
                   SERIES_CALLERS=False),
    # Linux 7.0 plus the series: per-VMA locks always built.
    "universal": dict(SMP=True, PREEMPT=True, PER_VMA_LOCK=True, PER_VMA_LOCK_STATS=True),
    # The series with SMP=n, PREEMPT=y (preemptible RCU).
    "universal-up": dict(SMP=False, PREEMPT=True, PER_VMA_LOCK=True, PER_VMA_LOCK_STATS=True),
    # The series with SMP=n, PREEMPT=n (tiny RCU): switches only where a thread sleeps.
    "universal-up-nopreempt": dict(
        SMP=False, PREEMPT=False, PER_VMA_LOCK=True, PER_VMA_LOCK_STATS=True
    ),
    # Before the series with SMP=n, PREEMPT=y: PER_VMA_LOCK depended on SMP, so a
    # uniprocessor kernel had mmap_lock only (not part of the four-preset sweeps).
    "legacy-up": dict(SMP=False, PREEMPT=True, PER_VMA_LOCK=False, PER_VMA_LOCK_STATS=False,
                      SERIES_CALLERS=False),
}

PRESET_NAMES = tuple(PRESETS)
# The four presets of the sweeps (check --all, the simulator's defaults); legacy-up is
# the pre-series uniprocessor world, compared against universal-up where SMP=n matters.
SWEEP_PRESETS = ("legacy", "universal", "universal-up", "universal-up-nopreempt")

# Kconfig symbols -> Config field.
_SYMBOLS = {
    "SMP": "SMP",
    "PREEMPT": "PREEMPT",
    "PREEMPTION": "PREEMPT",
    "PER_VMA_LOCK": "PER_VMA_LOCK",
    "PER_VMA_LOCK_STATS": "PER_VMA_LOCK_STATS",
    "DEBUG_LOCK_ALLOC": "DEBUG_LOCK_ALLOC",
    "LOCKDEP": "DEBUG_LOCK_ALLOC",
    "DEBUG_VM": "DEBUG_VM",
    "KASAN": "KASAN",
}
_ARCH_SYMBOLS = {"X86_64": "x86_64", "ARM64": "arm64", "X86_32": "i386"}
_LINE = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")


# The ids of kernel/bugs.py's catalogue, loaded on the first Config.bug() call:
# config.py imports no model at module scope (the command's start-up stays light).
_KNOWN_BUGS: frozenset[str] = frozenset()


def _catalogued(bug_id: str) -> bool:
    global _KNOWN_BUGS
    from pervma.kernel.bugs import BUG_IDS

    _KNOWN_BUGS = frozenset(BUG_IDS)
    return bug_id in _KNOWN_BUGS


@dataclass(frozen=True, slots=True)
class Config:
    """The options that change behaviour.  Frozen: a System keeps its config."""

    arch: str = "x86_64"
    SMP: bool = True
    PREEMPT: bool = True
    PER_VMA_LOCK: bool = True
    PER_VMA_LOCK_STATS: bool = True
    DEBUG_LOCK_ALLOC: bool = True  # lockdep-style held-lock tracking in the model
    DEBUG_VM: bool = True  # VM_BUG_ON / VM_WARN_ON checks
    KASAN: bool = True  # poison freed objects, report use-after-free
    # Patches 2-5 of the series: binder and TCP use the wait-for-writers
    # lookup instead of their mmap_lock fallbacks (needs PER_VMA_LOCK).
    SERIES_CALLERS: bool = True
    nr_cpus: int = 4
    max_map_count: int = 65530
    name: str = "custom"
    bugs: frozenset[str] = field(default_factory=frozenset)
    unknown: tuple[str, ...] = ()

    @classmethod
    def preset(cls, name: str) -> Config:
        if name not in PRESETS:
            raise ConfigError(
                f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}"
            )
        opts = dict(PRESETS[name])
        if not opts["SMP"]:
            opts["nr_cpus"] = 1
        return cls(name=name, **opts)  # type: ignore[arg-type]

    def with_(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def with_bugs(self, *ids: str) -> Config:
        return dataclasses.replace(self, bugs=frozenset(self.bugs | set(ids)))

    def bug(self, bug_id: str) -> bool:
        """Is historical bug ``bug_id`` (kernel/bugs.py) switched on?  The one
        accessor the model's switch sites use; an id outside the catalogue is
        a typo in the model, not a user error."""
        assert bug_id in _KNOWN_BUGS or _catalogued(bug_id), f"unknown bug switch {bug_id!r}"
        return bug_id in self.bugs

    @property
    def one_cpu(self) -> bool:
        return not self.SMP

    @classmethod
    def from_fragment(cls, text: str, base: Config | None = None) -> Config:
        """Apply a ``.config`` fragment on top of ``base`` (default: ``universal``)."""
        cfg = base or cls.preset("universal")
        changes: dict[str, object] = {}
        unknown: list[str] = []
        arch = cfg.arch
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            m = _UNSET.match(line)
            if m:
                sym, value = m.group(1), "n"
            elif line.startswith("#"):
                continue
            else:
                m = _LINE.match(line)
                if not m:
                    raise ConfigError(f"line {lineno}: malformed .config line {raw.strip()!r}")
                sym, value = m.group(1), m.group(2).strip()
            if sym in _ARCH_SYMBOLS:
                if value == "y":
                    arch = _ARCH_SYMBOLS[sym]
                continue
            if sym == "NR_CPUS":
                # ASCII digits only ('²'.isdigit() holds); at most x86_64's
                # NR_CPUS_RANGE_END (8192, arch/x86/Kconfig).
                if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 8192:
                    raise ConfigError(f"line {lineno}: CONFIG_NR_CPUS wants a positive number "
                                      "(at most 8192)")
                changes["nr_cpus"] = int(value)
                continue
            if sym not in _SYMBOLS:
                unknown.append(f"CONFIG_{sym}")
                continue
            if value not in ("y", "n", "m"):
                raise ConfigError(
                    f"line {lineno}: CONFIG_{sym} is a bool, got {value!r} (use y or n)"
                )
            changes[_SYMBOLS[sym]] = value != "n"
        changes["arch"] = arch
        if changes.get("SMP") is False and "nr_cpus" not in changes:
            changes["nr_cpus"] = 1
        new = dataclasses.replace(cfg, **changes, name="fragment",  # type: ignore[arg-type]
                                  unknown=tuple(unknown))
        if new.SERIES_CALLERS and not new.PER_VMA_LOCK:
            new = dataclasses.replace(new, SERIES_CALLERS=False)
        if new.PER_VMA_LOCK_STATS and not new.PER_VMA_LOCK:
            # Before the series PER_VMA_LOCK_STATS depended on PER_VMA_LOCK.
            new = dataclasses.replace(new, PER_VMA_LOCK_STATS=False)
        if not new.SMP and new.nr_cpus != 1:
            raise ConfigError("CONFIG_SMP is off but CONFIG_NR_CPUS is not 1")
        return new
