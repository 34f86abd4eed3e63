"""The user-level API: System, Process, Thread (ARCHITECTURE.md).

``Thread`` methods are awaitables for drivers (``async def body(t)``);
``Process`` offers the same calls synchronously, run by the direct runner,
and checks validate_mm after each.  Errors raise ``OSError`` with the errno
Linux returns; a bad access raises :class:`Segfault`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pervma.config import Config
from pervma.errors import UsageError
from pervma.kernel import debug
from pervma.kernel.atomic import Atomic, Refcount, SeqCount
from pervma.kernel.binder import BinderAlloc, binder_vm_ops
from pervma.kernel.fault import handle_user_fault
from pervma.kernel.locks import RcuWait, RwSemaphore, SpinLock
from pervma.kernel.madvise import sys_madvise
from pervma.kernel.maple_tree import MapleNode, MapleTree
from pervma.kernel.mempolicy import MAX_NUMNODES, Mempolicy, sys_mbind
from pervma.kernel.mlock import sys_mlock, sys_munlock
from pervma.kernel.mm_types import (
    PAGE_SHIFT,
    PAGE_SIZE,
    AnonVma,
    File,
    MmStruct,
    Page,
    VmAreaStruct,
    VmFlags,
    VmOperations,
)
from pervma.kernel.mmap import dup_mmap, mmput, sys_brk, sys_mmap, sys_munmap
from pervma.kernel.mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from pervma.kernel.mmu_mirror import MmuMirror, mirror_access, mirror_fault
from pervma.kernel.mmu_notifier import mmu_notifier_register
from pervma.kernel.mprotect import sys_mprotect
from pervma.kernel.mremap import sys_mremap
from pervma.kernel.rcu import RcuState
from pervma.kernel.slab import KmemCache
from pervma.kernel.stackmap import stack_map_get_build_id_offset_sleepable
from pervma.kernel.syscalls import ULONG_MAX, c_int, c_ulong
from pervma.kernel.task import TaskIdent, TaskStruct, fatal_signal_pending, signal_loc
from pervma.kernel.task_mmu import (
    PATH_MAX,
    PROCMAP_QUERY_SIZE,
    clear_refs_write,
    do_procmap_query,
    maps_text,
    proc_maps_read,
)
from pervma.kernel.tcp import tcp_vm_ops
from pervma.kernel.truncate import do_sys_ftruncate
from pervma.kernel.userfaultfd import (
    O_NONBLOCK,
    UserfaultfdCtx,
    new_userfaultfd,
    userfaultfd_api,
    userfaultfd_copy,
    userfaultfd_ctx_read,
    userfaultfd_is_initialized,
    userfaultfd_move,
    userfaultfd_register,
    userfaultfd_release,
    userfaultfd_unregister,
    userfaultfd_wake,
    userfaultfd_writeprotect,
    userfaultfd_zeropage,
)
from pervma.kernel.util import (
    OVERCOMMIT_ALWAYS,
    OVERCOMMIT_GUESS,
    OVERCOMMIT_NEVER,
    security_vm_enough_memory_mm,
    vm_acct_memory,
)
from pervma.kernel.vma import vma_iter_store_new
from pervma.kernel.vma_init import vm_area_alloc
from pervma.kernel.vmstat import VMA_LOCK_EVENTS, VmEvents
from pervma.sched import Op, OpKind, current, has_current, run_direct, work
from pervma.sched.locations import (
    ANON_VMA,
    ANON_VMA_REFCOUNT,
    I_MMAP_RWSEM,
    INVALIDATE_LOCK,
    MM_ALL_LOCKS_MUTEX,
    MM_COUNT,
    MM_LOCK_SEQ,
    MM_USERS,
    MMAP_LOCK,
    PAGE_FRAME,
    PAGE_TABLE_LOCK,
    PTE,
    VM_REFCNT,
    VMA_WRITER_WAIT,
)
from pervma.sched.order import Order
from pervma.sched.task import OutsideDriver

_USER_STORE = (OpKind.WRITE, "user store")
_USER_LOAD = (OpKind.READ, "user load")
_ONCE = Order.ONCE

# A freshly exec'd x86_64 process with ASLR off.
STACK_TOP = 0x7FFFFFFFF000
STACK_SIZE = 132 * 1024
MMAP_BASE = 0x7FFFF7FFF000  # TASK_SIZE - 128 MiB gap (mmap_base() clamps the gap to 128 MiB)
START_BRK = 0x555555559000  # a PIE binary's break with ASLR off
# A small machine by default: 256 MiB of RAM per configured CPU, at least 1 GiB
# (1 GiB for the presets' 4 CPUs), no swap.  Per CPU so that the simulator's
# machine profiles (Config.nr_cpus = the machine's CPUs) can hold what their
# workloads map (mmtests pft: 256 MiB per thread).
MIN_MEM_PAGES = (1 << 30) >> PAGE_SHIFT
MEM_PAGES_PER_CPU = (256 << 20) >> PAGE_SHIFT


def default_mem_pages(config: Config) -> int:
    """The RAM of System(config) when mem_pages is not given."""
    return max(MIN_MEM_PAGES, MEM_PAGES_PER_CPU * config.nr_cpus)


class Segfault(Exception):  # noqa: N818 - a signal, named like one
    """SIGSEGV delivered to a user access: ``code`` is SEGV_MAPERR (1) or
    SEGV_ACCERR (2)."""

    def __init__(self, addr: int, code: int) -> None:
        name = {1: "SEGV_MAPERR", 2: "SEGV_ACCERR", 7: "SIGBUS", 12: "OOM"}.get(code, str(code))
        super().__init__(f"segfault at {addr:#x} ({name})")
        self.addr = addr
        self.code = code


class Killed(Exception):  # noqa: N818 - a signal, named like one
    """The thread died of a fatal signal."""


def _oserror(ret: int) -> int:
    if ret < 0:
        raise OSError(-ret, os.strerror(-ret))
    return ret


class System:
    """One machine: the caches, RCU, vmstat, the processes, and memory.

    ``mem_pages`` and ``swap_pages`` are the machine's RAM and swap in pages
    (default: default_mem_pages(config), 1 GiB for the presets; no swap); ``overcommit_memory`` is
    vm.overcommit_memory (0 = OVERCOMMIT_GUESS, the kernel's default: a single
    request larger than RAM + swap is refused with ENOMEM; 1 = always; 2 =
    never, with ``overcommit_ratio`` percent of RAM plus swap as the limit).
    A populate (MAP_POPULATE, MAP_LOCKED) stops when the free pages run out.
    ``nodes`` is the number of NUMA nodes (each page carries its node; the
    model's tasks run on node 0's CPUs)."""

    def __init__(self, config: Config | None = None, mem_pages: int | None = None,
                 swap_pages: int = 0, overcommit_memory: int = OVERCOMMIT_GUESS,
                 overcommit_ratio: int = 50, nodes: int = 1) -> None:
        self.config = config or Config.preset("universal")
        if mem_pages is None:
            mem_pages = default_mem_pages(self.config)
        for name, value in (("mem_pages", mem_pages), ("swap_pages", swap_pages),
                            ("overcommit_ratio", overcommit_ratio)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UsageError(f"System({name}={value!r}): need a whole number >= 0")
        if not isinstance(nodes, int) or isinstance(nodes, bool) or not 1 <= nodes <= MAX_NUMNODES:
            raise UsageError(f"System(nodes={nodes!r}): need a whole number of NUMA nodes, 1 to {MAX_NUMNODES}")
        self.nodes = nodes
        if mem_pages < 1:
            raise UsageError(f"System(mem_pages={mem_pages}): a machine needs at least one page")
        if overcommit_memory not in (OVERCOMMIT_GUESS, OVERCOMMIT_ALWAYS, OVERCOMMIT_NEVER):
            raise UsageError(f"System(overcommit_memory={overcommit_memory!r}): choose 0 (guess), "
                             "1 (always) or 2 (never)")
        self.mem_pages = mem_pages
        self.swap_pages = swap_pages
        self.overcommit_memory = overcommit_memory
        self.overcommit_ratio = overcommit_ratio
        # init_user_reserve() / init_admin_reserve(): 1/32 of memory, at most 128 MiB / 8 MiB.
        self.user_reserve_pages = min(mem_pages // 32, (128 << 20) >> PAGE_SHIFT)
        self.admin_reserve_pages = min(mem_pages // 32, (8 << 20) >> PAGE_SHIFT)
        self.vm_committed_as = 0  # pages charged by VM_ACCOUNT mappings (mm/util.c)
        self.vm_area_cachep: KmemCache[VmAreaStruct] = KmemCache(
            "vm_area_struct", lambda slot: VmAreaStruct(vm_refcnt=Refcount((VM_REFCNT, slot))),
            typesafe_by_rcu=True)
        self.maple_node_cachep: KmemCache[MapleNode] = KmemCache("maple_node", lambda s: MapleNode())
        self.mm_cachep: KmemCache[MmStruct] = KmemCache("mm_struct", self._new_mm)
        self.anon_vma_cachep: KmemCache[AnonVma] = KmemCache("anon_vma", _anon_vma, typesafe_by_rcu=True)
        self.page_cachep: KmemCache[Page] = KmemCache("page", Page, mem_map=True)  # Page(slot)
        self.file_cachep: KmemCache[File] = KmemCache("file", _new_file)
        self.policy_cachep: KmemCache[Mempolicy] = KmemCache("numa_policy", lambda s: Mempolicy())
        self.userfaultfd_ctx_cachep: KmemCache[UserfaultfdCtx] = KmemCache("userfaultfd_ctx_cache", lambda s: UserfaultfdCtx())
        self.rcu = RcuState(preempt=self.config.PREEMPT)
        self.vm_events = VmEvents()
        self.vm_ops_closed: list[str] = []
        self.fail_prealloc = False
        self.fail_avc_alloc = 0  # anon_vma_chain allocations to fail (rmap.py)
        self.mm_all_locks_mutex = RwSemaphore((MM_ALL_LOCKS_MUTEX,), "mm_all_locks_mutex")
        self.nr_mirrors = 0  # MmuMirror ids (Thread.mmu_notifier_register)
        self.processes: list[Process] = []
        self._next_pid = 1
        self._next_ino = 1000
        self.zero_page = self.page_cachep.alloc("ZERO_PAGE")
        self.zero_page.zero_page = True
        self.zero_page.refcount = 1
        self.filemap_ops = VmOperations("generic_file_vm_ops", has_map_pages=True)
        self.shmem_ops = VmOperations("shmem_vm_ops", has_map_pages=True)

    # -- objects -----------------------------------------------------------
    def _new_mm(self, slot: int) -> MmStruct:
        mm = MmStruct(
            id=slot, config=self.config, system=self,
            mm_users=Atomic((MM_USERS, slot), 1), mm_count=Refcount((MM_COUNT, slot), 1),
            mmap_lock=RwSemaphore((MMAP_LOCK, slot), "mmap_lock"),
            mm_lock_seq=SeqCount((MM_LOCK_SEQ, slot)),
            vma_writer_wait=RcuWait((VMA_WRITER_WAIT, slot)),
            page_table_lock=SpinLock((PAGE_TABLE_LOCK, slot), "page_table_lock"))
        mm.mm_mt = MapleTree(slot, self.maple_node_cachep)
        mm.mm_mt.set_external_lock(mm.mmap_lock)
        return mm

    def mm_alloc(self) -> MmStruct:
        mm = self.mm_cachep.alloc("mm_alloc")
        mm.mmap_base, mm.start_brk, mm.brk = MMAP_BASE, START_BRK, START_BRK
        mm.start_stack = STACK_TOP - 0x1000
        return mm

    def free_mm(self, mm: MmStruct, site: str) -> None:
        self.mm_cachep.free(mm, site)

    def create_file(self, path: str, npages: int, resident: bool = False) -> File:
        """A regular file of npages pages whose contents must be read in (I/O).
        ``resident``: the file was written earlier and all of it is still in
        the page cache (a lookup always hits; no page is allocated or read)."""
        f = self.file_cachep.alloc("create_file")
        f.path, f.npages, f.inode, f.dev, f.shmem, f.vm_ops = path, npages, self._ino(), "08:01", False, self.filemap_ops
        f.i_size = npages << PAGE_SHIFT
        f.resident = resident
        return f

    def create_device(self, kind: str) -> File:
        """A character device whose mmap() installs a driver's vm_ops: ``"binder"``
        (binder_vm_ops) or ``"tcp"`` (a TCP socket's tcp_vm_ops)."""
        ops = {"binder": binder_vm_ops, "tcp": tcp_vm_ops}.get(kind)
        if ops is None:
            raise ValueError(f"unknown device kind {kind!r}; choose binder or tcp")
        f = self.file_cachep.alloc("create_device")
        f.path = "/dev/binder" if kind == "binder" else "socket:[tcp]"
        f.npages, f.inode, f.dev, f.shmem, f.vm_ops = 1 << 20, self._ino(), "00:0c", False, ops
        f.i_size = f.npages << PAGE_SHIFT
        return f

    def shmem_zero_setup(self, length: int) -> File:
        f = self.file_cachep.alloc("shmem_zero_setup")
        f.path, f.npages, f.inode, f.dev, f.shmem, f.vm_ops = (
            "/dev/zero (deleted)", length >> PAGE_SHIFT, self._ino(), "00:01", True, self.shmem_ops)
        f.i_size = f.npages << PAGE_SHIFT
        return f

    def hugetlb_file_setup(self, length: int, shift: int) -> File:
        """The hugetlbfs file behind an anonymous MAP_HUGETLB mapping.  The
        model's machine has no huge pages: mapping it fails (-ENOMEM) unless
        MAP_NORESERVE, which the model does not implement."""
        f = self.file_cachep.alloc("hugetlb_file_setup")
        f.path, f.npages, f.inode, f.dev, f.shmem = ("/anon_hugepage (deleted)", length >> PAGE_SHIFT,
                                                     self._ino(), "00:11", False)
        f.hugetlb_shift, f.vm_ops = shift, None
        f.i_size = f.npages << PAGE_SHIFT
        return f

    def _ino(self) -> int:
        self._next_ino += 1
        return self._next_ino

    def all_vmas(self) -> list[VmAreaStruct]:
        return [v for p in self.processes if not p.mm.freed for v in p.mm.mm_mt.snapshot()]

    def new_task(self, mm: MmStruct | None, comm: str, tgid: int | None = None) -> TaskStruct:
        pid = self._next_pid
        self._next_pid += 1
        return TaskStruct(TaskIdent(pid, tgid or pid, comm), mm=mm, system=self)

    # -- the user API ------------------------------------------------------
    def spawn(self, name: str = "proc") -> Process:
        """A new process laid out like a fresh exec (stack VMA, mmap_base, brk)."""
        mm = self.mm_alloc()
        proc = Process(self, mm, name)
        run_direct(proc.main._guard(_setup_new_exec(mm)), model=proc.main.task)
        return proc

    def truncate(self, file: File, length: int) -> None:
        """ftruncate(2) of ``file`` to ``length`` bytes, from a task of its
        own (kernel/truncate.py): every mapping loses the pages beyond the
        new end, and an access there raises Segfault with the SIGBUS code.
        OSError with Linux's errno (EINVAL, EFBIG) before anything changes."""
        if not isinstance(file, File):
            raise UsageError(f"truncate(file={file!r}): need a File (System.create_file())")
        if not isinstance(length, int) or isinstance(length, bool):
            raise UsageError(f"truncate(length={length!r}): need a whole number of bytes")
        task = self.new_task(None, "truncate")
        _oserror(run_direct(do_sys_ftruncate(file, length), model=task))
        debug.check_no_locks_held(task, "ftruncate")

    def vmstat(self) -> dict[str, int]:
        """Counters with /proc/vmstat names; the VMA_LOCK_* ones exist only with
        CONFIG_PER_VMA_LOCK_STATS, as in the kernel."""
        out = dict(self.vm_events.counts)
        if self.config.PER_VMA_LOCK_STATS:
            for e in VMA_LOCK_EVENTS:
                out.setdefault(e, 0)
        else:
            for e in VMA_LOCK_EVENTS:
                out.pop(e, None)
        return out


def _new_file(slot: int) -> File:
    """A file object with its own i_mmap_rwsem and invalidate_lock locations."""
    return File(i_mmap_rwsem=RwSemaphore((I_MMAP_RWSEM, slot), "i_mmap_rwsem"),
                invalidate_lock=RwSemaphore((INVALIDATE_LOCK, slot), "invalidate_lock"))


def _anon_vma(slot: int) -> AnonVma:
    """anon_vma_ctor(): the lock and the refcount, once per object."""
    return AnonVma(refcount=Atomic((ANON_VMA_REFCOUNT, slot)),
                   rwsem=RwSemaphore((ANON_VMA, slot), "anon_vma"))


async def _setup_new_exec(mm: MmStruct) -> None:
    """setup_arg_pages(): the stack VMA at the top."""
    await mmap_write_lock(mm)
    vma = vm_area_alloc(mm, "setup_arg_pages")
    vma.vm_start, vma.vm_end = STACK_TOP - STACK_SIZE, STACK_TOP
    vma.vm_pgoff = vma.vm_start >> PAGE_SHIFT
    vma.vm_flags = (VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_MAYREAD | VmFlags.VM_MAYWRITE
                    | VmFlags.VM_MAYEXEC | VmFlags.VM_GROWSDOWN | VmFlags.VM_ACCOUNT)
    if security_vm_enough_memory_mm(mm, vma.pages()):  # insert_vm_struct()
        await mmap_write_unlock(mm)
        raise UsageError(f"System(mem_pages={mm.system.mem_pages}): too small for a process's stack")
    await vma_start_write(vma)
    await vma_iter_store_new(mm, vma)
    mm.map_count += 1
    mm.total_vm += STACK_SIZE >> PAGE_SHIFT
    await mmap_write_unlock(mm)


class Thread:
    """A thread of a process: every method is an awaitable for drivers."""

    def __init__(self, process: Process, task: TaskStruct) -> None:
        self.process = process
        self.task = task

    @property
    def exited(self) -> bool:
        """Whether this thread went through exit() (kept in its task_struct:
        a Thread holds no state of its own)."""
        return self.task.exited

    @property
    def mm(self) -> MmStruct:
        return self.process.mm

    def start(self, body: Callable[[Thread], Awaitable[Any]]) -> Coroutine[Any, Any, Any]:
        """The coroutine a driver runs for ``body(self)``: it installs this
        thread's task_struct as the driver thread's model state."""
        return self._guard(body(self))

    async def _guard(self, aw: Awaitable[Any]) -> Any:
        current().model = self.task
        try:
            ret = await aw
        except Killed as k:
            ret = k
        except OutsideDriver:
            if has_current():
                raise
            # A thread a driver dropped unfinished, closed with no driver
            # running: by the garbage collector, or by a driver's explicit
            # close (check.engine.close_executor, which would ignore the
            # error anyway).  Its unwinding cannot run model code.
            return None
        debug.debug_check_no_locks_held(self.task)  # do_exit()
        return ret

    async def _syscall_exit(self, where: str) -> None:
        debug.check_no_locks_held(self.task, where)
        if fatal_signal_pending(self.task):
            raise Killed(f"{self.task.comm} killed in {where}")

    # -- syscalls -------------------------------------------------------------
    async def mmap(self, addr: int, length: int, prot: int, flags: int, file: File | None = None,
                   offset: int = 0) -> int:
        ret = await sys_mmap(self.mm, addr, length, prot, flags, file, offset)
        await self._syscall_exit("mmap")
        return _oserror(ret)

    async def munmap(self, addr: int, length: int) -> int:
        ret = await sys_munmap(self.mm, addr, length)
        await self._syscall_exit("munmap")
        return _oserror(ret)

    async def mprotect(self, addr: int, length: int, prot: int) -> int:
        ret = await sys_mprotect(self.mm, addr, length, prot)
        await self._syscall_exit("mprotect")
        return _oserror(ret)

    async def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0,
                     new_addr: int = 0) -> int:
        ret = await sys_mremap(self.mm, old_addr, old_len, new_len, flags, new_addr)
        await self._syscall_exit("mremap")
        return _oserror(ret)

    async def madvise(self, addr: int, length: int, advice: int) -> int:
        ret = await sys_madvise(self.mm, addr, length, advice)
        await self._syscall_exit("madvise")
        return _oserror(ret)

    async def brk(self, addr: int) -> int:
        ret = await sys_brk(self.mm, addr)
        await self._syscall_exit("brk")
        return _oserror(ret)

    async def mbind(self, addr: int, length: int, mode: int, nodemask: int = 0, flags: int = 0) -> int:
        """mbind(2) with the node bitmap as an int (maxnode covers its bits)."""
        if not isinstance(nodemask, int) or nodemask < 0:
            raise UsageError(f"mbind: nodemask={nodemask!r}: need a node bitmask >= 0")
        ret = await sys_mbind(self.mm, addr, length, mode, nodemask, nodemask.bit_length() + 1, flags)
        await self._syscall_exit("mbind")
        return _oserror(ret)

    async def mlock(self, addr: int, length: int) -> int:
        ret = await sys_mlock(self.mm, addr, length)
        await self._syscall_exit("mlock")
        return _oserror(ret)

    async def munlock(self, addr: int, length: int) -> int:
        ret = await sys_munlock(self.mm, addr, length)
        await self._syscall_exit("munlock")
        return _oserror(ret)

    async def fork(self) -> Process:
        await work("syscall")
        sysm = self.process.system
        child_mm = sysm.mm_alloc()
        child = Process(sysm, child_mm, self.process.name + "-child", register=False)
        ret = await dup_mmap(child_mm, self.mm)
        if ret or fatal_signal_pending(self.task):
            # copy_process() fails after copy_mm() (dup_mm() after a failed dup_mmap(),
            # bad_fork_cleanup_mm on a fatal signal): mmput() tears the child down.
            if ret:  # the model's dup_mmap() uncharged what exit_mmap() uncharges
                vm_acct_memory(sysm, sum(v.pages() for v in child_mm.mm_mt.snapshot()
                                         if v.vm_flags & VmFlags.VM_ACCOUNT))
            await mmput(child_mm)
        await self._syscall_exit("fork")
        if ret:
            raise OSError(-ret, os.strerror(-ret))
        sysm.processes.append(child)
        return child

    async def exit(self) -> None:
        """exit_mm(): drop this thread's reference to the mm."""
        if self.task.exited:
            return
        self.task.exited = True
        await mmput(self.mm)
        debug.check_no_locks_held(self.task, "exit")

    async def kill(self) -> None:
        """Send this thread a fatal signal (a shared write: killable waits see it)."""
        await Op(OpKind.WRITE, signal_loc(self.task), f"SIGKILL {self.task.comm}", order=Order.RELEASE)
        self.task.fatal_signal = True

    async def binder_mmap(self, npages: int) -> BinderAlloc:
        """mmap a binder buffer (VM_DONTCOPY | VM_MIXEDMAP, read-only) and
        return its binder_alloc, for the binder-like kernel callers."""
        dev = self.process.system.create_device("binder")
        addr = await self.mmap(0, npages * PAGE_SIZE, 0x1, 0x02, dev, 0)
        return BinderAlloc(self.mm, addr, npages)

    async def tcp_mmap(self, npages: int) -> int:
        """mmap a TCP socket's receive area (for tcp_zerocopy_receive)."""
        dev = self.process.system.create_device("tcp")
        return await self.mmap(0, npages * PAGE_SIZE, 0x1, 0x01, dev, 0)

    async def truncate(self, file: File, length: int) -> int:
        """ftruncate(2) from this thread: 0, or OSError with Linux's errno."""
        ret = await do_sys_ftruncate(file, length)
        await self._syscall_exit("ftruncate")
        return _oserror(ret)

    async def read_maps(self) -> str:
        """Read /proc/pid/maps of this thread's process concurrently."""
        lines = await proc_maps_read(self.mm)
        return "".join(line + "\n" for line in lines)

    async def userfaultfd(self, flags: int = 0) -> AsyncUserfaultfd:
        """userfaultfd(2): a new context on this thread's mm (kernel/userfaultfd.py)."""
        ret = await new_userfaultfd(self.mm, c_int(flags) & ULONG_MAX)
        await self._syscall_exit("userfaultfd")
        if isinstance(ret, int):
            _oserror(ret)
        assert not isinstance(ret, int)
        return AsyncUserfaultfd(ret, self)

    async def procmap_query(self, addr: int, flags: int = 0, size: int = PROCMAP_QUERY_SIZE,
                            vma_name_size: int = PATH_MAX, build_id_size: int = 0) -> dict[str, Any]:
        """ioctl(PROCMAP_QUERY) on this process's /proc/pid/maps: the fields of
        struct procmap_query (plus ``vma_name``); OSError(ENOENT) if no VMA."""
        ret = await do_procmap_query(self.mm, c_ulong(size), c_ulong(flags), c_ulong(addr),
                                     vma_name_size & 0xFFFFFFFF, build_id_size & 0xFFFFFFFF)
        await self._syscall_exit("procmap_query")
        if isinstance(ret, int):
            _oserror(ret)
        assert isinstance(ret, dict)
        return ret

    async def mmu_notifier_register(self) -> AsyncMmuMirror:
        """A secondary MMU mirroring this thread's mm (kernel/mmu_mirror.py),
        subscribed with mmu_notifier_register(): OSError(EINTR) when a fatal
        signal interrupts mm_take_all_locks()."""
        sysm = self.process.system
        mirror = MmuMirror(sysm.nr_mirrors)
        sysm.nr_mirrors += 1
        ret = await mmu_notifier_register(mirror, self.mm)
        await self._syscall_exit("mmu_notifier_register")
        _oserror(ret)
        return AsyncMmuMirror(mirror, self)

    async def bpf_stack_build_id(self, ips: list[int]) -> list[tuple[int, int, int]]:
        """A BPF program in this thread's context asking for its user stack
        with BPF_F_USER_BUILD_ID (kernel/stackmap.py): per IP
        (BPF_STACK_BUILD_ID_VALID, build ID, file offset) or
        (BPF_STACK_BUILD_ID_IP, 0, ip); never blocks on mmap_lock."""
        out = await stack_map_get_build_id_offset_sleepable(self.mm, [ip & ULONG_MAX for ip in ips])
        debug.check_no_locks_held(self.task, "bpf_get_stack")
        return out

    async def clear_refs(self, value: int | str) -> int:
        """write(2) of ``value`` to this process's /proc/pid/clear_refs: the
        bytes written (1-4 clear the modelled bits, 5 the RSS high-water mark)."""
        ret = await clear_refs_write(self.mm, str(value))
        await self._syscall_exit("clear_refs")
        return _oserror(ret)

    async def user(self, label: str = "user work") -> None:
        """Time spent in user space between two calls (a cost for the simulator)."""
        await work("user", label)

    # -- user memory accesses --------------------------------------------------
    async def _access(self, addr: int, write: bool, value: int = 0) -> int | None:
        """A user load or store: the access itself is a step (in user mode);
        a missing or read-only PTE traps into the page-fault handler and the
        access is retried.  A store returns None, a load the byte."""
        mm = self.process.mm
        pgtable = mm.pgtable
        vpn = addr >> PAGE_SHIFT
        off = addr & (PAGE_SIZE - 1)
        loc = (PTE, mm.id, vpn)
        kind, label = (_USER_STORE if write else _USER_LOAD)
        while True:
            pte = pgtable.get(vpn)
            # the MMU's walk of the PTE and the machine access: single-copy atomic, unordered
            await Op(kind, loc, label, None, None, False,
                     (PAGE_FRAME, pte.page.pfn) if pte is not None else None, True, _ONCE)
            pte = pgtable.get(vpn)
            if pte is not None and pte.readable and (pte.writable or not write):
                page = pte.page
                if page.freed:  # KASAN's check inline, its report out of line
                    debug.kasan_check(page, "user access", "page")
                if not write:
                    return page.data.get(off, 0)
                if page.zero_page:
                    debug.report("BUG: write to the zero page", f"{addr:#x} in {mm}")
                page.data[off] = value & 0xFF
                pte.dirty = True
                if mm.fork_log:  # a fork is being checked (debug.fork_snapshot_begin)
                    debug.record_store(mm, addr, value & 0xFF)
                return None
            code = await handle_user_fault(mm, addr, write)
            debug.check_no_locks_held(self.task, "page fault")
            if fatal_signal_pending(self.task):
                raise Killed(f"{self.task.comm} killed in a page fault")
            if code:
                raise Segfault(addr, code)

    def store(self, addr: int, byte: int) -> Coroutine[Any, Any, int | None]:
        """A one-byte user store; the address is a C pointer (modulo 2**64:
        a negative one is a kernel address, SEGV_MAPERR)."""
        return self._access(addr & ULONG_MAX, True, byte)

    async def load(self, addr: int) -> int:
        byte = await self._access(addr & ULONG_MAX, False)
        assert byte is not None
        return byte


