"""``warpmesh top`` through a pseudo-terminal: its screen shows the peers and a moving job count."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.observe.mesh import Mesh

pytestmark = pytest.mark.process

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][AB0-2]|\r")


class Screen:
    """Everything ``top`` wrote to its terminal, ANSI escapes stripped."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.raw = b""

    def read(self, seconds: float) -> str:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    self.raw += os.read(self.fd, 65536)
                except OSError:
                    break
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def counts(self, seconds: float) -> list[int]:
        return [int(n) for n in re.findall(r"jobs finished (\d+)", self.read(seconds))]


def test_top_shows_the_peers_and_a_moving_job_count(tmp_path: Path) -> None:
    with Mesh(3, http=False) as mesh:
        main, child = pty.openpty()
        env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
        top = subprocess.Popen([sys.executable, "-m", "warpmesh.cli.app", "top", "--to", mesh.address,
                                "--interval", "0.2"], stdin=child, stdout=child, stderr=child, env=env,
                               start_new_session=True)
        os.close(child)
        screen = Screen(main)
        try:
            deadline = time.monotonic() + 20
            while not all(f"p{i}" in screen.read(0.3) for i in range(3)) and time.monotonic() < deadline:
                pass
            text = screen.read(0.5)
            for i in range(3):
                assert re.search(rf"p{i}\s+worker\s+live", text), text[-2000:]
            before = screen.counts(0.1)[-1]
            out = mesh.submit([{"op": "demo.collatz", "args": [i]} for i in range(1, 101)], tmp_path)
            assert out.returncode == 0, out.stderr
            seen: list[int] = []
            deadline = time.monotonic() + 10
            while (not seen or seen[-1] < before + 100) and time.monotonic() < deadline:
                seen = screen.counts(0.3)
            assert seen[-1] == before + 100, seen[-20:]
            assert "demo.collatz-" in screen.read(0.1)  # the task stream
        finally:
            top.terminate()
            top.wait(10)
            os.close(main)


def test_top_once_json_prints_one_snapshot() -> None:
    with Mesh(2, http=False) as mesh:
        out = subprocess.run([sys.executable, "-m", "warpmesh.cli.app", "top", "--to", mesh.address, "--once",
                              "--json", "--settle", "0.3"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    snap = json.loads(lines[0])
    assert {p["peer"]: p["state"] for p in snap["peers"] if p["role"] == "worker"} == {"p0": "live", "p1": "live"}
    assert {"jobs", "counters", "stream", "series", "raft", "isolates"} <= set(snap)
