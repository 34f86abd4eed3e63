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
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pervma.check.fuzz.program import (
    MAX_CALLS,
    MAX_THREADS,
    Call,
    ProcessSpec,
    Program,
    ThreadSpec,
    VmaSpec,
)
from pervma.check.fuzz.registry import all_calls
from pervma.config import Config
from pervma.kernel.mm_types import PAGE_SIZE

PAGE = PAGE_SIZE
FUZZ_BASE = 0x10000000
#: At most this many calls in all threads (keeps the serial-order oracle's search small).
MAX_TOTAL_CALLS = 8

_KINDS = (("anon", 8), ("file", 2), ("file-shared", 1), ("shared-anon", 1), ("growsdown", 1),
          ("guard", 1), ("binder", 1), ("tcp", 1))
_PROTS = ("rw",) * 6 + ("r", "r", "none", "rwx")


@dataclass(slots=True)
class Gen:
    """What argument drawing knows: the VMA boundaries of the thread's process
    after the setup, and the userfaultfd range."""

    vmas: list[tuple[int, int]]
    uffd: tuple[int, int] | None = None

    def _vma(self, r: random.Random) -> tuple[int, int]:
        """A VMA, mostly one the setup made (not the stack or a helper mapping)."""
        ours = [v for v in self.vmas if FUZZ_BASE <= v[0] < FUZZ_BASE + 0x1000000]
        return r.choice(ours if ours and r.random() < 0.85 else self.vmas)

    def _points(self) -> list[int]:
        pts = sorted({a for v in self.vmas for a in v}) or [FUZZ_BASE]
        return pts

    def addr(self, r: random.Random, access: bool = False) -> int:
        """An address near the layout: a boundary, a page off one, a page
        inside a VMA (accesses: at a small offset); rarely far away."""
        x = r.random()
        if x < 0.04:
            return FUZZ_BASE + 64 * PAGE + r.randrange(4) * PAGE  # nothing mapped there
        if x < 0.06 and not access:
            return r.choice(self._points()) + r.randrange(1, PAGE)  # unaligned
        if self.vmas and x < 0.75:
            lo, hi = self._vma(r)
            a = lo + r.randrange(max(1, (hi - lo) // PAGE)) * PAGE
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
        if not self.vmas or r.random() < 0.25:
            return self.addr(r), self.length(r)
        lo, hi = self._vma(r)
        i = self.vmas.index((lo, hi))
        shape = r.randrange(5)
        if shape == 0:  # the whole VMA
            return lo, hi - lo
        if shape == 1 and i + 1 < len(self.vmas):  # into the next one
            return lo, self.vmas[i + 1][0] - lo + PAGE
        if shape == 2:  # off by a page
            return lo + r.choice((-PAGE, PAGE)), hi - lo
        a = lo + r.randrange(max(1, (hi - lo) // PAGE)) * PAGE
        return a, min(self.length(r) or PAGE, max(PAGE, hi - a))

    def prot(self, r: random.Random) -> int:
        return r.choice((3, 3, 3, 1, 1, 0, 7, 2)) if r.random() > 0.02 else 0x10  # 0x10: EINVAL

    def uffd_range(self) -> tuple[int, int]:
        assert self.uffd is not None
        return self.uffd


def _setup(r: random.Random) -> tuple[list[ProcessSpec], tuple[str, int] | None]:
    nvmas = r.choice((1, 1, 2, 2, 2, 3, 3, 4, 5, 6))
    vmas: list[VmaSpec] = []
    addr = FUZZ_BASE
    used: set[str] = set()
    kinds = [k for k, _ in _KINDS]
    weights = [w for _, w in _KINDS]
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
    if x < 0.15:
        procs.append(ProcessSpec("q", [], fork_of="p"))
    elif x < 0.25:
        procs.append(ProcessSpec("q", [VmaSpec("anon", FUZZ_BASE, r.choice((1, 2)), "rw",
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
    procs, uffd = _setup(r)
    prog, layouts = _layout(Program(procs, [], uffd), cfg or Config.preset("universal"))
    entries = all_calls()
    have = {"binder": any(v.kind == "binder" for p in procs for v in p.vmas),
            "tcp": any(v.kind == "tcp" for p in procs for v in p.vmas), "uffd": uffd is not None}
    urange = None
    if uffd is not None:
        v = prog.process(uffd[0]).vmas[uffd[1]]
        urange = (v.addr, v.addr + v.pages * PAGE)
    nthreads = r.choice((2, 2, 2, 2, 3, 3, 4))
    total = r.randint(nthreads, MAX_TOTAL_CALLS)
    per = [1] * nthreads
    for _ in range(total - nthreads):
        i = r.randrange(nthreads)
        if per[i] < MAX_CALLS:
            per[i] += 1
    threads: list[ThreadSpec] = []
    for i in range(nthreads):
        pname = procs[1].name if len(procs) > 1 and r.random() < 0.3 else procs[0].name
        g = Gen(layouts[pname], urange if pname == "p" else None)
        usable = [e for e in entries if e.needs is None
                  or (have[e.needs] and (e.needs != "uffd" or pname == "p") and e.name != "uffd_close")
                  and (e.needs not in ("binder", "tcp") or _owns(procs, pname, e.needs))]
        calls = []
        for _ in range(per[i]):
            e = r.choices(usable, [e.weight for e in usable])[0]
            calls.append(Call(e.name, e.gen(g, r)))
        threads.append(ThreadSpec(pname, calls))
    if uffd is not None:  # a thread of its own closes it: a fault waiting in the range is woken
        closer = ThreadSpec("p", [Call("uffd_close", {})])
        if len(threads) < MAX_THREADS:
            threads.append(closer)
        else:
            threads[-1] = closer
    return prog if not threads else Program(prog.processes, threads, prog.uffd)


def _owns(procs: list[ProcessSpec], pname: str, kind: str) -> bool:
    return any(v.kind == kind for p in procs if p.name == pname for v in p.vmas)


def generate_many(seed: int, n: int, cfg: Config | None = None) -> list[Program]:
    return [generate(seed, i, cfg) for i in range(n)]