class ThreadList(list["Thread"]):
    """A process's threads, in the order they were made: the direct API's
    bookkeeping (``Process.exit``), not state.  It only grows while a
    scenario is built, and a :class:`Thread` holds no state of its own (its
    task_struct does), so the state key leaves it out
    (``__statekey_hidden__``): threads that run the same code are then
    interchangeable (:mod:`pervma.check.symmetry`)."""

    __slots__ = ()
    __statekey_hidden__ = True


class Process:
    """A process: the synchronous form of the API (direct runner)."""

    def __init__(self, system: System, mm: MmStruct, name: str = "proc", register: bool = True) -> None:
        self.system = system
        self.mm = mm
        self.name = name
        task = system.new_task(mm, name)
        self.pid = task.pid
        self.main = Thread(self, task)
        self.threads = ThreadList([self.main])
        if register:
            system.processes.append(self)

    def thread(self) -> Thread:
        """Another thread sharing this mm (CLONE_VM takes an mm_users reference)."""
        task = self.system.new_task(self.mm, f"{self.name}-t{len(self.threads)}", tgid=self.pid)
        self.mm.mm_users.counter += 1
        t = Thread(self, task)
        self.threads.append(t)
        return t

    def _run(self, aw: Awaitable[Any], validate: bool = True) -> Any:
        result = run_direct(self.main._guard(aw), model=self.main.task)
        if isinstance(result, Killed):
            raise result
        if validate and self.system.config.DEBUG_VM and not self.mm.freed:
            debug.validate_mm(self.mm)
        return result

    def mmap(self, addr: int, length: int, prot: int, flags: int, file: File | None = None,
             offset: int = 0) -> int:
        return int(self._run(self.main.mmap(addr, length, prot, flags, file, offset)))

    def munmap(self, addr: int, length: int) -> int:
        return int(self._run(self.main.munmap(addr, length)))

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        return int(self._run(self.main.mprotect(addr, length, prot)))

    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int = 0, new_addr: int = 0) -> int:
        return int(self._run(self.main.mremap(old_addr, old_len, new_len, flags, new_addr)))

    def madvise(self, addr: int, length: int, advice: int) -> int:
        return int(self._run(self.main.madvise(addr, length, advice)))

    def brk(self, addr: int) -> int:
        return int(self._run(self.main.brk(addr)))

    def mbind(self, addr: int, length: int, mode: int, nodemask: int = 0, flags: int = 0) -> int:
        return int(self._run(self.main.mbind(addr, length, mode, nodemask, flags)))

    def mlock(self, addr: int, length: int) -> int:
        return int(self._run(self.main.mlock(addr, length)))

    def munlock(self, addr: int, length: int) -> int:
        return int(self._run(self.main.munlock(addr, length)))

    def fork(self) -> Process:
        child = self._run(self.main.fork())
        assert isinstance(child, Process)
        if self.system.config.DEBUG_VM:
            debug.validate_mm(child.mm)
        return child

    def exit(self) -> None:
        for t in self.threads:
            if not t.exited:
                self._run_thread(t, t.exit())

    def _run_thread(self, t: Thread, aw: Awaitable[Any]) -> Any:
        return run_direct(t._guard(aw), model=t.task)

    def store(self, addr: int, byte: int) -> None:
        self._run(self.main.store(addr, byte))

    def load(self, addr: int) -> int:
        return int(self._run(self.main.load(addr)))

    def maps(self) -> str:
        return maps_text(self.mm)

    def bpf_stack_build_id(self, ips: list[int]) -> list[tuple[int, int, int]]:
        return list(self._run(self.main.bpf_stack_build_id(ips)))

    def clear_refs(self, value: int | str) -> int:
        return int(self._run(self.main.clear_refs(value)))

    def userfaultfd(self, flags: int = 0) -> Userfaultfd:
        u = self._run(self.main.userfaultfd(flags))
        return Userfaultfd(u.ctx, self)

    def procmap_query(self, addr: int, flags: int = 0, size: int = PROCMAP_QUERY_SIZE,
                      vma_name_size: int = PATH_MAX, build_id_size: int = 0) -> dict[str, Any]:
        return dict(self._run(self.main.procmap_query(addr, flags, size, vma_name_size, build_id_size)))

    def mmu_notifier_register(self) -> MmuMirrorHandle:
        m = self._run(self.main.mmu_notifier_register())
        return MmuMirrorHandle(m.mirror, self)


