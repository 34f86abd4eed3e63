"""Struct layouts of the running kernel, read from BTF the way pahole reads them.

:func:`composite` turns a BTF STRUCT/UNION into a :class:`~pervma.layout.model.Composite`:
members with pahole's type spelling (``long unsigned int``, ``struct file *``,
``int (*fn)(struct file *, int)``), bitfields placed at their storage unit
(pahole's ``class__fixup_btf_bitfields``), anonymous structs/unions nested, and
the ``__aligned__`` attributes pahole infers from offsets (BTF stores no
alignment; ``class__infer_alignment`` with a 64-byte cache line).
"""

from __future__ import annotations

from pervma.layout import btf as B
from pervma.layout.model import Composite, Enumerator, Member

CACHELINE = 64


def _infer_alignment(byte_offset: int, natural: int, smallest_offset: int,
                     cacheline: int = CACHELINE) -> int:
    """pahole's class__infer_alignment(): a forced alignment guessed from a gap."""
    delta = (byte_offset - smallest_offset) & 0xFFFFFFFF
    alignment = 0
    if delta and byte_offset % 2 == 0:
        alignment = 1 << delta.bit_length()
        if alignment >= 1 << 32:
            alignment = 0
    if alignment <= natural or alignment == 1:
        return 0
    if alignment < cacheline and cacheline % alignment == 0 and byte_offset % cacheline == 0:
        return cacheline
    return alignment


class Namer:
    """Spells BTF types the way pahole 1.24 prints them."""

    def __init__(self, b: B.Btf) -> None:
        self.b = b

    def type_name(self, tid: int, depth: int = 0) -> str:
        """A type's name without declarator (``struct foo``, ``const char *``)."""
        b = self.b
        if depth > 32:
            raise B.BTFError(f"{b.source}: type chain too deep at id {tid}")
        if tid == 0:
            return "void"
        k = b.kind(tid)
        if k in (B.KIND_INT, B.KIND_FLOAT, B.KIND_TYPEDEF):
            return b.name(tid)
        if k == B.KIND_STRUCT:
            return "struct " + b.name(tid) if b.name(tid) else "struct"
        if k == B.KIND_UNION:
            return "union " + b.name(tid) if b.name(tid) else "union"
        if k in (B.KIND_ENUM, B.KIND_ENUM64):
            return "enum " + b.name(tid) if b.name(tid) else "enum"
        if k == B.KIND_FWD:
            return ("union " if b.info(tid)[2] else "struct ") + b.name(tid)
        if k in (B.KIND_CONST, B.KIND_VOLATILE):
            q = "const" if k == B.KIND_CONST else "volatile"
            r = b.ref(tid)
            if r and b.kind(r) == B.KIND_PTR:
                return self.type_name(r, depth + 1) + " " + q
            return q + " " + self.type_name(r, depth + 1)
        if k == B.KIND_RESTRICT:
            return self.type_name(b.ref(tid), depth + 1) + " restrict"
        if k == B.KIND_TYPE_TAG:
            return self.type_name(b.ref(tid), depth + 1)
        if k == B.KIND_PTR:
            t = b.ref(tid)
            if t and b.kind(t) == B.KIND_FUNC_PROTO:
                return self.declarator(t, "(*)", depth + 1)
            return self.type_name(t, depth + 1) + " *"
        if k == B.KIND_ARRAY:  # pahole names an array type by its element
            return self.type_name(b.array_info(tid)[0], depth + 1)
        if k == B.KIND_FUNC_PROTO:
            return self.declarator(tid, "", depth + 1)
        return b.name(tid) or "<ERROR>"

    def params(self, tid: int, depth: int) -> str:
        ps = self.b.params(tid)
        if not ps:
            return "(void)"
        parts = []
        for pname, ptype in ps:
            if ptype == 0 and not pname:
                parts.append("...")
                continue
            parts.append(self.declarator(ptype, pname, depth + 1))
        return "(" + ", ".join(parts) + ")"

    def declarator(self, tid: int, name: str, depth: int = 0, last: bool = False) -> str:
        """``type name`` with C declarator syntax for arrays and function pointers."""
        b = self.b
        if depth > 32:
            raise B.BTFError(f"{b.source}: type chain too deep at id {tid}")
        sep = " " if name else ""
        if tid == 0:
            return "void" + sep + name
        k = b.kind(tid)
        if k == B.KIND_ARRAY:
            dims = ""
            t = tid
            while t and b.kind(t) == B.KIND_ARRAY:
                elem, _i, n = b.array_info(t)
                dims += f"[{n}]" if n or not last else "[]"
                t = elem
                depth += 1
                if depth > 32:
                    raise B.BTFError(f"{b.source}: type chain too deep at id {tid}")
            return self.declarator(t, name + dims, depth + 1)
        if k in (B.KIND_CONST, B.KIND_VOLATILE):
            q = "const " if k == B.KIND_CONST else "volatile "
            return q + self.declarator(b.ref(tid), name, depth + 1, last)
        if k == B.KIND_PTR:
            t = b.ref(tid)
            if t and b.kind(t) == B.KIND_FUNC_PROTO:
                return self.declarator(b.ref(t), f"(*{name})" + self.params(t, depth + 1),
                                       depth + 1)
        if k == B.KIND_FUNC_PROTO:
            return self.declarator(b.ref(tid), f"({name})" + self.params(tid, depth + 1),
                                   depth + 1)
        return self.type_name(tid, depth + 1) + sep + name


