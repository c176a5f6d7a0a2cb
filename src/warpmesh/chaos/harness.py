"""The chaos harness: real processes in real network namespaces under a seeded schedule of nemeses.

Two variants, each on a fresh :class:`~warpmesh.chaos.netns.Lab` of 5 peers:

``warp``
    5 ``warpmesh node --data DIR`` peers. The driver submits batches of jobs through random peers
    (``enqueue_many`` with ``wait``: acknowledged once a majority holds them on disk) while the
    nemeses strike. At the end everything heals, dead peers restart, and the check is: zero lost
    (every acknowledged job answered on every peer), zero wrong, duplicates reported, every peer's
    results board equal and every queue empty.
``kv``
    5 ``warpmesh kv serve`` nodes (Raft). Three clients in the driver's namespace run get/put/cas on a
    few keys through the bridge; every operation is recorded (a timed-out write is "unknown") and the
    history is checked by :func:`warpmesh.kv.linearizability.check`.

Nemeses (one at a time, each for ``hold`` seconds, then healed): ``partition`` (two-way, a minority
from the rest, nftables), ``one-way`` (one side stops hearing the other), ``isolate`` (one peer's
link down), ``flap`` (one peer's link down and up every 0.3 s), ``loss`` (5 % of every peer's
incoming packets dropped, ``numgen random``), ``kill-one``, ``kill-majority`` and ``power-cut``
(SIGKILL one, three or all peers at once, then restart them on their directories). The schedule
follows from the seed. The run has its own time limit, and the lab is always removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from warpmesh.chaos.netns import Lab, cleanup_stale
from warpmesh.cli.procs import NodeProcess, NodeProcessError

NEMESES = ("partition", "one-way", "isolate", "flap", "loss", "kill-one", "kill-majority", "power-cut")
OPS = "warpmesh.warp.demo_ops"
PEERS = 5


def schedule(seed: int, duration: float, *, hold: float = 3.0, gap: float = 1.5,
             nemeses: tuple[str, ...] = NEMESES) -> list[tuple[float, str, list[int]]]:
    """The seeded plan: ``(start, nemesis, peers)`` - every nemesis at least once when time allows."""
    rng = random.Random(seed)
    order = list(nemeses)
    rng.shuffle(order)
    plan: list[tuple[float, str, list[int]]] = []
    t = 2.0
    while t + hold <= duration:
        name = order[len(plan)] if len(plan) < len(order) else rng.choice(nemeses)
        peers = list(range(PEERS))
        rng.shuffle(peers)
        plan.append((t, name, peers))
        t += hold + gap
    return plan


class _Nemesis:
    """Applies and heals one nemesis on the lab; kills go through ``kill``/``restart`` callbacks."""

    def __init__(self, lab: Lab, kill: Callable[[int], None], restart: Callable[[list[int]], Awaitable[None]]) -> None:
        self.lab = lab
        self.kill = kill
        self.restart = restart
        self._flap: asyncio.Task[None] | None = None
        self._killed: list[int] = []

    async def apply(self, name: str, peers: list[int]) -> None:
        lab = self.lab
        minority, rest = peers[:2], peers[2:]
        if name == "partition":
            lab.partition(minority, rest)
        elif name == "one-way":
            lab.partition(rest, minority, one_way=True)  # the majority stops hearing the minority
        elif name == "isolate":
            lab.link(peers[0], False)
        elif name == "flap":
            async def flap(i: int) -> None:
                up = False
                while True:
                    lab.link(i, up)
                    up = not up
                    await asyncio.sleep(0.3)

            self._flap = asyncio.create_task(flap(peers[0]))
        elif name == "loss":
            lab.loss(5)
        elif name in ("kill-one", "kill-majority", "power-cut"):
            n = {"kill-one": 1, "kill-majority": PEERS // 2 + 1, "power-cut": PEERS}[name]
            self._killed = sorted(peers[:n])
            for i in self._killed:
                self.kill(i)  # at once: no goodbye, no flush
        else:
            raise ValueError(f"unknown nemesis {name!r}")

    async def heal(self) -> None:
        if self._flap is not None:
            self._flap.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flap
            self._flap = None
        self.lab.heal()
        if self._killed:
            killed, self._killed = self._killed, []
            await self.restart(killed)


async def _run_schedule(plan: list[tuple[float, str, list[int]]], nemesis: _Nemesis, hold: float,
                        log: list[dict[str, Any]], started: float) -> None:
    loop = asyncio.get_running_loop()
    for at, name, peers in plan:
        await asyncio.sleep(max(0.0, started + at - loop.time()))
        log.append({"at": round(loop.time() - started, 2), "nemesis": name, "peers": peers})
        await nemesis.apply(name, peers)
        await asyncio.sleep(hold)
        await nemesis.heal()


# -- Warp ----------------------------------------------------------------------------------------------
async def _warp(lab: Lab, seed: int, duration: float, root: Path, env: dict[str, str], hold: float,
                nemeses: tuple[str, ...], report: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    procs: dict[int, NodeProcess] = {}
    down: set[int] = set()
    port = 7000

    def spawn(i: int) -> NodeProcess:
        seeds = [f"{lab.ip(j)}:{port}" for j in range(PEERS) if j != i]
        args = [*lab.exec_prefix(i), *NodeProcess.command(f"n{i}", f"{lab.ip(i)}:{port}", seeds, "--ops", OPS,
                                                          "--data", str(root / f"n{i}"), "--join-timeout", "60")]
        return NodeProcess(f"n{i}", args, env=env)

    async def start(ids: list[int]) -> None:
        fresh = {i: spawn(i) for i in ids}
        await asyncio.gather(*(p.start(timeout=90) for p in fresh.values()))
        procs.update(fresh)
        down.difference_update(ids)

    def kill(i: int) -> None:
        down.add(i)
        procs[i].kill()

    async def restart(ids: list[int]) -> None:
        await asyncio.gather(*(procs[i].stop(timeout=5) for i in ids), return_exceptions=True)
        await start(ids)

    try:
        await start(list(range(PEERS)))
        acked: dict[str, int] = {}
        submitted = 0
        stop = asyncio.Event()

        async def submit() -> None:
            nonlocal submitted
            while not stop.is_set():
                live = [i for i in range(PEERS) if i not in down]
                if not live:
                    await asyncio.sleep(0.1)
                    continue
                i = rng.choice(live)
                batch = {f"job-{submitted + k}": submitted + k + 1 for k in range(20)}
                submitted += len(batch)
                items = [{"task": t, "op": "demo.collatz", "args": a} for t, a in batch.items()]
                with contextlib.suppress(NodeProcessError):
                    answer = await procs[i].call({"cmd": "enqueue_many", "items": items, "wait": True, "timeout": 4},
                                                 timeout=10)
                    if answer.get("acknowledged"):
                        acked.update(batch)
                await asyncio.sleep(0.1)

        plan = schedule(seed, duration, hold=hold, nemeses=nemeses)
        events: list[dict[str, Any]] = []
        started = loop.time()
        submitter = asyncio.create_task(submit())
        await _run_schedule(plan, _Nemesis(lab, kill, restart), hold, events, started)
        await asyncio.sleep(max(0.0, started + duration - loop.time()))
        stop.set()
        await submitter
        lab.heal()
        if down:
            await restart(sorted(down))
        # Every acknowledged job answered on every peer, the boards converged, the queues empty.
        from warpmesh.warp.demo_ops import collatz_steps

        deadline = loop.time() + 120
        results: dict[int, dict[str, Any]] = {}
        depth: dict[int, int] = {}
        while True:
            for i in range(PEERS):
                results[i] = (await procs[i].call({"cmd": "results"}, timeout=60))["results"]
                depth[i] = (await procs[i].status(timeout=60))["warp"]["queue_depth"]
            views = {json.dumps({t: [r["value"], r["ok"]] for t, r in res.items()}, sort_keys=True)
                     for res in results.values()}
            done = all(t in res for res in results.values() for t in acked)
            if (done and len(views) == 1 and not any(depth.values())) or loop.time() > deadline:
                break
            await asyncio.sleep(1.0)
        ref = results[0]
        status = await procs[0].status(timeout=60)
        lost = [t for t in acked if any(t not in res for res in results.values())]
        wrong = [t for t, r in ref.items() if not r["ok"] or r["value"] != collatz_steps(int(t.split("-")[1]) + 1)]
        report.update(
            submitted=submitted, acknowledged=len(acked), completed=len(ref), lost=len(lost), wrong=len(wrong),
            duplicates=status["warp"]["counters"]["duplicates"], executions=status["warp"]["counters"]["executions"],
            converged=len(views) == 1 and not any(depth.values()), queue_depths=depth, nemeses=events,
            ok=not lost and not wrong and len(views) == 1 and not any(depth.values()))
        if lost:
            report["lost_examples"] = sorted(lost)[:5]
    finally:
        await asyncio.gather(*(p.stop(timeout=5) for p in procs.values()), return_exceptions=True)


# -- KV (Raft) -----------------------------------------------------------------------------------------
class _KVProc:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 60.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(*self.args, stdout=asyncio.subprocess.PIPE,
                                                         stderr=asyncio.subprocess.DEVNULL, env=self.env)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise NodeProcessError(f"kv node exited with {await self.proc.wait()}: {' '.join(self.args[-8:])}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _kv(lab: Lab, seed: int, duration: float, root: Path, env: dict[str, str], hold: float,
              nemeses: tuple[str, ...], report: dict[str, Any]) -> None:
    from warpmesh.kv.client import KVClient
    from warpmesh.kv.linearizability import History, check

    loop = asyncio.get_running_loop()
    port = 7100
    members = ",".join(f"k{i}={lab.ip(i)}:{port}" for i in range(PEERS))
    procs: dict[int, _KVProc] = {}

    def spawn(i: int) -> _KVProc:
        return _KVProc([*lab.exec_prefix(i), sys.executable, "-m", "warpmesh.cli.app", "kv", "serve", "--id", f"k{i}",
                        "--listen", f"{lab.ip(i)}:{port}", "--peers", members, "--data", str(root / f"k{i}"),
                        "--election-timeout", "0.3"], env)

    async def start(ids: list[int]) -> None:
        fresh = {i: spawn(i) for i in ids}
        await asyncio.gather(*(p.start() for p in fresh.values()))
        procs.update(fresh)

    def kill(i: int) -> None:
        procs[i].kill()

    async def restart(ids: list[int]) -> None:
        await asyncio.gather(*(procs[i].stop() for i in ids), return_exceptions=True)
        await start(ids)

    history = History()
    stop = asyncio.Event()
    keys = ["x", "y", "z"]
    counts = {"ok": 0, "unknown": 0, "failed_reads": 0}
    addresses = [f"{lab.ip(i)}:{port}" for i in range(PEERS)]
    secret = env["WARPMESH_SECRET"].encode()

    async def client(c: int) -> None:
        rng = random.Random(seed * 31 + c)
        async with KVClient(addresses, secret=secret, timeout=4.0, attempt_timeout=0.5, client_id=f"chaos-{seed}-{c}",
                            listen=(lab.client_ip, 0), seed=seed * 31 + c) as kv:
            n = 0
            while not stop.is_set():
                key = rng.choice(keys)
                kind = rng.choice(["get", "put", "put", "cas"])
                n += 1
                value = f"c{c}-{n}"
                if kind == "get":
                    op = history.invoke(f"c{c}", "get", key, at=loop.time())
                elif kind == "put":
                    op = history.invoke(f"c{c}", "put", key, value, at=loop.time())
                else:
                    expected = f"c{c}-{n - 1}" if rng.random() < 0.5 else None
                    op = history.invoke(f"c{c}", "cas", key, expected, value, at=loop.time())
                try:
                    if kind == "get":
                        got = await kv.get(key)
                        out: Any = None if got is None else got.decode()
                    elif kind == "put":
                        await kv.put(key, value)
                        out = None
                    else:
                        out = await kv.cas(key, op.args[0], value)
                        out = bool(out[0]) if isinstance(out, tuple) else bool(out)
                    history.ok(op, out, at=loop.time())
                    counts["ok"] += 1
                except Exception:  # a timeout: the outcome is unknown
                    History.unknown(op)
                    counts["unknown"] += 1
                await asyncio.sleep(rng.uniform(0, 0.05))

    try:
        await start(list(range(PEERS)))
        plan = schedule(seed, duration, hold=hold, nemeses=nemeses)
        events: list[dict[str, Any]] = []
        started = loop.time()
        clients = [asyncio.create_task(client(c)) for c in range(3)]
        await _run_schedule(plan, _Nemesis(lab, kill, restart), hold, events, started)
        await asyncio.sleep(max(0.0, started + duration - loop.time()))
        lab.heal()
        await asyncio.sleep(2.0)  # the healed cluster serves again: later operations succeed
        stop.set()
        outcomes = await asyncio.gather(*clients, return_exceptions=True)
        errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
        result = check(history)
        report.update(ops=len(history.ops), ok_ops=counts["ok"], unknown=counts["unknown"],
                      linearizable=result.ok, checker_steps=result.steps, nemeses=events, client_errors=errors,
                      ok=result.ok and not errors and counts["ok"] > 0)
        if not result.ok:
            report["detail"] = result.detail
    finally:
        await asyncio.gather(*(p.stop() for p in procs.values()), return_exceptions=True)


def run_chaos(seed: int = 0, *, variant: str = "warp", duration: float = 30.0, hold: float = 3.0,
              time_limit: float = 600.0, data: Path | None = None,
              nemeses: tuple[str, ...] = NEMESES) -> dict[str, Any]:
    """One chaos run (see the module docstring); returns its JSON-able report (``ok`` says if it held)."""
    if variant not in ("warp", "kv"):
        raise ValueError("variant must be 'warp' or 'kv'")
    unknown = set(nemeses) - set(NEMESES)
    if unknown or not nemeses:
        raise ValueError(f"nemeses must be among {', '.join(NEMESES)}")
    cleanup_stale()
    report: dict[str, Any] = {"variant": variant, "seed": seed, "duration": duration, "ok": False}
    env = dict(os.environ)
    env.setdefault("WARPMESH_SECRET", secrets.token_hex(16))  # non-loopback addresses need a secret
    env["PYTHONUNBUFFERED"] = "1"
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        root = data if data is not None else Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="warpmesh-chaos-")))
        lab = stack.enter_context(Lab(PEERS, seq=seed % 1000))
        body = _warp if variant == "warp" else _kv
        try:
            asyncio.run(asyncio.wait_for(body(lab, seed, duration, root, env, hold, nemeses, report), time_limit))
        except TimeoutError:
            report["error"] = f"time limit of {time_limit:.0f} s reached"
            report["ok"] = False
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report
