"""Mutants of the model: one small change to one step of one kernel
function, to measure what the scenarios and the searches find.

The catalogued bugs (:mod:`pervma.kernel.bugs`) are one changed step each:
a lock not taken, a check made too early, a reference not pinned.  A mutant
is the same kind of change made blindly, at every site of a model file
where it applies:

* ``drop``: an ``await f(...)`` or ``f(...)`` statement is removed (a lock,
  an unlock, a barrier, a reference taken or put, a tree store);
* ``swap``: two neighbouring statements, one of them a scheduling point
  (an ``await``), are exchanged (a step moved before or after another);
* ``cmp``: a comparison is turned into its neighbour (``==``/``!=``,
  ``<``/``<=``, ``>``/``>=``, ``is``/``is not``, ``in``/``not in``);
* ``bool``: a ``True``/``False`` argument of a call is flipped (write vs
  read, killable, allow-zero).

Left alone, because changing them says nothing about the protocol: the
oracles (calls into ``debug``: lockdep, KASAN, ``validate_mm`` and the
model's assertions), the model's declarations to its drivers (a step's
``Op``, ``store()``, ``touch()``, ``work()``: :data:`_ANNOTATION`), the
bodies of historical-bug branches (``if ...bug("Bxx")``: dead code on the
mainline) and their ``_*_bNN`` functions, docstrings.

A mutant runs in an interpreter of its own: :func:`install` puts an import
hook in front of the others that compiles the mutated tree of the one
module it changes (with the original line numbers; nothing is written to
disk), so it must be called before anything imports that module
(``bench/mutation_bench.py`` starts a fresh ``python`` per mutant).

Why our own mutator rather than mutmut or cosmic-ray: those replace
operators and constants to make a test suite fail; the changes that matter
here are statement drops and reorders around scheduling points (which
neither offers), and a mutant here is judged by two searches compared with
each other, not by a test command's exit code.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

OPERATORS = ("drop", "swap", "cmp", "bool")

# The mutated module calls this name (this module's _hit) where the change
# is, so a run can tell whether any of its executions reached it.
HIT = "__pervma_mutant_hit__"
HITS = [0]


def _hit(value: Any = None) -> Any:
    HITS[0] += 1
    return value

# The model files a campaign mutates by default: the per-VMA lock, the
# fault path and the syscalls that write-lock VMAs.
DEFAULT_MODULES = (
    "pervma.kernel.mmap_lock",
    "pervma.kernel.vma",
    "pervma.kernel.memory",
    "pervma.kernel.mmap",
    "pervma.kernel.mprotect",
)

_CMP_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt,
    ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}
_BUG_FUNC = re.compile(r"_b\d\d$")
# The model's own checks, called from kernel code: mmap_assert_locked(),
# vma_assert_attached(), lockdep_acquire(), kasan_check(), validate_mm() ...
# The functions that are such checks are left alone too.
_ORACLE = re.compile(r"assert|^lockdep_|kasan|^validate_mm|^check_no_locks_held$"
                     r"|^check_attached_vma_store$|^check_fault_vma$|^_call_trace$|_report_"
                     r"|^report$")
# The model's declarations to its drivers, not kernel code: a step and the
# locations it touches (``await Op(...)``, ``await store(...)`` before the
# Python assignment it stands for, ``vma_write_fields()``), the hidden
# writes (``touch()``), LKMM's initialising stores (``init_store()``) and the
# simulator's price of some work (``work()``).  Dropping or moving one makes
# the model's bookkeeping wrong, not the kernel: what checks that is
# pervma.check.differential.exhaustive, which enumerates the states with no
# reduction and so needs no declared dependency.
_ANNOTATION = frozenset({"Op", "store", "vma_write_fields", "touch", "touch_read", "init_store",
                         "work"})


@dataclass(frozen=True, slots=True)
class Mutant:
    """One change: the ``index``-th site (in source order) of operator ``op``
    in ``module``, inside ``function``, at ``line``; ``text`` shows it."""

    module: str
    op: str
    index: int
    function: str
    line: int
    text: str

    @property
    def ident(self) -> str:
        """A name for it: ``mmap_lock:drop:12``."""
        return f"{self.module.rsplit('.', 1)[-1]}:{self.op}:{self.index}"

    def describe(self) -> str:
        short = self.module.rsplit(".", 1)[-1]
        return f"{short}.py:{self.line} {self.function}(): {self.text}"


class UsageError(ValueError):
    """A mutant that does not exist (an unknown module, operator or index)."""


def _source(module: str) -> tuple[str, str]:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise UsageError(f"no Python source for module {module!r}")
    return spec.origin, Path(spec.origin).read_text()


def _is_oracle(call: ast.expr) -> bool:
    """A call into the oracles: ``debug.x(...)`` or a check named like one."""
    if isinstance(call, ast.Await):
        call = call.value
    if not isinstance(call, ast.Call):
        return False
    f = call.func
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "debug":
        return True
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return _ORACLE.search(name) is not None


def _is_annotation(stmt: ast.stmt) -> bool:
    """A statement that only declares something to the drivers (_ANNOTATION)."""
    if not isinstance(stmt, ast.Expr):
        return False
    call = stmt.value.value if isinstance(stmt.value, ast.Await) else stmt.value
    if not isinstance(call, ast.Call):
        return False
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return name in _ANNOTATION


def _is_bug_call(e: ast.expr) -> bool:
    return isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and e.func.attr == "bug"


def _bug_branch(test: ast.expr) -> bool | None:
    """For an ``if`` on a historical switch, whether its body is the
    historical branch (``if ...bug("Bxx"):``, True) or its ``else`` is (``if
    not ...bug("Bxx"):``, False); None for any other test.  A switch combined
    with other conditions (``if mm is not None and ...bug("B16"):``) is
    historical in its body too."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and _is_bug_call(test.operand):
        return False
    if _is_bug_call(test):
        return True
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) \
            and any(_is_bug_call(v) for v in test.values):
        return True
    return None


