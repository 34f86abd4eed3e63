"""What the per-VMA lock costs: the Python API behind ``pervma layout/slab/cost``.

Every function returns plain data (dicts of ints/strings/lists, JSON-ready)
and raises only :class:`pervma.errors.PervmaError` subclasses.

``running_layout(struct="vm_area_struct", btf_path=None, base=None)``
    The running kernel's layout from BTF: ``{name, kind, size, align, members:
    [{name, type, offset, size, bit_offset, bitfield_size[, members]}], holes:
    [{offset, size}], padding}``; offsets are absolute bytes, ``bit_offset``
    absolute bits; anonymous members have ``name: None`` and nest ``members``.

``table_layout(struct="vm_area_struct", arch=None, version="6.18", config=None,
sets=None, preset=None)``
    The same shape from the field tables and the C ABI engine, plus ``arch``,
    ``version``, ``options`` (the CONFIG_ values used) and ``notes``.
    ``struct`` may be ``vm_area_struct`` or ``vma_lock`` (6.14).

``slab_sizing(object_size, align=0, *, hwcache_align=False, typesafe_by_rcu=False,
use_freeptr_offset=False, ctor=False, cpus=2, nr_cpu_ids=None, cache_line=64,
min_objects=0, min_order=0, max_order=3)``
    ``{object_size, align, slab_size, order, objs_per_slab, min_objects,
    freeptr_outside, bytes_per_object, waste_per_slab}``.

``kmalloc_class(size)`` → the kmalloc bucket size.

``system_bill()``
    The machine's bill: live VMAs (maps vs slabinfo, explained), the
    vm_area_struct cache as it is, and counterfactual layouts (``running``,
    ``universal``, ``gated`` = no lock fields, ``gated_no_hwcache``, ``smp_off``
    (SMP=n before the series), ``smp_off_series`` (SMP=n with the series: lock
    fields kept, ``vm_refcnt`` unaligned), ``lockdep``, ``v6.14``), each with ``sizeof``, ``slab_size``,
    ``objs_per_slab``, ``order``, ``bytes_per_vma`` and the system-wide
    ``pages``/``bytes`` for the live VMAs and per 1000 VMAs, plus the same for
    ``mm_struct`` (per process).  See :func:`system_bill` for the keys.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pervma.errors import BTFError, HostError, UsageError
from pervma.host import proc
from pervma.layout import btf as B
from pervma.layout import engine as E
from pervma.layout import slub, tables
from pervma.layout.btf_layout import composite
from pervma.layout.model import Composite, to_json

_BTF_CACHE: dict[tuple[str, str], B.Btf] = {}


def load_btf(path: str | Path | None = None, base: str | Path | None = None) -> B.Btf:
    """Load (and cache) BTF; default: the running kernel's /sys/kernel/btf/vmlinux."""
    p = str(path or proc.BTF_VMLINUX)
    key = (p, str(base or ""))
    if key not in _BTF_CACHE:
        if path is None and not Path(p).exists():
            raise BTFError(f"{p} not found: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF); "
                           "use --preset or --arch/--version")
        _BTF_CACHE[key] = B.load(p, base)
    return _BTF_CACHE[key]


def running_composite(struct: str = "vm_area_struct", btf_path: str | Path | None = None,
                      base: str | Path | None = None) -> Composite:
    b = load_btf(btf_path, base)
    return composite(b, b.find_struct(struct))


def running_layout(struct: str = "vm_area_struct", btf_path: str | Path | None = None,
                   base: str | Path | None = None) -> dict[str, Any]:
    return to_json(running_composite(struct, btf_path, base))


def table_config(arch: str | None = None, version: str = "6.18", config: str | Path | None = None,
                 sets: dict[str, str] | None = None, preset: str | None = None) -> tables.KConfig:
    """The config a table layout uses (preset, or arch/version/.config/--set)."""
    if preset:
        if arch or config:
            raise UsageError("--preset cannot be combined with --arch or --config")
        p = tables.PRESETS.get(preset)
        if p is None:
            raise UsageError(f"unknown preset '{preset}'; choose one of "
                             f"{', '.join(tables.PRESETS)}")
        explicit = dict(p.extra)
        explicit.update(sets or {})
        return tables.config_for(p.arch, p.version, tables.PRESET_OPTIONS[p.options], explicit)
    opts: dict[str, str] = {}
    if config:
        opts = tables.read_config_file(config)
        arch = arch or tables.arch_of_config(opts)
    if not arch:
        raise UsageError("--arch is needed (x86_64, i386, arm64, arm, riscv64)")
    return tables.config_for(arch, version, opts, sets or {})


