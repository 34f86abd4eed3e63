"""The generator's motifs (issue #15, "Done when"): a share of programs is built
around one VMA's life, the same whatever --bug says, and a motif program is
what finds the bugs whose shapes are rare among freely drawn programs."""

from __future__ import annotations

from collections import Counter

import pytest

from pervma.check.fuzz.explore import explore_program
from pervma.check.fuzz.generate import PAGE, generate
from pervma.check.fuzz.program import Program
from pervma.config import Config
from pervma.kernel.system import STACK_SIZE, STACK_TOP


def _shapes(prog: Program) -> set[str]:
    """Which of the three shapes a program has, read from the program alone."""
    out: set[str] = set()
    p = prog.processes[0]
    vmas = [(v.addr, v.addr + v.pages * PAGE, v) for v in p.vmas]
    threads = [(i, t) for i, t in enumerate(prog.threads) if t.process == p.name]
    others = [t for t in prog.threads if t.process != p.name]
    for i, t in threads:
        for c in t.calls:
            if c.call not in ("load", "store"):
                continue
            x = c.args["addr"]
            if not any(lo <= x < hi and not v.populate for lo, hi, v in vmas):
                continue
            unmapped = any(j != i and d.call == "munmap"
                           and d.args["addr"] <= x < d.args["addr"] + d.args["len"]
                           for j, u in threads for d in u.calls)
            mapped = any(d.call == "mmap" and d.args["fixed"]
                         and d.args["addr"] <= x < d.args["addr"] + d.args["len"]
                         for u in others for d in u.calls)
            if unmapped and mapped:
                out.add("recycle")
    for i, t in threads:
        if not any(c.call == "fork" for c in t.calls):
            continue
        for j, u in threads:
            pages = [c.args["addr"] // PAGE for c in u.calls if c.call == "store"]
            if j != i and any(b == a + 1 for a in pages for b in pages) and any(
                    v.populate and v.prot == "rw" and lo // PAGE <= min(pages) < hi // PAGE
                    for lo, hi, v in vmas):
                out.add("fork")
    below = STACK_TOP - STACK_SIZE - PAGE
    if len(prog.threads) > 1 and any(c.call in ("load", "store") and c.args["addr"] // PAGE
                                     == below // PAGE for _, t in threads for c in t.calls):
        out.add("grow")
    return out


def test_motifs_make_the_rare_shapes_common() -> None:
    """Before the motifs each of these shapes was 0.1-2.5% of the programs
    (1,500 programs of seeds 1-3); now each is several percent."""
    n = 300
    count = Counter(s for i in range(n) for s in _shapes(generate(4, i)))
    assert count["recycle"] >= 0.10 * n
    assert count["fork"] >= 0.05 * n
    assert count["grow"] >= 0.04 * n
    assert sum(count.values()) <= 0.6 * n  # most programs are still drawn freely


def test_motifs_do_not_depend_on_the_bug_switches() -> None:
    for i in range(20):
        assert (generate(2, i, Config.preset("universal").with_bugs("B16", "B04")).dumps()
                == generate(2, i).dumps())


@pytest.mark.parametrize(("index", "bug", "shape", "kind"), [
    (21, "B16", "recycle", "KASAN: use-after-free"),  # the foreign mm freed under the reader
    (24, "B17", "recycle", "BUG: fault on a VMA of another mm"),
    (11, "B04", "fork", "fork snapshot broken"),
    (3, "B02", "grow", "KASAN: use-after-free"),  # a maple node freed under find_vma
])
def test_a_motif_program_finds_its_bug_and_is_clean_without_it(index, bug, shape, kind) -> None:
    prog = generate(1, index)
    assert shape in _shapes(prog)
    on = explore_program(prog, Config.preset("universal").with_bugs(bug), dpor_executions=400,
                         pct_executions=0, minimise=False)
    assert on.violation is not None and on.violation[0] == kind
    off = explore_program(prog, Config.preset("universal"), dpor_executions=400,
                          pct_executions=0, minimise=False)
    assert off.violation is None and off.executions > 0
