"""The Linux-kernel memory model's axioms, in Python.

This follows tools/memory-model/linux-kernel.cat, linux-kernel.bell and lock.cat
as of Linux 7.0 (the version with ``Mb``-tagged full-barrier RMWs, ``rmb-plain``/
``plain-wmb``, ``rmw-sequence`` in ``cumul-fence``, ``rcu-order`` and SRCU read-side
sections matched through ``carry-srcu-data``).  Each name below is the .cat
relation of the same name (``-`` spelled ``_``); the order of definitions keeps
the .cat file's shadowing: ``ppo``, ``hb``, ``pb`` see ``fence`` and
``strong-fence`` *before* ``rcu-fence`` is added to them, the plain-access rules
see them after.

:class:`Static` holds what one combination of per-process paths fixes (program
order, dependencies, tags); :func:`check` takes one choice of ``rf`` and ``co``
and answers whether the execution is allowed, with the flags it raises.
"""

from __future__ import annotations

from dataclasses import dataclass

from pervma.litmus import relations as r
from pervma.litmus.events import Ev
from pervma.litmus.relations import Rel


def _mask(events: list[Ev], pred: object) -> int:
    s = 0
    for i, e in enumerate(events):
        if pred(e):  # type: ignore[operator]
            s |= 1 << i
    return s


