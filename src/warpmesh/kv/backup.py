"""KV backups: ``kv snapshot save`` writes a consistent snapshot to a file, ``kv snapshot restore``
builds one node's data directory of a *new* cluster from it (run it once per node).

File format (version 1): the magic line ``WARPMESH-KV-SNAPSHOT 1\\n``, then one msgpack map
``{"index", "bytes", "blake3", "data"}``: the log index the snapshot reflects, the size and BLAKE3
hex digest of ``data`` (the state machine's snapshot: keys, values, revisions, the member book). A
truncated or altered file fails the checks and is refused, never half-restored.

The encoding and checks are pure; :func:`restore_data_dir` writes the SQLite store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import blake3

from warpmesh.kv.client import KVError
from warpmesh.kv.state import KVStateMachine
from warpmesh.wire.frame import FrameError, pack, unpack

MAGIC = b"WARPMESH-KV-SNAPSHOT 1\n"


class BackupError(KVError, ValueError):
    """A backup file is corrupt, truncated or not a backup, or cannot be restored where asked."""


def encode_backup(index: int, data: bytes) -> bytes:
    return MAGIC + pack({"index": index, "bytes": len(data), "blake3": blake3.blake3(data).hexdigest(),
                         "data": data})


def decode_backup(blob: bytes, where: str = "the backup") -> tuple[int, bytes]:
    """``(index, state bytes)``; raises :class:`BackupError` unless the file is whole and intact."""
    if not blob.startswith(MAGIC):
        raise BackupError(f"{where} is not a warpmesh KV snapshot (made by `warpmesh kv snapshot save`)")
    try:
        obj = unpack(blob[len(MAGIC):])
    except (FrameError, ValueError, TypeError) as err:
        raise BackupError(f"{where} is truncated or corrupt ({err}); use another copy") from None
    if not isinstance(obj, dict) or not {"index", "bytes", "blake3", "data"} <= set(obj):
        raise BackupError(f"{where} is corrupt (fields missing); use another copy")
    data, index = obj["data"], obj["index"]
    if not isinstance(data, bytes) or type(index) is not int or index < 1 or len(data) != obj["bytes"]:
        raise BackupError(f"{where} is truncated or corrupt (size mismatch); use another copy")
    if blake3.blake3(data).hexdigest() != obj["blake3"]:
        raise BackupError(f"{where} is corrupt (checksum mismatch); use another copy")
    try:
        KVStateMachine().restore(data)
    except Exception as err:
        raise BackupError(f"{where} holds an unreadable state ({err}); use another copy") from None
    return index, data


def write_backup(path: str | os.PathLike[str], index: int, data: bytes) -> dict[str, Any]:
    """Write atomically (temp file, fsync, rename); returns what ``snapshot save --json`` prints."""
    p = Path(path)
    blob = encode_backup(index, data)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    sm = KVStateMachine()
    sm.restore(data)
    return {"file": str(p), "index": index, "bytes": len(blob), "checksum": blake3.blake3(data).hexdigest(),
            "keys": len(sm.data)}


def read_backup(path: str | os.PathLike[str]) -> tuple[int, bytes]:
    try:
        blob = Path(path).read_bytes()
    except OSError as err:
        raise BackupError(f"cannot read {path}: {err.strerror or err}") from None
    return decode_backup(blob, str(path))


def restore_data_dir(path: str | os.PathLike[str], data_dir: str | os.PathLike[str], node_id: str,
                     peers: dict[str, str]) -> dict[str, Any]:
    """Build ``data_dir`` for ``node_id`` of a new cluster whose members are ``peers`` (id ->
    "HOST:PORT", this node included) from the backup at ``path``. The node then starts with
    ``kv serve --id ID --peers ... --data DIR`` and every key keeps its value and revision."""
    from warpmesh.kv.state import encode_member
    from warpmesh.raft.membership import Membership
    from warpmesh.raft.sessions import SessionTable
    from warpmesh.raft.storage import SqliteRaftStorage
    from warpmesh.raft.types import HardState, Snapshot, SnapshotMeta

    if node_id not in peers:
        raise BackupError(f"--peers must include this node ({node_id}=HOST:PORT)")
    index, data = read_backup(path)
    d = Path(data_dir)
    if (d / "raft.sqlite").exists():
        raise BackupError(f"{d} already holds a node's data; restore into a new, empty directory")
    sm = KVStateMachine()
    sm.restore(data)
    # The new cluster's member book: its own members; the old cluster's are history.
    sm.members, sm.retired = {}, {}
    for nid, addr in sorted(peers.items()):
        sm.apply(encode_member(nid, addr), index)
    state = pack([sm.snapshot(), SessionTable().to_obj()])
    d.mkdir(parents=True, exist_ok=True)
    store = SqliteRaftStorage(d / "raft.sqlite", node_id=node_id)
    try:
        store.save_snapshot(Snapshot(SnapshotMeta(index, 1, Membership.of(sorted(peers))), state))
        store.save_hard_state(HardState(1, None, index))
    finally:
        store.close()
    return {"data": str(d), "id": node_id, "index": index, "keys": len(sm.data),
            "members": sorted(peers)}
