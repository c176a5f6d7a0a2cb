"""`warpmesh game` over real TCP processes: the host is SIGKILLed mid-game and the others finish."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

WARPMESH = [sys.executable, "-m", "warpmesh.cli.app"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lines(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _spawn(args: list[str], out: Path, err: Path, **kw: object) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(WARPMESH + args, stdout=out.open("wb"), stderr=err.open("wb"), env=env, **kw)  # type: ignore[call-overload]


def _wait_for(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_three_players_finish_after_the_host_is_killed_and_transcripts_match(tmp_path: Path) -> None:
    port = _port()
    addr = f"127.0.0.1:{port}"
    (tmp_path / "many").write_text("1\n" * 30)
    secret = tmp_path / "secret"
    secret.write_text("a-long-enough-cluster-secret-for-the-game-test\n")
    sec = ["--secret-file", str(secret)]
    procs = []
    try:
        host = _spawn(["game", "host", "--players", "3", "--game", "nim", "--listen", addr, "--moves", "-",
                       "--json", *sec], tmp_path / "host.out", tmp_path / "host.err", stdin=subprocess.PIPE)
        procs.append(host)
        time.sleep(1.0)
        for name in ("p2", "p3"):
            procs.append(_spawn(["game", "join", addr, "--id", name, "--moves", str(tmp_path / "many"), "--json", *sec],
                                tmp_path / f"{name}.out", tmp_path / f"{name}.err"))
        watcher = _spawn(["game", "watch", addr, "--id", "w", "--json", *sec], tmp_path / "w.out", tmp_path / "w.err")
        procs.append(watcher)
        assert host.stdin is not None
        host.stdin.write(b"2\n")  # the host's first move; then it waits on stdin for its next turn
        host.stdin.flush()
        _wait_for(lambda: len(_lines(tmp_path / "w.out")) >= 3, 60, "three turns")
        host.send_signal(signal.SIGKILL)
        for p in procs[1:]:
            assert p.wait(timeout=90) == 0, (tmp_path / "p2.err").read_text()[-2000:]
        transcripts = [_lines(tmp_path / f"{n}.out") for n in ("p2", "p3", "w")]
        assert transcripts[0] == transcripts[1] == transcripts[2]
        t = transcripts[0]
        assert {"event": "seat_lost", "player": "host"} in t
        assert t[0] == {"index": 1, "player": "host", "move": 2}
        assert "final_state_hash" in t[-1] and t[-1]["winner"] in ("p2", "p3")
        moves = [x for x in t if "index" in x]
        assert [x["index"] for x in moves] == list(range(1, len(moves) + 1))
        assert sum(x["move"] for x in moves) == 21
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("args", [["game", "host", "--players", "3"], ["game", "join", "nowhere"]])
def test_usage_errors_are_one_line_and_exit_2(args: list[str]) -> None:
    r = subprocess.run(WARPMESH + args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_an_unreadable_secret_file_is_one_line_with_advice(tmp_path: Path) -> None:
    r = subprocess.run([*WARPMESH, "game", "join", "127.0.0.1:9", "--secret-file", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "secret" in r.stderr
