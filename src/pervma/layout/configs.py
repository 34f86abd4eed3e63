"""The configs the linux-mm thread discusses, priced before and after the series.

``pervma cost --configs`` computes, for each named config, ``sizeof(struct
vm_area_struct)`` on Linux 7.0 (per-VMA lock gated by ``PER_VMA_LOCK``) and on
``7.0-series`` (the fields unconditional), the growth of ``struct mm_struct``,
and the vm_area_struct slab geometry (SLUB rules of :mod:`pervma.layout.slub`,
cache flags of ``mm/vma_init.c``: ``SLAB_HWCACHE_ALIGN | SLAB_TYPESAFE_BY_RCU``
with the free pointer in ``vm_freeptr``).  Every number comes from the field
tables and the ABI engine; the thread's 68/192/256 B are only a column to
compare with.  :func:`check_with_gcc` compiles every table a row uses with the
ABI's gcc and ``_Static_assert``s each sizeof/offsetof; the running kernel's
row is compared with its BTF.

How each config's Kconfig values were obtained (only the symbols in
:data:`SYMBOLS` change these structs):

- ``i386-allnoconfig``: ``make allnoconfig`` on an x86 host runs with
  ``ARCH=x86``; ``config 64BIT`` in arch/x86/Kconfig is ``bool "64-bit kernel"
  if "$(ARCH)" = "x86"`` (prompt visible, so allnoconfig answers n: i386).
  Every visible bool is n (SMP, SWAP, NUMA, USERFAULTFD, ANON_VMA_NAME, X86_PAE,
  DEBUG_LOCK_ALLOC); MMU is always y on x86.  Reasoned from Kconfig defaults.
- ``x86_64-allnoconfig``: ``make ARCH=x86_64 allnoconfig``: 64BIT forced y,
  everything else as above.  Reasoned from Kconfig defaults.
- ``x86_64-defconfig``: arch/x86/configs/x86_64_defconfig sets ``SMP=y`` and
  ``NUMA=y`` and none of NUMA_BALANCING, USERFAULTFD, ANON_VMA_NAME or lock
  debugging; ``SWAP`` is ``default y`` (mm/Kconfig, BLOCK is on).  Read in the
  torvalds/linux copy at commit 34069d12e239 (a 6.x file: the search index
  holds no 7.0 copy; the symbols above were unchanged in every copy seen).
- ``x86_64-allyesconfig``: every visible bool y: SMP, NUMA, NUMA_BALANCING,
  SWAP, USERFAULTFD, ANON_VMA_NAME, DEBUG_LOCK_ALLOC (via PROVE_LOCKING) and
  LOCK_STAT; ``PREEMPT_RT`` depends on ``!COMPILE_TEST`` so it stays off and
  NUMA_BALANCING (``depends on SMP && NUMA && ... && !PREEMPT_RT``) is on.
  Declaration order assumed (RANDSTRUCT_NONE), as the thread's 256 B does.
  Reasoned from Kconfig defaults.
- ``arm64-defconfig``: arch/arm64/configs/defconfig sets ``NUMA=y`` and
  ``NUMA_BALANCING=y`` and no USERFAULTFD, ANON_VMA_NAME or lock debugging;
  SMP is ``def_bool y`` on arm64; SWAP ``default y``.  Read in the
  torvalds/linux copy at commit 000006155029 (6.15-era).
- ``running``: this machine's ``/proc/config.gz``, checked against its BTF.
"""

from __future__ import annotations

import math
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pervma.errors import PervmaError, UsageError
from pervma.layout import engine as E
from pervma.layout import slub, tables

SCHEMA = 1
BEFORE, AFTER = "7.0", tables.SERIES
PER_VMAS = 10_000

