"""Hypothesis fuzzing of every file format pervma reads (.config fragments,
replay JSON, BTF), through the CLI in-process: no traceback, the documented
exit code, and a malformed file is one line on stderr with exit 2."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import DONE, EXPLORING, REPLAY, assert_clean, run_main

FUZZ = settings(max_examples=50, derandomize=True, deadline=60_000,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


def _file(data: bytes, name: str) -> Path:
    d = Path(tempfile.mkdtemp(dir="."))
    (d / name).write_bytes(data)
    return d / name


# -- .config ------------------------------------------------------------------------------

SYMBOLS = ["SMP", "PREEMPT", "PREEMPTION", "PER_VMA_LOCK", "PER_VMA_LOCK_STATS", "LOCKDEP",
           "DEBUG_VM", "KASAN", "NR_CPUS", "X86_64", "ARM64", "X86_32", "UNKNOWN_THING"]
VALUES = ["y", "n", "m", "", "1", "0", "4", "²", "٣", "99999999999999999999", "-1", "\"str\"",
          "y # comment", "yes"]
CONFIG_LINE = st.one_of(
    st.builds(lambda s, v: f"CONFIG_{s}={v}", st.sampled_from(SYMBOLS), st.sampled_from(VALUES)),
    st.builds(lambda s: f"# CONFIG_{s} is not set", st.sampled_from(SYMBOLS)),
    st.sampled_from(["", "#", "# comment", "CONFIG_", "=y", "CONFIG_SMP", "\tCONFIG_SMP=y "]),
    st.text(max_size=30),
)


@given(st.lists(CONFIG_LINE, max_size=8), st.sampled_from(["\n", "\r\n", "\r"]))
@FUZZ
def test_config_fragments(lines: list[str], sep: str) -> None:
    f = _file(sep.join(lines).encode("utf-8", "surrogatepass"), "frag.config")
    r = run_main(["check", "toy-locked", "--config", str(f), "--max-executions", "5"])
    assert_clean(r, EXPLORING)
    if r.code == 2:
        r.one_line_error()


@given(st.binary(max_size=200))
@FUZZ
def test_config_bytes(data: bytes) -> None:
    f = _file(data, "bytes.config")
    r = run_main(["check", "toy-locked", "--config", str(f), "--max-executions", "5"])
    assert_clean(r, EXPLORING)
    if r.code == 2:
        assert r.one_line_error().startswith(f"pervma: {f}:") or "--config" in r.err


# -- replay JSON --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def replay_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("replay")
    r = run_main(["check", "toy-racy", "--trace-out", str(d)])
    assert r.code == 1
    doc: dict[str, Any] = json.loads((d / "toy-racy.replay.json").read_text())
    return doc


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
FIELDS = ["format", "scenario", "preset", "bugs", "config", "schedule", "strategy", "seed",
          "model_version", "violation", "preemptions", "threads", "steps", "extra"]


@given(st.lists(st.tuples(st.sampled_from(FIELDS), st.one_of(st.just(KeyError), JSON)),
                min_size=1, max_size=3))
@FUZZ
def test_replay_documents(replay_doc: dict[str, Any], edits: list[tuple[str, Any]]) -> None:
    doc = dict(replay_doc)
    for key, value in edits:
        if value is KeyError:
            doc.pop(key, None)
        else:
            doc[key] = value
    f = _file(json.dumps(doc).encode(), "x.replay.json")
    r = run_main(["replay", str(f)])
    assert_clean(r, REPLAY)
    if r.code == 2:
        r.one_line_error()


@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8",
                                                                              "surrogatepass")))
@FUZZ
def test_replay_bytes(data: bytes) -> None:
    f = _file(data, "junk.replay.json")
    r = run_main(["replay", str(f)])
    assert_clean(r, REPLAY)
    assert r.code == 2  # no byte string of this size is a valid replay file
    r.one_line_error()


@given(st.integers(17, 60_000), st.sampled_from(["[", "{\"a\":", "[{\"b\":"]))
@settings(max_examples=8, derandomize=True, deadline=60_000,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_deeply_nested_replay(depth: int, opener: str) -> None:
    f = _file((opener * depth).encode(), "deep.replay.json")
    r = run_main(["replay", str(f)])
    assert_clean(r, {2})
    assert "levels deep" in r.one_line_error()


# -- BTF ----------------------------------------------------------------------------------

def _btf(types: bytes, strings: bytes) -> bytes:
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


# A struct vm_area_struct { int a; } with its int: a valid, tiny BTF to mutate.
_STRS = b"\0int\0vm_area_struct\0a\0"
_TYPES = (struct.pack("<III", 1, (1 << 24), 4) + struct.pack("<I", 32)          # INT int
          + struct.pack("<III", 5, (4 << 24) | 1, 4) + struct.pack("<III", 19, 1, 0))
VALID_BTF = _btf(_TYPES, _STRS)


@given(st.one_of(
    st.binary(max_size=120),
    st.integers(0, len(VALID_BTF)).map(lambda n: VALID_BTF[:n]),
    st.tuples(st.integers(0, len(VALID_BTF) - 1), st.integers(0, 255)).map(
        lambda t: VALID_BTF[:t[0]] + bytes([t[1]]) + VALID_BTF[t[0] + 1:]),
))
@FUZZ
def test_btf_bytes(data: bytes) -> None:
    f = _file(data, "vmlinux.btf")
    r = run_main(["layout", "vm_area_struct", "--btf", str(f)])
    assert_clean(r, DONE)
    if r.code == 2:
        r.one_line_error()


def test_the_tiny_btf_is_read() -> None:
    """The mutation base is itself valid, so the mutations start from a real layout."""
    f = _file(VALID_BTF, "vmlinux.btf")
    r = run_main(["layout", "vm_area_struct", "--btf", str(f), "--json"])
    assert r.code == 0, r.err
    assert json.loads(r.out)["size"] == 4
