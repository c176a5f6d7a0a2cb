"""warpmesh Raft vs PySyncObj: three processes on loopback each, measured side by side in one run.

For each system, three node processes form a cluster on 127.0.0.1; the load is generated *in the
leader's process* (PySyncObj has no client protocol, so this is the only like-for-like setup):
``--outstanding`` concurrent writes are kept in flight for ``--seconds``, each write a 16-byte
command; a write counts when the leader reports it committed (warpmesh: ``RaftNode.propose``
returns; PySyncObj: the ``@replicated`` call's callback fires).

* warpmesh: ``RaftNode`` over ``TcpMesh`` with ``SqliteRaftStorage`` - **durable**: every entry and
  vote is fsynced (WAL, ``synchronous=FULL``, group commit) before it is acknowledged.
* PySyncObj: its defaults (``SyncObjConf()``): in-memory journal, nothing fsynced.

Both systems' node processes get the same GC policy (``tune_gc_for_server``, what ``warpmesh kv
serve`` uses; ``BENCH_NO_GC_TUNING=1`` turns it off for both), so the comparison is of the Raft
implementations, not of garbage-collector settings.

Figures (JSON lines; medians over ``--repeats`` fresh clusters):

* ``throughput``: committed writes/s, and p50/p99 latency of those writes;
* ``latency_single``: one write at a time (p50/p99);
* ``failover``: the leader is SIGKILLed; time until another node reports a committed write
  (the election timeouts are each system's defaults);
* ``kv_e2e`` (warpmesh only): the same load through ``KVClient`` from a separate client process
  (client -> leader -> replicas -> client), as a KV user sees it.

    python bench/raft_vs_pysyncobj.py [--seconds 5] [--outstanding 1000] [--repeats 3]
    python bench/raft_vs_pysyncobj.py --single-only --seconds 3 --repeats 5   # single writes only

The ``single_write`` line carries both systems' single-write p50/p99, their ratio, and
``fsync_floor_p50_ms``: a one-row SQLite commit (WAL, FULL) in the same directory just before each
cluster started, i.e. what the disk alone costs a durable write at that moment.

Needs ``pip install -e '.[bench]'`` (pysyncobj).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PAYLOAD = b"0123456789abcdef"


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


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def emit(event: str, **kw: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "t": time.time(), **kw}) + "\n")
    sys.stdout.flush()


# ==============================================================================================
# Node processes
# ==============================================================================================

def tune_gc() -> None:
    """What ``warpmesh kv serve`` does too: see warpmesh.raft.runtime.tune_gc_for_server."""
    from warpmesh.raft.runtime import tune_gc_for_server

    tune_gc_for_server()


def run_warpmesh_node(nid: str, ports: dict[str, int], data: str) -> None:
    from warpmesh.net.tcp import TcpMesh, boot_incarnation
    from warpmesh.raft.runtime import RaftNode
    from warpmesh.raft.storage import SqliteRaftStorage
    from warpmesh.raft.transport import SeamRaftTransport
    from warpmesh.raft.types import Role

    async def main() -> None:
        mesh = await TcpMesh(nid, listen=("127.0.0.1", ports[nid]),
                             join=[("127.0.0.1", p) for k, p in sorted(ports.items()) if k != nid],
                             incarnation=boot_incarnation()).start()
        node = await RaftNode(nid, SeamRaftTransport.over(mesh),
                              SqliteRaftStorage(Path(data) / f"{nid}.sqlite", node_id=nid),
                              voters=sorted(ports),
                              offload_io=os.environ.get("BENCH_OFFLOAD", "1") == "1").start()
        if os.environ.get("BENCH_NO_GC_TUNING") is None:
            tune_gc()
        emit("ready")
        loop = asyncio.get_running_loop()

        async def compact() -> None:
            # Like any real application (and PySyncObj's default log compaction), publish a
            # snapshot now and then so the in-memory log stays bounded.
            async for item in node.committed_from(1):
                if item.index % 20_000 == 0:
                    node.publish_snapshot(item.index, str(item.index).encode())

        compactor = loop.create_task(compact())

        async def propose() -> float:
            t = time.perf_counter()
            await node.propose(PAYLOAD)
            return time.perf_counter() - t

        async def is_leader() -> bool:
            return node.role.value == Role.LEADER and node.commit_index.value >= 1

        await serve_commands(loop, propose, is_leader)
        compactor.cancel()
        await node.close()
        await mesh.close()

    asyncio.run(main())


def run_pysyncobj_node(nid: str, ports: dict[str, int]) -> None:
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class Counter(SyncObj):  # type: ignore[misc]
        def __init__(self, me: str, partners: list[str]) -> None:
            super().__init__(me, partners, SyncObjConf())
            self.__value = 0

        @replicated  # type: ignore[misc]
        def incr(self, data: bytes) -> int:
            self.__value += 1
            return self.__value

    addrs = {k: f"127.0.0.1:{p}" for k, p in ports.items()}
    obj = Counter(addrs[nid], [a for k, a in sorted(addrs.items()) if k != nid])
    if os.environ.get("BENCH_NO_GC_TUNING") is None:
        tune_gc()  # the same GC policy in both systems' processes: compare Raft, not GC settings
    emit("ready")

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def propose() -> float:
            fut = loop.create_future()
            t = time.perf_counter()

            def cb(result: Any, err: Any) -> None:
                loop.call_soon_threadsafe(_settle, fut, err)

            obj.incr(PAYLOAD, callback=cb)
            await fut
            return time.perf_counter() - t

        async def is_leader() -> bool:
            return obj._isLeader() and obj._isReady()

        await serve_commands(loop, propose, is_leader)

    asyncio.run(main())
    obj.destroy()


def _settle(fut: asyncio.Future[Any], err: Any) -> None:
    if fut.done():
        return
    if err:  # FAIL_REASON.SUCCESS is 0
        fut.set_exception(RuntimeError(f"write failed: {err}"))
    else:
        fut.set_result(None)


async def serve_commands(loop: asyncio.AbstractEventLoop, propose: Any, is_leader: Any) -> None:
    """Stdin JSON commands: status, load, single, watch, quit."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def reader() -> None:
        for line in sys.stdin:
            with contextlib.suppress(ValueError):
                loop.call_soon_threadsafe(queue.put_nowait, json.loads(line))
        loop.call_soon_threadsafe(queue.put_nowait, {"cmd": "quit"})

    threading.Thread(target=reader, daemon=True).start()
    watcher: asyncio.Task[None] | None = None
    while True:
        cmd = await queue.get()
        c = cmd.get("cmd")
        if c == "quit":
            if watcher:
                watcher.cancel()
            return
        if c == "status":
            emit("status", leader=await is_leader())
        elif c == "load":
            emit("load_done", **await load(propose, int(cmd["outstanding"]), float(cmd["seconds"])))
        elif c == "watch":
            watcher = loop.create_task(watch(propose, is_leader))