def _natural_alignment(b: B.Btf, tid: int, depth: int = 0) -> int:
    """pahole's tag__natural_alignment() on a typedef-stripped type."""
    if depth > 32:
        raise B.BTFError(f"{b.source}: type chain too deep at id {tid}")
    tid = b.resolve(tid)
    if tid == 0:
        return 1
    k = b.kind(tid)
    if k == B.KIND_PTR:
        return b.pointer_size
    if k in (B.KIND_INT, B.KIND_FLOAT, B.KIND_ENUM, B.KIND_ENUM64):
        return b.raw_size(tid) or 1
    if k in (B.KIND_STRUCT, B.KIND_UNION):
        a = 0
        for m in b.members(tid):
            a = max(a, _natural_alignment(b, m.type_id, depth + 1))
        return a or 1
    if k == B.KIND_ARRAY:
        return _natural_alignment(b, b.array_info(tid)[0], depth + 1)
    return 1


def _array_dims(b: B.Btf, tid: int) -> tuple[int, str]:
    """Element type and ``[n][m]`` suffix of an array type (typedefs kept)."""
    dims = ""
    for _ in range(32):
        if not tid or b.kind(tid) != B.KIND_ARRAY:
            break
        elem, _i, n = b.array_info(tid)
        dims += f"[{n}]"
        tid = elem
    return tid, dims


