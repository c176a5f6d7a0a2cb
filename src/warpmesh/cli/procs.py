"""Drive ``warpmesh node --control stdio`` child processes: start, command, await events, kill."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from warpmesh.errors import WarpmeshError


class NodeProcessError(WarpmeshError, RuntimeError):
    """A child node exited or did not answer in time."""


class NodeProcess:
    """One ``warpmesh node`` child speaking JSON lines on stdin/stdout."""

    def __init__(self, node_id: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.node_id = node_id
        self.args = args
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.address: str | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.last_status: dict[str, Any] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr_reader: asyncio.Task[None] | None = None
        self.stderr_tail: list[str] = []

    @classmethod
    def command(cls, node_id: str, listen: str, join: list[str], *extra: str) -> list[str]:
        args = [sys.executable, "-m", "warpmesh.cli.app", "node", "--id", node_id, "--listen", listen,
                "--control", "stdio"]
        for j in join:
            args += ["--join", j]
        return [*args, *extra]

    async def start(self, timeout: float = 30.0) -> NodeProcess:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, limit=64 * 1024 * 1024)
        self._reader = asyncio.create_task(self._read())
        self._stderr_reader = asyncio.create_task(self._drain_stderr())
        ready = await self.wait_event(lambda e: e["event"] == "ready", timeout)
        self.address = ready["address"]
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.events.put({"event": "exited", "code": await self.proc.wait()})
                return
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "status":
                self.last_status = event
            await self.events.put(event)

    async def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                return
            self.stderr_tail = [*self.stderr_tail[-40:], line.decode(errors="replace").rstrip()]

    async def wait_event(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        async def wait() -> dict[str, Any]:
            while True:
                event = await self.events.get()
                if event["event"] == "exited":
                    raise NodeProcessError(f"{self.node_id} exited with code {event['code']}: "
                                           + " | ".join(self.stderr_tail[-5:]))
                if match(event):
                    return event

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise NodeProcessError(f"{self.node_id} did not answer within {timeout:.0f} s: "
                                   + " | ".join(self.stderr_tail[-5:])) from None

    async def send(self, cmd: dict[str, Any]) -> None:
        if self.proc is None or self.proc.stdin is None or self.proc.returncode is not None:
            raise NodeProcessError(f"{self.node_id} is not running")
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def call(self, cmd: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Send a command and return its answer event (``ok``/``status``/``enqueued``/``error``)."""
        await self.send(cmd)
        return await self.wait_event(lambda e: e["event"] in ("ok", "status", "enqueued", "error", "results"),
                                     timeout)

    async def status(self, timeout: float = 30.0) -> dict[str, Any]:
        return await self.call({"cmd": "status"}, timeout)

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.send({"cmd": "quit"})
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill()
            await self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None