# The Kconfig symbols that change vm_area_struct / mm_struct, and how.
SYMBOLS: dict[str, str] = {
    "64BIT": "pointer and long size (4 or 8 B): every pointer member",
    "SMP": "before the series PER_VMA_LOCK depends on it; ____cacheline_aligned_in_smp "
           "(vm_refcnt, mm_struct's mm_count) aligns only with it; x86 NUMA needs it",
    "PER_VMA_LOCK": "vm_lock_seq, vm_refcnt (+ vmlock_dep_map); vma_writer_wait, mm_lock_seq "
                    "in mm_struct; def_bool y if ARCH_SUPPORTS_PER_VMA_LOCK && MMU && SMP "
                    "before the series, gone after it",
    "SWAP": "swap_readahead_info",
    "NUMA": "vm_policy",
    "NUMA_BALANCING": "numab_state",
    "USERFAULTFD": "vm_userfaultfd_ctx is one pointer, else an empty struct (0 B)",
    "ANON_VMA_NAME": "anon_name",
    "DEBUG_LOCK_ALLOC": "vmlock_dep_map in vm_area_struct, dep_map in seqcount_t mm_lock_seq",
    "LOCK_STAT": "struct lockdep_map grows by cpu and ip (+8 B on 64-bit)",
    "X86_PAE": "i386 pgprot_t becomes 8 B",
    "MMU": "vm_region exists only without it",
    "L1_CACHE_SHIFT": "the alignment ____cacheline_aligned_in_smp gives (64 B here)",
}


@dataclass(frozen=True)
class NamedConfig:
    """A config the thread names: its arch, Kconfig values and their source."""

    key: str
    title: str
    arch: str
    options: dict[str, str]
    source: str
    thread: int | None = None
    thread_claim: str = ""
    extra: dict[str, str] = field(default_factory=dict)


_NONE = {"MMU": "y"}
CONFIGS: tuple[NamedConfig, ...] = (
    NamedConfig("i386-allnoconfig", "i386 allnoconfig (the thread's \"x86 allnoconfig\")",
                "i386", dict(_NONE),
                "Kconfig defaults: ARCH=x86 makes 64BIT a visible prompt, answered n",
                68, "x86 allnoconfig: 68 B before the series"),
    NamedConfig("x86_64-allnoconfig", "x86_64 allnoconfig (ARCH=x86_64)", "x86_64",
                dict(_NONE), "Kconfig defaults: ARCH=x86_64 forces 64BIT"),
    NamedConfig("x86_64-defconfig", "x86_64 defconfig", "x86_64",
                {"MMU": "y", "SMP": "y", "NUMA": "y", "SWAP": "y"},
                "arch/x86/configs/x86_64_defconfig (SMP, NUMA) + Kconfig defaults (SWAP)",
                192, "typical x86_64: 192 B"),
    NamedConfig("x86_64-allyesconfig", "x86_64 allyesconfig (lockdep)", "x86_64",
                {"MMU": "y", "SMP": "y", "NUMA": "y", "NUMA_BALANCING": "y", "SWAP": "y",
                 "USERFAULTFD": "y", "ANON_VMA_NAME": "y", "DEBUG_LOCK_ALLOC": "y",
                 "LOCK_STAT": "y", "DEBUG_SPINLOCK": "y", "DEBUG_RWSEMS": "y"},
                "Kconfig defaults: every visible bool y (PREEMPT_RT off: !COMPILE_TEST)",
                256, "lockdep builds: 256 B"),
    NamedConfig("arm64-defconfig", "arm64 defconfig", "arm64",
                {"MMU": "y", "SMP": "y", "NUMA": "y", "NUMA_BALANCING": "y", "SWAP": "y"},
                "arch/arm64/configs/defconfig (NUMA, NUMA_BALANCING) + Kconfig defaults "
                "(SMP def_bool y on arm64, SWAP)"),
)


def named(key: str) -> NamedConfig:
    for c in CONFIGS:
        if c.key == key:
            return c
    raise UsageError(f"unknown config '{key}'; choose one of "
                     f"{', '.join(c.key for c in CONFIGS)}")


