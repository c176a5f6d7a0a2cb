"""The CRDT convergence simulation: 200 seeds in the default suite, every type in every seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from warpmesh.crdt import ORSet
from warpmesh.sim.crdt import KIND_NAMES, run_crdt

CHUNKS = 8
SEEDS_PER_CHUNK = 25  # 8 x 25 = 200 seeds, each replicating all nine types


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_every_crdt_converges_over_200_seeds(chunk: int) -> None:
    failures = []
    for seed in range(chunk * SEEDS_PER_CHUNK, (chunk + 1) * SEEDS_PER_CHUNK):
        report = run_crdt(seed)
        if not report.ok:
            failures.append(f"seed {seed}: {report.failures} -- replay: {report.replay}")
    assert not failures, "\n".join(failures)


def test_sweep_covers_every_type_with_faults() -> None:
    report = run_crdt(11)
    assert report.ok
    assert report.metrics["frames_dropped"] > 0 and report.metrics["partitions"] + report.metrics["crashes"] > 0
    assert len(KIND_NAMES) == 9


def test_same_seed_replays_identically_whatever_the_hash_seed() -> None:
    code = "from warpmesh.sim.crdt import run_crdt; import json; r = run_crdt(5, ops=60); print(json.dumps([r.trace, r.metrics]))"
    outs = set()
    for hash_seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        outs.add(out.stdout)
    assert len(outs) == 1
    assert json.loads(outs.pop())[0]


def test_checker_catches_a_lost_remove(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break ORSet so a remove never leaves its replica: the sweep must report non-convergence."""
    real_remove = ORSet.remove

    def local_only_remove(self: ORSet, e: object) -> ORSet:
        real_remove(self, e)
        return ORSet()  # the delta that should carry the remove is empty

    monkeypatch.setattr(ORSet, "remove", local_only_remove)
    bad = [run_crdt(seed, types="orset", ops=80) for seed in range(6)]
    assert any(not r.ok for r in bad)
    assert all(r.replay.startswith("warpmesh sim crdt --seed ") for r in bad)


def test_cli_replays_one_seed_and_fails_loudly_on_bad_arguments() -> None:
    ok = subprocess.run([sys.executable, "-m", "warpmesh.cli.app", "sim", "crdt", "--seed", "2", "--ops", "40",
                         "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    bad = subprocess.run([sys.executable, "-m", "warpmesh.cli.app", "sim", "crdt", "--types", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown type(s) nope" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_soak_2000_seeds_seven_peers() -> None:
    failures = [r for r in (run_crdt(s, peers=7, ops=300) for s in range(2000)) if not r.ok]
    assert not failures, [f"{r.seed}: {r.failures} ({r.replay})" for r in failures[:10]]
