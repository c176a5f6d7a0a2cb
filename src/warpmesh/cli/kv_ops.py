"""``warpmesh kv`` operator commands (etcdctl's member / endpoint status / move-leader / snapshot):

    warpmesh kv member list                         # id, address, voter/learner, match index, contact
    warpmesh kv member add n4=10.0.0.4:7101         # learner first; a voter once caught up
    warpmesh kv member promote n4
    warpmesh kv member remove n2                    # refused if it would break the quorum
    warpmesh kv status                              # every node: role, term, indexes, sizes, health
    warpmesh kv transfer-leader [n3]                # move the leader (before maintenance)
    warpmesh kv snapshot save backup.snap           # consistent, through the leader, checksummed
    warpmesh kv snapshot restore backup.snap --data DIR --id a1 --peers a1=...,a2=...,a3=...

Every command takes ``--servers`` like the other ``kv`` commands and has ``--json``. A refusal
exits 1 with a one-line reason that says what to do. See docs/raft.md, "Operating a KV cluster".
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from warpmesh.cli.common import parse_addr
from warpmesh.cli.kv import _client_options, _parse_peers, _run_client

_json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def serve_members(node_id: str, peers: str | None, join: str | None, force: bool, learner: bool
                  ) -> tuple[dict[str, tuple[str, int]], list[tuple[str, int]] | None]:
    """``kv serve``'s --peers/--join rules: exactly one of them; --force/--learner need --join."""
    if peers and join:
        raise click.UsageError("--peers and --join are mutually exclusive: --peers bootstraps a new "
                               "cluster, --join joins a running one")
    if not peers and not join:
        raise click.UsageError("give --peers ID=HOST:PORT,... to bootstrap a cluster, or --join HOST:PORT "
                               "to join a running one")
    if (force or learner) and not join:
        raise click.UsageError("--force and --learner only apply with --join")
    if join:
        addrs = [parse_addr(a.strip(), "--join") for a in join.split(",") if a.strip()]
        if not addrs:
            raise click.BadParameter("give at least one HOST:PORT", param_hint="--join")
        return {}, addrs
    members = _parse_peers(peers or "")
    if node_id not in members:
        raise click.BadParameter(f"--peers must include this node ({node_id}=HOST:PORT)", param_hint="--peers")
    return members, None


async def serve_until(stop: asyncio.Event, node: Any) -> tuple[str, str] | None:
    """Serve until ``stop`` is set (None), this node learns it was removed (``("removed", reason)``)
    or its Raft engine stops on an error (``("crashed", reason)``). A node restarted on old data
    first asks the leader whether its id was removed meanwhile."""
    loop = asyncio.get_running_loop()
    removed = [node._removed_task()]
    if node.had_data:
        removed.append(loop.create_task(node.check_not_removed()))
    crashed = node._crashed_task()
    waits: list[asyncio.Future[Any]] = [loop.create_task(stop.wait()), crashed, *removed]
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in waits:
            t.cancel()
    for t in done:
        if t is not waits[0] and not t.cancelled() and t.exception() is None and t.result():
            return ("crashed" if t is crashed else "removed", str(t.result()))
    return None


def supervise(procs: dict[str, Any], start: Any, restart_after: float, *, poll: float = 0.2,
              lines: Any = None) -> None:
    """``kv up``'s loop: report a node that dies and keep serving with the rest (saying whether
    they still have a quorum), restart it after ``restart_after`` seconds (0: never on its own) or
    when ``restart ID`` is typed on stdin. Returns never; Ctrl-C (KeyboardInterrupt) ends it."""
    import queue
    import sys
    import threading
    import time

    commands: queue.Queue[str] = queue.Queue()
    source = lines if lines is not None else sys.stdin

    def read() -> None:
        try:
            for line in source:
                commands.put(line.strip())
        except (OSError, ValueError):
            pass

    threading.Thread(target=read, name="kv-up-stdin", daemon=True).start()
    due: dict[str, float] = {}
    n = len(procs)
    while True:
        now = time.monotonic()
        for nid, p in sorted(procs.items()):
            if p.poll() is not None and nid not in due:
                alive = sorted(k for k, q in procs.items() if q.poll() is None)
                quorum = len(alive) >= n // 2 + 1
                when = (f"restarting it in {restart_after:g}s (or type `restart {nid}`)" if restart_after
                        else f"type `restart {nid}` to restart it")
                click.echo(f"node {nid} exited (status {p.returncode}); "
                           + (f"the cluster keeps serving with {', '.join(alive)}" if quorum else
                              f"only {', '.join(alive) or 'no node'} left: no quorum, requests wait")
                           + f"; {when}", err=True)
                due[nid] = now + restart_after if restart_after else float("inf")
        try:
            cmd = commands.get(timeout=poll)
        except queue.Empty:
            cmd = ""
        words = cmd.split()
        if words[:1] == ["restart"] and len(words) == 2:
            nid = words[1]
            if nid not in procs:
                click.echo(f"no node {nid!r}; the nodes are {', '.join(sorted(procs))}", err=True)
            elif procs[nid].poll() is None:
                click.echo(f"{nid} is running; nothing to restart", err=True)
            else:
                due[nid] = 0.0
        elif words:
            click.echo("commands: `restart ID` (Ctrl-C stops the cluster)", err=True)
        now = time.monotonic()
        for nid, at in sorted(due.items()):
            if at <= now:
                del due[nid]
                procs[nid] = start(nid)
                click.echo(f"restarted {nid}", err=True)