class Static:
    """Sets and relations fixed by the events and the code (not by rf/co)."""

    def __init__(self, events: list[Ev], addr: list[tuple[int, int]],
                 data: list[tuple[int, int]], ctrl: list[tuple[int, int]],
                 rmw: list[tuple[int, int]], lk_rmw: list[tuple[int, int]]) -> None:
        self.events = events
        self.fault: str | None = None  # a path's access to a non-symbolic address
        n = self.n = len(events)

        def tag(t: str) -> int:
            return _mask(events, lambda e: t in e.tags)

        self.R = _mask(events, lambda e: e.kind == "R")
        self.W = _mask(events, lambda e: e.kind == "W")
        self.M = self.R | self.W
        self.F = _mask(events, lambda e: e.kind == "F")
        self.IW = tag("IW")
        # bell: instructions R/W/RMW[Accesses], F[Barriers], SRCU[...]
        self.rmw_bell = r.from_pairs(n, rmw)
        rmw_set = r.domain(self.rmw_bell) | r.range_(self.rmw_bell)
        failed = tag("RMW") & ~rmw_set
        self.LKR, self.LKW, self.UL = tag("LKR"), tag("LKW"), tag("UL")
        self.LF, self.RL, self.RU = tag("LF"), tag("RL"), tag("RU")
        self.Srcu_lock, self.Srcu_unlock = tag("srcu-lock"), tag("srcu-unlock")
        self.Sync_rcu, self.Sync_srcu = tag("sync-rcu"), tag("sync-srcu")
        self.Acquire = (tag("acquire") & ~self.W & ~failed) | self.LKR   # bell, then lock.cat
        self.Release = (tag("release") & ~self.R & ~failed) | self.UL
        self.Mb = tag("mb") & ~failed
        self.Noreturn = tag("noreturn") & ~self.W
        self.Once = tag("once")
        self.RMW = tag("RMW")
        self.Rmb, self.Wmb = tag("rmb"), tag("wmb")
        self.Before_atomic, self.After_atomic = tag("before-atomic"), tag("after-atomic")
        self.After_spinlock = tag("after-spinlock")
        self.After_unlock_lock = tag("after-unlock-lock")
        self.After_srcu_read_unlock = tag("after-srcu-read-unlock")
        every = (1 << n) - 1
        self.every = every
        self.Marked = ((every & ~self.M) | self.IW | self.Once | self.Release | self.Acquire
                       | rmw_set | self.LKR | self.LKW | self.UL | self.LF | self.RL | self.RU
                       | self.Srcu_lock | self.Srcu_unlock)
        self.Plain = self.M & ~self.Marked
        # lock.cat: rmw = rmw | lk-rmw
        self.rmw = r.union(self.rmw_bell, r.from_pairs(n, lk_rmw))

        po = [0] * n
        intl = [0] * n
        loc = [0] * n
        for i, a in enumerate(events):
            for j, b in enumerate(events):
                if a.tid == b.tid and a.tid >= 0:
                    intl[i] |= 1 << j
                    if a.idx < b.idx:
                        po[i] |= 1 << j
                elif a.tid < 0 and b.tid < 0 and i == j:
                    intl[i] |= 1 << j
                if a.loc is not None and a.loc == b.loc:
                    loc[i] |= 1 << j
        self.po = tuple(po)
        self.int = tuple(intl)
        self.ext = tuple(every & ~row for row in intl)
        self.loc = tuple(loc)
        self.po_loc = r.inter(self.po, self.loc)
        self.id = r.ident(n, every)
        self.addr0 = r.from_pairs(n, addr)
        self.data0 = r.from_pairs(n, data)
        self.ctrl0 = r.from_pairs(n, ctrl)
        self.rcu_rscs = self._rcu_rscs()
        self.rcu_rscsi = r.inverse(self.rcu_rscs)
        self.has_gp = bool(self.Sync_rcu | self.Sync_srcu)

        # Program-order-only pieces of the .cat file.
        po_opt = r.opt(self.po)
        M = self.M
        self.acq_po = r.restrict(self.po, self.Acquire, M)
        self.po_rel = r.restrict(self.po, M, self.Release)
        self.R4rmb = self.R & ~self.Noreturn
        self.fr_Rmb = self.fencerel(self.Rmb)
        self.rmb = r.restrict(self.fr_Rmb, self.R4rmb, self.R4rmb)
        self.wmb = r.restrict(self.fencerel(self.Wmb), self.W, self.W)
        idn = r.ident
        self.mb_static = r.union(
            r.restrict(self.fencerel(self.Mb), M, M),
            r.restrict(self.po, M, self.Mb & self.R),
            r.restrict(self.po, self.Mb & self.W, M),
            r.restrict(r.seqs(self.fencerel(self.Before_atomic), idn(n, self.RMW), po_opt),
                       M, M),
            r.restrict(r.seqs(po_opt, idn(n, self.RMW), self.fencerel(self.After_atomic)),
                       M, M),
            r.restrict(r.seqs(po_opt, idn(n, self.LKW), self.fencerel(self.After_spinlock)),
                       M, M),
            r.restrict(r.seqs(po_opt, idn(n, self.Srcu_unlock),
                              self.fencerel(self.After_srcu_read_unlock)), M, M),
        )
        self.gp = r.seqs(self.po, idn(n, self.Sync_rcu | self.Sync_srcu), po_opt)
        w_barrier = r.seqs(po_opt, idn(n, self.F | self.Marked), po_opt)
        pl_nb = r.diff(self.po_loc, w_barrier)
        self.rmb_plain = r.seqs(
            r.restrict(self.po, self.R4rmb, self.Rmb),
            r.restrict(r.diff(self.po, r.seqs(self.po, idn(n, self.W), pl_nb)),
                       every, self.R4rmb & self.Plain))
        self.plain_wmb = r.seqs(
            r.restrict(r.diff(self.po, r.seqs(pl_nb, self.po, idn(n, self.W), self.po)),
                       self.W & self.Plain, self.Wmb),
            r.restrict(self.po, every, self.W))

        # A part of hb that program order alone fixes (fences, dependencies to
        # stores, address dependencies to loads), for pruning: a choice of rf/co
        # that closes a cycle with it and its rfe/coi/fri cannot satisfy
        # happens-before.
        fence_static = r.union(self.mb_static, self.gp, self.po_rel, self.acq_po,
                               self.wmb, self.rmb)
        self.hb_core = r.restrict(
            r.union(r.inter(fence_static, self.int),
                    r.restrict(r.union(self.addr0, self.data0, self.ctrl0), every, self.W),
                    r.restrict(self.addr0, every, self.R)),
            self.Marked, self.Marked)
        self.flags = self._static_flags()

    def _static_flags(self) -> tuple[str, ...]:
        """The .bell/.cat/lock.cat flags that program order alone decides."""
        n, ident = self.n, r.ident
        flags = []
        rcu_lock, rcu_unlock = _mask(self.events, lambda e: "rcu-lock" in e.tags), \
            _mask(self.events, lambda e: "rcu-unlock" in e.tags)
        if rcu_lock & ~r.domain(self.rcu_rscs):
            flags.append("unmatched-rcu-lock")
        if rcu_unlock & ~r.range_(self.rcu_rscs):
            flags.append("unmatched-rcu-unlock")
        if not r.is_empty(r.inter(self.rcu_rscs,
                                  r.seqs(self.po, ident(n, self.Sync_srcu), self.po))):
            flags.append("invalid-sleep")
        # lock.cat: critical = ([LKW] ; po-loc ; [UL]) \ (po-loc ; [LKW | UL] ; po-loc)
        critical = r.diff(r.restrict(self.po_loc, self.LKW, self.UL),
                          r.seqs(self.po_loc, ident(n, self.LKW | self.UL), self.po_loc))
        if self.UL & ~r.range_(critical):
            flags.append("unmatched-unlock")
        all_locks = self.LKR | self.LKW | self.UL | self.LF | self.RL | self.RU
        if not r.is_empty(r.restrict(self.loc, self.M & ~self.IW & ~all_locks, all_locks)):
            flags.append("mixed-lock-accesses")
        # cat: mixed-accesses, plain writes and marked accesses without a barrier between
        barrier = r.union(
            self.fencerel(_mask(self.events, lambda e: bool(e.tags & _BARRIER_TAGS))
                          | self.Acquire | self.Release),
            r.restrict(self.po, self.every, self.Release),
            r.restrict(self.po, self.Acquire, self.every))
        nb = r.diff(self.po_loc, barrier)
        pw = self.Plain & self.W
        if not (r.is_empty(r.restrict(nb, pw, self.Marked))
                and r.is_empty(r.restrict(nb, self.Marked, pw))):
            flags.append("mixed-accesses")
        return tuple(flags)

    def fencerel(self, s: int) -> Rel:
        """``fencerel(S) = po ; [S] ; po``."""
        return r.seq(r.restrict(self.po, self.every, s), self.po)

    def _rcu_rscs(self) -> Rel:
        """bell's ``rcu-rscs``: each rcu_read_unlock() matched with the innermost
        unmatched rcu_read_lock() before it in its process (nesting)."""
        pairs = []
        stacks: dict[int, list[int]] = {}
        for i, e in enumerate(self.events):
            if "rcu-lock" in e.tags:
                stacks.setdefault(e.tid, []).append(i)
            elif "rcu-unlock" in e.tags and stacks.get(e.tid):
                pairs.append((stacks[e.tid].pop(), i))
        return r.from_pairs(self.n, pairs)


