"""bench/scale.py: one JSON line per size with bytes per job by kind, full states, wall seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCALE = Path(__file__).resolve().parents[2] / "bench" / "scale.py"


@pytest.mark.process
def test_scale_bench_quick_prints_a_line_per_size_with_the_cost_split_by_kind() -> None:
    out = subprocess.run([sys.executable, str(SCALE), "--quick"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (line,) = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
    assert line["bench"] == "scale" and (line["peers"], line["jobs"]) == (4, 100)
    assert line["ok"] and line["lost"] == 0 and line["wrong"] == 0 and line["steady_duplicates"] == 0
    by_kind = line["bytes_per_job_by_kind"]
    assert by_kind["delta"] > 0 and by_kind["ack"] > 0
    assert abs(sum(by_kind.values()) - line["ours"]) <= 2  # every byte is attributed to a kind
    assert line["ratio"] == 1.0 and line["full_states_sent"] == 0  # causal boards: no full states
    assert line["wall_s"] > 0 and line["peak_rss_mib"] > 0


@pytest.mark.slow
def test_scale_sweep_at_8_32_and_64_peers_loses_nothing() -> None:
    # Minutes to an hour on a 2-core machine. Without cells, bytes per job grow with the peers
    # (every peer holds every board): only correctness is asserted here; the cells test below
    # holds the bytes.
    out = subprocess.run([sys.executable, str(SCALE), "--peers", "8,32,64", "--jobs", "1000"],
                         capture_output=True, text=True, timeout=3 * 3600)
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
    assert len(lines) == 3 and all(x["ok"] and x["lost"] == 0 and x["wrong"] == 0 for x in lines), lines


@pytest.mark.process
def test_in_cells_32_peers_cost_within_2x_the_bytes_per_job_of_8() -> None:
    # Issue 16's target: 32 x 1,000 within 2x of 8 x 1,000, with the 32 peers in cells of 8 (1.14x
    # at the medians of seeds 1-3 when it was met; 4.3x without cells). About 20 s.
    out = subprocess.run([sys.executable, str(SCALE), "--peers", "8,32", "--jobs", "1000", "--cell-size", "8"],
                         capture_output=True, text=True, timeout=1800)
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
    assert len(lines) == 2 and all(x["ok"] and x["lost"] == 0 and x["wrong"] == 0 for x in lines), lines
    assert lines[1]["cell_size"] == 8 and lines[1]["ratio"] <= 2.0, lines[1]


@pytest.mark.process
def test_scale_bench_rounds_quick_runs_rounds_into_one_mesh_of_real_processes() -> None:
    out = subprocess.run([sys.executable, str(SCALE), "--rounds", "2", "--quick"], capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
    rounds, (summary,) = lines[:-1], lines[-1:]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["exit_status"] == 0 and r["answered"] == r["jobs"] == 200 and r["wrong"] == 0
        assert len(r["rss_mib"]) == 3
    assert rounds[1]["answers_held"] == [400, 400, 400]  # answers stay on the board between rounds
    assert summary["bench"] == "scale_rounds_summary" and summary["ok"]
    assert summary["ratio"] == pytest.approx(summary["ours"] / summary["peer"], rel=0.01)
