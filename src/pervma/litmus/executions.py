"""Candidate executions of a litmus test and the outcome herd reports.

For every combination of per-process paths (:mod:`pervma.litmus.events`), the
engine adds one initial write per location and chooses, location by location, a
coherence order ``co`` (initial write first, then a permutation of the stores
that keeps each process's own stores in program order) and for each load a
store of the same value it reads from.  Each location's choices are pruned on
their own by the two per-location axioms of linux-kernel.cat -- ``coherence``
(``po-loc | rf | co | fr`` acyclic) and ``atomic`` (no external store between an
RMW's read and its write) -- before the product over locations is checked
against the rest of LKMM (:func:`pervma.litmus.lkmm.check`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from pervma.litmus import relations as r
from pervma.litmus.events import Ev, Path, process_paths, value_domain
from pervma.litmus.lkmm import Static, check
from pervma.litmus.syntax import (
    And,
    Atom,
    Const,
    Implies,
    Key,
    Litmus,
    LitmusError,
    Loc,
    Not,
    Or,
    Prop,
    Value,
    prop_keys,
)

MAX_EXECUTIONS = 2_000_000

State = tuple[tuple[Key, Value], ...]


@dataclass(slots=True)
class Outcome:
    """What herd prints: the final states, the witnesses, the flags."""

    states: list[State] = field(default_factory=list)
    positive: int = 0
    negative: int = 0
    flags: set[str] = field(default_factory=set)
    candidates: int = 0  # candidate executions checked (rf/co choices), for bench

    @property
    def verdict(self) -> str:
        if self.positive == 0:
            return "Never"
        return "Always" if self.negative == 0 else "Sometimes"


def locations_of(lit: Litmus) -> list[str]:
    """Every shared location: declared, initialised, a process parameter, an
    address in the initial state or a memory key of the final clause."""
    locs: list[str] = []

    def add(name: str) -> None:
        if name not in locs:
            locs.append(name)

    for name, v in lit.init_mem.items():
        add(name)
        if isinstance(v, Loc):
            add(v.name)
    for v in lit.init_regs.values():
        if isinstance(v, Loc):
            add(v.name)
    for proc in lit.processes:
        for p in proc.params:
            add(p)
    for key in prop_keys(lit.prop) + prop_keys(lit.filter) + list(lit.locations):
        if key[0] == "loc":
            add(str(key[1]))
    return locs


def holds(p: Prop, state: dict[Key, Value]) -> bool:
    if isinstance(p, Atom):
        if isinstance(p.value, tuple):
            return state[p.key] == state[p.value]
        return state[p.key] == p.value
    if isinstance(p, Const):
        return p.value
    if isinstance(p, Not):
        return not holds(p.arg, state)
    if isinstance(p, And):
        return holds(p.left, state) and holds(p.right, state)
    if isinstance(p, Or):
        return holds(p.left, state) or holds(p.right, state)
    assert isinstance(p, Implies)
    return (not holds(p.left, state)) or holds(p.right, state)


def _interleavings(seqs: list[list[int]]) -> Iterator[list[int]]:
    """Every merge of the sequences that keeps each one's order."""
    total = sum(len(q) for q in seqs)
    heads = [0] * len(seqs)
    out: list[int] = []

    def rec() -> Iterator[list[int]]:
        if len(out) == total:
            yield list(out)
            return
        for i, q in enumerate(seqs):
            if heads[i] < len(q):
                out.append(q[heads[i]])
                heads[i] += 1
                yield from rec()
                heads[i] -= 1
                out.pop()

    yield from rec()


def _rf_choices(events: list[Ev], reads: list[int], cands: list[list[int]],
                rank: dict[int, int]) -> Iterator[dict[int, int]]:
    """One store per load from its candidates, keeping CoRR: a process's loads (in
    program order) read stores in non-decreasing co order."""
    chosen: dict[int, int] = {}
    last: dict[int, int] = {}

    def rec(k: int) -> Iterator[dict[int, int]]:
        if k == len(reads):
            yield dict(chosen)
            return
        rd = reads[k]
        tid = events[rd].tid
        prev = last.get(tid)
        for w in cands[k]:
            if prev is not None and rank[w] < prev:
                continue
            chosen[rd] = w
            last[tid] = rank[w]
            yield from rec(k + 1)
        chosen.pop(rd, None)
        if prev is None:
            last.pop(tid, None)
        else:
            last[tid] = prev

    yield from rec(0)


