"""Build configuration that pyproject.toml cannot state: the optional C
extensions pervma.sched._statekey (state keys ~10x faster) and
pervma.sched._frames (copies of suspended coroutines: the checker's checkpoints).  Without a C
compiler the install still succeeds and pervma uses the pure-Python keys."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pervma.sched._statekey",
            sources=["src/pervma/sched/_statekey.c"],
            optional=True,
        ),
        Extension(  # checkpoints of executions (CPython 3.11 only; else prefixes are replayed)
            "pervma.sched._frames",
            sources=["src/pervma/sched/_frames.c"],
            optional=True,
        ),
    ]
)
