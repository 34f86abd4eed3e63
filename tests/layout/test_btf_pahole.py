"""pervma's BTF reader and pahole-style printer against real pahole."""

from __future__ import annotations

import random
import re
from collections import Counter

from conftest import pahole_blocks
from pervma.layout import btf as B
from pervma.layout.btf_layout import struct_layout
from pervma.layout.pahole import normalise, render

MEMBER = re.compile(r"/\*\s*(\d+)(?::\s*(\d+))?\s+(\d+)\s*\*/")
SIZE = re.compile(r"/\* size: (\d+),")


def _numbers(text: str) -> list[tuple[str, ...]]:
    """(offset, bit, size) of every member line, and the struct size."""
    nums = [tuple(x or "" for x in m.groups()) for m in MEMBER.finditer(text)]
    return nums + [(s,) for s in SIZE.findall(text)]


def _sample(b: B.Btf, n: int) -> list[str]:
    counts = Counter(b.struct_names())
    index = b._index()
    names = sorted(k for k, c in counts.items() if c == 1 and len(index[k]) == 1)
    rng = random.Random(5)
    fixed = ["vm_area_struct", "mm_struct", "sk_buff", "task_struct", "page", "inode",
             "file_operations", "bpf_prog", "rw_semaphore", "lockdep_map"]
    return [x for x in fixed if x in counts] + rng.sample(names, min(n, len(names)))


def test_layout_equals_pahole_for_300_structs(vmlinux: B.Btf, pahole: str) -> None:
    names = _sample(vmlinux, 300)
    blocks = pahole_blocks(names)
    compared = same_numbers = same_text = 0
    text_diffs = []
    for name in names:
        if name not in blocks:
            continue  # pahole picked another kind of type with this name
        compared += 1
        mine = render(struct_layout(vmlinux, name))
        assert _numbers(mine) == _numbers(blocks[name]), f"offsets/sizes differ for {name}"
        same_numbers += 1
        if normalise(mine) == normalise(blocks[name]):
            same_text += 1
        else:
            text_diffs.append(name)
    assert compared >= 200
    assert same_numbers == compared
    # full text (types, holes, padding, cacheline markers), whitespace aside
    assert same_text >= compared - 2, text_diffs


def test_vm_area_struct_text_is_paholes(vmlinux: B.Btf, pahole: str) -> None:
    blocks = pahole_blocks(["vm_area_struct"])
    assert normalise(render(struct_layout(vmlinux, "vm_area_struct"))) == \
        normalise(blocks["vm_area_struct"])


def test_pahole_s_sizes_and_holes_for_every_struct(vmlinux: B.Btf, pahole: str) -> None:
    """``pahole -s`` lists size and top-level holes of every struct: all must agree."""
    import subprocess
    out = subprocess.run(["pahole", "-s"], capture_output=True, text=True).stdout
    rows = [ln.split("\t") for ln in out.splitlines() if ln.count("\t") == 2]
    counts = Counter(vmlinux.struct_names())
    checked = 0
    for name, size, nholes in rows:
        if counts.get(name) != 1:
            continue
        c = struct_layout(vmlinux, name)
        c.find_holes()
        assert (c.size, c.nr_holes) == (int(size), int(nholes)), name
        checked += 1
    assert checked > 1000


def test_header_and_kinds(vmlinux: B.Btf) -> None:
    assert vmlinux.header.magic == 0xEB9F
    assert vmlinux.header.version == 1
    assert vmlinux.header.hdr_len == 24
    counts = vmlinux.kind_counts()
    assert sum(counts.values()) == len(vmlinux)
    assert counts["STRUCT"] > 1000
    assert vmlinux.pointer_size == 8


def test_json_shape(vmlinux: B.Btf) -> None:
    from pervma.layout.model import to_json
    d = to_json(struct_layout(vmlinux, "vm_area_struct"))
    assert set(d) >= {"name", "size", "members", "holes", "padding"}
    anon = d["members"][0]
    assert anon["name"] is None and anon["members"]
    m = d["members"][1]
    assert set(m) >= {"name", "type", "offset", "size", "bit_offset", "bitfield_size"}
    assert m["bit_offset"] == 8 * m["offset"]
    total = sum(h["size"] for h in d["holes"])
    c = struct_layout(vmlinux, "vm_area_struct")
    members_end = max(mm.byte_offset + mm.byte_size for mm in c.members)
    assert d["padding"] == d["size"] - members_end
    assert total == d["size"] - d["padding"] - sum(mm["size"] for mm in d["members"])
