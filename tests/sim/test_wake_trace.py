"""bench/real/wake_trace.py's analysis of a trace (its recording needs root and
tracefs: run by hand, README)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "wake_trace", Path(__file__).resolve().parents[2] / "bench" / "real" / "wake_trace.py")
assert _SPEC is not None and _SPEC.loader is not None
wake_trace = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(wake_trace)

# One mprotect cycle of each outcome, R = 20 (faulting thread), W = 21 (writer);
# times in seconds, as tracefs prints them.
TRACE = """\
# tracer: nop
           probe-20    [001] d.... 100.000000: page_fault_user: address=0x1 ip=0x2 error_code=0x6
           probe-21    [000] ..... 100.000001: sys_mprotect(start: 0x1000, len: 0x1000, prot: 1)
           probe-21    [000] ..... 100.000010: mmap_lock_released: mm=1 memcg_id=1 write=true
           probe-21    [000] d..3. 100.000010: sched_waking: comm=probe pid=20 prio=120 target_cpu=001
           probe-21    [000] ..... 100.000023: mmap_lock_start_locking: mm=1 memcg_id=1 write=true
           probe-21    [000] d..2. 100.000035: sched_switch: prev_comm=probe prev_pid=21 prev_prio=120 prev_state=D ==> next_comm=swapper/0 next_pid=0 next_prio=120
           probe-20    [001] ..... 100.000036: mmap_lock_acquire_returned: mm=1 memcg_id=1 write=false success=true
           probe-21    [000] ..... 100.000100: mmap_lock_released: mm=1 memcg_id=1 write=true
           probe-21    [000] d..3. 100.000100: sched_waking: comm=probe pid=20 prio=120 target_cpu=001
           probe-21    [000] ..... 100.000113: mmap_lock_start_locking: mm=1 memcg_id=1 write=true
           probe-20    [001] ..... 100.000120: mmap_lock_acquire_returned: mm=1 memcg_id=1 write=false success=true
"""


def test_the_analysis_finds_each_cycles_figures_and_who_went_first() -> None:
    r = wake_trace.analyse(TRACE)
    assert [round(x) for x in r["reader_wake"]] == [26, 20]
    assert [round(x) for x in r["writer_ipi"]] == [13, 13]
    assert [round(x) for x in r["writer_spin"]] == [12]
    # the first cycle's reader ran 1 us after the writer slept; in the second
    # the writer never slept (it was still spinning): 85 us after its last sleep
    assert [round(x) for x in r["after_writer_slept"]] == [1, 85]