async def load(propose: Any, outstanding: int, seconds: float) -> dict[str, Any]:
    lat: list[float] = []
    end = time.perf_counter() + seconds
    errors: dict[str, int] = {}

    async def worker() -> None:
        while time.perf_counter() < end:
            try:
                lat.append(await propose())
            except Exception as err:  # counted by kind
                k = type(err).__name__ + (f": {err}" if str(err) else "")
                errors[k] = errors.get(k, 0) + 1
                await asyncio.sleep(0.01)

    lags: list[float] = []

    async def lag_probe() -> None:  # how late the event loop runs a 5 ms timer (stalls show here)
        while time.perf_counter() < end:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - t - 0.005)

    import gc

    gc_pauses: list[float] = []
    gc_start = [0.0]

    def gc_cb(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_pauses.append(time.perf_counter() - gc_start[0])

    gc.callbacks.append(gc_cb)
    t0 = time.perf_counter()
    probe = asyncio.ensure_future(lag_probe())
    tasks = [asyncio.ensure_future(worker()) for _ in range(outstanding)]
    # A write that never completes (no per-write timer: it would cost both systems a task each)
    # is cut off 10 s after the end and counted.
    _done, hung = await asyncio.wait(tasks, timeout=seconds + 10)
    for t in hung:
        t.cancel()
    if hung:
        errors["never completed"] = len(hung)
    dt = time.perf_counter() - t0
    probe.cancel()
    gc.callbacks.remove(gc_cb)
    gc_stats = gc.get_stats()
    return {"ops": len(lat), "secs": dt, "rate": len(lat) / dt, "p50_ms": pct(lat, 0.5) * 1e3,
            "p99_ms": pct(lat, 0.99) * 1e3, "errors": errors,
            "loop_lag_max_ms": max(lags, default=0) * 1e3, "loop_lag_p99_ms": pct(lags, 0.99) * 1e3,
            "gc_collections": [g["collections"] for g in gc_stats],
            "gc_pause_max_ms": max(gc_pauses, default=0) * 1e3, "gc_pause_total_ms": sum(gc_pauses) * 1e3}


async def watch(propose: Any, is_leader: Any) -> None:
    """While leader: one write every 5 ms, reporting each commit with its wall-clock time."""
    while True:
        if await is_leader():
            try:
                await asyncio.wait_for(propose(), 2.0)
                emit("commit")
            except Exception:
                pass
        await asyncio.sleep(0.005)


# ==============================================================================================
# The harness
# ==============================================================================================

class Proc:
    def __init__(self, nid: str, args: list[str]) -> None:
        self.nid = nid
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, env=env)
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                with self.cv:
                    self.events.append(ev)
                    self.cv.notify_all()
        with self.cv:
            self.events.append({"event": "exited"})
            self.cv.notify_all()

    def send(self, **cmd: Any) -> None:
        assert self.p.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.p.stdin.write(json.dumps(cmd) + "\n")
            self.p.stdin.flush()

    def wait(self, event: str, timeout: float, after: int = 0) -> dict[str, Any]:
        end = time.time() + timeout
        with self.cv:
            while True:
                for ev in self.events[after:]:
                    if ev["event"] == event:
                        return ev
                    if ev["event"] == "exited":
                        raise RuntimeError(f"{self.nid} exited")
                left = end - time.time()
                if left <= 0:
                    raise TimeoutError(f"{self.nid}: no {event!r} within {timeout}s")
                self.cv.wait(left)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.p.send_signal(signal.SIGKILL)
        self.p.wait()


