"""Print a :class:`~pervma.layout.model.Composite` the way ``pahole -C`` does.

Follows dwarves' ``__class__fprintf`` / ``union__fprintf`` /
``class_member__fprintf`` (pahole 1.24, BTF input): one member per line with
``/* offset size */`` (``offset:bit size`` for bitfields), byte and bit holes,
"Bitfield combined with ..." notes, ``XXX last struct has N bytes of padding``,
cache-line markers, inferred ``__packed__``/``__aligned__`` attributes and the
statistics footer.  Spacing follows pahole's columns but tests compare with
whitespace removed.
"""

from __future__ import annotations

from pervma.layout.model import Composite, Member

TYPE_SPACING = 26
NAME_SPACING = 23


class _State:
    def __init__(self, cacheline: int) -> None:
        self.cacheline_size = cacheline
        self.cacheline = 0


def infer_packed(c: Composite) -> bool:
    """pahole's class__infer_packed_attributes() / union__infer_packed_attributes()."""
    if getattr(c, "_packed_inferred", False):
        return c.packed
    c._packed_inferred = True  # type: ignore[attr-defined]
    if c.kind == "union":
        for m in c.members:
            if m.nested is not None and m.nested.kind == "struct" and m.natural_align and \
                    c.size % m.natural_align:
                m.nested.packed = True
                m.nested._packed_inferred = True  # type: ignore[attr-defined]
        return c.packed
    if c.packed:
        return True
    c.find_holes()
    if c.padding or c.nr_holes:
        for m in c.members:
            if m.nested is not None and m.nested.kind == "struct" and \
                    m.byte_offset % max(m.natural_align, 1):
                m.nested.packed = True
                m.nested._packed_inferred = True  # type: ignore[attr-defined]
        return False
    max_nat = 1
    for m in c.members:
        nat = max(m.natural_align, 1)
        if nat == 1:
            continue
        max_nat = max(max_nat, nat)
        if m.byte_offset % nat:
            c.packed = True
            return True
    if c.size % max_nat:
        c.packed = True
    return c.packed


def _pad(text: str, width: int) -> str:
    return text + " " * max(width - len(text), 1)


def _offset_comment(off: int, m: Member) -> str:
    if m.bitfield_size:
        return f"/* {off:5d}:{m.bitfield_offset:2d} {m.byte_size:2d} */"
    return f"/* {off:5d} {m.byte_size:5d} */"


def _member_lines(m: Member, base: int, indent: int, st: _State, in_union: bool,
                  type_spacing: int) -> list[str]:
    tabs = "\t" * indent
    out: list[str] = []
    off = base + m.byte_offset
    cl = off // st.cacheline_size
    if cl > st.cacheline:
        pos = off % st.cacheline_size
        if pos == 0:
            out.append(f"{tabs}/* --- cacheline {cl} boundary ({off - pos} bytes) --- */")
        else:
            out.append(f"{tabs}/* --- cacheline {cl} boundary ({off - pos} bytes) "
                       f"was {pos} byte{'s' if pos != 1 else ''} ago --- */")
        st.cacheline = cl
    attr = f" __attribute__((__aligned__({m.alignment})))" if m.alignment else ""
    bits = f":{m.bitfield_size}" if m.bitfield_size else ""
    if m.nested is not None:
        body = _composite_lines(m.nested, 0 if m.nested_rel else off, indent, st, suffix=m.name,
                                type_spacing=type_spacing - 8, emit_stats=False)
        qual = m.type.rsplit(" ", 1)[0] + " " if " " in m.type else ""
        body[0] = tabs + qual + body[0].lstrip("\t")
        body[-1] = body[-1] + bits + attr + ";  " + _offset_comment(off, m)
        out.extend(body)
        return out
    if m.enum is not None:
        out.append(tabs + "enum {")
        for e in m.enum:
            out.append(f"{tabs}\t{e.name} = {e.value & 0xFFFFFFFF if m.byte_size <= 4 else e.value},")
        out.append(f"{tabs}}}{' ' + m.name if m.name else ''}{bits}{attr};  "
                   + _offset_comment(off, m))
        return out
    decl = m.decl
    # pahole pads the type column: "<type padded to 26> <name>"
    if m.name and decl.endswith(" " + m.name) and "(" not in decl:
        decl = _pad(decl[: -len(m.name) - 1], type_spacing) + m.name
    text = tabs + decl + bits + attr + ";"
    width = indent * 8 + type_spacing + NAME_SPACING + 1
    out.append(_pad(text.expandtabs(8), width) + _offset_comment(off, m))
    return out


