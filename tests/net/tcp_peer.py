"""A minimal TCP mesh peer process for the process-level tests (not a user command: see
``warpmesh node``). Prints one JSON object per line on stdout:

    {"event": "listening", "address": [host, port], "incarnation": N}
    {"event": "roster", "roster": [...], "incarnations": {peer: N}}
    {"event": "refusals", "by_us": {...}, "by_peer": {...}}
    {"event": "closed"}

Usage: python tcp_peer.py --id NAME [--listen HOST:PORT] [--join HOST:PORT ...] [--secret-file F]
SIGTERM closes the mesh gracefully; warnings go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

from warpmesh.net.secret import load_secret
from warpmesh.net.tcp import TcpMesh, TcpMeshConfig, boot_incarnation, parse_address


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    secret = load_secret(args.secret_file)
    config = TcpMeshConfig(keepalive_interval=0.5, keepalive_timeout=5.0, backoff_initial=0.05,
                           backoff_max=1.0, probe_timeout=1.0, gossip_interval=1.0)
    mesh = TcpMesh(args.id, listen=parse_address(args.listen), join=[parse_address(j) for j in args.join],
                   secret=secret, incarnation=args.incarnation or boot_incarnation(), config=config)
    await mesh.start()
    assert mesh.address is not None
    emit({"event": "listening", "address": list(mesh.address), "incarnation": mesh.incarnation})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    last_roster: Any = None
    last_refusals: Any = None
    while not stop.is_set():
        links = mesh.links()
        roster = (sorted(mesh.roster.value), {p: i["incarnation"] for p, i in links.items()})
        if roster != last_roster:
            last_roster = roster
            emit({"event": "roster", "roster": roster[0], "incarnations": roster[1]})
        refusals = (dict(mesh.stats.refused_by_us), dict(mesh.stats.refused_by_peer))
        if refusals != last_refusals:
            last_refusals = refusals
            emit({"event": "refusals", "by_us": refusals[0], "by_peer": refusals[1]})
        with_timeout = asyncio.ensure_future(stop.wait())
        await asyncio.wait([with_timeout], timeout=0.05)
        with_timeout.cancel()
    await mesh.close()
    emit({"event": "closed"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--join", action="append", default=[])
    parser.add_argument("--secret-file")
    parser.add_argument("--incarnation", type=int, default=0)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(main(parser.parse_args()))
