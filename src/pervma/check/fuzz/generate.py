"""The program generator: a seed and an index give one program, always the same.

A program is drawn in two parts.  The setup: one process (sometimes two: a
fork of the first, or an unrelated one), 1-6 VMAs laid out from
``FUZZ_BASE`` upward, next to each other or with a gap, drawn from the grammar
(anon, shared anon, private and shared file, MAP_GROWSDOWN, a PROT_NONE guard,
a binder buffer, a TCP receive area), each populated or not; sometimes a
userfaultfd registered on an unpopulated anon VMA.  Then 2-4 threads of 1-4
calls drawn from the registry by weight.

Arguments are drawn the way syzkaller draws them: from the layout the setup
really produces (the generator builds it once and reads the VMA boundaries):
a boundary, a page off a boundary, a page inside a VMA, ranges that cover a
VMA, part of it or two of them, off by a page; now and then an unaligned,
empty or far-away one, so most calls are valid and some are not.

Calls are related the way syzkaller relates them (its choice table and
resource reuse): a call of a thread is often a *partner* of a call another
thread already makes (:data:`PARTNERS`: a user access against a call that
changes the VMA it hits, munmap against mmap of the same range, fork against
stores), drawn around the same range; or it goes on with the range of the
thread's previous call.  Many programs have a focus, one VMA most of their
other calls are drawn around.  A second process's calls draw their addresses from
the first process's layout as well as its own (another mm mapping where the
first one unmaps).  ``exit`` only ends a thread.  Half of the programs are
built around a motif (:data:`MOTIFS`), one VMA's life drawn from the same
relations: recycle (a fault, the VMA's munmap, another process mapping the
range), fork (against stores to neighbouring pages), grow (a stack growth
against a fault that looks its address up under mmap_lock).  None of this
looks at a bug switch: the distribution is the same for every ``--bug``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pervma.check.fuzz.program import (
    MAX_CALLS,
    MAX_PAGES,
    MAX_THREADS,
    Call,
    ProcessSpec,
    Program,
    ThreadSpec,
    VmaSpec,
)
from pervma.check.fuzz.registry import CallDef, all_calls
from pervma.config import Config
from pervma.kernel.mm_types import PAGE_SIZE
from pervma.kernel.system import STACK_TOP

PAGE = PAGE_SIZE
FUZZ_BASE = 0x10000000
#: At most this many calls in all threads (keeps the serial-order oracle's search small).
MAX_TOTAL_CALLS = 8

_KINDS = (("anon", 8), ("file", 2), ("file-shared", 1), ("shared-anon", 1), ("growsdown", 1),
          ("guard", 1), ("binder", 1), ("tcp", 1))
_PROTS = ("rw",) * 6 + ("r", "r", "none", "rwx")


#: Chance that a call (not a thread's first) partners a call of another thread
#: drawn before it, and that it goes on with its thread's previous range.
P_PARTNER = 0.6
P_CONTINUE = 0.25
#: Chance that the setup has a second process: a fork of the first, or an
#: unrelated one (half of those with no VMAs of their own).
P_FORKED = 0.15
P_OTHER = 0.25

ACCESS = ("load", "store")
#: The calls whose races with a call are worth drawing together (both ways):
#: what changes a VMA against what uses it.
_CHANGES = ("munmap", "mprotect", "mremap", "madvise", "mmap", "mlock", "munlock", "mbind",
            "fork", "brk")
PARTNERS: dict[str, tuple[str, ...]] = {
    **{c: ACCESS for c in _CHANGES},
    "munmap": ACCESS + ("mmap", "mremap"),
    "mmap": ACCESS + ("munmap", "mmap"),
    "mremap": ACCESS + ("munmap",),
    "fork": ("store",),
    # munmap three times: a VMA gone (and its object freed) under a fault
    "load": _CHANGES + ("munmap", "munmap", "store"),
    "store": _CHANGES + ("munmap", "munmap", "load", "store"),
}
_FREES = ("munmap", "mremap", "mmap")
#: What a thread of another mm does with a range the first one uses: its own
#: mappings there (mmap, munmap, mprotect: the objects the first mm freed are
#: recycled by the second one), an access to them, and its exit.
CROSS_PARTNERS = ("mmap", "mmap", "mmap", "munmap", "mprotect", "load", "store", "exit")
#: Chance that a program has a focus (one of the first process's VMAs), and
#: that a call not related to another is drawn around it.
P_HAS_FOCUS = 0.75
P_FOCUS = 0.75
#: Chance that a thread's first call (after thread 0) partners an earlier call.
P_FIRST_PARTNER = 0.8
#: What a thread does next with the range of its previous call (syzkaller's
#: call-to-call priorities): map again where it unmapped, use or change what
#: it mapped, store to the next page, exit after changing its mappings.
SEQUELS: dict[str, tuple[str, ...]] = {
    "munmap": ("mmap", "mmap", "load", "store"),
    "mmap": ("store", "load", "mprotect", "munmap", "exit"),
    "mprotect": ("load", "store", "mprotect", "exit"),
    "mremap": ("load", "store", "munmap"),
    "store": ("store", "store", "store", "load", "munmap", "mprotect", "fork"),
    "load": ("load", "store", "munmap"),
    "fork": ("store", "munmap", "exit"),
}
#: Chance that a call going on with the previous range is one of its sequels.
P_SEQUEL = 0.7
#: After these, a thread goes on with the same range first (a VMA's life:
#: unmapped, then mapped again; mapped, then used), with this chance.
_LIFECYCLE = ("munmap", "mmap")
P_LIFECYCLE = 0.4
#: Chance that a thread of the second process ends with its exit (when there
#: is room for one more call), as a child's program does.
P_EXIT = 0.5


@dataclass(slots=True)
class Gen:
    """What argument drawing knows: the VMA boundaries of the thread's process
    after the setup (and of the first process, for a second one), the
    userfaultfd range, and the range of a related call (``hint``)."""

    vmas: list[tuple[int, int]]
    uffd: tuple[int, int] | None = None
    hint: tuple[int, int] | None = None
    focus: tuple[int, int] | None = None  # the program's focus VMA, if it has one

    def _vma(self, r: random.Random) -> tuple[int, int]:
        """The hinted range mostly, else a VMA, mostly one the setup made (not
        the stack or a helper mapping)."""
        if self.hint is not None and r.random() < 0.85:
            return self.hint
        ours = [v for v in self.vmas if FUZZ_BASE <= v[0] < FUZZ_BASE + 0x1000000]
        return r.choice(ours if ours and r.random() < 0.85 else self.vmas)

    def _points(self) -> list[int]:
        pts = sorted({a for v in self.vmas for a in v}) or [FUZZ_BASE]
        return pts

    def addr(self, r: random.Random, access: bool = False) -> int:
        """An address near the layout: a boundary, a page off one, a page
        inside a VMA or the page just below it (a stack grows there, another
        VMA's fault falls back to mmap_lock and fails); accesses at a small
        offset; rarely far away."""
        x = r.random()
        if x < 0.04:
            return FUZZ_BASE + 64 * PAGE + r.randrange(4) * PAGE  # nothing mapped there
        if x < 0.06 and not access:
            return r.choice(self._points()) + r.randrange(1, PAGE)  # unaligned
        if self.vmas and x < 0.75:
            lo, hi = self._vma(r)
            a = lo - PAGE if r.random() < 0.1 else lo + r.randrange(max(1, (hi - lo) // PAGE)) * PAGE
        else:
            a = r.choice(self._points()) + r.choice((-PAGE, 0, 0, PAGE))
        return a + (r.choice((0, 0, 1, 0x7FF, PAGE - 1)) if access else 0)

    def length(self, r: random.Random) -> int:
        x = r.random()
        if x < 0.03:
            return 0
        if x < 0.05:
            return PAGE + r.randrange(1, PAGE)  # rounded up by the kernel
        return PAGE * r.choice((1, 1, 1, 2, 2, 3, 4))

    def range(self, r: random.Random) -> tuple[int, int]:
        """``(addr, len)``: a whole VMA, part of one, two neighbours, or one
        off by a page at either end."""
        if not self.vmas or (self.hint is None and r.random() < 0.25):
            return self.addr(r), self.length(r)
        lo, hi = self._vma(r)
        nxt = next((v for v in self.vmas if hi <= v[0] <= hi + MAX_PAGES * PAGE), None)
        # a related call's range: mostly all of it (the objects it frees)
        shape = r.choice((0, 0, 0, 1, 2, 3, 4)) if self.hint is not None else r.randrange(5)
        if shape == 0:  # the whole VMA
            return lo, hi - lo
        if shape == 1 and nxt is not None:  # into the next one
            return lo, nxt[0] - lo + PAGE
        if shape == 2:  # off by a page
            return lo + r.choice((-PAGE, PAGE)), hi - lo
        a = lo + r.randrange(max(1, (hi - lo) // PAGE)) * PAGE
        return a, min(self.length(r) or PAGE, max(PAGE, hi - a))

    def prot(self, r: random.Random) -> int:
        return r.choice((3, 3, 3, 1, 1, 0, 7, 2)) if r.random() > 0.02 else 0x10  # 0x10: EINVAL

    def uffd_range(self) -> tuple[int, int]:
        assert self.uffd is not None
        return self.uffd


def _setup(r: random.Random, motif: str | None = None
           ) -> tuple[list[ProcessSpec], tuple[str, int] | None]:
    """The processes and their VMAs; a motif's program has its VMA first
    (recycle: an anon VMA not yet faulted in; fork: a populated writable
    one of two pages or more) and, for recycle, another process."""
    nvmas = r.choice((1, 1, 2, 2, 2, 3, 3, 4, 5, 6))
    vmas: list[VmaSpec] = []
    addr = FUZZ_BASE
    used: set[str] = set()
    kinds = [k for k, _ in _KINDS]
    weights = [w for _, w in _KINDS]
    if motif == "recycle":
        pages = r.choice((1, 1, 2, 3))
        vmas.append(VmaSpec("anon", addr, pages, r.choice(("rw", "rw", "rw", "r")), False))
        addr += pages * PAGE
        nvmas -= 1
    elif motif == "fork":
        pages = r.choice((2, 2, 3, 4))
        vmas.append(VmaSpec("anon", addr, pages, "rw", True))
        addr += pages * PAGE
        nvmas -= 1
    for _ in range(nvmas):
        kind = r.choices(kinds, weights)[0]
        if kind in ("binder", "tcp") and kind in used:
            kind = "anon"
        used.add(kind)
        pages = r.choice((1, 1, 2, 2, 3, 4))
        prot = r.choice(_PROTS)
        if kind in ("binder", "tcp"):
            vmas.append(VmaSpec(kind, 0, pages, "r", False))
            continue
        if kind == "guard":
            prot = "none"
        addr += r.choice((0, 0, 0, PAGE, 2 * PAGE)) if vmas else 0
        vmas.append(VmaSpec(kind, addr, pages, prot, r.random() < 0.6 and prot != "none"))
        addr += pages * PAGE
    procs = [ProcessSpec("p", vmas)]
    x = r.random()
    if motif == "recycle":  # another process, with nothing mapped yet (a fork's
        x = P_FORKED        # exit would tear down the copies of all the VMAs too)
    if x < P_FORKED:
        procs.append(ProcessSpec("q", [], fork_of="p"))
    elif x < P_FORKED + P_OTHER:
        procs.append(ProcessSpec("q", [] if r.random() < 0.5 or motif else
                                 [VmaSpec("anon", FUZZ_BASE, r.choice((1, 2)), "rw",
                                          r.random() < 0.5)]))
    uffd = None
    cands = [j for j, v in enumerate(vmas) if v.kind == "anon" and not v.populate
             and v.prot in ("rw", "rwx")]
    if cands and r.random() < 0.3:
        uffd = ("p", r.choice(cands))
    return procs, uffd


def _layout(prog: Program, cfg: Config) -> tuple[Program, dict[str, list[tuple[int, int]]]]:
    """Build the setup once: fix binder/tcp addresses, read every process's VMAs."""
    from pervma.check.fuzz.world import FuzzWorld

    w = FuzzWorld(Program(prog.processes, [], prog.uffd), cfg, track=False)
    for ps in prog.processes:
        for v in ps.vmas:
            if v.kind == "binder":
                v.addr = w.cx.binder[ps.name].buffer
            elif v.kind == "tcp":
                v.addr = w.cx.tcp[ps.name]
    out: dict[str, list[tuple[int, int]]] = {}
    for name, p in w.cx.procs.items():
        out[name] = [(v.vm_start, v.vm_end) for v in p.mm.mm_mt.snapshot()]
    return prog, out


def generate(seed: int, index: int, cfg: Config | None = None) -> Program:
    """Program ``index`` of the campaign seeded ``seed`` (the same on every
    machine and under every preset and bug switch: ``cfg`` only builds the
    layout, which the switches do not change)."""
    r = random.Random(f"pervma-fuzz:{seed}:{index}")
    motif = r.choices(list(MOTIFS), [w for _, w in MOTIFS.values()])[0] if r.random() < P_MOTIF else None
    procs, uffd = _setup(r, motif)
    prog, layouts = _layout(Program(procs, [], uffd), cfg or Config.preset("universal"))
    entries = all_calls()
    have = {"binder": any(v.kind == "binder" for p in procs for v in p.vmas),
            "tcp": any(v.kind == "tcp" for p in procs for v in p.vmas), "uffd": uffd is not None}
    urange = None
    if uffd is not None:
        v = prog.process(uffd[0]).vmas[uffd[1]]
        urange = (v.addr, v.addr + v.pages * PAGE)
    ours = [v for v in layouts[procs[0].name] if FUZZ_BASE <= v[0] < FUZZ_BASE + 0x1000000]
    focus = r.choice(ours) if ours and r.random() < P_HAS_FOCUS else None
    if motif is None:
        # Two processes: a thread in the second and (mostly) two in the first.
        nthreads = r.choice((2, 2, 2, 3, 3, 3, 4) if len(procs) < 2 else (2, 3, 3, 3, 4))
        total = min(MAX_TOTAL_CALLS, nthreads + r.randint(0, nthreads + 1))
        per = [1] * nthreads
        for _ in range(total - nthreads):
            i = r.randrange(nthreads)
            if per[i] < MAX_CALLS:
                per[i] += 1
        # Both processes get a thread: the second process's come last, so that
        # they are drawn as partners of what the first one's threads do.
        owner = [procs[0].name] * nthreads
        if len(procs) > 1:
            owner[-1] = procs[1].name
            if nthreads == 4 and r.random() < 0.5:
                owner[-2] = procs[1].name
        prefix: list[list[Call]] = [[] for _ in owner]
    else:
        focus = ours[0] if ours else None  # the motif's VMA (recycle, fork) comes first
        owner, prefix = MOTIFS[motif][0](r, prog, layouts, focus or (0, 0))
        per = [len(c) for c in prefix]
        for _ in range(r.choice(MOTIF_EXTRA)):  # calls drawn around the motif's
            if len(owner) < MAX_THREADS and r.random() < 0.3:
                owner.append(procs[0].name)
                prefix.append([])
                per.append(1)
                continue
            i = r.randrange(len(owner))
            if per[i] < MAX_CALLS and not (prefix[i] and prefix[i][-1].call == "exit"):
                per[i] += 1
    threads: list[ThreadSpec] = []
    # thread, call, range, process: what later calls may partner
    drawn: list[tuple[int, str, tuple[int, int] | None, str]] = [
        (i, c.call, _range(c.call, c.args, layouts[owner[i]]), owner[i])
        for i, cs in enumerate(prefix) for c in cs]
    for i, pname in enumerate(owner):
        layout = layouts[pname]
        if pname != procs[0].name:  # another mm maps where the first one unmaps
            layout = sorted(set(layout) | set(layouts[procs[0].name]))
        g = Gen(layout, urange if pname == "p" else None, focus=focus)
        usable = [e for e in entries if e.needs is None
                  or (have[e.needs] and (e.needs != "uffd" or pname == "p") and e.name != "uffd_close")
                  and (e.needs not in ("binder", "tcp") or _owns(procs, pname, e.needs))]
        calls: list[Call] = list(prefix[i])
        prev: tuple[str, tuple[int, int]] | None = None
        for c in calls:
            rng = _range(c.call, c.args, layout) or (prev[1] if prev is not None else None)
            prev = (c.call, rng) if rng is not None else None
        for k in range(len(calls), per[i]):
            e, args = draw_call(r, g, usable, [(d[1], d[2], d[3] != pname) for d in drawn
                                               if d[0] != i], prev, k == per[i] - 1)
            calls.append(Call(e.name, args))
            rng = _range(e.name, args, layout) or (prev[1] if prev is not None else None)
            prev = (e.name, rng) if rng is not None else None
            drawn.append((i, e.name, rng, pname))
        if (pname != procs[0].name and not prefix[i] and calls[-1].call != "exit"
                and len(calls) < MAX_CALLS and r.random() < P_EXIT):
            calls.append(Call("exit", {}))
        threads.append(ThreadSpec(pname, calls))
    if uffd is not None:  # a thread of its own closes it: a fault waiting in the range is woken
        closer = ThreadSpec("p", [Call("uffd_close", {})])
        if len(threads) < MAX_THREADS:
            threads.append(closer)
        else:
            threads[-1] = closer
    return prog if not threads else Program(prog.processes, threads, prog.uffd)


# -- motifs -----------------------------------------------------------------------
# A share of programs is built around one VMA's life as syzkaller's programs
# often are (a resource made, used by one thread, changed by another): the
# motif's calls first, drawn from the relations above, then a few calls drawn
# around them as usual.  The share and the choice are the same for every
# --bug.

Threads = tuple[list[str], list[list[Call]]]


def _access(r: random.Random, addr: int) -> Call:
    """A load or a store at ``addr`` (at a small offset in its page)."""
    a = addr + r.choice((0, 0, 1, 0x7FF))
    if r.random() < 0.5:
        return Call("load", {"addr": a})
    return Call("store", {"addr": a, "value": r.randrange(1, 256)})


def _motif_recycle(r: random.Random, prog: Program, layouts: dict[str, list[tuple[int, int]]],
                   v: tuple[int, int]) -> Threads:
    """A fault in the VMA, its munmap by a sibling thread, and another mm
    mapping the same range (SLAB_TYPESAFE_BY_RCU hands it the freed VMA
    object) and going on with it: using or changing it, then often exiting."""
    lo, hi = v
    spec = prog.processes[0].vmas[0]  # not faulted in (it may have merged with a neighbour)
    page = spec.addr + r.randrange(spec.pages) * PAGE
    unmap = (lo, hi - lo)  # all of it: part of it would free the split-off piece instead
    other = prog.processes[1].name
    mapper = [Call("mmap", {"addr": unmap[0], "len": unmap[1], "prot": r.choice((3, 3, 3, 1)),
                            "kind": r.choice((0, 0, 0, 1)), "fixed": 1})]
    then = r.choice(("", "", "mprotect", "munmap"))
    if then:
        args = {"addr": unmap[0], "len": unmap[1]}
        mapper.append(Call(then, {**args, "prot": r.choice((1, 0, 3))} if then == "mprotect"
                           else args))
    if r.random() < P_EXIT:
        mapper.append(Call("exit", {}))
    return (["p", "p", other],
            [[_access(r, page)], [Call("munmap", {"addr": unmap[0], "len": unmap[1]})], mapper])


def _motif_fork(r: random.Random, prog: Program, layouts: dict[str, list[tuple[int, int]]],
                v: tuple[int, int]) -> Threads:
    """fork while a sibling thread stores to two neighbouring pages of a
    populated VMA (the copy write-protects them one by one)."""
    lo, hi = v
    page = lo + r.randrange((hi - lo) // PAGE - 1) * PAGE
    stores = [Call("store", {"addr": a + r.choice((0, 0, 1)), "value": r.randrange(1, 256)})
              for a in (page, page + PAGE)]
    return ["p", "p"], [[Call("fork", {})], stores]


def _motif_grow(r: random.Random, prog: Program, layouts: dict[str, list[tuple[int, int]]],
                v: tuple[int, int]) -> Threads:
    """A fault just below a VM_GROWSDOWN VMA (the stack, or a growsdown
    mapping) grows it, while another fault that the per-VMA lock cannot
    serve looks the address up under mmap_lock: below the same VMA, below
    another VMA, or where nothing is mapped."""
    layout = layouts["p"]
    stack = next(s for s in layout if s[1] == STACK_TOP)
    grows = [stack[0]] + [x.addr for x in prog.processes[0].vmas if x.kind == "growsdown"]
    base = r.choice(grows)
    below = [s[0] - PAGE for s in layout
             if s[0] != base and not any(t[0] <= s[0] - PAGE < t[1] for t in layout)]
    walker = r.choice([base - 2 * PAGE, base - PAGE, FUZZ_BASE + 64 * PAGE]
                      + below[:1] * 2 if below else [base - 2 * PAGE, FUZZ_BASE + 64 * PAGE])
    return ["p", "p"], [[_access(r, base - PAGE)], [_access(r, walker)]]


#: The motifs and their weights; P_MOTIF of the programs have one.
MOTIFS = {"recycle": (_motif_recycle, 4), "fork": (_motif_fork, 3), "grow": (_motif_grow, 3)}
P_MOTIF = 0.5
#: How many calls are drawn around a motif's.
MOTIF_EXTRA = (0, 0, 0, 1)


def draw_call(r: random.Random, g: Gen, usable: list[CallDef],
              others: list[tuple[str, tuple[int, int] | None, bool]],
              prev: tuple[str, tuple[int, int]] | None,
              last: bool) -> tuple[CallDef, dict[str, int]]:
    """One call and its arguments for a thread: a partner of a call ``others``
    (of other threads: name, range, whether of another process) makes, or
    going on with the range of the thread's previous call ``prev`` (name,
    range; often one of its :data:`SEQUELS`), or drawn freely;
    ``exit`` only as the thread's ``last`` call."""
    cands = [e for e in usable if last or e.name != "exit"]
    x = r.random()
    g.hint = g.focus if r.random() < P_FOCUS else None
    if prev is not None and prev[0] in _LIFECYCLE and x < P_LIFECYCLE:
        x = P_PARTNER  # a VMA just unmapped or mapped: go on with it (below)
    if others and x < (P_FIRST_PARTNER if prev is None else P_PARTNER):
        # a call that frees or replaces VMAs is the likelier partner
        name, rng, cross = r.choices(others, [3 if o[0] in _FREES else 1 for o in others])[0]
        g.hint = rng or g.hint  # a call without a range (fork): the focus, if any
        want = CROSS_PARTNERS if cross else PARTNERS.get(name, ACCESS)
        # each partner as often as it is listed, weighted as registered (the
        # calls of another mm: as often as listed)
        pool = [e for w in want for e in cands if e.name == w]
        if pool:
            e = r.choice(pool) if cross else r.choices(pool, [e.weight for e in pool])[0]
            return e, e.gen(g, r)
    elif prev is not None and x < P_PARTNER + P_CONTINUE:
        g.hint = prev[1]
        if prev[0] in SEQUELS and r.random() < P_SEQUEL:
            seq = [e for w in SEQUELS[prev[0]] for e in cands if e.name == w]
            if seq:
                e = r.choice(seq)
                return e, e.gen(g, r)
    e = r.choices(cands, [e.weight for e in cands])[0]
    return e, e.gen(g, r)


def _range(call: str, args: dict[str, int], layout: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The range a call works on, for the calls related to it: a user access's
    VMA (or page), a range call's page-aligned range; None without an address."""
    if "old_addr" in args:
        lo, n = args["old_addr"], args["old_len"]
    elif "addr" in args and "len" in args:
        lo, n = args["addr"], args["len"]
    elif "dst" in args:
        lo, n = args["dst"], args.get("len", PAGE)
    elif "addr" in args:
        a = args["addr"]
        return next((v for v in layout if v[0] <= a < v[1]), (a & ~(PAGE - 1), (a & ~(PAGE - 1)) + PAGE))
    else:
        return None
    lo &= ~(PAGE - 1)
    return (lo, lo + max(PAGE, (n + PAGE - 1) & ~(PAGE - 1)))


def _owns(procs: list[ProcessSpec], pname: str, kind: str) -> bool:
    return any(v.kind == kind for p in procs if p.name == pname for v in p.vmas)


def generate_many(seed: int, n: int, cfg: Config | None = None) -> list[Program]:
    return [generate(seed, i, cfg) for i in range(n)]