class AsyncMmuMirror:
    """A secondary MMU (kernel/mmu_mirror.py) used by one thread of the mm it
    mirrors: ``fault`` copies a PTE into the mirror's table, ``load`` and
    ``store`` access memory through it (faulting on a miss).  A bad address
    is OSError(EFAULT), as get_user_pages() gives."""

    def __init__(self, mirror: MmuMirror, thread: Thread) -> None:
        self.mirror = mirror
        self.thread = thread

    def on(self, thread: Thread) -> AsyncMmuMirror:
        if thread.mm is not self.mirror.mm:
            raise UsageError(f"{self.mirror} mirrors {self.mirror.mm}, not {thread.mm}: use it from "
                             "a thread of the process that registered it")
        return AsyncMmuMirror(self.mirror, thread)

    async def _call(self, what: str, ret: int) -> int:
        await self.thread._syscall_exit(f"mirror {what}")
        return _oserror(ret)

    async def fault(self, addr: int, write: bool = False) -> int:
        return await self._call("fault", await mirror_fault(self.mirror, addr & ULONG_MAX, write))

    async def load(self, addr: int) -> int:
        return await self._call("load", await mirror_access(self.mirror, addr & ULONG_MAX, False))

    async def store(self, addr: int, byte: int) -> None:
        await self._call("store", await mirror_access(self.mirror, addr & ULONG_MAX, True, byte))

    def entries(self) -> dict[int, tuple[int, bool]]:
        """The mirror's table: address -> (pfn, writable)."""
        return {vpn << PAGE_SHIFT: (page.pfn, w) for vpn, (page, w) in sorted(self.mirror.spte.items())}