def _per_location(events: list[Ev], loc: str, writes: list[int], reads: list[int],
                  rmw: dict[int, int]) -> list[tuple[list[int], dict[int, int]]]:
    """The (co order, rf map) choices at one location that pass coherence and
    atomicity there.  Coherence on one location is exactly the four patterns
    CoWW (a process's stores stay in program order in co), CoWR (a load reads
    its process's latest earlier store or a co-later one), CoRW (a load reads a
    store co-before its process's later stores) and CoRR (a process's later load
    reads a store not co-before the earlier load's); atomicity makes an RMW's
    read take the store just before the RMW's write in co."""
    init, own = writes[0], writes[1:]
    by_thread: dict[int, list[int]] = {}
    for w in own:
        by_thread.setdefault(events[w].tid, []).append(w)
    reads = sorted(reads, key=lambda i: (events[i].tid, events[i].idx))
    before: list[list[int]] = []
    after: list[list[int]] = []
    for rd in reads:
        e = events[rd]
        mine = by_thread.get(e.tid, [])
        before.append([w for w in mine if events[w].idx < e.idx])
        after.append([w for w in mine if events[w].idx > e.idx])
    out = []
    for perm in _interleavings(list(by_thread.values())):
        order = [init, *perm]
        rank = {w: i for i, w in enumerate(order)}
        cands: list[list[int]] = []
        for k, rd in enumerate(reads):
            e = events[rd]
            lo = max((rank[w] for w in before[k]), default=0)
            hi = min((rank[w] for w in after[k]), default=len(order))
            if rd in rmw:
                src = rank[rmw[rd]] - 1
                ok = lo <= src < hi and events[order[src]].val == e.val
                cands.append([order[src]] if ok else [])
            else:
                cands.append([order[i] for i in range(lo, hi) if events[order[i]].val == e.val])
            if not cands[-1]:
                break
        else:
            for rf_map in _rf_choices(events, reads, cands, rank):
                out.append((order, rf_map))
    return out


def run_litmus(lit: Litmus) -> Outcome:
    """Enumerate the test's candidate executions and judge each under LKMM."""
    locs = locations_of(lit)
    for key in prop_keys(lit.prop) + prop_keys(lit.filter) + list(lit.locations):
        if key[0] == "reg" and not 0 <= int(key[1]) < len(lit.processes):
            raise LitmusError(f"the final condition names P{key[1]}, which the test "
                              "does not have")
    domain = value_domain(lit, locs)
    paths = [process_paths(lit, proc, domain) for proc in lit.processes]
    shown = sorted(set(prop_keys(lit.prop)) | set(lit.locations), key=_key_order)
    out = Outcome()
    seen: set[State] = set()
    for combo in _path_combinations(lit, paths):
        _run_combo(lit, locs, combo, shown, out, seen)
    out.states.sort(key=lambda s: tuple(_value_order(v) for _, v in s))
    return out


def _path_combinations(lit: Litmus, paths: list[list[Path]]) -> Iterator[list[Path]]:
    """One path per process, depth first, dropping a partial combination as soon as
    one of its loads reads a value that neither the initial state, the stores
    chosen so far nor any path of a process still to choose can write."""
    def stores(path: Path) -> set[tuple[str | None, Value | None]]:
        return {(e.loc, e.val) for e in path.events if e.kind == "W"}

    def loads(path: Path) -> set[tuple[str | None, Value | None]]:
        return {(e.loc, e.val) for e in path.events if e.kind == "R"}

    init = {(loc, v) for loc, v in lit.init_mem.items()}
    n = len(paths)
    path_stores = [[stores(p) for p in ps] for ps in paths]
    path_loads = [[loads(p) for p in ps] for ps in paths]
    maybe_after: list[set[tuple[str | None, Value | None]]] = [set() for _ in range(n + 1)]
    for t in range(n - 1, -1, -1):
        maybe_after[t] = maybe_after[t + 1].union(*path_stores[t])
    chosen: list[Path] = []
    chosen_loads: list[set[tuple[str | None, Value | None]]] = []

    def default(pair: tuple[str | None, Value | None]) -> bool:
        return pair[0] is not None and pair[0] not in lit.init_mem and pair[1] == 0

    def walk(t: int, written: set[tuple[str | None, Value | None]]) -> Iterator[list[Path]]:
        if t == n:
            yield list(chosen)
            return
        for i, path in enumerate(paths[t]):
            now = written | path_stores[t][i]
            avail = now | maybe_after[t + 1] | init
            if any(not (p in avail or default(p))
                   for ls in (*chosen_loads, path_loads[t][i]) for p in ls):
                continue
            chosen.append(path)
            chosen_loads.append(path_loads[t][i])
            yield from walk(t + 1, now)
            chosen.pop()
            chosen_loads.pop()

    yield from walk(0, set())


def _key_order(key: Key) -> tuple[int, int, str]:
    if key[0] == "reg":
        return (0, int(key[1]), str(key[2]))
    return (1, 0, str(key[1]))


def _value_order(v: Value) -> tuple[int, int, str]:
    return (1, 0, v.name) if isinstance(v, Loc) else (0, v, "")


