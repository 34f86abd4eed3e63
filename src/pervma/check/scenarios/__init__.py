"""The scenario library: importing this package registers every scenario.

``toys`` holds small programs written directly with ``sched`` primitives
(the checker's own oracles); ``kernel`` holds the per-VMA locking scenarios
over the model's user API (registered only once the model is importable); ``uffd`` the
userfaultfd and PROCMAP_QUERY scenarios; ``truncate`` ftruncate of a mapped file;
``mempolicy`` the mbind and mlock ones; ``madvise`` flag-changing and populating advice; ``mremap`` resizing in place and moving
onto a mapping;
``spin`` the SPIN shapes of issue #12, bench yardsticks kept out of ``--all``.
"""

import importlib.util

from pervma.check.scenarios import toys  # noqa: F401

if (importlib.util.find_spec("pervma.kernel.system") is not None
        and importlib.util.find_spec("pervma.check.scenarios.kernel") is not None):
    import pervma.check.scenarios.mmu_notifier  # noqa: F401  (issue #13 item 5)
    from pervma.check.scenarios import (  # noqa: F401
        kernel,
        madvise,
        mempolicy,
        mremap,
        spin,
        truncate,
        uffd,
    )