def _composite_lines(c: Composite, base: int, indent: int, st: _State, suffix: str | None,
                     type_spacing: int, emit_stats: bool) -> list[str]:
    if c.kind == "union":
        return _union_lines(c, base, indent, st, suffix, type_spacing, emit_stats)
    return _struct_lines(c, base, indent, st, suffix, type_spacing, emit_stats)


def _union_lines(c: Composite, base: int, indent: int, st: _State, suffix: str | None,
                 type_spacing: int, emit_stats: bool) -> list[str]:
    tabs = "\t" * indent
    out = [tabs + "union" + (" " + c.name if c.name else "") + " {"]
    infer_packed(c)
    initial = st.cacheline
    for m in c.members:
        out.extend(_member_lines(m, base, indent + 1, st, True, type_spacing))
        st.cacheline = initial
    if emit_stats:
        out.extend(_stats(c, indent + 1, st, 0, 0, 0, 0, 0, 0, 0, 0))
    out.append(tabs + "}" + (" " + suffix if suffix else ""))
    return out


def _struct_lines(c: Composite, base: int, indent: int, st: _State, suffix: str | None,
                  type_spacing: int, emit_stats: bool) -> list[str]:
    tabs = "\t" * indent
    itabs = tabs + "\t"
    out = [tabs + "struct" + (" " + c.name if c.name else "") + " {"]
    infer_packed(c)
    c.find_holes()
    sum_bytes = sum_bits = sum_holes = sum_bit_holes = 0
    nr_paddings = sum_paddings = 0
    nr_forced = nr_forced_holes = sum_forced_holes = 0
    if c.pre_bit_hole:
        out += ["", f"{itabs}/* XXX {c.pre_bit_hole} bit{'s' if c.pre_bit_hole != 1 else ''} "
                "hole, try to pack */"]
        sum_bit_holes += c.pre_bit_hole
    if c.pre_hole:
        out += ["", f"{itabs}/* XXX {c.pre_hole} byte{'s' if c.pre_hole != 1 else ''} "
                "hole, try to pack */"]
        sum_holes += c.pre_hole
    last: Member | None = None
    last_size = 0
    for pos in c.members:
        if pos.alignment:
            fh = last.hole if last is not None else c.pre_hole
            if fh:
                nr_forced_holes += 1
                sum_forced_holes += fh
            nr_forced += 1
        if last is not None and last_size != 0:
            if last.bit_hole and pos.bitfield_size:
                width = last.bit_hole
                if last.byte_offset != pos.byte_offset:
                    out += ["", f"{itabs}/* Force alignment to the next boundary: */"]
                    width = 0
                out.append(f"{itabs}{pos.type} :{width};")
            if pos.byte_offset < last.byte_offset or (
                    pos.byte_offset == last.byte_offset and last.bitfield_size == 0
                    and pos.bitfield_size != 0):
                out += ["", f"{itabs}/* Bitfield combined with previous fields */", ""]
            else:
                cc = pos.byte_offset - last.byte_offset
                if 0 < cc < last_size:
                    out += ["", f"{itabs}/* Bitfield combined with next fields */", ""]
        size = pos.byte_size
        out.extend(_member_lines(pos, base, indent + 1, st, False, type_spacing))
        padding = 0
        if pos.nested is not None and pos.nested.kind == "struct" and pos.type_is_struct:
            pos.nested.find_holes()
            padding = pos.nested.padding
        elif pos.type_is_struct:
            padding = pos.type_padding
        if padding > 0:
            nr_paddings += 1
            sum_paddings += padding
            out += ["", f"{itabs}/* XXX last struct has {padding} byte"
                    f"{'s' if padding != 1 else ''} of padding */"]
        if pos.bit_hole:
            out += ["", f"{itabs}/* XXX {pos.bit_hole} bit{'s' if pos.bit_hole != 1 else ''} "
                    "hole, try to pack */"]
            sum_bit_holes += pos.bit_hole
        if pos.hole > 0:
            out += ["", f"{itabs}/* XXX {pos.hole} byte{'s' if pos.hole != 1 else ''} "
                    "hole, try to pack */", ""]
            sum_holes += pos.hole
        if pos.bitfield_size:
            sum_bits += pos.bitfield_size
        else:
            sum_bytes += pos.byte_size
        if last is None or last_size == 0 or last.byte_offset != pos.byte_offset:
            last_size = size
        elif last.bitfield_size == 0 and pos.bitfield_size != 0:
            last_size = size
        last = pos
    if emit_stats:
        out.extend(_stats(c, indent + 1, st, sum_bytes, sum_bits, sum_holes, sum_bit_holes,
                          nr_paddings, sum_paddings, nr_forced,
                          (nr_forced_holes, sum_forced_holes)))
    close = tabs + "}"
    if c.packed:
        close += " __attribute__((__packed__))"
    if c.alignment and not c.packed:
        close += f" __attribute__((__aligned__({c.alignment})))"
    if suffix:
        close += " " + suffix
    out.append(close)
    return out


