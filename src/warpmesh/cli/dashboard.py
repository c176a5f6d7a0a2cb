"""``warpmesh dashboard --to HOST:PORT``: join a mesh as a client and serve its dashboard locally.

The client subscribes to every peer's event feed (mux channel 0x70) and folds the events, and its
own view of the mesh, into a board served over HTTP exactly as ``warpmesh node --http`` does
(:mod:`warpmesh.observe.http`): the page, server-sent events and ``/metrics``. Read-only.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click

from warpmesh.cli.client import MeshClient, _prepare, client_options


@contextlib.asynccontextmanager
async def watching(to: tuple[str, int], listen: tuple[str, int] | None, secret: bytes | None, tls: Any,
                   connect_timeout: float) -> AsyncIterator[Any]:
    """A client of the mesh at ``to`` whose :class:`~warpmesh.observe.Observer` watches every peer."""
    from warpmesh.observe.runtime import Observer

    async with MeshClient(to, listen=listen, secret=secret, tls=tls, connect_timeout=connect_timeout) as client:
        await client.sync()
        observer = await Observer(client.warp).start()
        observer.watch()
        try:
            yield observer
        finally:
            await observer.close()


@click.command()
@click.option("--http", "http", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Where to serve the page and /metrics (port 0 picks a free one; loopback only unless a "
                   "secret or TLS is configured).")
@click.option("--json", "as_json", is_flag=True, help="Print the ready line as one JSON object.")
@client_options
def dashboard(http: str, as_json: bool, to: tuple[str, int], listen: tuple[str, int] | None,
              connect_timeout: float, log_level: str, secret_file: Path | None, tls_cert: Path | None,
              tls_key: Path | None, tls_ca: Path | None) -> None:
    """Serve a live dashboard of the mesh at --to (peers, ring, queue, task stream, jobs, Raft, metrics)."""
    from warpmesh.cli.common import parse_addr, run_until_signal
    from warpmesh.errors import WarpmeshError
    from warpmesh.observe.http import DashboardServer, is_loopback

    host, port = parse_addr(http, "--http")
    secret, tls = _prepare(log_level, secret_file, tls_cert, tls_key, tls_ca)
    if secret is None and tls is None and not is_loopback(host):
        raise click.BadParameter(f"{host} is not a loopback address: the dashboard listens beyond loopback only "
                                 "with a secret or TLS (--secret-file or $WARPMESH_SECRET)", param_hint="--http")

    async def main(stop: Any) -> None:
        async with watching(to, listen, secret, tls, connect_timeout) as observer:
            try:
                server = await DashboardServer(observer, host, port, secured=secret is not None or tls is not None,
                                               title=f"warpmesh via {to[0]}:{to[1]}").start()
            except WarpmeshError as err:
                raise click.ClickException(str(err)) from None
            try:
                if as_json:
                    sys.stdout.write(json.dumps({"event": "ready", "http": server.url, "mesh": f"{to[0]}:{to[1]}",
                                                 "client": observer.self_id}) + "\n")
                else:
                    sys.stdout.write(f"dashboard of the mesh via {to[0]}:{to[1]} on {server.url} (Ctrl-C stops)\n")
                sys.stdout.flush()
                await stop.wait()
            finally:
                await server.close()

    run_until_signal(main)
