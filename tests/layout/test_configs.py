"""The thread's configs before/after the series (``pervma cost --configs``).

The thread's three numbers are reproduced by computation; every other row is
checked by compiling its tables with gcc (``_Static_assert`` of sizeof and of
every offset), and the running kernel's row against its BTF.
"""

from __future__ import annotations

import json
import shutil

import pytest

from pervma.cli import main
from pervma.layout import api, configs, tables
from pervma.layout import engine as E

# (before sizeof, after sizeof, slot before, slot after, per slab, pages/10k,
#  mm_struct shift before, after) with 2 CPUs for SMP configs.
EXPECTED = {
    "i386-allnoconfig": (68, 76, 128, 128, 32, 313, 0, 8),
    "x86_64-allnoconfig": (136, 152, 192, 192, 21, 477, 0, 16),
    "x86_64-defconfig": (192, 192, 192, 192, 21, 477, 16, 16),
    "x86_64-allyesconfig": (256, 256, 256, 256, 16, 625, 64, 64),
    "arm64-defconfig": (192, 192, 192, 192, 21, 477, 16, 16),
}


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    t = configs.table(2, gcc=False, running=False)
    return {r["key"]: r for r in t["configs"]}


def test_the_threads_three_numbers_are_computed(rows: dict[str, dict]) -> None:
    assert rows["i386-allnoconfig"]["before"]["sizeof"] == 68
    assert rows["x86_64-defconfig"]["before"]["sizeof"] == 192
    assert rows["x86_64-allyesconfig"]["before"]["sizeof"] == 256
    for key in ("i386-allnoconfig", "x86_64-defconfig", "x86_64-allyesconfig"):
        assert rows[key]["thread_sizeof"] == rows[key]["before"]["sizeof"]


@pytest.mark.parametrize("key", list(EXPECTED))
def test_row_values(rows: dict[str, dict], key: str) -> None:
    r = rows[key]
    b, a = r["before"], r["after"]
    got = (b["sizeof"], a["sizeof"], b["slab"]["slab_size"], a["slab"]["slab_size"],
           a["slab"]["objs_per_slab"], a["slab"]["pages_per_10000"],
           b["mm_struct_delta"]["shift"], a["mm_struct_delta"]["shift"])
    assert got == EXPECTED[key]
    assert r["difference"]["sizeof"] == a["sizeof"] - b["sizeof"]
    assert r["difference"]["pages_per_10000"] == 0  # the series costs no slab page here
    assert a["per_vma_lock"] is True


def test_series_on_smp_off_has_unaligned_lock_fields(rows: dict[str, dict]) -> None:
    r = rows["i386-allnoconfig"]
    assert r["before"]["per_vma_lock"] is False and r["before"]["vm_refcnt_offset"] is None
    assert r["after"]["vm_refcnt_offset"] == 52 and r["after"]["align"] == 4
    x = rows["x86_64-allnoconfig"]["after"]
    assert x["vm_refcnt_offset"] == 104 and x["align"] == 8
    # with SMP the field starts a cache line and the struct is 64-aligned
    d = rows["x86_64-defconfig"]["after"]
    assert d["vm_refcnt_offset"] == 128 and d["align"] == 64


def test_mm_struct_delta_exact_or_range(rows: dict[str, dict]) -> None:
    up = rows["i386-allnoconfig"]["after"]["mm_struct_delta"]
    assert up["fields"] == {"vma_writer_wait": 4, "mm_lock_seq": 4}
    assert (up["shift"], up["struct_align"], up["sizeof"]) == (8, 8, 8)
    smp = rows["x86_64-defconfig"]["after"]["mm_struct_delta"]
    assert (smp["shift"], smp["struct_align"], smp["sizeof"], smp["sizeof_range"]) == \
        (16, 64, None, [0, 64])
    dep = rows["x86_64-allyesconfig"]["after"]["mm_struct_delta"]
    # seqcount_t with a 48 B lockdep_map (LOCK_STAT): 4 + 4 hole + 48
    assert dep["fields"] == {"vma_writer_wait": 8, "mm_lock_seq": 56} and dep["sizeof"] == 64


def test_gcc_agrees_with_every_row() -> None:
    for cc in ("gcc", "aarch64-linux-gnu-gcc"):
        if shutil.which(cc) is None:
            pytest.skip(f"{cc} not installed")
    t = configs.table(2, gcc=True, running=False)
    for r in t["configs"]:
        assert any(c.startswith("gcc ok") for c in r["check"]), (r["key"], r["check"])


def test_gcc_check_catches_a_wrong_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    real = E.c_checks

    def lying(s: E.Struct, tag: str, a: E.ABI) -> tuple[str, list[tuple[str, int]]]:
        src, exprs = real(s, tag, a)
        if tag.startswith("vma_x86_64_defconfig_after"):
            src = src.replace(f"sizeof(struct {tag}) == 192", f"sizeof(struct {tag}) == 184")
        return src, exprs

    monkeypatch.setattr(E, "c_checks", lying)
    rows = [configs.row(configs.named("x86_64-defconfig"), 2)]
    verdict = configs.check_with_gcc(rows)
    assert verdict["x86_64-defconfig"].startswith("gcc MISMATCH"), verdict


