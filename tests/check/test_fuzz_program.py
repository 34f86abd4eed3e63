"""pervma fuzz, items 1 and 2 of issue #15: programs are drawn deterministically,
round-trip through their JSON schema, and bad input is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pervma.check.fuzz.generate import FUZZ_BASE, generate, generate_many
from pervma.check.fuzz.program import MAX_CALLS, MAX_THREADS, SCHEMA, VERSION, load_program, loads
from pervma.cli import main
from pervma.errors import InputError

A = FUZZ_BASE


def _doc(calls0: list[dict], calls1: list[dict] | None = None) -> dict:
    return {"schema": SCHEMA, "version": VERSION,
            "setup": {"processes": [{"name": "p", "vmas": [
                {"kind": "anon", "addr": hex(A), "pages": 2, "populate": True}]}]},
            "threads": [{"process": "p", "calls": calls0},
                        {"process": "p", "calls": calls1 or [{"call": "load",
                                                              "args": {"addr": hex(A)}}]}]}


def test_same_seed_same_programs_other_seed_other_programs() -> None:
    a = [p.dumps() for p in generate_many(7, 12)]
    b = [p.dumps() for p in generate_many(7, 12)]
    assert a == b
    assert a != [p.dumps() for p in generate_many(8, 12)]
    assert generate(7, 3).dumps() == a[3]  # program i does not depend on the ones before


def test_generated_programs_have_the_issue_shape() -> None:
    for prog in generate_many(1, 40):
        assert 2 <= len(prog.threads) <= MAX_THREADS
        assert all(1 <= len(t.calls) <= MAX_CALLS for t in prog.threads)
        assert 1 <= len(prog.processes) <= 2 and 1 <= len(prog.processes[0].vmas) <= 6
        if prog.uffd is not None:  # a thread of its own closes the userfaultfd: no fault
            closers = [t for t in prog.threads if any(c.call == "uffd_close" for c in t.calls)]
            assert [[c.call for c in t.calls] for t in closers] == [["uffd_close"]]


def test_arguments_are_drawn_around_the_vma_boundaries() -> None:
    """syzkaller-style: most addresses are a VMA boundary, a page off one or a
    page inside a VMA of the setup; a few are not."""
    near = far = 0
    for prog in generate_many(2, 60):
        vmas = [(v.addr, v.addr + v.pages * 4096) for p in prog.processes for v in p.vmas]
        for t in prog.threads:
            for c in t.calls:
                for k in ("addr", "old_addr"):
                    if k in c.args:
                        a = c.args[k]
                        if any(lo - 4096 <= a <= hi + 4096 for lo, hi in vmas):
                            near += 1
                        else:
                            far += 1
    assert near > 2 * far > 0


def test_schema_round_trip_and_hex_addresses(tmp_path) -> None:
    for prog in generate_many(3, 20):
        text = prog.dumps()
        again = loads(text)
        assert again.to_json() == prog.to_json() and again.dumps() == text
    f = tmp_path / "p.json"
    f.write_text(json.dumps(_doc([{"call": "munmap", "args": {"addr": hex(A), "len": 4096}}])))
    prog = load_program(f)
    assert prog.threads[0].calls[0].args == {"addr": A, "len": 4096}
    assert '"addr": "0x10000000"' in prog.dumps()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(version=2), "schema version 2 is not supported (this pervma reads version 1)"),
    (lambda d: d.update(schema="x"), "schema is 'x', want 'pervma-fuzz-program'"),
    (lambda d: d["threads"][0]["calls"][0].update(call="munmapp"),
     "threads[0].calls[0]: unknown call 'munmapp'; did you mean munmap"),
    (lambda d: d["threads"][0]["calls"][0]["args"].update(prot=1),
     "threads[0].calls[0]: munmap takes no argument 'prot' (it takes addr, len)"),
    (lambda d: d["threads"][0]["calls"][0]["args"].pop("len"),
     "threads[0].calls[0]: munmap needs argument 'len'"),
    (lambda d: d["threads"][0]["calls"][0]["args"].update(len="lots"),
     "threads[0].calls[0].args.len: want an integer or a \"0x...\" string, got 'lots'"),
    (lambda d: d["setup"]["processes"][0]["vmas"][0].update(kind="huge"), "unknown kind 'huge'"),
    (lambda d: d["threads"][0].update(process="r"), "threads[0]: process 'r' is not in the setup"),
    (lambda d: d["threads"][0]["calls"].__setitem__(0, {"call": "uffd_close"}),
     "uffd_close needs a userfaultfd in the setup"),
])
def test_bad_programs_are_one_line_errors(mutate, message) -> None:
    d = _doc([{"call": "munmap", "args": {"addr": hex(A), "len": 4096}}])
    mutate(d)
    with pytest.raises(InputError) as ei:
        loads(json.dumps(d), "f.json")
    assert message in str(ei.value) and "\n" not in str(ei.value)
    assert str(ei.value).startswith("f.json: ")


def test_check_program_usage_errors_exit_2(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["check", "--program", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pervma: {bad}: not valid JSON") and err.count("\n") == 1
    d = _doc([{"call": "munmap", "args": {"addr": hex(A), "len": 4096}}])
    d["version"] = 9
    bad.write_text(json.dumps(d))
    assert main(["check", "--program", str(bad)]) == 2
    assert "schema version 9 is not supported" in capsys.readouterr().err
    assert main(["check", "--program", str(tmp_path / "missing.json")]) == 2
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(_doc([{"call": "load", "args": {"addr": hex(A)}}])))
    assert main(["check", "fault-vs-munmap", "--program", str(ok)]) == 2
    assert "--program explores one program" in capsys.readouterr().err
    # A setup the model refuses (a VMA mapped at an address it cannot have).
    d = _doc([{"call": "load", "args": {"addr": hex(A)}}])
    d["setup"]["processes"][0]["vmas"][0]["addr"] = "0x10000001"
    bad.write_text(json.dumps(d))
    assert main(["check", "--program", str(bad)]) == 2
    assert "setup: process p vma 0 (anon at 0x10000001, 2 pages): mmap failed with EINVAL" in \
        capsys.readouterr().err


def test_check_program_explores_one_program(tmp_path, capsys) -> None:
    f = tmp_path / "ok.json"
    f.write_text(json.dumps(_doc([{"call": "munmap", "args": {"addr": hex(A), "len": 4096}}],
                                 [{"call": "load", "args": {"addr": hex(A)}}])))
    assert main(["check", "--program", str(f), "--preset", "universal,legacy"]) == 0
    out = capsys.readouterr().out
    assert f"{f} [universal] dpor: complete, clean" in out
    assert f"{f} [legacy] dpor: complete, clean" in out
    assert "serial-order oracle:" in out and " 0 skipped" in out


def test_fuzz_writes_a_new_folder_only(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["fuzz", "--seed", "4", "--programs", "2", "--max-executions", "20", "--pct", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("\nprogram ") + out.startswith("program ") == 2
    assert "2 programs, 0 with a violation: 0 unique violations (0 hits); " in out
    assert " in the corpus; results in pervma-fuzz-seed4/" in out
    summary = json.loads((tmp_path / "pervma-fuzz-seed4" / "summary.json").read_text())
    assert summary["programs_done"] == 2 and summary["findings"] == []
    assert summary["coverage"] and all(":" in c for c in summary["coverage"])
    assert main(args) == 0  # a second run: a second folder, the first untouched
    assert "results in pervma-fuzz-seed4-2/" in capsys.readouterr().out
    mine = tmp_path / "mine"
    mine.mkdir()
    assert main(args + ["--out", str(mine)]) == 2
    assert "exists; pervma fuzz writes only into a new folder" in capsys.readouterr().err
    assert list(mine.iterdir()) == []


def test_the_generator_never_imports_the_scenario_library() -> None:
    code = ("import sys\n"
            "from pervma.config import Config\n"
            "from pervma.check.fuzz.generate import generate\n"
            "from pervma.check.fuzz.explore import explore_program\n"
            "r = explore_program(generate(0, 1), Config.preset('universal'), dpor_executions=5,"
            " pct_executions=0)\n"
            "assert 'pervma.check.scenarios' not in sys.modules, 'scenario library imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_two_campaigns_of_one_seed_started_together_get_two_folders(tmp_path, monkeypatch) -> None:
    """The results folder is made when the campaign starts, not when it ends:
    four campaigns of seed 2026 started side by side (the eleventh session
    started four so) all picked pervma-fuzz-seed2026-2, and each one's results
    would have replaced the one before.  A campaign that fails before writing
    anything leaves no empty folder behind."""
    from pervma.check.fuzz.cmd import _new_dir, _unreserve

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pervma-fuzz-seed7").mkdir()
    (tmp_path / "pervma-fuzz-seed7" / "mine.txt").write_text("kept")
    first, second = _new_dir(None, 7), _new_dir(None, 7)
    assert (first, second) == (Path("pervma-fuzz-seed7-2"), Path("pervma-fuzz-seed7-3"))
    assert first.is_dir() and second.is_dir() and list(first.iterdir()) == []
    _unreserve(second)
    assert not second.exists() and first.is_dir()
    assert (tmp_path / "pervma-fuzz-seed7" / "mine.txt").read_text() == "kept"
    (first / "result").write_text("x")
    _unreserve(first)  # not empty: kept
    assert (first / "result").exists()
