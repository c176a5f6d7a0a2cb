"""A real cluster: three ``warpmesh kv serve`` processes on loopback (TCP mesh, SQLite storage).

* Under SIGKILL/restart chaos with concurrent clients, the recorded history is linearizable (so no
  acknowledged write is lost) and every replica ends with the same state.
* The whole cluster killed at once and restarted cold, repeatedly under load, never diverges and
  never loses an acknowledged write (PySyncObj diverges in ~5% of such restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
from pathlib import Path

import pytest

from warpmesh.kv.client import KVClient, KVError
from warpmesh.kv.linearizability import History, check

pytestmark = pytest.mark.process


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def free_port_block(n: int, low: int = 20_000, high: int = 32_000) -> int:
    """A base port whose ``n`` consecutive ports are all free now, below the kernel's ephemeral
    range (32768 and up on Linux), so no other test's outgoing connection can take one of them
    meanwhile (a block starting at a port the kernel handed out collided that way, in CI)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(low, high - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError(f"no block of {n} free ports in {low}-{high}")


class KVCluster:
    def __init__(self, tmp: Path, n: int = 3, snapshot_every: int = 200) -> None:
        ports = free_ports(n)
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.addr = {nid: f"127.0.0.1:{p}" for nid, p in zip(self.ids, ports)}
        self.peers = ",".join(f"{k}={v}" for k, v in self.addr.items())
        self.tmp = tmp
        self.snapshot_every = snapshot_every
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        src = str(Path(__file__).resolve().parents[2] / "src")
        self.env = dict(os.environ, PYTHONUNBUFFERED="1",
                        PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))

    async def start(self, nid: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "warpmesh.cli.app", "kv", "serve", "--id", nid, "--listen", self.addr[nid],
            "--peers", self.peers, "--data", str(self.tmp / nid), "--snapshot-every", str(self.snapshot_every),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=self.env)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            err = (await proc.stderr.read()).decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"{nid} failed to start:\n{err[-3000:]}")
        assert json.loads(line)["event"] == "ready"
        self.procs[nid] = proc

    async def start_all(self) -> None:
        await asyncio.gather(*(self.start(i) for i in self.ids))

    async def kill(self, nid: str) -> None:
        proc = self.procs.pop(nid)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def kill_all(self) -> None:
        for nid in list(self.procs):
            await self.kill(nid)

    def servers(self) -> list[str]:
        return list(self.addr.values())


async def _workload(kv: KVClient, hist: History, name: str, keys: list[str], stop: asyncio.Event,
                    rng: random.Random, acked: dict[str, bytes] | None = None) -> None:
    loop = asyncio.get_running_loop()
    n = 0
    while not stop.is_set():
        n += 1
        key = rng.choice(keys)
        r = rng.random()
        try:
            if r < 0.4:
                o = hist.invoke(name, "get", key, at=loop.time())
                hist.ok(o, await kv.get(key), at=loop.time())
            elif r < 0.8:
                v = f"{name}-{n}".encode()
                o = hist.invoke(name, "put", key, v, at=loop.time())
                await kv.put(key, v)
                hist.ok(o, True, at=loop.time())
            else:
                exp = rng.choice([None, f"{name}-{max(1, n - 1)}".encode()])
                new = f"{name}-{n}c".encode()
                o = hist.invoke(name, "cas", key, exp, new, at=loop.time())
                ok, _ = await kv.cas(key, exp, new)
                hist.ok(o, ok, at=loop.time())
        except KVError:
            hist.unknown(o)


async def _final_reads(kv: KVClient, hist: History, keys: list[str]) -> None:
    loop = asyncio.get_running_loop()
    for key in keys:
        o = hist.invoke("final", "get", key, at=loop.time())
        hist.ok(o, await kv.get(key), at=loop.time())


async def _converged_states(kv: KVClient, ids: list[str], timeout: float = 20.0) -> dict[str, tuple]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    states: dict[str, tuple] = {}
    while loop.time() < end:
        states = {i: await kv.replica_state(i) for i in ids}  # type: ignore[misc]
        vals = list(states.values())
        if all(v is not None for v in vals) and len({v[0] for v in vals}) == 1:  # type: ignore[index]
            return states
        await asyncio.sleep(0.2)
    return states


