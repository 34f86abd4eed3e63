"""From a process's C body to its possible event sequences.

Like herd7, each process is run on its own: every load may return any value
some store of the test could write to its location (a per-location value set
computed to a fixpoint first), and each choice gives one *path* -- a sequence
of events in program order with the values read and written, the register
values at the end, and the intra-thread relations herd derives from the code:
``addr``, ``data``, ``ctrl`` (from a value's taint: the loads it was computed
from) and ``rmw`` (a read-modify-write's read and write).  Which store each load
reads from is decided later, by :mod:`pervma.litmus.executions`.

The primitives and their event tags follow tools/memory-model/linux-kernel.def
(Linux 7.0-era LKMM): ``READ_ONCE`` is a load tagged ``once``, ``smp_load_acquire``
``acquire``, ``rcu_assign_pointer`` a store ``release``, ``xchg``/``cmpxchg``
and value-returning atomics are RMWs tagged ``mb`` (``_relaxed`` ``once``,
``_acquire``/``_release``), non-returning atomics ``noreturn``; ``spin_lock`` is
an LKR/LKW pair, ``spin_unlock`` a UL store, ``spin_trylock`` either a lock or
an LF read, ``spin_is_locked`` an RL or RU read; ``srcu_read_lock`` is a load
tagged ``srcu-lock`` of the srcu_struct and ``srcu_read_unlock`` a store tagged
``srcu-unlock`` of the index, as in that file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pervma.litmus.syntax import (
    Assign,
    Binary,
    Block,
    Call,
    Decl,
    Expr,
    ExprStmt,
    If,
    Litmus,
    LitmusError,
    Loc,
    Name,
    Num,
    Process,
    Stmt,
    Unary,
    Value,
)

# Values carried in registers: the value and the local indices of the loads it
# was computed from (its taint, for addr/data/ctrl).
TVal = tuple[Value, frozenset[int]]

FENCES = {
    "smp_mb": "mb", "smp_rmb": "rmb", "smp_wmb": "wmb", "barrier": "barrier",
    "smp_mb__before_atomic": "before-atomic", "smp_mb__after_atomic": "after-atomic",
    "smp_mb__after_spinlock": "after-spinlock",
    "smp_mb__after_unlock_lock": "after-unlock-lock",
    "smp_mb__after_srcu_read_unlock": "after-srcu-read-unlock",
    "rcu_read_lock": "rcu-lock", "rcu_read_unlock": "rcu-unlock",
    "synchronize_rcu": "sync-rcu", "synchronize_rcu_expedited": "sync-rcu",
}
ORDER_SUFFIX = {"": "mb", "_relaxed": "once", "_acquire": "acquire", "_release": "release"}


@dataclass(slots=True)
class Ev:
    """One event: kind 'R', 'W', 'F' (fence) or 'S' (synchronize_srcu)."""

    tid: int
    idx: int
    kind: str
    loc: str | None
    val: Value | None
    tags: frozenset[str]


@dataclass(slots=True)
class Path:
    """One way a process can run, given the values its loads return."""

    events: list[Ev] = field(default_factory=list)
    addr: list[tuple[int, int]] = field(default_factory=list)
    data: list[tuple[int, int]] = field(default_factory=list)
    ctrl: list[tuple[int, int]] = field(default_factory=list)
    rmw: list[tuple[int, int]] = field(default_factory=list)
    regs: dict[str, Value] = field(default_factory=dict)
    # Set when the path stops at an access to a non-symbolic address: an error
    # only if some execution LKMM allows takes this path (herd7 since 7.58).
    fault: str | None = None


class _Fault(Exception):
    """A path dereferences an integer: the process stops there."""


class _Choices:
    """Replays a prefix of choices and extends it with first options (odometer DFS)."""

    def __init__(self, prefix: list[int]) -> None:
        self.taken = prefix
        self.counts: list[int] = []
        self.pos = 0

    def pick(self, n: int) -> int:
        if self.pos < len(self.taken):
            c = self.taken[self.pos]
        else:
            c = 0
            self.taken.append(0)
        self.counts.append(n)
        self.pos += 1
        return c

    def next_prefix(self) -> list[int] | None:
        k = len(self.taken) - 1
        while k >= 0 and self.taken[k] + 1 >= self.counts[k]:
            k -= 1
        if k < 0:
            return None
        return self.taken[:k] + [self.taken[k] + 1]


def _arith(op: str, a: Value, b: Value, line: int) -> Value:
    if op in ("==", "!="):
        eq = a == b
        return int(eq if op == "==" else not eq)
    if op in ("+", "-") and isinstance(a, Loc) and b == 0:
        return a  # 'x + (r ^ r)': an address dependency that keeps the address
    if op == "+" and isinstance(b, Loc) and a == 0:
        return b
    if isinstance(a, Loc) or isinstance(b, Loc):
        raise LitmusError(f"line {line}: unsupported construct 'pointer arithmetic ({op})'")
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op in ("/", "%"):
        if b == 0:
            raise LitmusError(f"line {line}: division by zero")
        q = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
        return q if op == "/" else a - q * b
    if op == "&":
        return a & b
    if op == "&~":
        return a & ~b
    if op == "|":
        return a | b
    if op == "^":
        return a ^ b
    if op in ("<<", ">>"):
        if not 0 <= b <= 63:
            raise LitmusError(f"line {line}: shift by {b} is outside 0..63")
        return a << b if op == "<<" else a >> b
    if op == "<":
        return int(a < b)
    if op == ">":
        return int(a > b)
    if op == "<=":
        return int(a <= b)
    if op == ">=":
        return int(a >= b)
    raise LitmusError(f"line {line}: unsupported operator '{op}'")


def _truth(v: Value) -> bool:
    return isinstance(v, Loc) or v != 0


class _Thread:
    """One run of one process along the choices in ``ch``."""

    def __init__(self, lit: Litmus, proc: Process, domain: dict[str, list[Value]],
                 ch: _Choices) -> None:
        self.proc = proc
        self.domain = domain
        self.ch = ch
        self.globals = domain
        self.params = set(proc.params)
        self.regs: dict[str, TVal] = {}
        for (tid, reg), v in lit.init_regs.items():
            if tid == proc.tid:
                self.regs[reg] = (v, frozenset())
        self.ctrl: frozenset[int] = frozenset()
        self.path = Path()

    # ---- events
    def _event(self, kind: str, loc: str | None, val: Value | None, tags: frozenset[str],
               addr: frozenset[int] = frozenset(), data: frozenset[int] = frozenset()) -> int:
        i = len(self.path.events)
        self.path.events.append(Ev(self.proc.tid, i, kind, loc, val, tags))
        self.path.addr.extend((a, i) for a in sorted(addr))
        self.path.data.extend((d, i) for d in sorted(data))
        self.path.ctrl.extend((c, i) for c in sorted(self.ctrl))
        return i

    def load(self, loc: str, tags: frozenset[str], addr: frozenset[int],
             fixed: Value | None = None) -> TVal:
        if fixed is None:
            values = self.domain[loc]
            val = values[self.ch.pick(len(values))] if len(values) > 1 else values[0]
        else:
            val = fixed
        i = self._event("R", loc, val, tags, addr)
        return val, frozenset({i})

    def store(self, loc: str, val: TVal, tags: frozenset[str], addr: frozenset[int]) -> int:
        return self._event("W", loc, val[0], tags, addr, val[1])

    # ---- expressions
    def location(self, v: TVal, line: int) -> tuple[str, frozenset[int]]:
        if not isinstance(v[0], Loc):
            self.path.fault = (f"line {line}: dereference of the integer {v[0]} in "
                               f"P{self.proc.tid} (in an execution LKMM allows)")
            raise _Fault
        if v[0].name not in self.domain:
            raise LitmusError(f"line {line}: unknown shared variable '{v[0].name}'")
        return v[0].name, v[1]

    def lvalue(self, e: Expr) -> tuple[str, frozenset[int]]:
        """The location named by a macro's lvalue argument (``*x`` or a variable)."""
        if isinstance(e, Unary) and e.op == "*":
            return self.location(self.eval(e.arg), e.line)
        if isinstance(e, Name) and e.id not in self.regs and e.id in self.domain:
            return e.id, frozenset()
        raise LitmusError(f"line {e.line}: unsupported construct 'non-dereference lvalue' "
                          f"in P{self.proc.tid}")

    def pointer(self, e: Expr) -> tuple[str, frozenset[int]]:
        return self.location(self.eval(e), e.line)

    def eval(self, e: Expr) -> TVal:
        if isinstance(e, Num):
            return e.value, frozenset()
        if isinstance(e, Name):
            if e.id in self.regs:
                return self.regs[e.id]
            if e.id in self.params or e.id in self.globals:
                return Loc(e.id), frozenset()
            # herd7 takes an undeclared name for a register holding 0
            return 0, frozenset()
        if isinstance(e, Unary):
            if e.op == "*":
                loc, deps = self.pointer(e.arg)
                return self.load(loc, frozenset(), deps)
            if e.op == "&":
                if isinstance(e.arg, Name) and e.arg.id in self.domain:
                    return Loc(e.arg.id), frozenset()
                if isinstance(e.arg, Unary) and e.arg.op == "*":
                    return self.eval(e.arg.arg)
                raise LitmusError(f"line {e.line}: unsupported construct 'address-of'")
            v, d = self.eval(e.arg)
            if e.op == "!":
                return int(not _truth(v)), d
            if isinstance(v, Loc):
                raise LitmusError(f"line {e.line}: unsupported construct 'pointer "
                                  f"arithmetic ({e.op})'")
            return (-v if e.op == "-" else ~v), d
        if isinstance(e, Binary):
            if e.op in ("&&", "||"):
                a, da = self.eval(e.left)
                if _truth(a) == (e.op == "||"):
                    return int(_truth(a)), da
                b, db = self.eval(e.right)
                return int(_truth(b)), da | db
            a, da = self.eval(e.left)
            b, db = self.eval(e.right)
            return _arith(e.op, a, b, e.line), da | db
        if isinstance(e, Assign):
            tv = self.eval(e.value)
            t = e.target
            if isinstance(t, Name) and (t.id in self.regs or t.id not in self.domain):
                self.regs[t.id] = tv
                return tv
            if isinstance(t, Unary) and t.op == "*":
                loc, deps = self.pointer(t.arg)
                self.store(loc, tv, frozenset(), deps)
                return tv
            raise LitmusError(f"line {e.line}: unsupported construct 'assignment to a "
                              "shared variable by name'")
        return self.call(e)

    def call(self, e: Call) -> TVal:
        from pervma.litmus.primitives import call_primitive

        return call_primitive(self, e)

    # ---- statements
    def run(self, s: Stmt) -> None:
        if isinstance(s, Block):
            for sub in s.body:
                self.run(sub)
        elif isinstance(s, Decl):
            self.regs[s.name] = self.eval(s.init) if s.init is not None else (0, frozenset())
        elif isinstance(s, ExprStmt):
            self.eval(s.expr)
        elif isinstance(s, If):
            # ctrl reaches the events inside the arms only, not those after the
            # if (explanation.txt since 2022: "Y syntactically lies within an
            # arm of an if statement"; herd7 computes it so).
            v, d = self.eval(s.cond)
            outer = self.ctrl
            self.ctrl = outer | d
            if _truth(v):
                self.run(s.then)
            elif s.orelse is not None:
                self.run(s.orelse)
            self.ctrl = outer


