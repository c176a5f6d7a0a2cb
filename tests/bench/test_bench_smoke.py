"""The benchmarks run end to end in ``--quick`` mode and print well-formed JSON lines.

Figures are not asserted (the machine is shared and noisy); shape, keys and correctness are:
every line parses, carries ours/peer/ratio/unit/runs, and no job is lost or answered wrongly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
LINE_KEYS = {"bench", "ours", "peer", "peer_name", "ratio", "unit", "runs"}

pytestmark = pytest.mark.process


def run_bench(script: str, *args: str, timeout: float = 180) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, str(BENCH / script), "--quick", *args],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert lines, f"{script} printed no JSON line; stderr: {out.stderr[-2000:]}"
    for line in lines:
        assert line.keys() >= LINE_KEYS, f"missing {LINE_KEYS - line.keys()} in {line}"
        assert line["runs"] >= 1 and isinstance(line["unit"], str)
    return lines


def test_crdt_sync_prints_one_line_with_flat_deltas_and_settled_rounds() -> None:
    (line,) = run_bench("crdt_sync.py", timeout=120)
    assert line["bench"] == "crdt_sync"
    sizes = [str(n) for n in line["sizes"]]
    for table in ("per_mutation", "per_mutation_coalesced", "delta_frame_bytes"):
        for op in ("orset_add", "orset_remove", "ormap_put", "ormap_overwrite", "ormap_remove"):
            assert set(line[table][op]) == set(sizes)
            assert all(v > 0 for v in line[table][op].values())
    for kind in ("orset", "ormap"):
        assert set(line["settled_round_bytes"][kind]) == set(sizes)
        assert set(line["full_state_bytes"][kind]) == set(sizes)
    # A single mutation's delta costs the same at both sizes up to msgpack integer widths.
    assert line["flat"], line["flatness_max_over_min"]
    assert line["settled_round_ref"] == [94, 103]
    assert 0 < line["ours"] < 200


def test_warp_vs_peers_trivial_jobs_beside_pool_and_dask() -> None:
    lines = run_bench("warp_vs_peers.py", "--only", "a")
    by = {ln["bench"]: ln for ln in lines}
    assert set(by) == {"trivial_jobs", "trivial_jobs_vs_pool", "trivial_jobs_durable"}
    durable = by["trivial_jobs_durable"]  # --data on every peer beside the in-memory run
    assert durable["ours"] > 0 and durable["peer"] == by["trivial_jobs"]["ours"]
    assert durable["ours_lost"] == 0 and durable["ours_wrong"] == 0
    assert durable["ratio"] == pytest.approx(durable["ours"] / durable["peer"], rel=0.01)
    pool = by["trivial_jobs_vs_pool"]
    assert pool["unit"] == "jobs/s" and pool["ours"] > 0 and pool["peer"] > 0 and pool["peer_wrong"] == 0
    assert pool["ours_lost"] == 0 and pool["ours_wrong"] == 0
    assert pool["ratio"] == pytest.approx(pool["ours"] / pool["peer"], rel=0.01)
    dask = by["trivial_jobs"]
    try:
        import distributed  # noqa: F401
    except ImportError:
        assert dask["peer"] is None and "not installed" in dask["skipped"]
        pytest.skip("dask.distributed is not installed (pip install -e '.[bench]'): the Dask part was skipped")
    assert "dask" in dask["peer_name"] and dask["peer"] > 0 and dask["peer_wrong"] == 0
    assert dask["ratio"] == pytest.approx(dask["ours"] / dask["peer"], rel=0.01)


def test_warp_vs_peers_cpu_jobs_and_bytes_per_job() -> None:
    lines = run_bench("warp_vs_peers.py", "--only", "b,c")
    cpu = [ln for ln in lines if ln["bench"] == "cpu_jobs"]
    wire = [ln for ln in lines if ln["bench"] == "bytes_per_job"]
    assert len(cpu) == 2 and {ln["op"] for ln in cpu} == {"demo.burn", "demo.burn_process"}
    for ln in cpu:
        assert ln["ours_lost"] == 0 and ln["ours_wrong"] == 0
        assert ln["ours"] > 0 and ln["peer"] > 0 and ln["ratio"] == pytest.approx(ln["peer"] / ln["ours"], rel=0.01)
    assert [ln["queue_size"] for ln in wire] == [20, 60]
    for ln in wire:
        assert ln["wrong"] == 0 and ln["ours"] > 0
        assert {"queue", "results", "intents", "counters"} <= ln["by_board"].keys()


@pytest.mark.slow  # ~11 s of cargo; tests/workers/test_warm_cargo.py covers the same guarantees by default
@pytest.mark.skipif(__import__("shutil").which("cargo") is None, reason="cargo is not installed")
def test_warm_workers_warm_beats_cold_and_never_falsely_passes() -> None:
    check, conc = run_bench("warm_workers.py", timeout=300)
    assert check["bench"] == "warm_workers.check" and conc["bench"] == "warm_workers.concurrent"
    assert check["warm_rebuilt_deps"] == 0 and check["cold_fresh"] == 0 and check["warm_rebuilt"] == 2
    assert conc["build_dir_lock_waits"] == 0 and conc["false_pass"] is False and conc["peer_false_pass"] is True
