"""The key-value state machine: ``put``, ``delete``, ``cas`` (applied through Raft) and ``get``.

Pure and deterministic: commands are msgpack lists, results msgpack values. Keys are strings,
values bytes. Every write returns the log index it was applied at (the key's new *revision*).
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
            raise BadCommand(f"unknown command {op!r}")
        except (BadCommand, FrameError) as err:
            return ["error", str(err)]

    def snapshot(self) -> bytes:
        return pack(sorted([k, v, r] for k, (v, r) in self.data.items()))

    def restore(self, data: bytes) -> None:
        self.data = {k: (bytes(v), r) for k, v, r in unpack(data)}
