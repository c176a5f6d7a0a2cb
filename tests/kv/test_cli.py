"""The ``warpmesh kv`` and ``warpmesh sim raft`` command lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kv.test_processes import free_ports

SRC = str(Path(__file__).resolve().parents[2] / "src")


def warpmesh(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-m", "warpmesh.cli.app", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_usage_errors_exit_2_with_one_line() -> None:
    r = warpmesh("kv", "serve", "--id", "n1", "--listen", "127.0.0.1:1", "--peers", "n2=127.0.0.1:2",
                 "--data", "/tmp/x")
    assert r.returncode == 2 and "--peers must include this node" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = warpmesh("kv", "put", "k", "v", "--servers", "nonsense")
    assert r.returncode == 2 and "HOST:PORT" in r.stderr


def test_unreachable_servers_fail_with_advice() -> None:
    (port,) = free_ports(1)
    r = warpmesh("kv", "get", "k", "--servers", f"127.0.0.1:{port}", "--timeout", "1")
    # Nothing listens there: said at once (KVUnreachable), with what to do next.
    assert r.returncode == 1 and "no KV server is listening" in r.stderr and "kv up" in r.stderr


def test_sim_raft_replays_one_seed_as_json() -> None:
    r = warpmesh("sim", "raft", "--seed", "5", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout.splitlines()[0])
    assert rep["ok"] and rep["replay"] == "warpmesh sim raft --seed 5"


@pytest.mark.process
def test_kv_cli_round_trip_against_a_real_cluster(tmp_path: Path) -> None:
    import os
    import signal
    import time

    ports = free_ports(3)
    peers = ",".join(f"n{i + 1}=127.0.0.1:{p}" for i, p in enumerate(ports))
    env = dict(os.environ, PYTHONPATH=SRC, PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen([sys.executable, "-m", "warpmesh.cli.app", "kv", "serve", "--id", f"n{i + 1}",
                               "--listen", f"127.0.0.1:{p}", "--peers", peers, "--data", str(tmp_path / f"n{i}")],
                              stdout=subprocess.PIPE, text=True, env=env) for i, p in enumerate(ports)]
    try:
        for p in procs:
            assert p.stdout is not None and json.loads(p.stdout.readline())["event"] == "ready"
        servers = ",".join(f"127.0.0.1:{p}" for p in ports)
        t0 = time.monotonic()
        r = warpmesh("kv", "put", "greeting", "hello", "--servers", servers)
        assert r.returncode == 0 and int(r.stdout) > 0, r.stderr
        r = warpmesh("kv", "put", "greeting", "hello", "--servers", servers, "--json")  # issue 9
        doc = json.loads(r.stdout)
        assert r.returncode == 0 and doc["key"] == "greeting" and doc["revision"] > 0 and set(doc) == {"key", "revision"}
        assert warpmesh("kv", "get", "greeting", "--servers", servers).stdout.strip() == "hello"
        r = warpmesh("kv", "cas", "greeting", "hello", "bonjour", "--servers", servers)
        assert r.returncode == 0 and "swapped" in r.stdout
        r = warpmesh("kv", "cas", "greeting", "hello", "x", "--servers", servers)
        assert r.returncode == 1 and "not swapped: greeting = bonjour" in r.stdout
        assert warpmesh("kv", "delete", "greeting", "--servers", servers).returncode == 0
        r = warpmesh("kv", "get", "greeting", "--servers", servers)
        assert r.returncode == 1 and "not found" in r.stderr
        assert time.monotonic() - t0 < 60
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(20)