_BARRIER_TAGS = frozenset({"barrier", "rmb", "wmb", "mb", "sync-rcu", "sync-srcu",
                           "before-atomic", "after-atomic", "rcu-lock", "rcu-unlock",
                           "srcu-lock", "srcu-unlock"})


def srcu_flags(st: Static, rf: Rel) -> tuple[str, ...]:
    """bell's checks of SRCU read-side sections (they depend on rf)."""
    rscs = _srcu_rscs(st, rf)
    flags = []
    if st.Srcu_lock & ~r.domain(rscs):
        flags.append("unmatched-srcu-lock")
    if st.Srcu_unlock & ~r.range_(rscs):
        flags.append("unmatched-srcu-unlock")
    if not r.is_empty(r.diff(r.seq(r.inverse(rscs), rscs), st.id)):
        flags.append("multiple-srcu-matches")
    if any(st.events[a].val != st.events[b].val
           for a, row in enumerate(rscs) for b in r.bits(row)):
        flags.append("srcu-bad-value-match")
    return tuple(flags)


def _srcu_rscs(st: Static, rf: Rel) -> Rel:
    """bell: srcu-rscs = ([Srcu-lock] ; carry-srcu-data ; data ; [Srcu-unlock]) & loc."""
    n = st.n
    carry_srcu = r.star(r.seqs(st.data0, r.ident(n, st.every & ~st.Srcu_unlock), rf))
    return r.inter(r.restrict(r.seq(carry_srcu, st.data0), st.Srcu_lock, st.Srcu_unlock),
                   st.loc)


