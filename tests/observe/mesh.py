"""A small mesh of real ``warpmesh node`` processes on loopback for the dashboard's tests."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def node(node_id: str, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "WARPMESH_SECRET"}
    return subprocess.Popen([sys.executable, "-m", "warpmesh.cli.app", "node", "--id", node_id, "--listen",
                             "127.0.0.1:0", "--ops", "warpmesh.warp.demo_ops", *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env, start_new_session=True)


def ready(p: subprocess.Popen[str], timeout: float = 30.0) -> dict[str, Any]:
    """The node's ``ready`` event (AssertionError if it does not come in time)."""
    assert p.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                break
            line = p.stdout.readline()
            if not line:
                break
            event = json.loads(line)
            if event.get("event") == "ready":
                return dict(event)
    finally:
        sel.close()
    raise AssertionError("a node did not get ready in time")


class Mesh:
    """``n`` peers ``p0..``; ``p0`` serves the dashboard on a free port (``http`` is its URL)."""

    def __init__(self, n: int = 3, *, http: bool = True) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        first = node("p0", *(("--http", "127.0.0.1:0") if http else ()))
        self.procs.append(first)
        info = ready(first)
        self.address = str(info["address"])
        self.http = str(info.get("http", ""))
        for i in range(1, n):
            self.procs.append(node(f"p{i}", "--join", self.address))
        for p in self.procs[1:]:
            ready(p)

    def kill(self, i: int) -> None:
        self.procs[i].kill()
        self.procs[i].wait(10)

    def submit(self, jobs: list[dict[str, Any]], tmp: Path, *, wait: bool = True) -> subprocess.CompletedProcess[str]:
        path = tmp / f"jobs-{time.monotonic_ns()}.jsonl"
        path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
        return subprocess.run([sys.executable, "-m", "warpmesh.cli.app", "submit", "--to", self.address, "--file",
                               str(path), "--wait" if wait else "--no-wait"], capture_output=True, text=True,
                              timeout=120)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
