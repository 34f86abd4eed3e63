#!/usr/bin/env python3
"""User-level operations per second through the direct runner.

Prints, per preset: mmap + touch (4 pages) + munmap cycles per second, and
page faults per second (first-touch write faults on a large mapping).
Usage: python bench/direct_ops.py [--seconds S]
"""

from __future__ import annotations

import argparse
import time

from pervma import MAP_ANONYMOUS, MAP_PRIVATE, PAGE, PROT_READ, PROT_WRITE, Config, System


def cycles(preset: str, seconds: float) -> float:
    p = System(Config.preset(preset).with_(DEBUG_VM=False)).spawn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a = p.mmap(0, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        for i in range(4):
            p.store(a + i * PAGE, 1)
        p.munmap(a, 4 * PAGE)
        n += 1
    return n / (time.perf_counter() - t0)


def faults(preset: str, seconds: float) -> float:
    kern = System(Config.preset(preset).with_(DEBUG_VM=False))
    p = kern.spawn()
    npages = 1 << 16
    a = p.mmap(0, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds and n < npages:
        p.store(a + n * PAGE, 1)
        n += 1
    assert kern.vmstat()["pgfault"] == n
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    print(f"{'preset':24} {'mmap+touch4+munmap/s':>22} {'faults/s':>10}")
    for preset in ("legacy", "universal", "universal-up", "universal-up-nopreempt"):
        print(f"{preset:24} {cycles(preset, args.seconds):22,.0f} {faults(preset, args.seconds):10,.0f}")


if __name__ == "__main__":
    main()
