"""kmem_cache: allocation, freeing, poisoning and SLAB_TYPESAFE_BY_RCU reuse.

Objects of a plain cache are poisoned when freed and never handed out again,
so any later access through a stale pointer is a KASAN use-after-free report
naming where the object was allocated and freed.  Objects of a
``SLAB_TYPESAFE_BY_RCU`` cache are handed out again at once (last freed,
first reused, as SLUB's per-CPU freelist does), possibly to another mm: a
stale pointer then sees a live object with a new identity (``generation``).

KASAN and SLAB_TYPESAFE_BY_RCU (mm/slub.c slab_free_hook() and
slab_free_after_rcu_debug(), mm/kasan/common.c __kasan_slab_free(), 6.12+
with CONFIG_SLUB_RCU_DEBUG, on by default under generic KASAN): such an
object stays accessible when freed and is poisoned only once an RCU grace
period has passed.  A free therefore starts a grace period (``kasan_free_gp``): until the
object is reused, an access by a reader it waits for, one still in the
read-side section it was in at the free, is legal; any other access is a
use-after-free.  ``kasan_free_gp`` is None for an object of a plain cache.
A cache of pages (``mem_map``) also keeps its live objects, so that a leaked
page can be found (``debug.validate_mm``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pervma.kernel import debug
from pervma.kernel.rcu import GracePeriod, kasan_grace_period
from pervma.sched import touch
from pervma.sched.locations import KMEM_CACHE


@dataclass(eq=False, slots=True)
class SlabObject:
    """Fields every cached object carries for KASAN-style reporting."""

    slot: int = 0
    generation: int = 0
    freed: bool = False
    alloc_site: str = ""
    free_site: str = ""
    # SLAB_TYPESAFE_BY_RCU: the grace period the free started, whose readers
    # (those still in the section they were in at the free) may still touch
    # the object (None: a plain cache, or not freed)
    kasan_free_gp: GracePeriod | None = None

    def locations(self) -> tuple[Hashable, ...]:
        """The shared locations steps name for this object: freeing or
        recycling it is a hidden write to all of them."""
        return ()


T = TypeVar("T", bound=SlabObject)


@dataclass(eq=False)
class KmemCache(Generic[T]):
    name: str
    ctor: Callable[[int], T]
    typesafe_by_rcu: bool = False
    # Objects ever made (the next one's slot).  The cache keeps no list of
    # them: a pointer, live or stale, keeps its object (poisoned once freed) and
    # the freelist keeps a SLAB_TYPESAFE_BY_RCU one; an unreachable one goes away.
    nr_objects: int = 0
    freelist: list[T] = field(default_factory=list)
    active: int = 0
    total_allocs: int = 0
    # The live objects by slot, kept only when ``mem_map`` is on (the page
    # cache: the kernel's memmap lets a checker see every allocated page).
    mem_map: bool = False
    live: dict[int, T] = field(default_factory=dict)

    def loc(self) -> Hashable:
        """The cache's own shared state (freelist, object count): every
        allocation and free writes it, as SLUB's cmpxchg on the per-CPU
        freelist does.  Without it two allocations from one cache would be
        independent to the checker although their order decides which object
        (and slot) each gets."""
        return (KMEM_CACHE, self.name)

    def alloc(self, site: str) -> T:
        touch(self.loc())
        self.total_allocs += 1
        self.active += 1
        if self.typesafe_by_rcu and self.freelist:
            obj = self.freelist.pop()
        else:
            obj = self.ctor(self.nr_objects)
            obj.slot = self.nr_objects
            self.nr_objects += 1
        obj.generation += 1
        if obj.generation > 1:
            for loc in obj.locations():  # a recycled object changes identity
                touch(loc)
        obj.freed = False
        obj.alloc_site = site
        obj.free_site = ""
        obj.kasan_free_gp = None
        if self.mem_map:
            self.live[obj.slot] = obj
        return obj

    def free(self, obj: T, site: str) -> None:
        if obj.freed:
            debug.report("KASAN: double-free", f"{self.name} object {obj.slot} freed at {site}, "
                         f"already freed at {obj.free_site} (allocated at {obj.alloc_site})")
        obj.freed = True
        obj.free_site = site
        if self.mem_map:
            self.live.pop(obj.slot, None)
        if self.typesafe_by_rcu:
            obj.kasan_free_gp = kasan_grace_period()
        touch(self.loc())
        for loc in obj.locations():
            touch(loc)
        self.active -= 1
        if self.typesafe_by_rcu:
            self.freelist.append(obj)
