"""Warm boot with fake build tools: every outcome, single flight, seeded job directories, keys, GC."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from warpmesh.workers.warm import CargoRecipe, GenericRecipe, WarmCache, prepare_job, warm_boot
from warpmesh.workers.warmcore import (
    CacheEntry,
    WarmStatus,
    WorkerConfig,
    content_key,
    gc_plan,
    parse_cargo_messages,
    sanitize_name,
)

FAKE_TOOL = f"""#!{sys.executable}
import os, sys, time, subprocess, hashlib
cmd = sys.argv[1] if len(sys.argv) > 1 else ""
if cmd in ("--version", "-vV"):
    print("faketool 1.0"); sys.exit(0)
if os.environ.get("FAKE_HANG"):
    child = subprocess.Popen(["sleep", "300"])
    with open(os.environ["FAKE_HANG"], "w") as f:
        f.write(f"{{os.getpid()}} {{child.pid}}")
    time.sleep(300)
out = sys.argv[2]
deps = hashlib.sha256(open("deps.txt", "rb").read()).hexdigest()
art = os.path.join(out, "dep.artifact")
if cmd == "warm":
    time.sleep(float(os.environ.get("FAKE_WARM_SLEEP", "0")))
    open(art, "w").write(deps); sys.exit(0)
if cmd == "check":
    fresh = os.path.exists(art) and open(art).read() == deps
    if not fresh:
        open(art, "w").write(deps)
    open(os.path.join(out, "local.artifact"), "w").write(open("src.txt").read())
    print(f"warpmesh-units: {{1 if fresh else 2}} {{1 if fresh else 0}}")
    print("BUILD_DIR=" + os.environ.get("FAKE_BUILD_DIR", ""))
    sys.exit(1 if "error" in open("src.txt").read() else 0)
