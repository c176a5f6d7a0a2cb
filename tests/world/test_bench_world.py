"""bench/world.py runs end to end in --quick mode and prints well-formed lines (figures not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

BENCH = Path(__file__).resolve().parents[2] / "bench" / "world.py"


def test_world_bench_quick() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = {d["bench"]: d for d in map(json.loads, out.stdout.splitlines())}
    assert set(lines) == {"world.ticks_per_s", "world.ticks_per_s_pipelined", "world.intents_per_s",
                          "world.agreement_bytes_per_tick"}
    for d in lines.values():
        assert d.keys() >= {"bench", "ours", "peer", "peer_name", "ratio", "unit", "runs"}
        assert d["ours"] > 0 and d["peer"] > 0