def composite(b: B.Btf, tid: int, _depth: int = 0, in_union: bool = False) -> Composite:
    """The layout of BTF struct/union ``tid`` (offsets relative to itself).

    ``in_union`` mirrors pahole's rule that a zero-length array is printed
    ``[]`` only as the last member of a struct not enclosed in a union.
    """
    if _depth > 32:
        raise B.BTFError(f"{b.source}: structs nested too deeply at id {tid}")
    namer = Namer(b)
    kind_num, _vlen, _kf = b.info(tid)
    kind = "union" if kind_num == B.KIND_UNION else "struct"
    size = b.raw_size(tid)
    c = Composite(kind, b.name(tid) or None, size)
    smallest = 0
    bms = b.members(tid)
    vlen = len(bms)
    for j, bm in enumerate(bms):
        mt = bm.type_id
        rt = b.resolve(mt)
        rk = b.kind(rt)
        bsize = b.size_of(rt)
        nat = _natural_alignment(b, rt)
        byte_off = bm.bit_offset // 8
        bf_off = 0
        if bm.bitfield_size and rk in (B.KIND_INT, B.KIND_ENUM, B.KIND_ENUM64) and bsize:
            bit_size = bsize * 8
            byte_off = bm.bit_offset // bit_size * bit_size // 8
            bf_off = bm.bit_offset - byte_off * 8
        name = bm.name
        nested = None
        enum = None
        direct_kind = b.kind(mt)
        inner_union = in_union or kind == "union"
        elem, dims = _array_dims(b, mt) if direct_kind == B.KIND_ARRAY else (mt, "")
        ek = b.kind(elem)
        last = kind == "struct" and not in_union and j == vlen - 1
        if dims.endswith("[0]") and last:
            dims = dims[:-3] + "[]"
        pointee = b.ref(mt) if direct_kind == B.KIND_PTR else 0
        pk = b.kind(pointee) if pointee else 0
        rel = False
        prefix = ""
        if direct_kind in (B.KIND_CONST, B.KIND_VOLATILE) and b.ref(mt) == rt:
            prefix = "const " if direct_kind == B.KIND_CONST else "volatile "
        if rk in (B.KIND_STRUCT, B.KIND_UNION) and not b.name(rt) and (mt == rt or prefix):
            nested = composite(b, rt, _depth + 1, inner_union)
            tname = prefix + ("union" if rk == B.KIND_UNION else "struct")
            decl = tname
        elif dims and ek in (B.KIND_STRUCT, B.KIND_UNION) and not b.name(elem):
            nested = composite(b, elem, _depth + 1, inner_union)
            tname = "union" if ek == B.KIND_UNION else "struct"
            decl = tname
            name = (name or "") + dims
        elif pk in (B.KIND_STRUCT, B.KIND_UNION) and not b.name(pointee):
            nested = composite(b, pointee, _depth + 1, inner_union)
            tname = "union" if pk == B.KIND_UNION else "struct"
            decl = tname
            name = "* " + (name or "")
            rel = True
        elif rk in (B.KIND_ENUM, B.KIND_ENUM64) and not b.name(rt) and mt == rt:
            enum = [Enumerator(n, v) for n, v in b.enumerators(rt)]
            tname = "enum"
            decl = "enum"
        else:
            tname = namer.type_name(mt)
            decl = namer.declarator(mt, name or "", last=last)
        m = Member(
            name=name, type=tname, decl=decl, byte_offset=byte_off, bit_offset=bm.bit_offset,
            byte_size=bsize, bitfield_size=bm.bitfield_size, bitfield_offset=bf_off,
            natural_align=nat, nested=nested, enum=enum,
            type_is_struct=direct_kind == B.KIND_STRUCT, nested_rel=rel,
        )
        if bsize:
            m.alignment = _infer_alignment(byte_off, nat, smallest)
            smallest = byte_off + bsize
        else:
            m.alignment = 0
        c.members.append(m)
        if m.type_is_struct:
            m.type_padding = _struct_padding(b, mt, _depth + 1)
    c.align = _natural_alignment(b, tid)
    if kind == "union":  # members overlap: only the longest one bounds the tail
        smallest = max((m.byte_offset + m.byte_size for m in c.members), default=0)
    c.alignment = _infer_alignment(size, c.align, smallest)
    if c.alignment:
        c.align = max(c.align, c.alignment)
    return c


def _struct_padding(b: B.Btf, tid: int, depth: int) -> int:
    cache: dict[int, int] = b.__dict__.setdefault("_padding_cache", {})
    v = cache.get(tid)
    if v is None:
        inner = composite(b, tid, depth)
        inner.find_holes()
        v = cache[tid] = inner.padding
    return v


def struct_layout(b: B.Btf, name: str) -> Composite:
    """The layout of struct or union ``name`` in BTF ``b``."""
    return composite(b, b.find_struct(name))
