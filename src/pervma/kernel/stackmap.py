"""The BPF stack map's user-stack build-ID lookup (kernel/bpf/stackmap.c).

A BPF program asking for a user stack with BPF_F_USER_BUILD_ID turns each
instruction pointer into (build ID, file offset) by looking up the VMA that
covers it in ``current->mm``.  It runs in the context of whatever the task
was doing — possibly holding mmap_lock already — so it must never block on
mmap_lock: on contention it gives up and reports the raw IP.

Followed: kernel/bpf/stackmap.c as seen in a bpf-next tree newer than 7.0
(the sleepable path, stack_map_get_build_id_offset_sleepable(), with
stack_map_lock_vma()/stack_map_unlock_vma()).  7.0 itself has only the
non-sleepable path: mmap_read_trylock() for the whole walk (released through
irq_work), no per-VMA lock.  The model's files carry no ELF note, so the
"build ID" of a file-backed VMA is the file's inode number (a stand-in); an
anonymous VMA, or a lookup that fails, gives the IP back
(BPF_STACK_BUILD_ID_IP).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pervma.kernel.mm_types import PAGE_SHIFT
from pervma.kernel.mmap_lock import (
    lock_vma_under_rcu,
    mmap_read_trylock,
    mmap_read_unlock,
    vma_end_read,
    vma_start_read_locked,
)
from pervma.kernel.sites import call_site
from pervma.sched.locations import VMA
from pervma.sched.order import Order

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

BPF_STACK_BUILD_ID_EMPTY, BPF_STACK_BUILD_ID_VALID, BPF_STACK_BUILD_ID_IP = 0, 1, 2


@call_site("kernel/bpf/stackmap.c:stack_map_lock_vma", pre_form="ifdef",
           pre_series="lock_vma_under_rcu() (a NULL stub without PER_VMA_LOCK), else "
           "mmap_read_trylock + vma_lookup; #ifdef CONFIG_PER_VMA_LOCK vma_start_read_locked and "
           "drop mmap_lock, #else keep mmap_lock until stack_map_unlock_vma(); never blocks",
           series="the per-VMA branch in every config (no #ifdef): the VMA read-locked either way",
           scenarios=("stackmap-build-id-vs-mprotect-split", "stackmap-build-id-vs-munmap",
                      "stackmap-build-id-vs-mremap"),
           version="bpf-next (newer than 7.0)",
           note="7.0 has no per-VMA form: stack_map_get_build_id_offset() holds "
           "mmap_read_trylock() for the whole stack; build IDs are inode numbers in the model")
async def stack_map_lock_vma(mm: MmStruct, ip: int) -> VmAreaStruct | None:
    """Models stack_map_lock_vma(): the VMA covering ``ip``, read-locked, or
    None with nothing held.  lock_vma_under_rcu() first; then only
    mmap_read_trylock() (the BPF program's task may hold mmap_lock already:
    waiting for it could deadlock) and vma_lookup(); with per-VMA locks the
    VMA is read-locked under mmap_lock and mmap_lock dropped, without them
    mmap_lock stays held until stack_map_unlock_vma()."""
    vma = await lock_vma_under_rcu(mm, ip)
    if vma is not None:
        return vma
    if not await mmap_read_trylock(mm):
        return None
    vma = mm.mm_mt.find_covering(ip)  # vma_lookup()
    if vma is None:
        await mmap_read_unlock(mm)
        return None
    if mm.config.PER_VMA_LOCK:
        if not await vma_start_read_locked(vma):
            await mmap_read_unlock(mm)
            return None
        await mmap_read_unlock(mm)
    return vma


async def stack_map_unlock_vma(mm: MmStruct, vma: VmAreaStruct) -> None:
    if mm.config.PER_VMA_LOCK:
        await vma_end_read(vma)
    else:
        await mmap_read_unlock(mm)


def stack_map_build_id_offset(vm_pgoff: int, vm_start: int, ip: int) -> int:
    return (vm_pgoff << PAGE_SHIFT) + ip - vm_start


async def stack_map_get_build_id_offset_sleepable(mm: MmStruct, ips: list[int]
                                                  ) -> list[tuple[int, int, int]]:
    """Models stack_map_get_build_id_offset_sleepable(): per IP,
    (BPF_STACK_BUILD_ID_VALID, build ID, file offset) or
    (BPF_STACK_BUILD_ID_IP, 0, ip).  The VMA's fields are read under its
    lock and the lock dropped before the (here: free) build-ID parse; the
    kernel's one-entry cache of the last VMA is left out (it only saves
    lookups)."""
    out: list[tuple[int, int, int]] = []
    for ip in ips:
        vma = await stack_map_lock_vma(mm, ip)
        if vma is None:
            out.append((BPF_STACK_BUILD_ID_IP, 0, ip))
            continue
        await vma.read_step(VMA, "stack_map: vm_pgoff, vm_start, vm_file", None, Order.PLAIN)
        vm_pgoff, vm_start, file = vma.vm_pgoff, vma.vm_start, vma.vm_file
        anonymous = vma.is_anonymous() or file is None
        await stack_map_unlock_vma(mm, vma)
        if anonymous or file is None:
            out.append((BPF_STACK_BUILD_ID_IP, 0, ip))
            continue
        out.append((BPF_STACK_BUILD_ID_VALID, file.inode, stack_map_build_id_offset(vm_pgoff, vm_start, ip)))
    return out
