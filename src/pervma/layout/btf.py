"""A pure-Python reader of BTF, the kernel's compact type format.

Follows ``include/uapi/linux/btf.h`` and Documentation/bpf/btf.rst: a 24-byte
(or ``hdr_len``-byte) header, a type section of variable-length records (the
n-th record is type id n; id 0 is ``void``) and a string section.  Every kind
up to ENUM64 (19) is read, including DECL_TAG and TYPE_TAG; struct members
with ``kind_flag`` set carry ``bitfield_size << 24 | bit_offset``.

Split BTF (``/sys/kernel/btf/<module>``) continues the ids and string offsets
of its base (``vmlinux``); :func:`load` needs that base and says so in one line
if it is missing.  Truncated or corrupt input raises :class:`BTFError` with a
one-line message, never another exception: the load pass validates every
record, every string offset and every type reference, and the query methods
guard against cycles.

Usage::

    b = load("/sys/kernel/btf/vmlinux")
    tid = b.find_struct("vm_area_struct")
    b.size_of(tid), b.members(tid)
"""

from __future__ import annotations

import struct as _struct
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path

from pervma.errors import BTFError
from pervma.layout import files

VMLINUX = "/sys/kernel/btf/vmlinux"

MAGIC = 0xEB9F

KIND_UNKN = 0
KIND_INT = 1
KIND_PTR = 2
KIND_ARRAY = 3
KIND_STRUCT = 4
KIND_UNION = 5
KIND_ENUM = 6
KIND_FWD = 7
KIND_TYPEDEF = 8
KIND_VOLATILE = 9
KIND_CONST = 10
KIND_RESTRICT = 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_VAR = 14
KIND_DATASEC = 15
KIND_FLOAT = 16
KIND_DECL_TAG = 17
KIND_TYPE_TAG = 18
KIND_ENUM64 = 19

KIND_NAMES = {
    0: "UNKN", 1: "INT", 2: "PTR", 3: "ARRAY", 4: "STRUCT", 5: "UNION", 6: "ENUM",
    7: "FWD", 8: "TYPEDEF", 9: "VOLATILE", 10: "CONST", 11: "RESTRICT", 12: "FUNC",
    13: "FUNC_PROTO", 14: "VAR", 15: "DATASEC", 16: "FLOAT", 17: "DECL_TAG",
    18: "TYPE_TAG", 19: "ENUM64",
}

# Extra u32 words after the 3-word btf_type header: (fixed, per vlen entry).
_EXTRA = {
    KIND_INT: (1, 0), KIND_PTR: (0, 0), KIND_ARRAY: (3, 0), KIND_STRUCT: (0, 3),
    KIND_UNION: (0, 3), KIND_ENUM: (0, 2), KIND_FWD: (0, 0), KIND_TYPEDEF: (0, 0),
    KIND_VOLATILE: (0, 0), KIND_CONST: (0, 0), KIND_RESTRICT: (0, 0), KIND_FUNC: (0, 0),
    KIND_FUNC_PROTO: (0, 2), KIND_VAR: (1, 0), KIND_DATASEC: (0, 3), KIND_FLOAT: (0, 0),
    KIND_DECL_TAG: (1, 0), KIND_TYPE_TAG: (0, 0), KIND_ENUM64: (0, 3),
}
# Kinds whose third header word is a type id (the others store a size or nothing).
_REFERS = frozenset({KIND_PTR, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT,
                     KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DECL_TAG, KIND_TYPE_TAG})
_MODIFIERS = frozenset({KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG})
_SIZED = frozenset({KIND_INT, KIND_ENUM, KIND_STRUCT, KIND_UNION, KIND_ENUM64, KIND_FLOAT,
                    KIND_DATASEC})

_MAX_DEPTH = 64


@dataclass(frozen=True)
class Header:
    """The BTF header fields (offsets are relative to the end of the header)."""

    magic: int
    version: int
    flags: int
    hdr_len: int
    type_off: int
    type_len: int
    str_off: int
    str_len: int


@dataclass(frozen=True)
class BtfMember:
    """One member of a STRUCT/UNION record, as stored (offsets in bits)."""

    name: str | None
    type_id: int
    bit_offset: int
    bitfield_size: int


