"""Check the SLUB model against every cache in /sys/kernel/slab.

For each real cache directory the inputs are ``object_size``, ``align`` (the
value calculate_sizes() uses), ``ctor``, ``destroy_by_rcu``, ``poison``,
``red_zone``, ``store_user`` and the machine (CPUs, boot parameters); the
predictions are ``slab_size``, ``order`` and ``objs_per_slab``.  Caches known
to keep the RCU free pointer inside the object (``use_freeptr_offset``) are
listed in :data:`IN_OBJECT_FREEPTR` (kernel sources, 6.12+/6.15+).  For
``SLAB_HWCACHE_ALIGN`` caches the ``align`` itself is predicted too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pervma.host.proc import HostMachine, SysfsCache
from pervma.layout import slub

# Caches created with kmem_cache_args.use_freeptr_offset (free pointer inside
# the object despite SLAB_TYPESAFE_BY_RCU): fs/file_table.c (filp, 6.12) and
# mm/vma_init.c (vm_area_struct, 6.15).
IN_OBJECT_FREEPTR = frozenset({"vm_area_struct", "filp"})


def machine_of(h: HostMachine) -> slub.Machine:
    return slub.Machine(present_cpus=h.present_cpus, nr_cpu_ids=h.nr_cpu_ids,
                        cache_line=h.cache_line, page_size=h.page_size,
                        min_objects=h.min_objects, min_order=h.min_order,
                        max_order=h.max_order)


def flags_of(c: SysfsCache) -> slub.CacheFlags:
    names = {c.name, *c.aliases}
    return slub.CacheFlags(
        hwcache_align=bool(c.get("hwcache_align")),
        typesafe_by_rcu=bool(c.get("destroy_by_rcu")),
        use_freeptr_offset=bool(c.get("destroy_by_rcu")) and bool(names & IN_OBJECT_FREEPTR),
        ctor=bool(c.ctor),
        poison=bool(c.get("poison")),
        red_zone=bool(c.get("red_zone")),
        store_user=bool(c.get("store_user")),
        kmalloc=c.name.startswith(("kmalloc", "dma-kmalloc")),
    )


@dataclass
class CacheCheck:
    """Prediction vs sysfs for one cache."""

    name: str
    actual: dict[str, int]
    predicted: dict[str, int]
    mismatches: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "actual": self.actual, "predicted": self.predicted,
                "ok": not self.mismatches, "mismatches": self.mismatches}


def check_cache(c: SysfsCache, m: slub.Machine) -> CacheCheck:
    """Predict slab_size/order/objs_per_slab of ``c`` from its inputs."""
    flags = flags_of(c)
    osz, align = c.get("object_size"), c.get("align")
    size, _out = slub.slot_size(osz, align, flags, m)
    order = slub.calculate_order(size, m)
    pred = {"slab_size": size, "order": order,
            "objs_per_slab": slub.order_objects(order, size, m.page_size)}
    actual = {k: c.get(k) for k in pred}
    if flags.hwcache_align:
        pred["align"] = slub.calculate_alignment(flags, 0, osz, m)
        actual["align"] = align
    chk = CacheCheck(c.name, actual, pred)
    for k, v in pred.items():
        if k == "align" and v < actual[k]:
            continue  # an explicit larger requested alignment is an input we cannot see
        if actual[k] != v:
            chk.mismatches.append(f"{k}: predicted {v}, sysfs {actual[k]}")
    return chk


def validate(caches: list[SysfsCache], h: HostMachine) -> list[CacheCheck]:
    m = machine_of(h)
    return [check_cache(c, m) for c in caches if c.get("object_size")]