def _stats(c: Composite, indent: int, st: _State, sum_bytes: int, sum_bits: int,
           sum_holes: int, sum_bit_holes: int, nr_paddings: int, sum_paddings: int,
           nr_forced: int, forced_holes: tuple[int, int] | int) -> list[str]:
    tabs = "\t" * indent
    cl = st.cacheline_size
    out = ["", f"{tabs}/* size: {c.size}, cachelines: {(c.size + cl - 1) // cl}, "
           f"members: {len(c.members)} */"]
    if sum_holes > 0 or sum_bit_holes > 0:
        if sum_bytes > 0:
            s = f"{tabs}/* sum members: {sum_bytes}"
            if sum_holes > 0:
                s += f", holes: {c.nr_holes}, sum holes: {sum_holes}"
            out.append(s + " */")
        if sum_bits > 0:
            s = f"{tabs}/* sum bitfield members: {sum_bits} bits"
            if sum_bit_holes > 0:
                s += f", bit holes: {c.nr_bit_holes}, sum bit holes: {sum_bit_holes} bits"
            else:
                s += f" ({sum_bits // 8} bytes)"
            out.append(s + " */")
    if c.kind == "struct" and c.padding > 0:
        out.append(f"{tabs}/* padding: {c.padding} */")
    if nr_paddings > 0:
        out.append(f"{tabs}/* paddings: {nr_paddings}, sum paddings: {sum_paddings} */")
    if c.kind == "struct" and c.bit_padding > 0:
        out.append(f"{tabs}/* bit_padding: {c.bit_padding} bits */")
    if nr_forced:
        s = f"{tabs}/* forced alignments: {nr_forced}"
        if isinstance(forced_holes, tuple) and forced_holes[0]:
            s += f", forced holes: {forced_holes[0]}, sum forced holes: {forced_holes[1]}"
        out.append(s + " */")
    if c.size % cl:
        out.append(f"{tabs}/* last cacheline: {c.size % cl} bytes */")
    return out


def render(c: Composite, cacheline: int = 64) -> str:
    """``pahole -C NAME`` text for ``c`` (trailing ``;`` included)."""
    st = _State(cacheline)
    lines = _composite_lines(c, 0, 0, st, None, TYPE_SPACING, True)
    lines[-1] += ";"
    return "\n".join(lines) + "\n"


def normalise(text: str) -> str:
    """Text with all whitespace removed: the form tests compare with pahole's."""
    return "".join(text.split())
