"""The scheduler interface: model threads, primitive operations, drivers.

Model threads are coroutines; every primitive ``await``\\ s a step that yields
an :class:`Op` before it takes effect.  Drivers (``run_direct``,
``run_schedule``, the checker, the timed simulator) decide when each thread
takes its next step.  This package imports nothing else of pervma.
"""

from pervma.sched.ops import (
    Op,
    OpKind,
    WaitKind,
    acquire,
    block,
    read,
    release,
    rmw,
    step,
    work,
    write,
)
from pervma.sched.runner import Executor, ScheduleError, run_direct, run_schedule
from pervma.sched.task import (
    RunScope,
    Task,
    Violation,
    current,
    current_model,
    drain_touched,
    has_current,
    preempt_disable,
    preempt_enable,
    run_scope,
    run_scope_active,
    running_slot,
    touch,
    touch_read,
    touches_recorded,
    track_touches,
    violation,
)

__all__ = [
    "Executor",
    "Op",
    "OpKind",
    "RunScope",
    "ScheduleError",
    "Task",
    "Violation",
    "WaitKind",
    "acquire",
    "block",
    "current",
    "current_model",
    "drain_touched",
    "has_current",
    "preempt_disable",
    "preempt_enable",
    "read",
    "release",
    "rmw",
    "run_direct",
    "run_schedule",
    "run_scope",
    "run_scope_active",
    "running_slot",
    "step",
    "touch",
    "touch_read",
    "touches_recorded",
    "track_touches",
    "violation",
    "work",
    "write",
]
