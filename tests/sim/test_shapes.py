"""Published shapes (performance.md targets 1, 4 and 5), each as the ratio its
source reports, within +-25%.  Short simulated windows: CI-sized."""

from __future__ import annotations

import pytest

from pervma.sim.api import run_point  # noqa: E402


def _rate(wl: str, preset: str, machine: str, kind: str, n: int, ms: float,
          warmup_ms: float | None = None) -> float:
    return run_point(wl, preset, machine, kind, n, ms, seed=3,
                     warmup_ms=ms / 2 if warmup_ms is None else warmup_ms).faults_per_s


def test_pft_threads_plateaus_on_the_2_socket_broadwell() -> None:
    # Target 1 (section 1.6, 6.15 refcount kernel): faults/sec 506,139 at 1 thread,
    # 4,112,477 at 12, 5,415,839 at 56: speedups 8.1x and 10.7x, and 56/12 = 1.32.
    one = _rate("pft-threads", "universal", "e5-2690v4", "threads", 1, 0.4)
    twelve = _rate("pft-threads", "universal", "e5-2690v4", "threads", 12, 0.4)
    full = _rate("pft-threads", "universal", "e5-2690v4", "threads", 56, 0.3)
    assert twelve / one == pytest.approx(4_112_477 / 506_139, rel=0.25)
    assert full / one == pytest.approx(5_415_839 / 506_139, rel=0.25)
    assert full / twelve == pytest.approx(5_415_839 / 4_112_477, rel=0.25)


def _mmap1_48() -> tuple[float, float, float]:
    one = _rate("mmap1", "universal", "icl-2sp", "threads", 1, 0.5)
    legacy = _rate("mmap1", "legacy", "icl-2sp", "threads", 48, 2.0)
    universal = _rate("mmap1", "universal", "icl-2sp", "threads", 48, 2.0)
    return one, legacy, universal


def test_mmap1_threads_collapse_alike_with_and_without_per_vma_locks() -> None:
    # Target 4 (section 4.3): the aggregate does not rise with threads, and the
    # mmap_lock and per-VMA models must agree within 5%.
    one, legacy, universal = _mmap1_48()
    assert legacy < one and universal < one
    assert legacy == pytest.approx(universal, rel=0.05)


@pytest.mark.xfail(strict=True, reason="known miss: with performance.md row 10's default rwsem "
                   "handoff (1.5 us) the simulated collapse is deeper (~0.41 of one task) than "
                   "lkp-icl-2sp1's 342 k pairs/s (~0.63); row 10's low end (0.5 us, derived from "
                   "that same LKP figure) would match it but then the check would be circular")
def test_mmap1_48_threads_against_one_task_matches_lkp() -> None:
    # lkp-icl-2sp1, 48 threads: 342,141 pairs/s in total against ~540 k pairs/s for
    # one task ([local] 514-549 k): ratio ~0.63.
    one, _, universal = _mmap1_48()
    assert universal / one == pytest.approx(342_141 / 540_000, rel=0.25)


def _pf3_gap() -> float:
    # warm-up past the start, when all 192 threads queue on mmap_lock for their mmap
    thr = _rate("page_fault3", "legacy", "skl-4sp", "threads", 192, 0.5, warmup_ms=1.0)
    proc = _rate("page_fault3", "legacy", "skl-4sp", "processes", 192, 0.3)
    return proc / thr


def test_legacy_page_fault3_threads_fall_an_order_of_magnitude_behind() -> None:
    # Target 5 (section 2.1): the mmap_lock count line is written twice per fault.
    assert _pf3_gap() > 6.0


def test_legacy_page_fault3_gap_matches_lkp_4_socket_skylake() -> None:
    # per-task page_fault3 threads ~10.1-10.9 k against processes 173-467 k per
    # process at nr_task=100% (192): a 16-43x gap, +-25%.  Steady state: the
    # tasks' files are in the page cache (workloads module docstring).
    assert 16 / 1.25 <= _pf3_gap() <= 43 * 1.25
