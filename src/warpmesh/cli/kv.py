"""``warpmesh kv``: a replicated key-value store on Raft.

    warpmesh kv up --nodes 3                       # a local three-node cluster (Ctrl-C stops it)
    warpmesh kv put greeting hello                 # prints the new revision
    warpmesh kv get greeting                       # prints the value (linearizable read)
    warpmesh kv cas greeting hello bonjour         # swap only if the value is still "hello"
    warpmesh kv delete greeting

    warpmesh kv serve --id n1 --listen 10.0.0.1:7101 \\
        --peers n1=10.0.0.1:7101,n2=10.0.0.2:7101,n3=10.0.0.3:7101 --data /var/lib/warpmesh/n1 \\
        --secret-file cluster.secret

Clients find servers through ``--servers`` (default: the addresses ``kv up`` uses, also read from
``$WARPMESH_KV_SERVERS``) and need the cluster secret when the servers have one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from warpmesh.cli.common import (
    _addr_callback,
    load_mesh_security,
    mesh_options,
    parse_addr,
    setup_logging,
    tls_options,
)

DEFAULT_SERVERS = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"


def _parse_peers(text: str) -> dict[str, tuple[str, int]]:
    peers: dict[str, tuple[str, int]] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        nid, eq, addr = part.partition("=")
        if not eq or not nid:
            raise click.BadParameter(f"{part!r} must be ID=HOST:PORT", param_hint="--peers")
        if nid in peers:
            raise click.BadParameter(f"node id {nid!r} appears twice", param_hint="--peers")
        peers[nid] = parse_addr(addr, "--peers address")
    if not peers:
        raise click.BadParameter("list every member as ID=HOST:PORT,...", param_hint="--peers")
    return peers


@click.group()
def kv() -> None:
    """A replicated key-value store on Raft: serve, get, put, cas, delete, up."""


@kv.command()
@click.option("--id", "node_id", required=True, help="This node's id (unique, stable across restarts).")
@click.option("--listen", required=True, metavar="HOST:PORT", help="Address to listen on.")
@click.option("--peers", default=None, metavar="ID=HOST:PORT,...",
              help="Every member of the cluster, this node included (the bootstrap configuration).")
@click.option("--join", "join_addrs", default=None, metavar="HOST:PORT,...",
              help="Instead of --peers: join a running cluster through any of its members (see `kv member`).")
@click.option("--force", is_flag=True, help="With --join: reuse a removed id, or replace a member's data.")
@click.option("--learner", is_flag=True, help="With --join: stay a learner (a replica that does not vote).")
@click.option("--join-timeout", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True,
              metavar="SECONDS", help="With --join: give up (exit 1) if no leader answers within this.")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for this node's durable state (raft.sqlite).")
@click.option("--snapshot-every", type=click.IntRange(min=0), default=10_000, show_default=True,
              help="Publish a snapshot (and compact the log) every N applied entries; 0 never.")
@click.option("--election-timeout", type=click.FloatRange(0.01, 60), default=None, metavar="SECONDS",
              help="Minimum election timeout (default 0.3; the maximum is twice it).")
@click.option("--http", "http", callback=_addr_callback, metavar="HOST:PORT", default=None,
              help="Serve the read-only dashboard and /metrics (Raft leader, term, commit index, commit latency, "
                   "members) here; loopback only unless a secret or TLS is configured.")
@mesh_options
def serve(node_id: str, listen: str, peers: str | None, join_addrs: str | None, force: bool, learner: bool,
          join_timeout: float, data_dir: Path, snapshot_every: int, election_timeout: float | None,
          http: tuple[str, int] | None, secret_file: Path | None,
          tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None, log_level: str) -> None:
    """Run one KV node until SIGINT/SIGTERM. Prints a JSON "ready" line on stdout once serving.
    Exits 1 if the node learns it was removed from the cluster (its data is then stale)."""
    from warpmesh.cli.kv_ops import serve_members, serve_until

    setup_logging(log_level)
    listen_addr = parse_addr(listen, "--listen")
    members, join = serve_members(node_id, peers, join_addrs, force, learner)
    secret, tls = load_mesh_security(secret_file, tls_cert, tls_key, tls_ca)
    if http is not None and secret is None and tls is None:
        from warpmesh.observe.http import is_loopback

        if not is_loopback(http[0]):
            raise click.BadParameter(f"{http[0]} is not a loopback address: the dashboard listens beyond "
                                     "loopback only with a secret or TLS (--secret-file or $WARPMESH_SECRET)",
                                     param_hint="--http")
    _check_insecure(secret, listen=[listen_addr[0]],
                    dial=[h for h, _ in members.values()] + [h for h, _ in join or ()])
    from warpmesh.kv.server import AdminRefused as KVJoinRefused
    from warpmesh.raft.config import RaftConfig
    from warpmesh.raft.errors import CorruptState

    cfg = None
    if election_timeout is not None:
        cfg = RaftConfig(election_timeout_min=election_timeout, election_timeout_max=2 * election_timeout,
                         heartbeat_interval=election_timeout / 6)

    async def main() -> None:
        from warpmesh.kv.server import open_kv_node

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        node = await open_kv_node(node_id, listen=listen_addr, peers=members, data_dir=data_dir,
                                  secret=secret, config=cfg, snapshot_every=snapshot_every, tls=tls,
                                  join=join, force=force, learner=learner, join_timeout=join_timeout)
        from warpmesh.raft.runtime import tune_gc_for_server

        tune_gc_for_server()  # a dedicated server process: see the function's docstring
        addr = node.mesh.address
        dashboard: dict[str, str] = {}
        server = observer = None
        if http is not None:
            from warpmesh.errors import WarpmeshError
            from warpmesh.observe.http import DashboardServer
            from warpmesh.observe.raft_source import RaftObserver

            observer = RaftObserver(node.node, live=node.server.live_members)
            try:
                server = await DashboardServer(observer, http[0], http[1], secured=secret is not None or tls is not None,
                                               title=f"warpmesh kv - {node_id}").start()
            except WarpmeshError as err:
                await observer.close()
                await node.close()
                raise click.ClickException(str(err)) from None
            dashboard["http"] = server.url
        print(json.dumps({"event": "ready", "id": node_id, "address": f"{addr[0]}:{addr[1]}",
                          "data": str(data_dir), **dashboard}), flush=True)
        try:
            ended = await serve_until(stop, node)
        finally:
            if server is not None:
                await server.close()
            if observer is not None:
                await observer.close()
            await node.close()
        if ended is not None and ended[0] == "crashed":
            raise click.ClickException(ended[1])
        if ended is not None:
            raise click.ClickException(f"{ended[1]}; the data in {data_dir} is stale and this node stops: "
                                       "delete it and add the machine back under a new id with "
                                       "`warpmesh kv serve --join HOST:PORT --id NEW_ID`")

    try:
        asyncio.run(main())
    except (KVJoinRefused, TimeoutError) as err:
        raise click.ClickException(f"cannot join the cluster: {err}") from None
    except CorruptState as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:
        raise click.ClickException(f"cannot listen on {listen}: {err.strerror or err}") from None


def _client_options(f: Any) -> Any:
    f = tls_options(f, ca_help="CA certificate of the cluster (when the servers use TLS).", who="client",
                    cert_note=", signed by the cluster CA")
    f = click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
                     help="Give up after this many seconds.")(f)
    f = click.option("--secret-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="File holding the cluster secret (else $WARPMESH_SECRET).")(f)
    f = click.option("--servers", envvar="WARPMESH_KV_SERVERS", default=DEFAULT_SERVERS, show_default=True,
                     metavar="HOST:PORT,...", help="Any of the cluster's nodes (env WARPMESH_KV_SERVERS).")(f)
    return f


def _key(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value:
        raise click.BadParameter("must not be empty", param_hint=f"'{(param.name or 'key').upper()}'")
    return value


def _check_insecure(secret: bytes | None, *, listen: list[str], dial: list[str]) -> None:
    """Non-loopback addresses without a cluster secret are a usage error (one line, exit 2)."""
    from warpmesh.net.secret import InsecureAddressError, check_addresses

    try:
        check_addresses(secret, listen=listen, dial=dial)
    except InsecureAddressError as err:
        raise click.UsageError(str(err)) from None


def _run_client(servers: str, secret_file: Path | None, timeout: float, op: Any,
                tls_files: tuple[Path | None, Path | None, Path | None] = (None, None, None)) -> Any:
    from warpmesh.kv.client import KVClient, KVError, KVUnreachable
    addrs = [parse_addr(s, "--servers address") for s in servers.split(",") if s.strip()]
    if not addrs:
        raise click.BadParameter("give at least one HOST:PORT", param_hint="--servers")
    secret, tls = load_mesh_security(secret_file, *tls_files)
    _check_insecure(secret, listen=[], dial=[h for h, _ in addrs])

    async def main() -> Any:
        async with KVClient(addrs, secret=secret, timeout=timeout, tls=tls) as client:
            return await op(client)

    try:
        return asyncio.run(main())
    except KVUnreachable as err:
        raise click.ClickException(f"{err}, or point --servers (or $WARPMESH_KV_SERVERS) at running "
                                   "nodes") from None
    except KVError as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:
        raise click.ClickException(f"cannot reach the cluster: {err}") from None


@kv.command()
@click.argument("key", callback=_key)
@click.option("--stale", is_flag=True, help="Read one node's local copy (faster, may be stale).")
@_client_options
def get(key: str, stale: bool, servers: str, secret_file: Path | None, timeout: float,
        tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
    """Print KEY's value (exit status 1 and nothing printed if it is absent)."""
    value = _run_client(servers, secret_file, timeout, lambda c: c.get(key, stale=stale),
                        (tls_cert, tls_key, tls_ca))
    if value is None:
        click.echo(f"{key}: not found", err=True)
        sys.exit(1)
    click.echo(value.decode(errors="replace"))


