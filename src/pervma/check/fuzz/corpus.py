"""The campaign's corpus (issue #15 item 3): the programs that added coverage.

A program joins when its exploration contained a racing pair (see
:mod:`~pervma.check.fuzz.coverage`) that no program explored before it had,
and it found no violation (a violating program goes to the findings, as a
crashing input goes to a fuzzer's crash folder, not to its queue).  The
campaign offers the programs of a round in program order once the round is
over (:meth:`Corpus.consider`), so the corpus after a round is the same
whatever order the workers finished in.  Line coverage is not part of it:
see the README ("Campaigns").

The corpus is reporting and drawing state of the driver: it never reaches a
model thread, so the stateful search's states do not grow with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pervma.check.fuzz.coverage import Pair
from pervma.check.fuzz.program import Program


def pair_name(p: Pair) -> str:
    """``vm_refcnt:w/r``: the location's kind, then which side writes."""
    kind, a, b = p
    return f"{kind}:{'w' if a else 'r'}/{'w' if b else 'r'}"


@dataclass(slots=True)
class Entry:
    """A corpus program: its campaign index and the racing pairs it added."""

    index: int
    program: Program
    new: list[Pair]


@dataclass
class Corpus:
    """The programs that added coverage, in the order they joined, and the
    racing pairs every program explored so far contained."""

    entries: list[Entry] = field(default_factory=list)
    cover: set[Pair] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.entries)

    def consider(self, index: int, prog: Program, coverage: set[Pair],
                 violation: bool = False) -> list[Pair]:
        """Account program ``index``'s coverage; return the pairs it added
        (sorted).  It joins the corpus when it added some and found nothing."""
        new = sorted(coverage - self.cover)
        self.cover |= coverage
        if new and not violation:
            self.entries.append(Entry(index, prog, new))
        return new

    def snapshot(self) -> tuple[Entry, ...]:
        """The corpus as it is now: what a round draws its parents from."""
        return tuple(self.entries)

    def write(self, directory: Path) -> None:
        """``corpus/program-NNNNNN.json`` per entry (a program ``pervma check
        --program`` takes)."""
        d = directory / "corpus"
        d.mkdir(parents=True, exist_ok=True)
        for e in self.entries:
            (d / file_name(e.index)).write_text(e.program.dumps())


def file_name(index: int) -> str:
    return f"program-{index:06d}.json"
