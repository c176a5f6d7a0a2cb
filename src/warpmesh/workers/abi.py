"""Guest ABI v1: the binary encoding of host operations (see docs/guest-abi.md).

A guest imports two functions from module ``warpmesh_abi_v1``::

    call(op: i32, ptr: i32, len: i32) -> i32   run op on request bytes [ptr, ptr+len)
    read(ptr: i32, cap: i32) -> i32            copy the pending response to ptr

``call`` returns ``n >= 0`` on success (an ``n``-byte response is pending; ``n`` may be 0) or
``-n`` on failure (an ``n``-byte UTF-8 error message ``"<code>: <text>"`` is pending). Bad requests
are answered with errors, never traps. All integers are little-endian (wasm's own byte order).

This module is the pure codec shared by the isolate host and by tests; it never touches memory.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from warpmesh.errors import DecodeError
from warpmesh.workers.ids import ID_LEN, Kind, Ref
from warpmesh.workers.tree import TreeEntry, TreeError, check_name

IMPORT_MODULE = "warpmesh_abi_v1"
ENTRY_EXPORT = "warpmesh_run"
MEMORY_EXPORT = "memory"

#: Largest request a guest may pass to one ``call`` (bytes).
MAX_REQUEST = 64 * 1024 * 1024
#: Most elements in one ``run_many`` and most entries in one tree.
MAX_ITEMS = 1_000_000


class Op(IntEnum):
    """Host operation numbers (the ``op`` argument of ``call``)."""

    JOB = 1
    GET = 2
    PUT_BLOB = 3
    PUT_TREE = 4
    TREE = 5
    RUN = 6
    RUN_MANY = 7
    OUT = 8
    LOG = 9


class WorkerKind(IntEnum):
    WASM = 1
    OP = 2


class ArgsMode(IntEnum):
    INLINE = 1
    TREE = 2


class OutMode(IntEnum):
    BLOB = 1
    TREE = 2
    INLINE_BLOB = 3


class AbiError(DecodeError):
    """A malformed request. ``code`` is the stable prefix the guest sees."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


# entry: kind u8 | name_len u16 | id[32] | size u64 | name
_ENTRY = struct.Struct("<BH32sQ")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_GET_RANGE = struct.Struct("<32sQI")
# job response header: abi u32 | depth u32 | worker_kind u8 | worker id | args id | salt id | count u32
_JOB_HEAD = struct.Struct("<IIB32s32s32sI")
# a result ref: kind u8 | id[32] | size u64
_RESULT = struct.Struct("<B32sQ")
_ERR_HEAD = struct.Struct("<BI")

# Enum members as plain constants for the decoders, which run on every host call (an enum class
# attribute access or a lookup by value costs ~0.2-0.5 µs in CPython 3.11).
_WK_WASM, _WK_OP = int(WorkerKind.WASM), int(WorkerKind.OP)
_WK = {_WK_WASM: WorkerKind.WASM, _WK_OP: WorkerKind.OP}
_ARGS_INLINE, _ARGS_TREE = int(ArgsMode.INLINE), int(ArgsMode.TREE)
_OUT_INLINE = int(OutMode.INLINE_BLOB)
_OUT_MODES = {int(m): m for m in OutMode}


class SizedEntry(NamedTuple):
    """A tree entry as the ABI lists it: with the size of the named object in bytes."""

    name: str
    kind: Kind
    id: bytes
    size: int


