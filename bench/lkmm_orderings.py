"""Which weakened ordering does ``--memory-model lkmm`` find?  A mutation table.

    python bench/lkmm_orderings.py                        # every mutation x the default scenarios
    python bench/lkmm_orderings.py --only inc-not-zero-relaxed --scenario vma-reuse-by-another-mm
    python bench/lkmm_orderings.py --max-executions 5000  # a smaller budget per run

Each mutation weakens one ordering of the model as a regression would (the
source text of ``src/pervma`` copied to a temporary folder and edited there,
never the checkout), then runs ``pervma check SCENARIO --preset universal
--memory-model lkmm --max-executions N`` on the copy for every scenario, and
prints, per mutation and scenario: ``FOUND`` (the violation, the search's
runs = executions + pruned, CPU seconds), ``clean`` (complete: the weakening
is invisible to that scenario), or ``clean at budget``.  A mutation whose
text is not found in the source fails the script (the model changed: update
the table).  Counts are the search's own; CPU seconds (the child's user
time) are the machine's.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

SRC = Path(__file__).resolve().parents[1] / "src"

#: (name, what it weakens, file under src/pervma, text, replacement)
MUTATIONS = [
    ("inc-not-zero-relaxed",
     "vma_start_read(): __refcount_inc_not_zero_limited_acquire() made relaxed",
     "kernel/atomic.py", "await self._rmw(label, Order.ACQUIRE)",
     "await self._rmw(label, Order.RELAXED)"),
    ("set-release-relaxed",
     "vma_mark_attached(): refcount_set_release() made a relaxed atomic_set()",
     "kernel/atomic.py", "await write(self.loc, label, Order.RELEASE)",
     "await write(self.loc, label, Order.RELAXED)"),
    ("sub-relaxed",
     "refcount_sub_and_test()/dec_and_test(): release and acquire-on-zero made relaxed",
     "kernel/atomic.py", "order: Order = Order.RELEASE_ACQUIRE) -> int:",
     "order: Order = Order.RELAXED) -> int:"),
    ("add-not-zero-relaxed",
     "__refcount_add_not_zero(): its control dependency dropped",
     "kernel/atomic.py", "await self._rmw(label, Order.CTRL)",
     "await self._rmw(label, Order.RELAXED)"),
    ("seqcount-begin-no-wmb",
     "mm_lock_seqcount_begin(): the smp_wmb() after the increment dropped",
     "kernel/atomic.py", "write(self.loc, label, Order.ONCE_WMB), seqcount_sequence",
     "write(self.loc, label, Order.ONCE), seqcount_sequence"),
    ("seqcount-end-no-wmb",
     "mm_lock_seqcount_end(): the smp_wmb() before the increment dropped (half of B12)",
     "kernel/mmap_lock.py", 'Order.ONCE if mm.config.bug("B12") else Order.WMB_ONCE)',
     "Order.ONCE)"),
    ("late-check-once",
     "vma_start_read(): the late check's acquire made READ_ONCE() (the other half of B12)",
     "kernel/mmap_lock.py", 'Order.ONCE if mm.config.bug("B12") else Order.ACQUIRE),',
     "Order.ONCE),"),
]

SCENARIOS = ("uffd-register-vs-fault", "fault-vs-munmap", "vma-reuse-by-another-mm",
             "vma-reuse-same-address", "fault-vs-mprotect-split", "fault-vs-merge")


def _mutate(name: str, into: Path) -> None:
    _, _, rel, old, new = next(m for m in MUTATIONS if m[0] == name)
    shutil.copytree(SRC / "pervma", into / "pervma",
                    ignore=shutil.ignore_patterns("__pycache__"))
    path = into / "pervma" / rel
    text = path.read_text()
    if text.count(old) != 1:
        sys.exit(f"lkmm_orderings: mutation {name}: its text is not (once) in {rel}; "
                 "update the table")
    path.write_text(text.replace(old, new))


def _run(src: Path, scenario: str, budget: int) -> tuple[str, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    proc = subprocess.run(
        [sys.executable, "-m", "pervma", "check", scenario, "--preset", "universal",
         "--memory-model", "lkmm", "--max-executions", str(budget)],
        env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True, text=True, check=False)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before
    first = proc.stdout.splitlines()[0] if proc.stdout else proc.stderr.strip()[-200:]
    runs = re.search(r"(\d+) executions, (\d+) pruned", first)
    n = int(runs.group(1)) + int(runs.group(2)) if runs else 0
    if proc.returncode == 1:
        # the report's headline: "BUG: <kind>: <detail>"
        head = next((ln[len("BUG: "):] for ln in proc.stdout.splitlines()
                     if ln.startswith("BUG: ")), "?")
        return "FOUND", f"{': '.join(head.split(': ')[:2])}; {n} runs, {cpu:.1f} s"
    if proc.returncode == 0:
        return "clean", f"complete, {n} runs, {cpu:.1f} s"
    if proc.returncode == 3:
        return "clean at budget", f"{n} runs, {cpu:.1f} s"
    return "error", first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", choices=[m[0] for m in MUTATIONS])
    ap.add_argument("--scenario", nargs="*", default=list(SCENARIOS))
    ap.add_argument("--max-executions", type=int, default=20000)
    args = ap.parse_args()
    console = Console()
    table = Table(title=f"lkmm on universal, one weakened ordering at a time "
                        f"(--max-executions {args.max_executions})")
    table.add_column("mutation")
    for sc in args.scenario:
        table.add_column(sc)
    for name, what, *_ in MUTATIONS:
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="pervma-mut-") as tmp:
            _mutate(name, Path(tmp))
            cells = []
            for sc in args.scenario:
                verdict, detail = _run(Path(tmp), sc, args.max_executions)
                console.print(f"{name} {sc}: {verdict} ({detail})")
                cells.append(f"{verdict}\n{detail}")
        table.add_row(f"{name}\n{what}", *cells)
    console.print(table)


if __name__ == "__main__":
    main()
