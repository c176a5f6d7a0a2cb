"""The wire side of the worker mesh (pure core): the objects protocol, memo entries, wasm.run jobs.

The objects protocol (msgpack lists on the mesh's objects channel; ``req`` is chosen by the
requester and echoed back)::

    GET    [1, req, max_bytes, [[kind, id], ...]]  -> OBJS  [2, req, [[size, data | nil], ...]]
    RANGE  [3, req, kind, id, offset, max_bytes]    -> CHUNK [4, req, size, offset, data]

``size`` is -1 for an object the holder does not have. ``data`` is nil for an object that did not
fit in the reply (whose payload the requester bounds with ``max_bytes``): the requester asks again,
or pulls it in ranges when it is larger than one frame.

A memo-board entry is ``[kind, id, size, publisher, inline bytes | nil]`` (msgpack, in an LWW
register keyed by the request key). A ``wasm.run`` job's args are built by :func:`wasm_task`.

No I/O, no asyncio: see :mod:`warpmesh.workers.mesh` for the runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from warpmesh.crdt import LWWRegister
from warpmesh.errors import DecodeError
from warpmesh.wire.frame import FrameError, pack, unpack
from warpmesh.workers.ids import ID_LEN, Kind, Ref
from warpmesh.workers.request import Limits

GET, OBJS, RANGE, CHUNK = 1, 2, 3, 4

#: Bytes reserved per reply for msgpack framing (list headers, ints) and per object entry.
FRAME_OVERHEAD = 64
ENTRY_OVERHEAD = 16
#: Smallest frame limit the protocol works with.
MIN_PAYLOAD = 8 * 1024


class ProtocolError(DecodeError):
    """A malformed objects-protocol frame."""


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def ref_of(kind: Any, oid: Any) -> Ref:
    if not is_int(kind) or kind not in (1, 2) or not isinstance(oid, bytes) or len(oid) != ID_LEN:
        raise ProtocolError("bad object ref")
    return Ref(Kind(kind), oid)


def decode_message(data: bytes, max_batch: int) -> list[Any]:
    """Decode and validate one objects-protocol frame; raises :class:`ProtocolError`."""
    try:
        msg = unpack(data)
    except FrameError as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None
    if not isinstance(msg, list) or len(msg) < 2 or not is_int(msg[0]) or not is_int(msg[1]) or msg[1] < 0:
        raise ProtocolError("frame is not [type, req, ...]")
    typ = msg[0]
    if typ == GET:
        if len(msg) != 4 or not is_int(msg[2]) or msg[2] < 0 or not isinstance(msg[3], list) \
                or not 0 < len(msg[3]) <= max_batch:
            raise ProtocolError("bad GET")
        items = []
        for it in msg[3]:
            if not isinstance(it, list) or len(it) != 2:
                raise ProtocolError("bad GET item")
            items.append(ref_of(it[0], it[1]))
        return [GET, msg[1], msg[2], items]
    if typ == OBJS:
        if len(msg) != 3 or not isinstance(msg[2], list):
            raise ProtocolError("bad OBJS")
        out = []
        for it in msg[2]:
            if not isinstance(it, list) or len(it) != 2 or not is_int(it[0]) or it[0] < -1 \
                    or not (it[1] is None or isinstance(it[1], bytes)):
                raise ProtocolError("bad OBJS item")
            out.append((it[0], it[1]))
        return [OBJS, msg[1], out]
    if typ == RANGE:
        if len(msg) != 6 or not is_int(msg[4]) or msg[4] < 0 or not is_int(msg[5]) or msg[5] < 1:
            raise ProtocolError("bad RANGE")
        return [RANGE, msg[1], ref_of(msg[2], msg[3]), msg[4], msg[5]]
    if typ == CHUNK:
        if len(msg) != 5 or not is_int(msg[2]) or msg[2] < -1 or not is_int(msg[3]) or msg[3] < 0 \
                or not isinstance(msg[4], bytes):
            raise ProtocolError("bad CHUNK")
        return [CHUNK, msg[1], msg[2], msg[3], msg[4]]
    raise ProtocolError(f"unknown frame type {typ}")


class MemoEntry(NamedTuple):
    """One memo-board entry: the result, who published it, and the bytes of a small blob result."""

    ref: Ref
    size: int
    by: str  # the publishing peer's id
    inline: bytes | None

    def to_wire(self) -> bytes:
        return pack([int(self.ref.kind), self.ref.id, self.size, self.by, self.inline])

    @classmethod
    def from_register(cls, reg: LWWRegister | None) -> MemoEntry | None:
        """Decode a board value; ``None`` for anything malformed (a hostile or buggy writer)."""
        if reg is None or reg.is_bottom() or not isinstance(reg.value, bytes):
            return None
        try:
            w = unpack(reg.value)
            if not isinstance(w, list) or len(w) != 5 or not is_int(w[2]) or w[2] < 0 \
                    or not isinstance(w[3], str) or not (w[4] is None or isinstance(w[4], bytes)):
                return None
            return cls(ref_of(w[0], w[1]), w[2], w[3], w[4])
        except (FrameError, ProtocolError):
            return None


@dataclass(frozen=True, slots=True)
class WasmTask:
    """A parsed ``wasm.run`` job: the module, inline args, args by reference, salt and limits."""

    module: bytes
    args: Mapping[str, Any]
    refs: Mapping[str, Ref]
    salt: bytes | str
    limits: Limits


def _id_of(value: Any, what: str) -> bytes:
    if isinstance(value, bytes) and len(value) == ID_LEN:
        return value
    if isinstance(value, str):
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if len(raw) == ID_LEN:
            return raw
    raise ValueError(f"{what} must be a {ID_LEN}-byte id (bytes or {2 * ID_LEN} hex digits), got {value!r:.80}")


def wasm_task(module: bytes | str, args: Mapping[str, Any] | None = None, *,
              refs: Mapping[str, Ref] | None = None, salt: bytes | str = b"",
              limits: Limits | None = None) -> dict[str, Any]:
    """The args of a ``wasm.run`` Warp job (what to pass to ``WarpNode.enqueue``).

    ``args`` are inline canonical values (bytes, str, int, nested mappings); ``refs`` name stored
    objects by reference (the executing peer fetches what it lacks: share them first with
    :meth:`WorkerMesh.share`). A name may appear in only one of the two.
    """
    wire: dict[str, Any] = {"module": _id_of(module, "module")}
    if args:
        wire["args"] = dict(args)
    if refs:
        wire["refs"] = {name: [int(r.kind), r.id] for name, r in refs.items()}
    if salt:
        wire["salt"] = salt
    if limits is not None and limits != Limits():
        wire["limits"] = [limits.fuel, limits.memory_bytes, limits.deadline_s]
    parse_task(wire)  # fail at the caller, not on a remote peer
    return wire


def parse_task(wire: Any) -> WasmTask:
    """Validate the args of a ``wasm.run`` job; raises ``ValueError`` naming what is wrong."""
    if not isinstance(wire, dict):
        raise ValueError("wasm.run args must be a map with at least 'module'")
    unknown = set(wire) - {"module", "args", "refs", "salt", "limits"}
    if unknown:
        raise ValueError(f"wasm.run args: unknown fields {sorted(map(str, unknown))}")
    module = _id_of(wire.get("module"), "module")
    args = wire.get("args") or {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise ValueError("wasm.run 'args' must be a map with string names")
    refs: dict[str, Ref] = {}
    raw_refs = wire.get("refs") or {}
    if not isinstance(raw_refs, dict):
        raise ValueError("wasm.run 'refs' must be a map of name -> [kind, id]")
    for name, value in raw_refs.items():
        if not isinstance(name, str) or not isinstance(value, list | tuple) or len(value) != 2:
            raise ValueError(f"wasm.run refs entry {name!r} must be [kind, id]")
        try:
            refs[name] = ref_of(value[0], value[1])
        except ProtocolError:
            raise ValueError(f"wasm.run refs entry {name!r}: kind must be 1 (blob) or 2 (tree) and the id "
                             f"{ID_LEN} bytes") from None
    both = set(args) & set(refs)
    if both:
        raise ValueError(f"wasm.run: {sorted(both)} given both inline and by reference")
    salt = wire.get("salt", b"")
    if not isinstance(salt, bytes | str):
        raise ValueError("wasm.run 'salt' must be bytes or str")
    limits = Limits()
    if wire.get("limits") is not None:
        lim = wire["limits"]
        if not isinstance(lim, list | tuple) or len(lim) != 3:
            raise ValueError("wasm.run 'limits' must be [fuel, memory_bytes, deadline_s]")
        limits = Limits(fuel=lim[0], memory_bytes=lim[1], deadline_s=float(lim[2]))
    return WasmTask(module, args, refs, salt, limits)
