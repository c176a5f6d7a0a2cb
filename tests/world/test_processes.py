"""``warpmesh world demo``: real peer processes over loopback TCP (kill/restart, divergence, a joiner)."""

from __future__ import annotations

import json
import subprocess
import sys

EXPECTED_EVENTS = {"diverged", "repaired", "restarted", "caught_up"}


def _demo(*args: str, timeout: float = 150) -> tuple[int, list[dict], str]:
    p = subprocess.run([sys.executable, "-m", "warpmesh.cli.app", "world", "demo", *args],
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, [json.loads(line) for line in p.stdout.splitlines() if line.strip()], p.stderr


def test_demo_kill_diverge_and_join_over_tcp() -> None:
    code, lines, err = _demo("--ticks", "48", "--kill-one", "--diverge-one", "--add-peer", "--workers", "4",
                             "--json")
    assert code == 0, (err, [x for x in lines if "hashes" not in x], [x for x in lines if "hashes" in x][-3:])
    *body, summary = lines
    assert summary == {"ticks": 48, "divergences_injected": 1, "divergences_detected": 1, "repaired": 1,
                       "all_agree_at_end": True}
    ticks = [x for x in body if "hashes" in x]
    events = [x for x in body if "event" in x]
    assert all(set(t) == {"tick", "hashes", "agree"} for t in ticks)
    assert [t["tick"] for t in ticks] == list(range(1, 49))
    assert {e["event"] for e in events} <= EXPECTED_EVENTS
    div = next(e for e in events if e["event"] == "diverged")
    # Detected in the tick it happened: the only disagreeing tick line is that tick.
    assert [t["tick"] for t in ticks if not t["agree"]] == [div["tick"]]
    assert div["peer"] == "p2" and "commit" in div["parts"]
    assert div["diff"]["attachments"]["changed"], "the structural diff names what differs"
    rep = next(e for e in events if e["event"] == "repaired")
    assert rep["peer"] == "p2" and rep["tick"] == div["tick"] + 1
    assert any(e["event"] == "restarted" and e["peer"] == "p3" for e in events)
    caught = {e["peer"]: e for e in events if e["event"] == "caught_up"}
    assert set(caught) == {"p3", "p4"}
    assert "from_snapshot" in caught["p4"], "the joiner installed a snapshot"
    # Peers with 1 and 4 engine workers, the restarted one and the joiner all agree afterwards
    # (all_agree_at_end requires every live peer's hash of the final tick, the joiner's included).
    assert ticks[-1]["agree"] and {"p1", "p2", "p3"} <= set(ticks[-1]["hashes"])


def test_demo_usage_error_is_one_line() -> None:
    for args in (["--peers", "1"], ["--peers", "2", "--diverge-one"], ["--ticks", "x"]):
        p = subprocess.run([sys.executable, "-m", "warpmesh.cli.app", "world", "demo", *args],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
