"""Mutation of programs (issue #15 item 3, a start), as coverage-guided fuzzers do.

:func:`mutate` applies one operator, drawn from the seeded generator it is
given, to a copy of a program: ``add`` a call drawn from the registry (its
arguments around the setup's VMA boundaries, as the generator draws them),
``drop`` a call, ``swap`` two neighbouring calls of a thread, ``shift`` an
address or length argument by a page either way, ``move`` a call to another
thread, ``thread``: a new thread of one or two calls, in either process (the
setup gains an unrelated second process when it has one only), drawn as the
generator draws the later threads of a program: partners of the calls the
other threads make, around their ranges.  ``add`` draws its call the same way
(:func:`~pervma.check.fuzz.generate.draw_call`).  The result is a valid
program (the schema's limits hold, the userfaultfd's closer thread is left
alone, ``exit`` stays a thread's last call) and the same for the same seed.
"""

from __future__ import annotations

import random
from typing import Any

from pervma.check.fuzz.generate import PAGE, Gen, _layout, _range, draw_call
from pervma.check.fuzz.program import (
    MAX_CALLS,
    MAX_PROCESSES,
    MAX_THREADS,
    Call,
    ProcessSpec,
    Program,
    ThreadSpec,
    from_json,
)
from pervma.check.fuzz.registry import all_calls
from pervma.config import Config

OPERATORS = ("add", "drop", "swap", "shift", "move", "thread")
_SHIFTABLE = ("addr", "len", "old_addr", "old_len", "new_len", "new_addr", "dst")
MAX_TOTAL = 9


def _free(prog: Program) -> list[int]:
    """The threads a mutation may touch (not the userfaultfd's closer)."""
    return [i for i, t in enumerate(prog.threads)
            if not any(c.call == "uffd_close" for c in t.calls)]


def _apply(op: str, prog: Program, r: random.Random, cfg: Config) -> bool:
    free = _free(prog)
    if not free:
        return False
    total = sum(len(t.calls) for t in prog.threads)
    if op == "add":
        i = r.choice(free)
        t = prog.threads[i]
        if len(t.calls) >= MAX_CALLS or total >= MAX_TOTAL:
            return False
        at = r.randint(0, len(t.calls))
        if t.calls and t.calls[-1].call == "exit" and at == len(t.calls):
            at -= 1  # exit stays last
        e, args = _draw(prog, i, r, cfg, last=False)
        t.calls.insert(at, Call(e.name, args))
        return True
    if op == "thread":
        if len(prog.threads) >= MAX_THREADS or total >= MAX_TOTAL:
            return False
        names = [p.name for p in prog.processes]
        if len(names) < MAX_PROCESSES and r.random() < 0.5:
            prog.processes.append(ProcessSpec(_new_name(names), []))
            names = [p.name for p in prog.processes]
        prog.threads.insert(len(free), ThreadSpec(r.choice(names), []))
        i = len(free)
        for k in range(min(r.choice((1, 1, 2)), MAX_TOTAL - total)):
            last = k == 1 or r.random() < 0.5
            e, args = _draw(prog, i, r, cfg, last=last)
            prog.threads[i].calls.append(Call(e.name, args))
        return True
    if op == "drop":
        cands = [i for i in free if len(prog.threads[i].calls) > 1]
        if not cands:
            return False
        t = prog.threads[r.choice(cands)]
        del t.calls[r.randrange(len(t.calls))]
        return True
    if op == "swap":
        cands = [i for i in free if len(prog.threads[i].calls) > 1]
        if not cands:
            return False
        t = prog.threads[r.choice(cands)]
        k = r.randrange(len(t.calls) - 1)
        t.calls[k], t.calls[k + 1] = t.calls[k + 1], t.calls[k]
        return True
    if op == "shift":
        spots = [(i, k, a) for i in free for k, c in enumerate(prog.threads[i].calls)
                 for a in c.args if a in _SHIFTABLE]
        if not spots:
            return False
        i, k, a = r.choice(spots)
        args = prog.threads[i].calls[k].args
        args[a] = max(0, args[a] + r.choice((-PAGE, PAGE)))
        return True
    if op == "move":
        src = [i for i in free if len(prog.threads[i].calls) > 1]
        if not src or len(free) < 2:
            return False
        i = r.choice(src)
        dst = [j for j in free if j != i and len(prog.threads[j].calls) < MAX_CALLS
               and prog.threads[j].process == prog.threads[i].process]
        if not dst:
            return False
        c = prog.threads[i].calls.pop(r.randrange(len(prog.threads[i].calls)))
        t = prog.threads[r.choice(dst)]
        t.calls.insert(r.randint(0, len(t.calls)), c)
        return True
    raise ValueError(f"unknown mutation {op!r}")


def _draw(prog: Program, i: int, r: random.Random, cfg: Config, last: bool) -> tuple[Any, dict[str, int]]:
    """A call for thread ``i`` of ``prog``, drawn as the generator draws one."""
    t = prog.threads[i]
    _, layouts = _layout(prog, cfg)
    first = prog.processes[0].name
    layout = layouts[t.process]
    if t.process != first:
        layout = sorted(set(layout) | set(layouts[first]))
    urange = None
    if prog.uffd is not None and t.process == prog.uffd[0]:
        v = prog.process(prog.uffd[0]).vmas[prog.uffd[1]]
        urange = (v.addr, v.addr + v.pages * PAGE)
    kinds = {v.kind for v in prog.process(t.process).vmas}
    usable = [e for e in all_calls() if e.name != "uffd_close" and (
        e.needs is None or (e.needs == "uffd" and urange is not None) or e.needs in kinds)]
    others = []
    for j, u in enumerate(prog.threads):
        if j != i:
            for c in u.calls:
                others.append((c.call, _range(c.call, c.args, layouts[u.process]),
                               u.process != t.process))
    prev = None
    if t.calls:
        c = t.calls[-1]
        rng = _range(c.call, c.args, layout)
        prev = (c.call, rng) if rng is not None else None
    return draw_call(r, Gen(layout, urange), usable, others, prev, last)


def _new_name(names: list[str]) -> str:
    return next(n for n in ("q", "r", "s", "t") if n not in names)


def mutate(prog: Program, r: random.Random, cfg: Config | None = None) -> tuple[Program, str]:
    """A mutated copy of ``prog`` and the operator applied (``"none"`` when no
    operator applies, e.g. a program of one call per thread and nothing to shift)."""
    cfg = cfg or Config.preset("universal")
    ops = list(OPERATORS)
    r.shuffle(ops)
    for op in ops:
        new = from_json(prog.to_json())  # a deep, validated copy
        if _apply(op, new, r, cfg):
            return from_json(new.to_json()), op
    return from_json(prog.to_json()), "none"
