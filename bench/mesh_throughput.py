"""Throughput of the TCP mesh between two peers on loopback, beside raw asyncio streams.

Prints one JSON line per payload size: messages/s and MB/s (payload bytes) for

* ``stream``: peer A sends N messages to peer B, which consumes them (one-way);
* ``echo``: B sends every message back and A waits for all N echoes (pipelined round trips);

for ``TcpMesh`` (handshake done, keepalive on, per-link queue + coalescing writer, frame decoding,
hub delivery to one subscriber) and for the baseline: plain ``asyncio.open_connection`` streams doing
the same ``[u32 length][payload]`` framing with no protocol at all (write per message, ``drain``,
parse length prefixes from read chunks). Medians over ``--repeats`` runs, with the ratio mesh/raw.

    python bench/mesh_throughput.py [--messages 100000] [--sizes 64,1024,16384] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import struct
import sys
import time
from typing import Any

from warpmesh.net.tcp import TcpMesh, TcpMeshConfig

SECRET = b"benchmark-secret-0123456789abcdef"
_LEN = struct.Struct(">I")


# -- TcpMesh ---------------------------------------------------------------------------------
async def mesh_pair() -> tuple[TcpMesh, TcpMesh]:
    cfg = TcpMeshConfig()
    a = await TcpMesh("a", secret=SECRET, incarnation=1, config=cfg).start()
    assert a.address is not None
    b = await TcpMesh("b", secret=SECRET, incarnation=1, config=cfg, join=[a.address]).start()
    await a.roster.wait_for(lambda r: "b" in r, 10)
    await b.roster.wait_for(lambda r: "a" in r, 10)
    return a, b


async def mesh_stream(a: TcpMesh, b: TcpMesh, n: int, payload: bytes) -> float:
    sub = b.subscribe()

    async def consume() -> None:
        for _ in range(n):
            await sub.get()

    consumer = asyncio.ensure_future(consume())
    t0 = time.perf_counter()
    send = a.send_to
    for _ in range(n):
        await send("b", payload)
    await consumer
    dt = time.perf_counter() - t0
    sub.close()
    return dt


async def mesh_echo(a: TcpMesh, b: TcpMesh, n: int, payload: bytes) -> float:
    sub_b = b.subscribe()
    sub_a = a.subscribe()

    async def echo() -> None:
        for _ in range(n):
            sender, data = await sub_b.get()
            await b.send_to(sender, data)

    async def collect() -> None:
        for _ in range(n):
            await sub_a.get()

    echoer = asyncio.ensure_future(echo())
    collector = asyncio.ensure_future(collect())
    t0 = time.perf_counter()
    for _ in range(n):
        await a.send_to("b", payload)
    await collector
    dt = time.perf_counter() - t0
    await echoer
    sub_a.close()
    sub_b.close()
    return dt


# -- raw asyncio streams ------------------------------------------------------------------------
class RawPeer:
    """The baseline: length-prefixed messages over plain asyncio streams, no protocol."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()

    async def send(self, payload: bytes) -> None:
        self.writer.write(_LEN.pack(len(payload)) + payload)
        await self.writer.drain()

    async def messages(self, n: int) -> Any:
        """Yield n payloads parsed from the stream."""
        got = 0
        buf = self.buf
        while got < n:
            chunk = await self.reader.read(256 * 1024)
            if not chunk:
                raise ConnectionError("eof")
            buf += chunk
            pos = 0
            end = len(buf)
            out = []
            while end - pos >= 4 and got < n:
                (length,) = _LEN.unpack_from(buf, pos)
                if end - pos - 4 < length:
                    break
                out.append(bytes(buf[pos + 4:pos + 4 + length]))
                pos += 4 + length
                got += 1
            del buf[:pos]
            for m in out:
                yield m


async def raw_pair() -> tuple[RawPeer, RawPeer, asyncio.Server]:
    accepted: asyncio.Future[RawPeer] = asyncio.get_running_loop().create_future()

    def on_accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.set_result(RawPeer(r, w))

    server = await asyncio.start_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    return RawPeer(r, w), await accepted, server


async def raw_stream(a: RawPeer, b: RawPeer, n: int, payload: bytes) -> float:
    async def consume() -> None:
        async for _ in b.messages(n):
            pass

    consumer = asyncio.ensure_future(consume())
    t0 = time.perf_counter()
    for _ in range(n):
        await a.send(payload)
    await consumer
    return time.perf_counter() - t0


async def raw_echo(a: RawPeer, b: RawPeer, n: int, payload: bytes) -> float:
    async def echo() -> None:
        async for m in b.messages(n):
            await b.send(m)

    async def collect() -> None:
        async for _ in a.messages(n):
            pass

    echoer = asyncio.ensure_future(echo())
    collector = asyncio.ensure_future(collect())
    t0 = time.perf_counter()
    for _ in range(n):
        await a.send(payload)
    await collector
    dt = time.perf_counter() - t0
    await echoer
    return dt


# -- driver -------------------------------------------------------------------------------------
async def measure(n: int, size: int, repeats: int) -> dict[str, Any]:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    a, b = await mesh_pair()
    ra, rb, server = await raw_pair()
    times: dict[str, list[float]] = {k: [] for k in ("mesh_stream", "mesh_echo", "raw_stream", "raw_echo")}
    try:
        # Warm up both paths once, then alternate so background noise hits both alike.
        await mesh_stream(a, b, min(n, 2000), payload)
        await raw_stream(ra, rb, min(n, 2000), payload)
        for _ in range(repeats):
            times["mesh_stream"].append(await mesh_stream(a, b, n, payload))
            times["raw_stream"].append(await raw_stream(ra, rb, n, payload))
            times["mesh_echo"].append(await mesh_echo(a, b, n, payload))
            times["raw_echo"].append(await raw_echo(ra, rb, n, payload))
    finally:
        await a.close()
        await b.close()
        ra.writer.close()
        rb.writer.close()
        server.close()

    def figures(kind: str) -> dict[str, float]:
        dt = statistics.median(times[kind])
        return {"msgs_per_s": round(n / dt), "mb_per_s": round(n * size / dt / 1e6, 2)}

    mesh = {"stream": figures("mesh_stream"), "echo": figures("mesh_echo")}
    raw = {"stream": figures("raw_stream"), "echo": figures("raw_echo")}
    return {
        "bench": "mesh_throughput",
        "payload_bytes": size,
        "messages": n,
        "repeats": repeats,
        "statistic": "median",
        "warpmesh_tcp": mesh,
        "raw_asyncio_streams": raw,
        "ratio_mesh_over_raw": {k: round(mesh[k]["msgs_per_s"] / raw[k]["msgs_per_s"], 3) for k in mesh},
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sizes", default="64,1024,16384", help="payload sizes in bytes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        n = args.messages if size <= 1024 else max(1000, args.messages * 1024 // size)
        result = asyncio.run(measure(n, size, args.repeats))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