def process_paths(lit: Litmus, proc: Process, domain: dict[str, list[Value]],
                  limit: int = 100_000) -> list[Path]:
    """Every path of ``proc`` with loads returning values from ``domain``."""
    out: list[Path] = []
    prefix: list[int] | None = []
    while prefix is not None:
        ch = _Choices(prefix)
        th = _Thread(lit, proc, domain, ch)
        try:
            th.run(proc.body)
        except _Fault:
            pass
        th.path.regs = {k: v for k, (v, _) in th.regs.items()}
        out.append(th.path)
        if len(out) > limit:
            raise LitmusError(f"P{proc.tid} has more than {limit} paths; the test is too "
                              "large for pervma litmus")
        prefix = ch.next_prefix()
    return out


def value_domain(lit: Litmus, locations: list[str], max_rounds: int = 16) -> dict[str, list[Value]]:
    """Per location, the values a load may return: the initial value and every value
    some path stores there, to a fixpoint.  A value an execution can really read
    flows through a chain of stores in which every store but the first depends
    on a load (its value by ``data``, its address by ``addr``, its being made at
    all by ``ctrl``), so with S the most such dependent stores the processes'
    paths make together, S + 1 rounds find every value computed from loaded
    ones.  Stores whose value does not come from a load (constants, possibly
    under an ``if`` or through a pointer) can only add the program's finitely
    many constants, so rounds go on while they still add values; only values
    computed from loads (a counter's ``r + 1``) are cut at S + 1 rounds.
    ``max_rounds`` bounds it all."""
    dom: dict[str, set[Value]] = {loc: {lit.init_mem.get(loc, 0)} for loc in locations}

    def ordered(vals: set[Value]) -> list[Value]:
        return sorted(vals, key=lambda v: (1, v.name, 0) if isinstance(v, Loc) else (0, "", v))

    rounds = 0
    bound = 0
    while rounds < max_rounds:
        rounds += 1
        frozen = {k: ordered(v) for k, v in dom.items()}
        grew = grew_const = False
        stores = 0
        for proc in lit.processes:
            most = 0
            for path in process_paths(lit, proc, frozen):
                computed = {b for _, b in path.data}
                dependent = computed | {b for _, b in path.addr} | {b for _, b in path.ctrl}
                most = max(most, sum(1 for i, ev in enumerate(path.events)
                                     if ev.kind == "W" and i in dependent))
                for i, ev in enumerate(path.events):
                    if ev.kind == "W" and ev.loc is not None and ev.val is not None \
                            and ev.val not in dom[ev.loc]:
                        dom[ev.loc].add(ev.val)
                        grew = True
                        grew_const = grew_const or i not in computed
            stores += most
        bound = max(bound, stores)
        if not grew or (not grew_const and rounds > bound):
            break
    return {k: ordered(v) for k, v in dom.items()}
