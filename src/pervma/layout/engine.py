"""A C struct layout engine for the ABIs Linux runs on.

It lays out what GCC lays out: scalars with the ABI's size and in-struct
alignment (i386 aligns 8-byte ``long long``/``double`` to 4 inside structs),
padding and holes, unions, nested and anonymous members, flexible arrays,
``__aligned__(n)`` on members and types, ``__packed__``, and bitfields with
GCC's rule that a bitfield may not span more alignment units of its type than
the type itself (``excess_unit_span`` in gcc/stor-layout.c); named bitfields
give the struct their type's alignment, unnamed ones only on ARM EABI and arm64
(``arm_align_anon_bitfield``); a zero-width bitfield moves to the next unit.

Types are plain data: :class:`Scalar`, :class:`Pointer`, :class:`Array`,
:class:`Struct` (``union=True`` for unions) with :class:`Field` rows.
:func:`layout` returns a :class:`~pervma.layout.model.Composite` with the real
size and alignment; :func:`to_c` prints the same type as C for a compiler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pervma.errors import UsageError
from pervma.layout.model import Composite, Member


@dataclass(frozen=True)
class ABI:
    """Sizes and alignments of one ABI, plus the gcc that implements it."""

    name: str
    ptr: int
    long: int
    llong_align: int  # alignment of long long / double inside a struct
    ldouble: tuple[int, int]  # (size, align) of long double
    anon_bitfield_aligns: bool  # unnamed bitfields raise struct alignment (ARM AAPCS)
    l1_cache: int  # default L1_CACHE_BYTES / SMP_CACHE_BYTES of the kernel
    gcc: tuple[str, ...]  # compiler command for the cross-check

    def scalar(self, name: str) -> tuple[int, int]:
        """``(size, align)`` of a C scalar type by name."""
        words = [w for w in name.split()
                 if w not in ("unsigned", "signed", "const", "volatile", "int")]
        n = " ".join(words) or "int"
        table = {
            "char": (1, 1), "_Bool": (1, 1), "bool": (1, 1), "u8": (1, 1), "s8": (1, 1),
            "short": (2, 2), "u16": (2, 2), "s16": (2, 2),
            "int": (4, 4), "u32": (4, 4), "s32": (4, 4), "float": (4, 4),
            "long": (self.long, self.long),
            "long long": (8, self.llong_align), "u64": (8, self.llong_align),
            "s64": (8, self.llong_align), "double": (8, self.llong_align),
            "long double": self.ldouble,
            "__int128": (16, 16),
        }
        if n not in table:
            raise UsageError(f"unknown C scalar type '{name}'")
        return table[n]


ABIS: dict[str, ABI] = {
    "x86_64": ABI("x86_64", 8, 8, 8, (16, 16), False, 64, ("gcc", "-m64")),
    "i386": ABI("i386", 4, 4, 4, (12, 4), False, 64, ("gcc", "-m32")),
    "arm64": ABI("arm64", 8, 8, 8, (16, 16), True, 64, ("aarch64-linux-gnu-gcc",)),
    "arm": ABI("arm", 4, 4, 8, (8, 8), True, 64, ("arm-linux-gnueabihf-gcc",)),
    "riscv64": ABI("riscv64", 8, 8, 8, (16, 16), False, 64, ("riscv64-linux-gnu-gcc",)),
}


def abi(name: str) -> ABI:
    """The ABI called ``name`` (aliases: x86-64, amd64, x86, aarch64, armhf, riscv)."""
    aliases = {"x86-64": "x86_64", "amd64": "x86_64", "x86": "x86_64", "i686": "i386",
               "aarch64": "arm64", "armhf": "arm", "armel": "arm", "riscv": "riscv64"}
    key = aliases.get(name, name)
    if key not in ABIS:
        raise UsageError(f"unknown arch '{name}'; choose one of {', '.join(ABIS)}")
    return ABIS[key]


@dataclass(frozen=True)
class Scalar:
    """A C scalar (``unsigned long``, ``u8`` …); ``spelling`` is how pahole prints it."""

    name: str
    spelling: str | None = None


@dataclass(frozen=True)
class Pointer:
    """A pointer; ``to`` is only used for printing (``struct file *``)."""

    to: str = "void"


@dataclass(frozen=True)
class Opaque:
    """A blob with a known size and alignment (a member re-laid out from BTF)."""

    size: int
    align: int
    spelling: str = "char"


@dataclass(frozen=True)
class Array:
    """``elem[n]``; ``n=None`` is a flexible array member."""

    elem: CType
    n: int | None


@dataclass(frozen=True)
class Field:
    """A member: ``bits`` for a bitfield, ``aligned`` for ``__aligned__(n)``."""

    name: str | None
    type: CType
    bits: int | None = None
    aligned: int = 0


@dataclass(frozen=True)
class Struct:
    """A struct or union type (``name=None``: anonymous, printed inline)."""

    name: str | None
    fields: tuple[Field, ...] = field(default_factory=tuple)
    union: bool = False
    packed: bool = False
    aligned: int = 0
    typedef: str | None = None  # printed name when used through a typedef


CType = Scalar | Pointer | Opaque | Array | Struct


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def size_align(t: CType, a: ABI) -> tuple[int, int]:
    """``(sizeof, alignof-in-a-struct)`` of ``t`` under ABI ``a``."""
    if isinstance(t, Scalar):
        return a.scalar(t.name)
    if isinstance(t, Pointer):
        return a.ptr, a.ptr
    if isinstance(t, Opaque):
        return t.size, t.align
    if isinstance(t, Array):
        s, al = size_align(t.elem, a)
        return s * (t.n or 0), al
    c = layout(t, a)
    return c.size, c.align


def type_name(t: CType) -> str:
    """How pahole spells ``t`` (arrays: the element)."""
    if isinstance(t, Scalar):
        return t.spelling or t.name
    if isinstance(t, Pointer):
        return f"{t.to} *"
    if isinstance(t, Opaque):
        return t.spelling
    if isinstance(t, Array):
        return type_name(t.elem)
    if t.typedef:
        return t.typedef
    kw = "union" if t.union else "struct"
    return f"{kw} {t.name}" if t.name else kw


def layout(s: Struct, a: ABI) -> Composite:
    """Lay out struct/union ``s`` under ABI ``a`` the way GCC does."""
    c = Composite("union" if s.union else "struct", s.name, 0, packed=s.packed)
    bitpos = 0  # next free bit (structs)
    size_bits = 0
    max_align = 1
    nfields = len(s.fields)
    for i, f in enumerate(s.fields):
        fsize, falign = size_align(f.type, a)
        natural = falign
        if s.packed and f.bits is None:
            falign = 1
        if f.aligned:
            falign = max(falign, f.aligned)
        if isinstance(f.type, Array) and f.type.n is None and i != nfields - 1:
            raise UsageError(f"flexible array member '{f.name}' is not last in {s.name}")
        if f.bits is not None:
            if not isinstance(f.type, Scalar):
                raise UsageError(f"bitfield '{f.name}' needs an integer type")
            if f.bits > fsize * 8:
                raise UsageError(f"bitfield '{f.name}' is wider than its type")
            unit_bits = fsize * 8
            talign_bits = falign * 8 if not s.packed else 8
            start = 0 if s.union else bitpos
            if f.bits == 0:
                start = _align_up(start, natural * 8)
                if a.anon_bitfield_aligns:
                    max_align = max(max_align, natural)
                if not s.union:
                    bitpos = start
                continue
            if not s.packed:
                span_off = start % talign_bits
                if (span_off + f.bits + talign_bits - 1) // talign_bits > unit_bits // talign_bits:
                    start = _align_up(start, talign_bits)
            if (f.name is not None or a.anon_bitfield_aligns) and not s.packed:
                max_align = max(max_align, falign)
            elif f.aligned:
                max_align = max(max_align, f.aligned)
            unit_byte = start // unit_bits * unit_bits // 8 if not s.packed else start // 8
            m = Member(f.name, type_name(f.type), f"{type_name(f.type)} {f.name or ''}".strip(),
                       unit_byte, start, fsize, f.bits, start - unit_byte * 8,
                       alignment=f.aligned, natural_align=natural)
            end = start + f.bits
            if s.union:
                size_bits = max(size_bits, end)
            else:
                bitpos = end
                size_bits = max(size_bits, end)
            c.members.append(m)
            continue
        start_byte = 0 if s.union else _align_up((bitpos + 7) // 8, falign)
        max_align = max(max_align, falign)
        m = _member(f, start_byte, fsize, natural, a)
        c.members.append(m)
        end_bits = (start_byte + fsize) * 8
        if s.union:
            size_bits = max(size_bits, end_bits)
        else:
            bitpos = end_bits
            size_bits = max(size_bits, end_bits)
    if s.aligned:
        max_align = max(max_align, s.aligned)
    c.align = max_align
    c.size = _align_up((size_bits + 7) // 8, max_align)
    c.alignment = s.aligned
    return c


def _member(f: Field, off: int, size: int, natural: int, a: ABI) -> Member:
    t = f.type
    dims = ""
    while isinstance(t, Array):
        dims += f"[{t.n}]" if t.n is not None else "[]"
        t = t.elem
    nested = None
    name = f.name
    if isinstance(t, Struct) and t.name is None and t.typedef is None:
        nested = layout(t, a)
        name = (f.name or "") + dims if dims else f.name
        decl = "union" if t.union else "struct"
    else:
        decl = f"{type_name(f.type)} {(f.name or '') + dims}".strip()
    m = Member(name, type_name(f.type), decl, off, off * 8, size, alignment=f.aligned,
               natural_align=natural, nested=nested,
               type_is_struct=isinstance(f.type, Struct) and f.type.typedef is None)
    if m.type_is_struct and nested is None:
        inner = layout(f.type, a)  # type: ignore[arg-type]
        inner.find_holes()
        m.type_padding = inner.padding
    return m


# ---------------------------------------------------------------------- C output
def _c_scalar(name: str) -> str:
    fixed = {"u8": "unsigned char", "s8": "signed char", "u16": "unsigned short",
             "s16": "short", "u32": "unsigned int", "s32": "int",
             "u64": "unsigned long long", "s64": "long long", "bool": "_Bool"}
    return fixed.get(name, name)


def _c_decl(t: CType, name: str, indent: str) -> str:
    if isinstance(t, Scalar):
        return f"{_c_scalar(t.name)} {name}".rstrip()
    if isinstance(t, Pointer):
        return f"void *{name}"
    if isinstance(t, Opaque):
        return f"char {name}[{t.size}] __attribute__((__aligned__({t.align})))"
    if isinstance(t, Array):
        return _c_decl(t.elem, f"{name}[{'' if t.n is None else t.n}]", indent)
    return f"{_c_body(t, indent)} {name}".rstrip()


def _c_body(s: Struct, indent: str = "") -> str:
    kw = "union" if s.union else "struct"
    attrs = ""
    if s.packed:
        attrs += " __attribute__((__packed__))"
    if s.aligned:
        attrs += f" __attribute__((__aligned__({s.aligned})))"
    lines = [f"{kw}{attrs} {{"]
    for f in s.fields:
        d = _c_decl(f.type, f.name or "", indent + "\t")
        if f.bits is not None:
            d += f" : {f.bits}"
        if f.aligned:
            d += f" __attribute__((__aligned__({f.aligned})))"
        lines.append(f"{indent}\t{d};")
    lines.append(f"{indent}}}")
    return "\n".join(lines)


def to_c(s: Struct, tag: str) -> str:
    """``struct TAG { … };`` with every nested type written inline."""
    body = _c_body(s)
    head, rest = body.split("{", 1)
    return f"{head.rstrip()} {tag} {{" + rest + ";\n"


def c_checks(s: Struct, tag: str, a: ABI) -> tuple[str, list[tuple[str, int]]]:
    """C source with ``_Static_assert``s of sizeof/alignof/offsetof for every
    non-bitfield member (nested anonymous members by their own name), and the
    list of (expression, expected value) asserted."""
    c = layout(s, a)
    kw = "union" if s.union else "struct"
    exprs: list[tuple[str, int]] = [(f"sizeof({kw} {tag})", c.size),
                                    (f"_Alignof({kw} {tag})", c.align)]

    def walk(comp: Composite, base: int, path: str) -> None:
        for m in comp.members:
            if m.bitfield_size or m.name is None and m.nested is None:
                continue
            off = base + m.byte_offset
            if m.name is not None and "[" not in m.name:
                exprs.append((f"offsetof({kw} {tag}, {path}{m.name})", off))
            if m.nested is not None and "[" not in (m.name or ""):
                walk(m.nested, off, path + (m.name + "." if m.name else ""))

    walk(c, 0, "")
    src = "#include <stddef.h>\n" + to_c(s, tag)
    for i, (e, v) in enumerate(exprs):
        src += f'_Static_assert({e} == {v}, "check {i}: {e} != {v}");\n'
    return src, exprs