def _has_await(stmt: ast.stmt) -> bool:
    return any(isinstance(n, ast.Await) for n in ast.walk(stmt))


def _simple(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Expr):
        return not isinstance(stmt.value, ast.Constant)  # a docstring
    return isinstance(stmt, ast.Assign | ast.AugAssign | ast.AnnAssign)


class _Sites:
    """Every mutable site of a module, in source order, per operator: each a
    (function qualname, line, text, apply) where apply changes the tree in
    place."""

    def __init__(self, tree: ast.Module) -> None:
        self.sites: dict[str, list[tuple[str, int, str, Any]]] = {op: [] for op in OPERATORS}
        self._stack: list[str] = []
        self._visit_body(tree.body)

    # -- the walk ---------------------------------------------------------------
    def _visit_body(self, body: list[ast.stmt]) -> None:
        in_func = bool(self._stack)
        if in_func:
            self._body_sites(body)
        for stmt in body:
            self._visit_stmt(stmt)

    def _visit_stmt(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            if _BUG_FUNC.search(stmt.name) or _ORACLE.search(stmt.name):
                return
            self._stack.append(stmt.name)
            self._visit_body(stmt.body)
            self._stack.pop()
            return
        if isinstance(stmt, ast.ClassDef):
            self._stack.append(stmt.name)
            for s in stmt.body:
                self._visit_stmt(s)
            self._stack.pop()
            return
        if not self._stack:
            return
        if isinstance(stmt, ast.Assert) or (isinstance(stmt, ast.Expr) and _is_oracle(stmt.value)):
            return
        if isinstance(stmt, ast.If) and _bug_branch(stmt.test) is not None:
            # a historical switch: only its mainline branch is mutated
            self._visit_body(stmt.orelse if _bug_branch(stmt.test) else stmt.body)
            return
        bodies = [v for f, v in ast.iter_fields(stmt) if f in ("body", "orelse", "finalbody")]
        if not bodies:
            self._exprs(stmt)
            return
        for _f, v in ast.iter_fields(stmt):
            if isinstance(v, ast.expr):
                self._exprs(v)
        for item in getattr(stmt, "items", []):
            self._exprs(item.context_expr)
        for body in bodies:
            self._visit_body(body)
        for h in getattr(stmt, "handlers", []):
            self._visit_body(h.body)

    # -- the sites ----------------------------------------------------------------
    def _func(self) -> str:
        return ".".join(self._stack)

    def _body_sites(self, body: list[ast.stmt]) -> None:
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Await | ast.Call) \
                    and not _is_oracle(stmt.value) and not _is_annotation(stmt):
                self.sites["drop"].append((self._func(), stmt.lineno, ast.unparse(stmt),
                                           _drop(body, i)))
        for i in range(len(body) - 1):
            a, b = body[i], body[i + 1]
            if not (_simple(a) and _simple(b)) or not (_has_await(a) or _has_await(b)):
                continue
            if any(isinstance(s, ast.Expr) and _is_oracle(s.value) or _is_annotation(s)
                   for s in (a, b)):
                continue
            text = f"{ast.unparse(a)}  <->  {ast.unparse(b)}"
            self.sites["swap"].append((self._func(), a.lineno, text, _swap(body, i)))

    def _exprs(self, node: ast.AST) -> None:
        for n in ast.walk(node):
            if isinstance(n, ast.Compare) and len(n.ops) == 1 and type(n.ops[0]) in _CMP_SWAP:
                new = _CMP_SWAP[type(n.ops[0])]()
                text = f"{ast.unparse(n)}  ->  " + ast.unparse(
                    ast.Compare(left=n.left, ops=[new], comparators=n.comparators))
                self.sites["cmp"].append((self._func(), n.lineno, text, _set_op(n, new)))
            elif isinstance(n, ast.Call) and not _is_oracle(n) \
                    and not _is_annotation(ast.Expr(value=n)):
                for arg in list(n.args) + [k.value for k in n.keywords]:
                    if isinstance(arg, ast.Constant) and type(arg.value) is bool:
                        text = f"{ast.unparse(n)}: {arg.value} -> {not arg.value}"
                        self.sites["bool"].append((self._func(), arg.lineno, text, _flip(arg)))


