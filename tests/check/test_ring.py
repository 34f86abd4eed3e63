"""The shared-memory byte queue between two workers (check/ring.py)."""

from __future__ import annotations

import multiprocessing as mp

from pervma.check.ring import Ring


def test_messages_arrive_in_order_across_the_wrap_and_wait_when_full() -> None:
    ring = Ring(100, mp.get_context("fork"))
    sent: list[bytes] = []
    got: list[bytes] = []
    for i in range(40):  # 4 + 29 bytes each: three fill the ring, a fourth waits
        msg = bytes([i]) * 29
        sent.append(msg)
        ring.put(msg)
        if i % 4 == 3:
            assert len(ring.pending) == 1
            got += ring.get_all()
            assert len(got) == i  # the three in the ring
            ring.flush()
            assert not ring.pending
            got += ring.get_all()  # the fourth, written across the end of the ring
    assert got == sent
    assert ring.get_all() == []


def test_a_message_larger_than_the_ring_goes_in_frames() -> None:
    ring = Ring(64, mp.get_context("fork"))  # frames of 28 bytes
    big = bytes(range(200))
    ring.put(b"")
    ring.put(big)
    ring.put(b"z")
    got = ring.get_all()
    assert len(ring.pending) > 0  # the rest of the frames wait for room
    while ring.pending:
        ring.flush()
        got += ring.get_all()
    assert got == [b"", big, b"z"]
    assert ring.get_all() == []


def _send(ring: Ring, n: int) -> None:
    for i in range(n):
        ring.put(i.to_bytes(4, "little") * (1 + i % 300))
        while ring.pending:
            ring.flush()


def test_another_process_s_messages_arrive_whole_and_in_order() -> None:
    ctx = mp.get_context("fork")
    ring = Ring(1000, ctx)
    p = ctx.Process(target=_send, args=(ring, 3000))
    p.start()
    got: list[bytes] = []
    while len(got) < 3000:
        got += ring.get_all()
    p.join()
    assert p.exitcode == 0
    assert got == [i.to_bytes(4, "little") * (1 + i % 300) for i in range(3000)]
