"""A generated program: a setup and 2-4 threads of calls, as versioned JSON.

A program is plain data, so a finding can be read, edited and run again
(``pervma check --program FILE``).  The document::

    {"schema": "pervma-fuzz-program", "version": 1,
     "setup": {"processes": [{"name": "p", "fork_of": null,
                              "vmas": [{"kind": "anon", "addr": "0x10000000", "pages": 2,
                                        "prot": "rw", "populate": true}]}],
               "uffd": null},
     "threads": [{"process": "p", "calls": [{"call": "munmap",
                                             "args": {"addr": "0x10000000", "len": 4096}}]}]}

Addresses and lengths may be written as integers or as ``"0x..."`` strings.
``fork_of`` names an earlier process: the process is its fork, taken after
the earlier one's VMAs are set up.  ``uffd`` (``{"process", "vma"}``)
registers that VMA of that process with a userfaultfd in missing mode.
:func:`load_program` validates everything and raises a one-line
:class:`~pervma.errors.InputError` for a malformed document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pervma.errors import InputError

SCHEMA = "pervma-fuzz-program"
VERSION = 1

#: The VMA kinds of the setup grammar (see :mod:`pervma.check.fuzz.world`).
VMA_KINDS = ("anon", "shared-anon", "file", "file-shared", "growsdown", "guard", "binder", "tcp")
PROTS = {"none": 0, "r": 1, "rw": 3, "rx": 5, "rwx": 7}
MAX_PROCESSES = 2
MAX_VMAS = 6
MAX_THREADS = 4
MAX_CALLS = 4
MAX_PAGES = 16


@dataclass(slots=True)
class VmaSpec:
    kind: str
    addr: int  # where it is mapped (MAP_FIXED); binder and tcp: where the kernel put it
    pages: int
    prot: str = "rw"
    populate: bool = False


@dataclass(slots=True)
class ProcessSpec:
    name: str
    vmas: list[VmaSpec] = field(default_factory=list)
    fork_of: str | None = None


@dataclass(slots=True)
class Call:
    call: str
    args: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ThreadSpec:
    process: str
    calls: list[Call] = field(default_factory=list)


@dataclass(slots=True)
class Program:
    processes: list[ProcessSpec]
    threads: list[ThreadSpec]
    uffd: tuple[str, int] | None = None  # (process, index of its VMA)

    def process(self, name: str) -> ProcessSpec:
        for p in self.processes:
            if p.name == name:
                return p
        raise KeyError(name)

    def calls(self) -> list[tuple[int, int, Call]]:
        """Every call as ``(thread, index in the thread, call)``."""
        return [(i, k, c) for i, t in enumerate(self.threads) for k, c in enumerate(t.calls)]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "version": VERSION,
            "setup": {
                "processes": [{"name": p.name, "fork_of": p.fork_of,
                               "vmas": [{"kind": v.kind, "addr": hex(v.addr), "pages": v.pages,
                                         "prot": v.prot, "populate": v.populate}
                                        for v in p.vmas]} for p in self.processes],
                "uffd": None if self.uffd is None else {"process": self.uffd[0],
                                                        "vma": self.uffd[1]},
            },
            "threads": [{"process": t.process,
                         "calls": [{"call": c.call, "args": {k: _show(k, v) for k, v in
                                                             c.args.items()}}
                                   for c in t.calls]} for t in self.threads],
        }

    def dumps(self) -> str:
        """The JSON text: one line per VMA and per call, so that a program reads
        (and diffs) like a listing."""
        d = self.to_json()
        one = json.dumps
        procs = ",\n".join(
            f'   {{"name": {one(p["name"])}, "fork_of": {one(p["fork_of"])}, "vmas": ['
            + ",".join(f"\n    {one(v)}" for v in p["vmas"]) + "]}"
            for p in d["setup"]["processes"])
        threads = ",\n".join(
            f'  {{"process": {one(t["process"])}, "calls": ['
            + ",".join(f"\n    {one(c)}" for c in t["calls"]) + "]}"
            for t in d["threads"])
        return (f'{{"schema": {one(SCHEMA)}, "version": {VERSION},\n'
                f' "setup": {{"processes": [\n{procs}],\n'
                f'  "uffd": {one(d["setup"]["uffd"])}}},\n'
                f' "threads": [\n{threads}]}}\n')

    def describe(self) -> str:
        """One line per thread: ``T0 (p): munmap(addr=0x10000000, len=0x1000); load(...)``."""
        lines = []
        for i, t in enumerate(self.threads):
            calls = "; ".join(f"{c.call}(" + ", ".join(f"{k}={_show(k, v)}" for k, v in
                                                       c.args.items()) + ")" for c in t.calls)
            lines.append(f"T{i} ({t.process}): {calls}")
        return "\n".join(lines)


_HEX_ARGS = ("addr", "len", "old_addr", "old_len", "new_len", "new_addr", "dst", "src")


def _show(key: str, v: int) -> int | str:
    return hex(v) if key in _HEX_ARGS and v >= 0 else v


def _fail(where: str, what: str) -> InputError:
    return InputError(f"program {where}: {what}")


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool):
        raise _fail(where, f"want an integer, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            pass
    raise _fail(where, f"want an integer or a \"0x...\" string, got {v!r}")


def _obj(v: Any, where: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(where, f"want an object, got {type(v).__name__}")
    missing = [k for k in keys if k not in v]
    if missing:
        raise _fail(where, f"missing {missing[0]!r}")
    extra = sorted(set(v) - set(keys) - set(optional))
    if extra:
        raise _fail(where, f"unknown field {extra[0]!r}")
    return v


def _list(v: Any, where: str, lo: int, hi: int) -> list[Any]:
    if not isinstance(v, list):
        raise _fail(where, f"want a list, got {type(v).__name__}")
    if not lo <= len(v) <= hi:
        raise _fail(where, f"want {lo} to {hi} entries, got {len(v)}")
    return v


def from_json(doc: Any) -> Program:
    """Validate a decoded document (see the module docstring)."""
    from pervma.check.fuzz.registry import get_call

    if not isinstance(doc, dict):
        raise _fail("document", f"want an object, got {type(doc).__name__}")
    if doc.get("schema") != SCHEMA:
        raise _fail("document", f"schema is {doc.get('schema')!r}, want {SCHEMA!r}")
    if doc.get("version") != VERSION:
        raise _fail("document", f"schema version {doc.get('version')!r} is not supported "
                    f"(this pervma reads version {VERSION})")
    d = _obj(doc, "document", ("schema", "version", "setup", "threads"))
    setup = _obj(d["setup"], "setup", ("processes",), ("uffd",))
    procs: list[ProcessSpec] = []
    for i, pd in enumerate(_list(setup["processes"], "setup.processes", 1, MAX_PROCESSES)):
        w = f"setup.processes[{i}]"
        pd = _obj(pd, w, ("name", "vmas"), ("fork_of",))
        name = pd["name"]
        if not isinstance(name, str) or not name.isidentifier() or any(q.name == name for q in procs):
            raise _fail(w, f"name {name!r} must be a new identifier")
        fork_of = pd.get("fork_of")
        if fork_of is not None and all(q.name != fork_of for q in procs):
            raise _fail(w, f"fork_of {fork_of!r} is not an earlier process")
        vmas = []
        for j, vd in enumerate(_list(pd["vmas"], w + ".vmas", 0, MAX_VMAS)):
            wv = f"{w}.vmas[{j}]"
            vd = _obj(vd, wv, ("kind", "addr", "pages"), ("prot", "populate"))
            if vd["kind"] not in VMA_KINDS:
                raise _fail(wv, f"unknown kind {vd['kind']!r}; choose one of {', '.join(VMA_KINDS)}")
            pages = _int(vd["pages"], wv + ".pages")
            if not 1 <= pages <= MAX_PAGES:
                raise _fail(wv, f"pages must be 1 to {MAX_PAGES}, got {pages}")
            prot = vd.get("prot", "rw")
            if prot not in PROTS:
                raise _fail(wv, f"unknown prot {prot!r}; choose one of {', '.join(PROTS)}")
            populate = vd.get("populate", False)
            if not isinstance(populate, bool):
                raise _fail(wv, f"populate must be true or false, got {populate!r}")
            vmas.append(VmaSpec(vd["kind"], _int(vd["addr"], wv + ".addr"), pages, prot, populate))
        procs.append(ProcessSpec(name, vmas, fork_of))
    uffd = None
    if setup.get("uffd") is not None:
        ud = _obj(setup["uffd"], "setup.uffd", ("process", "vma"))
        owner = next((p for p in procs if p.name == ud["process"]), None)
        vi = _int(ud["vma"], "setup.uffd.vma")
        if owner is None or not 0 <= vi < len(owner.vmas) or owner.vmas[vi].kind != "anon":
            raise _fail("setup.uffd", "must name an anon VMA of a process of the setup")
        uffd = (owner.name, vi)
    threads = []
    for i, td in enumerate(_list(d["threads"], "threads", 1, MAX_THREADS)):
        w = f"threads[{i}]"
        td = _obj(td, w, ("process", "calls"))
        if all(p.name != td["process"] for p in procs):
            raise _fail(w, f"process {td['process']!r} is not in the setup")
        calls = []
        for k, cd in enumerate(_list(td["calls"], w + ".calls", 1, MAX_CALLS)):
            wc = f"{w}.calls[{k}]"
            cd = _obj(cd, wc, ("call",), ("args",))
            entry = get_call(str(cd["call"]), wc)
            args_in = cd.get("args", {})
            if not isinstance(args_in, dict):
                raise _fail(wc + ".args", "want an object")
            extra = sorted(set(args_in) - set(entry.params))
            if extra:
                raise _fail(wc, f"{entry.name} takes no argument {extra[0]!r} "
                            f"(it takes {', '.join(entry.params) or 'none'})")
            missing = [p for p in entry.params if p not in args_in]
            if missing:
                raise _fail(wc, f"{entry.name} needs argument {missing[0]!r}")
            args = {p: _int(args_in[p], f"{wc}.args.{p}") for p in entry.params}
            if entry.needs == "uffd" and uffd is None:
                raise _fail(wc, f"{entry.name} needs a userfaultfd in the setup (setup.uffd)")
            calls.append(Call(entry.name, args))
        threads.append(ThreadSpec(td["process"], calls))
    return Program(procs, threads, uffd)


def loads(text: str, where: str = "program") -> Program:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno} "
                         f"column {exc.colno})") from None
    try:
        return from_json(doc)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def load_program(path: str | Path) -> Program:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"cannot read program {p}: {why}") from None
    return loads(text, str(p))