# Each site's change, as a function of the tree's one mutation: it applies
# the change and returns what marks the site as reached -- a statement to
# put in the body before it (drop, swap) or the expression to wrap (cmp,
# bool) -- see _mark.
def _hit_stmt(at: ast.stmt) -> ast.stmt:
    call = ast.Call(func=ast.Name(id=HIT, ctx=ast.Load()), args=[], keywords=[])
    return ast.copy_location(ast.Expr(value=call), at)


def _drop(body: list[ast.stmt], i: int) -> Any:
    def apply() -> None:
        body[i] = _hit_stmt(body[i])  # the statement is gone; reaching it is what is counted
    return apply


def _swap(body: list[ast.stmt], i: int) -> Any:
    def apply() -> None:
        body[i], body[i + 1] = body[i + 1], body[i]
        body.insert(i, _hit_stmt(body[i]))
    return apply


def _set_op(n: ast.Compare, new: ast.cmpop) -> Any:
    def apply() -> ast.expr:
        n.ops = [new]
        return n
    return apply


def _flip(c: ast.Constant) -> Any:
    def apply() -> ast.expr:
        c.value = not c.value
        return c
    return apply


class _Wrap(ast.NodeTransformer):
    """Puts ``HIT(expr)`` (which returns ``expr``) where ``expr`` was."""

    def __init__(self, target: ast.expr) -> None:
        self.target = target

    def visit(self, node: ast.AST) -> Any:
        if node is self.target:
            call = ast.Call(func=ast.Name(id=HIT, ctx=ast.Load()), args=[node], keywords=[])
            return ast.copy_location(call, node)
        return super().visit(node)


def mutants(module: str, ops: Sequence[str] = OPERATORS) -> list[Mutant]:
    """Every mutant of ``module`` by the operators ``ops``, in a fixed
    order (operator, then source order)."""
    bad = [op for op in ops if op not in OPERATORS]
    if bad:
        raise UsageError(f"unknown mutation operator {bad[0]!r}; choose from {', '.join(OPERATORS)}")
    _, src = _source(module)
    sites = _Sites(ast.parse(src)).sites
    return [Mutant(module, op, i, func, line, text)
            for op in ops for i, (func, line, text, _) in enumerate(sites[op])]


def mutated_code(m: Mutant) -> CodeType:
    """The module's code with the mutant's one change (original line numbers),
    and a call to ``HIT`` where it is (the dropped statement's place, before
    the swapped pair, around the changed comparison or constant)."""
    path, src = _source(m.module)
    tree = ast.parse(src)
    sites = _Sites(tree).sites
    if m.op not in sites or not 0 <= m.index < len(sites[m.op]):
        raise UsageError(f"{m.module} has no {m.op} mutant {m.index}")
    func, line, text, apply = sites[m.op][m.index]
    if (func, line, text) != (m.function, m.line, m.text):
        raise UsageError(f"mutant {m.ident} is not the one asked for (the source changed?)")
    target = apply()
    if target is not None:
        tree = _Wrap(target).visit(tree)
    ast.fix_missing_locations(tree)
    return compile(tree, path, "exec")


class _Loader(importlib.abc.Loader):
    def __init__(self, code: CodeType) -> None:
        self.code = code

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__[HIT] = _hit
        exec(self.code, module.__dict__)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, module: str, code: CodeType) -> None:
        self.module = module
        self.code = code

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != self.module:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        spec.loader = _Loader(self.code)
        return spec


