"""A byte queue in shared memory from one process to one other: how the
workers of a split stateful search (:mod:`pervma.check.pstateful`) pass
each other their finished states.

A ``multiprocessing`` queue costs each message a pickle, a feeder thread
that must win the GIL from the worker's search, and system calls at both
ends, so the workers could share only every 64 executions (every 16 or 8
cost more than the states it saved, eighteenth session).  A :class:`Ring`
is an ``mmap`` shared by ``fork``: the sender copies a message in and moves
a head counter, the receiver copies it out and moves a tail counter, and
looking for news is one read of the head.  The two counters are read and
written under a ``multiprocessing`` lock, whose acquire and release order
the message's bytes before the counter that publishes them on any CPU (an
uncontended lock is an atomic operation in each process, no system call).

A message that does not fit in the free space waits in the sender's own
memory (:attr:`Ring.pending`) and goes, in order, at a later
:meth:`Ring.flush`: a receiver that is busy or idle never blocks the
sender, and messages are never lost or reordered (the receiver's decoder
numbers what earlier messages defined).  A message longer than half the
ring travels as several frames, put together again on receipt."""

from __future__ import annotations

import mmap
import struct
from collections import deque
from typing import Any

_HEAD = struct.Struct("=QQ")  # bytes written, bytes read (each only ever grows)
_LEN = struct.Struct("=I")  # a frame's length; _MORE: more frames of its message follow
_MORE = 1 << 31


class Ring:
    """One sender, one receiver; make it before ``fork`` so both share it."""

    def __init__(self, capacity: int, ctx: Any) -> None:
        if capacity < 64:
            raise ValueError("a ring of fewer than 64 bytes")
        self.cap = capacity
        self._buf = mmap.mmap(-1, _HEAD.size + capacity)  # MAP_SHARED | MAP_ANONYMOUS
        self._lock = ctx.Lock()
        self.pending: deque[tuple[int, bytes]] = deque()  # the sender's frames, not yet in
        self._frame = capacity // 2 - _LEN.size
        self._part: list[bytes] = []  # the receiver's frames of a message not yet whole

    def _counters(self) -> tuple[int, int]:
        with self._lock:
            head, tail = _HEAD.unpack_from(self._buf, 0)
        return head, tail

    def put(self, data: bytes) -> None:
        """Send ``data`` (sender only): into the ring now if it fits behind
        what is waiting, else at a later :meth:`flush`."""
        size = self._frame
        last = max(0, len(data) - 1) // size * size
        for i in range(0, last + 1, size):
            frame = data[i:i + size]
            self.pending.append((len(frame) | (_MORE if i < last else 0), frame))
        self.flush()

    def flush(self) -> None:
        """Move waiting messages into the ring, as many as fit (sender only)."""
        if not self.pending:
            return
        head, tail = self._counters()
        start = head
        free = self.cap - (head - tail)
        pending = self.pending
        while pending and _LEN.size + len(pending[0][1]) <= free:
            word, frame = pending.popleft()
            self._write(head, _LEN.pack(word))
            self._write(head + _LEN.size, frame)
            head += _LEN.size + len(frame)
            free -= _LEN.size + len(frame)
        if head != start:
            with self._lock:
                struct.pack_into("=Q", self._buf, 0, head)

    def get_all(self) -> list[bytes]:
        """Every message sent and not yet received, in order (receiver only)."""
        head, tail = self._counters()
        if head == tail:
            return []
        out = []
        part = self._part
        while tail < head:
            (word,) = _LEN.unpack(self._read(tail, _LEN.size))
            n = word & ~_MORE
            part.append(self._read(tail + _LEN.size, n))
            if not word & _MORE:
                out.append(part[0] if len(part) == 1 else b"".join(part))
                part.clear()
            tail += _LEN.size + n
        with self._lock:
            struct.pack_into("=Q", self._buf, 8, tail)
        return out

    def _write(self, pos: int, data: bytes) -> None:
        i = _HEAD.size + pos % self.cap
        first = min(len(data), _HEAD.size + self.cap - i)
        self._buf[i:i + first] = data[:first]
        if first < len(data):  # wraps round to the start of the data area
            self._buf[_HEAD.size:_HEAD.size + len(data) - first] = data[first:]

    def _read(self, pos: int, n: int) -> bytes:
        i = _HEAD.size + pos % self.cap
        first = min(n, _HEAD.size + self.cap - i)
        data = self._buf[i:i + first]
        if first < n:
            data += self._buf[_HEAD.size:_HEAD.size + n - first]
        return data
