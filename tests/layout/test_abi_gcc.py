"""The layout engine against gcc, one ABI at a time.

Each test compiles the same field lists (the vm_area_struct tables plus
random structs with holes, bitfields, unions, packed and aligned members)
with the ABI's gcc and ``_Static_assert``s every sizeof/alignof/offsetof the
engine predicts; any disagreement fails compilation and names the member.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from pervma.layout import engine as E
from pervma.layout import tables

SCALARS = ["char", "short", "int", "long", "long long", "double", "u8", "u16", "u32", "u64",
           "_Bool", "unsigned int", "unsigned long"]
BITTYPES = ["unsigned char", "unsigned short", "unsigned int", "unsigned long",
            "unsigned long long"]


_counter = iter(range(10**9))


def random_struct(rng: random.Random, depth: int = 0, union: bool = False) -> E.Struct:
    fields: list[E.Field] = []
    for _ in range(rng.randint(1, 7)):
        r = rng.random()
        name: str | None = f"f{next(_counter)}"
        t: E.CType
        bits = None
        aligned = 0
        if r < 0.45:
            t = E.Scalar(rng.choice(SCALARS))
        elif r < 0.55:
            t = E.Pointer()
        elif r < 0.65:
            t = E.Array(E.Scalar(rng.choice(SCALARS)), rng.randint(1, 5))
        elif r < 0.8:
            t = E.Scalar(rng.choice(BITTYPES))
            size = {"unsigned char": 8, "unsigned short": 16, "unsigned int": 32,
                    "unsigned long": 64, "unsigned long long": 64}[t.name]
            bits = rng.randint(0 if rng.random() < 0.1 else 1, min(size, 32))
            if bits == 0 or rng.random() < 0.15:
                name = None  # unnamed (padding) bitfield
                bits = bits if bits else 0
        elif depth < 2:
            inner = random_struct(rng, depth + 1, union=rng.random() < 0.4)
            t = inner
            if rng.random() < 0.4:
                name = None  # anonymous struct/union member
        else:
            t = E.Scalar("int")
        if bits is None and name is not None and rng.random() < 0.08:
            aligned = rng.choice([8, 16, 32, 64])
        fields.append(E.Field(name, t, bits, aligned))
    packed = rng.random() < 0.1
    aligned_s = rng.choice([0, 0, 0, 0, 16, 64])
    return E.Struct(None, tuple(fields), union=union, packed=packed, aligned=aligned_s)


def _check(abi_name: str, tmp_path: Path) -> int:
    a = E.abi(abi_name)
    if shutil.which(a.gcc[0]) is None:
        pytest.skip(f"{a.gcc[0]} not installed (Debian package for {abi_name})")
    rng = random.Random(1234)
    structs = [(f"t{i}", random_struct(rng)) for i in range(150)]
    for key in ("6.14", "6.18", "7.0"):
        for cfg in ("tiny", "typical", "lockdep"):
            c = tables.config_for(abi_name, key, tables.PRESET_OPTIONS[cfg])
            structs.append((f"vma_{key.replace('.', '_')}_{cfg}", tables.vm_area_struct(c)))
    src = ""
    n = 0
    for tag, s in structs:
        body, exprs = E.c_checks(s, tag, a)
        src += body.replace("#include <stddef.h>\n", "")
        n += len(exprs)
    f = tmp_path / f"{abi_name}.c"
    f.write_text("#include <stddef.h>\n" + src)
    cmd = [*a.gcc, "-std=gnu11", "-fsyntax-only", "-w", str(f)]
    if abi_name == "i386":
        cmd.insert(2, "-ffreestanding")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode and "unrecognized" in r.stderr or "sys/cdefs" in r.stderr:
        pytest.skip(f"{a.gcc[0]} cannot compile for {abi_name}: {r.stderr.splitlines()[0]}")
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert r.returncode == 0, "\n".join(errors[:20])
    return n


@pytest.mark.parametrize("abi_name", ["x86_64", "i386", "arm64", "arm", "riscv64"])
def test_engine_matches_gcc(abi_name: str, tmp_path: Path) -> None:
    n = _check(abi_name, tmp_path)
    assert n > 500  # the check really covered many members


def test_i386_long_long_is_4_aligned_in_structs() -> None:
    s = E.Struct("s", (E.Field("c", E.Scalar("char")), E.Field("x", E.Scalar("long long"))))
    assert E.layout(s, E.abi("i386")).members[1].byte_offset == 4
    assert E.layout(s, E.abi("arm")).members[1].byte_offset == 8
    assert E.layout(s, E.abi("i386")).size == 12
    assert E.layout(s, E.abi("x86_64")).size == 16