def _emit(as_json: bool, obj: Any, text: str) -> None:
    click.echo(json.dumps(obj, sort_keys=True) if as_json else text)


def _member_table(out: dict[str, Any]) -> str:
    rows = [("ID", "ADDRESS", "ROLE", "MATCH", "LAST CONTACT")]
    for m in out["members"]:
        age = m["last_contact_s"]
        rows.append((m["id"] + (" *" if m["id"] == out["leader"] else ""), m["address"] or "?", m["role"],
                     str(m["match_index"]), "never" if age is None else f"{age:.2f}s ago"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([*lines, "(* = leader)"])


def _status_table(out: dict[str, Any]) -> str:
    cols = ("id", "role", "leader", "term", "commit_index", "applied_index", "log_entries", "snapshot_index",
            "data_bytes", "healthy")
    heads = ("ID", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED", "LOG", "SNAPSHOT", "DATA", "HEALTHY")
    rows: list[tuple[str, ...]] = [heads]
    for n in out["nodes"]:
        rows.append(tuple("-" if n.get(c) is None else ("yes" if n[c] is True else "no" if n[c] is False
                                                         else str(n[c])) for c in cols))
    widths = [max(len(r[i]) for r in rows) for i in range(len(heads))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def register(kv: click.Group) -> None:
    """Add the operator commands to the ``kv`` group."""

    @kv.group()
    def member() -> None:
        """List, add, promote and remove cluster members (one change at a time)."""

    @member.command("list")
    @_json_option
    @_client_options
    def member_list(as_json: bool, servers: str, secret_file: Path | None, timeout: float,
                    tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
        """Members: id, address, voter/learner, match index, last contact (from the leader)."""
        out = _run_client(servers, secret_file, timeout, lambda c: c.member_list(), (tls_cert, tls_key, tls_ca))
        _emit(as_json, out, _member_table(out))

    @member.command("add")
    @click.argument("spec", metavar="ID=HOST:PORT")
    @click.option("--learner", is_flag=True, help="Keep it a learner (a replica that does not vote).")
    @_json_option
    @_client_options
    def member_add(spec: str, learner: bool, as_json: bool, servers: str, secret_file: Path | None,
                   timeout: float, tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
        """Add a member: a learner that is promoted to voter once caught up (start it with
        `kv serve --join`). Adding a member that is already there exits 0 and says so."""
        node, eq, addr = spec.partition("=")
        if not eq or not node:
            raise click.BadParameter(f"{spec!r} must be ID=HOST:PORT", param_hint="ID=HOST:PORT")
        host, port = parse_addr(addr, "ID=HOST:PORT")
        out = _run_client(servers, secret_file, timeout,
                          lambda c: c.member_add(node, f"{host}:{port}", learner=learner),
                          (tls_cert, tls_key, tls_ca))
        _emit(as_json, {"id": node, **out}, out["detail"])

    @member.command("promote")
    @click.argument("node_id", metavar="ID")
    @_json_option
    @_client_options
    def member_promote(node_id: str, as_json: bool, servers: str, secret_file: Path | None, timeout: float,
                       tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
        """Make a learner a voter (refused until it has caught up)."""
        out = _run_client(servers, secret_file, timeout, lambda c: c.member_promote(node_id),
                          (tls_cert, tls_key, tls_ca))
        _emit(as_json, {"id": node_id, **out}, out["detail"])

    @member.command("remove")
    @click.argument("node_id", metavar="ID")
    @_json_option
    @_client_options
    def member_remove(node_id: str, as_json: bool, servers: str, secret_file: Path | None, timeout: float,
                      tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
        """Remove a member (refused if the cluster would lose its quorum of live voters; the
        leader hands over leadership first). Its id is never reused unless forced."""
        out = _run_client(servers, secret_file, timeout, lambda c: c.member_remove(node_id),
                          (tls_cert, tls_key, tls_ca))
        _emit(as_json, {"id": node_id, **out}, out["detail"])

    @kv.command("status")
    @_json_option
    @_client_options
    def status(as_json: bool, servers: str, secret_file: Path | None, timeout: float,
               tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
        """Every member's role, leader, term, commit/applied index, log size, snapshot index,
        data size and health (each node asked directly)."""
        out = _run_client(servers, secret_file, timeout, lambda c: c.status(), (tls_cert, tls_key, tls_ca))
        _emit(as_json, out, _status_table(out))

    @kv.command("transfer-leader")
    @click.argument("node_id", metavar="[ID]", required=False)
    @_json_option
    @_client_options
    def transfer_leader(node_id: str | None, as_json: bool, servers: str, secret_file: Path | None,
                        timeout: float, tls_cert: Path | None, tls_key: Path | None,
                        tls_ca: Path | None) -> None:
        """Move leadership to voter ID (default: the most up-to-date live voter)."""
        out = _run_client(servers, secret_file, timeout, lambda c: c.transfer_leader(node_id),
                          (tls_cert, tls_key, tls_ca))
        _emit(as_json, out, out["detail"])

    @kv.group()
    def snapshot() -> None:
        """Back up the store (save) and build a new cluster from a backup (restore)."""

    @snapshot.command("save")
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    @_json_option
    @_client_options
    def snapshot_save(file: Path, as_json: bool, servers: str, secret_file: Path | None, timeout: float,
                      tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
        """Save a consistent snapshot (taken through the leader) with its index and a checksum."""
        if not file.parent.is_dir():
            raise click.BadParameter(f"directory {file.parent} does not exist", param_hint="FILE")
        out = _run_client(servers, secret_file, timeout, lambda c: c.snapshot_save(file),
                          (tls_cert, tls_key, tls_ca))
        _emit(as_json, out, f"saved {out['keys']} key(s) at index {out['index']} to {out['file']} "
                            f"({out['bytes']} bytes, blake3 {out['checksum'][:16]}...)")

    @snapshot.command("restore")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                  help="The new node's data directory (must not hold a node's data yet).")
    @click.option("--id", "node_id", required=True, help="The new node's id.")
    @click.option("--peers", required=True, metavar="ID=HOST:PORT,...",
                  help="Every member of the new cluster, this node included.")
    @_json_option
    def snapshot_restore(file: Path, data_dir: Path, node_id: str, peers: str, as_json: bool) -> None:
        """Build one node's data directory of a new cluster from FILE (run once per node, with the
        same --peers), then start each with `kv serve --id ID --peers ... --data DIR`."""
        from warpmesh.cli.kv import _check_insecure
        from warpmesh.kv.backup import BackupError, restore_data_dir
        from warpmesh.net.secret import SecretError, load_secret

        members = _parse_peers(peers)
        if node_id not in members:
            raise click.BadParameter(f"--peers must include this node ({node_id}=HOST:PORT)",
                                     param_hint="--peers")
        try:
            secret = load_secret()
        except SecretError as err:
            raise click.ClickException(str(err)) from None
        # The new cluster will need its secret on non-loopback addresses (kv serve refuses them
        # without one): say so now rather than after the restore.
        _check_insecure(secret, listen=[], dial=[h for h, _ in members.values()])
        try:
            out = restore_data_dir(file, data_dir, node_id,
                                   {k: f"{h}:{p}" for k, (h, p) in members.items()})
        except BackupError as err:
            raise click.ClickException(str(err)) from None
        _emit(as_json, out, f"restored {out['keys']} key(s) at index {out['index']} into {out['data']} for "
                            f"{node_id}; start it with: warpmesh kv serve --id {node_id} --peers {peers} "
                            f"--data {out['data']} --listen {members[node_id][0]}:{members[node_id][1]}")
