"""Frames: ``[version: u8][kind: u8][body: one msgpack object]``, length-prefixed on streams.

Every protocol in warpmesh (the mesh handshake, anti-entropy, Raft, Warp) speaks in these frames,
each with its own ``kind`` numbering. On a byte stream a frame travels as ``[length: u32 BE][frame]``.

Hostile input never raises out of a receive loop: :func:`decode_frame` raises a :class:`FrameError`
subclass that callers count and drop, and :class:`StreamDecoder` counts refusals itself. A length
prefix over the limit cannot be resynchronised, so it poisons the stream (the caller must close the
connection); an undecodable body inside a well-formed length is dropped and the stream goes on.

Bytes after a body's first msgpack object are ignored (ormsgpack does not report how much it read);
they cannot change what the body decodes to.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import ormsgpack

from warpmesh import PROTOCOL_VERSION
from warpmesh.errors import DecodeError

#: Default cap on one frame (16 MiB). Large enough for a chunk of a snapshot or a full CRDT state of
#: ~100k small entries; small enough that a hostile length prefix cannot make us allocate gigabytes.
DEFAULT_MAX_FRAME = 16 * 1024 * 1024

_LENGTH = struct.Struct(">I")
#: Bytes a fast-layout data frame adds to its payload: the frame header and a msgpack bin32 header
#: (the stream's length prefix is not counted in the frame limit).
DATA_OVERHEAD = 2 + 5
_HEADER = 2  # version byte + kind byte
_PACK_OPTS = ormsgpack.OPT_NON_STR_KEYS
_UNPACK_OPTS = ormsgpack.OPT_NON_STR_KEYS


class FrameError(DecodeError):
    """A frame was refused. ``reason`` is a short stable label used for counting."""

    reason = "invalid"


class FrameTooLarge(FrameError):
    """The frame (or its announced length) exceeds the configured limit."""

    reason = "too_large"


class FrameTruncated(FrameError):
    """The frame ended before its header or announced length was complete."""

    reason = "truncated"


class FrameUndecodable(FrameError):
    """The body is not valid msgpack (or not a type the protocol accepts)."""

    reason = "undecodable"


class UnsupportedVersion(FrameError):
    """The frame carries a protocol version this build does not speak."""

    reason = "unsupported_version"


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

    kind: int
    body: Any
    version: int = PROTOCOL_VERSION


@dataclass(slots=True)
class FrameStats:
    """Counts of accepted and refused frames, by refusal reason. Shared by a connection's decoders."""

    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)

    def refuse(self, err: FrameError) -> None:
        self.refused[err.reason] += 1

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


def pack(obj: Any) -> bytes:
    """Encode ``obj`` as msgpack (non-string map keys allowed). Raises ``TypeError`` if not encodable."""
    return ormsgpack.packb(obj, option=_PACK_OPTS)


def unpack(data: bytes | bytearray | memoryview) -> Any:
    """Decode one msgpack object. Raises :class:`FrameUndecodable` on malformed input."""
    try:
        return ormsgpack.unpackb(data, option=_UNPACK_OPTS)
    except (ValueError, TypeError, ormsgpack.MsgpackDecodeError) as err:
        raise FrameUndecodable(f"undecodable msgpack: {err}") from None


def encode_frame(kind: int, body: Any, *, version: int = PROTOCOL_VERSION) -> bytes:
    """Encode one frame (no length prefix). ``kind`` and ``version`` must fit in one byte."""
    if not 0 <= kind <= 0xFF or not 0 <= version <= 0xFF:
        raise ValueError(f"frame kind {kind} / version {version} must be in 0..255")
    return bytes((version, kind)) + pack(body)


def decode_frame(
    data: bytes | bytearray | memoryview,
    *,
    max_size: int = DEFAULT_MAX_FRAME,
    versions: frozenset[int] | tuple[int, ...] = (PROTOCOL_VERSION,),
) -> Frame:
    """Decode one frame; raise a :class:`FrameError` subclass if it must be refused."""
    n = len(data)
    if n > max_size:
        raise FrameTooLarge(f"frame of {n} bytes exceeds the {max_size}-byte limit")
    if n < _HEADER + 1:
        raise FrameTruncated(f"frame of {n} bytes is shorter than header plus body")
    version, kind = data[0], data[1]
    if version not in versions:
        raise UnsupportedVersion(f"protocol version {version} (this build speaks {sorted(versions)})")
    return Frame(kind=kind, body=unpack(bytes(data[_HEADER:])), version=version)


