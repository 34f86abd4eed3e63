"""Field tables: the seed thread's numbers and layout.md's, from the engine."""

from __future__ import annotations

import pytest

from pervma.layout import api, slub, tables
from pervma.layout import engine as E


def size(preset: str) -> tuple[int, int]:
    cfg = tables.preset_config(preset)
    c = E.layout(tables.vm_area_struct(cfg), cfg.abi)
    return c.size, c.align


@pytest.mark.parametrize("preset,expected", [
    ("i386-tiny", (68, 4)), ("x86_64-tiny", (136, 8)), ("x86_64-typical", (192, 64)),
    ("x86_64-lockdep", (256, 64)), ("x86_64-nolock", (176, 8)), ("x86_64-up", (160, 8)),
    ("i386-universal", (128, 64)), ("x86_64-universal", (192, 64)),
    ("x86_64-6.14-suren", (160, 8)),
])
def test_preset_sizes(preset: str, expected: tuple[int, int]) -> None:
    assert size(preset) == expected


def test_versions_before_pfnmap_are_8_bytes_smaller() -> None:
    opts = tables.PRESET_OPTIONS["tiny"]
    for arch, delta in (("x86_64", 8), ("i386", 4)):
        a = E.abi(arch)
        s16 = E.layout(tables.vm_area_struct(tables.config_for(arch, "6.16", opts)), a).size
        s17 = E.layout(tables.vm_area_struct(tables.config_for(arch, "6.17", opts)), a).size
        assert s17 - s16 == delta


def test_vm_refcnt_on_its_own_cache_line() -> None:
    c = E.layout(tables.vm_area_struct(tables.preset_config("x86_64-typical")), E.abi("x86_64"))
    off = {m.name: m.byte_offset for m in c.members}
    assert off["vm_lock_seq"] == 40 and off["vm_refcnt"] == 128 and off["shared"] == 136


def test_lockdep_map_sizes() -> None:
    for arch, plain, stat in (("x86_64", 40, 48), ("i386", 20, 28)):
        cfg = tables.config_for(arch, "6.18", {"SMP": "y", "DEBUG_LOCK_ALLOC": "y"})
        cfg_s = tables.config_for(arch, "6.18", {"SMP": "y", "DEBUG_LOCK_ALLOC": "y",
                                                 "LOCK_STAT": "y"})
        assert E.size_align(tables.lockdep_map(cfg), cfg.abi)[0] == plain
        assert E.size_align(tables.lockdep_map(cfg_s), cfg.abi)[0] == stat


