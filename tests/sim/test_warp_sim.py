"""The Warp simulation sweep: 8 peers, 1,000 jobs, churn, 100 seeds in the default suite."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from warpmesh.sim.warp import run_warp

CHUNKS = 20
SEEDS_PER_CHUNK = 5  # 20 x 5 = 100 seeds of 8 peers and 1,000 jobs


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_no_job_lost_or_wrong_through_churn_over_100_seeds(chunk: int) -> None:
    failures = []
    for seed in range(chunk * SEEDS_PER_CHUNK, (chunk + 1) * SEEDS_PER_CHUNK):
        report = run_warp(seed, peers=8, jobs=1000)
        if not report.ok:
            failures.append(f"seed {seed}: {report.failures} -- replay: {report.replay}")
        else:
            assert report.metrics["lost"] == report.metrics["wrong"] == report.metrics["steady_duplicates"] == 0
    assert not failures, "\n".join(failures)


def test_steady_membership_runs_every_job_exactly_once() -> None:
    report = run_warp(7, peers=8, jobs=600, churn=False)
    assert report.ok, report.failures
    assert report.metrics["executions"] == report.metrics["distinct"] == 600


def test_churn_actually_happens_and_is_reported() -> None:
    report = run_warp(3, peers=8, jobs=1000)
    assert report.ok, report.failures
    events = report.metrics["churn_events"]
    assert events.get("crash", 0) + events.get("leave", 0) > 0 and events.get("partition", 0) > 0
    assert 0 <= report.metrics["churn_duplicate_rate"] < 0.5


def test_cli_reports_the_duplicate_rate_and_replays_a_seed() -> None:
    out = subprocess.run([sys.executable, "-m", "warpmesh.cli.app", "sim", "warp", "--seed", "4", "--jobs", "200",
                          "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["ok"] and "churn_duplicate_rate" in report["metrics"]
    assert report["replay"] == "warpmesh sim warp --seed 4 --jobs 200 --peers 8"


@pytest.mark.slow
def test_soak_1000_seeds() -> None:
    bad = [r for r in (run_warp(s) for s in range(1000, 2000)) if not r.ok]
    assert not bad, [f"{r.seed}: {r.failures} ({r.replay})" for r in bad[:10]]
