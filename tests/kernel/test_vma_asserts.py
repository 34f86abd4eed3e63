"""vma_assert_write_locked where Linux 7.0 asserts it, at every store into an
attached VMA's fields, and the mm_lock_seq discipline.

Each regression is a one-line edit of the model's 7.0 logic made here, in
the test (the function's source with one line moved or dropped, monkeypatched
in), driven through a real syscall, with the report's text asserted.  The
edit is checked to apply, so a reworded model fails the test instead of
silently testing nothing.  The whole scenario library staying clean with these
oracles on is tests/check/test_check_kernel.py's and the four-preset test
below.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import pervma.kernel
from pervma import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PAGE,
    PROT_READ,
    PROT_WRITE,
    Config,
    System,
)
from pervma.kernel import mmap as mmap_mod
from pervma.kernel import mmap_lock as mmap_lock_mod
from pervma.kernel import mprotect as mprotect_mod
from pervma.kernel import vma as vma_mod
from pervma.kernel.mm import vm_flags_clear, vm_flags_init, vm_flags_reset, vm_flags_set
from pervma.kernel.mm_types import VmFlags
from pervma.kernel.mmap_lock import mmap_write_lock, mmap_write_unlock
from pervma.sched import Violation, run_schedule

A = 0x10000000
KERNEL = Path(pervma.kernel.__file__).parent


def edited(module: ModuleType, name: str, *edits: tuple[str, str]) -> Callable[..., Any]:
    """``module.name`` recompiled in the module's globals with each ``(old,
    new)`` replacement applied; each ``old`` must occur exactly once."""
    src = inspect.getsource(getattr(module, name))
    for old, new in edits:
        assert src.count(old) == 1, f"the edit no longer applies to {name}: {old!r}"
        src = src.replace(old, new)
    src = "from __future__ import annotations\n" + src
    ns = dict(vars(module))
    exec(compile(src, str(module.__file__), "exec"), ns)
    return ns[name]  # type: ignore[no-any-return]


def process(preset: str = "universal", pages: int = 2):
    kern = System(Config.preset(preset))
    p = kern.spawn()
    assert p.mmap(A, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED) == A
    return kern, p


RW_FLAGS = (VmFlags.VM_READ | VmFlags.VM_WRITE | VmFlags.VM_MAYREAD | VmFlags.VM_MAYWRITE
            | VmFlags.VM_MAYEXEC | VmFlags.VM_ACCOUNT)


# -- vma_assert_write_locked at vm_flags_reset_once (mprotect) ----------------------

def test_mprotect_storing_flags_before_vma_start_write_is_caught_at_vm_flags_reset_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The 7.0 order passes: the whole VMA changes, no split or merge locks it
    # first, so mprotect_fixup()'s own vma_start_write() is what makes the
    # store legal.
    _, p = process()
    assert p.mprotect(A, 2 * PAGE, PROT_READ) == 0
    assert p.mm.mm_mt.find(A).vm_flags & VmFlags.VM_WRITE == 0

    # The edit: the flags are stored, then the VMA is write-locked.
    bad = edited(mprotect_mod, "mprotect_fixup",
                 ("    await vma_start_write(vma)\n"
                  "    await vma_write_fields(vma, \"vm_flags_reset_once\", Order.ONCE)\n"
                  "    vm_flags_reset_once(vma, newflags)\n",
                  "    await vma_write_fields(vma, \"vm_flags_reset_once\", Order.ONCE)\n"
                  "    vm_flags_reset_once(vma, newflags)\n"
                  "    await vma_start_write(vma)\n"))
    monkeypatch.setattr(mprotect_mod, "mprotect_fixup", bad)
    _, p = process()
    vma, mm = p.mm.mm_mt.find(A), p.mm
    with pytest.raises(Violation) as e:
        p.mprotect(A, 2 * PAGE, PROT_READ)
    # write sessions: exec 1-2, mmap 3-4 (stamped the VMA 3), mprotect 5
    assert (e.value.kind, e.value.message) == (
        "WARNING: vma_assert_write_locked",
        f"VM_WARN_ON_ONCE_VMA(!__is_vma_write_locked(vma)): {vma} mm {mm} refcnt 0x1 "
        f"vm_lock_seq 3 mm_lock_seq 5 flags {int(RW_FLAGS):#x}; "
        "call trace: vm_flags_reset_once <- mprotect_fixup <- _mprotect_locked <- do_mprotect_pkey")
    assert vma.vm_flags == RW_FLAGS  # the assertion fired before the store


# -- vma_assert_write_locked at vma_set_range (split) --------------------------------

def test_split_setting_vm_end_before_vma_start_write_is_caught_at_vma_set_range(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # mprotect of the first page splits the tail off: __split_vma() shrinks
    # the original VMA's vm_end.  The edit moves its vma_start_write() after
    # the range store.
    bad = edited(vma_mod, "__split_vma",
                 ("    await vma_start_write(vma)\n    await vma_start_write(new)\n",
                  "    await vma_start_write(new)\n"),
                 ("    await vma_mark_attached(new)\n",
                  "    await vma_start_write(vma)\n    await vma_mark_attached(new)\n"))
    monkeypatch.setattr(vma_mod, "__split_vma", bad)
    _, p = process()
    vma, mm = p.mm.mm_mt.find(A), p.mm
    with pytest.raises(Violation) as e:
        p.mprotect(A, PAGE, PROT_READ)
    assert (e.value.kind, e.value.message) == (
        "WARNING: vma_assert_write_locked",
        f"VM_WARN_ON_ONCE_VMA(!__is_vma_write_locked(vma)): {vma} mm {mm} refcnt 0x1 "
        f"vm_lock_seq 3 mm_lock_seq 5 flags {int(RW_FLAGS):#x}; "
        "call trace: check_attached_vma_store <- vma_set_range <- __split_vma <- split_vma")
    assert (vma.vm_start, vma.vm_end) == (A, A + 2 * PAGE)  # nothing stored


def test_the_unedited_split_passes_and_shrinks_the_vma() -> None:
    _, p = process()
    assert p.mprotect(A, PAGE, PROT_READ) == 0
    head, tail = p.mm.mm_mt.find(A), p.mm.mm_mt.find(A + PAGE)
    assert (head.vm_start, head.vm_end, tail.vm_start, tail.vm_end) == (A, A + PAGE, A + PAGE, A + 2 * PAGE)


# -- the vm_flags helpers -----------------------------------------------------------

def _in_write_session(p, body) -> Violation | None:
    """Run ``body(vma)`` in a thread of p holding mmap_lock for write."""
    t = p.thread()
    mm = p.mm

    async def run(_t):
        await mmap_write_lock(mm)
        await body(mm.mm_mt.find(A))
        await mmap_write_unlock(mm)

    try:
        run_schedule([t.start(run)], [], models=[t.task])
    except Violation as v:
        return v
    return None


@pytest.mark.parametrize("helper", [vm_flags_set, vm_flags_clear])
def test_vm_flags_set_and_clear_write_lock_the_vma_themselves(helper) -> None:
    _, p = process()
    seen = {}

    async def body(vma):
        await helper(vma, VmFlags.VM_NOHUGEPAGE)
        seen["locked"] = vma.vm_lock_seq == p.mm.mm_lock_seq.sequence
        seen["set"] = bool(vma.vm_flags & VmFlags.VM_NOHUGEPAGE)

    assert _in_write_session(p, body) is None
    assert seen == {"locked": True, "set": helper is vm_flags_set}


def test_vm_flags_reset_asserts_instead_of_locking() -> None:
    _, p = process()

    async def body(vma):
        vm_flags_reset(vma, RW_FLAGS | VmFlags.VM_NOHUGEPAGE)

    v = _in_write_session(p, body)
    assert v is not None and v.kind == "WARNING: vma_assert_write_locked"
    assert v.message.endswith("flags 0x100073; call trace: vm_flags_reset <- _guard")


def test_vm_flags_init_is_for_detached_vmas_only() -> None:
    _, p = process()

    async def body(vma):
        vm_flags_init(vma, RW_FLAGS)

    v = _in_write_session(p, body)
    assert v is not None and v.kind == "WARNING: vma_assert_write_locked"
    assert v.message.endswith("; call trace: check_attached_vma_store <- vm_flags_init <- _guard")


def test_without_per_vma_locks_the_assertion_is_mmap_assert_write_locked() -> None:
    _, p = process("legacy")
    t = p.thread()
    vma = p.mm.mm_mt.find(A)

    async def run(_t):
        vm_flags_reset(vma, RW_FLAGS)

    with pytest.raises(Violation) as e:
        run_schedule([t.start(run)], [], models=[t.task])
    assert (e.value.kind, e.value.message) == ("WARNING: mmap_assert_write_locked", f"{p.mm} mmap_lock not write-held")


# -- mm_lock_seq discipline ------------------------------------------------------------

def test_downgrade_that_skips_vma_end_write_all_leaves_mm_lock_seq_odd(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # munmap downgrades to read before zapping; without vma_end_write_all()
    # the sequence stays odd under a read lock (every VMA stamped in the
    # session would look write-locked to faults for ever).
    bad = edited(mmap_lock_mod, "mmap_write_downgrade", ("    await vma_end_write_all(mm)\n", ""))
    monkeypatch.setattr(mmap_lock_mod, "mmap_write_downgrade", bad)
    monkeypatch.setattr(vma_mod, "mmap_write_downgrade", bad)
    _, p = process()
    with pytest.raises(Violation) as e:
        p.munmap(A, PAGE)
    assert (e.value.kind, e.value.message) == (
        "WARNING: mm_lock_seq",
        f"{p.mm} mm_lock_seq 5 is odd in mmap_read_unlock() with mmap_lock not write-held: a write "
        "session was not ended by vma_end_write_all(); call trace: mmap_read_unlock <- "
        "vms_complete_munmap_vmas <- do_vmi_align_munmap <- do_vmi_munmap")


def test_write_lock_that_begins_the_sequence_before_down_write_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # fork write-locks the child mm with mmap_write_lock(); the edit swaps
    # the two lines, so the sequence goes odd before the rwsem is held.
    bad = edited(mmap_lock_mod, "mmap_write_lock",
                 ("    await mm.mmap_lock.down_write()\n    await mm_lock_seqcount_begin(mm)\n",
                  "    await mm_lock_seqcount_begin(mm)\n    await mm.mmap_lock.down_write()\n"))
    monkeypatch.setattr(mmap_mod, "mmap_write_lock", bad)
    _, p = process()
    with pytest.raises(Violation) as e:
        p.fork()
    child_mm = re.search(r"on (mm#\d+) without", e.value.message)
    assert child_mm is not None and child_mm.group(1) != str(p.mm)
    assert (e.value.kind, e.value.message) == (
        "WARNING: mm_lock_seq",
        f"mm_lock_seqcount_begin() on {child_mm.group(1)} without mmap_lock held for write "
        "(mm_lock_seq 0); it moves only inside mmap_write_lock/downgrade/unlock; "
        "call trace: mm_lock_seqcount_begin <- mmap_write_lock <- dup_mmap <- fork")


def test_write_lock_that_forgets_to_begin_the_sequence_is_caught_at_vma_start_write(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A killable write lock without mm_lock_seqcount_begin(): the writer holds
    # mmap_lock with an even sequence, so vma_start_write() would stamp a
    # value readers take for "unlocked".
    bad = edited(mmap_lock_mod, "mmap_write_lock_killable",
                 ("        await mm_lock_seqcount_begin(mm)\n", "        pass\n"))
    monkeypatch.setattr(mprotect_mod, "mmap_write_lock_killable", bad)
    _, p = process()
    with pytest.raises(Violation) as e:
        p.mprotect(A, PAGE, PROT_READ)
    assert (e.value.kind, e.value.message) == (
        "WARNING: mm_lock_seq",
        f"{p.mm} mmap_lock write-held but mm_lock_seq 4 is even: the write session was not begun by "
        "mm_lock_seqcount_begin(); call trace: __vma_raw_mm_seqnum <- __is_vma_write_locked <- "
        "vma_start_write <- __split_vma")


def test_ending_the_sequence_twice_is_caught_at_the_second_end(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = edited(mmap_lock_mod, "mmap_write_unlock",
                 ("    await vma_end_write_all(mm)\n",
                  "    await vma_end_write_all(mm)\n    await vma_end_write_all(mm)\n"))
    monkeypatch.setattr(mprotect_mod, "mmap_write_unlock", bad)
    _, p = process()
    with pytest.raises(Violation) as e:
        p.mprotect(A, PAGE, PROT_READ)
    assert (e.value.kind, e.value.message) == (
        "WARNING: mm_lock_seq",
        f"mm_lock_seqcount_end() on {p.mm} with mm_lock_seq 6 even: no write session to end; "
        "call trace: mm_lock_seqcount_end <- vma_end_write_all <- mmap_write_unlock <- do_mprotect_pkey")


def test_correct_sessions_move_the_sequence_by_two_each() -> None:
    _, p = process()  # exec and mmap: sessions 1-2, 3-4
    assert p.mm.mm_lock_seq.sequence == 4
    assert p.mprotect(A, PAGE, PROT_READ) == 0
    assert p.munmap(A, PAGE) == 0  # downgrades, then read-unlocks
    p.store(A + PAGE, 7)  # a fault: no write session
    assert (p.mm.mm_lock_seq.sequence, p.load(A + PAGE)) == (8, 7)


# -- the sources: every store and every move goes through the helpers -------------

FIELDS = {"vm_flags", "vm_start", "vm_end", "vm_pgoff", "anon_vma", "vm_file", "vm_policy"}

#: Functions allowed to store those fields directly, and why.
DIRECT_STORES: dict[tuple[str, str], str] = {
    ("mm.py", "vm_flags_init"): "the helper",
    ("mm.py", "vm_flags_reset"): "the helper",
    ("mm.py", "vm_flags_reset_once"): "the helper",
    ("mm.py", "vm_flags_set"): "the helper",
    ("mm.py", "vm_flags_clear"): "the helper",
    ("vma.py", "vma_set_range"): "the helper",
    ("vma.py", "dup_anon_vma"): "asserts vma_assert_write_locked(dst) itself, as 7.0 does",
    ("vma_init.py", "vm_area_alloc"): "vma_init(): a new VMA, not attached",
    ("vma_init.py", "vm_area_dup"): "vm_area_init_from(): a new VMA, not attached",
    ("mempolicy.py", "vma_dup_policy"): "the new VMA (split half, copy, fork child), not attached",
    ("mempolicy.py", "vma_replace_policy"): "asserts vma_assert_write_locked(vma) itself, as 7.0 does",
    ("mempolicy.py", "migrate_pages"): "the new page's anon_vma (folio_migrate_mapping), not a VMA's",
    ("mmap.py", "__mmap_new_vma"): "vm_file of the new VMA before it is stored",
    ("mmap.py", "dup_mmap"): "the child VMA (VM_WIPEONFORK) before it is attached",
    ("mmap.py", "_expand_downwards_store_b02"): "historical B02 code, which had no lock to assert",
    ("rmap.py", "__anon_vma_prepare"): "anon_vma installed under mmap_lock and page_table_lock",
    ("rmap.py", "anon_vma_fork"): "the child VMA before it is attached",
    ("rmap.py", "anon_vma_clone"): "a detached dst (split, copy_vma, fork) or one dup_anon_vma write-locked",
    ("rmap.py", "unlink_anon_vmas"): "a VMA being freed, or a dup undone under its write lock",
    ("system.py", "_setup_new_exec"): "the stack VMA before it is stored",
    ("userfaultfd_mm.py", "mfill_atomic_install_pte"): "a new page's anon_vma (folio_add_new_anon_rmap), not a VMA's",
    ("userfaultfd_mm.py", "move_pages_pte"): "the moved folio's anon_vma (folio_move_anon_rmap), not a VMA's",
}
#: Objects with fields of those names that are not VMAs.
NOT_VMAS = {"page", "vmg", "new"}


def _direct_stores() -> list[tuple[str, str, str, int]]:
    found = []
    for path in sorted(KERNEL.glob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign):
                    targets = node.targets
                elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                    targets = [node.target]
                else:
                    continue
                for t in targets:
                    for el in t.elts if isinstance(t, ast.Tuple) else [t]:
                        if isinstance(el, ast.Attribute) and el.attr in FIELDS:
                            base = ast.unparse(el.value)
                            if (path.name == "memory.py" and base in NOT_VMAS) or base == "vmg":
                                continue
                            found.append((path.name, fn.name, f"{base}.{el.attr}", node.lineno))
    return found


def test_vma_fields_are_stored_only_through_the_helpers() -> None:
    stores = _direct_stores()
    assert len(stores) > 20  # the scan sees the helpers themselves
    bad = [f"{f}:{line} {fn}() stores {what}" for f, fn, what, line in stores
           if (f, fn) not in DIRECT_STORES]
    assert bad == [], "store through vm_flags_*/vma_set_range (kernel/mm.py, kernel/vma.py)"


def test_mm_lock_seq_moves_only_in_mm_lock_seqcount_begin_and_end() -> None:
    moves = []
    for path in sorted(KERNEL.glob("*.py")):
        if path.name == "atomic.py":  # seqcount_t itself
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if (isinstance(node, ast.Attribute) and node.attr in ("write_begin", "write_end")) or (
                        isinstance(node, ast.Attribute) and node.attr == "sequence"
                        and isinstance(node.ctx, ast.Store)):
                    moves.append((path.name, fn.name, node.attr))
    assert sorted(moves) == [("mmap_lock.py", "mm_lock_seqcount_begin", "write_begin"),
                             ("mmap_lock.py", "mm_lock_seqcount_end", "write_end")]


# -- no false positives -------------------------------------------------------------------

# The whole library, complete and clean on the four presets with every oracle on (these
# included): tests/kernel/test_oracles.py::test_the_scenario_library_stays_clean_under_the_new_oracles.
