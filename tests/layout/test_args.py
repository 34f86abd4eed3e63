"""Arguments and files a user gives to layout, slab and cost (issue #11):
every bad value is a one-line error with exit 2, never a traceback or a hang."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pervma.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], msg: str) -> None:
    try:
        rc, out, err = run(capsys, *argv)
    except SystemExit as exc:  # argparse
        rc = int(exc.code or 0)
        out, err = capsys.readouterr()
    assert rc == 2, (argv, out, err)
    assert err.count("\n") == 1 and err.startswith("pervma: "), err
    assert msg in err, err
    assert out == ""


@pytest.mark.parametrize("argv,msg", [
    (["slab", "--size", "100", "--align", "3"], "power of two"),
    (["slab", "--size", "100", "--align", "-8"], "--align must be in 0..4096"),
    (["slab", "--size", "100", "--align", "8192"], "--align must be in 0..4096"),
    (["slab", "--size", "nan"], "--size must be an integer"),
    (["slab", "--size", "inf"], "--size must be an integer"),
    (["slab", "--size", "1.5"], "--size must be an integer"),
    (["slab", "--size", "-1"], "--size must be in 1.."),
    (["slab", "--size", "0"], "--size must be in 1.."),
    (["slab", "--size", "99999999999999999999"], "--size must be in 1.."),
    (["slab", "--size", ""], "--size is empty"),
    (["slab", "--size", "64", "--cpus", "0"], "--cpus must be in 1.."),
    (["slab", "--size", "64", "--cpus", "-3"], "--cpus must be in 1.."),
    (["slab", "--size", "64", "--cpus", "1000000"], "--cpus must be in 1.."),
    (["slab", "--size", "64", "--max-order", "-1"], "--max-order must be in 0..10"),
    (["slab", "--size", "64", "--max-order", "11"], "--max-order must be in 0..10"),
    (["slab", "--kmalloc", "0"], "--kmalloc must be in 1.."),
    (["slab", "--kmalloc", "4194305"], "--kmalloc must be in 1.."),
    (["slab", ""], "empty caches argument"),
    (["cost", "--configs", "--cpus", "0"], "--cpus must be in 1.."),
    (["cost", "--configs", "--cpus", "nan"], "--cpus must be an integer"),
    (["cost", "--cpus", "4"], "go with --configs"),
    (["cost", "--btf", ""], "--btf is empty"),
    (["layout", "vm_area_struct", "--preset", ""], "--preset is empty"),
    (["layout", "vm_area_struct", "--arch", " "], "--arch is empty"),
    (["layout", "vm_area_struct", "--version", ""], "--version is empty"),
    (["layout", "vm_area_struct", "--config", ""], "--config is empty"),
    (["layout", "vm_area_struct", "--btf", ""], "--btf is empty"),
    (["layout", "", "--preset", "x86_64-tiny"], "struct name is empty"),
    (["layout", "vm_area_struct", "--arch", "x86_64", "--set", "=y"], "--set needs"),
    (["layout", "vm_area_struct", "--arch", "x86_64", "--set", "SMP= "], "--set needs"),
    (["layout", "vm_area_struct", "--arch", "x86_64", "--version", "7.0-series",
      "--set", "CONFIG_PER_VMA_LOCK=n"], "does not exist in 7.0-series"),
    (["layout", "mm_struct", "--arch", "x86_64", "--version", "6.14"], "starts at 6.15"),
])
def test_bad_arguments(capsys: pytest.CaptureFixture[str], argv: list[str], msg: str) -> None:
    one_line_error(capsys, argv, msg)


def test_config_dev_zero_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(capsys, ["layout", "vm_area_struct", "--config", "/dev/zero"],
                   "larger than 8 MiB")


def test_btf_dev_zero_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(capsys, ["layout", "vm_area_struct", "--btf", "/dev/zero"],
                   "larger than 64 MiB")


def test_config_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    one_line_error(capsys, ["layout", "vm_area_struct", "--config", str(tmp_path)],
                   "is a directory")


def test_config_not_utf8(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "config"
    f.write_bytes(b"CONFIG_X86_64=y\nCONFIG_LOCALVERSION=\"\xff\xfe\"\n")
    one_line_error(capsys, ["layout", "vm_area_struct", "--config", str(f)],
                   ":2: not UTF-8 text (byte 0xff)")


def test_config_nul_bytes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "config"
    f.write_bytes(b"CONFIG_X86_64=y\n\0\0\0")
    one_line_error(capsys, ["layout", "vm_area_struct", "--config", str(f)], "NUL bytes")


def test_config_gzip_bomb(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "config.gz"
    f.write_bytes(gzip.compress(b"# " + b"x" * (9 << 20) + b"\n"))
    assert f.stat().st_size < 100_000
    one_line_error(capsys, ["layout", "vm_area_struct", "--config", str(f)],
                   "inflates to more than 8 MiB")


def test_config_corrupt_gzip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "config.gz"
    f.write_bytes(gzip.compress(b"CONFIG_X86_64=y\n")[:-6])
    one_line_error(capsys, ["layout", "vm_area_struct", "--config", str(f)], "gzip")


def test_config_gzip_accepted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "config.gz"
    f.write_bytes(gzip.compress(b"CONFIG_X86_64=y\nCONFIG_SMP=y\nCONFIG_MMU=y\n"))
    rc, out, _ = run(capsys, "layout", "vm_area_struct", "--config", str(f), "--json")
    assert rc == 0 and json.loads(out)["size"] == 192  # vm_refcnt at 128: content ends at 176


def test_given_files_are_not_written(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "config"
    body = b"CONFIG_X86_64=y\nCONFIG_SMP=y\n"
    f.write_bytes(body)
    run(capsys, "layout", "vm_area_struct", "--config", str(f))
    assert f.read_bytes() == body


def test_good_values_at_the_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "slab", "--size", "64", "--align", "4096", "--cpus", "1",
                     "--json")
    d = json.loads(out)
    assert rc == 0 and d["align"] == 4096 and d["slab_size"] == 4096
    rc, out, _ = run(capsys, "slab", "--kmalloc", "4194304")
    assert rc == 0 and out.strip() == "kmalloc(4194304) -> kmalloc-4194304"


def test_configs_with_a_missing_btf(capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(capsys, ["cost", "--configs", "--no-gcc", "--cpus", "2", "--btf",
                            "/nonexistent/btf"], "cannot read BTF /nonexistent/btf")