def length_prefixed(frame: bytes) -> bytes:
    """Prefix an encoded frame with its u32 big-endian length, for byte streams."""
    return _LENGTH.pack(len(frame)) + frame


class StreamDecoder:
    """Sans-I/O reassembly of length-prefixed frames from a byte stream.

    ``feed(data)`` returns the frames completed so far and counts refusals in ``stats``. After an
    oversize length prefix the stream cannot be resynchronised: ``broken`` is set, further input is
    ignored, and the caller should close the connection. ``eof()`` counts a truncated tail.

    The fast path, for a link that carries mostly opaque payloads: once ``data_kind`` is set,
    :meth:`feed_fast` returns a frame of that kind in the layout ``[version][kind][0xc6][u32 n][payload]``
    (a msgpack ``bin32`` body exactly filling the frame, as the TCP mesh writes DATA) as the payload
    ``bytes`` itself, sliced straight from
    the receive buffer: no msgpack call, no :class:`Frame`, one copy. Every other frame takes the
    general path and comes out as a :class:`Frame`; counting, limits and refusals are identical.
    """

    __slots__ = ("_buf", "broken", "data_kind", "max_size", "stats", "versions")

    def __init__(
        self,
        *,
        max_size: int = DEFAULT_MAX_FRAME,
        versions: frozenset[int] | tuple[int, ...] = (PROTOCOL_VERSION,),
        stats: FrameStats | None = None,
        data_kind: int | None = None,
    ) -> None:
        self.max_size = max_size
        self.versions = versions
        self.stats = stats if stats is not None else FrameStats()
        self.data_kind = data_kind
        self.broken: FrameError | None = None
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add ``data``; return the frames it completed (every item a :class:`Frame`)."""
        return self._feed(data, None)  # type: ignore[return-value]  # no data_kind: only Frames

    def feed_fast(self, data: bytes | bytearray | memoryview) -> list[Frame | bytes]:
        """Like :meth:`feed`, with ``data_kind`` frames in the fast layout returned as payload bytes."""
        return self._feed(data, self.data_kind)

    def _feed(self, data: bytes | bytearray | memoryview, data_kind: int | None) -> list[Frame | bytes]:
        if self.broken is not None:
            return []
        buf = self._buf
        buf += data
        out: list[Frame | bytes] = []
        pos = 0
        end = len(buf)
        max_size = self.max_size
        versions = self.versions
        stats = self.stats
        accepted = 0
        with memoryview(buf) as view:
            while end - pos >= 4:
                (length,) = _LENGTH.unpack_from(buf, pos)
                if length > max_size:
                    self.broken = FrameTooLarge(f"announced frame of {length} bytes exceeds {max_size}")
                    stats.refuse(self.broken)
                    pos = end
                    break
                start = pos + 4
                stop = start + length
                if stop > end:
                    break
                pos = stop
                if (data_kind is not None and length >= DATA_OVERHEAD and buf[start + 1] == data_kind
                        and buf[start + 2] == 0xC6 and buf[start] in versions
                        and _LENGTH.unpack_from(buf, start + 3)[0] == length - DATA_OVERHEAD):
                    out.append(bytes(view[start + DATA_OVERHEAD:stop]))
                    accepted += 1
                    continue
                try:
                    # Copy out: a memoryview kept alive by an exception's traceback would pin ``buf``.
                    frame = decode_frame(bytes(view[start:stop]), max_size=max_size, versions=versions)
                except FrameError as err:
                    stats.refuse(err)
                    continue
                accepted += 1
                out.append(frame)
        stats.accepted += accepted
        del buf[:pos]
        return out

    def eof(self) -> None:
        """The stream ended; a partial frame left in the buffer is counted as truncated."""
        if self._buf and self.broken is None:
            self.stats.refuse(FrameTruncated(f"stream ended inside a frame ({len(self._buf)} bytes)"))
        self._buf.clear()
