"""Overcommit accounting (mm/util.c, security/commoncap.c), as in 6.18/7.0.

Every mapping the kernel counts as a commitment of memory carries VM_ACCOUNT:
a private writable mapping without MAP_NORESERVE (accountable_mapping()), the
heap, the stack, and a private mapping mprotect() makes writable.  Its pages
are charged to ``vm_committed_as`` before it exists (vm_acct_memory) and
uncharged when it goes (munmap, exit) or stops being accounted (mprotect).
Whether a charge is allowed is __vm_enough_memory()'s policy:

- ``OVERCOMMIT_GUESS`` (the default, vm.overcommit_memory = 0): only a single
  request larger than all of RAM plus swap is refused;
- ``OVERCOMMIT_ALWAYS`` (1): nothing is refused;
- ``OVERCOMMIT_NEVER`` (2): the running total may not reach the commit limit,
  RAM * overcommit_ratio / 100 + swap, less the admin reserve (the model's
  tasks are unprivileged) and, per process, min(total_vm / 32, user reserve).

The counter is plain state of the System, not a modelled shared location (the
kernel's is a per-CPU counter whose accuracy nothing here depends on), so
charging adds no step for a driver to schedule.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct

OVERCOMMIT_GUESS, OVERCOMMIT_ALWAYS, OVERCOMMIT_NEVER = 0, 1, 2


def vm_acct_memory(system: Any, pages: int) -> None:
    system.vm_committed_as += pages


def vm_unacct_memory(system: Any, pages: int) -> None:
    system.vm_committed_as -= pages


def vm_commit_limit(system: Any) -> int:
    """Models vm_commit_limit(): RAM * overcommit_ratio / 100 + swap, in pages."""
    s = system
    return int(s.mem_pages * s.overcommit_ratio // 100 + s.swap_pages)


def __vm_enough_memory(mm: MmStruct, pages: int, cap_sys_admin: bool) -> int:
    """Models __vm_enough_memory() (6.18): charge first, then refuse (and undo
    the charge) by the system's overcommit policy; 0 or -ENOMEM."""
    s = mm.system
    vm_acct_memory(s, pages)
    if s.overcommit_memory == OVERCOMMIT_ALWAYS:
        return 0
    if s.overcommit_memory == OVERCOMMIT_GUESS:
        if pages > s.mem_pages + s.swap_pages:
            vm_unacct_memory(s, pages)
            return -errno.ENOMEM
        return 0
    allowed = vm_commit_limit(s)
    if not cap_sys_admin:
        allowed -= s.admin_reserve_pages
    allowed -= min(mm.total_vm // 32, s.user_reserve_pages)
    if s.vm_committed_as < allowed:
        return 0
    vm_unacct_memory(s, pages)
    return -errno.ENOMEM


def security_vm_enough_memory_mm(mm: MmStruct, pages: int) -> int:
    """Models security_vm_enough_memory_mm() with the capability LSM alone
    (cap_vm_enough_memory): the model's tasks have no CAP_SYS_ADMIN."""
    return __vm_enough_memory(mm, pages, False)


__all__ = ["OVERCOMMIT_ALWAYS", "OVERCOMMIT_GUESS", "OVERCOMMIT_NEVER", "security_vm_enough_memory_mm",
           "vm_acct_memory", "vm_commit_limit", "vm_unacct_memory"]
