"""Build configuration that pyproject.toml cannot state: the optional C
extensions pervma.sched._statekey (state keys ~10x faster),
pervma.sched._frames (copies of suspended coroutines: the checker's checkpoints) and
pervma.check._races (the walk of the stateful search's summary races).  Without a C
compiler the install still succeeds and pervma uses the pure-Python keys and walk."""

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
        Extension(
            "pervma.check._races",
            sources=["src/pervma/check/_races.c"],
            optional=True,
        ),
    ]
)
