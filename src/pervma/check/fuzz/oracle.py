"""The serial-order oracle: every user-visible result must be one that some
serial order of the calls produces.

After each execution (its ``finish``), the oracle takes each call's outcome
and when it ran relative to the other threads' calls (:class:`CallLog`).  It
judges the execution only where the kernel promises atomicity (README, "The
serial-order oracle"): if a call the registry marks non-atomic overlapped a
call of another thread, or a call that walks more than one page after
changing the VMAs (munmap, mprotect, madvise, mremap, MAP_FIXED mmap, brk)
overlapped a user access of another thread into that range, or a user access
that found a VMA which appeared while it ran (a stack its fault grew)
overlapped any call of another thread, or such a call
of any size overlapped two or more accesses into its range one of which got a
SIGSEGV (the old PTEs stay usable until the zap), the execution is skipped.
Otherwise it searches the serial orders that keep each thread's program order
and the real-time order (a call that ended before another began comes first),
running each candidate prefix from a fresh setup with the direct runner, and
prunes a prefix as soon as one of its calls gives another outcome than the
execution did.  No order left: a ``serial-order`` violation.

Everything it caches (serial outcomes of prefixes, verdicts, counters) lives
here, out of reach of the model threads, so the stateful search's states do
not grow with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pervma.check.fuzz.program import Program
from pervma.check.fuzz.registry import CallDef, get_call
from pervma.check.fuzz.world import FuzzWorld, Outcome
from pervma.config import Config
from pervma.sched import RunScope, drain_touched, run_scope_active, violation

#: Serial prefixes the oracle runs for one execution before it gives up (undecided).
MAX_NODES = 400
_CACHE_MAX = 50_000

Entry = tuple[Outcome, tuple[int, ...], tuple[int, ...], bool]


@dataclass(slots=True)
class OracleStats:
    judged: int = 0
    skipped: int = 0
    undecided: int = 0
    serial_runs: int = 0


@dataclass
class SerialOracle:
    prog: Program
    cfg: Config
    stats: OracleStats = field(default_factory=OracleStats)
    _prefix: dict[tuple[tuple[int, int], ...], Outcome] = field(default_factory=dict)
    _verdict: dict[Any, bool | str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._defs: list[list[CallDef]] = [[get_call(c.call) for c in t.calls]
                                           for t in self.prog.threads]

    # -- when to judge ------------------------------------------------------------
    def _overlap(self, log: list[list[Entry]], i: int, a: int, j: int, b: int) -> bool:
        fin, started = log[i][a][1], log[i][a][2]
        return not (fin[j] > b or started[j] <= b)

    def _unsafe(self, x: CallDef, xa: dict[str, int], y: CallDef, ya: dict[str, int]) -> bool:
        if not x.is_atomic(xa) or not y.is_atomic(ya):
            return True
        return y.access and any(lo <= ya["addr"] < hi for lo, hi in x.walked(xa))

    def judgeable(self, log: list[list[Entry]]) -> bool:
        calls = self.prog.threads
        for i, ti in enumerate(log):
            for a in range(len(ti)):
                for j, tj in enumerate(log):
                    if j == i:
                        continue
                    for b in range(len(tj)):
                        if not self._overlap(log, i, a, j, b):
                            continue
                        if log[i][a][3] or log[j][b][3]:
                            return False  # an access that grew the stack: two steps
                        x, y = self._defs[i][a], self._defs[j][b]
                        xa, ya = calls[i].calls[a].args, calls[j].calls[b].args
                        if self._unsafe(x, xa, y, ya) or self._unsafe(y, ya, x, xa):
                            return False
                # Accesses into a range being changed, while it is, one of
                # them faulting to a SIGSEGV: the VMA is changed first and the
                # old PTEs stay usable until the zap (change_protection), so
                # an access that needs no fault still lands before the
                # change after one that faulted landed after it.
                x, xa = self._defs[i][a], calls[i].calls[a].args
                spans = x.walked(xa, pages=1)
                if not spans:
                    continue
                hits = [str(log[j][b][0]) for j, tj in enumerate(log) if j != i
                        for b in range(len(tj))
                        if self._defs[j][b].access and self._overlap(log, i, a, j, b)
                        and any(lo <= calls[j].calls[b].args["addr"] < hi for lo, hi in spans)]
                if len(hits) >= 2 and any(h.startswith("SIGSEGV") for h in hits):
                    return False
        return True

    # -- the search ------------------------------------------------------------------
    def _outcome(self, prefix: tuple[tuple[int, int], ...]) -> Outcome:
        got = self._prefix.get(prefix)
        if got is not None:
            return got
        if len(self._prefix) > _CACHE_MAX:
            self._prefix.clear()
        self.stats.serial_runs += 1
        with run_scope_active(RunScope()):
            w = FuzzWorld(self.prog, self.cfg, track=False)
            outs = w.run_serial(list(prefix))
        for n, o in enumerate(outs, 1):
            self._prefix[prefix[:n]] = o
        if len(outs) < len(prefix):  # stopped early: the rest cannot run
            for n in range(len(outs) + 1, len(prefix) + 1):
                self._prefix[prefix[:n]] = "unreachable"
        return self._prefix[prefix]

    def search(self, log: list[list[Entry]]) -> bool | None:
        """True: a serial order gives these outcomes; False: none does; None:
        the search stopped at MAX_NODES."""
        n = len(log)
        lens = [len(t) for t in log]
        nodes = [0]

        def dfs(pos: list[int], prefix: tuple[tuple[int, int], ...]) -> bool | None:
            if pos == lens:
                return True
            undecided = False
            for i in range(n):
                k = pos[i]
                if k >= lens[i]:
                    continue
                fin = log[i][k][1]
                if any(pos[j] < fin[j] for j in range(n) if j != i):
                    continue  # a call that ended before this one began is not done yet
                nodes[0] += 1
                if nodes[0] > MAX_NODES:
                    return None
                p2 = prefix + ((i, k),)
                if self._outcome(p2) != log[i][k][0]:
                    continue
                pos[i] += 1
                r = dfs(pos, p2)
                pos[i] -= 1
                if r:
                    return True
                if r is None:
                    undecided = True
                    break
            return None if undecided else False

        return dfs([0] * n, ())

    def __call__(self, log: list[list[Entry]]) -> None:
        """Judge one finished execution (called from its ``finish``)."""
        key = tuple(tuple(t) for t in log)
        verdict: bool | str | None = self._verdict.get(key, "new")
        if verdict == "new":
            if not self.judgeable(log):
                verdict = "skip"
            else:
                verdict = self.search(log)
                drain_touched()  # the serial runs' steps are not the execution's
            if len(self._verdict) > _CACHE_MAX:
                self._verdict.clear()
            self._verdict[key] = verdict
        if verdict == "skip":
            self.stats.skipped += 1
            return
        if verdict is None:
            self.stats.undecided += 1
            return
        self.stats.judged += 1
        if not verdict:
            violation("serial-order", self.explain(log))

    def explain(self, log: list[list[Entry]]) -> str:
        parts = []
        for i, t in enumerate(log):
            for k, (o, *_) in enumerate(t):
                c = self.prog.threads[i].calls[k]
                args = ",".join(f"{v:#x}" if v >= 4096 else str(v) for v in c.args.values())
                shown = f"{o:#x}" if isinstance(o, int) and o >= 4096 else str(o)
                parts.append(f"T{i}.{c.call}({args})={shown}")
        return "no serial order of the calls gives these results: " + "; ".join(parts)