sys.exit(2)
"""


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def fake_path(tmp_path: Path) -> str:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("faketool", "cargo", "rustc"):
        _script(bindir / name, FAKE_TOOL)
    return f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin"


def fake_recipe() -> GenericRecipe:
    return GenericRecipe(name="fake", tool="faketool", warm=("faketool", "warm", "{dir}"),
                         check=("faketool", "check", "{dir}"), key_files=("deps.txt",),
                         env={"FAKE_BUILD_DIR": "{dir}"})


def project(root: Path, deps: str = "dep-a 1.0\n", src: str = "ok") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "deps.txt").write_text(deps)
    (root / "src.txt").write_text(src)
    return root


def env_with(path: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": path, **extra}


def live(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# -- the outcomes -------------------------------------------------------------------------------
def test_disabled_creates_nothing(tmp_path: Path, fake_path: str) -> None:
    cache = WarmCache(tmp_path / "warm")
    rep = warm_boot(fake_recipe(), project(tmp_path / "p"), enabled=False, cache=cache, env=env_with(fake_path))
    assert rep.status is WarmStatus.SKIPPED and rep.key is None
    assert not (tmp_path / "warm").exists()


@pytest.mark.parametrize("recipe", [CargoRecipe(), fake_recipe()], ids=["cargo", "generic"])
def test_tool_absent_is_unavailable_in_well_under_a_second(tmp_path: Path, recipe: object) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    start = time.monotonic()
    rep = warm_boot(recipe, project(tmp_path / "p"), cache=WarmCache(tmp_path / "warm"),  # type: ignore[arg-type]
                    env=env_with(str(empty)))
    assert rep.status is WarmStatus.UNAVAILABLE and "not found on PATH" in rep.reason
    assert time.monotonic() - start < 1.0
    assert not (tmp_path / "warm").exists()


def test_hanging_tool_is_unavailable_at_the_timeout_and_its_group_is_gone(tmp_path: Path, fake_path: str) -> None:
    ws = tmp_path / "crate"
    ws.mkdir()
    (ws / "Cargo.toml").write_text("[package]\n")
    (ws / "Cargo.lock").write_text("# lock\n")
    pids = tmp_path / "pids"
    env = env_with(fake_path)
    bindir = Path(fake_path.split(os.pathsep)[0])
    # rustc answers; cargo hangs with a child of its own (an orphan-to-be if only cargo were killed).
    _script(bindir / "cargo", FAKE_TOOL.replace('if cmd in ("--version", "-vV"):', 'if False:'))
    env["FAKE_HANG"] = str(pids)
    start = time.monotonic()
    rep = warm_boot(CargoRecipe(), ws, timeout=1.0, cache=WarmCache(tmp_path / "warm"), env=env)
    took = time.monotonic() - start
    assert rep.status is WarmStatus.UNAVAILABLE and "timed out" in rep.reason
    assert 0.9 <= took < 3.0
    tool, child = map(int, pids.read_text().split())
    deadline = time.monotonic() + 2
    while (live(tool) or live(child)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not live(tool) and not live(child), "a process of the warm-up's group survived the timeout"
    assert WarmCache(tmp_path / "warm").keys() == []


@pytest.mark.parametrize("recipe", [CargoRecipe(), fake_recipe()], ids=["cargo", "generic"])
def test_a_directory_that_is_not_a_project_is_unavailable(tmp_path: Path, fake_path: str, recipe: object) -> None:
    other = tmp_path / "not-a-project"
    other.mkdir()
    (other / "README").write_text("hello\n")
    rep = warm_boot(recipe, other, cache=WarmCache(tmp_path / "warm"), env=env_with(fake_path))  # type: ignore[arg-type]
    assert rep.status is WarmStatus.UNAVAILABLE and "not a" in rep.reason
    rep = warm_boot(recipe, tmp_path / "missing", cache=WarmCache(tmp_path / "warm"), env=env_with(fake_path))  # type: ignore[arg-type]
    assert rep.status is WarmStatus.UNAVAILABLE


def test_failed_warm_up_publishes_nothing(tmp_path: Path, fake_path: str) -> None:
    recipe = GenericRecipe(name="fake", tool="faketool", warm=("faketool", "nope", "{dir}"), check=("true",),
                           key_files=("deps.txt",))
    cache = WarmCache(tmp_path / "warm")
    rep = warm_boot(recipe, project(tmp_path / "p"), cache=cache, env=env_with(fake_path))
    assert rep.status is WarmStatus.UNAVAILABLE and "warm-up failed" in rep.reason
    assert cache.keys() == [] and not any((tmp_path / "warm" / "caches").iterdir())


def test_warmed_then_reused_by_content_across_workspaces(tmp_path: Path, fake_path: str) -> None:
    cache = WarmCache(tmp_path / "warm")
    env = env_with(fake_path)
    first = warm_boot(fake_recipe(), project(tmp_path / "session-1"), cache=cache, env=env)
    assert first.status is WarmStatus.WARMED and not first.reused
    again = warm_boot(fake_recipe(), project(tmp_path / "session-2", src="other edits"), cache=cache, env=env)
    assert again.status is WarmStatus.WARMED and again.reused and again.key == first.key
    changed = warm_boot(fake_recipe(), project(tmp_path / "s3", deps="dep-a 2.0\n"), cache=cache, env=env)
    assert changed.key != first.key and not changed.reused
    assert cache.builds == 2 and sorted(cache.keys()) == sorted([first.key, changed.key])


def test_concurrent_jobs_needing_one_key_run_one_warm_up(tmp_path: Path, fake_path: str) -> None:
    cache = WarmCache(tmp_path / "warm")
    env = env_with(fake_path, FAKE_WARM_SLEEP="0.5")
    ws = project(tmp_path / "p")
    reports = []

    def go() -> None:
        reports.append(warm_boot(fake_recipe(), ws, cache=cache, env=env))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.builds == 1
    assert all(r.status is WarmStatus.WARMED for r in reports) and len({r.key for r in reports}) == 1
    assert sum(not r.reused for r in reports) == 1


def test_each_job_gets_its_own_seeded_directory_and_env_points_at_it(tmp_path: Path, fake_path: str) -> None:
    cache = WarmCache(tmp_path / "warm")
    cfg = WorkerConfig(speculative=True)
    env = env_with(fake_path)
    a = prepare_job(fake_recipe(), project(tmp_path / "a"), cfg, cache=cache, name="a", env=env)
    b = prepare_job(fake_recipe(), project(tmp_path / "b"), cfg, cache=cache, name="b", env=env)
    assert a.report.warm and a.seeded in ("reflink-or-copy", "copy")
    snapshot = Path(a.report.cache_dir or "")
    assert a.build_dir != b.build_dir and snapshot not in (a.build_dir, b.build_dir)
    assert a.env["FAKE_BUILD_DIR"] == str(a.build_dir) and b.env["FAKE_BUILD_DIR"] == str(b.build_dir)
    assert (a.build_dir / "dep.artifact").read_text() == (snapshot / "dep.artifact").read_text()
    # A job writing into its directory never changes the snapshot or a sibling's directory.
    (a.build_dir / "dep.artifact").write_text("scribbled")
    assert (snapshot / "dep.artifact").read_text() != "scribbled" != (b.build_dir / "dep.artifact").read_text()
    off = prepare_job(fake_recipe(), project(tmp_path / "c"), WorkerConfig(), cache=cache, name="c", env=env)
    assert off.report.status is WarmStatus.SKIPPED and off.seeded == "empty" and not any(off.build_dir.iterdir())


def test_check_jobs_reuse_the_warm_cache_and_cold_ones_do_not(tmp_path: Path, fake_path: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from warpmesh.workers import commands

    monkeypatch.setenv("PATH", fake_path)
    monkeypatch.setattr(commands, "get_recipe", lambda name: fake_recipe())
    warm = commands.CommandWorkers(WorkerConfig(speculative=True, cache_dir=str(tmp_path / "warm")))
    cold = commands.CommandWorkers(WorkerConfig(speculative=False, cache_dir=str(tmp_path / "cold")))
    good, bad = project(tmp_path / "good"), project(tmp_path / "bad", src="error here")
    w = warm.check({"worktree": str(good), "recipe": "fake"})
    assert (w["status"], w["warm"], w["warm_status"], w["rebuilt"], w["fresh"]) == ("passed", True, "warmed", 1, 1)
    c = cold.check({"worktree": str(good), "recipe": "fake"})
    assert (c["status"], c["warm"], c["warm_status"], c["rebuilt"], c["fresh"]) == ("passed", False, "skipped", 2, 0)
    assert warm.check({"worktree": str(bad), "recipe": "fake"})["status"] == "failed"
    assert not list((tmp_path / "warm" / "jobs").iterdir())  # job directories are removed after the job


# -- pure parts ---------------------------------------------------------------------------------
def test_names_are_sanitized() -> None:
    assert sanitize_name("../../etc/passwd") == "etc-passwd"
    assert sanitize_name("séssion id;rm -rf") == "s-ssion-id-rm--rf"
    assert sanitize_name("") == "x" and len(sanitize_name("a" * 500)) == 64


def test_content_key_covers_every_input_and_only_them() -> None:
    base = {"lockfile": b"lock", "toolchain": "rustc 1.95", "profile": "dev", "features": "", "target": "host"}
    k = content_key("cargo", base)
    assert k == content_key("cargo", dict(reversed(list(base.items()))))
    for name in base:
        assert content_key("cargo", {**base, name: "changed"}) != k, name
    assert content_key("cargo", {"a": "bc"}) != content_key("cargo", {"ab": "c"})
    assert k.startswith("cargo-") and sanitize_name(k, limit=96) == k


def test_gc_plan_by_age_then_size_never_in_use() -> None:
    e = [CacheEntry("old", 10, 0.0), CacheEntry("mid", 10, 50.0), CacheEntry("new", 10, 90.0),
         CacheEntry("busy", 10, 1.0, in_use=True)]
    assert gc_plan(e, now=100.0, max_bytes=None, max_age=60.0) == ["old"]
    assert gc_plan(e, now=100.0, max_bytes=20, max_age=None) == ["old", "mid"]
    assert gc_plan(e, now=100.0, max_bytes=0, max_age=None) == ["old", "mid", "new"]


def test_cache_gc_deletes_unused_snapshots(tmp_path: Path, fake_path: str) -> None:
    cache = WarmCache(tmp_path / "warm")
    rep = warm_boot(fake_recipe(), project(tmp_path / "p"), cache=cache, env=env_with(fake_path))
    assert rep.warm and cache.gc(max_bytes=None, max_age=3600) == []
    assert cache.gc(max_bytes=None, max_age=10, now=time.time() + 100) == [rep.key]
    assert cache.keys() == []


def test_cargo_messages_are_counted_by_fresh() -> None:
    lines = [
        '{"reason":"compiler-artifact","package_id":"registry+https://x#syn@1.0.107","fresh":true}',
        '{"reason":"compiler-artifact","package_id":"path+file:///w/core#core_lib@0.1.0","fresh":false}',
        '{"reason":"compiler-artifact","package_id":"registry+https://x#memchr@2.5.0","fresh":false}',
        '{"reason":"compiler-message","package_id":"path+file:///w/core#core_lib@0.1.0","message":{"level":"error"}}',
        "not json", '{"reason":"build-finished","success":false}',
    ]
    c = parse_cargo_messages("\n".join(lines))
    assert (c.rebuilt, c.fresh, c.rebuilt_local, c.rebuilt_deps) == (2, 1, ["core_lib"], ["memchr"])
    assert (c.errors_local, c.errors_deps, c.success) == (1, 0, False)


def test_command_workers_load_lazily_from_the_package() -> None:
    import subprocess

    code = ("import sys, warpmesh.workers as w; "
            "assert not any(m in sys.modules for m in ('warpmesh.workers.warm', 'warpmesh.workers.commands', "
            "'warpmesh.workers.subproc')); assert w.warm_boot.__module__ == 'warpmesh.workers.warm'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def _wheel(dest: Path) -> Path:
    """A minimal pure-Python wheel, built by hand (no network, no build backend)."""
    import base64
    import hashlib
    import zipfile

    files = {"demo_pkg/__init__.py": "VALUE = 42\n",
             "demo_pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n",
             "demo_pkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append("demo_pkg-1.0.dist-info/RECORD,,")
    dest.mkdir(parents=True, exist_ok=True)
    whl = dest / "demo_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr("demo_pkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return whl


def test_wheelhouse_recipe_warms_once_and_jobs_install_from_their_hardlinked_copy(tmp_path: Path) -> None:
    from warpmesh.workers.warm import wheelhouse_recipe

    index = tmp_path / "index"
    _wheel(index)
    ws = tmp_path / "proj"
    ws.mkdir()
    (ws / "requirements.txt").write_text("demo-pkg==1.0\n")
    env = {**os.environ, "PIP_FIND_LINKS": str(index), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    recipe, cache = wheelhouse_recipe(), WarmCache(tmp_path / "warm")
    rep = warm_boot(recipe, ws, cache=cache, env=env, timeout=120)
    assert rep.status is WarmStatus.WARMED, rep.reason
    shutil.rmtree(index)  # from now on only the warm wheelhouse has the package
    job = prepare_job(recipe, ws, WorkerConfig(speculative=True), cache=cache, name="t", env=env)
    assert job.report.reused and job.seeded == "hardlink"
    wheel = job.build_dir / "wheels" / "demo_pkg-1.0-py3-none-any.whl"
    assert wheel.stat().st_ino == (Path(rep.cache_dir or "") / "wheels" / wheel.name).stat().st_ino
    from warpmesh.workers.subproc import run_process

    res = run_process(recipe.check_argv(ws, job.build_dir), cwd=ws, env=job.env, deadline=120)
    assert res.exit_code == 0, res.stderr
    assert (job.build_dir / "site" / "demo_pkg" / "__init__.py").read_text() == "VALUE = 42\n"