@kv.command()
@click.argument("key", callback=_key)
@click.argument("value")
@click.option("--json", "as_json", is_flag=True, help='Print {"key": ..., "revision": N} instead.')
@_client_options
def put(key: str, value: str, as_json: bool, servers: str, secret_file: Path | None, timeout: float,
        tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
    """Set KEY to VALUE; prints the new revision."""
    rev = _run_client(servers, secret_file, timeout, lambda c: c.put(key, value), (tls_cert, tls_key, tls_ca))
    click.echo(json.dumps({"key": key, "revision": rev}) if as_json else rev)


@kv.command()
@click.argument("key", callback=_key)
@click.argument("expected")
@click.argument("new")
@click.option("--absent", is_flag=True, help="Expect KEY to be absent (EXPECTED is ignored).")
@click.option("--delete", "delete_", is_flag=True, help="Delete KEY instead of setting NEW.")
@_client_options
def cas(key: str, expected: str, new: str, absent: bool, delete_: bool, servers: str,
        secret_file: Path | None, timeout: float, tls_cert: Path | None, tls_key: Path | None,
        tls_ca: Path | None) -> None:
    """Set KEY to NEW only if it currently holds EXPECTED. Exit status 1 if it did not."""
    ok, now = _run_client(servers, secret_file, timeout,
                          lambda c: c.cas(key, None if absent else expected, None if delete_ else new),
                          (tls_cert, tls_key, tls_ca))
    shown = "(absent)" if now is None else now.decode(errors="replace")
    click.echo(f"{'swapped' if ok else 'not swapped'}: {key} = {shown}")
    if not ok:
        sys.exit(1)


@kv.command()
@click.argument("key", callback=_key)
@_client_options
def delete(key: str, servers: str, secret_file: Path | None, timeout: float, tls_cert: Path | None,
           tls_key: Path | None, tls_ca: Path | None) -> None:
    """Delete KEY (exit status 1 if it did not exist)."""
    if not _run_client(servers, secret_file, timeout, lambda c: c.delete(key), (tls_cert, tls_key, tls_ca)):
        click.echo(f"{key}: not found", err=True)
        sys.exit(1)


@kv.command()
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--base-port", type=click.IntRange(1024, 65000), default=7101, show_default=True)
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".warpmesh-kv"), show_default=True,
              help="Parent directory of each node's data (.gitignore covers the default).")