def table_struct(cfg: tables.KConfig, struct: str) -> E.Struct:
    if struct in ("vm_area_struct", "struct vm_area_struct"):
        return tables.vm_area_struct(cfg)
    if struct in ("mm_struct", "struct mm_struct"):
        if cfg.vnum() < (6, 15):
            raise UsageError("the mm_struct table starts at 6.15 (vma_writer_wait); before it "
                             "mm_lock_seq alone was the per-VMA-lock field")
        return tables.mm_struct_region(cfg)
    if struct in ("vma_lock", "struct vma_lock"):
        return tables.vma_lock(cfg)
    if struct in ("rw_semaphore", "lockdep_map"):
        return tables.rw_semaphore(cfg) if struct == "rw_semaphore" else tables.lockdep_map(cfg)
    raise UsageError(f"no field table for '{struct}'; tables exist for vm_area_struct, "
                     "mm_struct (its per-VMA-lock region), vma_lock, rw_semaphore, "
                     "lockdep_map (use BTF for others)")


def table_extra(cfg: tables.KConfig, struct: str) -> dict[str, Any]:
    """What a table layout adds to the JSON: config, notes, and for mm_struct
    the region it covers and the lock fields' delta."""
    d: dict[str, Any] = {"arch": cfg.arch, "version": cfg.version, "notes": list(cfg.notes),
                         "options": {k: v for k, v in sorted(cfg.options.items())
                                     if k in tables.OPTIONS}}
    if struct.removeprefix("struct ") == "mm_struct":
        delta = tables.mm_lock_delta(cfg)
        d["region"] = tables.MM_REGION
        d["mm_lock_delta"] = delta
        d["notes"].append(
            f"mm_struct table covers only {tables.MM_REGION}, where the per-VMA-lock fields "
            "live; offsets are relative to mmap_lock (pointer-aligned in the kernel), 'size' "
            "is the region's, not sizeof(struct mm_struct) (use BTF for that)")
    return d


def table_layout(struct: str = "vm_area_struct", arch: str | None = None, version: str = "6.18",
                 config: str | Path | None = None, sets: dict[str, str] | None = None,
                 preset: str | None = None) -> dict[str, Any]:
    cfg = table_config(arch, version, config, sets, preset)
    c = E.layout(table_struct(cfg, struct), cfg.abi)
    d = to_json(c)
    d.update(table_extra(cfg, struct))
    return d


def slab_sizing(object_size: int, align: int = 0, *, hwcache_align: bool = False,
                typesafe_by_rcu: bool = False, use_freeptr_offset: bool = False,
                ctor: bool = False, cpus: int = 2, nr_cpu_ids: int | None = None,
                cache_line: int = 64, min_objects: int = 0, min_order: int = 0,
                max_order: int = 3) -> dict[str, Any]:
    m = slub.Machine(cpus, nr_cpu_ids or cpus, cache_line, min_objects=min_objects,
                     min_order=min_order, max_order=max_order)
    f = slub.CacheFlags(hwcache_align, typesafe_by_rcu, use_freeptr_offset, ctor)
    s = slub.size_cache(object_size, align, f, m)
    d = s.as_dict()
    d["bytes_per_object"] = (slub.PAGE_SIZE << s.order) / s.objs_per_slab
    d["waste_per_slab"] = s.waste_per_slab
    return d


def kmalloc_class(size: int) -> int:
    return slub.kmalloc_size_class(size)


