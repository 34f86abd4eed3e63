"""Field tables of ``struct vm_area_struct`` by kernel version and config.

Sources: ``include/linux/mm_types.h`` (see docs layout.md §1.1).  Versions:

- ``6.14``: the per-VMA lock is a separate ``struct vma_lock`` (an
  ``rw_semaphore``) reached through ``vm_lock``, plus ``bool detached`` and
  ``vm_lock_seq``; ``vm_rcu`` shares a union with ``vm_start``/``vm_end``.
- ``6.15``/``6.16``: ``vm_lock_seq`` + ``refcount_t vm_refcnt
  ____cacheline_aligned_in_smp`` (+ ``vmlock_dep_map`` under lockdep), the
  ``vm_freeptr`` union arm, lesser-used fields moved to the third line.
- ``6.17``–``6.19``: + ``pfnmap_track_ctx`` (x86 only: ``__HAVE_PFNMAP_TRACKING``).
- ``7.0``: the flags union arm becomes ``vma_flags_t`` (same size).
- ``7.0-series``: 7.0 plus "make per-VMA locks available universally": the
  ``PER_VMA_LOCK`` option and its ``ARCH_SUPPORTS_PER_VMA_LOCK`` gate are gone,
  so ``vm_lock_seq``/``vm_refcnt`` (and ``vma_writer_wait``/``mm_lock_seq`` in
  mm_struct) exist in every config, SMP=n included; ``vm_refcnt`` keeps
  ``____cacheline_aligned_in_smp``, which aligns nothing on SMP=n.

Kconfig rules applied by :func:`config_for` (mm/Kconfig, arch/x86/Kconfig,
init/Kconfig as of v7.0): ``PER_VMA_LOCK`` is ``def_bool y`` depending on
``ARCH_SUPPORTS_PER_VMA_LOCK && MMU && SMP`` (x86 selects it for X86_64 only);
x86 ``NUMA`` depends on ``SMP``; ``NUMA_BALANCING`` on ``SMP && NUMA``;
``____cacheline_aligned_in_smp`` is ``__aligned__(L1_CACHE_BYTES)`` only when
``SMP``.  An option given explicitly (``--set``) wins over these rules (a
counterfactual), and the result notes it; ``PER_VMA_LOCK=n`` on ``7.0-series``
is refused, since the option no longer exists there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pervma.errors import ConfigError, UsageError
from pervma.layout import engine as E
from pervma.layout import files

VERSIONS = ("6.14", "6.15", "6.16", "6.17", "6.18", "6.19", "7.0", "7.0-series")

# Options the tables read; everything else in a .config is ignored.
OPTIONS = ("SMP", "MMU", "PER_VMA_LOCK", "SWAP", "NUMA", "NUMA_BALANCING", "USERFAULTFD",
           "ANON_VMA_NAME", "DEBUG_LOCK_ALLOC", "LOCK_STAT", "X86_PAE", "DEBUG_SPINLOCK",
           "DEBUG_RWSEMS", "RWSEM_SPIN_ON_OWNER")

# Option sets behind the presets (all others off, as after allnoconfig).
PRESET_OPTIONS: dict[str, dict[str, str]] = {
    "tiny": {"MMU": "y"},
    "typical": {"MMU": "y", "SMP": "y", "SWAP": "y", "NUMA": "y", "NUMA_BALANCING": "y",
                "USERFAULTFD": "y", "ANON_VMA_NAME": "y"},
    "lockdep": {"MMU": "y", "SMP": "y", "SWAP": "y", "NUMA": "y", "NUMA_BALANCING": "y",
                "USERFAULTFD": "y", "ANON_VMA_NAME": "y", "DEBUG_LOCK_ALLOC": "y"},
    # The config of the 6.15 series' author: his published 160 B vm_area_struct.
    "suren": {"MMU": "y", "SMP": "y", "SWAP": "y", "NUMA": "y"},
}


@dataclass(frozen=True)
class Preset:
    """A named (arch, version, options) triple."""

    arch: str
    version: str
    options: str
    doc: str
    extra: tuple[tuple[str, str], ...] = ()


PRESETS: dict[str, Preset] = {
    "i386-tiny": Preset("i386", "6.18", "tiny", "make allnoconfig on an x86 host (i386, SMP=n): 68 B"),
    "x86_64-tiny": Preset("x86_64", "6.18", "tiny", "make ARCH=x86_64 allnoconfig: 136 B"),
    "x86_64-typical": Preset("x86_64", "6.18", "typical",
                             "distro-like SMP config, no lockdep: 192 B"),
    "x86_64-lockdep": Preset("x86_64", "6.18", "lockdep", "typical + DEBUG_LOCK_ALLOC: 256 B"),
    "x86_64-nolock": Preset("x86_64", "6.18", "typical", "typical with PER_VMA_LOCK=n: 176 B",
                            (("PER_VMA_LOCK", "n"),)),
    "x86_64-up": Preset("x86_64", "6.18", "typical", "typical with SMP=n: 160 B",
                        (("SMP", "n"),)),
    "x86_64-6.14": Preset("x86_64", "6.14", "typical", "6.14 with the separate vma_lock"),
    "x86_64-6.14-suren": Preset("x86_64", "6.14", "suren",
                                "6.14, the series author's config: 160 B + 40 B vma_lock"),
    "x86_64-universal": Preset("x86_64", "7.0-series", "typical", "7.0 + the series: 192 B"),
    "i386-universal": Preset("i386", "7.0-series", "typical",
                             "i386 SMP with per-VMA locks (possible only with the series)"),
    "arm64-typical": Preset("arm64", "6.18", "typical", "arm64 SMP config"),
    "arm-typical": Preset("arm", "6.18", "typical", "32-bit ARM EABI SMP config"),
    "riscv64-typical": Preset("riscv64", "6.18", "typical", "riscv64 SMP config"),
}


@dataclass
class KConfig:
    """The options a table needs, after Kconfig's dependency rules."""

    arch: str
    version: str
    options: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def on(self, name: str) -> bool:
        return self.options.get(name, "n") in ("y", "m")

    @property
    def abi(self) -> E.ABI:
        return E.abi(self.arch)

    @property
    def l1_cache(self) -> int:
        for key in ("X86_L1_CACHE_SHIFT", "ARM_L1_CACHE_SHIFT", "L1_CACHE_SHIFT"):
            v = self.options.get(key)
            if v and v.isdigit():
                return 1 << int(v)
        return self.abi.l1_cache

    def vnum(self) -> tuple[int, int]:
        major, minor = self.version.split("-")[0].split(".")
        return int(major), int(minor)


