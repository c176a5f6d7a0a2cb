"""The chaos harness, short: 5 peers in 5 network namespaces under real link cuts, loss and power cuts.

Runs only as root with ``ip`` and ``nft`` (``.ci/run`` installs nftables); otherwise skipped with the
reason. ``./run chaos`` runs the long version (every nemesis, both variants).
"""

from __future__ import annotations

import subprocess

import pytest

from warpmesh.chaos import cleanup_stale, run_chaos, schedule, unavailable_reason

pytestmark = pytest.mark.process

REASON = unavailable_reason()
needs_lab = pytest.mark.skipif(REASON is not None, reason=f"chaos lab unavailable: {REASON}")


def _no_lab_left() -> None:
    cleanup_stale()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "wmc" not in names, names


def test_schedule_is_seeded_and_covers_every_nemesis() -> None:
    a = schedule(3, 45.0)
    assert a == schedule(3, 45.0) and a != schedule(4, 45.0)
    assert {name for _, name, _ in a} == {"partition", "one-way", "isolate", "flap", "loss", "kill-one",
                                          "kill-majority", "power-cut"}


@needs_lab
def test_warp_short_chaos_power_cut_partition_loss() -> None:
    report = run_chaos(11, variant="warp", duration=15.0, hold=2.5, time_limit=150.0,
                       nemeses=("power-cut", "partition", "loss"))
    assert report["ok"], report
    assert report["lost"] == 0 and report["wrong"] == 0 and report["converged"]
    assert report["acknowledged"] > 0
    assert {e["nemesis"] for e in report["nemeses"]} == {"power-cut", "partition", "loss"}
    _no_lab_left()


@needs_lab
def test_kv_short_chaos_is_linearizable() -> None:
    report = run_chaos(12, variant="kv", duration=12.0, hold=2.5, time_limit=120.0,
                       nemeses=("kill-majority", "one-way", "flap"))
    assert report["ok"], report
    assert report["linearizable"] and report["ok_ops"] > 0
    _no_lab_left()


@pytest.mark.slow
@needs_lab
@pytest.mark.parametrize("variant", ["warp", "kv"])
def test_long_chaos_every_nemesis(variant: str) -> None:
    for seed in range(3):
        report = run_chaos(seed, variant=variant, duration=45.0, time_limit=400.0)
        assert report["ok"], report
    _no_lab_left()
