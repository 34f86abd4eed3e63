"""The series' call-site map: every model function that takes a VMA lock for a
caller carries ``@call_site`` (found by AST), the annotations are well formed,
and ``pervma sites`` reports them with the checker's verdicts."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from tests.cli.conftest import run_main

import pervma.kernel
from pervma.check import sites as cmd
from pervma.check.scenario import HIDDEN_TAGS, get_scenario
from pervma.kernel.sites import PRE_FORMS, CallSite, all_sites, call_site

KERNEL = Path(pervma.kernel.__file__).parent
# The lookups whose callers are the series' sites.
TARGETS = {"lock_vma_under_rcu", "lock_next_vma", "lock_vma_under_rcu_wait",
           "vma_start_read_locked", "vma_start_read_locked_nested"}


def callers(source: str, targets: set[str] = TARGETS) -> set[str]:
    """Names of the functions in ``source`` that call one of ``targets``."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                f = sub.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if name in targets:
                    found.add(node.name)
    return found


def model_callers() -> set[tuple[str, str]]:
    return {(f"kernel/{p.name}", fn) for p in sorted(KERNEL.glob("*.py"))
            for fn in callers(p.read_text())}


def test_every_model_caller_of_the_lookups_is_annotated() -> None:
    annotated = {(s.model_file, s.model_function) for s in all_sites()}
    missing = model_callers() - annotated
    assert not missing, f"model functions calling a VMA-lock lookup without @call_site: {missing}"


def test_the_ast_search_finds_the_known_callers() -> None:
    # The guard above is only as good as its search: it must see these.
    assert {("kernel/fault.py", "_arch_fault"), ("kernel/madvise.py", "do_madvise"),
            ("kernel/task_mmu.py", "proc_maps_read"),
            ("kernel/task_mmu.py", "query_vma_find_by_addr"),
            ("kernel/binder.py", "binder_install_single_page"),
            ("kernel/binder.py", "binder_alloc_free_page"), ("kernel/tcp.py", "find_tcp_vma"),
            ("kernel/userfaultfd_mm.py", "uffd_lock_vma"),
            ("kernel/userfaultfd_mm.py", "uffd_move_lock"),
            ("kernel/mmap_lock.py", "lock_next_vma"),
            ("kernel/mmap_lock.py", "lock_vma_under_rcu_wait"),
            ("kernel/stackmap.py", "stack_map_lock_vma")} <= model_callers()


def test_an_unannotated_caller_is_reported() -> None:
    src = ("async def reader(mm, a):\n    return await lock_next_vma(mm, a)\n"
           "async def other(mm):\n    return await mmap_read_lock(mm)\n"
           "def method(x):\n    return x.lock_vma_under_rcu(1)\n")
    assert callers(src) == {"reader", "method"}


def test_each_annotated_function_is_a_caller_and_every_site_is_well_formed() -> None:
    sites = all_sites()
    assert len(sites) == 13
    assert {(s.model_file, s.model_function) for s in sites} == model_callers()
    assert len({(s.site, s.model) for s in sites}) == len(sites)
    for s in sites:
        assert s.pre_form in PRE_FORMS, s
        assert s.pre_series and s.series and s.version, s
        assert s.scenarios, s
        for name in s.scenarios:
            sc = get_scenario(name)  # raises for an unknown name
            assert not set(sc.tags) & set(HIDDEN_TAGS), (s.site, name)


def test_the_forms_follow_the_kernel() -> None:
    forms = {s.site: s.pre_form for s in all_sites()}
    assert forms["fs/proc/task_mmu.c:query_vma_find_by_addr"] == "ifdef"
    assert forms["mm/userfaultfd.c:uffd_lock_vma"] == "ifdef"
    assert forms["mm/userfaultfd.c:uffd_move_lock"] == "ifdef"
    assert forms["net/ipv4/tcp.c:find_tcp_vma"] == "stub-fallback"
    assert forms["arch/x86/mm/fault.c:do_user_addr_fault"] == "stub-fallback"
    assert forms["mm/mmap_lock.c:lock_vma_under_rcu_wait"] == "new"
    assert forms["kernel/bpf/stackmap.c:stack_map_lock_vma"] == "ifdef"
    arm = [s for s in all_sites() if s.kernel_file == "arch/arm64/mm/fault.c"]
    assert [(s.model, s.arch) for s in arm] == [("kernel/fault.py:_arch_fault", "arm64")]