# ---------------------------------------------------------------- re-layout of BTF
def _to_engine(c: Composite, ptr: int, known: dict[str, int] | None = None) -> E.Struct:
    """An engine struct equivalent to a BTF composite (members become blobs).

    ``known`` gives member alignments BTF cannot show (a cache-line aligned
    member that happens to follow a member ending on the line)."""
    known = known or {}
    fields: list[E.Field] = []
    for m in c.members:
        if m.nested is not None and not m.nested_rel and "[" not in (m.name or ""):
            inner = _to_engine(m.nested, ptr, known)
            fields.append(E.Field(m.name, inner, aligned=m.alignment))
            continue
        if m.name in known:
            fields.append(E.Field(m.name, E.Opaque(m.byte_size, max(m.natural_align, 1), m.type),
                                  aligned=known[m.name]))
            continue
        if m.bitfield_size:
            unit = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}.get(m.byte_size, "u32")
            fields.append(E.Field(m.name, E.Scalar(unit), bits=m.bitfield_size))
            continue
        if m.byte_size == 0 and m.decl.endswith("[]"):
            fields.append(E.Field(m.name, E.Array(E.Opaque(1, max(m.natural_align, 1)), None)))
            continue
        fields.append(E.Field(m.name, E.Opaque(m.byte_size, max(m.natural_align, 1), m.type),
                              aligned=m.alignment))
    # An inferred struct alignment explained by a member's own forced alignment
    # belongs to that member: removing the member must remove it too.
    own = c.alignment if c.alignment > max((f.aligned for f in fields), default=0) else 0
    return E.Struct(c.name, tuple(fields), union=c.kind == "union", aligned=own)


def _edit(s: E.Struct, remove: set[str], drop_aligned: set[str],
          add_after: dict[str, E.Field]) -> E.Struct:
    out: list[E.Field] = []
    for f in s.fields:
        if f.name in remove:
            continue
        t = f.type
        if isinstance(t, E.Struct) and f.name is None:
            t = _edit(t, remove, drop_aligned, add_after)
        aligned = 0 if f.name in drop_aligned else f.aligned
        out.append(E.Field(f.name, t, f.bits, aligned))
        if f.name in add_after:
            out.append(add_after[f.name])
    return E.Struct(s.name, tuple(out), s.union, s.packed, s.aligned, s.typedef)


# Alignments from the source that BTF cannot carry (mm_types.h: vm_refcnt is
# ____cacheline_aligned_in_smp).
KNOWN_ALIGNED = {"vm_refcnt": 64}


def relayout(c: Composite, abi: E.ABI, remove: tuple[str, ...] = (),
             drop_aligned: tuple[str, ...] = (), add_after: dict[str, E.Field] | None = None,
             known: dict[str, int] | None = None) -> Composite:
    """Lay ``c`` out again with members removed/added; checks the unedited
    re-layout reproduces BTF's size first (else BTFError)."""
    s = _to_engine(c, abi.ptr, KNOWN_ALIGNED if known is None else known)
    same = E.layout(s, abi)
    if same.size != c.size:
        raise BTFError(f"cannot re-lay out {c.name}: engine gives {same.size} B, BTF {c.size} B")
    return E.layout(_edit(s, set(remove), set(drop_aligned), add_after or {}), abi)


# ---------------------------------------------------------------- the bill
def _variant(name: str, doc: str, size: int, flags: slub.CacheFlags, m: slub.Machine,
             n: int, extra: tuple[str, int, int] | None = None) -> dict[str, Any]:
    s = slub.size_cache(size, 0, flags, m)
    per = s.objs_per_slab
    slabs = math.ceil(n / per) if n else 0
    pages = slabs << s.order
    d: dict[str, Any] = {
        "name": name, "doc": doc, "sizeof": size, "align": s.align, "slab_size": s.slab_size,
        "order": s.order, "objs_per_slab": per,
        "bytes_per_vma": round((slub.PAGE_SIZE << s.order) / per, 2),
        "pages": pages, "bytes": pages * slub.PAGE_SIZE,
        "pages_per_1000": math.ceil(1000 / per) << s.order,
    }
    if extra:
        ename, esize, ealign = extra
        e = slub.size_cache(esize, ealign, slub.CacheFlags(), m)
        epages = (math.ceil(n / e.objs_per_slab) << e.order) if n else 0
        d["extra_cache"] = {"name": ename, "sizeof": esize, "slab_size": e.slab_size,
                            "order": e.order, "objs_per_slab": e.objs_per_slab, "pages": epages}
        d["pages"] += epages
        d["bytes"] = d["pages"] * slub.PAGE_SIZE
        d["pages_per_1000"] += math.ceil(1000 / e.objs_per_slab) << e.order
        d["bytes_per_vma"] = round(d["bytes_per_vma"] + (slub.PAGE_SIZE << e.order)
                                   / e.objs_per_slab, 2)
    return d


