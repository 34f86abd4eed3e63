"""The commands end to end (through pervma.cli.main)."""

from __future__ import annotations

import json

import pytest

from pervma.cli import main
from pervma.host import proc


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_layout_presets(capsys: pytest.CaptureFixture[str]) -> None:
    for preset, size in (("i386-tiny", 68), ("x86_64-tiny", 136), ("x86_64-typical", 192),
                         ("x86_64-lockdep", 256)):
        rc, out, _ = run(capsys, "layout", "vm_area_struct", "--preset", preset, "--json")
        assert rc == 0 and json.loads(out)["size"] == size
    rc, out, _ = run(capsys, "layout", "vm_area_struct", "--arch", "x86_64", "--version", "6.18",
                     "--set", "CONFIG_SMP=y", "--set", "CONFIG_DEBUG_LOCK_ALLOC=y")
    assert rc == 0 and "/* size: 256, cachelines: 4" in out
    assert "vmlock_dep_map" in out


def test_layout_btf(capsys: pytest.CaptureFixture[str], vmlinux) -> None:  # noqa: ANN001
    rc, out, _ = run(capsys, "layout", "vm_area_struct", "--json")
    d = json.loads(out)
    assert rc == 0 and d["size"] == vmlinux.raw_size(vmlinux.find_struct("vm_area_struct"))
    rc, out, _ = run(capsys, "layout", "vm_area_struct")
    assert out.startswith("struct vm_area_struct {") and "/* size: " in out


@pytest.mark.parametrize("argv,msg", [
    (["layout", "vm_area_struct", "--preset", "nope"], "unknown preset"),
    (["layout", "vm_area_struct", "--arch", "vax"], "unknown arch"),
    (["layout", "vm_area_struct", "--arch", "x86_64", "--version", "5.1"], "unknown version"),
    (["layout", "vm_area_struct", "--set", "SMP"], "--set needs"),
    (["layout", "vm_area_struct", "--btf", "/nonexistent"], "cannot read BTF"),
    (["layout", "no_such_struct_xyz"], "no struct"),
    (["layout", "task_struct", "--preset", "x86_64-tiny"], "no field table"),
])
def test_errors_are_one_line(capsys: pytest.CaptureFixture[str], argv: list[str],
                             msg: str) -> None:
    rc, out, err = run(capsys, *argv)
    if "no struct" in msg and not proc.BTF_VMLINUX.exists():
        pytest.skip("no BTF")
    assert rc == 2
    assert err.count("\n") == 1 and msg in err and "Traceback" not in err


def test_corrupt_btf_file(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # noqa: ANN001
    f = tmp_path / "btf"
    f.write_bytes(b"\x9f\xeb\x01\x00\x18\x00\x00\x00" + b"\xff" * 30)
    rc, _, err = run(capsys, "layout", "x", "--btf", str(f))
    assert rc == 2 and err.startswith("pervma: ") and err.count("\n") == 1


def test_slab_model_and_kmalloc(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "slab", "--size", "160", "--cpus", "64", "--json")
    d = json.loads(out)
    assert rc == 0 and (d["slab_size"], d["order"], d["objs_per_slab"]) == (160, 1, 51)
    rc, out, _ = run(capsys, "slab", "--kmalloc", "136")
    assert out.strip() == "kmalloc(136) -> kmalloc-192"


def test_slab_validate(capsys: pytest.CaptureFixture[str]) -> None:
    why = proc.sysfs_available()
    rc, out, err = run(capsys, "slab", "--validate", "--json")
    if why:
        assert rc == 2 and err.count("\n") == 1
        pytest.skip(why)
    d = json.loads(out)
    assert rc == 0 and d["matched"] == d["total"] > 50


def test_cost(capsys: pytest.CaptureFixture[str], vmlinux) -> None:  # noqa: ANN001
    if proc.sysfs_available():
        pytest.skip(proc.sysfs_available() or "")
    rc, out, _ = run(capsys, "cost", "--json")
    d = json.loads(out)
    assert rc == 0
    names = [v["name"] for v in d["variants"]]
    assert names[:1] == ["running"] and "lockdep" in names
    run_v = d["variants"][0]
    assert run_v["slab_size"] == d["cache"]["sysfs"]["slab_size"]
    assert run_v["objs_per_slab"] == d["cache"]["sysfs"]["objs_per_slab"]
    assert d["vmas"]["maps"] == d["vmas"]["maps_lines"] - d["vmas"]["gate"]
    for v in d["variants"]:
        assert v["bytes"] == v["pages"] * 4096
    rc, out, _ = run(capsys, "cost")
    assert rc == 0 and "VMAs alive" in out


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("layout", "slab", "cost"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        out, _ = capsys.readouterr()
        assert "example" in out


def test_issue_10_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """The two commands of issue #10, item 1."""
    rc, out, _ = run(capsys, "layout", "vm_area_struct", "--arch", "i386", "--version",
                     "7.0-series", "--set", "CONFIG_SMP=n")
    assert rc == 0 and "/* size: 76," in out
    assert "vm_lock_seq;            /*    20     4 */" in out
    assert "vm_refcnt;              /*    52     4 */" in out and "__aligned__" not in out
    rc, out, _ = run(capsys, "layout", "mm_struct", "--preset", "i386-tiny")
    assert rc == 0 and "mmap_lock" in out and "vma_writer_wait" not in out
    assert "per-VMA-lock fields: none; they move the rest of mm_struct by 0 B" in out
    rc, out, _ = run(capsys, "layout", "mm_struct", "--preset", "i386-universal", "--json")
    d = json.loads(out)
    assert rc == 0 and d["mm_lock_delta"]["fields"] == {"vma_writer_wait": 4, "mm_lock_seq": 4}
    assert d["region"] == "mmap_lock .. hiwater_rss"