def slab_machine(cfg: tables.KConfig, cpus: int, cache_line: int = 64) -> slub.Machine:
    """SLUB's inputs for ``cfg``: one CPU without SMP, else ``cpus``."""
    n = cpus if cfg.on("SMP") else 1
    return slub.Machine(present_cpus=n, nr_cpu_ids=n, cache_line=cache_line,
                        ptr=cfg.abi.ptr)


def _side(cfg: tables.KConfig, cpus: int, cache_line: int) -> dict[str, Any]:
    """One version of one config: vm_area_struct, its slab, mm_struct's delta."""
    vma = E.layout(tables.vm_area_struct(cfg), cfg.abi)
    refcnt = next((m.byte_offset for m in vma.members if m.name == "vm_refcnt"), None)
    c = tables.vma_cache(cfg)
    flags = slub.CacheFlags(bool(c["hwcache_align"]), bool(c["typesafe_by_rcu"]),
                            bool(c["use_freeptr_offset"]))
    s = slub.size_cache(vma.size, 0, flags, slab_machine(cfg, cpus, cache_line))
    pages = math.ceil(PER_VMAS / s.objs_per_slab) << s.order
    return {"version": cfg.version, "per_vma_lock": cfg.on("PER_VMA_LOCK"),
            "sizeof": vma.size, "align": vma.align, "vm_refcnt_offset": refcnt,
            "slab": {"slab_size": s.slab_size, "align": s.align, "order": s.order,
                     "objs_per_slab": s.objs_per_slab,
                     "pages_per_10000": pages, "bytes_per_10000": pages * slub.PAGE_SIZE},
            "mm_struct_delta": tables.mm_lock_delta(cfg), "notes": list(cfg.notes)}


def row(nc: NamedConfig, cpus: int, cache_line: int = 64) -> dict[str, Any]:
    """The row of ``nc``: before (7.0) and after (7.0-series) and the difference."""
    before = tables.config_for(nc.arch, BEFORE, nc.options, dict(nc.extra))
    after = tables.config_for(nc.arch, AFTER, nc.options, dict(nc.extra))
    b, a = _side(before, cpus, cache_line), _side(after, cpus, cache_line)
    return {
        "key": nc.key, "title": nc.title, "arch": before.arch, "source": nc.source,
        "options": {k: v for k, v in sorted(before.options.items())
                    if k in tables.OPTIONS and v != "n"},
        "smp": before.on("SMP"),
        "slab_cpus": cpus if before.on("SMP") else 1,
        "thread_sizeof": nc.thread, "thread_claim": nc.thread_claim,
        "before": b, "after": a,
        "difference": {
            "sizeof": a["sizeof"] - b["sizeof"],
            "slab_size": a["slab"]["slab_size"] - b["slab"]["slab_size"],
            "pages_per_10000": a["slab"]["pages_per_10000"] - b["slab"]["pages_per_10000"],
            "bytes_per_10000": a["slab"]["bytes_per_10000"] - b["slab"]["bytes_per_10000"],
            "mm_struct_shift": a["mm_struct_delta"]["shift"] - b["mm_struct_delta"]["shift"],
        },
        "_cfgs": (before, after),
    }


def running_version(release: str | None = None) -> str | None:
    """The field-table version of a kernel release string (``6.18.44-x`` -> ``6.18``)."""
    rel = release or platform.release()
    try:
        major, minor = (int(x) for x in rel.split("-")[0].split(".")[:2])
    except ValueError:
        return None
    v = f"{major}.{minor}"
    if v in tables.VERSIONS:
        return v
    return "7.0" if (major, minor) > (7, 0) else None


