"""pervma: an executable model of Linux's per-VMA locking.

The user-level API (ARCHITECTURE.md)::

    from pervma import Config, System, PAGE, PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    a = p.mmap(0, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(a, 42); assert p.load(a) == 42
"""

__version__ = "0.1.0"

from pervma.config import Config  # noqa: E402
from pervma.kernel.fault import SEGV_ACCERR, SEGV_MAPERR  # noqa: E402
from pervma.kernel.madvise import (  # noqa: E402
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_FREE,
    MADV_NORMAL,
    MADV_RANDOM,
    MADV_SEQUENTIAL,
    MADV_WILLNEED,
)
from pervma.kernel.mm_types import PAGE, PAGE_SIZE  # noqa: E402
from pervma.kernel.mmap import (  # noqa: E402
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)
from pervma.kernel.mremap import MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE  # noqa: E402
from pervma.kernel.system import Killed, Process, Segfault, System, Thread  # noqa: E402

__all__ = [
    "MADV_DODUMP", "MADV_DOFORK", "MADV_DONTDUMP", "MADV_DONTFORK", "MADV_DONTNEED", "MADV_FREE",
    "MADV_NORMAL", "MADV_RANDOM", "MADV_SEQUENTIAL", "MADV_WILLNEED", "MAP_ANONYMOUS", "MAP_FIXED",
    "MAP_FIXED_NOREPLACE", "MAP_GROWSDOWN", "MAP_NORESERVE", "MAP_POPULATE", "MAP_PRIVATE",
    "MAP_SHARED", "MREMAP_DONTUNMAP", "MREMAP_FIXED", "MREMAP_MAYMOVE", "PAGE", "PAGE_SIZE",
    "PROT_EXEC", "PROT_NONE", "PROT_READ", "PROT_WRITE", "SEGV_ACCERR", "SEGV_MAPERR", "Config",
    "Killed", "Process", "Segfault", "System", "Thread", "__version__",
]
