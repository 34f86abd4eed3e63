"""Build configuration that pyproject.toml cannot state: the optional C
extension pervma.sched._statekey (state keys ~10x faster).  Without a C
compiler the install still succeeds and pervma uses the pure-Python keys."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pervma.sched._statekey",
            sources=["src/pervma/sched/_statekey.c"],
            optional=True,
        )
    ]
)