def start_cluster(system: str, data: str) -> list[Proc]:
    ids = ["n1", "n2", "n3"]
    ports = dict(zip(ids, free_ports(3)))
    procs = []
    for nid in ids:
        args = [sys.executable, __file__, "node", "--system", system, "--id", nid, "--ports",
                json.dumps(ports), "--data", data]
        procs.append(Proc(nid, args))
    for p in procs:
        p.wait("ready", 60)
    return procs


def find_leader(procs: list[Proc], timeout: float = 30.0) -> Proc:
    end = time.time() + timeout
    while time.time() < end:
        for p in procs:
            n = len(p.events)
            p.send(cmd="status")
            try:
                ev = p.wait("status", 5, after=n)
            except (TimeoutError, RuntimeError):
                continue
            if ev.get("leader"):
                return p
        time.sleep(0.1)
    raise TimeoutError("no leader")


def stop(procs: list[Proc]) -> None:
    for p in procs:
        p.send(cmd="quit")
    for p in procs:
        try:
            p.p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


def fsync_floor_ms(directory: str, n: int = 100) -> float:
    """p50 of a one-row SQLite commit (WAL, synchronous=FULL) in ``directory``: the disk's share of
    a durable write right now (it swings from ~0.05 to ~5 ms on the shared test machine)."""
    import sqlite3

    db = sqlite3.connect(Path(directory) / "floor.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v BLOB)")
    lat = []
    for i in range(n):
        t = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?, ?)", (i, PAYLOAD))
        db.execute("COMMIT")
        lat.append(time.perf_counter() - t)
    db.close()
    return pct(lat, 0.5) * 1e3