SERIES = "7.0-series"


def arch_supports_pvl(arch: str, version: str) -> bool:
    """ARCH_SUPPORTS_PER_VMA_LOCK before the series (x86: X86_64 only)."""
    if version == SERIES:
        return True
    return arch in ("x86_64", "arm64", "riscv64")


def config_for(arch: str, version: str, options: dict[str, str],
               explicit: dict[str, str] | None = None) -> KConfig:
    """Apply Kconfig's rules to ``options``; ``explicit`` settings are kept as given."""
    a = E.abi(arch)
    if version not in VERSIONS:
        raise UsageError(f"unknown version '{version}'; choose one of {', '.join(VERSIONS)}")
    opts = {k: v for k, v in options.items()}
    explicit = dict(explicit or {})
    opts.update(explicit)
    cfg = KConfig(a.name, version, opts)

    def derive(name: str, value: bool, why: str) -> None:
        want = "y" if value else "n"
        if name in explicit:
            if (explicit[name] in ("y", "m")) != value:
                cfg.notes.append(f"CONFIG_{name}={explicit[name]} kept although Kconfig "
                                 f"would give {want} ({why})")
            return
        opts[name] = want

    derive("MMU", opts.get("MMU", "y") in ("y", "m"), "default")
    if a.name in ("x86_64", "i386"):
        derive("NUMA", cfg.on("NUMA") and cfg.on("SMP"), "x86 NUMA depends on SMP")
    derive("NUMA_BALANCING", cfg.on("NUMA_BALANCING") and cfg.on("NUMA") and cfg.on("SMP"),
           "NUMA_BALANCING depends on SMP && NUMA")
    derive("X86_PAE", cfg.on("X86_PAE") and a.name == "i386", "X86_PAE is i386 only")
    derive("LOCK_STAT", cfg.on("LOCK_STAT") and cfg.on("DEBUG_LOCK_ALLOC"),
           "LOCK_STAT selects DEBUG_LOCK_ALLOC")
    derive("RWSEM_SPIN_ON_OWNER", cfg.on("SMP"), "depends on SMP")
    if version == SERIES:
        # The series removes the option: the lock fields are unconditional.
        if "PER_VMA_LOCK" in explicit and explicit["PER_VMA_LOCK"] not in ("y", "m"):
            raise UsageError("CONFIG_PER_VMA_LOCK does not exist in 7.0-series (the series "
                             "makes the per-VMA lock fields unconditional); use --version 7.0 "
                             "for the gated layout")
        opts["PER_VMA_LOCK"] = "y"
        return cfg
    pvl = arch_supports_pvl(a.name, version) and cfg.on("MMU") and cfg.on("SMP")
    derive("PER_VMA_LOCK", pvl, "def_bool y if ARCH_SUPPORTS_PER_VMA_LOCK && MMU && SMP")
    return cfg


