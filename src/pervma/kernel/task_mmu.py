"""/proc/pid/maps (fs/proc/task_mmu.c).

``show_map_vma`` formats one line exactly as the kernel does.  The reader
``proc_maps_read`` walks the VMAs the 6.17+ way: under RCU, taking each VMA's
read lock with lock_next_vma() (which falls back to mmap_lock when a writer
is active); with PER_VMA_LOCK off it is the pre-series reader under
mmap_read_lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pervma.kernel import debug
from pervma.kernel.mm_types import PAGE_SHIFT, VmFlags
from pervma.kernel.mmap_lock import (
    lock_next_vma,
    mmap_read_lock_killable,
    mmap_read_unlock,
    vma_end_read,
)
from pervma.kernel.rcu import rcu_read_lock, rcu_read_unlock
from pervma.sched import Op, OpKind

if TYPE_CHECKING:
    from pervma.kernel.mm_types import MmStruct, VmAreaStruct

_WIDTH = 25 + 8 * 6 - 1


def show_map_vma(vma: VmAreaStruct) -> str:
    """One /proc/pid/maps line (without the newline)."""
    mm = vma.vm_mm
    f = vma.vm_flags
    perms = (("r" if f & VmFlags.VM_READ else "-") + ("w" if f & VmFlags.VM_WRITE else "-")
             + ("x" if f & VmFlags.VM_EXEC else "-") + ("s" if f & VmFlags.VM_MAYSHARE else "p"))
    pgoff, dev, ino, name = 0, "00:00", 0, ""
    file = vma.vm_file
    if file is not None:
        pgoff = vma.vm_pgoff << PAGE_SHIFT
        dev, ino, name = file.dev, file.inode, file.path
    elif mm is not None and vma.vm_start <= mm.brk and vma.vm_end >= mm.start_brk:
        name = "[heap]"
    elif mm is not None and vma.vm_start <= mm.start_stack <= vma.vm_end:
        name = "[stack]"
    elif vma.anon_name is not None:
        name = f"[anon:{vma.anon_name}]"
    line = f"{vma.vm_start:08x}-{vma.vm_end:08x} {perms} {pgoff:08x} {dev} {ino} "
    if name:
        line = line.ljust(_WIDTH) + " " + name
    return line


def maps_text(mm: MmStruct) -> str:
    """The whole file for a quiescent mm (the synchronous API)."""
    return "".join(show_map_vma(v) + "\n" for v in mm.mm_mt.snapshot())


async def proc_maps_read(mm: MmStruct) -> list[str]:
    """Read /proc/pid/maps as a concurrent reader: lock_vma_range per VMA.
    The lines are checked against what was mapped during the read
    (debug.maps_read_begin/end)."""
    lines: list[str] = []
    log = debug.maps_read_begin(mm)
    ranges: list[tuple[int, int]] = []
    if not mm.config.PER_VMA_LOCK:
        if await mmap_read_lock_killable(mm):
            debug.maps_read_end(mm, log, ranges, complete=False)
            return lines
        addr = 0
        while True:
            vma = await mm.mm_mt.mas_find(addr, "m_next: find_vma")
            if vma is None:
                break
            lines.append(show_map_vma(vma))
            ranges.append((vma.vm_start, vma.vm_end))
            addr = vma.vm_end
        await mmap_read_unlock(mm)
        debug.maps_read_end(mm, log, ranges, complete=True)
        return lines
    addr = 0
    complete = True
    rcu_read_lock()
    while True:
        found = await lock_next_vma(mm, addr)
        if found is None or isinstance(found, int):
            complete = found is None
            break
        vma = found
        await Op(OpKind.READ, ("vma", vma.slot), "show_map_vma")
        debug.kasan_check(vma, "show_map_vma", "vm_area_struct")
        if vma.vm_mm is not mm:
            debug.report("BUG: /proc/pid/maps shows a VMA of another mm", f"{vma} of {vma.vm_mm}")
        lines.append(show_map_vma(vma))
        ranges.append((vma.vm_start, vma.vm_end))
        addr = vma.vm_end
        await vma_end_read(vma)
    rcu_read_unlock()
    debug.maps_read_end(mm, log, ranges, complete)
    return lines
