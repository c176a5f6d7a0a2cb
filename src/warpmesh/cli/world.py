"""``warpmesh world``: replicated worlds across real processes.

``world demo`` starts peer processes (``world peer``, hidden) on loopback TCP, each running the same
world engine over Raft, and prints per committed tick whether every live peer computed the same commit
hash; ``--kill-one`` SIGKILLs and restarts a peer mid-run, ``--diverge-one`` makes one peer corrupt a
tick locally (detected in that tick and repaired), ``--add-peer`` starts a fourth peer mid-run that joins
as a learner from a snapshot.
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
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from warpmesh.cli.common import parse_addr, setup_logging, stdin_lines

__all__ = ["world"]


@click.group()
def world() -> None:
    """Replicated worlds: one engine per peer, intents and ticks ordered by Raft, hashes compared."""


# ---------------------------------------------------------------------------------------------- peer
def _parse_peers(text: str) -> dict[str, tuple[str, int]]:
    peers: dict[str, tuple[str, int]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        nid, eq, addr = part.partition("=")
        if not eq or not nid:
            raise click.BadParameter(f"{part!r} must be ID=HOST:PORT", param_hint="--peers")
        peers[nid] = parse_addr(addr, "--peers address")
    return peers


def _out(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def _on_event(peer_id: str, ev: dict[str, Any]) -> None:
    _out({**ev, "by": peer_id})
    if ev["event"] == "installed" and ev.get("commit"):
        # The installed snapshot's tick is a committed tick of this peer too (it may be the last one).
        _out({"peer": peer_id, "tick": ev["tick"], "commit": ev["commit"], "intents": 0})


@world.command("peer", hidden=True)
@click.option("--id", "peer_id", required=True)
@click.option("--listen", required=True, metavar="HOST:PORT")
@click.option("--peers", required=True, metavar="ID=HOST:PORT,...", help="Every peer to connect to.")
@click.option("--members", required=True, help="Comma-separated voting members (the majority's base).")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--ticks", type=click.IntRange(min=1), default=100)
@click.option("--workers", type=click.IntRange(1, 256), default=1)
@click.option("--corrupt-at", type=click.IntRange(min=1), default=None)
@click.option("--learner", is_flag=True, help="Join a running world as a learner (added by the leader).")
@click.option("--interval", type=click.FloatRange(0, 10), default=0.0)
@click.option("--intents", type=click.IntRange(0, 1000), default=4, help="Pushes each peer submits per tick.")
@click.option("--snapshot-every", type=click.IntRange(min=0), default=16)
@click.option("--trailing", type=click.IntRange(min=0), default=32,
              help="Raft entries kept below a snapshot (small: late joiners install the snapshot).")
@click.option("--pipelined", is_flag=True, help="Propose ticks without waiting for the hash reports.")
@click.option("--entities", type=click.IntRange(1, 100_000), default=16)
@click.option("--log-level", default="warning")
def peer(peer_id: str, listen: str, peers: str, members: str, data_dir: Path, ticks: int, workers: int,
         corrupt_at: int | None, learner: bool, interval: float, intents: int, snapshot_every: int,
         trailing: int, pipelined: bool, entities: int, log_level: str) -> None:
    """One world peer (used by ``world demo``). JSON lines on stdout; commands on stdin."""
    setup_logging(log_level)
    addr = parse_addr(listen, "--listen")
    others = _parse_peers(peers)
    voters = sorted(filter(None, members.split(",")))

    async def main() -> None:
        from warpmesh.net.mux import MuxSeam
        from warpmesh.net.tcp import TcpMesh, boot_incarnation
        from warpmesh.raft.config import RaftConfig
        from warpmesh.raft.runtime import RaftNode
        from warpmesh.raft.storage import SqliteRaftStorage
        from warpmesh.raft.transport import SeamRaftTransport
        from warpmesh.raft.types import Role
        from warpmesh.world.rules import push, spawn
        from warpmesh.world.runtime import WORLD_FETCH_CHANNEL, WORLD_RAFT_CHANNEL, World

        data_dir.mkdir(parents=True, exist_ok=True)
        store = SqliteRaftStorage(data_dir / "raft.sqlite", node_id=peer_id)
        mesh = TcpMesh(peer_id, listen=addr, join=[a for p, a in sorted(others.items()) if p != peer_id],
                       incarnation=boot_incarnation())
        await mesh.start()
        mux = MuxSeam(mesh)
        node = RaftNode(peer_id, SeamRaftTransport(mux.channel(WORLD_RAFT_CHANNEL)), store,
                        voters=() if learner else voters, config=RaftConfig(trailing_entries=trailing))
        await node.start()
        w = World(node, mux.channel(WORLD_FETCH_CHANNEL), voters, workers=workers,
                  snapshot_every=snapshot_every, corrupt_at=[corrupt_at] if corrupt_at else [],
                  on_tick=lambda t, s: _out({"peer": peer_id, "tick": t, "commit": s.hash.hex(),
                                             "intents": w.replica.last_intents}),
                  on_event=lambda ev: _on_event(peer_id, ev))
        await w.start()
        assert mesh.address is not None  # started above
        _out({"event": "ready", "id": peer_id, "address": f"{mesh.address[0]}:{mesh.address[1]}",
              "resumed_tick": w.tick.value})
        rng = random.Random(hash(peer_id) & 0xFFFF)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def workload() -> None:
            if peer_id == voters[0] and w.tick.value == 0:
                with contextlib.suppress(Exception):
                    await w.submit([spawn(f"e{i}", (i, 0, 0), (0, 1, 0)) for i in range(entities)])
            seen = w.tick.value
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await w.tick.wait_for(lambda v, s=seen: v > s, 1.0)  # type: ignore[misc]
                seen = w.tick.value
                if intents and seen < ticks:
                    batch = [push(f"e{rng.randrange(entities)}", (rng.randrange(-1, 2), rng.randrange(-1, 2), 0))
                             for _ in range(intents)]
                    with contextlib.suppress(Exception):
                        await w.submit(batch, timeout=2.0)

        async def commands() -> None:
            async for line in stdin_lines():
                with contextlib.suppress(ValueError, KeyError):
                    cmd = json.loads(line)
                    if cmd.get("cmd") == "add_learner" and node.role.value == Role.LEADER:
                        m = node.membership.value
                        with contextlib.suppress(Exception):
                            await node.change_membership(m.voters, set(m.learners) | {cmd["peer"]}, timeout=10)
                            _out({"event": "learner_added", "peer": cmd["peer"], "by": peer_id})
            stop.set()  # stdin closed

        tasks = [loop.create_task(w.run_ticker(ticks, interval=interval, lockstep=not pipelined)), loop.create_task(workload()),
                 loop.create_task(commands())]
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await w.close()
            await node.close()
            with contextlib.suppress(Exception):
                await mesh.close()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------- demo
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Proc:
    def __init__(self, pid: str, args: list[str]) -> None:
        self.id = pid
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.alive = False
        self.reader: asyncio.Task[None] | None = None

    async def start(self, lines: asyncio.Queue[dict[str, Any]]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = await asyncio.create_subprocess_exec(
            *self.args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=env, limit=16 * 1024 * 1024)
        self.alive = True
        self.reader = asyncio.get_running_loop().create_task(self._read(lines))

    async def _read(self, lines: asyncio.Queue[dict[str, Any]]) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await lines.put({"event": "_exited", "peer": self.id, "proc": id(self.proc)})
                return
            with contextlib.suppress(ValueError):
                await lines.put(json.loads(line))

    def send(self, obj: dict[str, Any]) -> None:
        if self.proc is not None and self.proc.stdin is not None and self.alive:
            with contextlib.suppress(Exception):
                self.proc.stdin.write((json.dumps(obj) + "\n").encode())

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        self.alive = False

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.alive = False


@world.command("demo")
@click.option("--peers", "n", type=click.IntRange(2, 9), default=3, show_default=True, help="Peer processes.")
@click.option("--ticks", type=click.IntRange(min=5), default=60, show_default=True, help="Ticks to run.")
@click.option("--kill-one", is_flag=True, help="SIGKILL one peer mid-run and restart it (it catches up).")
@click.option("--diverge-one", is_flag=True, help="One peer corrupts one tick locally (fault injection).")
@click.option("--add-peer", is_flag=True, help="Start one more peer mid-run; it joins from a snapshot.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Engine workers of odd-numbered peers (even ones use 1: results must not differ).")
@click.option("--interval", type=click.FloatRange(0, 5), default=0.02, show_default=True,
              help="Pause between ticks, seconds.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per tick and event, then a summary.")
@click.option("--timeout", type=click.FloatRange(5, 3600), default=120, show_default=True)
def demo(n: int, ticks: int, kill_one: bool, diverge_one: bool, add_peer: bool, workers: int, interval: float,
         as_json: bool, timeout: float) -> None:
    """Run a replicated world across local peer processes and compare their commit hashes per tick."""
    if n < 3 and (kill_one or diverge_one):
        raise click.BadParameter("--kill-one and --diverge-one need at least 3 peers (a majority must remain)",
                                 param_hint="--peers")
    try:
        summary = asyncio.run(_demo(n, ticks, kill_one, diverge_one, add_peer, workers, interval, as_json, timeout))
    except TimeoutError:
        raise click.ClickException(f"the world did not reach tick {ticks} within {timeout:.0f} s "
                                   "(a loaded machine? try --timeout or fewer --ticks)") from None
    if not summary["all_agree_at_end"] or summary["divergences_detected"] != summary["divergences_injected"] \
            or summary["repaired"] != summary["divergences_injected"]:
        sys.exit(1)


async def _demo(n: int, ticks: int, kill_one: bool, diverge_one: bool, add_peer: bool, workers: int,
                interval: float, as_json: bool, timeout: float) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="warpmesh-world-")
    ids = [f"p{i + 1}" for i in range(n)]
    all_ids = [*ids, f"p{n + 1}"] if add_peer else ids
    addrs = {p: ("127.0.0.1", _free_port()) for p in all_ids}
    peers_arg = ",".join(f"{p}={h}:{port}" for p, (h, port) in addrs.items())
    diverge_peer = ids[1] if diverge_one else None
    diverge_tick = max(3, ticks // 2) if diverge_one else None
    kill_peer = ids[-1] if kill_one else None
    kill_at, restart_at = max(2, ticks // 4), max(3, ticks // 4 + max(3, ticks // 10))
    add_at = max(4, (2 * ticks) // 3)

    def args(p: str, first: bool) -> list[str]:
        a = [sys.executable, "-m", "warpmesh.cli.app", "world", "peer", "--id", p,
             "--listen", f"{addrs[p][0]}:{addrs[p][1]}", "--peers", peers_arg, "--members", ",".join(ids),
             "--data", str(Path(tmp.name) / p), "--ticks", str(ticks), "--interval", str(interval),
             "--workers", str(workers if int(p[1:]) % 2 else 1)]
        if p == diverge_peer and first:
            a += ["--corrupt-at", str(diverge_tick)]
        if p not in ids:
            a.append("--learner")
        return a

    lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    procs = {p: _Proc(p, args(p, True)) for p in ids}
    for p in procs.values():
        await p.start(lines)
    hashes: dict[int, dict[str, str]] = {}
    emitted = 0
    events_seen: set[tuple[str, str, int]] = set()
    pending_div: dict[str, tuple[dict[str, Any], float]] = {}
    killed = restarted = added = False
    waiting_catch: dict[str, int] = {}
    installed: dict[str, int] = {}
    learner_added = False
    add_sent = -1.0
    detected = repaired = 0
    last_agree = False
    live: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    started = time.perf_counter()

    def say(obj: dict[str, Any], text: str) -> None:
        if as_json:
            _out(obj)
        else:
            click.echo(text)

    def emit_ready_ticks(force_upto: int) -> None:
        nonlocal emitted, last_agree
        while True:
            t = emitted + 1
            got = hashes.get(t)
            live = [p for p, pr in procs.items() if pr.alive and p not in waiting_catch]
            if got is None or (not all(p in got for p in live) and t > force_upto):
                return
            hs = {p: h for p, h in sorted(got.items()) if procs[p].alive}
            agree = len(set(hs.values())) == 1
            last_agree = agree
            say({"tick": t, "hashes": hs, "agree": agree},
                f"tick {t:4d}  {'agree ' if agree else 'DIFFER'}  " +
                "  ".join(f"{p}:{h[:12]}" for p, h in hs.items()))
            emitted = t

    def flush_divergence(peer: str, restoring: dict[str, Any] | None) -> None:
        nonlocal detected
        ev, _ = pending_div.pop(peer)
        detected += 1
        out = {"event": "diverged", "peer": peer, "tick": ev["tick"], "parts": ev.get("parts", [])}
        if restoring is not None:
            out["diff"] = restoring.get("diff")
        diff = out.get("diff") or {}
        summary = ", ".join(f"{k} {kind} {len(v)}" for k, part in diff.items() for kind, v in part.items() if v)
        say(out, f"  {peer} DIVERGED at tick {ev['tick']} ({', '.join(out['parts'])} differ; {summary or 'no diff'})")

    try:
        while True:
            if loop.time() > deadline:
                raise TimeoutError
            try:
                msg = await asyncio.wait_for(lines.get(), 0.2)
            except TimeoutError:
                msg = None
            if msg is not None:
                if "commit" in msg and "event" not in msg:
                    t, p = msg["tick"], msg["peer"]
                    hashes.setdefault(t, {})[p] = msg["commit"]
                    since = waiting_catch.get(p)
                    others = {h for q, h in hashes[t].items() if q != p}
                    if since is not None and t > since and others == {msg["commit"]}:
                        del waiting_catch[p]
                        out: dict[str, Any] = {"event": "caught_up", "peer": p, "tick": t}
                        if p in installed:
                            out["from_snapshot"] = installed[p]
                        say(out, f"  {p} caught up at tick {t}" +
                            (f" (installed the snapshot of tick {installed[p]})" if p in installed else ""))
                elif msg.get("event") in ("diverged", "repaired"):
                    key = (msg["event"], msg["peer"], msg["tick"])
                    if key not in events_seen:
                        events_seen.add(key)
                        if msg["event"] == "diverged":
                            pending_div[msg["peer"]] = (msg, loop.time())
                        else:
                            if msg["peer"] in pending_div:
                                flush_divergence(msg["peer"], None)
                            repaired += 1
                            say({"event": "repaired", "peer": msg["peer"], "tick": msg["tick"]},
                                f"  {msg['peer']} repaired: matches the majority again at tick {msg['tick']}")
                elif msg.get("event") == "learner_added":
                    learner_added = True
                elif msg.get("event") == "installed":
                    installed[msg["peer"]] = msg["tick"]
                elif msg.get("event") == "restoring" and msg["peer"] in pending_div:
                    flush_divergence(msg["peer"], msg)
            for div_peer, (_ev, at) in list(pending_div.items()):
                if loop.time() - at > 3:
                    flush_divergence(div_peer, None)
            top = max(hashes, default=0)
            emit_ready_ticks(top - 2)
            if kill_peer and not killed and emitted >= kill_at:
                procs[kill_peer].kill()
                killed = True
                if not as_json:  # the JSON contract names only diverged/repaired/restarted/caught_up
                    click.echo(f"  SIGKILL {kill_peer} at tick {emitted}")
            if kill_peer and killed and not restarted and emitted >= restart_at:
                procs[kill_peer] = _Proc(kill_peer, args(kill_peer, False))
                await procs[kill_peer].start(lines)
                restarted = True
                waiting_catch[kill_peer] = emitted
                say({"event": "restarted", "peer": kill_peer, "tick": emitted}, f"  restarted {kill_peer}")
            if add_peer and not added and emitted >= add_at:
                newp = all_ids[-1]
                procs[newp] = _Proc(newp, args(newp, True))
                await procs[newp].start(lines)
                added = True
                add_sent = -1.0
                waiting_catch[newp] = emitted
                if not as_json:
                    click.echo(f"  {newp} joins as a learner at tick {emitted}")
            if added and not learner_added and loop.time() - add_sent > 1.0:
                # Only the leader acts on it; leadership may move meanwhile, so repeat until done.
                for pr in procs.values():
                    pr.send({"cmd": "add_learner", "peer": all_ids[-1]})
                add_sent = loop.time()
            if emitted >= ticks and not pending_div and (not diverge_one or repaired >= 1) \
                    and (not waiting_catch or loop.time() > deadline - timeout / 2):
                break
        # Every live peer (a restarted one and a joiner included) must report the final tick.
        live = {p for p, pr in procs.items() if pr.alive}
        settle = loop.time() + 15
        while not live <= set(hashes.get(ticks, {})) and loop.time() < settle:
            with contextlib.suppress(TimeoutError):
                msg = await asyncio.wait_for(lines.get(), 0.2)
                if "commit" in msg and "event" not in msg:
                    hashes.setdefault(msg["tick"], {})[msg["peer"]] = msg["commit"]
    finally:
        for pr in procs.values():
            await pr.stop()
        tmp.cleanup()
    final = {p: h for p, h in hashes.get(ticks, {}).items() if p in live}
    summary = {"ticks": emitted, "divergences_injected": 1 if diverge_one else 0,
               "divergences_detected": detected, "repaired": repaired,
               "all_agree_at_end": live <= set(final) and len(set(final.values())) == 1 and last_agree}
    if as_json:
        _out(summary)
    else:
        click.echo(f"{emitted} ticks in {time.perf_counter() - started:.1f} s; injected {summary['divergences_injected']}, "
                   f"detected {detected}, repaired {repaired}; all agree at the end: {summary['all_agree_at_end']}")
    return summary
