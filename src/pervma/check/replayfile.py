"""Reading replay files: a bounded parse and a versioned schema.

``pervma replay FILE`` reads files written by ``pervma check --trace-out`` (format
``pervma-replay/1``, described in :mod:`pervma.check.output`) and by ``pervma
fuzz`` (format ``pervma-replay/2``: format 1 plus an optional ``program``, a
generated program as :mod:`pervma.check.fuzz.program` writes it, which the
scenario ``fuzz-program`` needs and only it takes).  A file is read
at most :data:`MAX_BYTES` long, its JSON nesting is measured *before* it is
parsed (so a 50,000-deep file is a one-line error, not a ``RecursionError``),
and every field is checked against :data:`SCHEMAS`: types, a known scenario,
preset and bug IDs, a schedule of small non-negative ints.  A later format
adds an entry to :data:`SCHEMAS` that extends the previous one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pervma.errors import InputError, PervmaError

MAX_BYTES = 8 << 20
MAX_DEPTH = 16
MAX_SCHEDULE = 1_000_000
MAX_THREADS = 64
MAX_CONFIG_CHARS = 64 << 10
FORMAT_V1 = "pervma-replay/1"
FORMAT_V2 = "pervma-replay/2"
#: The scenario name of a replay file that embeds a generated program (format 2).
PROGRAM_SCENARIO = "fuzz-program"

_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (strings skipped)."""
    depth = deepest = 0
    for m in _TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def loads(text: str, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` and turns
    every parse error into one :class:`InputError` line."""
    d = json_depth(text)
    if d > max_depth:
        raise InputError(f"{what}: JSON nested {d} levels deep; at most {max_depth} allowed")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{what}: not valid JSON ({str(exc).splitlines()[0]})") from None


# -- field checks: each returns None when the value is fine, else what is wrong ---------

Check = Callable[[Any], str | None]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str(limit: int = 4096) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return f"wants a string, got {type(v).__name__}"
        return f"longer than {limit} characters" if len(v) > limit else None
    return check


def _opt(inner: Check) -> Check:
    return lambda v: None if v is None else inner(v)


def _int_range(lo: int, hi: int) -> Check:
    def check(v: Any) -> str | None:
        if not _is_int(v) or not lo <= v <= hi:
            return f"wants a whole number from {lo} to {hi}, got {v!r:.40}"
        return None
    return check


def _one_of(names: Callable[[], Any], what: str) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, str):
            return f"wants a {what} name (a string), got {type(v).__name__}"
        known = list(names())
        if v not in known:
            return f"unknown {what} {v!r:.60}; known: {', '.join(known)}"
        return None
    return check


def _scenario_names() -> list[str]:
    from pervma.check.scenario import all_scenarios

    return [s.name for s in all_scenarios(include_toys=True)]


def _preset_names() -> tuple[str, ...]:
    from pervma.config import PRESET_NAMES

    return PRESET_NAMES


def _bug_ids() -> list[str]:
    from pervma.check.catalogue import CATALOGUE

    return list(CATALOGUE)


def _scenario_or_program(v: Any) -> str | None:
    return None if v == PROGRAM_SCENARIO else _one_of(_scenario_names, "scenario")(v)


def _program(v: Any) -> str | None:
    from pervma.check.fuzz.program import from_json

    from_json(v)  # a malformed program raises a one-line InputError
    return None


def _list_of(item: Check, limit: int) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, list):
            return f"wants a list, got {type(v).__name__}"
        if len(v) > limit:
            return f"has {len(v)} items; at most {limit}"
        for i, x in enumerate(v):
            bad = item(x)
            if bad:
                return f"item {i}: {bad}"
        return None
    return check


def _violation(v: Any) -> str | None:
    if not isinstance(v, dict):
        return f"wants an object {{kind, message}}, got {type(v).__name__}"
    for key in ("kind", "message"):
        if key not in v:
            return f"lacks {key!r}"
        bad = _str(1 << 16)(v[key])
        if bad:
            return f"{key}: {bad}"
    return None


def _json_data(v: Any, depth: int = 0) -> str | None:
    """Plain JSON data (objects with string keys, lists, strings, ints),
    bounded: ``run_scope`` is the model's, checked only for its shape."""
    if depth > 8:
        return "nested too deeply"
    if isinstance(v, dict):
        items: list[Any] = list(v.values())
        if any(not isinstance(k, str) for k in v):
            return "has a key that is not a string"
    elif isinstance(v, list):
        items = v
    else:
        return None if (_is_int(v) or isinstance(v, str) and len(v) <= 4096) else \
            f"holds a {type(v).__name__} (wants strings, ints, lists, objects)"
    if len(items) > 4096:
        return f"has {len(items)} items; at most 4096"
    for x in items:
        bad = _json_data(x, depth + 1)
        if bad:
            return bad
    return None


def _plan_entry(v: Any) -> str | None:
    """One choice of a plan: [thread, its n-th choice point, writes back]."""
    if not (isinstance(v, list) and len(v) == 3 and all(_is_int(x) and x >= 0 for x in v)):
        return "wants [thread, choice point, writes back] of non-negative ints"
    if v[0] >= MAX_THREADS:
        return f"names thread {v[0]}; at most {MAX_THREADS - 1}"
    return None


def _strategy(v: Any) -> str | None:
    from pervma.check.api import STRATEGIES

    return _one_of(lambda: STRATEGIES, "strategy")(v)


@dataclass(frozen=True)
class Field:
    check: Check
    required: bool = False


#: format -> field -> check.  Later formats extend an earlier dict.
SCHEMAS: dict[str, dict[str, Field]] = {
    FORMAT_V1: {
        "format": Field(_str(), True),
        "scenario": Field(_one_of(_scenario_names, "scenario"), True),
        "preset": Field(_one_of(_preset_names, "preset")),
        "bugs": Field(_list_of(_one_of(_bug_ids, "bug"), 64)),
        "config": Field(_opt(_str(MAX_CONFIG_CHARS))),
        "schedule": Field(_list_of(_int_range(0, MAX_THREADS - 1), MAX_SCHEDULE), True),
        "strategy": Field(_strategy),
        "seed": Field(_opt(_int_range(0, 2**64 - 1))),
        "model_version": Field(_str(200)),
        "violation": Field(_violation, True),
        "preemptions": Field(_int_range(0, MAX_SCHEDULE)),
        "threads": Field(_list_of(_str(200), MAX_THREADS)),
        "steps": Field(_list_of(_str(4096), MAX_SCHEDULE)),
        "run_scope": Field(lambda v: _json_data(v) if isinstance(v, dict) else
                           f"wants an object, got {type(v).__name__}"),
        # an execution under LKMM (pervma.check.lkmm): absent, the run was SC
        "memory_model": Field(_one_of(lambda: ("sc", "lkmm"), "memory model")),
        "reads_from_plan": Field(_list_of(_plan_entry, MAX_SCHEDULE)),
        "reads_from": Field(_list_of(_str(4096), MAX_SCHEDULE)),
    },
}
SCHEMAS[FORMAT_V2] = {**SCHEMAS[FORMAT_V1],
                      "scenario": Field(_scenario_or_program, True),
                      "program": Field(_program)}


@dataclass
class ReplayDoc:
    """A validated replay file."""

    format: str
    scenario: str
    preset: str
    bugs: list[str]
    config: str | None
    schedule: list[int]
    kind: str
    message: str
    model_version: str | None
    raw: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    program: Any = None  # format 2: the generated program (a fuzz.program.Program)


def validate(doc: Any, what: str) -> ReplayDoc:
    """Check a parsed document against its format's schema."""
    if not isinstance(doc, dict):
        raise InputError(f"{what}: not a replay file (the top level is not an object)")
    fmt = doc.get("format")
    if not isinstance(fmt, str) or fmt not in SCHEMAS:
        known = ", ".join(SCHEMAS)
        raise InputError(f"{what}: not a replay file of a known format (format "
                         f"{fmt!r:.60}; this pervma reads {known})")
    schema = SCHEMAS[fmt]
    for key, f in schema.items():
        if key not in doc:
            if f.required:
                raise InputError(f"{what}: field {key!r} is missing")
            continue
        try:
            bad = f.check(doc[key])
        except PervmaError as exc:
            bad = str(exc)
        if bad:
            raise InputError(f"{what}: field {key!r} {bad}")
    warnings = [f"unknown field {k!r:.60} ignored" for k in doc if k not in schema]
    program = None
    if "program" in schema:
        if (doc["scenario"] == PROGRAM_SCENARIO) != (doc.get("program") is not None):
            raise InputError(f"{what}: scenario {PROGRAM_SCENARIO!r} and field 'program' "
                             "go together")
        if doc.get("program") is not None:
            from pervma.check.fuzz.program import from_json

            program = from_json(doc["program"])
    v = doc["violation"]
    return ReplayDoc(format=fmt, scenario=doc["scenario"], preset=doc.get("preset") or
                     "universal", bugs=list(doc.get("bugs") or []), config=doc.get("config"),
                     schedule=list(doc["schedule"]), kind=v["kind"], message=v["message"],
                     model_version=doc.get("model_version"), raw=doc, warnings=warnings,
                     program=program)


def read(path: str | Path) -> ReplayDoc:
    """Read and validate a replay file (one-line :class:`InputError` otherwise)."""
    from pervma.cliargs import read_text

    text = read_text(path, "replay file", MAX_BYTES)
    return validate(loads(text, str(path)), str(path))
