"""Warm boot with real cargo: reuse proven by cargo's own fresh counts, and the false-pass regression.

Dependencies are Debian's packaged crate sources (a directory source replacing crates-io) or,
where those are missing, generated path crates outside the worktrees. Skipped without cargo.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from warpmesh.examples.cargo_workspace import debian_crates_available, make_workspace, make_worktree
from warpmesh.workers.commands import CommandWorkers
from warpmesh.workers.warm import CargoRecipe, WarmCache, warm_boot
from warpmesh.workers.warmcore import WarmStatus, WorkerConfig

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("cargo") / "base")


def workers(root: Path, speculative: bool, base: Path) -> CommandWorkers:
    return CommandWorkers(WorkerConfig(speculative=speculative, cache_dir=str(root)))


def test_warm_worker_rebuilds_only_its_own_crates_cold_rebuilds_everything(workspace: Path, tmp_path: Path) -> None:
    wt = make_worktree(workspace, tmp_path / "wt")
    warm = workers(tmp_path / "warm", True, workspace).check({"worktree": str(wt), "warm_from": str(workspace)})
    cold = workers(tmp_path / "cold", False, workspace).check({"worktree": str(wt)})
    assert warm["status"] == cold["status"] == "passed", (warm, cold)
    assert warm["warm"] and warm["warm_status"] == "warmed"
    # Warm: exactly the worktree's two crates compiled, every dependency fresh.
    assert sorted(warm["rebuilt_local"]) == ["app", "core_lib"] and warm["rebuilt_deps"] == []
    assert warm["rebuilt"] == 2 and warm["fresh"] >= 4
    # Cold: every unit compiled, nothing fresh.
    assert cold["fresh"] == 0 and cold["rebuilt"] == warm["rebuilt"] + warm["fresh"]
    if debian_crates_available():
        assert len(cold["rebuilt_deps"]) >= 7


@pytest.mark.parametrize("speculative", [True, False], ids=["warm", "cold"])
def test_false_pass_regression_old_mtime_type_error_still_fails(workspace: Path, tmp_path: Path,
                                                                speculative: bool) -> None:
    old = time.time() - 30 * 86400
    a = make_worktree(workspace, tmp_path / "a", broken=True, mtime=old)
    b = make_worktree(workspace, tmp_path / "b")
    cw = workers(tmp_path / "cache", speculative, workspace)
    first = cw.check({"worktree": str(a), "warm_from": str(workspace)})
    assert first["status"] == "failed"
    assert cw.check({"worktree": str(b), "warm_from": str(workspace)})["status"] == "passed"
    again = cw.check({"worktree": str(a), "warm_from": str(workspace)})
    assert again["status"] == "failed" and again["exit_code"] != 0, again
    assert "E0308" in again["stderr_tail"] or again["exit_code"] == 101


def test_warm_from_a_broken_worktree_still_warms_dependencies(workspace: Path, tmp_path: Path) -> None:
    broken = make_worktree(workspace, tmp_path / "broken", broken=True)
    rep = warm_boot(CargoRecipe(), broken, cache=WarmCache(tmp_path / "warm"))
    assert rep.status is WarmStatus.WARMED, rep
    snapshot = Path(rep.cache_dir or "")
    # The workspace's own crates were removed from the snapshot; dependencies stayed.
    names = {p.name.split("-")[0] for p in (snapshot / "debug" / "deps").iterdir()}
    assert "libcore_lib" not in names and "libapp" not in names and len(names) >= 2


def test_warm_jobs_get_a_private_offline_cargo_home_without_shared_locks(tmp_path: Path) -> None:
    shared = tmp_path / "shared-home"
    (shared / "registry").mkdir(parents=True)
    (shared / "config.toml").write_text("")
    (shared / ".package-cache").write_text("")
    job = tmp_path / "job"
    job.mkdir()
    env = CargoRecipe().isolate(job, {"CARGO_HOME": str(shared)})
    home = Path(env["CARGO_HOME"])
    assert env["CARGO_NET_OFFLINE"] == "true" and home.parent == job
    assert (home / "registry").resolve() == (shared / "registry").resolve() and (home / "config.toml").is_symlink()
    assert not (home / ".package-cache").exists()


def test_concurrent_warm_checks_print_no_lock_waits(workspace: Path, tmp_path: Path) -> None:
    import threading

    cw = workers(tmp_path / "cache", True, workspace)
    trees = [make_worktree(workspace, tmp_path / f"w{i}") for i in range(4)]
    assert cw.warm_now("cargo", workspace).warm
    rows: list[dict] = []
    threads = [threading.Thread(target=lambda t=t: rows.append(cw.check({"worktree": str(t),
                                                                         "warm_from": str(workspace)})))
               for t in trees]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert [r["status"] for r in rows] == ["passed"] * 4 and all(r["warm"] for r in rows)
    assert sum(r["lock_waits"] for r in rows) == 0, rows


def test_check_cli_end_to_end_speculative_reuses_dependencies(workspace: Path, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    good = make_worktree(workspace, tmp_path / "good")
    bad = make_worktree(workspace, tmp_path / "bad", broken=True, mtime=time.time() - 86400)
    env = {**os.environ, "WARPMESH_WARM": str(tmp_path / "warm")}
    out = subprocess.run([sys.executable, "-m", "warpmesh.cli.app", "check", str(good), str(bad), "--speculative",
                          "--warm-from", str(workspace), "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stderr
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert [(r["status"], r["warm"]) for r in rows[:2]] == [("passed", True), ("failed", True)]
    assert rows[0]["rebuilt"] == 2 and rows[0]["fresh"] >= 4
    assert rows[2]["summary"]["warm_status"] == "warmed" and rows[2]["summary"]["passed"] == 1
