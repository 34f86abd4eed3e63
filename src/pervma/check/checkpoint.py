"""Checkpoints: an execution's whole state kept at a node of a search, so
that a new branch starts where it diverges instead of replaying its prefix.

A stateful or stateless DFS backtracks to a node and takes another thread
there.  Without checkpoints that means a fresh instance and every event of
the prefix taken again (issue #12: 63-90% of the model steps of a search were
such replays).  A :class:`Checkpoint` is a copy of the execution at the
node -- the model's objects, every thread's suspended coroutines with their
frames, the executor's tasks and the engine's tables -- made by the copier
of :mod:`pervma.check.template` and never run; :meth:`Checkpoint.restore`
copies it again into a live execution, from which the search takes the new
branch.  Events are immutable once recorded and are shared, not copied; the
run-level scope and the config are shared too.

A copy costs about what replaying five to ten events does (spin-2f-m, C
copier: 20-30 us for an execution of ~700 objects), so the stateful search
keeps one at every :data:`EVERY`-th depth of its DFS stack and replays at
most that many events from it.

Checkpoints are an optimisation only: a restored execution is the same state
as a replayed one (``tests/check/test_checkpoint.py`` compares state keys,
every later step and whole searches with and without them), and where one
cannot be made (no ``_frames`` for this Python, or something in the state
cannot be copied) the search replays as before.  ``PERVMA_NO_CHECKPOINT=1``
turns them off.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from pervma.check import template
from pervma.check.engine import Event, Execution

if TYPE_CHECKING:
    from pervma.check.search import Runner

#: A search node at a depth that is a positive multiple of this keeps a
#: checkpoint when it is first reached, so no replay is longer than this many
#: events.  Measured on spin-2f-m (bench/checkpoint_bench.py): 8-12 are
#: best; every node, or also the nodes a search comes back to, copy more
#: than the replays they save.
EVERY = 10


def enabled() -> bool:
    """Checkpoints are on when coroutines can be copied here, unless
    ``PERVMA_NO_CHECKPOINT=1``."""
    return template.FRAMES and os.environ.get("PERVMA_NO_CHECKPOINT", "") not in (
        "1", "yes", "true")


class Checkpoint:
    """One execution's state: a copy of it that never runs, copied again for
    every restore."""

    __slots__ = ("_snap", "_sharing", "_events", "_owned")

    def __init__(self, snap: template.Frozen, sharing: template.Sharing,
                 events: list[Event], owned: list[object] | None = None) -> None:
        self._snap: template.Frozen | None = snap
        self._sharing = sharing
        self._events = events  # recorded events are never mutated: shared by the copies
        self._owned = owned  # the instances of the snapshot, for drop()

    @classmethod
    def save(cls, run: Execution, sharing: template.Sharing) -> Checkpoint | None:
        """A checkpoint of ``run`` between two steps (None: it cannot be copied)."""
        events, owned = run.events, run.owned
        run.events, run.owned = [], None
        mine: list[object] = []
        try:
            snap, coros = sharing.copy(run, mine)
        except template.UNCOPYABLE:
            return None
        finally:
            run.events, run.owned = events, owned
        return cls(template.Frozen(snap, coros), sharing, list(events), mine)

    def drop(self) -> None:
        """The search will restore this checkpoint no more: break its
        snapshot up (:func:`pervma.check.template.drop`) and let it go."""
        owned = self._owned
        self._snap = self._owned = None
        if owned:
            template.drop(owned)

    @property
    def depth(self) -> int:
        """How many events the execution had taken."""
        return len(self._events)

    def restore(self) -> Execution:
        """A live execution in the saved state (each call a new copy; the
        instances it made are in its ``owned``, for :meth:`Execution.drop`)."""
        assert self._snap is not None, "a dropped checkpoint"
        owned: list[object] = []
        run = self._snap.copy(self._sharing, owned)[0]
        assert isinstance(run, Execution)
        run.events = list(self._events)
        run.owned = owned
        return run


class CkptNode(Protocol):
    """What :func:`deepest` needs of a node of a search's DFS stack."""

    ckpt: Checkpoint | None


class Node(CkptNode, Protocol):
    """What :func:`restart` needs of a node of a search's DFS stack."""

    chosen: int
    event: Event | None


CN = TypeVar("CN", bound=CkptNode)


def pop(stack: list[CN]) -> CN:
    """Pop the top node of a search's DFS stack, done with for good: its
    checkpoint, if any, is broken up (:meth:`Checkpoint.drop`)."""
    node = stack.pop()
    if node.ckpt is not None:
        node.ckpt.drop()
        node.ckpt = None
    return node


def deepest(runner: Runner, stack: Sequence[CkptNode], ckpts: bool) -> tuple[Execution, int]:
    """A live execution from the deepest node of ``stack`` with a checkpoint
    (``ckpts``), or a fresh instance, and the index of that node (0): the
    nodes from there on have their events still to take."""
    if ckpts:
        for j in range(len(stack) - 1, -1, -1):
            ck = stack[j].ckpt
            if ck is not None:
                return runner.resume(ck), j
    return runner.execution(), 0


def restart(runner: Runner, stack: Sequence[Node], ckpts: bool) -> Execution:
    """An execution at the top node of ``stack`` that has taken the top
    node's (new) choice: from :func:`deepest`, taking the recorded events of
    the nodes in between again (:meth:`Execution.retake`)."""
    run, base = deepest(runner, stack, ckpts)
    for i in range(base, len(stack)):
        node = stack[i]
        ev = node.event
        node.event = run.take(node.chosen) if ev is None or ev.tid != node.chosen \
            else run.retake(ev)
    return run
