"""The ``warpmesh run`` and ``warpmesh fold`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warpmesh.cli.app import main
from warpmesh.workers.fold import make_fixture_tree, python_fold

OK_WAT = r"""(module
  (import "warpmesh_abi_v1" "call" (func $call (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\03hello world")
  (func (export "warpmesh_run") (drop (call $call (i32.const 8) (i32.const 0) (i32.const 12)))))"""


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_run_prints_hash_value_and_cache_hit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = tmp_path / "hello.wat"
    mod.write_text(OK_WAT)
    store = str(tmp_path / "store")
    code, out, _ = run_cli(capsys, "run", str(mod), "--arg", "who=world", "--store", store)
    assert code == 0 and "ran" in out and "hello world" in out
    code, out, _ = run_cli(capsys, "run", str(mod), "--arg", "who=world", "--store", store, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["hit"] and doc["source"] == "memo" and doc["value"] == {"text": "hello world"}
    assert len(doc["result"]) == 64 and len(doc["key"]) == 64


def test_run_reads_the_store_from_the_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    mod = tmp_path / "hello.wat"
    mod.write_text(OK_WAT)
    monkeypatch.setenv("WARPMESH_STORE", str(tmp_path / "env-store"))
    assert run_cli(capsys, "run", str(mod))[0] == 0
    assert (tmp_path / "env-store" / "index.sqlite").exists()


@pytest.mark.parametrize("argv, needle", [
    (["run", "missing.wasm"], "no such file"),
    (["run", "{mod}", "--arg", "novalue"], "NAME=VALUE"),
    (["run", "{mod}", "--arg", "x=@/no/such/path"], "no such file"),
    (["run", "{mod}", "--memory", "0"], "--memory"),
    (["fold", "/no/such/dir"], "does not exist"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           argv: list[str], needle: str) -> None:
    mod = tmp_path / "hello.wat"
    mod.write_text(OK_WAT)
    argv = [a.replace("{mod}", str(mod)) for a in argv]
    code, _, err = run_cli(capsys, *argv, "--store", str(tmp_path / "s"))
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1


def test_a_failing_job_exits_1_naming_the_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = tmp_path / "trap.wat"
    mod.write_text('(module (memory (export "memory") 1) (func (export "warpmesh_run") unreachable))')
    code, _, err = run_cli(capsys, "run", str(mod), "--store", str(tmp_path / "s"))
    assert code == 1 and "job failed: trap" in err


def test_a_module_importing_files_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = tmp_path / "bad.wat"
    mod.write_text('(module (import "wasi_snapshot_preview1" "path_open" (func))'
                   ' (memory (export "memory") 1) (func (export "warpmesh_run")))')
    code, _, err = run_cli(capsys, "run", str(mod), "--store", str(tmp_path / "s"))
    assert code == 1 and "module_rejected" in err and "path_open" in err


def test_fold_counts_and_hits_on_rerun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_fixture_tree(tmp_path / "tree", depth=2)
    store = str(tmp_path / "store")
    code, out, _ = run_cli(capsys, "fold", str(tree), "--store", store)
    total = python_fold(tree).total
    assert code == 0 and f"{total.files} files, {total.bytes} bytes" in out and "computed" in out
    code, out, _ = run_cli(capsys, "fold", str(tree), "--store", store, "--json")
    doc = json.loads(out)
    assert doc["hit"] and doc["files"] == total.files and doc["bytes"] == total.bytes


def test_trace_writes_one_json_line_per_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_fixture_tree(tmp_path / "tree", depth=1, dirs=2, files=2)
    trace = tmp_path / "trace.jsonl"
    code, _, _ = run_cli(capsys, "fold", str(tree), "--store", str(tmp_path / "s"), "--trace", str(trace))
    lines = [json.loads(x) for x in trace.read_text().splitlines()]
    # 3 fold frames (root + 2 dirs) and 9 visitor runs (6 files + 3 directories)
    assert code == 0 and sum(x["outcome"] == "run" for x in lines) == 12
    assert all(len(x["req"]) == 64 for x in lines)