class MmuMirrorHandle(AsyncMmuMirror):
    """The synchronous form (each call runs on the process's main thread);
    ``on(t)`` gives the awaitable form for a thread of the process."""

    def __init__(self, mirror: MmuMirror, process: Process) -> None:
        super().__init__(mirror, process.main)
        self.process = process

    def fault(self, addr: int, write: bool = False) -> int:  # type: ignore[override]
        return int(self.process._run(AsyncMmuMirror(self.mirror, self.process.main).fault(addr, write)))

    def load(self, addr: int) -> int:  # type: ignore[override]
        return int(self.process._run(AsyncMmuMirror(self.mirror, self.process.main).load(addr)))

    def store(self, addr: int, byte: int) -> None:  # type: ignore[override]
        self.process._run(AsyncMmuMirror(self.mirror, self.process.main).store(addr, byte))


def _uffd_result(ret: int, count: int) -> int:
    """A fill ioctl's result: the byte count, or OSError (a short fill is
    EAGAIN with the count done in ``err.count``)."""
    if ret < 0:
        err = OSError(-ret, os.strerror(-ret))
        err.count = count  # type: ignore[attr-defined]
        raise err
    return count


class AsyncUserfaultfd:
    """A userfaultfd file descriptor used by one thread: every method is an
    awaitable ioctl (or read/close) and raises OSError with the kernel's errno.
    ``on(t)`` is the same descriptor used by another thread."""

    def __init__(self, ctx: UserfaultfdCtx, thread: Thread) -> None:
        self.ctx = ctx
        self.thread = thread

    def on(self, thread: Thread) -> AsyncUserfaultfd:
        return AsyncUserfaultfd(self.ctx, thread)

    async def _ioctl(self, name: str, aw: Coroutine[Any, Any, Any]) -> Any:
        if name != "api" and not userfaultfd_is_initialized(self.ctx):
            aw.close()
            ret: Any = -errno.EINVAL  # only UFFDIO_API (and close) before UFFDIO_API
        else:
            ret = await aw
        await self.thread._syscall_exit(f"userfaultfd {name}")
        return ret

    async def api(self, features: int = 0, api: int = 0xAA) -> dict[str, int]:
        ret, feats, ioctls = await self._ioctl("api", userfaultfd_api(self.ctx, c_ulong(api), c_ulong(features)))
        _oserror(ret)
        return {"api": c_ulong(api) if not ret else 0, "features": feats, "ioctls": ioctls}

    async def register(self, start: int, length: int, mode: int) -> int:
        return _oserror(await self._ioctl("register", userfaultfd_register(
            self.ctx, c_ulong(start), c_ulong(length), c_ulong(mode))))

    async def unregister(self, start: int, length: int) -> int:
        return _oserror(await self._ioctl("unregister", userfaultfd_unregister(
            self.ctx, c_ulong(start), c_ulong(length))))

    async def copy(self, dst: int, src: int, length: int, mode: int = 0) -> int:
        r = await self._ioctl("copy", userfaultfd_copy(self.ctx, c_ulong(dst), c_ulong(src),
                                                       c_ulong(length), c_ulong(mode)))
        return _uffd_result(*(r if isinstance(r, tuple) else (r, 0)))

    async def zeropage(self, start: int, length: int, mode: int = 0) -> int:
        r = await self._ioctl("zeropage", userfaultfd_zeropage(self.ctx, c_ulong(start),
                                                               c_ulong(length), c_ulong(mode)))
        return _uffd_result(*(r if isinstance(r, tuple) else (r, 0)))

    async def move(self, dst: int, src: int, length: int, mode: int = 0) -> int:
        r = await self._ioctl("move", userfaultfd_move(self.ctx, c_ulong(dst), c_ulong(src),
                                                       c_ulong(length), c_ulong(mode)))
        return _uffd_result(*(r if isinstance(r, tuple) else (r, 0)))

    async def writeprotect(self, start: int, length: int, mode: int) -> int:
        """UFFDIO_WRITEPROTECT: mode UFFDIO_WRITEPROTECT_MODE_WP (1) protects,
        0 resolves and wakes (DONTWAKE, 2: resolves only); returns 0."""
        return _oserror(await self._ioctl("writeprotect", userfaultfd_writeprotect(
            self.ctx, c_ulong(start), c_ulong(length), c_ulong(mode))))

    async def wake(self, start: int, length: int) -> int:
        """UFFDIO_WAKE: wake the faults waiting in the range; returns 0."""
        return _oserror(await self._ioctl("wake", userfaultfd_wake(self.ctx, c_ulong(start), c_ulong(length))))

    async def read(self) -> dict[str, int]:
        """read(2) of one struct uffd_msg (blocks unless the fd is O_NONBLOCK)."""
        ret = await self._ioctl("read", userfaultfd_ctx_read(self.ctx, bool(self.ctx.flags & O_NONBLOCK)))
        if isinstance(ret, int):
            _oserror(ret)
        assert isinstance(ret, dict)
        return ret

    async def close(self) -> None:
        """close(2) of the last descriptor: userfaultfd_release()."""
        await userfaultfd_release(self.ctx)
        await self.thread._syscall_exit("userfaultfd close")


