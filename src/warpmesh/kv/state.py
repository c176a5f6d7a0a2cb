"""The key-value state machine: ``put``, ``delete``, ``cas`` (applied through Raft) and ``get``.

Pure and deterministic: commands are msgpack lists, results msgpack values. Keys are strings,
values bytes. Every write returns the log index it was applied at (the key's new *revision*).

It also keeps the cluster's *member book* (replicated like the data, so every replica and every
snapshot has it): each member's address and join token, and every id ever removed, so an id is
never reused by accident and a removed node that comes back with its old data is recognised.
"""

from __future__ import annotations

from typing import Any

from warpmesh.errors import DecodeError
from warpmesh.wire.frame import FrameError, pack, unpack

#: Longest key and value accepted (a command must fit one Raft entry).
MAX_KEY_BYTES = 4096
MAX_VALUE_BYTES = 4 * 1024 * 1024


class BadCommand(DecodeError):
    """A malformed command (it is applied as a no-op that returns an error, on every replica)."""


def encode_put(key: str, value: bytes) -> bytes:
    return pack(["put", key, value])


def encode_delete(key: str) -> bytes:
    return pack(["del", key])


def encode_cas(key: str, expected: bytes | None, new: bytes | None) -> bytes:
    """Set ``key`` to ``new`` (None deletes) only if its value is ``expected`` (None = absent)."""
    return pack(["cas", key, expected, new])


def encode_member(node: str, address: str, token: str | None = None, learner: bool = False) -> bytes:
    """Record ``node`` as a member at ``address``; ``token`` identifies its data directory (set by
    ``kv serve --join``), ``learner`` says it is to stay a learner (else it is promoted once caught up)."""
    return pack(["member", node, address, token, bool(learner)])


def encode_retire(node: str) -> bytes:
    """Record that ``node`` was removed from the cluster (its id is never reused by accident)."""
    return pack(["retire", node])


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key or len(key.encode()) > MAX_KEY_BYTES:
        raise BadCommand(f"a key must be a non-empty string of at most {MAX_KEY_BYTES} bytes")
    return key


def check_value(value: Any, *, optional: bool = False) -> bytes | None:
    if value is None and optional:
        return None
    if not isinstance(value, (bytes, bytearray)) or len(value) > MAX_VALUE_BYTES:
        raise BadCommand(f"a value must be bytes of at most {MAX_VALUE_BYTES} bytes")
    return bytes(value)


class KVStateMachine:
    """``dict[str, (value, revision)]``. Results: put -> revision; delete -> existed;
    cas -> ``[ok, current value, revision]``."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int]] = {}
        #: The member book: id -> (address, join token or None, stays a learner).
        self.members: dict[str, tuple[str, str | None, bool]] = {}
        #: Removed ids -> the log index of their removal.
        self.retired: dict[str, int] = {}

    def get(self, key: str) -> bytes | None:
        v = self.data.get(key)
        return None if v is None else v[0]

    def get_with_revision(self, key: str) -> tuple[bytes | None, int]:
        v = self.data.get(key)
        return (None, 0) if v is None else v

    def apply(self, command: bytes, index: int) -> Any:
        try:
            cmd = unpack(command)
            if not isinstance(cmd, list) or not cmd:
                raise BadCommand("a command is a non-empty list")
            op = cmd[0]
            if op == "put" and len(cmd) == 3:
                key, value = check_key(cmd[1]), check_value(cmd[2])
                assert value is not None
                self.data[key] = (value, index)
                return index
            if op == "del" and len(cmd) == 2:
                return self.data.pop(check_key(cmd[1]), None) is not None
            if op == "cas" and len(cmd) == 4:
                key = check_key(cmd[1])
                expected = check_value(cmd[2], optional=True)
                new = check_value(cmd[3], optional=True)
                cur = self.data.get(key)
                cur_val = None if cur is None else cur[0]
                if cur_val != expected:
                    return [False, cur_val, 0 if cur is None else cur[1]]
                if new is None:
                    self.data.pop(key, None)
                else:
                    self.data[key] = (new, index)
                return [True, new, index]
            if op == "member" and len(cmd) == 5:
                node, addr, token, learner = cmd[1:]
                if not isinstance(node, str) or not isinstance(addr, str) or not (
                        token is None or isinstance(token, str)) or not isinstance(learner, bool):
                    raise BadCommand("member: id and address are strings")
                self.members[node] = (addr, token, learner)
                self.retired.pop(node, None)
                return index
            if op == "retire" and len(cmd) == 2 and isinstance(cmd[1], str):
                self.members.pop(cmd[1], None)
                self.retired.setdefault(cmd[1], index)
                return index
            raise BadCommand(f"unknown command {op!r}")
        except (BadCommand, FrameError) as err:
            return ["error", str(err)]

    def snapshot(self) -> bytes:
        rows = sorted([k, v, r] for k, (v, r) in self.data.items())
        if not self.members and not self.retired:
            return pack(rows)  # the original format: a cluster that never used the member book
        return pack({"kv": rows, "members": sorted([n, a, t, lr] for n, (a, t, lr) in self.members.items()),
                     "retired": sorted([n, i] for n, i in self.retired.items())})

    def restore(self, data: bytes) -> None:
        obj = unpack(data)
        rows = obj["kv"] if isinstance(obj, dict) else obj
        self.data = {k: (bytes(v), r) for k, v, r in rows}
        self.members = {}
        self.retired = {}
        if isinstance(obj, dict):
            self.members = {n: (a, t, bool(lr)) for n, a, t, lr in obj.get("members", ())}
            self.retired = {n: i for n, i in obj.get("retired", ())}
