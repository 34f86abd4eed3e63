"""Truncated, mutated and hand-made BTF: the reader raises BTFError, one line, or works."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pervma.errors import BTFError
from pervma.layout import btf as B
from pervma.layout.btf_layout import composite
from pervma.layout.pahole import render


def build(types: list[bytes], strings: bytes) -> bytes:
    tsec = b"".join(types)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(tsec), len(tsec), len(strings))
    return hdr + tsec + strings


def t(name: int, kind: int, vlen: int, size_or_type: int, kflag: int = 0) -> bytes:
    return struct.pack("<III", name, (kflag << 31) | (kind << 24) | vlen, size_or_type)


STRS = b"\0int\0s\0a\0b\0c\0e\0X\0tag\0long unsigned int\0"
# offsets: int=1 s=5 a=7 b=9 c=11 e=13 X=15 tag=17 lui=21


def small_btf() -> bytes:
    """int, a struct with bitfields (kind_flag), ENUM64, TYPE_TAG, DECL_TAG, FLOAT, ..."""
    types = [
        t(1, B.KIND_INT, 0, 4) + struct.pack("<I", (1 << 24) | 32),            # 1 int
        t(21, B.KIND_INT, 0, 8) + struct.pack("<I", 64),                       # 2 ulong
        t(5, B.KIND_STRUCT, 4, 16, kflag=1)                                     # 3 struct s
        + struct.pack("<III", 7, 1, (3 << 24) | 0)                              #   a:3
        + struct.pack("<III", 9, 1, (5 << 24) | 3)                              #   b:5
        + struct.pack("<III", 11, 2, 64)                                        #   c
        + struct.pack("<III", 0, 7, 32),                                        #   (anon) @4
        t(13, B.KIND_ENUM64, 1, 8, kflag=1) + struct.pack("<III", 15, 0x80000000, 0),  # 4
        t(17, B.KIND_TYPE_TAG, 0, 1),                                           # 5 tag int
        t(17, B.KIND_DECL_TAG, 0, 3) + struct.pack("<i", -1),                   # 6 decl tag
        t(0, B.KIND_UNION, 1, 4) + struct.pack("<III", 15, 5, 0),               # 7 union{X}
        t(0, B.KIND_FLOAT, 0, 4),                                               # 8 float
        t(0, B.KIND_PTR, 0, 0),                                                 # 9 void *
        t(0, B.KIND_ARRAY, 0, 0) + struct.pack("<III", 1, 1, 3),                # 10 int[3]
        t(0, B.KIND_FUNC_PROTO, 1, 1) + struct.pack("<II", 0, 9),              # 11 int(void*)
        t(0, B.KIND_VAR, 0, 1) + struct.pack("<I", 1),                         # 12
    ]
    return build(types, STRS)


def test_small_btf_all_kinds() -> None:
    b = B.parse(small_btf())
    assert len(b) == 12
    sid = b.find_struct("s")
    ms = b.members(sid)
    assert [(m.name, m.bit_offset, m.bitfield_size) for m in ms] == [
        ("a", 0, 3), ("b", 3, 5), ("c", 64, 0), (None, 32, 0)]
    assert b.enumerators(4) == [("X", 0x80000000)]
    assert b.decl_tag(6) == ("tag", 3, -1)
    assert b.resolve(5) == 1
    c = composite(b, sid)
    assert c.size == 16 and c.members[0].bitfield_offset == 0 and c.members[1].bitfield_offset == 3
    text = render(c)
    assert "a:3;" in text and "/*     0: 3  4 */" in text


def test_split_btf_needs_base() -> None:
    base = B.parse(small_btf())
    # a split blob: one PTR to base type 3, its name string continues the base's
    split_strs = b"p\0"
    blob = build([t(len(STRS), B.KIND_PTR, 0, 3)], split_strs)
    with pytest.raises(BTFError, match="split BTF"):
        B.parse(blob)
    s = B.parse(blob, base)
    assert s.first_id == 13 and s.kind(13) == B.KIND_PTR and s.name(13) == "p"
    assert s.size_of(13) == 8
    assert s.find_struct("s") == 3


def test_cycle_is_an_error() -> None:
    blob = build([t(0, B.KIND_TYPEDEF, 0, 2), t(0, B.KIND_CONST, 0, 1)], b"\0")
    b = B.parse(blob)
    with pytest.raises(BTFError, match="cyclic"):
        b.size_of(1)


def _exercise(data: bytes) -> None:
    try:
        b = B.parse(data)
        for tid in range(1, min(len(b), 40) + 1):
            k = b.kind(tid)
            b.name(tid)
            b.size_of(tid)
            if k in (B.KIND_STRUCT, B.KIND_UNION):
                render(composite(b, tid))
            elif k in (B.KIND_ENUM, B.KIND_ENUM64):
                b.enumerators(tid)
    except BTFError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_small(data: st.DataObject) -> None:
    blob = bytearray(small_btf())
    cut = data.draw(st.integers(0, len(blob)))
    blob = blob[:cut] if data.draw(st.booleans()) else blob
    for _ in range(data.draw(st.integers(0, 6))):
        if not blob:
            break
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    _exercise(bytes(blob))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_vmlinux_truncated_and_mutated(vmlinux_bytes: bytes, data: st.DataObject) -> None:
    """The real vmlinux, cut anywhere and with bytes flipped in header and types."""
    n = len(vmlinux_bytes)
    head = bytearray(vmlinux_bytes[: data.draw(st.integers(0, n))])
    for _ in range(data.draw(st.integers(0, 4))):
        if not head:
            break
        i = data.draw(st.one_of(st.integers(0, min(len(head) - 1, 64)),
                                st.integers(0, len(head) - 1)))
        head[i] ^= data.draw(st.integers(1, 255))
    _exercise(bytes(head))


def test_every_truncation_of_small_btf_is_one_line() -> None:
    data = small_btf()
    for cut in range(len(data)):
        _exercise(data[:cut])
