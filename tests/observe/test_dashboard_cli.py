"""``warpmesh dashboard --to`` serves a mesh's board from a client; ``--http`` beyond loopback needs a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.observe.mesh import Mesh, ready

pytestmark = pytest.mark.process


def test_dashboard_joins_as_a_client_and_serves_the_board(tmp_path: Path) -> None:
    with Mesh(2, http=False) as mesh:
        env = {k: v for k, v in os.environ.items() if k != "WARPMESH_SECRET"}
        dash = subprocess.Popen([sys.executable, "-m", "warpmesh.cli.app", "dashboard", "--to", mesh.address,
                                 "--http", "127.0.0.1:0", "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
        try:
            info = ready(dash)
            assert info["http"].startswith("http://127.0.0.1:") and info["mesh"] == mesh.address
            assert mesh.submit([{"op": "demo.collatz", "args": [i]} for i in range(1, 21)], tmp_path).returncode == 0
            deadline = time.monotonic() + 15
            while True:
                with urllib.request.urlopen(info["http"] + "api/summary", timeout=5) as r:
                    summary = json.loads(r.read())
                # (The job tiles come from the mesh-wide counters, flushed every 0.1 s: they may
                # trail the run stream by that much.)
                done = summary["stream"]["total"] == 20 and summary["jobs"]["finished"] == 20
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert summary["jobs"]["finished"] == 20
            assert summary["stream"]["total"] == 20  # every worker's runs, over channel 0x70
            assert {r["peer"] for r in summary["stream"]["runs"]} <= {"p0", "p1"}
            workers = {p["peer"]: p["state"] for p in summary["peers"] if p["role"] == "worker"}
            assert workers == {"p0": "live", "p1": "live"}
        finally:
            dash.terminate()
            assert dash.wait(15) == 0


@pytest.mark.parametrize("command", [["node", "--id", "x", "--listen", "127.0.0.1:0", "--http", "10.0.0.1:8080"],
                                     ["dashboard", "--to", "127.0.0.1:1", "--http", "10.0.0.1:8080"]])
def test_http_beyond_loopback_without_a_secret_is_a_usage_error(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WARPMESH_SECRET"}
    out = subprocess.run([sys.executable, "-m", "warpmesh.cli.app", *command], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 2
    assert "loopback" in out.stderr and "secret" in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2, out.stderr