def install(m: Mutant) -> None:
    """Make the next import of the mutant's module load the mutated code.
    The module must not be imported yet in this interpreter."""
    if m.module in sys.modules:
        raise RuntimeError(f"{m.module} is already imported: a mutant needs a fresh interpreter")
    sys.meta_path.insert(0, _Finder(m.module, mutated_code(m)))


def parse_ident(ident: str, modules: Sequence[str] = DEFAULT_MODULES) -> Mutant:
    """The mutant named ``short:op:index`` (as :attr:`Mutant.ident` prints it)."""
    try:
        short, op, idx = ident.split(":")
        index = int(idx)
    except ValueError:
        raise UsageError(f"a mutant is named module:operator:index, not {ident!r}") from None
    mod = next((m for m in modules if m.rsplit(".", 1)[-1] == short),
               short if "." in short else f"pervma.kernel.{short}")
    return mutant(mod, op, index)


def mutant(module: str, op: str, index: int) -> Mutant:
    """The ``index``-th mutant of ``module`` by operator ``op``."""
    ms = mutants(module, (op,))
    if not 0 <= index < len(ms):
        raise UsageError(f"{module} has no {op} mutant {index}")
    return ms[index]


def all_mutants(modules: Sequence[str] = DEFAULT_MODULES,
                ops: Sequence[str] = OPERATORS) -> Iterator[Mutant]:
    for mod in modules:
        yield from mutants(mod, ops)


# --- a campaign ----------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """How each mutant is judged.

    Every scenario of ``scenarios`` (default: those of ``pervma check --all``)
    under every preset of ``presets`` is searched statefully (the default
    search) with at most ``max_executions`` executions (pruned ones
    included), until one finds a violation (``stop_at_kill``).  A mutant no
    run kills is then searched again, statelessly, with at most
    ``stateless_executions`` executions, on every scenario whose stateful run
    reached the change, completed and found nothing: a violation there is a
    state the stateful search pruned wrongly (``diverged``); a thread past
    the livelock bound there (``spins``), where the unmutated model's
    stateless search stays under it (not in ``spinning``: :func:`baseline`),
    is a busy-wait the mutant made, which the stateful search closes as a
    cycle another thread breaks."""

    presets: tuple[str, ...] = ("universal",)
    scenarios: tuple[str, ...] | None = None
    max_executions: int = 20_000
    stateless_executions: int = 2_000
    cross_check: bool = True
    stop_at_kill: bool = True
    # "preset/scenario" of the runs whose stateless search hits the livelock
    # bound on the unmutated model too (a spin-wait of the scenario's own:
    # mmu_interval_read_retry(), a userfaultfd wait): no sign of a mutant there
    spinning: tuple[str, ...] = ()


def baseline(plan: Plan) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The plan's runs on the unmutated model, in this interpreter: every
    scenario under every preset searched statefully and statelessly with the
    plan's budgets.  Returns the runs (each must be clean: a violation here
    is the library's, not a mutant's) and ``Plan.spinning``."""
    from pervma.check.api import run_guarded
    from pervma.check.scenario import all_scenarios

    names = list(plan.scenarios) if plan.scenarios else [s.name for s in all_scenarios()]
    rows: list[dict[str, Any]] = []
    spinning: list[str] = []
    for preset in plan.presets:
        for name in names:
            for stateless, cap in ((False, plan.max_executions), (True, plan.stateless_executions)):
                res = run_guarded({"scenario": name, "preset": preset, "stateless": stateless,
                                   "max_executions": cap, "minimise": False})
                row = _row(res, False)
                row["stateless"] = stateless
                rows.append(row)
                if stateless and res.livelock:
                    spinning.append(f"{preset}/{name}")
    return rows, tuple(spinning)


# What a mutant's outcome is, from the runs (worst first where several apply).
STATUSES = ("diverged", "killed", "crashed", "livelock", "spins", "survived", "incomplete",
            "unreached", "timeout", "failed")


def _kind(res: Any) -> str | None:
    """What a run says of the mutant: ``killed`` (an oracle: lockdep, KASAN,
    the model's assertions, validate_mm, a deadlock ...), ``crashed`` (a
    Python error in the mutated model: the change broke the code, not the
    protocol), ``livelock``, or None (clean)."""
    if res.violation is not None:
        kind, msg = res.violation
        if kind == "exception" and "raised AssertionError" not in msg:
            return "crashed"
        return "killed"
    if res.livelock:
        return "livelock"
    if res.error:
        return "crashed"
    return None