def system_bill(btf_path: str | Path | None = None) -> dict[str, Any]:
    """The memory bill of per-VMA locks on this machine (see module docstring).

    Keys: ``machine``, ``vmas`` ({maps, gate, processes, slabinfo_active,
    slabinfo_total, difference, explanation}), ``cache`` (sysfs/slabinfo of
    vm_area_struct), ``variants`` (list, first is ``running``) with deltas
    ``delta_pages``/``delta_bytes`` vs running, and ``mm_struct``.
    """
    h = proc.read_machine()
    m = slub.Machine(h.present_cpus, h.nr_cpu_ids, h.cache_line, h.page_size, h.min_objects,
                     h.min_order, h.max_order)
    maps = proc.count_maps()
    n = maps.vmas
    try:
        slabinfo: dict[str, proc.SlabinfoRow] | None = proc.read_slabinfo()
    except HostError as exc:
        slabinfo, slab_why = None, str(exc)
    else:
        slab_why = ""
    sysfs: dict[str, int] = {}
    if proc.sysfs_available() is None:
        d = proc.SLAB_SYSFS / "vm_area_struct"
        for k in ("object_size", "slab_size", "align", "order", "objs_per_slab", "objects",
                  "total_objects", "slabs", "sheaf_capacity", "hwcache_align", "destroy_by_rcu"):
            try:
                sysfs[k] = int((d / k).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    vc = running_composite("vm_area_struct", btf_path)
    abi = E.abi("x86_64" if load_btf(btf_path).pointer_size == 8 else "i386")
    hw = bool(sysfs.get("hwcache_align", 1))
    rcu = bool(sysfs.get("destroy_by_rcu", 1))
    freeptr_in = rcu and any(x.name == "vm_freeptr" for mm in vc.members
                             for x in (mm.nested.members if mm.nested else []))
    flags = slub.CacheFlags(hw, rcu, freeptr_in)
    lock_names = [x for x in tables.LOCK_FIELDS if _has(vc, x)]
    variants = [_variant("running", "this kernel's vm_area_struct (BTF) and cache flags",
                         vc.size, flags, m, n)]
    if lock_names:
        variants.append(_variant("universal", "per-VMA locks built (as running: the series "
                                 "keeps this layout)", vc.size, flags, m, n))
        gated = relayout(vc, abi, remove=tuple(lock_names))
        variants.append(_variant("gated", "without the per-VMA lock fields (PER_VMA_LOCK=n), "
                                 "same cache flags", gated.size, flags, m, n))
        variants.append(_variant("gated_no_hwcache", "without the lock fields and without "
                                 "SLAB_HWCACHE_ALIGN", gated.size,
                                 slub.CacheFlags(False, rcu, freeptr_in), m, n))
        smp = relayout(vc, abi, remove=tuple(lock_names) + ("vm_policy", "numab_state"))
        variants.append(_variant("smp_off", "SMP=n before the series: no lock fields, no "
                                 "NUMA fields", smp.size, flags, m, n))
        smp_series = relayout(vc, abi, remove=("vm_policy", "numab_state"),
                              drop_aligned=("vm_refcnt",))
        variants.append(_variant("smp_off_series", "SMP=n with the series: lock fields kept, "
                                 "vm_refcnt not cache-line aligned, no NUMA fields",
                                 smp_series.size, flags, m, n))
        cfg = tables.config_for(abi.name, "6.18", {"SMP": "y", "DEBUG_LOCK_ALLOC": "y"})
        dep = E.Field("vmlock_dep_map", E.Opaque(*E.size_align(tables.lockdep_map(cfg), abi),
                                                  "struct lockdep_map"))
        ld = relayout(vc, abi, add_after={"vm_refcnt": dep})
        variants.append(_variant("lockdep", "DEBUG_LOCK_ALLOC: + struct lockdep_map "
                                 "vmlock_dep_map", ld.size, flags, m, n))
    try:
        opts = tables.read_config_file(proc.CONFIG_GZ)
    except Exception:  # noqa: BLE001 - no /proc/config.gz: skip the 6.14 variant
        opts = {}
    if opts:
        cfg14 = tables.config_for(abi.name, "6.14", opts)
        v14 = E.layout(tables.vm_area_struct(cfg14), abi)
        lock = E.layout(tables.vma_lock(cfg14), abi) if cfg14.on("PER_VMA_LOCK") else None
        variants.append(_variant("v6.14", "this config on 6.14: vm_area_struct without "
                                 "HWCACHE_ALIGN + a separate 40 B vma_lock object",
                                 v14.size, slub.CacheFlags(), m, n,
                                 ("vma_lock", lock.size, lock.align) if lock else None))
    base = variants[0]
    for v in variants:
        v["delta_pages"] = v["pages"] - base["pages"]
        v["delta_bytes"] = v["bytes"] - base["bytes"]
    row = slabinfo.get("vm_area_struct") if slabinfo else None
    vmas: dict[str, Any] = {"maps": n, "maps_lines": maps.lines, "gate": maps.gate,
                            "processes": maps.processes, "unreadable": maps.unreadable}
    if row:
        parked = 64 * h.present_cpus + 320 * h.nodes if sysfs.get("sheaf_capacity") else 0
        vmas.update({"slabinfo_active": row.active_objs, "slabinfo_total": row.num_objs,
                     "difference": row.active_objs - n, "pages_held": row.pages,
                     "bytes_held": row.pages * h.page_size,
                     "explanation": _explain(row, n, maps.gate, parked)})
    else:
        vmas["explanation"] = f"slabinfo unavailable ({slab_why}); only /proc/*/maps counted"
    mm = _mm_bill(btf_path, m, maps.processes, sysfs_ok=proc.sysfs_available() is None)
    return {"machine": vars(h), "vmas": vmas, "cache": {"sysfs": sysfs,
            "slabinfo": vars(row) if row else None},
            "lock_fields": lock_names, "variants": variants, "mm_struct": mm}


def has_member(c: Composite, name: str) -> bool:
    """Whether ``c`` or a nested anonymous composite has a member ``name``."""
    return any(m.name == name or (m.nested is not None and has_member(m.nested, name))
               for m in c.members)


_has = has_member


def member_shift(c: Composite, after: str, last: str) -> int:
    """Bytes between the end of member ``after`` and the member following
    ``last`` (both in the same, possibly nested, struct): what the members in
    between, their padding and holes occupy."""
    for i, m in enumerate(c.members):
        if m.name == after:
            j = next((k for k in range(i, len(c.members)) if c.members[k].name == last), None)
            if j is None or j + 1 >= len(c.members):
                break
            return c.members[j + 1].byte_offset - (m.byte_offset + m.byte_size)
        if m.nested is not None and has_member(m.nested, after):
            return member_shift(m.nested, after, last)
    raise BTFError(f"{c.name}: no member after '{last}' following '{after}'")


def _explain(row: proc.SlabinfoRow, n: int, gate: int, parked: int) -> str:
    d = row.active_objs - n
    s = (f"/proc/slabinfo counts {row.active_objs} vm_area_struct objects active, "
         f"/proc/*/maps shows {n} VMAs ({gate} [vsyscall] gate lines excluded: that VMA is "
         f"static, not a slab object); the {d} extra 'active' objects are free slots that "
         "SLUB does not subtract (objects in per-CPU slabs and per-CPU partial slabs")
    if parked:
        s += f", and up to {parked} objects parked in per-CPU sheaves and node barns"
    s += (") plus VMAs created or freed between the two reads. Pages actually held: "
          f"{row.pages} for {row.num_objs} slots.")
    return s


def _mm_bill(btf_path: str | Path | None, m: slub.Machine, nproc: int,
             sysfs_ok: bool) -> dict[str, Any]:
    try:
        mc = running_composite("mm_struct", btf_path)
    except BTFError as exc:
        return {"error": str(exc)}
    abi = E.abi("x86_64" if load_btf(btf_path).pointer_size == 8 else "i386")
    extra = 0
    if sysfs_ok:
        try:
            extra = int((proc.SLAB_SYSFS / "mm_struct" / "object_size").read_text()) - mc.size
        except (OSError, ValueError):
            extra = 0
    fields = [x for x in ("vma_writer_wait", "mm_lock_seq") if _has(mc, x)]
    flags = slub.CacheFlags(hwcache_align=True)
    out = {"sizeof": mc.size, "extra_object_bytes": extra, "lock_fields": fields,
           "processes": nproc,
           "running": _variant("running", "mm_struct as running", mc.size + extra, flags, m,
                               nproc)}
    if fields:
        g = relayout(mc, abi, remove=tuple(fields))
        out["gated"] = _variant("gated", "without vma_writer_wait and mm_lock_seq",
                                g.size + extra, flags, m, nproc)
    return out