def _run_combo(lit: Litmus, locs: list[str], combo: list[Path], shown: list[Key],
               out: Outcome, seen: set[State]) -> None:
    events: list[Ev] = [Ev(-1, i, "W", loc, lit.init_mem.get(loc, 0), frozenset({"IW"}))
                        for i, loc in enumerate(locs)]
    addr: list[tuple[int, int]] = []
    data: list[tuple[int, int]] = []
    ctrl: list[tuple[int, int]] = []
    rmw: list[tuple[int, int]] = []
    lk_rmw: list[tuple[int, int]] = []
    for path in combo:
        base = len(events)
        events.extend(path.events)
        addr += [(a + base, b + base) for a, b in path.addr]
        data += [(a + base, b + base) for a, b in path.data]
        ctrl += [(a + base, b + base) for a, b in path.ctrl]
        for a, b in path.rmw:
            (lk_rmw if "LKR" in path.events[a].tags else rmw).append((a + base, b + base))
    rmw_of = dict(rmw + lk_rmw)
    per_loc = []
    for li, loc in enumerate(locs):
        writes = [li] + [i for i, e in enumerate(events)
                         if e.kind == "W" and e.loc == loc and e.tid >= 0]
        reads = [i for i, e in enumerate(events) if e.kind == "R" and e.loc == loc]
        choices = _per_location(events, loc, writes, reads, rmw_of)
        if not choices:
            return
        per_loc.append(choices)
    st = Static(events, addr, data, ctrl, rmw, lk_rmw)
    st.fault = next((p.fault for p in combo if p.fault is not None), None)
    regs = {(t, name): v for t, p in enumerate(combo) for name, v in p.regs.items()}
    marked = st.Marked
    order_of = sorted(range(len(locs)), key=lambda i: len(per_loc[i]))
    chosen: list[tuple[list[int], dict[int, int]]] = [([], {})] * len(locs)

    def edges(rows: list[int], order: list[int], rf_map: dict[int, int]) -> None:
        """Add the choice's rfe, coi and fri between marked events (all in hb)."""
        rank = {w: i for i, w in enumerate(order)}
        for i, a in enumerate(order):
            if (marked >> a) & 1:
                for b in order[i + 1:]:
                    if events[a].tid == events[b].tid and (marked >> b) & 1:
                        rows[a] |= 1 << b
        for rd, w in rf_map.items():
            if not (marked >> rd) & 1:
                continue
            if events[w].tid != events[rd].tid and (marked >> w) & 1:
                rows[w] |= 1 << rd
            for b in order[rank[w] + 1:]:
                if events[b].tid == events[rd].tid and (marked >> b) & 1:
                    rows[rd] |= 1 << b

    def walk(j: int, rows: list[int]) -> None:
        if j == len(order_of):
            _judge(lit, locs, events, st, chosen, regs, shown, out, seen)
            return
        li = order_of[j]
        for ch in per_loc[li]:
            new = list(rows)
            edges(new, ch[0], ch[1])
            if not r.acyclic(tuple(new)):
                continue
            chosen[li] = ch
            walk(j + 1, new)

    walk(0, list(st.hb_core))


def _judge(lit: Litmus, locs: list[str], events: list[Ev], st: Static,
           choice: list[tuple[list[int], dict[int, int]]],
           regs: dict[tuple[int, str], Value], shown: list[Key], out: Outcome,
           seen: set[State]) -> None:
    """Check one candidate execution against LKMM and record its final state."""
    out.candidates += 1
    if out.candidates > MAX_EXECUTIONS:
        raise LitmusError(f"more than {MAX_EXECUTIONS} candidate executions; the test "
                          "is too large for pervma litmus")
    n = st.n
    rf_pairs = []
    co_pairs = []
    final: dict[str, Value] = {}
    for loc, (order, rf_map) in zip(locs, choice, strict=True):
        rf_pairs += [(w, rd) for rd, w in rf_map.items()]
        co_pairs += [(a, b) for i, a in enumerate(order) for b in order[i + 1:]]
        last = events[order[-1]].val
        final[loc] = last if last is not None else 0
    verdict = check(st, r.from_pairs(n, rf_pairs), r.from_pairs(n, co_pairs))
    if not verdict.allowed:
        return
    if st.fault is not None:
        raise LitmusError(st.fault)
    state = _state(lit, final, regs)
    if lit.filter is not None and not holds(lit.filter, state):
        return
    out.flags.update(verdict.flags)
    if holds(lit.prop, state):
        out.positive += 1
    else:
        out.negative += 1
    key = tuple((k, state[k]) for k in shown)
    if key not in seen:
        seen.add(key)
        out.states.append(key)


def _state(lit: Litmus, final: dict[str, Value],
           regs: dict[tuple[int, str], Value]) -> dict[Key, Value]:
    state: dict[Key, Value] = {}
    for key in prop_keys(lit.prop) + prop_keys(lit.filter) + list(lit.locations):
        if key[0] == "reg":
            tid, name = int(key[1]), str(key[2])
            state[key] = regs.get((tid, name), lit.init_regs.get((tid, name), 0))
        else:
            state[key] = final[str(key[1])]
    return state
