"""pervma.sched."""