@click.option("--restart-after", type=click.FloatRange(0, 3600), default=5.0, show_default=True,
              metavar="SECONDS", help="Restart a node that died after this pause; 0: only on request.")
def up(nodes: int, base_port: int, data_dir: Path, restart_after: float) -> None:
    """Start a local cluster of NODES processes on loopback; Ctrl-C stops it (data is kept).
    A node that dies is reported and the rest keep serving; it is restarted after
    --restart-after seconds, or at once when you type `restart ID` (e.g. `restart n2`)."""
    from warpmesh.cli.kv_ops import supervise

    members = {f"n{i + 1}": f"127.0.0.1:{base_port + i}" for i in range(nodes)}
    peers = ",".join(f"{k}={v}" for k, v in members.items())
    procs: dict[str, subprocess.Popen[str]] = {}
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    def start(nid: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "warpmesh.cli.app", "kv", "serve", "--id", nid, "--listen", members[nid],
             "--peers", peers, "--data", str(data_dir / nid)], stdout=subprocess.PIPE, text=True, env=env)

    signal.signal(signal.SIGTERM, on_term)  # stop the children on SIGTERM too, not only Ctrl-C
    try:
        for nid in members:
            procs[nid] = start(nid)
        for nid, p in procs.items():
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise click.ClickException(f"node {nid} exited during start-up (is port "
                                           f"{members[nid]} free?)")
        servers = ",".join(members.values())
        click.echo(f"KV cluster up: {nodes} node(s), data in {data_dir}/")
        click.echo(f"  servers: {servers}")
        click.echo("  try:     warpmesh kv put hello world && warpmesh kv get hello && warpmesh kv status")
        if base_port != 7101 or nodes != 3:
            click.echo(f"  (pass --servers {servers} or export WARPMESH_KV_SERVERS={servers})")
        click.echo("Ctrl-C stops the cluster; type `restart ID` to restart a node that died.")
        supervise(procs, start, restart_after)
    except KeyboardInterrupt:
        click.echo("stopping...")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


from warpmesh.cli.kv_ops import register as _register_ops  # noqa: E402 - operator commands (issue 17)

_register_ops(kv)