def test_running_row_matches_btf(vmlinux) -> None:  # noqa: ANN001
    from pervma.host import proc

    if not proc.CONFIG_GZ.exists():
        pytest.skip("no /proc/config.gz")
    r = configs.running_row(proc.read_machine().present_cpus, proc.read_machine().cache_line)
    b = r["btf"]
    assert b["vm_area_struct_sizeof"] == vmlinux.raw_size(vmlinux.find_struct("vm_area_struct"))
    assert b["table_sizeof"] == b["vm_area_struct_sizeof"]
    assert b["mm_struct_sizeof"] == vmlinux.raw_size(vmlinux.find_struct("mm_struct"))
    assert ("mm_struct_object_size" in b) == (proc.sysfs_available() is None)
    if proc.sysfs_available() is None:  # the slab object is larger than sizeof
        assert b["mm_struct_object_size"] > b["mm_struct_sizeof"]
        d = proc.SLAB_SYSFS / "mm_struct"
        got = {k: int((d / k).read_text().split()[0])
               for k in ("slab_size", "order", "objs_per_slab")}
        assert b["mm_struct_slab"] == got
    if "mm_shift" in b:
        assert b["mm_shift"] == b["table_mm_shift"]
        assert b["mm_struct_delta"] in (0, 64)  # 64-aligned struct: a whole line or nothing


def test_mm_struct_region_matches_btf(vmlinux) -> None:  # noqa: ANN001
    """The table's mmap_lock..hiwater_rss offsets, relative to mmap_lock, are BTF's."""
    from pervma.host import proc

    if not proc.CONFIG_GZ.exists():
        pytest.skip("no /proc/config.gz")
    opts = tables.read_config_file(proc.CONFIG_GZ)
    cfg = tables.config_for(tables.arch_of_config(opts) or "x86_64", "6.18", opts)
    region = E.layout(tables.mm_struct_region(cfg), cfg.abi)
    table = {m.name: (m.byte_offset, m.byte_size) for m in region.members}
    mc = api.running_composite("mm_struct")
    inner = next(m.nested for m in mc.members if m.nested and api.has_member(m.nested,
                                                                               "mmap_lock"))
    btf = {m.name: (m.byte_offset, m.byte_size) for m in inner.members}
    base = btf["mmap_lock"][0]
    for name in ("mmap_lock", "mmlist", *tables.MM_LOCK_FIELDS):
        if name in btf:
            assert (btf[name][0] - base, btf[name][1]) == table[name], name


def test_cli_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--configs", "--json", "--cpus", "2", "--no-gcc"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["schema"] == configs.SCHEMA and d["before"] == "7.0" and d["after"] == "7.0-series"
    keys = [r["key"] for r in d["configs"]]
    assert keys[:5] == list(EXPECTED)
    for r in d["configs"]:
        assert set(r) >= {"key", "title", "arch", "source", "options", "thread_sizeof",
                          "before", "after", "difference", "check"}
        assert set(r["before"]["slab"]) == {"slab_size", "align", "order", "objs_per_slab",
                                            "pages_per_10000", "bytes_per_10000"}
    assert main(["cost", "--configs", "--cpus", "2", "--no-gcc"]) == 0
    out = capsys.readouterr().out
    assert "i386-allnoconfig         68   68>76    128>128" in out


def test_cli_cpus_changes_slab_geometry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cost", "--configs", "--json", "--cpus", "64", "--no-gcc"]) == 0
    d = {r["key"]: r for r in json.loads(capsys.readouterr().out)["configs"]}
    s = d["x86_64-defconfig"]["after"]["slab"]
    assert (s["order"], s["objs_per_slab"], s["pages_per_10000"]) == (1, 42, 478)
    # no SMP: one CPU whatever --cpus says
    assert d["i386-allnoconfig"]["slab_cpus"] == 1


def test_bill_smp_variants_equal_the_tables(vmlinux) -> None:  # noqa: ANN001
    """The bill's SMP=n variants (BTF re-laid out) equal the field tables for this
    kernel's .config with SMP=n: before the series (no lock fields) and with it
    (lock fields kept, vm_refcnt unaligned)."""
    from pervma.host import proc

    if not proc.CONFIG_GZ.exists() or proc.sysfs_available():
        pytest.skip("needs /proc/config.gz and /sys/kernel/slab")
    opts = tables.read_config_file(proc.CONFIG_GZ)
    arch = tables.arch_of_config(opts) or "x86_64"
    bill = {v["name"]: v for v in api.system_bill()["variants"]}
    for name, version in (("smp_off", "6.18"), ("smp_off_series", "7.0-series")):
        cfg = tables.config_for(arch, version, opts, {"SMP": "n"})
        assert bill[name]["sizeof"] == E.layout(tables.vm_area_struct(cfg), cfg.abi).size, name
    assert bill["smp_off_series"]["sizeof"] > bill["smp_off"]["sizeof"]