def test_6_14_figures_of_the_series_author() -> None:
    """160 B vm_area_struct (51 per order-1 slab) + 40 B vma_lock (102 per page) = 50
    pages per 1000 VMAs on a 64-CPU machine; the 6.15 192 B HWCACHE slot: 48 pages."""
    cfg = tables.preset_config("x86_64-6.14-suren")
    vma = E.layout(tables.vm_area_struct(cfg), cfg.abi)
    lock = E.layout(tables.vma_lock(cfg), cfg.abi)
    m = slub.Machine(present_cpus=64, nr_cpu_ids=64)
    sv = slub.size_cache(vma.size, 0, slub.CacheFlags(), m)
    sl = slub.size_cache(lock.size, lock.align, slub.CacheFlags(), m)
    assert (vma.size, sv.order, sv.objs_per_slab) == (160, 1, 51)
    assert (lock.size, sl.order, sl.objs_per_slab) == (40, 0, 102)
    pages = -(-1000 // sv.objs_per_slab) * 2 + -(-1000 // sl.objs_per_slab)
    assert pages == 50
    new = slub.size_cache(192, 0, slub.CacheFlags(True, True, True), m)
    assert (new.order, new.objs_per_slab, -(-1000 // new.objs_per_slab) << new.order) == (1, 42, 48)
    intermediate = slub.size_cache(256, 0, slub.CacheFlags(True), m)
    assert -(-1000 // intermediate.objs_per_slab) << intermediate.order == 64


def test_config_rules() -> None:
    cfg = tables.config_for("i386", "6.18", tables.PRESET_OPTIONS["typical"])
    assert not cfg.on("PER_VMA_LOCK")  # x86 selects ARCH_SUPPORTS_PER_VMA_LOCK for X86_64 only
    assert tables.config_for("i386", "7.0-series", tables.PRESET_OPTIONS["typical"]).on(
        "PER_VMA_LOCK")
    up = tables.config_for("x86_64", "6.18", tables.PRESET_OPTIONS["typical"], {"SMP": "n"})
    assert not up.on("PER_VMA_LOCK") and not up.on("NUMA") and not up.on("NUMA_BALANCING")
    forced = tables.config_for("x86_64", "6.18", {}, {"PER_VMA_LOCK": "y"})
    assert forced.on("PER_VMA_LOCK") and forced.notes


def test_config_file_and_set(tmp_path) -> None:
    f = tmp_path / "config"
    f.write_text("CONFIG_X86_64=y\nCONFIG_SMP=y\nCONFIG_MMU=y\n# CONFIG_SWAP is not set\n"
                 "CONFIG_USERFAULTFD=y\nCONFIG_LOCALVERSION=\"x\"\n")
    d = api.table_layout("vm_area_struct", config=str(f), sets={"ANON_VMA_NAME": "y"})
    assert d["arch"] == "x86_64" and d["options"]["SWAP"] == "n"
    assert d["size"] == 192
    names = [m["name"] for m in d["members"]]
    assert "anon_name" in names and "swap_readahead_info" not in names
    bad = tmp_path / "bad"
    bad.write_text("garbage\n")
    from pervma.errors import ConfigError
    with pytest.raises(ConfigError):
        api.table_layout("vm_area_struct", config=str(bad))


@pytest.mark.parametrize("preset", [p for p, v in tables.PRESETS.items() if v.version != "6.14"])
def test_mm_struct_delta_on_every_preset(preset: str) -> None:
    """Every 6.15+ preset has an mm_struct table; the delta is the lock fields'
    bytes up to the next pointer-aligned member, and sizeof grows by it exactly
    when the struct's alignment (64 with SMP, else 8) divides it."""
    d = api.table_layout("mm_struct", preset=preset)
    cfg = tables.preset_config(preset)
    delta = d["mm_lock_delta"]
    names = [m["name"] for m in d["members"]]
    ptr = cfg.abi.ptr
    if cfg.on("PER_VMA_LOCK"):
        assert names == ["mmap_lock", "mmlist", "vma_writer_wait", "mm_lock_seq", "hiwater_rss"]
        seq = 4 if not cfg.on("DEBUG_LOCK_ALLOC") else \
            -(-4 // ptr) * ptr + E.size_align(tables.lockdep_map(cfg), cfg.abi)[0]
        assert delta["fields"] == {"vma_writer_wait": ptr, "mm_lock_seq": seq}
        assert delta["shift"] == -(-(ptr + seq) // ptr) * ptr
    else:
        assert names == ["mmap_lock", "mmlist", "hiwater_rss"] and delta["shift"] == 0
    align = 64 if cfg.on("SMP") else 8
    assert delta["struct_align"] == align
    if delta["shift"] % align == 0:
        assert delta["sizeof"] == delta["shift"]
    else:
        assert delta["sizeof"] is None and delta["sizeof_range"] == [
            delta["shift"] // align * align, -(-delta["shift"] // align) * align]
    assert any("mmap_lock .. hiwater_rss" in n for n in d["notes"])


def test_series_lock_fields_exist_without_smp() -> None:
    """The issue's example: i386, 7.0-series, SMP=n has vm_lock_seq and an
    unaligned vm_refcnt (76 B); 7.0 has neither (68 B)."""
    for version, size, fields in (("7.0", 68, set()), ("7.0-series", 76,
                                                      {"vm_lock_seq", "vm_refcnt"})):
        d = api.table_layout("vm_area_struct", arch="i386", version=version,
                             sets={"SMP": "n"})
        names = {m["name"] for m in d["members"]}
        assert d["size"] == size and d["align"] == 4
        assert names & {"vm_lock_seq", "vm_refcnt", "vmlock_dep_map"} == fields
        assert not any(m.get("aligned") for m in d["members"])
    # every arch: with the series the fields are there whatever SMP/MMU say
    for arch in E.ABIS:
        cfg = tables.config_for(arch, "7.0-series", {}, {"SMP": "n"})
        assert cfg.on("PER_VMA_LOCK")
        assert tables.config_for(arch, "7.0", {}, {"SMP": "n"}).on("PER_VMA_LOCK") is False


def test_mm_struct_table_refuses_6_14() -> None:
    from pervma.errors import UsageError
    with pytest.raises(UsageError, match="starts at 6.15"):
        api.table_layout("mm_struct", preset="x86_64-6.14")
