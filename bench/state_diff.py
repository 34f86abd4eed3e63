"""Which fields tell apart stored states at the same thread positions.

Stateful exploration merges only states with equal keys.  States where every
thread is at the same code position (the same chain of suspended frames and
offsets) but whose keys differ are told apart by some field; when that field is
history (a counter, a flag left over from an earlier wait), not what the
threads will do next, the search explores the same future more than once.

    python bench/state_diff.py [SCENARIO] [--preset P] [--sample N] [--top K]

Runs the stateful search of SCENARIO (default spin-2f-m) to the end, keeps the
rows (``pervma.sched.statekey.state_rows``) of the first N states it stores,
groups them by thread positions, and for pairs in a group prints the first
row that differs: the object's type and the fields that differ (dict and list
rows show their contents), how often, and one example pair.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import sys
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from pervma.check import stateful
from pervma.check.scenario import get_scenario
from pervma.check.search import Budget, Runner, Stats
from pervma.check.symmetry import Perm, canonical
from pervma.config import Config
from pervma.errors import UsageError
from pervma.sched.statekey import _slots_of, state_rows
from pervma.sched.task import Task


def positions(tasks: Iterable[Task]) -> Hashable:
    """Every thread's done flag and chain of (function, offset) frames."""
    out = []
    for t in tasks:
        chain = []
        c: Any = t.coro
        while c is not None:
            f = getattr(c, "cr_frame", None) or getattr(c, "gi_frame", None)
            if f is None:
                break
            chain.append((f.f_code.co_name, f.f_lasti))
            c = c.cr_await if hasattr(c, "cr_await") else getattr(c, "gi_yieldfrom", None)
        out.append((t.done, tuple(chain)))
    return tuple(out)


def describe(ra: Any, rb: Any) -> str:
    """The differing row's type and fields."""
    head = ra[0] if isinstance(ra, tuple) and ra else None
    if isinstance(head, type):
        names = _slots_of(head) or ()
        if isinstance(rb, tuple) and len(ra) == len(rb):
            cols = [names[i - 1] if 0 < i <= len(names) else f"#{i}"
                    for i, (x, y) in enumerate(zip(ra, rb, strict=True)) if x != y]
            return f"{head.__name__}.{','.join(cols)}"
        return f"{head.__name__} (shape)"
    if head == "d":  # a dict: named by the keys of both (plain keys only)
        keys = sorted({str(k) for r in (ra, rb) for k, _ in r[1:] if not isinstance(k, tuple)})
        return f"dict {{{', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}}}"
    if head in ("l", "s"):
        return {"l": "list", "s": "set"}[head]
    code = getattr(head, "co_name", None)
    if code is not None:  # a frame: (code, offset, awaited, (local, value)...)
        la, lb = dict(ra[3:]), dict(rb[3:])
        diff = sorted(k for k in la.keys() | lb.keys() if la.get(k, "-") != lb.get(k, "-"))
        where = "" if ra[1] == rb[1] else " (offset)"
        return f"frame of {code}{where}: {', '.join(diff) or 'awaited'}"
    return f"row {str(ra)[:40]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", nargs="?", default="spin-2f-m")
    ap.add_argument("--preset", default="universal")
    ap.add_argument("--sample", type=int, default=3000, help="states whose rows are kept")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args(argv)
    try:
        sc, cfg = get_scenario(args.scenario), Config.preset(args.preset)
    except (UsageError, KeyError, ValueError) as exc:
        print(f"state_diff: {exc}", file=sys.stderr)
        return 2
    groups: dict[Hashable, list[list[Hashable]]] = collections.defaultdict(list)
    seen: set[int] = set()

    def key(tasks: Sequence[Task], sym: Iterable[tuple[int, ...]]) -> tuple[int, Perm]:
        k, order = canonical(tasks, sym)
        walked = list(tasks) if order is None else [tasks[t] for t in order]
        if k not in seen and len(seen) < args.sample:
            seen.add(k)
            groups[positions(walked)].append(state_rows(walked))
        return k, order

    stateful.canonical = key  # type: ignore[assignment]
    st = stateful.explore_roots(Runner(sc, cfg), Budget(max_executions=10**7), Stats("dpor"))
    print(f"{args.scenario} ({args.preset}): {st.states:,} states stored, complete: "
          f"{'yes' if st.complete else 'no'}; {len(seen):,} sampled at {len(groups):,} positions")
    count: collections.Counter[str] = collections.Counter()
    example: dict[str, tuple[str, str]] = {}
    for rows in groups.values():
        for a, b in itertools.combinations(rows[:6], 2):
            if len(a) != len(b):
                count["(a different number of objects)"] += 1
            for ra, rb in zip(a, b, strict=False):
                if ra != rb:
                    what = describe(ra, rb)
                    count[what] += 1
                    example.setdefault(what, (str(ra)[:160], str(rb)[:160]))
                    break
    print(f"{'pairs':>7}  first differing field")
    for what, n in count.most_common(args.top):
        print(f"{n:>7}  {what}")
        if what in example:
            print(f"{'':>9}{example[what][0]}\n{'':>9}{example[what][1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
