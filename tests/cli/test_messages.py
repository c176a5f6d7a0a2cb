"""Messages that name the real problem (issue 9, defect 7): wasm vs WAT, fold's cause before its
trap, ``sim --seed`` conflicts and its report on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from warpmesh.workers import FailureKind, HostConfig, IsolateHost, JobError

NOT_WASM = bytes(range(200, 256)) * 4  # neither \0asm nor UTF-8


def _warpmesh(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WARPMESH_STORE": str(tmp / "store")}
    return subprocess.run([sys.executable, "-m", "warpmesh.cli.app", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp)


def test_random_bytes_are_not_reported_as_bad_utf8_wat(tmp_path: Path) -> None:
    bad = tmp_path / "random.wasm"
    bad.write_bytes(NOT_WASM)
    for argv in (["run", str(bad)], ["fold", str(tmp_path), "--visitor", str(bad)]):
        out = _warpmesh(*argv, tmp=tmp_path)
        assert out.returncode == 2, out.stderr
        assert "not a WebAssembly module" in out.stderr and "\\0asm" in out.stderr
        assert "utf-8" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_the_host_refuses_random_bytes_as_not_webassembly() -> None:
    host = IsolateHost(HostConfig())
    try:
        with pytest.raises(JobError) as err:
            host._load(b"\x01" * 32, lambda: NOT_WASM)
        assert err.value.kind is FailureKind.MODULE_REJECTED
        assert "not WebAssembly" in str(err.value) and "utf-8" not in str(err.value)
    finally:
        host.close()


def test_fold_puts_the_cause_before_the_trap(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_text("hello")
    visitor = tmp_path / "nomem.wasm"  # valid WAT, but without the memory export a guest needs
    visitor.write_text('(module (func (export "x") unreachable))')
    out = _warpmesh("fold", str(tmp_path / "tree"), "--visitor", str(visitor), tmp=tmp_path)
    assert out.returncode == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("warpmesh: error: job failed:")
    assert "must export its linear memory" in last, last
    assert last.index("linear memory") < last.index("trap"), last


def test_sim_seed_with_seeds_is_a_usage_error(tmp_path: Path) -> None:
    for extra in (["--seeds", "3"], ["--start", "4"]):
        out = _warpmesh("sim", "crdt", "--seed", "7", *extra, tmp=tmp_path)
        assert out.returncode == 2 and "--seed" in out.stderr and extra[0] in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def test_sim_seed_prints_its_json_report_on_stdout(tmp_path: Path) -> None:
    out = _warpmesh("sim", "crdt", "--seed", "3", "--ops", "20", "--peers", "2", tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True and report["seed"] == 3
