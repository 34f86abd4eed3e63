"""The race churnsame's one-thread point hinges on, traced on the real kernel.

    sudo python bench/real/wake_trace.py [--window-ms 50] [--pin] [--keep FILE]

Runs ``bench/real/probe`` on ``churnsame`` (threads, 1 task) with tracefs
events on for a window (sched_waking, sched_switch, page_fault_user,
sys_enter/exit_mprotect, mmap_lock_*), then prints, per mprotect cycle:

* the faulting thread's wake-up: from ``sched_waking`` to its
  ``mmap_lock_acquire_returned`` (p10, p30, median, p70, p90, in us);
* the writer's time from its ``mmap_lock_released`` to its next
  ``mmap_lock_start_locking`` (the wake-up IPI it pays, then the syscall);
* how long the writer spins on the reader-owned lock before it sleeps
  (its ``start_locking`` to its ``sched_switch`` in state D);
* in how many cycles the writer went to sleep before the reader ran
  (the reader's acquire within 10 us of the writer's last sleep).

Needs root (tracefs at /sys/kernel/tracing, mounted if it is not) and the
probe built (``make -C bench/real``).  The README's "Wake-ups vary, and
churnsame's race" quotes its figures.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRACING = Path("/sys/kernel/tracing")
EVENTS = ("sched:sched_switch sched:sched_waking exceptions:page_fault_user "
          "syscalls:sys_enter_mprotect syscalls:sys_exit_mprotect "
          "mmap_lock:mmap_lock_start_locking mmap_lock:mmap_lock_acquire_returned "
          "mmap_lock:mmap_lock_released")
LINE = re.compile(r"^\s*(\S+)-(\d+)\s+\[(\d+)\]\s+\S+\s+(\d+\.\d+): (\w+)[:(](.*)")


def _write(name: str, text: str) -> None:
    (TRACING / name).write_text(text)


def record(window_ms: float, pin: bool) -> str:
    """Run the probe and trace a window of it; the trace's text."""
    if not (TRACING / "trace").exists():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACING)], check=True)
    words = subprocess.run([sys.executable, "-m", "pervma", "simulate", "churnsame",
                            "--emit-probe-args"], check=True, capture_output=True,
                           text=True).stdout.split()
    _write("tracing_on", "0")
    _write("trace", "")
    _write("buffer_size_kb", "16384")
    _write("set_event", EVENTS)
    args = [str(HERE / "probe"), "--mode", "threads", "--tasks", "1", "--duration-ms",
            str(int(window_ms) + 400), "--warmup-ms", "100", "--no-header", *words]
    if pin:
        args.insert(1, "--pin")
    probe = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        _write("tracing_on", "1")
        time.sleep(window_ms / 1e3)
        _write("tracing_on", "0")
    finally:
        out, _ = probe.communicate()
        _write("set_event", "")
    fields = out.strip().split(",")
    print(f"probe: {float(fields[5]):,.0f} faults/s, {float(fields[6]):,.0f} mprotect pairs/s")
    return (TRACING / "trace").read_text()


def analyse(text: str) -> dict[str, list[float]]:
    """The per-cycle figures of the module docstring, in us."""
    ev = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            ev.append((float(m.group(4)) * 1e6, m.group(1), m.group(2), m.group(5), m.group(6)))
    faulter = next((p for _, _, p, e, _ in ev if e == "page_fault_user"), None)
    writer = next((p for _, c, p, e, _ in ev if e.startswith("sys_mprotect") and c == "probe"
                   and p != faulter), None)
    if faulter is None or writer is None:
        raise SystemExit("wake_trace: no fault or no mprotect in the window; trace a longer one")
    out: dict[str, list[float]] = {"reader_wake": [], "writer_ipi": [], "writer_spin": [],
                                   "after_writer_slept": []}
    wsleep = wstart = rwake = wrel = None
    for t, _, p, e, rest in ev:
        if p == writer and e == "mmap_lock_start_locking" and "write=true" in rest:
            wstart = t
            if wrel is not None:
                out["writer_ipi"].append(t - wrel)
                wrel = None
        elif p == writer and e == "mmap_lock_released":
            wrel = t
        elif e == "sched_switch" and f"prev_pid={writer} " in rest and "prev_state=D" in rest:
            if wstart is not None and t - wstart < 40:
                out["writer_spin"].append(t - wstart)
            wsleep, wstart = t, None
        elif e == "sched_waking" and f"pid={faulter} " in rest:
            rwake = t
        elif p == faulter and e == "mmap_lock_acquire_returned" and "success=true" in rest \
                and "write=false" in rest:
            if wsleep is not None:
                out["after_writer_slept"].append(t - wsleep)
            if rwake is not None:
                out["reader_wake"].append(t - rwake)
    return out


def _q(v: list[float]) -> str:
    v = sorted(v)
    n = len(v)
    if not n:
        return "none"
    return ", ".join(f"{v[n * k // 10]:.0f}" for k in (1, 3, 5, 7, 9)) + f" (of {n})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window-ms", type=float, default=50.0)
    ap.add_argument("--pin", action="store_true", help="the probe's --pin")
    ap.add_argument("--keep", help="also write the raw trace here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("wake_trace: needs root (tracefs)", file=sys.stderr)
        return 2
    if not (HERE / "probe").exists():
        print("wake_trace: bench/real/probe is not built: run make -C bench/real",
              file=sys.stderr)
        return 2
    text = record(a.window_ms, a.pin)
    if a.keep:
        Path(a.keep).write_text(text)
    r = analyse(text)
    print(f"reader's wake-up to its mmap_lock, us (p10, p30, median, p70, p90): "
          f"{_q(r['reader_wake'])}")
    print(f"writer's release to its next lock attempt, us: {_q(r['writer_ipi'])}")
    print(f"writer's spin on the reader-owned lock, us: {_q(r['writer_spin'])}")
    first = sum(1 for x in r["after_writer_slept"] if x <= 10)
    print(f"the writer slept before the reader ran in {first} of "
          f"{len(r['after_writer_slept'])} cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