def test_the_decorator_returns_the_function_itself() -> None:
    async def probe() -> int:
        return 1

    deco = call_site("mm/x.c:probe", pre_form="new", pre_series="a", series="b",
                     scenarios=("fault-vs-munmap",))
    assert deco(probe) is probe
    from pervma.kernel import sites as registry

    rec = [s for s in registry._SITES if s.kernel_function == "probe"]
    registry._SITES[:] = [s for s in registry._SITES if s.kernel_function != "probe"]
    assert [s.model_function for s in rec] == [
        "test_the_decorator_returns_the_function_itself.<locals>.probe"]
    assert rec[0].model_file.endswith("test_sites.py")


@pytest.mark.parametrize(("kernel", "form", "msg"), [
    ("mm/x.c:f", "maybe", "pre_form 'maybe' is not one of"),
    ("mm/x.c", "new", "want 'kernel/file.c:function'"),
    (":f", "new", "want 'kernel/file.c:function'"),
])
def test_a_malformed_annotation_is_refused(kernel: str, form: str, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        call_site(kernel, pre_form=form, pre_series="a", series="b", scenarios=())


def _site(*scenarios: str) -> CallSite:
    return CallSite("mm/x.c", "f", "new", "a", "b", scenarios, "kernel/x.py", "f", "7.0")


def _run(complete: bool = True, violation: bool = False, executions: int = 5) -> dict[str, object]:
    return {"complete": complete, "executions": executions,
            "violation": {"kind": "deadlock", "message": "all blocked"} if violation else None}


def test_a_sites_verdict_is_the_worst_of_its_runs() -> None:
    s = _site("fault-vs-munmap", "lock-vma-under-rcu-wait-misuse")
    results = {"fault-vs-munmap.legacy": _run(),
               "fault-vs-munmap.universal": _run(complete=False),
               "lock-vma-under-rcu-wait-misuse.universal": _run(violation=True, executions=3),
               "fault-vs-munmap.universal-up": _run(),
               "lock-vma-under-rcu-wait-misuse.universal-up": _run(complete=False)}
    row = cmd.site_rows([s], ["legacy", "universal", "universal-up"], results)[0]
    v = row["verdicts"]
    # the misuse scenario does not run under legacy: only the fault run counts there
    assert v["legacy"] == {"verdict": "clean", "runs": [
        {"scenario": "fault-vs-munmap", "state": "clean", "executions": 5, "violation": ""}]}
    assert v["universal"]["verdict"] == "violation"
    assert v["universal"]["runs"][1] == {"scenario": "lock-vma-under-rcu-wait-misuse",
                                         "state": "violation", "executions": 3,
                                         "violation": "deadlock: all blocked"}
    assert v["universal-up"]["verdict"] == "incomplete"
    assert cmd.exit_code([row]) == 1


def test_verdicts_na_not_checked_error_and_exit_codes() -> None:
    s = _site("lock-vma-under-rcu-wait-misuse")
    row = cmd.site_rows([s], ["legacy", "universal"], {})[0]
    assert row["verdicts"]["legacy"] == {"verdict": "n/a", "runs": []}
    # a run the results lack is an error, never silently clean
    assert row["verdicts"]["universal"]["verdict"] == "error"
    assert row["verdicts"]["universal"]["runs"][0]["violation"] == "not run"
    assert cmd.exit_code([row]) == 70
    unchecked = cmd.site_rows([s], ["universal"], None)[0]
    assert unchecked["verdicts"] == {"universal": {"verdict": "not checked", "runs": []}}
    assert cmd.exit_code([unchecked]) == 0
    inc = cmd.site_rows([s], ["universal"], {"lock-vma-under-rcu-wait-misuse.universal":
                                              _run(complete=False)})[0]
    assert cmd.exit_code([inc]) == 3


def test_the_plan_runs_each_scenario_and_preset_once_and_arm64_with_its_arch() -> None:
    runs = dict(cmd.plan(all_sites(), ["legacy", "universal"]))
    assert "fault-vs-munmap.universal" in runs and "fault-vs-munmap.universal.arm64" in runs
    assert runs["fault-vs-munmap.universal.arm64"]["config"].arch == "arm64"
    assert runs["fault-vs-munmap.universal.arm64"]["config"].name == "universal"
    assert "config" not in runs["fault-vs-munmap.universal"]
    names = {s for site in all_sites() for s in site.scenarios}
    assert len(runs) == 2 * (len(names) + 4)  # + arm64's four fault scenarios


def test_cli_no_check_json_lists_every_site() -> None:
    r = run_main(["sites", "--no-check", "--json"])
    assert r.code == 0 and r.err == ""
    doc = json.loads(r.out)
    assert doc["presets"] == ["legacy", "universal", "universal-up", "universal-up-nopreempt"]
    assert doc["checked"] is False
    assert [x["site"] for x in doc["sites"]] == [s.site for s in all_sites()]
    tcp = next(x for x in doc["sites"] if x["site"] == "net/ipv4/tcp.c:find_tcp_vma")
    assert tcp["model"] == "kernel/tcp.py:find_tcp_vma"
    assert tcp["pre_series_form"] == "stub-fallback" and tcp["arch"] is None
    assert tcp["scenarios"] == ["tcp-zerocopy-vs-munmap", "tcp-zerocopy-vs-munmap-pre-series"]
    assert all(v == {"verdict": "not checked", "runs": []}
               for x in doc["sites"] for v in x["verdicts"].values())


def test_cli_checks_every_site_clean_on_one_preset() -> None:
    r = run_main(["sites", "--json", "--preset", "universal-up"])
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["checked"] is True and doc["presets"] == ["universal-up"]
    for x in doc["sites"]:
        v = x["verdicts"]["universal-up"]
        assert v["verdict"] == "clean", x["site"]
        assert [run["scenario"] for run in v["runs"]] == x["scenarios"]
        assert all(run["state"] == "clean" and run["executions"] >= 1 for run in v["runs"])


def test_cli_table_shows_sites_forms_and_verdicts() -> None:
    r = run_main(["sites", "--no-check", "--preset", "legacy"])
    assert r.code == 0
    lines = r.out.splitlines()
    # one row per site, separated by rules
    assert sum(1 for x in lines if x.startswith("├")) == len(all_sites()) - 1
    assert any(x.startswith("│ arch/x86/mm/fault.c:do_user_addr_fault") for x in lines)
    assert "legacy" in lines[2] and "universal" not in lines[2]
    assert "[ifdef]" in r.out and "[stub-fallback]" in r.out and "not checked" in r.out
    assert "note, mm/mmap_lock.c:lock_vma_under_rcu_wait:" in r.out


@pytest.mark.parametrize(("argv", "msg"), [
    (["sites", "--preset", "univeral"], "pervma: unknown preset 'univeral'; choose one of "
     "legacy, universal, universal-up, universal-up-nopreempt, legacy-up"),
    (["sites", "--preset", "legacy,,universal"],
     "pervma: --preset wants names separated by commas, got 'legacy,,universal'"),
    (["sites", "--preset", ""], "pervma: argument --preset: wants a value, got an empty string "
     "(see 'pervma sites --help')"),
    (["sites", "--jobs", "0"], "pervma: argument --jobs: wants a whole number from 1 to"),
    (["sites", "extra"], "pervma: unrecognized arguments: extra"),
])
def test_cli_usage_errors_are_one_line_and_exit_2(argv: list[str], msg: str) -> None:
    r = run_main(argv)
    assert r.code == 2 and r.out == ""
    assert r.one_line_error().startswith(msg)
