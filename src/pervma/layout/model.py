"""The one layout model every source feeds and every printer reads.

A :class:`Composite` (struct or union) holds :class:`Member` rows.  Offsets are
stored *relative to the enclosing composite* (as a compiler thinks of them);
:func:`to_json` and the pahole-style printer add the base offsets so that the
numbers shown are absolute, as ``pahole -C`` shows them.

Sources: :mod:`pervma.layout.btf_layout` (the running kernel's BTF) and
:mod:`pervma.layout.engine` (the C ABI engine over field tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Enumerator:
    """One ``NAME = value`` of an inline anonymous enum."""

    name: str
    value: int


@dataclass
class Member:
    """One member of a struct or union.

    ``decl`` is the declarator as pahole prints it without the trailing ``;``
    (``long unsigned int vm_start``, ``void (*fn)(int)``, ``char cb[48]``);
    ``nested`` is set for inline anonymous structs/unions, printed in place.
    ``byte_offset``/``bit_offset`` are relative to the parent; for a bitfield
    ``byte_offset`` is the start of its storage unit (pahole's convention)
    and ``bitfield_offset`` the bit inside it.
    """

    name: str | None
    type: str
    decl: str
    byte_offset: int
    bit_offset: int
    byte_size: int
    bitfield_size: int = 0
    bitfield_offset: int = 0
    alignment: int = 0  # forced alignment printed as __aligned__ (0: none)
    natural_align: int = 1
    nested: Composite | None = None
    nested_rel: bool = False  # nested is a pointee: its offsets start at 0
    enum: list[Enumerator] | None = None  # inline anonymous enum
    type_is_struct: bool = False  # direct type is a struct (not a typedef of one)
    type_padding: int = 0  # tail padding of that struct type
    # filled by find_holes()
    hole: int = 0
    bit_hole: int = 0


@dataclass
class Composite:
    """A struct or union: size, alignment and members in declaration order."""

    kind: str  # "struct" or "union"
    name: str | None
    size: int
    members: list[Member] = field(default_factory=list)
    align: int = 1  # the real alignment (engine) or the natural one (BTF)
    alignment: int = 0  # forced / inferred __aligned__ (0: none)
    packed: bool = False
    # filled by find_holes()
    pre_hole: int = 0
    pre_bit_hole: int = 0
    padding: int = 0
    bit_padding: int = 0
    nr_holes: int = 0
    nr_bit_holes: int = 0
    _holes_found: bool = False

    def find_holes(self) -> None:
        """Byte and bit holes, tail padding: pahole's ``class__find_holes``."""
        if self._holes_found:
            return
        self._holes_found = True
        if self.kind != "struct":
            return
        cur_bitfield_end = self.size * 8
        cur_bitfield_size = 0
        last_seen_bit = 0
        in_bitfield = False
        last: Member | None = None
        self.nr_holes = self.nr_bit_holes = 0
        for pos in self.members:
            pos.hole = pos.bit_hole = 0
            bit_start = pos.bit_offset
            bit_end = bit_start + (pos.bitfield_size or pos.byte_size * 8)
            bit_holes = byte_holes = 0
            if in_bitfield:
                bitfield_end = min(bit_start, cur_bitfield_end)
                bit_holes = bitfield_end - last_seen_bit
                last_seen_bit = bitfield_end
            if pos.bitfield_size:
                aligned_start = pos.byte_offset * 8
                if last_seen_bit < aligned_start <= bit_start:
                    byte_holes = pos.byte_offset - last_seen_bit // 8
                    last_seen_bit = aligned_start
                bit_holes += bit_start - last_seen_bit
            else:
                byte_holes = bit_start // 8 - last_seen_bit // 8
            last_seen_bit = bit_end
            if pos.bitfield_size:
                in_bitfield = True
                bit_size = pos.byte_size * 8
                if bit_end > cur_bitfield_end or bit_size > cur_bitfield_size:
                    cur_bitfield_size = bit_size
                    cur_bitfield_end = pos.byte_offset * 8 + cur_bitfield_size
                    if bit_end > cur_bitfield_end:
                        cur_bitfield_end += cur_bitfield_size
            else:
                in_bitfield = False
                cur_bitfield_size = 0
                cur_bitfield_end = bit_end
            if last is not None:
                last.hole, last.bit_hole = byte_holes, bit_holes
            else:
                self.pre_hole, self.pre_bit_hole = byte_holes, bit_holes
            if bit_holes:
                self.nr_bit_holes += 1
            if byte_holes:
                self.nr_holes += 1
            last = pos
        if in_bitfield:
            bitfield_end = min(self.size * 8, cur_bitfield_end)
            self.bit_padding = bitfield_end - last_seen_bit
            last_seen_bit = bitfield_end
        else:
            self.bit_padding = 0
        self.padding = self.size - last_seen_bit // 8

    def holes(self, base: int = 0) -> list[dict[str, int]]:
        """Byte holes of this struct (not nested ones): ``[{offset, size}]``, absolute."""
        self.find_holes()
        out = []
        if self.pre_hole:
            out.append({"offset": base, "size": self.pre_hole})
        for m in self.members:
            if m.hole:
                end = m.byte_offset + (m.byte_size if not m.bitfield_size else
                                       (m.bit_offset + m.bitfield_size + 7) // 8 - m.byte_offset)
                out.append({"offset": base + end, "size": m.hole})
        return out


def member_json(m: Member, base: int) -> dict[str, Any]:
    """One member as JSON: absolute offsets; anonymous composites nest their members."""
    off = base + m.byte_offset
    d: dict[str, Any] = {
        "name": m.name,
        "type": m.type,
        "offset": off,
        "size": m.byte_size,
        "bit_offset": base * 8 + m.bit_offset,
        "bitfield_size": m.bitfield_size,
    }
    if m.alignment:
        d["aligned"] = m.alignment
    if m.nested is not None:
        d["members"] = [member_json(x, 0 if m.nested_rel else off) for x in m.nested.members]
    return d


def effective_align(c: Composite) -> int:
    """The alignment the compiler gives ``c``: its own, raised by any forced
    (``__aligned__``) alignment of a member or of a nested anonymous composite,
    as pahole's ``__attribute__((__aligned__(n)))`` lines show."""
    a = max(c.align, c.alignment)
    for m in c.members:
        a = max(a, m.alignment)
        if m.nested is not None and not m.nested_rel:
            a = max(a, effective_align(m.nested))
    return a


def all_holes(c: Composite, base: int = 0) -> list[dict[str, int]]:
    """Byte holes of ``c`` and of its nested anonymous composites (the ones
    ``pahole -C`` prints inline), absolute offsets, in offset order."""
    out = list(c.holes(base))
    for m in c.members:
        if m.nested is not None and not m.nested_rel and m.nested.kind == "struct":
            out += all_holes(m.nested, base + m.byte_offset)
    return sorted(out, key=lambda h: h["offset"])


def nested_padding(c: Composite, base: int = 0) -> list[dict[str, int]]:
    """Tail padding inside nested anonymous structs: ``[{offset, size}]``."""
    out = []
    for m in c.members:
        if m.nested is not None and not m.nested_rel and m.nested.kind == "struct":
            m.nested.find_holes()
            off = base + m.byte_offset
            if m.nested.padding:
                out.append({"offset": off + m.nested.size - m.nested.padding,
                            "size": m.nested.padding})
            out += nested_padding(m.nested, off)
    return sorted(out, key=lambda h: h["offset"])


def to_json(c: Composite) -> dict[str, Any]:
    """``{name, size, align, members, holes, padding, nested_padding}`` as
    documented in the README; ``holes`` include those inside nested anonymous
    structs and ``align`` includes forced alignments (what ``pahole -C`` shows)."""
    c.find_holes()
    return {
        "name": c.name,
        "kind": c.kind,
        "size": c.size,
        "align": effective_align(c),
        "members": [member_json(m, 0) for m in c.members],
        "holes": all_holes(c),
        "padding": c.padding if c.kind == "struct" else c.size - max(
            (m.byte_size for m in c.members), default=0),
        "nested_padding": nested_padding(c),
    }