class Userfaultfd:
    """A userfaultfd file descriptor of a process, the synchronous API (each
    call runs on the process's main thread).  ``on(t)`` gives the awaitable
    form for a thread (a scenario's manager)."""

    def __init__(self, ctx: UserfaultfdCtx, process: Process) -> None:
        self.ctx = ctx
        self.process = process

    def on(self, thread: Thread) -> AsyncUserfaultfd:
        return AsyncUserfaultfd(self.ctx, thread)

    def _run(self, name: str, *args: Any) -> Any:
        p = self.process
        return p._run(getattr(self.on(p.main), name)(*args))

    def api(self, features: int = 0, api: int = 0xAA) -> dict[str, int]:
        return dict(self._run("api", features, api))

    def register(self, start: int, length: int, mode: int) -> int:
        return int(self._run("register", start, length, mode))

    def unregister(self, start: int, length: int) -> int:
        return int(self._run("unregister", start, length))

    def copy(self, dst: int, src: int, length: int, mode: int = 0) -> int:
        return int(self._run("copy", dst, src, length, mode))

    def zeropage(self, start: int, length: int, mode: int = 0) -> int:
        return int(self._run("zeropage", start, length, mode))

    def move(self, dst: int, src: int, length: int, mode: int = 0) -> int:
        return int(self._run("move", dst, src, length, mode))

    def writeprotect(self, start: int, length: int, mode: int) -> int:
        return int(self._run("writeprotect", start, length, mode))

    def wake(self, start: int, length: int) -> int:
        return int(self._run("wake", start, length))

    def read(self) -> dict[str, int]:
        return dict(self._run("read"))

    def close(self) -> None:
        self._run("close")


__all__ = ["AsyncMmuMirror", "AsyncUserfaultfd", "Killed", "MmuMirrorHandle", "Process", "Segfault", "System",
           "Thread", "Userfaultfd"]
