"""Symmetry reduction: interchangeable threads make one state, not n! states.

A scenario may declare groups of threads that run the same code in the same
process and that nothing but their names tells apart (``World.thread(...,
group=...)``; the SPIN shapes' fault threads).  Two states that differ only by
a permutation of the threads of a group have the same future up to that
permutation: the same violations (with the threads' names exchanged), the same
final states.  The stateful search (:mod:`pervma.check.stateful`) stores one
of them and stops at the others -- SPIN's symmetry reduction (Ip and Dill,
"Better verification through symmetry", 1996; Bošnački, Dams and Holenderski,
"Symmetric Spin", 2002), with the canonical representative chosen the way
they call *sorted*: the threads of a group are put in the order of a signature
of their own state (their frames' positions), and the state key is computed
with the threads walked in that order.

What makes the key blind to which thread is which:

* a task's pid, thread-group id and name are labels, hidden from the key
  (:class:`pervma.kernel.task.TaskIdent`); task_structs are numbered by the
  order the key walks the threads in;
* sets of tasks the model keeps in pid order only to iterate them
  deterministically (an rwsem's readers, RCU's readers, a grace period's
  readers: :class:`pervma.kernel.task.TaskSet`) are walked as sets, and so are
  the results of finished threads;
* a world's and a process's thread lists are bookkeeping, fixed once the
  scenario is built, and hidden.

The choice of representative needs no soundness argument of its own: a
signature that ties (two threads at the same positions) only means two
permutations of one state may get two keys, a merge missed, never a wrong
one.  Equal keys, with each state's threads walked in its own order, mean the
states are the same up to the permutation mapping one order to the other; the
search uses that permutation to carry a stored state's sleep set and summary
(thread ids, and the signal locations that name a task) into the
current execution (:func:`mapping`, :func:`map_accesses`).

Where a group's threads are not interchangeable after all, the key still tells
apart what differs in their state; what a group declaration asserts is that
nothing outside their state (their names) changes what they do.  The
scenario's ``World.thread`` checks that a group's threads share their body
function and process.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pervma.sched import statekey
from pervma.sched.locations import SIGNAL
from pervma.sched.statekey import state_key
from pervma.sched.task import Task

# A permutation of thread ids: perm[t] is what thread t maps to (None: the
# identity, the common case, kept out of every loop).
Perm = tuple[int, ...] | None


def _py_signature(task: Task) -> tuple[Any, ...]:
    """A thread's own position: finished or not, its preempt count, and its
    chain of suspended frames (function and offset), deterministic across
    processes (names, not addresses)."""
    chain: list[Any] = [task.done, task.preempt_count]
    c: Any = task.coro
    while c is not None:
        if type(c) is types.CoroutineType:
            f, sub = c.cr_frame, c.cr_await
        elif type(c) is types.GeneratorType:
            f, sub = c.gi_frame, c.gi_yieldfrom
        else:
            break  # the pending Op: the chain ends
        if f is None:
            break
        chain.append(f.f_code.co_qualname)
        chain.append(f.f_lasti)
        c = sub
    return tuple(chain)


_signature: Callable[[Task], tuple[Any, ...]] = (
    _py_signature if statekey.IMPLEMENTATION != "c" else statekey._c.signature)  # type: ignore[union-attr]


def canonical(tasks: Sequence[Task], groups: Iterable[tuple[int, ...]]) -> tuple[int, Perm]:
    """The state key of ``tasks`` with each group's threads walked in the
    order of their signatures (ties by thread id), and that order: ``order[k]``
    is the thread walked in place ``k`` (None when it is the identity)."""
    order: list[int] | None = None
    for g in groups:
        members = sorted(g, key=lambda t: (_signature(tasks[t]), t))
        if list(members) != list(g):
            if order is None:
                order = list(range(len(tasks)))
            for slot, tid in zip(g, members, strict=True):
                order[slot] = tid
    if order is None:
        return state_key(tasks), None
    return state_key([tasks[t] for t in order]), tuple(order)


def orbit_key(tasks: Sequence[Task], groups: Iterable[tuple[int, ...]]) -> int:
    """A key that every permutation of the state within its groups shares
    (the least key over all of them: k! walks for a group of k, for tests and
    the differential, not for the search)."""
    orders: list[list[int]] = [list(range(len(tasks)))]
    for g in groups:
        nxt = []
        for base in orders:
            for p in itertools.permutations(g):
                o = list(base)
                for slot, tid in zip(g, p, strict=True):
                    o[slot] = tid
                nxt.append(o)
        orders = nxt
    return min(state_key([tasks[t] for t in o]) for o in orders)


def mapping(src: Perm, dst: Perm, n: int) -> Perm:
    """The permutation taking the threads of a state walked in order ``src``
    to the threads of an equal-keyed state walked in order ``dst`` (the
    thread in place k of one is the thread in place k of the other)."""
    if src == dst:
        return None
    a = src if src is not None else tuple(range(n))
    b = dst if dst is not None else tuple(range(n))
    out = [0] * n
    for x, y in zip(a, b, strict=True):
        out[x] = y
    return tuple(out)


def compose(first: Perm, then: Perm) -> Perm:
    """``then`` after ``first``."""
    if first is None:
        return then
    if then is None:
        return first
    out = tuple(then[x] for x in first)
    return None if out == tuple(range(len(out))) else out


def inverse(p: Perm) -> Perm:
    if p is None:
        return None
    out = [0] * len(p)
    for x, y in enumerate(p):
        out[y] = x
    return tuple(out)


def map_accesses(accesses: Iterable[tuple[int, Any, bool]], perm: Perm,
                 idents: Sequence[Any]) -> set[tuple[int, Any, bool]]:
    """Accesses ``(thread, location, writes)`` with their threads permuted,
    and the signal location of a task (which names it) with them."""
    if perm is None:
        return set(accesses)
    names = {idents[t]: idents[perm[t]] for t in range(len(perm)) if idents[t] is not None}
    out = set()
    for t, loc, w in accesses:
        if type(loc) is tuple and len(loc) == 2 and loc[0] == SIGNAL and loc[1] in names:
            loc = (SIGNAL, names[loc[1]])
        out.add((perm[t], loc, w))
    return out


def task_idents(tasks: Sequence[Task]) -> tuple[Any, ...]:
    """What names each thread's task in a signal location (None for a thread
    without a task_struct)."""
    return tuple(getattr(t.model, "ident", None) for t in tasks)
