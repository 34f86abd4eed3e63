"""A file's VMA interval tree (mm/interval_tree.c, Linux 7.0).

The kernel keeps ``mapping->i_mmap`` as an augmented rbtree keyed by each
VMA's page-offset range [vm_pgoff, vm_pgoff + vma_pages - 1].  The model keeps
a list sorted by vm_pgoff: an insert goes after the VMAs with an equal start,
as the rbtree insert walks right on equal keys, so a walk meets an mremap
copy after its source (the order ``copy_vma``'s need_rmap_locks relies on).
Callers hold ``i_mmap_rwsem`` (write to change, read to walk); nothing here is
a step of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pervma.kernel import debug

if TYPE_CHECKING:
    from pervma.kernel.mm_types import File, VmAreaStruct


def vma_last_pgoff(vma: VmAreaStruct) -> int:
    """The last page offset vma maps (vma_last_pgoff())."""
    return vma.vm_pgoff + ((vma.vm_end - vma.vm_start) >> 12) - 1


def vma_interval_tree_insert(vma: VmAreaStruct, mapping: File) -> None:
    tree = mapping.i_mmap
    if any(v is vma for v in tree):
        debug.report("BUG: vma_interval_tree_insert", f"{vma} is already in the i_mmap of {mapping.path}")
        return
    i = len(tree)
    while i > 0 and tree[i - 1].vm_pgoff > vma.vm_pgoff:
        i -= 1
    tree.insert(i, vma)


def vma_interval_tree_insert_after(node: VmAreaStruct, prev: VmAreaStruct, mapping: File) -> None:
    """vma_interval_tree_insert_after(): fork puts the child's copy right
    after the parent's VMA (same range, same pgoff), so a walk meets the
    parent first."""
    tree = mapping.i_mmap
    for i, v in enumerate(tree):
        if v is prev:
            tree.insert(i + 1, node)
            return
    debug.report("BUG: vma_interval_tree_insert_after", f"{prev} is not in the i_mmap of {mapping.path}")


def vma_interval_tree_remove(vma: VmAreaStruct, mapping: File) -> None:
    tree = mapping.i_mmap
    for i, v in enumerate(tree):
        if v is vma:
            del tree[i]
            return
    debug.report("BUG: vma_interval_tree_remove", f"{vma} is not in the i_mmap of {mapping.path}")


def vma_interval_tree_foreach(mapping: File, first: int, last: int) -> list[VmAreaStruct]:
    """The VMAs whose page-offset range meets [first, last], in tree order
    (a list made before the walk: the tree cannot change under the
    i_mmap_rwsem the walker holds).  Every node the walk passes is an
    access KASAN sees: a VMA freed while still linked is a use-after-free,
    and one the SLAB_TYPESAFE_BY_RCU cache already handed out again shows
    as a node of another file."""
    out = []
    for v in mapping.i_mmap:
        if v.freed:
            debug.kasan_check(v, "vma_interval_tree_foreach", "vm_area_struct")
        if v.vm_file is not mapping:
            debug.report("BUG: vma_interval_tree_foreach",
                         f"{v} in the i_mmap of {mapping.path} maps another file (freed and reused while linked)")
        if v.vm_pgoff <= last and vma_last_pgoff(v) >= first:
            out.append(v)
    return out


def vma_in_i_mmap(vma: VmAreaStruct) -> bool:
    """pervma's check: vma is linked in its file's interval tree."""
    f = vma.vm_file
    return f is not None and any(v is vma for v in f.i_mmap)
