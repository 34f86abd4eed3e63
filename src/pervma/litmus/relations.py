"""Relations over the events of one candidate execution, as bit matrices.

herd's cat language manipulates sets of events and binary relations on them.
With at most a few dozen events per litmus test, a set is a Python ``int``
(bit ``i`` = event ``i``) and a relation is a tuple of ``n`` such rows (row
``i`` = the successors of event ``i``).  This module gives the cat operators
the LKMM files use (``|``, ``&``, ``\\``, ``;``, ``^-1``, ``*``, ``+``, ``?``,
``[S]``, ``domain``, ``range``, ``acyclic``, ``irreflexive``, ``empty``) and
nothing else; ``pervma.litmus.lkmm`` spells the model with them.
"""

from __future__ import annotations

from collections.abc import Iterable

Rel = tuple[int, ...]


def bits(s: int) -> Iterable[int]:
    """The members of a set, in increasing order."""
    while s:
        low = s & -s
        yield low.bit_length() - 1
        s ^= low


def empty_rel(n: int) -> Rel:
    return (0,) * n


def ident(n: int, s: int) -> Rel:
    """``[S]``: the identity restricted to the set ``s``."""
    return tuple((1 << i) if (s >> i) & 1 else 0 for i in range(n))


def from_pairs(n: int, pairs: Iterable[tuple[int, int]]) -> Rel:
    rows = [0] * n
    for a, b in pairs:
        rows[a] |= 1 << b
    return tuple(rows)


def cross(n: int, a: int, b: int) -> Rel:
    """``A * B``: every event of ``a`` to every event of ``b``."""
    return tuple(b if (a >> i) & 1 else 0 for i in range(n))


def union(*rels: Rel) -> Rel:
    out = list(rels[0])
    for r in rels[1:]:
        for i, row in enumerate(r):
            if row:
                out[i] |= row
    return tuple(out)


def inter(a: Rel, b: Rel) -> Rel:
    return tuple(x & y for x, y in zip(a, b, strict=True))


def diff(a: Rel, b: Rel) -> Rel:
    return tuple(x & ~y for x, y in zip(a, b, strict=True))


def seq(a: Rel, b: Rel) -> Rel:
    """``a ; b``: relational composition."""
    out = []
    for row in a:
        acc = 0
        while row:
            low = row & -row
            acc |= b[low.bit_length() - 1]
            row ^= low
        out.append(acc)
    return tuple(out)


def seqs(*rels: Rel) -> Rel:
    out = rels[0]
    for r in rels[1:]:
        out = seq(out, r)
    return out


def inverse(a: Rel) -> Rel:
    n = len(a)
    out = [0] * n
    for i, row in enumerate(a):
        for j in bits(row):
            out[j] |= 1 << i
    return tuple(out)


def restrict(a: Rel, dom: int, rng: int) -> Rel:
    """``[dom] ; a ; [rng]``."""
    return tuple((row & rng) if (dom >> i) & 1 else 0 for i, row in enumerate(a))


def plus(a: Rel) -> Rel:
    """``a+``: the transitive closure (Warshall on bit rows)."""
    rows = list(a)
    n = len(rows)
    for k in range(n):
        bk = 1 << k
        rk = rows[k]
        if not rk:
            continue
        for i in range(n):
            if rows[i] & bk:
                rows[i] |= rk
    return tuple(rows)


def star(a: Rel) -> Rel:
    """``a*``: reflexive-transitive closure."""
    return tuple(row | (1 << i) for i, row in enumerate(plus(a)))


def opt(a: Rel) -> Rel:
    """``a?``: ``a`` or the identity."""
    return tuple(row | (1 << i) for i, row in enumerate(a))


def domain(a: Rel) -> int:
    s = 0
    for i, row in enumerate(a):
        if row:
            s |= 1 << i
    return s


def range_(a: Rel) -> int:
    s = 0
    for row in a:
        s |= row
    return s


def is_empty(a: Rel) -> bool:
    return not any(a)


def irreflexive(a: Rel) -> bool:
    return not any((row >> i) & 1 for i, row in enumerate(a))


def acyclic(a: Rel) -> bool:
    """No cycle: repeatedly remove events without predecessors (Kahn)."""
    n = len(a)
    alive = (1 << n) - 1
    preds = [0] * n
    for i, row in enumerate(a):
        for j in bits(row):
            preds[j] |= 1 << i
    changed = True
    while alive and changed:
        changed = False
        for j in bits(alive):
            if not (preds[j] & alive):
                alive &= ~(1 << j)
                changed = True
    return alive == 0