def measure_cluster(system: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{system}-") as data:
        floor = fsync_floor_ms(data)
        procs = start_cluster(system, data)
        try:
            leader = find_leader(procs)
            time.sleep(0.5)
            out: dict[str, Any] = {"fsync_floor_ms": floor}
            if args.single_only:
                n = len(leader.events)
                leader.send(cmd="load", outstanding=1, seconds=args.seconds)
                out["latency_single"] = leader.wait("load_done", args.seconds + 60, after=n)
                return out
            n = len(leader.events)
            leader.send(cmd="load", outstanding=args.outstanding, seconds=args.seconds)
            out["throughput"] = leader.wait("load_done", args.seconds + 120, after=n)
            n = len(leader.events)
            leader.send(cmd="load", outstanding=1, seconds=min(args.seconds, 3))
            out["latency_single"] = leader.wait("load_done", args.seconds + 60, after=n)
            # Failover: everyone watches; kill the leader; first commit by a survivor.
            for p in procs:
                p.send(cmd="watch")
            time.sleep(1.0)
            leader = find_leader(procs)
            survivors = [p for p in procs if p is not leader]
            marks = {p.nid: len(p.events) for p in survivors}
            t_kill = time.time()
            leader.kill()
            first = None
            end = time.time() + 30
            while first is None and time.time() < end:
                for p in survivors:
                    with p.cv:
                        for ev in p.events[marks[p.nid]:]:
                            if ev["event"] == "commit" and ev["t"] > t_kill:
                                first = ev["t"] if first is None else min(first, ev["t"])
                time.sleep(0.005)
            out["failover_s"] = (first - t_kill) if first is not None else float("nan")
            return out
        finally:
            stop([p for p in procs if p.p.poll() is None])


def measure_kv_e2e(args: argparse.Namespace) -> dict[str, Any]:
    """warpmesh's KV store end to end: client process -> leader -> replicas -> client."""
    with tempfile.TemporaryDirectory(prefix="bench-kv-") as data:
        ids = ["n1", "n2", "n3"]
        ports = dict(zip(ids, free_ports(3)))
        peers = ",".join(f"{k}=127.0.0.1:{p}" for k, p in ports.items())
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        procs = [subprocess.Popen([sys.executable, "-m", "warpmesh.cli.app", "kv", "serve", "--id", k,
                                   "--listen", f"127.0.0.1:{p}", "--peers", peers, "--data", f"{data}/{k}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
                 for k, p in ports.items()]
        try:
            for p in procs:
                assert p.stdout is not None
                p.stdout.readline()
            from warpmesh.kv.client import KVClient

            async def main() -> dict[str, Any]:
                async with KVClient([f"127.0.0.1:{p}" for p in ports.values()], timeout=60) as kv:
                    await kv.put("warmup", b"x")
                    lat: list[float] = []
                    end = time.perf_counter() + args.seconds

                    async def worker(i: int) -> None:
                        n = 0
                        while time.perf_counter() < end:
                            n += 1
                            t = time.perf_counter()
                            await kv.put(f"k{i % 64}", PAYLOAD)
                            lat.append(time.perf_counter() - t)

                    t0 = time.perf_counter()
                    await asyncio.gather(*(worker(i) for i in range(args.kv_clients)))
                    dt = time.perf_counter() - t0
                    return {"ops": len(lat), "rate": len(lat) / dt, "p50_ms": pct(lat, 0.5) * 1e3,
                            "p99_ms": pct(lat, 0.99) * 1e3, "clients": args.kv_clients}

            return asyncio.run(main())
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def med(runs: list[dict[str, Any]], *path: str) -> float:
    vals = []
    for r in runs:
        v: Any = r
        for k in path:
            v = v[k]
        vals.append(float(v))
    return statistics.median(vals)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="role")
    node = sub.add_parser("node")
    node.add_argument("--system", required=True)
    node.add_argument("--id", required=True)
    node.add_argument("--ports", required=True)
    node.add_argument("--data", required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--outstanding", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kv-clients", type=int, default=256)
    ap.add_argument("--only", choices=["warpmesh", "pysyncobj"], default=None)
    ap.add_argument("--single-only", action="store_true",
                    help="measure only one-write-at-a-time latency (for --seconds; no throughput, "
                         "failover or KV figures)")
    args = ap.parse_args()
    if args.role == "node":
        ports = json.loads(args.ports)
        prof_dir = os.environ.get("BENCH_PROFILE_DIR")  # profile each node process (for development)
        prof = None
        if prof_dir:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        try:
            if args.system == "warpmesh":
                run_warpmesh_node(args.id, ports, args.data)
            else:
                run_pysyncobj_node(args.id, ports)
        finally:
            if prof is not None:
                prof.disable()
                prof.dump_stats(f"{prof_dir}/{args.system}-{args.id}.prof")
        return
    systems = [args.only] if args.only else ["warpmesh", "pysyncobj"]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    e2e: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for s in systems:  # interleaved, so machine noise hits both alike
            r = measure_cluster(s, args)
            runs[s].append(r)
            print(json.dumps({"system": s, "repeat": rep, **r}), file=sys.stderr, flush=True)
        if "warpmesh" in systems and not args.single_only:
            e2e.append(measure_kv_e2e(args))
            print(json.dumps({"system": "warpmesh-kv", "repeat": rep, **e2e[-1]}), file=sys.stderr, flush=True)
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "repeats": args.repeats,
            "seconds": args.seconds, "outstanding": args.outstanding}
    figures = [
        ("writes_per_s", ("throughput", "rate"), True),
        ("p50_ms_at_load", ("throughput", "p50_ms"), False),
        ("p99_ms_at_load", ("throughput", "p99_ms"), False),
        ("single_write_p50_ms", ("latency_single", "p50_ms"), False),
        ("single_write_p99_ms", ("latency_single", "p99_ms"), False),
        ("failover_s", ("failover_s",), False),
    ]
    if args.single_only:
        figures = [f for f in figures if f[1][0] == "latency_single"]
    for name, path, higher_better in figures:
        line: dict[str, Any] = {"bench": "raft_vs_pysyncobj", "figure": name, **meta}
        for s in systems:
            line[s] = round(med(runs[s], *path), 4)
        if len(systems) == 2 and line["pysyncobj"]:
            ratio = line["warpmesh"] / line["pysyncobj"]
            line["ratio_warpmesh_over_pysyncobj"] = round(ratio, 3)
            line["better"] = "warpmesh" if (ratio > 1) == higher_better else "pysyncobj"
        print(json.dumps(line), flush=True)
    # The single-write figure in one line: both systems' p50/p99 from the same run, the ratio, and
    # what the disk alone cost meanwhile (a durable write cannot be faster than one fsync).
    line = {"bench": "raft_vs_pysyncobj", "figure": "single_write", **meta,
            "fsync_floor_p50_ms": round(statistics.median(r["fsync_floor_ms"] for s in systems
                                                          for r in runs[s]), 3)}
    for s in systems:
        line[f"{s}_p50_ms"] = round(med(runs[s], "latency_single", "p50_ms"), 3)
        line[f"{s}_p99_ms"] = round(med(runs[s], "latency_single", "p99_ms"), 3)
    if len(systems) == 2:
        line["ratio_p50_warpmesh_over_pysyncobj"] = round(line["warpmesh_p50_ms"] / line["pysyncobj_p50_ms"], 4)
        line["ratio_p99_warpmesh_over_pysyncobj"] = round(line["warpmesh_p99_ms"] / line["pysyncobj_p99_ms"], 4)
    print(json.dumps(line), flush=True)
    if e2e:
        print(json.dumps({"bench": "raft_vs_pysyncobj", "figure": "kv_e2e_writes_per_s", **meta,
                          "warpmesh": round(statistics.median(r["rate"] for r in e2e), 1),
                          "p50_ms": round(statistics.median(r["p50_ms"] for r in e2e), 2),
                          "p99_ms": round(statistics.median(r["p99_ms"] for r in e2e), 2),
                          "clients": args.kv_clients, "note": "KVClient in a separate process; no peer "
                          "figure (PySyncObj has no client protocol)"}), flush=True)


if __name__ == "__main__":
    main()
