"""The walk of dpor.summary_races: the C one (pervma.check._races) makes the
pairs of the Python specification (dpor.summary_pairs), call for call, over
whole stateful searches; and it refuses malformed input with an exception."""

from __future__ import annotations

import pytest

from pervma.check import dpor
from pervma.check.api import run_check


def test_the_c_walk_is_built() -> None:
    # .ci/run builds it (setup.py): a missing one would silently run the spec
    from pervma.check import _races

    assert dpor._summary_pairs is _races.summary_pairs


@pytest.mark.parametrize(("name", "bugs"), [
    ("spin-2f-m", []), ("spin-1f-m-r", []), ("detach-vs-transient-reader", ["B18"]),
    ("fault-vs-munmap", ["B13"]), ("vma-reuse-by-another-mm", []),
])
def test_the_c_walk_makes_the_pairs_of_the_python_one(monkeypatch: pytest.MonkeyPatch,
                                                      name: str, bugs: list[str]) -> None:
    from pervma.check import _races

    calls = [0, 0]

    def both(events, end, summary, last, clocks):  # type: ignore[no-untyped-def]
        c = _races.summary_pairs(events, end, summary, last, clocks)
        p = dpor.summary_pairs(events, end, summary, last, clocks)
        assert c == p
        calls[0] += 1
        calls[1] += len(c)
        return c

    monkeypatch.setattr(dpor, "_summary_pairs", both)
    run_check(name, bugs=bugs, jobs=1, minimise=False)
    assert calls[0] > 0 and calls[1] > 0, "no summary race was looked for: nothing compared"


def test_the_c_walk_refuses_malformed_input() -> None:
    from pervma.check import _races

    with pytest.raises(TypeError):
        _races.summary_pairs([], 0, [(0, "x")], {}, [])  # an access without its writes flag
    with pytest.raises(TypeError):
        _races.summary_pairs((), 0, [], {}, [])  # events not a list
    with pytest.raises(IndexError):
        _races.summary_pairs([], 0, [(5, "x", True)], {"x": 3}, [[0]])  # an event past the list