class RunSpec(NamedTuple):
    """One decoded ``run`` request: the worker and its args (inline entries or an existing tree)."""

    worker_kind: WorkerKind
    worker: bytes | str  # module id, or "name@version"
    args_entries: tuple[TreeEntry, ...] | None
    args_tree: bytes | None


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if self.pos + n > len(self.buf):
            raise AbiError(f"request truncated: {what} needs {n} bytes at offset {self.pos}, "
                           f"{len(self.buf) - self.pos} left")

    def u8(self, what: str) -> int:
        self.need(1, what)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u32(self, what: str) -> int:
        self.need(4, what)
        v: int = _U32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return v

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v

    def entries(self, what: str) -> tuple[TreeEntry, ...]:
        count = self.u32(f"{what} count")
        if count > MAX_ITEMS:
            raise AbiError(f"{what}: {count} entries is over the limit of {MAX_ITEMS}")
        buf = self.buf
        pos = self.pos
        size = len(buf)
        unpack = _ENTRY.unpack_from
        blob, tree = Kind.BLOB, Kind.TREE
        out = []
        for i in range(count):
            if pos + 43 > size:
                raise AbiError(f"request truncated: {what} entry {i} needs 43 bytes at offset {pos}")
            kind, name_len, oid, _size = unpack(buf, pos)
            pos += 43
            end = pos + name_len
            if end > size:
                raise AbiError(f"request truncated: {what} entry {i} name needs {name_len} bytes at offset {pos}")
            raw = buf[pos:end]
            pos = end
            try:
                check_name(raw)
            except TreeError as exc:
                raise AbiError(f"{what} entry {i}: {exc}") from None
            if kind == 1:
                out.append(TreeEntry(raw.decode("utf-8"), blob, oid))
            elif kind == 2:
                out.append(TreeEntry(raw.decode("utf-8"), tree, oid))
            else:
                raise AbiError(f"{what} entry {i}: kind must be 1 (blob) or 2 (tree), got {kind}")
        self.pos = pos
        return tuple(out)

    def end(self, what: str) -> None:
        if self.pos != len(self.buf):
            raise AbiError(f"{what}: {len(self.buf) - self.pos} unexpected trailing bytes")


def encode_entries(entries: list[SizedEntry] | tuple[SizedEntry, ...]) -> bytes:
    parts = [_U32.pack(len(entries))]
    for e in entries:
        raw = e.name.encode("utf-8")
        parts.append(_ENTRY.pack(int(e.kind), len(raw), e.id, e.size))
        parts.append(raw)
    return b"".join(parts)


def encode_request_entries(entries: list[TreeEntry] | tuple[TreeEntry, ...]) -> bytes:
    """Encode entries for a request (sizes are ignored by the host and written as 0)."""
    return encode_entries([SizedEntry(e.name, e.kind, e.id, 0) for e in entries])


# -- requests (decoded by the host) ------------------------------------------------------------


def decode_id(req: bytes, what: str) -> bytes:
    if len(req) != ID_LEN:
        raise AbiError(f"{what}: request must be a {ID_LEN}-byte id, got {len(req)} bytes")
    return req


def decode_get(req: bytes) -> tuple[bytes, int, int | None]:
    """``get``: an id, optionally with ``offset u64`` and ``max_len u32``."""
    if len(req) == ID_LEN:
        return req, 0, None
    if len(req) == _GET_RANGE.size:
        oid, offset, max_len = _GET_RANGE.unpack(req)
        return oid, offset, max_len
    raise AbiError(f"get: request must be 32 bytes (id) or 44 bytes (id, offset u64, max_len u32), "
                   f"got {len(req)}")


def decode_put_tree(req: bytes) -> tuple[TreeEntry, ...]:
    r = _Reader(req)
    entries = r.entries("put_tree")
    r.end("put_tree")
    return entries


def _decode_run(r: _Reader, what: str) -> RunSpec:
    wk = r.u8(f"{what} worker kind")
    if wk == _WK_WASM:
        worker: bytes | str = r.take(ID_LEN, f"{what} module id")
    elif wk == _WK_OP:
        (n,) = _U16.unpack(r.take(2, f"{what} op name length"))
        raw = r.take(n, f"{what} op name")
        try:
            worker = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise AbiError(f"{what}: op name is not UTF-8") from None
        if not worker:
            raise AbiError(f"{what}: op name is empty")
    else:
        raise AbiError(f"{what}: worker kind must be 1 (wasm) or 2 (op), got {wk}")
    mode = r.u8(f"{what} args mode")
    if mode == _ARGS_INLINE:
        return RunSpec(_WK[wk], worker, r.entries(f"{what} args"), None)
    if mode == _ARGS_TREE:
        return RunSpec(_WK[wk], worker, None, r.take(ID_LEN, f"{what} args tree id"))
    raise AbiError(f"{what}: args mode must be 1 (inline entries) or 2 (tree id), got {mode}")


def decode_run(req: bytes) -> RunSpec:
    r = _Reader(req)
    spec = _decode_run(r, "run")
    r.end("run")
    return spec


def decode_run_many(req: bytes) -> list[RunSpec]:
    r = _Reader(req)
    count = r.u32("run_many count")
    if count > MAX_ITEMS:
        raise AbiError(f"run_many: {count} requests is over the limit of {MAX_ITEMS}")
    specs = [_decode_run(r, f"run_many[{i}]") for i in range(count)]
    r.end("run_many")
    return specs


