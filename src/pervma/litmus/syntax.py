"""The abstract syntax of a C litmus test as herd7 reads it.

A test is a name, an initial state, processes ``P0``..``Pn`` written in a small
subset of C (declarations, assignments, ``if``/``else``, blocks and calls of
the primitives ``linux-kernel.def`` defines) and a final clause: optional
``locations`` and ``filter``, then ``exists``, ``~exists`` or ``forall`` over a
proposition on final register and memory values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pervma.errors import InputError


class LitmusError(InputError):
    """A litmus file pervma cannot read or parse: one line naming the construct."""


@dataclass(frozen=True, slots=True)
class Loc:
    """The address of a shared variable (herd prints it as the bare name)."""

    name: str

    def __str__(self) -> str:
        return self.name


Value = int | Loc


# ---- C expressions and statements --------------------------------------------------

@dataclass(frozen=True, slots=True)
class Num:
    value: int
    line: int


@dataclass(frozen=True, slots=True)
class Name:
    id: str
    line: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # '!', '-', '~', '*' (dereference), '&' (address-of)
    arg: Expr
    line: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Expr
    right: Expr
    line: int


@dataclass(frozen=True, slots=True)
class Call:
    fn: str
    args: tuple[Expr, ...]
    line: int


@dataclass(frozen=True, slots=True)
class Assign:
    target: Expr
    value: Expr
    line: int


Expr = Num | Name | Unary | Binary | Call | Assign


@dataclass(frozen=True, slots=True)
class Decl:
    name: str
    init: Expr | None
    line: int


@dataclass(frozen=True, slots=True)
class ExprStmt:
    expr: Expr
    line: int


@dataclass(frozen=True, slots=True)
class If:
    cond: Expr
    then: Stmt
    orelse: Stmt | None
    line: int


@dataclass(frozen=True, slots=True)
class Block:
    body: tuple[Stmt, ...]
    line: int


Stmt = Decl | ExprStmt | If | Block


@dataclass(frozen=True, slots=True)
class Process:
    tid: int
    params: tuple[str, ...]
    body: Block


# ---- the final condition ----------------------------------------------------------

# A state key: ('loc', name) for memory, ('reg', tid, name) for a register.
Key = tuple[str, ...] | tuple[str, int, str]


@dataclass(frozen=True, slots=True)
class Atom:
    """``key=value``; the value may itself be a key (``0:r1=1:r1``, ``x=y``
    compares with the value *in* y only when written ``x=*y``: herd reads a bare
    name on the right as an address)."""

    key: Key
    value: Value | tuple[str, int, str]


@dataclass(frozen=True, slots=True)
class Not:
    arg: Prop


@dataclass(frozen=True, slots=True)
class And:
    left: Prop
    right: Prop


@dataclass(frozen=True, slots=True)
class Or:
    left: Prop
    right: Prop


@dataclass(frozen=True, slots=True)
class Implies:
    left: Prop
    right: Prop


@dataclass(frozen=True, slots=True)
class Const:
    value: bool


Prop = Atom | Not | And | Or | Implies | Const


@dataclass(slots=True)
class Litmus:
    name: str
    init_mem: dict[str, Value] = field(default_factory=dict)
    init_regs: dict[tuple[int, str], Value] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)
    locations: list[Key] = field(default_factory=list)
    filter: Prop | None = None
    quantifier: str = "exists"  # 'exists', '~exists' or 'forall'
    prop: Prop = Const(True)
    expected: str | None = None  # the 'Result:' line of the header comment, if any


def key_str(key: Key) -> str:
    if key[0] == "reg":
        return f"{key[1]}:{key[2]}"
    return str(key[1])


def prop_str(p: Prop, top: bool = True) -> str:
    """The proposition as herd prints it after ``Condition``."""
    if isinstance(p, Atom):
        v = key_str(p.value) if isinstance(p.value, tuple) else str(p.value)
        s = f"{key_str(p.key)}={v}"
    elif isinstance(p, Const):
        s = "true" if p.value else "false"
    elif isinstance(p, Not):
        s = f"not ({prop_str(p.arg, top=False)})"
    elif isinstance(p, And):
        s = f"{prop_str(p.left, False)} /\\ {prop_str(p.right, False)}"
        if not top:
            s = f"({s})"
    elif isinstance(p, Or):
        s = f"{prop_str(p.left, False)} \\/ {prop_str(p.right, False)}"
        if not top:
            s = f"({s})"
    else:
        s = f"{prop_str(p.left, False)} ==> {prop_str(p.right, False)}"
        if not top:
            s = f"({s})"
    return s


def prop_keys(p: Prop | None) -> list[Key]:
    """The keys a proposition mentions, in order of first mention."""
    out: list[Key] = []

    def walk(q: Prop | None) -> None:
        if q is None or isinstance(q, Const):
            return
        if isinstance(q, Atom):
            for k in (q.key, q.value):
                if isinstance(k, tuple) and k not in out:
                    out.append(k)
        elif isinstance(q, Not):
            walk(q.arg)
        else:
            walk(q.left)
            walk(q.right)

    walk(p)
    return out