@dataclass(slots=True)
class Verdict:
    allowed: bool
    flags: tuple[str, ...] = ()


def check(st: Static, rf: Rel, co: Rel) -> Verdict:
    """Whether the execution with reads-from ``rf`` and coherence ``co`` satisfies
    LKMM (coherence and atomicity are checked per location by the caller)."""
    n, M, Marked = st.n, st.M, st.Marked
    ident = r.ident
    fr = r.seq(r.inverse(rf), co)
    rfe, rfi = r.inter(rf, st.ext), r.inter(rf, st.int)
    overwrite = r.union(co, fr)
    # bell: dependencies carried through plain accesses
    carry_dep = r.star(r.seqs(st.data0, ident(n, st.every & ~st.Srcu_unlock), rfi))
    addr = r.seq(carry_dep, st.addr0)
    ctrl = r.seq(carry_dep, st.ctrl0)
    data = r.seq(carry_dep, st.data0)

    po_unlock_lock_po = r.seqs(r.restrict(st.po, st.every, st.UL),
                               r.restrict(r.union(st.po, rf), st.every, st.LKR), st.po)
    mb = st.mb_static
    if st.After_unlock_lock:
        mb = r.union(mb, r.restrict(
            r.seqs(po_unlock_lock_po, ident(n, st.After_unlock_lock), st.po), M, M))
    strong_fence = r.union(mb, st.gp)
    nonrw_fence = r.union(strong_fence, st.po_rel, st.acq_po)
    fence = r.union(nonrw_fence, st.wmb, st.rmb)

    dep = r.union(addr, data)
    rwdep = r.restrict(r.union(dep, ctrl), st.every, st.W)
    to_w = r.union(
        r.seqs(r.opt(r.union(addr, st.rmb_plain)), rwdep, r.opt(st.plain_wmb)),
        r.inter(overwrite, st.int),
        r.seq(r.restrict(addr, st.every, st.Plain), st.wmb))
    to_r = r.union(r.restrict(addr, st.every, st.R),
                   r.seq(r.restrict(dep, st.every, Marked), rfi))
    ppo = r.union(to_r, to_w, r.inter(fence, st.int), r.inter(po_unlock_lock_po, st.int))

    rfe_marked_opt = r.opt(r.restrict(rfe, st.every, Marked))
    rmw_sequence = r.star(r.seq(rf, st.rmw))
    cumul_fence = r.seq(r.restrict(
        r.union(r.seq(rfe_marked_opt, r.union(strong_fence, st.po_rel)), st.wmb,
                po_unlock_lock_po), Marked, Marked), rmw_sequence)
    cumul_star = r.star(cumul_fence)
    prop = r.restrict(
        r.seqs(r.opt(r.inter(overwrite, st.ext)), r.restrict(cumul_star, st.every, Marked),
               r.opt(rfe)), Marked, Marked)
    hb = r.restrict(r.union(ppo, rfe, r.inter(r.diff(prop, st.id), st.int)), Marked, Marked)
    if not r.acyclic(hb):
        return Verdict(False)
    hb_star = r.star(hb)
    pb = r.seqs(prop, strong_fence, r.restrict(hb_star, st.every, Marked))
    if not r.acyclic(pb):
        return Verdict(False)
    pb_star = r.star(pb)

    rb: Rel = r.empty_rel(n)
    if st.has_gp:
        rcu_fence = _rcu_fence(st, rf, data, hb_star, pb_star, prop)
        fence = r.union(fence, rcu_fence)
        strong_fence = r.union(strong_fence, rcu_fence)
        rb = r.seqs(prop, rcu_fence, hb_star, r.restrict(pb_star, st.every, Marked))
        if not r.irreflexive(rb):
            return Verdict(False)

    flags = st.flags
    if st.Srcu_lock | st.Srcu_unlock:
        flags = flags + srcu_flags(st, rf)
    if not st.Plain:
        return Verdict(True, flags)
    # Plain accesses: the plain-coherence axiom and the data-race flag.
    xbstar = r.star(r.union(hb, pb, rb))
    vis = r.seqs(cumul_star, r.restrict(r.opt(rfe), st.every, Marked),
                 r.union(r.seqs(r.restrict(strong_fence, st.every, Marked), xbstar),
                         r.inter(xbstar, st.int)))
    not_noreturn = st.every & ~st.Noreturn
    w_pre = r.restrict(r.opt(r.union(addr, fence)), Marked, st.every)
    r_pre = r.restrict(r.opt(r.union(addr, nonrw_fence,
                                     r.restrict(st.fr_Rmb, st.R4rmb, not_noreturn))),
                       Marked, st.every)
    w_post = r.seq(r.restrict(r.opt(fence), st.every, Marked), rmw_sequence)
    r_post = r.restrict(r.opt(r.union(nonrw_fence,
                                      r.restrict(st.fr_Rmb, not_noreturn, st.R4rmb))),
                        st.every, Marked)
    sx = r.seq(strong_fence, xbstar)
    ww_vis = r.union(fence, r.seq(sx, w_pre), r.seqs(w_post, vis, w_pre))
    wr_vis = r.union(fence, r.seq(sx, r_pre), r.seqs(w_post, vis, r_pre))
    rw_xbstar = r.union(fence, r.seqs(r_post, xbstar, w_pre))
    pre_race = r.inter(st.ext, r.union(r.cross(n, st.Plain, M),
                                       r.cross(n, M & ~st.IW, st.Plain)))
    incoh = r.union(r.inter(r.inter(pre_race, rf), r.inverse(rw_xbstar)),
                    r.inter(r.inter(pre_race, fr), r.inverse(wr_vis)),
                    r.inter(r.inter(pre_race, co), r.inverse(ww_vis)))
    if not r.is_empty(incoh):
        return Verdict(False)
    ww_nonrace = r.inter(r.inter(ww_vis, r.union(r.cross(n, Marked, st.W), rw_xbstar)),
                         r.union(r.cross(n, st.W, Marked), wr_vis))
    ww_race = r.diff(r.inter(pre_race, co), ww_nonrace)
    wr_race = r.diff(r.diff(r.inter(pre_race, r.seq(r.opt(co), rf)), wr_vis),
                     r.inverse(rw_xbstar))
    rw_race = r.diff(r.inter(pre_race, fr), rw_xbstar)
    racy = not (r.is_empty(ww_race) and r.is_empty(wr_race) and r.is_empty(rw_race))
    return Verdict(True, flags + (("data-race",) if racy else ()))


