"""The ``pervma layout``, ``pervma slab`` and ``pervma cost`` commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pervma.errors import HostError, UsageError
from pervma.host import proc
from pervma.layout import api, slub, tables, validate
from pervma.layout import engine as E
from pervma.layout.pahole import render

_RAW = argparse.RawDescriptionHelpFormatter

# Bounds of numeric arguments (the kernel's own limits where it has one).
MAX_CPUS = 1 << 16  # beyond any NR_CPUS (x86 MAXSMP: 8192)
MAX_OBJECT = slub.PAGE_SIZE << slub.MAX_PAGE_ORDER  # the largest slab object / kmalloc


def _int_in(name: str, lo: int, hi: int) -> Any:
    """An argparse type: a decimal integer in [lo, hi] (no nan, inf or floats)."""
    def parse(text: str) -> int:
        t = text.strip()
        if not t:
            raise argparse.ArgumentTypeError(f"{name} is empty")
        try:
            v = int(t, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got '{text}'") \
                from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be in {lo}..{hi}, got {v}")
        return v
    return parse


def _align_arg(text: str) -> int:
    v = _int_in("--align", 0, slub.PAGE_SIZE)(text)
    if v & (v - 1):
        raise argparse.ArgumentTypeError(f"--align must be 0 or a power of two, got {v}")
    return v


def _nonempty(args: argparse.Namespace, *names: str) -> None:
    for n in names:
        v = getattr(args, n, None)
        if isinstance(v, str) and not v.strip():
            raise UsageError("the struct name is empty" if n == "struct" else
                             f"--{n.replace('_', '-')} is empty")
        if isinstance(v, list) and any(isinstance(x, str) and not x.strip() for x in v):
            raise UsageError(f"an empty {n.replace('_', ' ')} argument")


def _presets_help() -> str:
    return "\n".join(f"  {k:<20} {p.arch} {p.version}: {p.doc}" for k, p in tables.PRESETS.items())


def register(sub: Any) -> None:
    p = sub.add_parser(
        "layout", help="struct layout (pahole -C style) from BTF or the field tables",
        formatter_class=_RAW,
        description="Show a struct's layout: members, offsets, sizes, holes, padding and "
                    "cache-line markers as 'pahole -C' prints them. Default source: the "
                    "running kernel's BTF (/sys/kernel/btf/vmlinux).",
        epilog="examples:\n  pervma layout vm_area_struct\n  pervma layout mm_struct --json\n"
               "  pervma layout vm_area_struct --preset i386-tiny\n"
               "  pervma layout vm_area_struct --arch x86_64 --version 6.14 "
               "--config /proc/config.gz --set CONFIG_DEBUG_LOCK_ALLOC=y\n\npresets:\n"
               + _presets_help())
    p.add_argument("struct", help="struct or union name (e.g. vm_area_struct)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--btf", metavar="PATH", help="read BTF from PATH instead of the kernel's")
    src.add_argument("--preset", metavar="NAME", help="a named config (see below)")
    p.add_argument("--base", metavar="PATH", help="base BTF for split (module) BTF")
    p.add_argument("--arch", help="x86_64, i386, arm64, arm, riscv64 (field tables)")
    p.add_argument("--version", default=None, help=f"kernel version: {', '.join(tables.VERSIONS)}")
    p.add_argument("--config", metavar="FILE", help=".config or config.gz for the field tables")
    p.add_argument("--set", action="append", default=[], metavar="CONFIG_X=y",
                   help="override one option (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_layout)

    s = sub.add_parser(
        "slab", help="SLUB geometry of caches: predicted vs /sys/kernel/slab",
        formatter_class=_RAW,
        description="Predict slab_size, order and objects per slab of kmem caches from "
                    "object size, alignment, flags and CPU count (mm/slub.c rules), and compare "
                    "with /sys/kernel/slab. --size models a cache that need not exist.",
        epilog="examples:\n  pervma slab vm_area_struct mm_struct\n  pervma slab --validate\n"
               "  pervma slab --size 160 --cpus 64\n  pervma slab --size 192 --hwcache --rcu "
               "--freeptr-offset --json\n  pervma slab --kmalloc 136")
    s.add_argument("caches", nargs="*", metavar="CACHE", help="cache names in /sys/kernel/slab")
    s.add_argument("--validate", action="store_true",
                   help="check every cache; exit 0 only if all match")
    s.add_argument("--size", type=_int_in("--size", 1, MAX_OBJECT),
                   help="model a cache with this object size")
    s.add_argument("--align", type=_align_arg, default=0,
                   help="requested alignment, 0 or a power of two (with --size)")
    s.add_argument("--hwcache", action="store_true", help="SLAB_HWCACHE_ALIGN (with --size)")
    s.add_argument("--rcu", action="store_true", help="SLAB_TYPESAFE_BY_RCU (with --size)")
    s.add_argument("--freeptr-offset", action="store_true",
                   help="RCU free pointer inside the object (with --size)")
    s.add_argument("--ctor", action="store_true", help="cache has a constructor (with --size)")
    s.add_argument("--cpus", type=_int_in("--cpus", 1, MAX_CPUS),
                   help="present CPUs (default: this machine)")
    s.add_argument("--max-order", type=_int_in("--max-order", 0, slub.MAX_PAGE_ORDER),
                   help="slub_max_order (default 3 or boot param)")
    s.add_argument("--kmalloc", type=_int_in("--kmalloc", 1, MAX_OBJECT), metavar="BYTES",
                   help="print kmalloc's size class")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_slab)

    c = sub.add_parser(
        "cost", help="the machine's bill: VMAs alive, slab pages, counterfactual layouts",
        formatter_class=_RAW,
        description="Count live VMAs (/proc/*/maps and /proc/slabinfo, difference explained) "
                    "and price them in slab pages for the running vm_area_struct and for "
                    "counterfactual layouts: without the per-VMA lock fields (gated), SMP=n, "
                    "lockdep on, the 6.14 separate vma_lock; per VMA and system-wide.",
        epilog="examples:\n  pervma cost\n  pervma cost --json\n  pervma cost --configs\n"
               "  pervma cost --configs --json --cpus 64\n\n--configs prices the configs "
               "the linux-mm thread names (i386 and x86_64 allnoconfig, x86_64 defconfig and "
               "allyesconfig, arm64 defconfig, this kernel) on 7.0 and on 7.0 + the series; "
               "each row is checked with gcc (the ABI cross-check) and the running kernel's "
               "row with its BTF. JSON schema: pervma.layout.configs.table.")
    c.add_argument("--btf", metavar="PATH", help="BTF to read vm_area_struct from")
    c.add_argument("--configs", action="store_true",
                   help="the thread's configs before/after the series (no /proc needed)")
    c.add_argument("--cpus", type=_int_in("--cpus", 1, MAX_CPUS),
                   help="CPUs SLUB sizes SMP configs for (--configs; default: this machine)")
    c.add_argument("--no-gcc", action="store_true",
                   help="skip the gcc cross-check of --configs rows")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=cmd_cost)


def _dump(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# ------------------------------------------------------------------ layout
def cmd_layout(args: argparse.Namespace) -> int:
    _nonempty(args, "struct", "btf", "preset", "base", "arch", "version", "config")
    sets = tables.parse_set(args.set)
    table = bool(args.preset or args.arch or args.config or args.version or sets)
    if table and (args.btf or args.base):
        raise UsageError("--btf/--base read BTF; --preset/--arch/--version/--config/--set "
                         "select field tables: use one or the other")
    if table:
        cfg = api.table_config(args.arch, args.version or "6.18", args.config, sets, args.preset)
        comp = E.layout(api.table_struct(cfg, args.struct), cfg.abi)
        if args.json:
            _dump(_table_json(comp, cfg, args.struct))
            return 0
        sys.stdout.write(f"/* {cfg.arch}, Linux {cfg.version}; options: "
                         + " ".join(f"{k}={v}" for k, v in sorted(cfg.options.items())
                                    if k in tables.OPTIONS and v != "n") + " */\n")
        extra = api.table_extra(cfg, args.struct)
        for n in extra["notes"]:
            sys.stdout.write(f"/* note: {n} */\n")
        sys.stdout.write(render(comp, cfg.l1_cache))
        if "mm_lock_delta" in extra:
            d = extra["mm_lock_delta"]
            lo, hi = d["sizeof_range"]
            grow = (f"{d['sizeof']} B" if d["sizeof"] is not None else
                    f"{lo} or {hi} B (struct aligned to {d['struct_align']}: depends on "
                    "the tail padding; exact with BTF)")
            fields = ", ".join(f"{k} {v} B" for k, v in d["fields"].items()) or "none"
            sys.stdout.write(f"/* per-VMA-lock fields: {fields}; they move the rest of "
                             f"mm_struct by {d['shift']} B; sizeof(struct mm_struct) grows "
                             f"by {grow} */\n")
        return 0
    comp = api.running_composite(args.struct, args.btf, args.base)
    if args.json:
        _dump(api.to_json(comp))
    else:
        sys.stdout.write(render(comp))
    return 0


def _table_json(comp: Any, cfg: tables.KConfig, struct: str) -> dict[str, Any]:
    d = api.to_json(comp)
    d.update(api.table_extra(cfg, struct))
    return d


# ------------------------------------------------------------------ slab
def _machine(args: argparse.Namespace) -> slub.Machine:
    h = proc.read_machine()
    cpus = args.cpus or h.present_cpus
    if cpus <= 0:
        raise UsageError("--cpus must be positive")
    return slub.Machine(cpus, args.cpus or h.nr_cpu_ids, h.cache_line, h.page_size,
                        h.min_objects, h.min_order,
                        h.max_order if args.max_order is None else args.max_order)


def cmd_slab(args: argparse.Namespace) -> int:
    _nonempty(args, "caches")
    if args.kmalloc is not None:
        size = slub.kmalloc_size_class(args.kmalloc)
        if args.json:
            _dump({"request": args.kmalloc, "kmalloc": size})
        else:
            print(f"kmalloc({args.kmalloc}) -> kmalloc-{size}")
        return 0
    if args.size is not None:
        flags = slub.CacheFlags(args.hwcache, args.rcu, args.freeptr_offset, args.ctor)
        s = slub.size_cache(args.size, args.align, flags, _machine(args))
        d = s.as_dict()
        d["waste_per_slab"] = s.waste_per_slab
        if args.json:
            _dump(d)
        else:
            print(f"object {s.object_size} B, align {s.align}, slot {s.slab_size} B, order "
                  f"{s.order}, {s.objs_per_slab} per slab, {s.waste_per_slab} B wasted per "
                  f"slab (min_objects {s.min_objects})")
        return 0
    why = proc.sysfs_available()
    if why:
        raise HostError(f"cannot compare with the kernel: {why}")
    h = proc.read_machine()
    if args.max_order is not None:
        h.max_order = args.max_order
    if args.cpus:
        h.present_cpus = h.nr_cpu_ids = args.cpus
    caches = proc.read_sysfs_caches()
    if args.caches:
        known = {c.name: c for c in caches}
        for c in caches:
            for a in c.aliases:
                known.setdefault(a, c)
        missing = [n for n in args.caches if n not in known]
        if missing:
            raise UsageError(f"no cache named {', '.join(missing)} in {proc.SLAB_SYSFS}")
        caches = [known[n] for n in args.caches]
    checks = validate.validate(caches, h)
    bad = [c for c in checks if c.mismatches]
    if args.json:
        _dump({"machine": vars(h), "caches": [c.as_dict() for c in checks],
               "matched": len(checks) - len(bad), "total": len(checks)})
    else:
        print(f"{'cache':<28} {'object':>7} {'align':>5} {'slot':>6} {'order':>5} "
              f"{'per slab':>8}  check")
        by_name = {c.name: c for c in caches}
        for chk in checks:
            act, sc = chk.actual, by_name[chk.name]
            print(f"{chk.name:<28} {sc.get('object_size'):>7} {sc.get('align'):>5} "
                  f"{act['slab_size']:>6} {act['order']:>5} {act['objs_per_slab']:>8}  "
                  + ("ok" if not chk.mismatches else "MISMATCH " + "; ".join(chk.mismatches)))
        print(f"{len(checks) - len(bad)}/{len(checks)} caches: predicted slab_size, order and "
              f"objs_per_slab match /sys/kernel/slab ({h.present_cpus} CPUs, "
              f"slub_max_order {h.max_order})")
    if args.validate and bad:
        return 1
    return 0


# ------------------------------------------------------------------ cost
def cmd_cost(args: argparse.Namespace) -> int:
    _nonempty(args, "btf")
    if args.configs:
        return _cost_configs(args)
    if args.cpus is not None or args.no_gcc:
        raise UsageError("--cpus and --no-gcc go with --configs")
    bill = api.system_bill(args.btf)
    if args.json:
        _dump(bill)
        return 0
    v = bill["vmas"]
    print(f"VMAs alive: {v['maps']} in /proc/*/maps ({v['processes']} processes, "
          f"{v['gate']} [vsyscall] gate lines not counted"
          + (f", {v['unreadable']} maps unreadable" if v["unreadable"] else "") + ")")
    if "slabinfo_active" in v:
        print(f"/proc/slabinfo vm_area_struct: {v['slabinfo_active']} active of "
              f"{v['slabinfo_total']} slots, {v['pages_held']} pages held "
              f"({v['bytes_held']} B)")
    print(f"  {v['explanation']}")
    print(f"\nlock fields in vm_area_struct: {', '.join(bill['lock_fields']) or 'none'}")
    print(f"\n{'variant':<18} {'sizeof':>6} {'slot':>5} {'/slab':>5} {'order':>5} "
          f"{'B/VMA':>7} {'pages':>6} {'bytes':>9} {'delta B':>8} {'pg/1000':>7}")
    for r in bill["variants"]:
        print(f"{r['name']:<18} {r['sizeof']:>6} {r['slab_size']:>5} {r['objs_per_slab']:>5} "
              f"{r['order']:>5} {r['bytes_per_vma']:>7} {r['pages']:>6} {r['bytes']:>9} "
              f"{r['delta_bytes']:>+8} {r['pages_per_1000']:>7}")
    for r in bill["variants"]:
        print(f"  {r['name']}: {r['doc']}")
    mm = bill["mm_struct"]
    if "running" in mm:
        g = mm.get("gated", mm["running"])
        print(f"\nmm_struct: {mm['sizeof']} B (+{mm['extra_object_bytes']} B cpumask/cid) -> "
              f"{mm['running']['slab_size']} B slot, {mm['running']['objs_per_slab']}/slab; "
              f"without {', '.join(mm['lock_fields']) or 'lock fields'}: {g['sizeof']} B -> "
              f"{g['slab_size']} B slot; for {mm['processes']} processes "
              f"{mm['running']['pages']} vs {g['pages']} pages")
    return 0


def _cost_configs(args: argparse.Namespace) -> int:
    from pervma.layout import configs

    cpus = args.cpus or proc.read_machine().present_cpus
    t = configs.table(cpus, 64, args.btf, gcc=not args.no_gcc)
    if args.json:
        _dump(t)
        return 0
    print(f"vm_area_struct on Linux {t['before']} (per-VMA lock gated by PER_VMA_LOCK) and "
          f"{t['after']} (fields unconditional); slab: SLAB_HWCACHE_ALIGN|"
          f"SLAB_TYPESAFE_BY_RCU, 64 B line, {cpus} CPUs for SMP configs, 1 without SMP; "
          f"pages per {t['per_vmas']:,} VMAs")
    head = (f"{'config':<20} {'thread':>6} {'sizeof':>9} {'slot':>9} {'/slab':>7} "
            f"{'pages':>9} {'Δpages':>6} {'mm Δ':>7} {'mm sizeof Δ':>13}")
    print(head)

    def grow(d: dict[str, Any]) -> str:
        return (str(d["sizeof"]) if d["sizeof"] is not None else
                "/".join(str(x) for x in d["sizeof_range"]))

    for r in t["configs"]:
        b, a = r["before"], r["after"]
        mb, ma = b["mm_struct_delta"], a["mm_struct_delta"]
        mm = f"{grow(mb)}>{grow(ma)}"
        if "btf" in r and "mm_struct_delta" in r["btf"] and b["per_vma_lock"]:
            mm = f"{r['btf']['mm_struct_delta']} (BTF)"
        print(f"{r['key']:<20} {r['thread_sizeof'] or '':>6} "
              f"{b['sizeof']:>4}>{a['sizeof']:<4} "
              f"{b['slab']['slab_size']:>4}>{a['slab']['slab_size']:<4} "
              f"{b['slab']['objs_per_slab']:>3}>{a['slab']['objs_per_slab']:<3} "
              f"{b['slab']['pages_per_10000']:>4}>{a['slab']['pages_per_10000']:<4} "
              f"{r['difference']['pages_per_10000']:>+6} "
              f"{mb['shift']:>3}>{ma['shift']:<3} {mm:>13}")
    print("\nbefore>after (7.0 > 7.0-series). 'mm Δ': bytes vma_writer_wait + mm_lock_seq "
          "push the rest of mm_struct by; 'mm sizeof Δ': what they add to sizeof(struct "
          "mm_struct) (a/b: a or b, depending on tail padding that only BTF knows; the "
          "running kernel's is computed from its BTF)")
    for r in t["configs"]:
        opts = " ".join(k for k, v in r["options"].items() if v != "n")
        print(f"  {r['key']}: {r['title']}; {opts}; from {r['source']}; "
              + "; ".join(r["check"]))
    for s in t["skipped"]:
        print(f"  skipped {s}")
    return 0
