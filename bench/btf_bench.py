"""Time pervma's pure-Python parse of the running kernel's BTF.

usage: python bench/btf_bench.py [PATH] [--repeat N]
Prints the best-of-N parse time of PATH (default /sys/kernel/btf/vmlinux),
the number of types and the time to lay out vm_area_struct; target: < 1 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pervma.errors import PervmaError
from pervma.layout import btf
from pervma.layout.btf_layout import struct_layout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default=btf.VMLINUX)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not Path(args.path).exists():
        print(f"btf_bench: {args.path} not found (kernel without BTF)", file=sys.stderr)
        return 2
    best = float("inf")
    try:
        for _ in range(max(args.repeat, 1)):
            t0 = time.perf_counter()
            b = btf.load(args.path)
            best = min(best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        c = struct_layout(b, "vm_area_struct")
        t_layout = time.perf_counter() - t0
    except PervmaError as exc:
        print(f"btf_bench: {exc}", file=sys.stderr)
        return 2
    size = Path(args.path).stat().st_size
    print(f"parse {args.path}: {best:.3f} s (best of {args.repeat}), {size} bytes, "
          f"{len(b)} types; vm_area_struct ({c.size} B) laid out in {t_layout * 1000:.1f} ms")
    print("target < 1 s:", "met" if best < 1.0 else "MISSED")
    return 0 if best < 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