def parse_config(text: str, source: str = ".config") -> dict[str, str]:
    """``CONFIG_X=value`` lines and ``# CONFIG_X is not set`` of a .config file."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("# CONFIG_") and line.endswith(" is not set"):
                out[line[9:-11]] = "n"
            continue
        if not line.startswith("CONFIG_") or "=" not in line:
            raise ConfigError(f"{source}:{n}: not a CONFIG_ line: {raw[:80]!r}")
        k, v = line[7:].split("=", 1)
        if not k:
            raise ConfigError(f"{source}:{n}: empty option name: {raw[:80]!r}")
        out[k] = v.strip('"')
    return out


def read_config_file(path: str | Path) -> dict[str, str]:
    """A .config (plain or gzip-compressed, like /proc/config.gz), bounded in
    size and strictly UTF-8 (a one-line ConfigError otherwise)."""
    data = files.read_bounded(path, files.CONFIG_LIMIT, "config", ConfigError)
    if data[:2] == b"\x1f\x8b":
        data = files.gunzip_bounded(data, files.CONFIG_LIMIT, f"config {path}", ConfigError)
    if b"\0" in data:
        raise ConfigError(f"config {path} contains NUL bytes: not a .config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"config {path}:{line}: not UTF-8 text (byte "
                          f"0x{data[exc.start]:02x})") from None
    return parse_config(text, str(path))


def arch_of_config(opts: dict[str, str]) -> str | None:
    """Guess the ABI from a full .config."""
    if opts.get("X86_64") == "y":
        return "x86_64"
    if opts.get("X86_32") == "y" or (opts.get("X86") == "y" and opts.get("64BIT") != "y"):
        return "i386"
    if opts.get("ARM64") == "y":
        return "arm64"
    if opts.get("ARM") == "y":
        return "arm"
    if opts.get("RISCV") == "y" and opts.get("64BIT") == "y":
        return "riscv64"
    return None


def parse_set(items: list[str]) -> dict[str, str]:
    """``--set CONFIG_X=y`` arguments (the ``CONFIG_`` prefix is optional)."""
    out = {}
    for it in items:
        if "=" not in it:
            raise UsageError(f"--set needs CONFIG_NAME=value, got '{it}'")
        k, v = it.split("=", 1)
        k = k.removeprefix("CONFIG_").strip()
        if not k or not v.strip():
            raise UsageError(f"--set needs CONFIG_NAME=value, got '{it}'")
        out[k] = v
    return out


def preset_config(name: str) -> KConfig:
    """The config of preset ``name``."""
    if name not in PRESETS:
        raise UsageError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    return config_for(p.arch, p.version, PRESET_OPTIONS[p.options], dict(p.extra))


# ------------------------------------------------------------------ building blocks
def _ul() -> E.Scalar:
    return E.Scalar("unsigned long", "long unsigned int")


def _ptr(to: str) -> E.Pointer:
    return E.Pointer(to)


def list_head() -> E.Struct:
    return E.Struct("list_head", (E.Field("next", _ptr("struct list_head")),
                                  E.Field("prev", _ptr("struct list_head"))))


def rb_node() -> E.Struct:
    return E.Struct("rb_node", (E.Field("__rb_parent_color", _ul()),
                                E.Field("rb_right", _ptr("struct rb_node")),
                                E.Field("rb_left", _ptr("struct rb_node"))), aligned=0)


def atomic_long_t() -> E.Struct:
    return E.Struct(None, (E.Field("counter", E.Scalar("long", "s64")),),
                    typedef="atomic_long_t")


def atomic_t(typedef: str = "atomic_t") -> E.Struct:
    return E.Struct(None, (E.Field("counter", E.Scalar("int")),), typedef=typedef)


def refcount_t() -> E.Struct:
    return E.Struct(None, (E.Field("refs", atomic_t()),), typedef="refcount_t")


def lockdep_map(cfg: KConfig) -> E.Struct:
    fields = [E.Field("key", _ptr("struct lock_class_key")),
              E.Field("class_cache", E.Array(_ptr("struct lock_class"), 2)),
              E.Field("name", _ptr("const char")),
              E.Field("wait_type_outer", E.Scalar("u8")),
              E.Field("wait_type_inner", E.Scalar("u8")),
              E.Field("lock_type", E.Scalar("u8"))]
    if cfg.on("LOCK_STAT"):
        fields += [E.Field("cpu", E.Scalar("int")), E.Field("ip", _ul())]
    return E.Struct("lockdep_map", tuple(fields))


def raw_spinlock(cfg: KConfig) -> E.Struct:
    fields: list[E.Field] = []
    if cfg.on("SMP") or cfg.on("DEBUG_SPINLOCK"):
        fields.append(E.Field("raw_lock", atomic_t("arch_spinlock_t")))
    else:
        fields.append(E.Field("raw_lock", E.Struct(None, (), typedef="arch_spinlock_t")))
    if cfg.on("DEBUG_SPINLOCK"):
        fields += [E.Field("magic", E.Scalar("unsigned int")),
                   E.Field("owner_cpu", E.Scalar("unsigned int")),
                   E.Field("owner", _ptr("void"))]
    if cfg.on("DEBUG_LOCK_ALLOC"):
        fields.append(E.Field("dep_map", lockdep_map(cfg)))
    return E.Struct(None, tuple(fields), typedef="raw_spinlock_t")


def rw_semaphore(cfg: KConfig) -> E.Struct:
    fields = [E.Field("count", atomic_long_t()), E.Field("owner", atomic_long_t())]
    if cfg.on("RWSEM_SPIN_ON_OWNER"):
        fields.append(E.Field("osq", E.Struct("optimistic_spin_queue",
                                              (E.Field("tail", atomic_t()),))))
    fields += [E.Field("wait_lock", raw_spinlock(cfg)), E.Field("wait_list", list_head())]
    if cfg.on("DEBUG_RWSEMS"):
        fields.append(E.Field("magic", _ptr("void")))
    if cfg.on("DEBUG_LOCK_ALLOC"):
        fields.append(E.Field("dep_map", lockdep_map(cfg)))
    return E.Struct("rw_semaphore", tuple(fields))


def vma_lock(cfg: KConfig) -> E.Struct:
    """``struct vma_lock { struct rw_semaphore lock; }`` (6.4–6.14 only)."""
    return E.Struct("vma_lock", (E.Field("lock", rw_semaphore(cfg)),))


def _pgprot(cfg: KConfig) -> E.Struct:
    t = E.Scalar("u64") if cfg.on("X86_PAE") else _ul()
    return E.Struct(None, (E.Field("pgprot", t),), typedef="pgprot_t")


# ------------------------------------------------------------------ vm_area_struct
def vm_area_struct(cfg: KConfig) -> E.Struct:
    """``struct vm_area_struct`` for ``cfg`` (declaration order, RANDSTRUCT off)."""
    a = cfg.abi
    pvl = cfg.on("PER_VMA_LOCK")
    v = cfg.vnum()
    ul = _ul()
    start_end = E.Struct(None, (E.Field("vm_start", ul), E.Field("vm_end", ul)))
    f: list[E.Field] = []
    if v >= (6, 15):
        freeptr = E.Struct(None, (E.Field("v", ul),), typedef="freeptr_t")
        f.append(E.Field(None, E.Struct(None, (E.Field(None, start_end),
                                               E.Field("vm_freeptr", freeptr)), union=True)))
    elif pvl:
        rcu = E.Struct("callback_head", (E.Field("next", _ptr("struct callback_head")),
                                         E.Field("func", _ptr("void"))))
        f.append(E.Field(None, E.Struct(None, (E.Field(None, start_end),
                                               E.Field("vm_rcu", rcu)), union=True)))
    else:
        f.append(E.Field(None, E.Struct(None, (E.Field(None, start_end),), union=True)))
    f.append(E.Field("vm_mm", _ptr("struct mm_struct")))
    f.append(E.Field("vm_page_prot", _pgprot(cfg)))
    flags_arm = (E.Field("flags", E.Struct(None, (E.Field("__vma_flags", E.Array(ul, 1)),),
                                           typedef="vma_flags_t"))
                 if v >= (7, 0) else E.Field("__vm_flags", E.Scalar("unsigned long",
                                                                    "vm_flags_t")))
    f.append(E.Field(None, E.Struct(None, (E.Field("vm_flags", E.Scalar(
        "unsigned long", "const vm_flags_t")), flags_arm), union=True)))
    if v < (6, 15):
        if pvl:
            f += [E.Field("detached", E.Scalar("_Bool", "bool")),
                  E.Field("vm_lock_seq", E.Scalar("unsigned int")),
                  E.Field("vm_lock", _ptr("struct vma_lock"))]
        f.append(E.Field("shared", E.Struct(None, (E.Field("rb", rb_node()),
                                                   E.Field("rb_subtree_last", ul)))))
        f += [E.Field("anon_vma_chain", list_head()),
              E.Field("anon_vma", _ptr("struct anon_vma")),
              E.Field("vm_ops", _ptr("const struct vm_operations_struct")),
              E.Field("vm_pgoff", ul),
              E.Field("vm_file", _ptr("struct file")),
              E.Field("vm_private_data", _ptr("void"))]
        if cfg.on("ANON_VMA_NAME"):
            f.append(E.Field("anon_name", _ptr("struct anon_vma_name")))
        if cfg.on("SWAP"):
            f.append(E.Field("swap_readahead_info", atomic_long_t()))
        if not cfg.on("MMU"):
            f.append(E.Field("vm_region", _ptr("struct vm_region")))
        if cfg.on("NUMA"):
            f.append(E.Field("vm_policy", _ptr("struct mempolicy")))
        if cfg.on("NUMA_BALANCING"):
            f.append(E.Field("numab_state", _ptr("struct vma_numab_state")))
        f.append(E.Field("vm_userfaultfd_ctx", _uffd(cfg)))
        return E.Struct("vm_area_struct", tuple(f))
    if pvl:
        f.append(E.Field("vm_lock_seq", E.Scalar("unsigned int")))
    f += [E.Field("anon_vma_chain", list_head()),
          E.Field("anon_vma", _ptr("struct anon_vma")),
          E.Field("vm_ops", _ptr("const struct vm_operations_struct")),
          E.Field("vm_pgoff", ul),
          E.Field("vm_file", _ptr("struct file")),
          E.Field("vm_private_data", _ptr("void"))]
    if cfg.on("SWAP"):
        f.append(E.Field("swap_readahead_info", atomic_long_t()))
    if not cfg.on("MMU"):
        f.append(E.Field("vm_region", _ptr("struct vm_region")))
    if cfg.on("NUMA"):
        f.append(E.Field("vm_policy", _ptr("struct mempolicy")))
    if cfg.on("NUMA_BALANCING"):
        f.append(E.Field("numab_state", _ptr("struct vma_numab_state")))
    if pvl:
        f.append(E.Field("vm_refcnt", refcount_t(),
                         aligned=cfg.l1_cache if cfg.on("SMP") else 0))
        if cfg.on("DEBUG_LOCK_ALLOC"):
            f.append(E.Field("vmlock_dep_map", lockdep_map(cfg)))
    f.append(E.Field("shared", E.Struct(None, (E.Field("rb", rb_node()),
                                               E.Field("rb_subtree_last", ul)))))
    if cfg.on("ANON_VMA_NAME"):
        f.append(E.Field("anon_name", _ptr("struct anon_vma_name")))
    f.append(E.Field("vm_userfaultfd_ctx", _uffd(cfg)))
    if v >= (6, 17) and a.name in ("x86_64", "i386"):
        f.append(E.Field("pfnmap_track_ctx", _ptr("struct pfnmap_track_ctx")))
    return E.Struct("vm_area_struct", tuple(f))


def _uffd(cfg: KConfig) -> E.Struct:
    if cfg.on("USERFAULTFD"):
        return E.Struct("vm_userfaultfd_ctx", (E.Field("ctx", _ptr("struct userfaultfd_ctx")),))
    return E.Struct("vm_userfaultfd_ctx", ())


LOCK_FIELDS = ("vm_lock_seq", "vm_refcnt", "vmlock_dep_map", "detached", "vm_lock")


def vma_cache(cfg: KConfig) -> dict[str, object]:
    """How the kernel creates the vm_area_struct cache in this version.

    6.15+: ``SLAB_HWCACHE_ALIGN | SLAB_TYPESAFE_BY_RCU`` with the free pointer
    in ``vm_freeptr`` (``use_freeptr_offset``); 6.14: plain ``KMEM_CACHE`` plus
    a ``vma_lock`` cache when PER_VMA_LOCK.
    """
    if cfg.vnum() >= (6, 15):
        return {"hwcache_align": True, "typesafe_by_rcu": True, "use_freeptr_offset": True,
                "extra_cache": None}
    extra = vma_lock(cfg) if cfg.on("PER_VMA_LOCK") else None
    return {"hwcache_align": False, "typesafe_by_rcu": False, "use_freeptr_offset": False,
            "extra_cache": extra}


# ------------------------------------------------------------------ mm_struct
MM_LOCK_FIELDS = ("vma_writer_wait", "mm_lock_seq")
MM_REGION = "mmap_lock .. hiwater_rss"


def seqcount_t(cfg: KConfig) -> E.Struct:
    """``seqcount_t``: ``unsigned sequence`` (+ ``dep_map`` under lockdep)."""
    fields = [E.Field("sequence", E.Scalar("unsigned int"))]
    if cfg.on("DEBUG_LOCK_ALLOC"):
        fields.append(E.Field("dep_map", lockdep_map(cfg)))
    return E.Struct("seqcount", tuple(fields), typedef="seqcount_t")


def mm_struct_region(cfg: KConfig) -> E.Struct:
    """The part of ``struct mm_struct`` that holds its per-VMA-lock fields.

    include/linux/mm_types.h (v6.15 to v7.0): inside the anonymous struct,
    after ``mmap_lock`` and ``mmlist``, ``CONFIG_PER_VMA_LOCK`` adds ``struct
    rcuwait vma_writer_wait`` and ``seqcount_t mm_lock_seq``; the next member
    is pointer-aligned (``hiwater_rss``; v6.16+ puts the pointer-aligned
    ``futex_*`` members of FUTEX_PRIVATE_HASH first, which changes nothing
    here).  ``mmap_lock`` starts pointer-aligned, so offsets relative to it
    give the exact bytes the lock fields push the rest of the struct by.
    The whole mm_struct is not tabled: its size needs BTF (see
    :func:`mm_lock_delta`).
    """
    ptr = E.Pointer
    f = [E.Field("mmap_lock", rw_semaphore(cfg)), E.Field("mmlist", list_head())]
    if cfg.on("PER_VMA_LOCK"):
        f.append(E.Field("vma_writer_wait", E.Struct(
            "rcuwait", (E.Field("task", ptr("struct task_struct")),))))
        f.append(E.Field("mm_lock_seq", seqcount_t(cfg)))
    f.append(E.Field("hiwater_rss", _ul()))
    return E.Struct("mm_struct", tuple(f))


def mm_struct_align(cfg: KConfig) -> int:
    """alignof(struct mm_struct): the ``mm_count`` sub-struct is
    ``____cacheline_aligned_in_smp``; without SMP the largest member
    alignment is 8 on every ABI (``atomic64_t`` is ``__aligned(8)`` on i386)."""
    return max(cfg.l1_cache, 8) if cfg.on("SMP") else 8


def mm_lock_delta(cfg: KConfig) -> dict[str, object]:
    """What ``vma_writer_wait`` + ``mm_lock_seq`` add to ``struct mm_struct``.

    ``shift``: bytes every later member moves by (fields, padding and the
    hole before the next member), exact.  ``sizeof``: the growth of
    ``sizeof(struct mm_struct)``; exact when the struct's alignment divides
    ``shift``, else it depends on the tail padding, which only the full struct
    (BTF) knows, and ``sizeof`` is None with ``sizeof_range`` the two
    possible values.
    """
    a = cfg.abi
    with_f = E.layout(mm_struct_region(cfg), a)
    off = {m.name: m.byte_offset for m in with_f.members}
    lock_bytes = {m.name: m.byte_size for m in with_f.members if m.name in MM_LOCK_FIELDS}
    shift = off["hiwater_rss"] - (off["mmlist"] + with_f.members[1].byte_size)
    align = mm_struct_align(cfg)
    lo, hi = shift // align * align, -(-shift // align) * align
    return {"fields": lock_bytes, "shift": shift, "struct_align": align,
            "sizeof": shift if lo == hi else None, "sizeof_range": [lo, hi]}