def running_row(cpus: int, cache_line: int, btf_path: str | Path | None = None,
                config_path: str | Path | None = None) -> dict[str, Any]:
    """The running kernel: its .config through the tables, checked against BTF."""
    from pervma.host import proc
    from pervma.layout import api

    opts = tables.read_config_file(config_path or proc.CONFIG_GZ)
    arch = tables.arch_of_config(opts)
    if arch is None:
        raise UsageError("cannot tell the architecture from the running kernel's .config")
    nc = NamedConfig("running", f"this machine ({platform.release()})", arch, opts,
                     f"{config_path or proc.CONFIG_GZ} checked against "
                     f"{btf_path or proc.BTF_VMLINUX}")
    r = row(nc, cpus, cache_line)
    version = running_version()
    btf: dict[str, Any] = {"version_table": version}
    vc = api.running_composite("vm_area_struct", btf_path)
    btf["vm_area_struct_sizeof"] = vc.size
    if version is not None:
        cfg = tables.config_for(arch, version, opts)
        btf["table_sizeof"] = E.layout(tables.vm_area_struct(cfg), cfg.abi).size
        btf["vm_area_struct_ok"] = btf["table_sizeof"] == vc.size
        region = tables.mm_lock_delta(cfg)
        btf["table_mm_shift"] = region["shift"]
    mc = api.running_composite("mm_struct", btf_path)
    btf["mm_struct_sizeof"] = mc.size
    try:  # kernel/fork.c: the object is sizeof + cpumask_size() + mm_cid_size()
        obj = int((proc.SLAB_SYSFS / "mm_struct" / "object_size").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        obj = None
    if obj is not None and btf_path is None:
        s = slub.size_cache(obj, 0, slub.CacheFlags(hwcache_align=True),
                            slub.Machine(cpus, cpus, cache_line))
        btf["mm_struct_object_size"] = obj
        btf["mm_struct_slab"] = {"slab_size": s.slab_size, "order": s.order,
                                 "objs_per_slab": s.objs_per_slab}
    fields = [x for x in tables.MM_LOCK_FIELDS if api.has_member(mc, x)]
    if fields:
        gated = api.relayout(mc, E.abi(arch), remove=tuple(fields))
        btf["mm_struct_sizeof_without_lock_fields"] = gated.size
        btf["mm_struct_delta"] = mc.size - gated.size
        btf["mm_shift"] = api.member_shift(mc, "mmlist", fields[-1])
        if "table_mm_shift" in btf:
            btf["mm_shift_ok"] = btf["mm_shift"] == btf["table_mm_shift"]
    r["btf"] = btf
    return r


# ------------------------------------------------------------------ gcc
def check_with_gcc(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Compile every table the rows use with its ABI's gcc; ``{key: verdict}``.

    Each struct's sizeof, alignof and every member offset are
    ``_Static_assert``ed (:func:`pervma.layout.engine.c_checks`), so "ok" means
    gcc lays the tables out exactly as the engine did."""
    by_abi: dict[str, list[tuple[str, str, E.Struct]]] = {}
    for r in rows:
        for side, cfg in zip(("before", "after"), r["_cfgs"], strict=True):
            tag = f"{r['key']}_{side}".replace("-", "_").replace(".", "_")
            by_abi.setdefault(cfg.arch, []).append((r["key"], f"vma_{tag}",
                                                   tables.vm_area_struct(cfg)))
            by_abi[cfg.arch].append((r["key"], f"mm_{tag}", tables.mm_struct_region(cfg)))
    verdict: dict[str, str] = {}
    for arch, items in by_abi.items():
        a = E.abi(arch)
        keys = sorted({k for k, _, _ in items})
        if shutil.which(a.gcc[0]) is None:
            for k in keys:
                verdict[k] = f"not checked: {a.gcc[0]} not installed"
            continue
        src = "#include <stddef.h>\n"
        n = 0
        for _, tag, s in items:
            body, exprs = E.c_checks(s, tag, a)
            src += body.replace("#include <stddef.h>\n", "")
            n += len(exprs)
        with tempfile.TemporaryDirectory(prefix="pervma-gcc-") as d:
            f = Path(d) / f"{arch}.c"
            f.write_text(src)
            cmd = [*a.gcc, "-std=gnu11", "-fsyntax-only", "-w", str(f)]
            if arch == "i386":
                cmd.insert(2, "-ffreestanding")
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as exc:
                for k in keys:
                    verdict[k] = f"not checked: {a.gcc[0]} failed to run ({exc})"
                continue
        if p.returncode == 0:
            for k in keys:
                verdict[k] = f"gcc ok ({' '.join(a.gcc)}: {n} asserts for {arch})"
            continue
        errors = [ln for ln in p.stderr.splitlines() if "error" in ln]
        for k in keys:
            bad = [e for e in errors if k.replace("-", "_") in e]
            verdict[k] = ("gcc MISMATCH: " + "; ".join(bad[:3])) if bad else \
                f"gcc failed: {(errors or p.stderr.splitlines() or ['?'])[0]}"
    return verdict


def table(cpus: int, cache_line: int = 64, btf_path: str | Path | None = None,
          gcc: bool = True, running: bool = True) -> dict[str, Any]:
    """Every row, checked (see the module docstring); JSON-ready.

    Schema (``schema`` 1): ``{schema, before, after, per_vmas, cpus, cache_line,
    symbols: {NAME: effect}, configs: [row], skipped: [reason]}``; a row is
    ``{key, title, arch, source, options, smp, slab_cpus, thread_sizeof,
    thread_claim, before, after, difference, check[, btf]}`` (``btf``, running
    kernel only: ``vm_area_struct_sizeof``, ``table_sizeof``, ``mm_struct_sizeof``,
    ``mm_struct_delta`` (exact, by re-laying out BTF without the fields),
    ``mm_shift``, ``mm_struct_object_size`` and ``mm_struct_slab`` from sysfs)
    where ``before``
    and ``after`` are ``{version, per_vma_lock, sizeof, align,
    vm_refcnt_offset, slab: {slab_size, align, order, objs_per_slab,
    pages_per_10000, bytes_per_10000}, mm_struct_delta: {fields, shift,
    struct_align, sizeof, sizeof_range}, notes}`` and ``difference`` is
    after minus before (``sizeof``, ``slab_size``, ``pages_per_10000``,
    ``bytes_per_10000``, ``mm_struct_shift``).
    """
    if cpus <= 0:
        raise UsageError(f"--cpus must be positive, got {cpus}")
    rows = [row(nc, cpus, cache_line) for nc in CONFIGS]
    skipped: list[str] = []
    if running:
        try:
            rows.append(running_row(cpus, cache_line, btf_path))
        except PervmaError as exc:
            if btf_path is not None:
                raise  # a BTF the user named must be readable
            skipped.append(f"running kernel: {exc}")
    verdict = check_with_gcc(rows) if gcc else {}
    for r in rows:
        checks = []
        if r["thread_sizeof"] is not None:
            ok = r["thread_sizeof"] == r["before"]["sizeof"]
            checks.append(f"thread {r['thread_sizeof']} B " + ("reproduced" if ok else
                                                               "NOT reproduced"))
        if "btf" in r:
            b = r["btf"]
            if "vm_area_struct_ok" in b:
                checks.append(f"BTF sizeof {b['vm_area_struct_sizeof']} B " +
                              ("= table" if b["vm_area_struct_ok"] else
                               f"!= table {b['table_sizeof']} B"))
        if r["key"] in verdict:
            checks.append(verdict[r["key"]])
        r["check"] = checks
    for r in rows:
        del r["_cfgs"]
    return {"schema": SCHEMA, "before": BEFORE, "after": AFTER, "per_vmas": PER_VMAS,
            "cpus": cpus, "cache_line": cache_line, "symbols": SYMBOLS,
            "configs": rows, "skipped": skipped}
