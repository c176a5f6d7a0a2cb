"""Issue 17 over real processes (``warpmesh kv serve`` on loopback, SQLite, the operator CLI):

* grow 3 -> 5 with ``kv serve --join`` under write load, then shrink 5 -> 3 by removing the
  leader and another node (the removed nodes exit 1 saying so);
* replace a SIGKILLed voter by a new node on a new port; the old node restarted on its old data is
  refused and says so; a new node reusing the removed id is refused unless ``--force``;
* move leadership away from a node (``kv transfer-leader``) and stop that node;
* back up under load, restore into a new 3-node cluster: every key and revision equal;
* ``kv up`` reports a dead node, keeps serving, restarts it (after a pause or on ``restart ID``).

Every history is checked by the linearizability checker, so no acknowledged write was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kv.test_processes import _final_reads, _workload, free_port_block, free_ports
from warpmesh.kv.client import KVClient
from warpmesh.kv.linearizability import History, check

pytestmark = pytest.mark.process

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
ENV.pop("WARPMESH_SECRET", None)
FAST = ["--election-timeout", "0.15"]
_CLUSTERS: list[Cluster] = []


@pytest.fixture(autouse=True)
def _server_logs_on_failure() -> Any:
    """Each long-running node's stderr (log level info) is copied to a file as it comes (a full pipe
    would stall the node); at teardown the tails are printed, which pytest shows only on failure."""
    _CLUSTERS.clear()
    yield
    for c in _CLUSTERS:
        for nid, path in sorted(c.logs.items()):
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            print(f"----- {nid} stderr (last 40 of {len(lines)} lines; {path}) -----")
            print("\n".join(lines[-40:]))
    _CLUSTERS.clear()


class Cluster:
    """``kv serve`` processes; ids map to fixed loopback ports."""

    def __init__(self, tmp: Path, ids: list[str]) -> None:
        self.tmp = tmp
        ports = free_ports(len(ids) + 4)
        self.addr = {nid: f"127.0.0.1:{p}" for nid, p in zip(ids, ports)}
        self.spare_ports = ports[len(ids):]
        self.boot = list(ids)
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.logs: dict[str, Path] = {}
        self.ready: dict[str, dict[str, Any]] = {}
        self._drains: dict[str, tuple[asyncio.Task[None], Path]] = {}
        _CLUSTERS.append(self)

    @property
    def peers(self) -> str:
        return ",".join(f"{k}={self.addr[k]}" for k in self.boot)

    def add_id(self, nid: str) -> str:
        self.addr[nid] = f"127.0.0.1:{self.spare_ports.pop()}"
        return self.addr[nid]

    async def spawn(self, nid: str, *extra: str, data: str | None = None) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "warpmesh.cli.app", "kv", "serve", "--id", nid, "--listen", self.addr[nid],
            "--data", data or str(self.tmp / nid), "--snapshot-every", "100", *FAST, *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV)

    async def start(self, nid: str, *extra: str) -> None:
        args = extra or ("--peers", self.peers)
        proc = await self.spawn(nid, *args, "--log-level", "info")
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            err = (await proc.stderr.read()).decode(errors="replace")
            raise AssertionError(f"{nid} failed to start:\n{err[-3000:]}")
        self.ready[nid] = json.loads(line)
        assert self.ready[nid]["event"] == "ready"
        self.procs[nid] = proc
        log = self.logs[f"{nid}#{len(self.logs)}"] = self.tmp / f"{nid}.{len(self.logs)}.log"
        self._drains[nid] = (asyncio.get_running_loop().create_task(_copy(proc.stderr, log)), log)

    async def stderr_of(self, nid: str) -> bytes:
        """Everything the last started ``nid`` wrote on stderr, once it has exited."""
        task, log = self._drains[nid]
        await asyncio.wait_for(task, 20)
        return log.read_bytes()

    async def join(self, nid: str, via: str, *extra: str) -> None:
        self.add_id(nid)
        await self.start(nid, "--join", self.addr[via], *extra)

    async def kill(self, nid: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(nid)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        await proc.wait()

    async def kill_all(self) -> None:
        for nid in list(self.procs):
            await self.kill(nid)

    def servers(self, ids: list[str] | None = None) -> str:
        return ",".join(self.addr[i] for i in (ids or sorted(self.procs)))


async def _copy(stream: asyncio.StreamReader, path: Path) -> None:
    with path.open("wb") as f:
        while chunk := await stream.read(65536):
            f.write(chunk)
            f.flush()


async def cli(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "warpmesh.cli.app", "kv", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=ENV)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def wait_voters(kv: KVClient, voters: set[str], timeout: float = 30.0) -> dict:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    last: dict = {}
    while loop.time() < end:
        with contextlib.suppress(Exception):
            last = await kv.member_list()
            if {m["id"] for m in last["members"]} == voters and all(
                    m["role"] == "voter" for m in last["members"]):
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"voters never became {sorted(voters)}: {last}")


class Load:
    """Concurrent clients recording a history for the linearizability checker."""

    def __init__(self, kv: KVClient, n: int = 4, keys: tuple[str, ...] = ("a", "b", "c")) -> None:
        self.kv, self.keys, self.hist, self.stop = kv, list(keys), History(), asyncio.Event()
        self.tasks = [asyncio.create_task(_workload(kv, self.hist, f"w{i}", self.keys, self.stop,
                                                    random.Random(i))) for i in range(n)]

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)
        await _final_reads(self.kv, self.hist, self.keys)
        res = check(self.hist)
        assert res.ok, res.detail
        acked = sum(1 for o in self.hist.ops if o.known and o.op in ("put", "cas"))
        assert acked > 20, "the load made too little progress to mean anything"


def test_grow_3_to_5_under_load_then_shrink_to_3(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, ["n1", "n2", "n3"])
        await asyncio.gather(*(c.start(i) for i in c.boot))
        kv = await KVClient(c.servers().split(","), timeout=20, attempt_timeout=0.7, seed=1).connect()
        load = Load(kv)
        try:
            await asyncio.sleep(0.5)
            await c.join("n4", "n2")
            await c.join("n5", "n3")
            listed = await wait_voters(kv, {"n1", "n2", "n3", "n4", "n5"})
            assert {m["id"]: m["address"] for m in listed["members"]} == c.addr
            # member add of a node already there: exit 0, says so.
            rc, out, err = await cli("member", "add", f"n4={c.addr['n4']}", "--servers", c.servers(), "--json")
            assert rc == 0, err
            assert json.loads(out)["added"] is False and "already" in json.loads(out)["detail"]
            await asyncio.sleep(0.5)
            # Shrink: remove the leader (it hands over first) and one more.
            leader = listed["leader"]
            other = next(i for i in ("n5", "n4", "n3") if i != leader)
            for victim in (leader, other):
                rc, out, err = await cli("member", "remove", victim, "--servers", c.servers(), "--json")
                assert rc == 0, err
                assert json.loads(out)["removed"] is True
            remaining = {"n1", "n2", "n3", "n4", "n5"} - {leader, other}
            after = await wait_voters(kv, remaining)
            assert after["leader"] in remaining
            await asyncio.sleep(0.5)
        finally:
            await load.finish()
        # A removed node learns it and stops with exit status 1, saying why.
        for victim in (leader, other):
            proc = c.procs.pop(victim)
            rc = await asyncio.wait_for(proc.wait(), 20)
            assert rc == 1
            assert b"was removed from the cluster" in await c.stderr_of(victim)
        await kv.close()
        await c.kill_all()

    asyncio.run(main())


def test_replace_a_sigkilled_voter_and_refuse_the_old_one(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, ["n1", "n2", "n3"])
        await asyncio.gather(*(c.start(i) for i in c.boot))
        kv = await KVClient(c.servers().split(","), timeout=20, attempt_timeout=0.7, seed=2).connect()
        load = Load(kv)
        try:
            await asyncio.sleep(0.5)
            leader = (await kv.member_list())["leader"]
            dead = next(i for i in c.boot if i != leader)
            await c.kill(dead)  # SIGKILL
            # Removing a live voter now would leave no live quorum: refused with the reason.
            live_other = next(i for i in c.boot if i not in (leader, dead))
            await asyncio.sleep(1.0)
            rc, _out, err = await cli("member", "remove", live_other, "--servers", c.servers())
            assert rc == 1 and "quorum" in err and len(err.strip().splitlines()) == 1, err
            rc, out, err = await cli("member", "remove", dead, "--servers", c.servers(), "--json")
            assert rc == 0 and json.loads(out)["removed"] is True, err
            await c.join("n4", leader)  # a new machine on a new port
            await wait_voters(kv, {leader, live_other, "n4"})
            await asyncio.sleep(0.5)
        finally:
            await load.finish()
        # The dead node comes back with its old data: refused, says so, exits 1.
        proc = await c.spawn(dead, "--peers", c.peers)
        rc = await asyncio.wait_for(proc.wait(), 30)
        err = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
        assert rc == 1 and "was removed from the cluster" in err, err
        # A new node reusing the removed id on an empty directory: refused unless --force.
        fresh = str(tmp_path / "fresh")
        c.addr[dead] = c.add_id("tmp")
        proc = await c.spawn(dead, "--join", c.addr[leader], data=fresh)
        rc = await asyncio.wait_for(proc.wait(), 30)
        err = (await proc.stderr.read()).decode()  # type: ignore[union-attr]
        assert rc == 1 and "never reused" in err and "--force" in err, err
        assert (await kv.member_list())["leader"] is not None
        await kv.close()
        await c.kill_all()

    asyncio.run(main())


def test_transfer_leadership_away_then_stop_the_node(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, ["n1", "n2", "n3"])
        await asyncio.gather(*(c.start(i) for i in c.boot))
        kv = await KVClient(c.servers().split(","), timeout=20, attempt_timeout=0.7, seed=3).connect()
        load = Load(kv)
        try:
            await asyncio.sleep(0.5)
            old = (await kv.member_list())["leader"]
            target = next(i for i in c.boot if i != old)
            rc, out, err = await cli("transfer-leader", target, "--servers", c.servers(), "--json")
            assert rc == 0, err
            assert json.loads(out)["leader"] == target and json.loads(out)["previous"] == old
            # Given one address, status still finds and asks every member.
            rc, out, err = await cli("status", "--servers", c.addr[target], "--json")
            assert rc == 0, err
            nodes = {n["id"]: n for n in json.loads(out)["nodes"]}
            assert set(nodes) == set(c.boot)
            assert set(nodes[target]) == {"id", "role", "leader", "term", "commit_index", "applied_index",
                                          "log_entries", "snapshot_index", "data_bytes", "healthy"}
            assert nodes[target]["role"] == "leader" and all(n["healthy"] for n in nodes.values())
            await c.kill(old, signal.SIGTERM)  # maintenance: the node stops
            await asyncio.sleep(1.0)
            # A transfer with no id picks a live voter; the stopped node shows unhealthy.
            rc, out, err = await cli("status", "--servers", c.servers(c.boot), "--json")
            assert rc == 0, err
            assert {n["id"]: n["healthy"] for n in json.loads(out)["nodes"]}[old] is False
        finally:
            await load.finish()
        await kv.close()
        await c.kill_all()

    asyncio.run(main())


def test_backup_under_load_and_restore_into_a_new_cluster(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path / "old", ["n1", "n2", "n3"])
        await asyncio.gather(*(c.start(i) for i in c.boot))
        kv = await KVClient(c.servers().split(","), timeout=20, attempt_timeout=0.7, seed=4).connect()
        acked = {f"k{i}": (f"v{i}".encode(), await kv.put(f"k{i}", f"v{i}")) for i in range(40)}
        load = Load(kv, keys=("x", "y", "z"))
        await asyncio.sleep(0.3)
        rc, out, err = await cli("snapshot", "save", str(tmp_path / "b.snap"), "--servers", c.servers(),
                                 "--json")
        assert rc == 0, err
        saved = json.loads(out)
        await load.finish()
        await kv.close()
        await c.kill_all()
        from warpmesh.kv.backup import read_backup
        from warpmesh.kv.state import KVStateMachine

        index, data = read_backup(tmp_path / "b.snap")
        assert index == saved["index"]
        snap = KVStateMachine()
        snap.restore(data)
        for k, (v, rev) in acked.items():
            assert snap.data[k] == (v, rev)  # every write acknowledged before the save is in it
        # A corrupt copy is refused.
        (tmp_path / "cut.snap").write_bytes((tmp_path / "b.snap").read_bytes()[:-7])
        rc, _out, err = await cli("snapshot", "restore", str(tmp_path / "cut.snap"), "--data",
                                  str(tmp_path / "z"), "--id", "a1", "--peers", "a1=127.0.0.1:1")
        assert rc == 1 and "corrupt" in err and len(err.strip().splitlines()) == 1, err
        new = Cluster(tmp_path / "new", ["a1", "a2", "a3"])
        for nid in new.boot:
            rc, out, err = await cli("snapshot", "restore", str(tmp_path / "b.snap"), "--data",
                                     str(new.tmp / nid), "--id", nid, "--peers", new.peers, "--json")
            assert rc == 0, err
        await asyncio.gather(*(new.start(i) for i in new.boot))
        kv2 = await KVClient(new.servers().split(","), timeout=20, seed=5).connect()
        for k, (v, rev) in snap.data.items():
            assert await kv2.get_with_revision(k) == (v, rev)
        assert await kv2.put("after", "restore") > index  # revisions keep growing
        await kv2.close()
        await new.kill_all()

    asyncio.run(main())


def test_kv_up_keeps_serving_when_a_node_dies(tmp_path: Path) -> None:
    import subprocess

    base = free_port_block(3)
    up = subprocess.Popen([sys.executable, "-m", "warpmesh.cli.app", "kv", "up", "--nodes", "3", "--base-port",
                           str(base), "--data", str(tmp_path / "d"), "--restart-after", "1"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=ENV, start_new_session=True)  # its own group: nothing outlives the test
    try:
        assert up.stdout is not None and up.stderr is not None and up.stdin is not None
        while "Ctrl-C stops" not in (line := up.stdout.readline()):
            assert line, up.stderr.read()

        def child(nid: str) -> int:
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    with contextlib.suppress(OSError):
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                        if b"serve" in cmd and nid.encode() in cmd and str(base).encode() in b"".join(cmd):
                            return int(pid)
            raise AssertionError(f"no process for {nid}")

        servers = ",".join(f"127.0.0.1:{base + i}" for i in range(3))
        os.kill(child("n2"), signal.SIGKILL)
        line = up.stderr.readline()
        assert "node n2 exited" in line and "keeps serving with n1, n3" in line, line

        async def use() -> None:
            async with KVClient(servers.split(","), timeout=10) as kv:
                rev = await kv.put("k", "v")
                assert await kv.get_with_revision("k") == (b"v", rev)

        asyncio.run(use())
        assert "restarted n2" in up.stderr.readline()
        assert up.poll() is None
        # `restart ID` on stdin (the pause is 1 s; the command is immediate).
        os.kill(child("n3"), signal.SIGKILL)
        assert "node n3 exited" in up.stderr.readline()
        t0 = time.monotonic()
        up.stdin.write("restart n3\n")
        up.stdin.flush()
        assert "restarted n3" in up.stderr.readline()
        assert time.monotonic() - t0 < 1.0
        assert (tmp_path / "d" / "n1" / "raft.sqlite").exists()
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(20)
        except subprocess.TimeoutExpired:
            up.kill()
        # `kv up` stops its nodes on Ctrl-C; should it not have managed (a loaded machine, the wait
        # above expired), its nodes must not outlive the test: they share its process group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up.pid, signal.SIGKILL)


def test_kv_serve_http_shows_raft_state_commit_latency_and_members(tmp_path: Path) -> None:
    """``kv serve --http``: the dashboard's Raft view and /metrics (parsed by prometheus_client's own
    parser) on every node; a killed member shows as suspected on the leader's page."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async def scrape(http: aiohttp.ClientSession, url: str) -> tuple[dict[Any, float], dict[str, Any]]:
        async with http.get(url + "metrics") as r:
            text = await r.text()
        async with http.get(url + "api/summary") as r:
            summary = await r.json()
        return ({(s.name, tuple(sorted(s.labels.items()))): s.value
                 for fam in text_string_to_metric_families(text) for s in fam.samples}, summary)

    async def main() -> None:
        c = Cluster(tmp_path, ["n1", "n2", "n3"])
        await asyncio.gather(*(c.start(i, "--peers", c.peers, "--http", "127.0.0.1:0") for i in c.boot))
        urls = {i: c.ready[i]["http"] for i in c.boot}
        kv = await KVClient(c.servers().split(","), timeout=20, attempt_timeout=0.7, seed=4).connect()
        try:
            for i in range(30):
                await kv.put(f"k{i}", b"v")
            leader = (await kv.member_list())["leader"]
            await asyncio.sleep(1.2)  # commit progress reaches the board at most every second
            async with aiohttp.ClientSession() as http:
                views = {i: await scrape(http, urls[i]) for i in c.boot}
                lat = sum(m[("warpmesh_raft_commit_latency_seconds_count", (("node", i),))]
                          for i, (m, _s) in views.items())
                assert lat >= 30, lat  # every acknowledged put, on the node that proposed it
                for i, (m, s) in views.items():
                    assert m[("warpmesh_raft_term", (("node", i),))] >= 1
                    assert s["raft"][i]["leader"] == leader and s["title"] == f"warpmesh kv - {i}"
                    assert {p["peer"]: (p["role"], p["state"]) for p in s["peers"]} == {
                        n: ("voter", "live") for n in c.boot}
                lm, _ls = views[leader]
                assert lm[("warpmesh_raft_commit_index", (("node", leader),))] >= 30
                victim = next(i for i in c.boot if i != leader)
                await c.kill(victim)
                loop = asyncio.get_running_loop()
                end = loop.time() + 15
                while True:
                    _m, s = await scrape(http, urls[leader])
                    state = {p["peer"]: p["state"] for p in s["peers"]}
                    if state[victim] == "suspected":
                        break
                    assert loop.time() < end, state
                    await asyncio.sleep(0.2)
                assert state[leader] == "live"
        finally:
            await kv.close()
            await c.kill_all()

    asyncio.run(main())
