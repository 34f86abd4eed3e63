"""pervma: an executable model of Linux's per-VMA locking.

The user-level API (ARCHITECTURE.md)::

    from pervma import Config, System, PAGE, PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS
    kern = System(Config.preset("universal"))
    p = kern.spawn()
    a = p.mmap(0, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(a, 42); assert p.load(a) == 42

The names are loaded on first use (PEP 562), so ``import pervma`` (and the
``pervma`` command's start-up, e.g. ``pervma --version``) does not import the
model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"


def lazy_getattr(package: str, names: Mapping[str, str],
                 namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A package's PEP 562 ``__getattr__``: ``names`` maps each public name to
    the module that defines it, imported on first use and then cached in the
    package's ``namespace`` (pervma, pervma.check and pervma.report use it so
    that building the command's parser imports no engine)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__

if TYPE_CHECKING:
    from pervma.config import Config
    from pervma.kernel.fault import SEGV_ACCERR, SEGV_MAPERR
    from pervma.kernel.madvise import (
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
    from pervma.kernel.mm_types import PAGE, PAGE_SIZE
    from pervma.kernel.mmap import (
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
    from pervma.kernel.mremap import MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE
    from pervma.kernel.system import (
        AsyncUserfaultfd,
        Killed,
        Process,
        Segfault,
        System,
        Thread,
        Userfaultfd,
    )

# userfaultfd and PROCMAP_QUERY constants (Linux's values).
_UFFD_NAMES = (
    "UFFDIO_API", "UFFDIO_CONTINUE", "UFFDIO_COPY", "UFFDIO_COPY_MODE_DONTWAKE",
    "UFFDIO_COPY_MODE_WP", "UFFDIO_MOVE", "UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES", "UFFDIO_MOVE_MODE_DONTWAKE",
    "UFFDIO_POISON", "UFFDIO_REGISTER", "UFFDIO_REGISTER_MODE_MINOR", "UFFDIO_REGISTER_MODE_MISSING",
    "UFFDIO_REGISTER_MODE_WP", "UFFDIO_UNREGISTER", "UFFDIO_WAKE", "UFFDIO_WRITEPROTECT",
    "UFFDIO_WRITEPROTECT_MODE_DONTWAKE", "UFFDIO_WRITEPROTECT_MODE_WP",
    "UFFDIO_ZEROPAGE", "UFFDIO_ZEROPAGE_MODE_DONTWAKE", "UFFD_API", "UFFD_API_FEATURES",
    "UFFD_API_IOCTLS", "UFFD_API_RANGE_IOCTLS", "UFFD_API_REGISTER_MODES", "UFFD_EVENT_FORK",
    "UFFD_EVENT_PAGEFAULT", "UFFD_EVENT_REMAP", "UFFD_EVENT_REMOVE", "UFFD_EVENT_UNMAP",
    "UFFD_FEATURE_EVENT_FORK", "UFFD_FEATURE_EVENT_REMAP", "UFFD_FEATURE_EVENT_REMOVE", "UFFD_FEATURE_EVENT_UNMAP",
    "UFFD_FEATURE_EXACT_ADDRESS", "UFFD_FEATURE_INITIALIZED", "UFFD_FEATURE_MINOR_HUGETLBFS", "UFFD_FEATURE_MINOR_SHMEM",
    "UFFD_FEATURE_MISSING_HUGETLBFS", "UFFD_FEATURE_MISSING_SHMEM", "UFFD_FEATURE_MOVE", "UFFD_FEATURE_PAGEFAULT_FLAG_WP",
    "UFFD_FEATURE_POISON", "UFFD_FEATURE_SIGBUS", "UFFD_FEATURE_THREAD_ID", "UFFD_FEATURE_WP_ASYNC",
    "UFFD_FEATURE_WP_HUGETLBFS_SHMEM", "UFFD_FEATURE_WP_UNPOPULATED", "UFFD_PAGEFAULT_FLAG_MINOR", "UFFD_PAGEFAULT_FLAG_WP",
    "UFFD_PAGEFAULT_FLAG_WRITE", "UFFD_SHARED_FCNTL_FLAGS", "UFFD_USER_MODE_ONLY",
)
_PROCMAP_NAMES = (
    "PROCMAP_QUERY", "PROCMAP_QUERY_COVERING_OR_NEXT_VMA", "PROCMAP_QUERY_FILE_BACKED_VMA", "PROCMAP_QUERY_SIZE",
    "PROCMAP_QUERY_VALID_FLAGS_MASK", "PROCMAP_QUERY_VMA_EXECUTABLE", "PROCMAP_QUERY_VMA_FLAGS", "PROCMAP_QUERY_VMA_READABLE",
    "PROCMAP_QUERY_VMA_SHARED", "PROCMAP_QUERY_VMA_WRITABLE",
)

# Each public name and the module that defines it.
_LAZY: dict[str, str] = {
    "Config": "pervma.config",
    **dict.fromkeys(("SEGV_ACCERR", "SEGV_MAPERR"), "pervma.kernel.fault"),
    **dict.fromkeys(("MADV_DODUMP", "MADV_DOFORK", "MADV_DONTDUMP", "MADV_DONTFORK",
                     "MADV_DONTNEED", "MADV_FREE", "MADV_NORMAL", "MADV_RANDOM",
                     "MADV_SEQUENTIAL", "MADV_WILLNEED"), "pervma.kernel.madvise"),
    **dict.fromkeys(("PAGE", "PAGE_SIZE"), "pervma.kernel.mm_types"),
    **dict.fromkeys(("MAP_ANONYMOUS", "MAP_FIXED", "MAP_FIXED_NOREPLACE", "MAP_GROWSDOWN",
                     "MAP_NORESERVE", "MAP_POPULATE", "MAP_PRIVATE", "MAP_SHARED", "PROT_EXEC",
                     "PROT_NONE", "PROT_READ", "PROT_WRITE"), "pervma.kernel.mmap"),
    **dict.fromkeys(("MREMAP_DONTUNMAP", "MREMAP_FIXED", "MREMAP_MAYMOVE"),
                    "pervma.kernel.mremap"),
    **dict.fromkeys(("AsyncUserfaultfd", "Killed", "Process", "Segfault", "System", "Thread",
                     "Userfaultfd"), "pervma.kernel.system"),
    **dict.fromkeys(_PROCMAP_NAMES, "pervma.kernel.task_mmu"),
    **dict.fromkeys(_UFFD_NAMES, "pervma.kernel.userfaultfd"),
}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "MADV_DODUMP", "MADV_DOFORK", "MADV_DONTDUMP", "MADV_DONTFORK", "MADV_DONTNEED", "MADV_FREE",
    "MADV_NORMAL", "MADV_RANDOM", "MADV_SEQUENTIAL", "MADV_WILLNEED", "MAP_ANONYMOUS", "MAP_FIXED",
    "MAP_FIXED_NOREPLACE", "MAP_GROWSDOWN", "MAP_NORESERVE", "MAP_POPULATE", "MAP_PRIVATE",
    "MAP_SHARED", "MREMAP_DONTUNMAP", "MREMAP_FIXED", "MREMAP_MAYMOVE", "PAGE", "PAGE_SIZE",
    "PROT_EXEC", "PROT_NONE", "PROT_READ", "PROT_WRITE", "SEGV_ACCERR", "SEGV_MAPERR", "Config",
    "Killed", "Process", "Segfault", "System", "Thread", "__version__",
    "AsyncUserfaultfd", "Userfaultfd", *_UFFD_NAMES, *_PROCMAP_NAMES,
]
