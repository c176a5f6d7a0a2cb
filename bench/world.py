"""Replicated-world benchmark: a 3-peer world (3 processes, loopback TCP, Raft on SQLite) against the
same engine and rules run alone in one process, in the same run.

Prints JSON lines (medians over ``--runs`` interleaved runs):

* ``world.ticks_per_s`` (lockstep: tick N+1 only after every peer's hash for tick N is in the log, so a
  divergence is decided before the next tick) and ``world.ticks_per_s_pipelined`` (ticks proposed up to
  4 ahead of the agreement) - the peer figure is the engine alone running the same ticks;
* ``world.intents_per_s`` - intents committed per second (every peer submits ``--intents`` pushes per
  tick), same peer;
* ``world.agreement_bytes_per_tick`` - bytes on the wire per tick for hash agreement, measured on the
  simulator's fabric (the production runtime, 3 peers, lossless): every REPORTS/RESTORED entry inside a
  Raft AppendEntries or Forward frame, counted each time it is sent. The peer figure is Photon Quantum's
  development checksum (an 8-byte checksum per peer every 60 frames, i.e. per frame amortised), for
  scale.

Run: ``.venv/bin/python bench/world.py [--quick] [--runs N] [--ticks N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from warpmesh.world.codec import encode_intents, encode_reports
from warpmesh.world.rules import build_world_engine, push, run_tick, spawn


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _replicated(ticks: int, intents: int, entities: int, pipelined: bool) -> tuple[float, float, int]:
    """(ticks/s, intents/s, ticks measured) of 3 peer processes, from tick 5 to the last."""
    ids = ["p1", "p2", "p3"]
    addrs = {p: _port() for p in ids}
    peers = ",".join(f"{p}=127.0.0.1:{a}" for p, a in addrs.items())
    with tempfile.TemporaryDirectory(prefix="warpmesh-bench-world-") as tmp:
        procs = []
        for p in ids:
            args = [sys.executable, "-m", "warpmesh.cli.app", "world", "peer", "--id", p,
                    "--listen", f"127.0.0.1:{addrs[p]}", "--peers", peers, "--members", ",".join(ids),
                    "--data", str(Path(tmp) / p), "--ticks", str(ticks), "--intents", str(intents),
                    "--entities", str(entities), "--snapshot-every", "64", "--trailing", "1024"]
            if pipelined:
                args.append("--pipelined")
            procs.append(await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1")))
        done: dict[int, tuple[float, int]] = {}
        seen: dict[int, set[int]] = {}
        try:
            async def read(i: int) -> None:
                out = procs[i].stdout
                assert out is not None
                while True:
                    line = await out.readline()
                    if not line:
                        return
                    msg = json.loads(line)
                    if "commit" in msg and "event" not in msg:
                        t = msg["tick"]
                        seen.setdefault(t, set()).add(i)
                        if len(seen[t]) == 3 and t not in done:
                            done[t] = (time.perf_counter(), msg["intents"])
                        if t >= ticks:
                            return

            await asyncio.wait_for(asyncio.gather(*(read(i) for i in range(3))), 300)
        finally:
            for p in procs:
                if p.returncode is None:
                    p.terminate()
            for p in procs:
                await p.wait()
    first = 5
    span = done[ticks][0] - done[first][0]
    n_intents = sum(done[t][1] for t in range(first + 1, ticks + 1))
    return (ticks - first) / span, n_intents / span, ticks - first


def _alone(ticks: int, intents: int, entities: int) -> tuple[float, float]:
    """The same engine and rules in one process: the same ticks with as many intents per tick."""
    import random

    rng = random.Random(1)
    engine = build_world_engine()
    run_tick(engine, 1, [spawn(f"e{i}", (i, 0, 0), (0, 1, 0)) for i in range(entities)])
    batches = [[push(f"e{rng.randrange(entities)}", (1, 0, 0)) for _ in range(3 * intents)] for _ in range(ticks)]
    t0 = time.perf_counter()
    for t, batch in enumerate(batches, 2):
        run_tick(engine, t, batch)
    dt = time.perf_counter() - t0
    return ticks / dt, ticks * 3 * intents / dt


def _agreement_bytes() -> int:
    """Per tick: 3 REPORTS entries (one tick each), each to the leader (2 of 3 are proposed on a
    follower) and then to 2 followers; + per-entry framing in AppendEntries (index, term, kind, key)."""
    engine = build_world_engine()
    snap = run_tick(engine, 1, [encode_intents("p1", [])])
    entry = encode_reports("p2", [(123456, snap.hash, snap.state_root, snap.patch_digest)])
    framing = 40  # msgpack of [index, term, kind, data, dedup key (client id, seq, floor)], measured ~35-45 B
    per_entry = len(entry) + framing
    return 3 * per_entry * 2 + 2 * per_entry  # replication to 2 followers, + 2 forwards to the leader


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--intents", type=int, default=4, help="Pushes per peer per tick.")
    ap.add_argument("--entities", type=int, default=64)
    a = ap.parse_args()
    runs, ticks = (1, 30) if a.quick else (a.runs, a.ticks)
    lock: list[tuple[float, float]] = []
    pipe: list[tuple[float, float]] = []
    alone: list[tuple[float, float]] = []
    for _ in range(runs):
        tps, ips, _n = asyncio.run(_replicated(ticks, a.intents, a.entities, False))
        lock.append((tps, ips))
        tps, ips, _n = asyncio.run(_replicated(ticks, a.intents, a.entities, True))
        pipe.append((tps, ips))
        alone.append(_alone(ticks, a.intents, a.entities))

    def med(xs: list[tuple[float, float]], i: int) -> float:
        return statistics.median(x[i] for x in xs)

    def line(name: str, ours: float, peer: float, peer_name: str, unit: str, **extra: Any) -> None:
        print(json.dumps({"bench": name, "ours": round(ours, 2), "peer": round(peer, 2), "peer_name": peer_name,
                          "ratio": round(ours / peer, 4) if peer else None, "unit": unit, "runs": runs,
                          **extra}, sort_keys=True), flush=True)

    common = {"peers": 3, "intents_per_peer_per_tick": a.intents, "entities": a.entities, "ticks": ticks}
    line("world.ticks_per_s", med(lock, 0), med(alone, 0), "same engine alone, one process", "ticks/s",
         mode="lockstep", **common)
    line("world.ticks_per_s_pipelined", med(pipe, 0), med(alone, 0), "same engine alone, one process",
         "ticks/s", mode="pipelined(window 4)", **common)
    line("world.intents_per_s", med(lock, 1), med(alone, 1), "same engine alone, one process", "intents/s",
         mode="lockstep", pipelined=round(med(pipe, 1), 1), **common)
    from warpmesh.sim.world import run_world

    sim = run_world(1, ticks=60, crashes=False, diverge=False, lossy=False, measure=True)
    per_tick = sim.metrics["agreement_bytes"] / sim.metrics["ticks"]
    line("world.agreement_bytes_per_tick", per_tick, 3 * 8 / 60, "Photon Quantum dev checksum (8 B/peer/60 frames)",
         "bytes/tick", method="measured: report entries in Raft AppendEntries/Forward frames on the simulator's "
         "wire (3 peers, lossless)", all_world_bytes_per_tick=round(sim.metrics["wire_bytes"] / sim.metrics["ticks"]),
         computed_estimate=_agreement_bytes())


if __name__ == "__main__":
    main()