class Btf:
    """A parsed BTF blob (optionally split on top of a base :class:`Btf`).

    Type records are kept as parallel arrays (kind, name offset, info, size or
    type, position of the extra words); members, enumerators and strings are
    decoded on demand.
    """

    def __init__(self, data: bytes, base: Btf | None = None, *, source: str = "BTF") -> None:
        self.source = source
        self.base = base
        self.str_start: int = 0
        self.str_end: int = 0
        self.first_id: int = 1
        self.nr_types: int = 1
        self._parse(data)

    # ------------------------------------------------------------------ parsing
    def _fail(self, what: str) -> BTFError:
        return BTFError(f"{self.source}: {what}")

    def _parse(self, data: bytes) -> None:
        if len(data) < 24:
            raise self._fail(f"truncated BTF header ({len(data)} bytes, need 24)")
        magic = _struct.unpack_from("<H", data, 0)[0]
        if magic == MAGIC:
            order = "<"
        elif magic == 0x9FEB:
            order = ">"
        else:
            raise self._fail(f"not BTF (magic 0x{magic:04x}, expected 0xeb9f)")
        self.byteorder = "little" if order == "<" else "big"
        _m, version, flags, hdr_len = _struct.unpack_from(order + "HBBI", data, 0)
        if version != 1:
            raise self._fail(f"unsupported BTF version {version}")
        if hdr_len < 24 or hdr_len > len(data):
            raise self._fail(f"bad header length {hdr_len} (file has {len(data)} bytes)")
        type_off, type_len, str_off, str_len = _struct.unpack_from(order + "IIII", data, 8)
        self.header = Header(magic, version, flags, hdr_len, type_off, type_len, str_off, str_len)
        body = len(data) - hdr_len
        if type_off + type_len > body or str_off + str_len > body:
            raise self._fail(
                f"truncated: sections need {max(type_off + type_len, str_off + str_len)} bytes "
                f"after the header, file has {body}")
        if type_off % 4 or type_len % 4:
            raise self._fail("type section is not 4-byte aligned")
        if type_off < str_off + str_len and str_off < type_off + type_len:
            raise self._fail("type and string sections overlap")
        strs = bytes(data[hdr_len + str_off: hdr_len + str_off + str_len])
        if str_len and strs[-1] != 0:
            raise self._fail("string section does not end with NUL")
        base = self.base
        if base is None and str_len and strs[0] != 0:
            raise self._fail("looks like split BTF (strings do not start with NUL); "
                             "pass its base, e.g. --base /sys/kernel/btf/vmlinux")
        self._strs = strs
        self.str_start = base.str_end if base else 0
        self.str_end = self.str_start + str_len
        self.first_id = base.nr_types if base else 1
        words = array("I")
        words.frombytes(bytes(data[hdr_len + type_off: hdr_len + type_off + type_len]))
        if (order == "<") != (sys.byteorder == "little"):
            words.byteswap()
        self._w = words
        kinds = bytearray()
        pos_list = array("I")
        n = len(words)
        p = 0
        extra = _EXTRA
        while p < n:
            if p + 3 > n:
                raise self._fail(f"truncated type record at byte {p * 4}")
            info = words[p + 1]
            kind = (info >> 24) & 0x1F
            ex = extra.get(kind)
            if ex is None:
                raise self._fail(f"type id {self.first_id + len(kinds)}: unknown kind {kind}")
            vlen = info & 0xFFFF
            pos_list.append(p)
            kinds.append(kind)
            p += 3 + ex[0] + ex[1] * vlen
        if p != n:
            raise self._fail(f"truncated type record at byte {pos_list[-1] * 4}")
        self._kinds = bytes(kinds)
        self._pos = pos_list
        self.nr_types = self.first_id + len(kinds)  # one past the last id
        self._validate()
        self._by_name: dict[str, list[int]] | None = None

    def _validate(self) -> None:
        """Check string offsets and type references of every record."""
        w, kinds, pos = self._w, self._kinds, self._pos
        limit = self.nr_types
        send = self.str_end
        refers = _REFERS
        for i, kind in enumerate(kinds):
            p = pos[i]
            tid = self.first_id + i
            if w[p] >= send:
                raise self._fail(f"type id {tid}: name offset {w[p]} beyond strings ({send})")
            if kind in refers and w[p + 2] >= limit:
                raise self._fail(f"type id {tid}: refers to type {w[p + 2]}, only "
                                 f"{limit - 1} exist (split BTF without its base?)")
            if kind == KIND_ARRAY and (w[p + 3] >= limit or w[p + 4] >= limit):
                raise self._fail(f"type id {tid}: array refers to a missing type")
            vlen = w[p + 1] & 0xFFFF
            if kind in (KIND_STRUCT, KIND_UNION, KIND_DATASEC):
                q = p + 3
                if kind == KIND_DATASEC:
                    for j in range(vlen):
                        if w[q + 3 * j] >= limit:
                            raise self._fail(f"type id {tid}: datasec entry refers to a missing type")
                else:
                    for j in range(vlen):
                        if w[q + 3 * j] >= send or w[q + 3 * j + 1] >= limit:
                            raise self._fail(f"type id {tid}: member {j} is corrupt")
            elif kind == KIND_FUNC_PROTO:
                q = p + 3
                for j in range(vlen):
                    if w[q + 2 * j] >= send or w[q + 2 * j + 1] >= limit:
                        raise self._fail(f"type id {tid}: parameter {j} is corrupt")
            elif kind in (KIND_ENUM, KIND_ENUM64):
                step = 2 if kind == KIND_ENUM else 3
                q = p + 3
                for j in range(vlen):
                    if w[q + step * j] >= send:
                        raise self._fail(f"type id {tid}: enumerator {j} name is corrupt")

    # ------------------------------------------------------------------ records
    def _loc(self, tid: int) -> tuple[Btf, int]:
        if tid < self.first_id:
            if self.base is None or tid <= 0:
                raise self._fail(f"no type id {tid}")
            return self.base._loc(tid)
        i = tid - self.first_id
        if i >= len(self._kinds):
            raise self._fail(f"no type id {tid}")
        return self, i

    def kind(self, tid: int) -> int:
        """The kind number of type ``tid`` (0 for ``void``)."""
        if tid == 0:
            return KIND_UNKN
        b, i = self._loc(tid)
        return b._kinds[i]

    def _words(self, tid: int) -> tuple[array, int]:
        b, i = self._loc(tid)
        return b._w, b._pos[i]

    def string(self, off: int) -> str:
        """The NUL-terminated string at ``off`` (offsets of split BTF continue the base's)."""
        if off < self.str_start:
            if self.base is None:
                raise self._fail(f"string offset {off} out of range")
            return self.base.string(off)
        rel = off - self.str_start
        s = self._strs
        if rel >= len(s):
            raise self._fail(f"string offset {off} out of range")
        end = s.index(b"\0", rel)
        return s[rel:end].decode("utf-8", "replace")

    def name(self, tid: int) -> str:
        """The name of type ``tid`` ('' when anonymous or ``void``)."""
        if tid == 0:
            return ""
        w, p = self._words(tid)
        return self.string(w[p])

    def info(self, tid: int) -> tuple[int, int, int]:
        """``(kind, vlen, kind_flag)`` of type ``tid``."""
        w, p = self._words(tid)
        info = w[p + 1]
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31

    def ref(self, tid: int) -> int:
        """The type a PTR/TYPEDEF/modifier/FUNC/VAR/tag refers to."""
        w, p = self._words(tid)
        return w[p + 2]

    def raw_size(self, tid: int) -> int:
        """The stored ``size`` of a sized kind."""
        w, p = self._words(tid)
        return w[p + 2]

    def array_info(self, tid: int) -> tuple[int, int, int]:
        """``(elem_type, index_type, nelems)`` of an ARRAY."""
        w, p = self._words(tid)
        return w[p + 3], w[p + 4], w[p + 5]

    def int_info(self, tid: int) -> tuple[int, int, int]:
        """``(encoding, bit offset, nr_bits)`` of an INT."""
        w, p = self._words(tid)
        v = w[p + 3]
        return (v >> 24) & 0x0F, (v >> 16) & 0xFF, v & 0xFF

    def decl_tag(self, tid: int) -> tuple[str, int, int]:
        """``(tag string, target type, component_idx)`` of a DECL_TAG (-1 = the type itself)."""
        w, p = self._words(tid)
        idx = w[p + 3]
        return self.string(w[p]), w[p + 2], idx - (1 << 32) if idx >= 1 << 31 else idx

    def enumerators(self, tid: int) -> list[tuple[str, int]]:
        """``[(name, value)]`` of an ENUM or ENUM64 (signed if kind_flag is set)."""
        w, p = self._words(tid)
        info = w[p + 1]
        kind, vlen, signed = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        out = []
        q = p + 3
        if kind == KIND_ENUM:
            for j in range(vlen):
                v = w[q + 2 * j + 1]
                if signed and v >= 1 << 31:
                    v -= 1 << 32
                out.append((self.string(w[q + 2 * j]), v))
        elif kind == KIND_ENUM64:
            for j in range(vlen):
                v = w[q + 3 * j + 1] | (w[q + 3 * j + 2] << 32)
                if signed and v >= 1 << 63:
                    v -= 1 << 64
                out.append((self.string(w[q + 3 * j]), v))
        else:
            raise self._fail(f"type id {tid} is not an enum")
        return out

    def params(self, tid: int) -> list[tuple[str, int]]:
        """``[(name, type)]`` of a FUNC_PROTO (type 0 with no name = ``...``)."""
        w, p = self._words(tid)
        vlen = w[p + 1] & 0xFFFF
        q = p + 3
        return [(self.string(w[q + 2 * j]), w[q + 2 * j + 1]) for j in range(vlen)]

    def members(self, tid: int) -> list[BtfMember]:
        """The members of a STRUCT/UNION, offsets in bits, bitfields decoded.

        With the struct's ``kind_flag`` clear, a bitfield can only be told from
        its INT type (``nr_bits`` smaller than the size, or a bit offset): that
        old encoding is decoded too.
        """
        w, p = self._words(tid)
        info = w[p + 1]
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise self._fail(f"type id {tid} is not a struct or union")
        out = []
        q = p + 3
        for _j in range(vlen):
            name_off, mtype, off = w[q], w[q + 1], w[q + 2]
            q += 3
            if kflag:
                bits, boff = off >> 24, off & 0xFFFFFF
            else:
                bits, boff = 0, off
                r = self.resolve(mtype)
                if self.kind(r) == KIND_INT:
                    _enc, ioff, nbits = self.int_info(r)
                    if nbits != self.raw_size(r) * 8 or ioff:
                        bits, boff = nbits, off + ioff
            out.append(BtfMember(self.string(name_off) or None, mtype, boff, bits))
        return out

    # ------------------------------------------------------------------ queries
    def resolve(self, tid: int) -> int:
        """Follow typedefs, qualifiers and type tags to the underlying type."""
        for _ in range(_MAX_DEPTH):
            if tid == 0 or self.kind(tid) not in _MODIFIERS:
                return tid
            tid = self.ref(tid)
        raise self._fail(f"type chain too deep or cyclic at id {tid}")

    def size_of(self, tid: int, _depth: int = 0) -> int:
        """``sizeof`` of type ``tid`` in bytes (pointers: the pointer size)."""
        if _depth > _MAX_DEPTH:
            raise self._fail(f"type chain too deep or cyclic at id {tid}")
        tid = self.resolve(tid)
        if tid == 0:
            return 0
        k = self.kind(tid)
        if k in _SIZED:
            return self.raw_size(tid)
        if k == KIND_PTR:
            return self.pointer_size
        if k == KIND_ARRAY:
            elem, _idx, n = self.array_info(tid)
            return n * self.size_of(elem, _depth + 1)
        return 0

    def align_of(self, tid: int, _depth: int = 0) -> int:
        """Natural alignment as pahole infers it (BTF stores none)."""
        if _depth > _MAX_DEPTH:
            raise self._fail(f"type chain too deep or cyclic at id {tid}")
        tid = self.resolve(tid)
        if tid == 0:
            return 1
        k = self.kind(tid)
        if k in (KIND_INT, KIND_ENUM, KIND_ENUM64, KIND_FLOAT):
            return max(1, min(self.raw_size(tid), self.pointer_size))
        if k == KIND_PTR:
            return self.pointer_size
        if k == KIND_ARRAY:
            return self.align_of(self.array_info(tid)[0], _depth + 1)
        if k in (KIND_STRUCT, KIND_UNION):
            a = 1
            for m in self.members(tid):
                a = max(a, self.align_of(m.type_id, _depth + 1))
            return a
        return 1

    @property
    def pointer_size(self) -> int:
        """8 unless ``long`` is 4 bytes in this BTF (libbpf's heuristic)."""
        ps = getattr(self, "_ptr_size", None)
        if ps is None:
            ps = self.base.pointer_size if self.base else 8
            if self.base is None:
                for i, k in enumerate(self._kinds):
                    if k == KIND_INT:
                        nm = self.string(self._w[self._pos[i]])
                        if nm in ("long int", "long unsigned int"):
                            ps = self._w[self._pos[i] + 2]
                            break
            self._ptr_size = ps
        return ps

    def _index(self) -> dict[str, list[int]]:
        if self._by_name is None:
            idx: dict[str, list[int]] = {}
            w, pos = self._w, self._pos
            for i, k in enumerate(self._kinds):
                if k in (KIND_STRUCT, KIND_UNION, KIND_FWD, KIND_TYPEDEF, KIND_ENUM, KIND_ENUM64):
                    no = w[pos[i]]
                    if no:
                        idx.setdefault(self.string(no), []).append(self.first_id + i)
            self._by_name = idx
        return self._by_name

    def find(self, name: str, kinds: tuple[int, ...] = (KIND_STRUCT, KIND_UNION)) -> int | None:
        """Type id of the first complete type named ``name`` of the given kinds."""
        cands = [t for t in self._index().get(name, []) if self.kind(t) in kinds]
        if not cands and self.base is not None:
            return self.base.find(name, kinds)
        full = [t for t in cands if self.raw_size(t) > 0]
        if full:
            return full[0]
        return cands[0] if cands else None

    def find_struct(self, name: str) -> int:
        """Type id of struct/union ``name`` ("struct " / "union " prefixes allowed)."""
        for prefix in ("struct ", "union "):
            if name.startswith(prefix):
                name = name[len(prefix):]
        tid = self.find(name)
        if tid is None:
            raise BTFError(f"no struct or union named '{name}' in {self.source}")
        return tid

    def struct_names(self) -> list[str]:
        """Names of every named, non-empty STRUCT in this BTF (no base)."""
        out = []
        w, pos = self._w, self._pos
        for i, k in enumerate(self._kinds):
            if k == KIND_STRUCT and w[pos[i]] and w[pos[i] + 2]:
                out.append(self.string(w[pos[i]]))
        return out

    def kind_counts(self) -> dict[str, int]:
        """How many records of each kind this blob holds."""
        counts: dict[str, int] = {}
        for k in self._kinds:
            counts[KIND_NAMES[k]] = counts.get(KIND_NAMES[k], 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self._kinds)


def load(path: str | Path = VMLINUX, base: str | Path | Btf | None = None) -> Btf:
    """Read BTF from ``path``.

    Module BTF under ``/sys/kernel/btf/`` is split BTF; if ``base`` is not
    given for such a path, ``/sys/kernel/btf/vmlinux`` is used.
    """
    p = Path(path)
    data = files.read_bounded(p, files.BTF_LIMIT, "BTF", BTFError)
    base_btf: Btf | None
    if isinstance(base, Btf):
        base_btf = base
    elif base is not None:
        base_btf = load(base)
    elif p.parent == Path(VMLINUX).parent and p.name != "vmlinux" and Path(VMLINUX).exists():
        base_btf = load(VMLINUX)
    else:
        base_btf = None
    return Btf(data, base_btf, source=str(p))


def parse(data: bytes, base: Btf | None = None, source: str = "BTF") -> Btf:
    """Parse BTF from bytes (see :func:`load`)."""
    return Btf(data, base, source=source)