def test_three_process_cluster_is_linearizable_under_sigkill_and_restart(tmp_path: Path) -> None:
    async def main() -> None:
        c = KVCluster(tmp_path)
        await c.start_all()
        rng = random.Random(11)
        keys = ["a", "b", "c"]
        hist = History()
        kv = await KVClient(c.servers(), timeout=20, attempt_timeout=0.7, seed=1).connect()
        stop = asyncio.Event()
        workers = [asyncio.create_task(_workload(kv, hist, f"w{i}", keys, stop, random.Random(i)))
                   for i in range(8)]
        try:
            for _round in range(4):
                await asyncio.sleep(1.5)
                victim = rng.choice(sorted(c.procs))
                await c.kill(victim)  # SIGKILL: no goodbye, no flush
                await asyncio.sleep(rng.uniform(0.3, 1.5))
                await c.start(victim)
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        await _final_reads(kv, hist, keys)
        res = check(hist)
        acked_writes = sum(1 for o in hist.ops if o.known and o.op in ("put", "cas"))
        assert res.ok, res.detail
        assert acked_writes > 50, "the workload made too little progress to mean anything"
        states = await _converged_states(kv, c.ids)
        assert len({s[1] for s in states.values()}) == 1, states  # identical replicas
        await kv.close()
        await c.kill_all()

    asyncio.run(main())


async def _cold_restart_rounds(tmp: Path, rounds: int) -> None:
    c = KVCluster(tmp, snapshot_every=50)
    keys = [f"k{i}" for i in range(8)]
    #: Per key: the last acknowledged value, and writes issued after it whose outcome is unknown
    #: (the cluster died before answering): a read must return one of them, nothing older.
    acked: dict[str, bytes] = {}
    maybe: dict[str, list[bytes]] = {k: [] for k in keys}

    def allowed(key: str) -> list[bytes | None]:
        return [acked.get(key), *maybe[key]]

    for rnd in range(rounds):
        await c.start_all()
        kv = await KVClient(c.servers(), timeout=30, attempt_timeout=0.7, seed=rnd).connect()
        for key in keys:
            got = await kv.get(key)
            assert got in allowed(key), (
                f"round {rnd}: {key} reads {got!r}; acknowledged {acked.get(key)!r}, possibly "
                f"applied since: {maybe[key]!r} - an acknowledged write was lost")
            if got is not None:
                acked[key] = got  # what survived is now the baseline
                maybe[key] = []
        stop = asyncio.Event()

        async def writer(i: int, kv: KVClient = kv, stop: asyncio.Event = stop, rnd: int = rnd) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                key = keys[(i * 3 + n) % len(keys)]
                value = f"r{rnd}-w{i}-{n}".encode()
                maybe[key].append(value)
                try:
                    await kv.put(key, value)
                except KVError:
                    return
                acked[key] = value
                maybe[key] = []  # a single sequential writer: nothing else is in flight

        # One writer per key family, so "the last acknowledged value" is well defined.
        tasks = [asyncio.create_task(writer(0))]
        await asyncio.sleep(0.6)
        await c.kill_all()  # the whole cluster, at once, with writes in flight
        stop.set()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await kv.close()
    # Final round: every acknowledged write survived and the replicas are identical.
    await c.start_all()
    kv = await KVClient(c.servers(), timeout=30, seed=999).connect()
    for key in keys:
        assert await kv.get(key) in allowed(key)
    states = await _converged_states(kv, c.ids)
    assert len({s[1] for s in states.values()}) == 1, states
    await kv.close()
    await c.kill_all()


def test_cold_restart_of_the_whole_cluster_under_load_never_diverges(tmp_path: Path) -> None:
    asyncio.run(_cold_restart_rounds(tmp_path, 3))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cold_restart_one_hundred_times(tmp_path: Path) -> None:
    asyncio.run(_cold_restart_rounds(tmp_path, 100))
