"""Checkpoints: an execution's whole state kept at a node of a search, so
that a new branch starts where it diverges instead of replaying its prefix.

A stateful or stateless DFS backtracks to a node and takes another thread
there.  Without checkpoints that means a fresh instance and every event of
the prefix taken again (issue #12: 63-90% of the model steps of a search were
such replays).  A :class:`Checkpoint` is the execution at the node -- the
model's objects, every thread's suspended coroutines (copied by
:mod:`pervma.sched._frames`), the executor's tasks and the engine's tables --
pickled with :mod:`pervma.check.template`'s rules; :meth:`Checkpoint.restore`
gives a live execution in that state, from which the search takes the new
branch.  Events are immutable once recorded and are shared, not copied; the
run-level scope and the config are shared too.

Checkpoints are an optimisation only: a restored execution is the same state
as a replayed one (``tests/check/test_checkpoint.py`` compares state keys,
schedules and whole searches with and without them), and where one cannot be
made (no ``_frames`` for this Python, or something in the state pickle cannot
copy) the search replays as before.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from pervma.check import template
from pervma.check.engine import Event, Execution

if TYPE_CHECKING:
    from pervma.check.search import Runner

#: A search node at a depth that is a multiple of this keeps a checkpoint
#: when it is first reached (so no replay is longer than this many events);
#: a node a search comes back to keeps one too (it has a second child).
EVERY = 8


def enabled() -> bool:
    """Checkpoints are on when coroutines can be copied here and
    ``PERVMA_CHECKPOINT=1`` (a pickled copy costs about what replaying 15
    events does: not yet a saving)."""
    return template.FRAMES and os.environ.get("PERVMA_CHECKPOINT", "") in ("1", "yes", "true")


class Checkpoint:
    """One execution's state, as bytes plus what every copy shares."""

    __slots__ = ("_data", "_nshared", "_sharing", "_events")

    def __init__(self, data: bytes, nshared: int, sharing: template.Sharing,
                 events: list[Event]) -> None:
        self._data = data
        self._nshared = nshared
        self._sharing = sharing
        self._events = events  # recorded events are never mutated: shared by the copies

    @classmethod
    def save(cls, run: Execution, sharing: template.Sharing) -> Checkpoint | None:
        """A checkpoint of ``run`` between two steps (None: it cannot be copied)."""
        events = run.events
        run.events = []
        try:
            data, n = sharing.dumps(run)
        except template.UNCOPYABLE:
            return None
        finally:
            run.events = events
        return cls(data, n, sharing, list(events))

    @property
    def depth(self) -> int:
        """How many events the execution had taken."""
        return len(self._events)

    def restore(self) -> Execution:
        """A live execution in the saved state (each call a new copy)."""
        run = self._sharing.loads(self._data, self._nshared)
        assert isinstance(run, Execution)
        run.events = list(self._events)
        return run


class Node(Protocol):
    """What :func:`restart` needs of a node of a search's DFS stack."""

    chosen: int
    event: Event | None
    ckpt: Checkpoint | None


def restart(runner: Runner, stack: Sequence[Node], ckpts: bool) -> Execution:
    """An execution at the top node of ``stack`` that has taken the top
    node's (new) choice: from the deepest node with a checkpoint, or from a
    fresh instance, taking the recorded events of the nodes in between again
    (:meth:`Execution.retake`).  With ``ckpts`` the top node keeps a
    checkpoint of its state: the search came back to it for a second child,
    and may again."""
    base = 0
    run: Execution | None = None
    if ckpts:
        for j in range(len(stack) - 1, -1, -1):
            ck = stack[j].ckpt
            if ck is not None:
                run = runner.resume(ck)
                base = j
                break
    if run is None:
        run = runner.execution()
    top = len(stack) - 1
    for i in range(base, len(stack)):
        node = stack[i]
        if i == top and ckpts and node.ckpt is None:
            node.ckpt = runner.save(run)
        ev = node.event
        node.event = run.take(node.chosen) if ev is None or ev.tid != node.chosen \
            else run.retake(ev)
    return run