def _rcu_fence(st: Static, rf: Rel, data: Rel, hb_star: Rel, pb_star: Rel, prop: Rel) -> Rel:
    """``rcu-fence = po ; rcu-order ; po?`` with ``rcu-order`` the least fixpoint of
    the .cat's recursive definition (grace periods and read-side sections joined
    by ``rcu-link``, at least as many of the former as of the latter)."""
    n = st.n
    ident = r.ident
    srcu_rscsi = r.inverse(_srcu_rscs(st, rf))
    rcu_gp, srcu_gp = ident(n, st.Sync_rcu), ident(n, st.Sync_srcu)
    link = r.seqs(r.opt(st.po), hb_star, pb_star, prop, st.po)
    g_l = r.seq(rcu_gp, link)
    sg_l = r.seq(srcu_gp, link)
    rs_l = r.seq(st.rcu_rscsi, link)
    ss_l = r.seq(srcu_rscsi, link)
    base = r.union(rcu_gp, srcu_gp, r.seq(g_l, st.rcu_rscsi),
                   r.inter(r.seq(sg_l, srcu_rscsi), st.loc),
                   r.seq(rs_l, rcu_gp), r.inter(r.seq(ss_l, srcu_gp), st.loc))
    order = base
    while True:
        ol = r.seq(order, link)
        new = r.union(base,
                      r.seqs(g_l, ol, st.rcu_rscsi),
                      r.inter(r.seqs(sg_l, ol, srcu_rscsi), st.loc),
                      r.seqs(rs_l, ol, rcu_gp),
                      r.inter(r.seqs(ss_l, ol, srcu_gp), st.loc),
                      r.seq(ol, order))
        if new == order:
            break
        order = new
    return r.seqs(st.po, order, r.opt(st.po))
