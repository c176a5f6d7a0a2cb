"""Echo's DIND file formats: ``.eintlog`` intent logs and ``EINT`` intent envelopes (reference §3.5).

``.eintlog`` = 48-byte header ``"ELOG" ‖ u16le(version=1) ‖ u16le(flags=0) ‖ schema_hash(32) ‖ 8×00``, then
frames ``u32le(len) ‖ payload``. A payload is normally an ``EINT`` envelope
``"EINT" ‖ u32le(op_id) ‖ u32le(vars_len) ‖ vars``; logs may also carry junk payloads on purpose (the
kernel must treat them deterministically), so frames are returned raw.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from warpmesh.errors import DecodeError

__all__ = ["SCHEMA_HASH", "EintLog", "EintLogError", "pack_intent", "parse_eintlog", "read_eintlog", "unpack_intent"]

#: The schema hash every DIND log of Echo's kernel carries.
SCHEMA_HASH = bytes.fromhex("0427e9fd236e92dfc8c0765f7bd429fc233bfbfab3cb67c9d03b22a0f31e7f8a")
HEADER_LEN = 48
#: Refuse absurd frames instead of allocating them (Echo's logs hold frames of a few bytes).
MAX_FRAME = 16 * 1024 * 1024


class EintLogError(DecodeError):
    """The file is not a valid ``.eintlog``."""


@dataclass(frozen=True)
class EintLog:
    """A parsed log: header fields and the raw frame payloads in order."""

    version: int
    flags: int
    schema_hash: bytes
    frames: tuple[bytes, ...]


def parse_eintlog(data: bytes, name: str = "log") -> EintLog:
    """Parse ``.eintlog`` bytes; raises :class:`EintLogError` naming the first problem."""
    if len(data) < HEADER_LEN:
        raise EintLogError(f"{name}: {len(data)} bytes is shorter than the 48-byte ELOG header")
    if data[:4] != b"ELOG":
        raise EintLogError(f"{name}: not an .eintlog file (magic {data[:4]!r}, expected b'ELOG')")
    version, flags = struct.unpack_from("<HH", data, 4)
    if version != 1:
        raise EintLogError(f"{name}: unsupported ELOG version {version} (this reader knows version 1)")
    schema = data[8:40]
    frames: list[bytes] = []
    off = HEADER_LEN
    while off < len(data):
        if off + 4 > len(data):
            raise EintLogError(f"{name}: truncated frame length at byte {off}")
        (n,) = struct.unpack_from("<I", data, off)
        off += 4
        if n > MAX_FRAME or off + n > len(data):
            raise EintLogError(f"{name}: frame {len(frames)} at byte {off - 4} claims {n} bytes, "
                               f"{len(data) - off} remain (truncated or corrupt)")
        frames.append(data[off:off + n])
        off += n
    return EintLog(version, flags, schema, tuple(frames))


def read_eintlog(path: str | Path) -> EintLog:
    """Read and parse an ``.eintlog`` file."""
    p = Path(path)
    return parse_eintlog(p.read_bytes(), p.name)


def unpack_intent(payload: bytes) -> tuple[int, bytes] | None:
    """``(op_id, vars)`` of an ``EINT`` envelope, or None if ``payload`` is not exactly one envelope."""
    if len(payload) < 12 or payload[:4] != b"EINT":
        return None
    op_id, vars_len = struct.unpack_from("<II", payload, 4)
    if len(payload) != 12 + vars_len:
        return None
    return op_id, payload[12:]


def pack_intent(op_id: int, vars_: bytes) -> bytes:
    """Build an ``EINT`` envelope."""
    return b"EINT" + struct.pack("<II", op_id, len(vars_)) + vars_