def _row(res: Any, reached: bool) -> dict[str, Any]:
    return {"scenario": res.scenario, "preset": res.preset, "reached": reached,
            "complete": res.complete, "executions": res.executions + res.pruned,
            "violation": list(res.violation) if res.violation else None,
            "livelock": res.livelock, "error": res.error, "verdict": _kind(res)}


def judge(m: Mutant, plan: Plan) -> dict[str, Any]:
    """Run the plan on mutant ``m`` in this interpreter (which must not have
    imported its module yet: :func:`install`)."""
    install(m)
    from pervma.check.api import run_guarded
    from pervma.check.scenario import all_scenarios

    names = list(plan.scenarios) if plan.scenarios else [s.name for s in all_scenarios()]
    rows: list[dict[str, Any]] = []
    verdict: str | None = None
    for preset in plan.presets:
        for name in names:
            before = HITS[0]
            res = run_guarded({"scenario": name, "preset": preset,
                               "max_executions": plan.max_executions, "minimise": False})
            row = _row(res, HITS[0] > before)
            rows.append(row)
            if row["verdict"] is not None and verdict is None:
                verdict = row["verdict"]
            if verdict is not None and plan.stop_at_kill:
                break
        if verdict is not None and plan.stop_at_kill:
            break
    reached = any(r["reached"] for r in rows)
    cross: list[dict[str, Any]] = []
    if verdict is None and reached and plan.cross_check:
        for r in rows:
            if not (r["reached"] and r["complete"]):
                continue
            before = HITS[0]
            res = run_guarded({"scenario": r["scenario"], "preset": r["preset"],
                               "stateless": True, "minimise": False,
                               "max_executions": plan.stateless_executions})
            cross.append(_row(res, HITS[0] > before))
    if verdict is None:
        if any(c["violation"] is not None for c in cross):
            verdict = "diverged"
        elif any(c["livelock"] and f"{c['preset']}/{c['scenario']}" not in plan.spinning
                 for c in cross):
            # a thread spins until another runs: the stateless search's
            # livelock bound, a cycle the stateful search closes because
            # another thread breaks it (stateful.py, "Cycles")
            verdict = "spins"
        elif not reached:
            verdict = "unreached"
        elif any(r["reached"] and not r["complete"] for r in rows):
            verdict = "incomplete"
        else:
            verdict = "survived"
    return {"mutant": m.ident, "where": m.describe(), "status": verdict,
            "runs": rows, "stateless": cross}


def run_mutant(m: Mutant, plan: Plan, timeout: float | None = None) -> dict[str, Any]:
    """:func:`judge` in a fresh interpreter (``python -m
    pervma.check.mutants``): its result, or status ``timeout`` (the mutated
    model looped without a scheduling point: no step count can bound it) or
    ``failed`` (the interpreter died)."""
    import json
    import subprocess

    args = [sys.executable, "-m", "pervma.check.mutants", m.module, m.op, str(m.index),
            json.dumps(asdict(plan))]
    base = {"mutant": m.ident, "where": m.describe(), "runs": [], "stateless": []}
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout"}
    lines = p.stdout.strip().splitlines()
    try:
        if p.returncode == 0 and lines:
            out: dict[str, Any] = json.loads(lines[-1])
            return out
    except ValueError:
        pass
    tail = (p.stderr.strip().splitlines() or ["no result on its output"])[-1]
    return {**base, "status": "failed", "error": tail}


_TESTS_CODE = """
import sys
from pervma.check.mutants import install, mutant
install(mutant({module!r}, {op!r}, {index}))
import pytest
sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', '-o', 'addopts=', *{paths!r}]))
"""


def run_tests(m: Mutant, paths: Sequence[str], timeout: float | None = None) -> str:
    """The unit tests ``paths`` (pytest, stopping at the first failure) in a
    fresh interpreter whose import of the mutant's module loads the mutated
    code: ``killed`` (a test failed), ``passed``, ``timeout`` or ``failed``
    (pytest could not run: exit code 2-5 other than a failure)."""
    import subprocess

    code = _TESTS_CODE.format(module=m.module, op=m.op, index=m.index, paths=list(paths))
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout"
    return {0: "passed", 1: "killed"}.get(p.returncode, "failed")


def _main(argv: Sequence[str]) -> int:
    import json

    module, op, index, plan_json = argv
    raw = json.loads(plan_json)
    plan = Plan(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    try:
        m = mutant(module, op, int(index))
    except (UsageError, ValueError) as exc:
        print(f"pervma.check.mutants: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(judge(m, plan)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
