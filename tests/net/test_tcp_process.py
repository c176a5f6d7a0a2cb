"""Real processes on loopback: three peers form a mesh, one is SIGKILLed and restarted, the roster
reconverges with its new incarnation, and a fourth peer with the wrong secret is refused."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.net.tcp_helpers import run

PEER = Path(__file__).with_name("tcp_peer.py")
WAIT = 30.0


class Proc:
    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.log = bytearray()
        self.pump = asyncio.ensure_future(self._read())
        self.log_pump = asyncio.ensure_future(self._read_log())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.events.append(json.loads(line))
            self.changed.set()

    async def _read_log(self) -> None:
        # Drain stderr continuously so a chatty peer can never block on a full pipe.
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self.log += chunk

    def last(self, event: str) -> dict[str, Any] | None:
        for e in reversed(self.events):
            if e["event"] == event:
                return e
        return None

    async def wait(self, pred: Any, what: str) -> dict[str, Any]:
        async def loop() -> dict[str, Any]:
            while True:
                for e in self.events:
                    if pred(e):
                        return e
                self.changed.clear()
                await self.changed.wait()

        try:
            return await asyncio.wait_for(loop(), WAIT)
        except TimeoutError:
            raise AssertionError(f"{self.name}: timed out waiting for {what}; events: {self.events}") from None

    async def roster(self, members: set[str]) -> dict[str, Any]:
        return await self.wait(lambda e: e["event"] == "roster" and set(e["roster"]) == members,
                               f"roster {sorted(members)}")

    async def stderr(self) -> str:
        await self.log_pump
        return self.log.decode()


async def start(name: str, secret: Path, join: list[list[Any]] | None = None,
                listen: str = "127.0.0.1:0") -> Proc:
    args = [sys.executable, str(PEER), "--id", name, "--listen", listen, "--secret-file", str(secret)]
    for host, port in join or []:
        args += ["--join", f"{host}:{port}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("WARPMESH_SECRET", None)
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    p = Proc(name, proc)
    await p.wait(lambda e: e["event"] == "listening", "listening")
    return p


@pytest.mark.process
def test_three_processes_mesh_survive_sigkill_and_refuse_a_wrong_secret(tmp_path: Path) -> None:
    secret = tmp_path / "cluster.secret"
    secret.write_text("process-test-secret-0123456789\n")
    secret.chmod(0o600)
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("a-different-secret-0123456789\n")
    wrong.chmod(0o600)

    async def main() -> None:
        procs: list[Proc] = []
        try:
            a = await start("a", secret)
            procs.append(a)
            a_addr = a.last("listening")["address"]  # type: ignore[index]
            b = await start("b", secret, [a_addr])
            procs.append(b)
            b_addr = b.last("listening")["address"]  # type: ignore[index]
            c = await start("c", secret, [b_addr])  # joins through b only: gossip brings a
            procs.append(c)
            for p in (a, b, c):
                await p.roster({"a", "b", "c"})

            old_inc = b.last("listening")["incarnation"]  # type: ignore[index]
            b.proc.send_signal(signal.SIGKILL)
            await b.proc.wait()
            for p in (a, c):
                await p.wait(lambda e: e["event"] == "roster" and set(e["roster"]) == {"a", "c"}, "b gone")

            b2 = await start("b", secret, [a_addr], listen=f"127.0.0.1:{b_addr[1]}")
            procs.append(b2)
            new_inc = b2.last("listening")["incarnation"]  # type: ignore[index]
            assert new_inc > old_inc
            for p in (a, c):
                await p.wait(lambda e: e["event"] == "roster" and set(e["roster"]) == {"a", "b", "c"}
                             and e["incarnations"].get("b") == new_inc, "b readmitted with its new incarnation")
            await b2.roster({"a", "b", "c"})

            x = await start("x", wrong, [a_addr])
            procs.append(x)
            await a.wait(lambda e: e["event"] == "refusals" and e["by_peer"].get("bad_secret", 0) >= 1,
                         "a refusal of x")
            await x.wait(lambda e: e["event"] == "refusals" and e["by_us"].get("bad_secret", 0) >= 1,
                         "x refusing a")
            await asyncio.sleep(0.5)
            for p in (a, b2, c):
                assert "x" not in p.last("roster")["roster"]  # type: ignore[index]
            assert x.last("roster")["roster"] == ["x"]  # type: ignore[index]

            for p in (a, b2, c, x):
                p.proc.send_signal(signal.SIGTERM)
            for p in (a, b2, c, x):
                assert await asyncio.wait_for(p.proc.wait(), WAIT) == 0
                await p.pump
                assert p.events[-1]["event"] == "closed"
            x_log = await x.stderr()
            a_log = await a.stderr()
            assert "cluster secret mismatch" in x_log and "bad_secret" in x_log
            assert "cluster secret mismatch" in a_log
        finally:
            for p in procs:
                if p.proc.returncode is None:
                    p.proc.kill()
                    await p.proc.wait()

    run(main(), timeout=120)
