"""fold over directory trees as isolates, and parity with the plain-Python fold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from warpmesh.workers import HostConfig, IsolateHost, Kind, Runner, Store
from warpmesh.workers.fold import (
    Counts,
    FoldError,
    import_dir,
    install_fold,
    make_fixture_tree,
    python_fold,
    subtree_counts,
    wasm_fold,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bench_tree(tmp_path: Path) -> Path:
    return make_fixture_tree(tmp_path / "tree")


def fold_counts(runner: Runner, path: Path, salt: str = "") -> tuple[Counts, object]:
    tree = import_dir(runner.store, path)
    res = wasm_fold(runner, tree, salt=salt)
    assert res.ref.kind is Kind.BLOB
    return Counts.from_blob(runner.store.get_blob(res.ref.id)), res


def test_fold_matches_the_python_fold_on_the_160_node_tree(runner: Runner, bench_tree: Path) -> None:
    py = python_fold(bench_tree)
    assert py.total.files == 120 and len(py.subtrees) == 160
    counts, res = fold_counts(runner, bench_tree)
    assert counts == py.total
    assert runner.store.get_blob(res.ref.id) == py.total.to_blob()  # same bytes, same result id
    # 40 fold frames + 160 visitor runs, every one distinct
    assert runner.executions == 200
    mods = install_fold(runner)
    tree = import_dir(runner.store, bench_tree)
    assert subtree_counts(runner, tree, mods) == py.subtrees
    assert runner.executions == 200  # the per-subtree answers were all memo hits


def test_memoized_rerun_and_incremental_change(runner: Runner, bench_tree: Path) -> None:
    fold_counts(runner, bench_tree)
    before = runner.executions
    again, res = fold_counts(runner, bench_tree)
    assert res.source == "memo" and runner.executions == before  # type: ignore[attr-defined]
    # change one file three levels down: only its path to the root runs again
    (bench_tree / "dir1" / "dir2" / "dir0" / "file1.txt").write_text("changed contents, longer than before\n")
    changed, _ = fold_counts(runner, bench_tree)
    assert changed == python_fold(bench_tree).total and changed.bytes > again.bytes
    assert runner.executions - before == 1 + 2 * 4  # the leaf, then a frame and a post per level


def test_symlinks_are_leaves_and_match_python(runner: Runner, tmp_path: Path) -> None:
    wide = make_fixture_tree(tmp_path / "wide", depth=3, dirs=2, files=2)
    os.symlink("file0.txt", wide / "link-to-file")
    os.symlink("dir0", wide / "link-to-dir")
    counts, _ = fold_counts(runner, wide)
    assert counts == python_fold(wide).total
    assert counts.files == 30 + 2
    assert counts.bytes == python_fold(wide).total.bytes


def test_deep_chain_of_24_levels(runner: Runner, tmp_path: Path) -> None:
    d = tmp_path / "deep"
    cur = d
    for i in range(24):
        cur.mkdir(parents=True)
        (cur / f"f{i}").write_text("x" * i)
        cur = cur / "next"
    counts, _ = fold_counts(runner, d)
    assert counts == Counts(24, sum(range(24))) == python_fold(d).total


def test_fold_of_a_single_file_and_an_empty_directory(runner: Runner, tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("12345")
    assert fold_counts(runner, tmp_path / "one.txt")[0] == Counts(1, 5)
    (tmp_path / "empty").mkdir()
    assert fold_counts(runner, tmp_path / "empty")[0] == Counts(0, 0) == python_fold(tmp_path / "empty").total


def test_unsupported_file_types_are_named(store: Store, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "pipe")
    with pytest.raises(FoldError) as info:
        import_dir(store, tmp_path / "d")
    assert "pipe" in str(info.value)
    with pytest.raises(FoldError):
        python_fold(tmp_path / "d")


def test_same_request_same_result_across_hosts(tmp_path: Path, bench_tree: Path) -> None:
    results = []
    for name in ("a", "b"):
        host = IsolateHost(HostConfig(artifact_dir=tmp_path / name / "compiled", pooling=name == "a"))
        with Store(tmp_path / name / "store") as store, Runner(store, host, parallelism=1 + (name == "b")) as r:
            _, res = fold_counts(r, bench_tree, salt="s")
            results.append((res.key, res.ref))  # type: ignore[attr-defined]
        host.close()
    assert results[0] == results[1]


@pytest.mark.process
def test_same_result_hash_in_a_separate_process(runner: Runner, bench_tree: Path, tmp_path: Path) -> None:
    _, res = fold_counts(runner, bench_tree, salt="x")
    out = subprocess.run(
        [sys.executable, "-c", "from warpmesh.cli.app import main; main()", "fold", str(bench_tree),
         "--json", "--salt", "x", "--store", str(tmp_path / "other-store")],
        capture_output=True, text=True, check=True, timeout=120, cwd=REPO)
    import json

    doc = json.loads(out.stdout)
    assert doc["result"] == res.ref.hex and doc["key"] == res.key.hex()  # type: ignore[attr-defined]


def test_committed_guest_modules_are_built_from_their_sources() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "guests" / "build.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