def decode_out(req: bytes) -> tuple[OutMode, bytes]:
    """``out``: mode 1/2 + id (a stored blob/tree), or mode 3 + inline blob bytes."""
    if not req:
        raise AbiError("out: empty request (expected a mode byte)")
    mode = req[0]
    if mode == _OUT_INLINE:
        return _OUT_MODES[mode], req[1:]
    if mode in _OUT_MODES:
        if len(req) != 1 + ID_LEN:
            raise AbiError(f"out: mode {mode} takes a 32-byte id, got {len(req) - 1} bytes")
        return _OUT_MODES[mode], req[1:]
    raise AbiError(f"out: mode must be 1 (blob id), 2 (tree id) or 3 (inline blob), got {mode}")


# -- responses (encoded by the host) -----------------------------------------------------------


def encode_job(depth: int, worker_kind: WorkerKind, worker_id: bytes, args: bytes, salt: bytes,
               entries: list[SizedEntry] | tuple[SizedEntry, ...]) -> bytes:
    head = _JOB_HEAD.pack(1, depth, int(worker_kind), worker_id, args, salt, len(entries))
    return head + encode_entries(entries)[4:]


def encode_job_parts(depth: int, worker_kind: WorkerKind, worker_id: bytes, args: bytes, salt: bytes,
                     count: int, encoded_entries: bytes) -> bytes:
    """:func:`encode_job` from the args entries already encoded (``encode_entries(entries)[4:]``)."""
    return _JOB_HEAD.pack(1, depth, int(worker_kind), worker_id, args, salt, count) + encoded_entries


def encode_result(ref: Ref, size: int) -> bytes:
    return _RESULT.pack(int(ref.kind), ref.id, size)


def encode_run_many(results: list[tuple[Ref, int] | str]) -> bytes:
    parts = [_U32.pack(len(results))]
    for item in results:
        if isinstance(item, str):
            msg = item.encode("utf-8", "replace")
            parts.append(_ERR_HEAD.pack(1, len(msg)))
            parts.append(msg)
        else:
            parts.append(b"\x00")
            parts.append(_RESULT.pack(int(item[0].kind), item[0].id, item[1]))
    return b"".join(parts)


# -- the guest side, for tests and Python tooling ------------------------------------------------


def encode_run(worker: bytes | str, args: list[TreeEntry] | tuple[TreeEntry, ...] | bytes) -> bytes:
    """Encode a ``run`` request (also one element of ``run_many``)."""
    if isinstance(worker, bytes):
        head = bytes([WorkerKind.WASM]) + worker
    else:
        raw = worker.encode("utf-8")
        head = bytes([WorkerKind.OP]) + _U16.pack(len(raw)) + raw
    if isinstance(args, bytes):
        return head + bytes([ArgsMode.TREE]) + args
    return head + bytes([ArgsMode.INLINE]) + encode_request_entries(args)


def encode_run_many_request(items: list[bytes]) -> bytes:
    return _U32.pack(len(items)) + b"".join(items)


def decode_entries(buf: bytes) -> list[SizedEntry]:
    """Decode a ``tree`` response."""
    (count,) = _U32.unpack_from(buf, 0)
    pos = 4
    out = []
    for _ in range(count):
        kind, n, oid, size = _ENTRY.unpack_from(buf, pos)
        pos += _ENTRY.size
        out.append(SizedEntry(buf[pos : pos + n].decode("utf-8"), Kind(kind), oid, size))
        pos += n
    return out


def decode_result(buf: bytes) -> tuple[Ref, int]:
    kind, oid, size = _RESULT.unpack(buf)
    return Ref(Kind(kind), oid), size


def decode_run_many_response(buf: bytes) -> list[tuple[Ref, int] | str]:
    (count,) = _U32.unpack_from(buf, 0)
    pos = 4
    out: list[tuple[Ref, int] | str] = []
    for _ in range(count):
        if buf[pos] == 0:
            kind, oid, size = _RESULT.unpack_from(buf, pos + 1)
            out.append((Ref(Kind(kind), oid), size))
            pos += 1 + _RESULT.size
        else:
            _, n = _ERR_HEAD.unpack_from(buf, pos)
            pos += _ERR_HEAD.size
            out.append(buf[pos : pos + n].decode("utf-8"))
            pos += n
    return out
