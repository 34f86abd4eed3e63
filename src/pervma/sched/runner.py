"""The driver protocol and the two simplest drivers.

:class:`Executor` holds a set of model threads and advances one of them by one
step at a time; every driver (direct runner, scripted runner, checker, timed
simulator) is a policy for choosing the next thread.  It is deliberately
small: an event loop over coroutines, no strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

from pervma.sched.ops import Op
from pervma.sched.task import RunScope, Task, Violation, _ambient, _current, _touched


class ScheduleError(Exception):
    """A scripted schedule names a thread that cannot run at that step."""


class Executor:
    """Threads plus the single operation every driver uses: :meth:`step`.

    Each thread's next operation is always known (``task.pending``), so a
    driver can ask which threads are runnable and what they would do before
    choosing.  ``trace`` records ``(tid, op)`` of every executed step.
    """

    def __init__(
        self,
        bodies: Sequence[Coroutine[Any, Any, Any]],
        names: Sequence[str] | None = None,
        models: Sequence[Any] | None = None,
        record: bool = True,
        run: RunScope | None = None,
        memory: Any = None,
    ) -> None:
        self.tasks: list[Task] = []
        # The memory layer of an exploration under LKMM (sched/memory.py);
        # None: every read reads the latest write.
        self.memory = memory
        if memory is not None:
            memory.attach(len(bodies))
        self.trace: list[tuple[int, Op]] = []
        self.violation: Violation | None = None
        self.record = record
        for i, coro in enumerate(bodies):
            name = names[i] if names else f"T{i}"
            task = Task(i, name, coro, run=run)
            if models is not None:
                task.model = models[i]
            if memory is not None:
                task.extra["memory"] = memory
            self.tasks.append(task)
        try:
            for task in self.tasks:
                if self.violation is None:
                    self._advance(task)
        except BaseException:
            self.close()  # a Python error in a thread: the others do not outlive it
            raise

    def _advance(self, task: Task) -> None:
        _current.append(task)
        try:
            task.pending = task.coro.send(None)
        except StopIteration as stop:
            task.done, task.pending, task.result = True, None, stop.value
        except Violation as v:
            task.done, task.pending = True, None
            if self.violation is None:
                self.violation = v
        finally:
            _current.pop()

    # -- what drivers ask -------------------------------------------------
    def runnable(self) -> list[int]:
        if self.violation is not None:
            return []
        return [t.tid for t in self.tasks if t.runnable()]

    def finished(self) -> bool:
        return all(t.done for t in self.tasks)

    def deadlock(self) -> Violation | None:
        """All unfinished threads blocked: the deadlock violation, else None."""
        if self.violation is not None or self.finished() or self.runnable():
            return None
        waiting = ", ".join(
            f"{t.name} waits in {t.pending.label}" for t in self.tasks if not t.done and t.pending
        )
        return Violation("deadlock", f"every thread is blocked: {waiting}")

    # -- the one operation ------------------------------------------------
    def step(self, tid: int) -> Op:
        """Let thread ``tid`` take its pending step; returns that op."""
        task = self.tasks[tid]
        op = task.pending
        if op is None or task.done:
            raise ScheduleError(f"{task.name} has finished")
        if not op.is_enabled():
            raise ScheduleError(f"{task.name} is blocked in {op.label}")
        if self.record:
            self.trace.append((tid, op))
        task.steps += 1
        if _touched:
            _touched.clear()  # sched.touch() records only this step's hidden writes
        mem = self.memory
        try:
            if mem is None:
                self._advance(task)
            else:
                mem.before(tid, op)
                self._advance(task)
                mem.after(tid, op)
        except BaseException:
            # A Python error (not a Violation) left the thread: close the
            # others now, not when the garbage collector gets to them
            # (their unwinding would then run under whatever driver runs).
            self.close()
            raise
        return op

    def close(self) -> None:
        """Close unfinished coroutines (a cut-short exploration)."""
        for t in self.tasks:
            if not t.done:
                t.coro.close()
                t.done = True


def run_direct(coro: Coroutine[Any, Any, Any], model: Any = None, name: str = "T0",
               run: RunScope | None = None) -> Any:
    """The direct runner: run one thread to completion.

    A step that would block is an error (nothing else could ever wake it),
    reported as a deadlock violation.  Violations propagate to the caller.
    ``run`` defaults to the scope of an enclosing ``run_scope_active``.
    """
    if run is None and _ambient:
        run = _ambient[-1]
    task = Task(0, name, coro, model=model, run=run)
    _current.append(task)
    try:
        op = coro.send(None)
        while True:
            if op.enabled is not None and not op.enabled():
                coro.close()
                raise Violation("deadlock", f"{name} would block forever in {op.label}")
            op = coro.send(None)
            if _touched:
                _touched.clear()
    except StopIteration as stop:
        return stop.value
    finally:
        _current.pop()


def run_schedule(
    bodies: Sequence[Coroutine[Any, Any, Any]],
    order: Iterable[int],
    *,
    names: Sequence[str] | None = None,
    models: Sequence[Any] | None = None,
    after_step: Callable[[int, int, Op], None] | None = None,
    raise_violation: bool = True,
    run: RunScope | None = None,
) -> Executor:
    """The scripted runner: take the steps in ``order`` (thread indices), then
    finish the remaining threads, lowest index first.

    ``after_step(i, tid, op)`` is called after each step, so protocol tests
    can look at lock state between steps.  A violation is raised unless
    ``raise_violation`` is false (then it is on the returned executor).
    ``run`` is the run-level scope the threads share (see ``RunScope``).
    """
    if run is not None:
        run.executions += 1
    ex = Executor(bodies, names=names, models=models, run=run)
    i = 0
    for tid in order:
        if ex.violation is not None:
            break
        if tid not in ex.runnable():
            task = ex.tasks[tid]
            state = "finished" if task.done else f"blocked in {task.pending.label if task.pending else '?'}"
            ex.close()
            raise ScheduleError(f"step {i}: {task.name} cannot run ({state})")
        op = ex.step(tid)
        if after_step is not None:
            after_step(i, tid, op)
        i += 1
    while ex.violation is None and not ex.finished():
        ready = ex.runnable()
        if not ready:
            dl = ex.deadlock()
            ex.close()
            if dl is not None:
                ex.violation = dl
            break
        op = ex.step(ready[0])
        if after_step is not None:
            after_step(i, ready[0], op)
        i += 1
    if ex.violation is not None:
        ex.close()
        if raise_violation:
            raise ex.violation
    return ex
