"""Raft messages and their wire encoding (``warpmesh.wire`` frames, kinds 0x01-0x0F of channel 0x20).

Every message carries ``frm`` and ``to`` (filled from the authenticated transport on receive, never
from the body) and ``term``. :func:`decode` validates every field (types, ranges, sizes,
contiguity) before the core sees it and raises :class:`BadMessage` with a stable ``gate`` label that
the runtime counts; nothing undecodable ever reaches :meth:`RaftCore.step`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from warpmesh.errors import DecodeError
from warpmesh.raft.membership import Membership
from warpmesh.raft.types import MAX_INDEX, MAX_TERM, Entry
from warpmesh.wire.frame import decode_frame, encode_frame

#: Longest node or client id accepted from the wire.
MAX_ID_BYTES = 256
#: Most entries / items accepted in one message (a hostile count cannot make us loop for long).
MAX_BATCH_ITEMS = 1 << 16


class BadMessage(DecodeError):
    """A frame that decodes but is not a valid Raft message. ``gate`` is a short stable label."""

    def __init__(self, gate: str, detail: str = "") -> None:
        super().__init__(f"{gate}: {detail}" if detail else gate)
        self.gate = gate


@dataclass(slots=True)
class Message:
    KIND: ClassVar[int] = 0
    frm: str
    to: str
    term: int


@dataclass(slots=True)
class AppendEntries(Message):
    """Leader → follower: entries after ``(prev_index, prev_term)`` and the leader's commit."""

    KIND: ClassVar[int] = 0x01
    prev_index: int = 0
    prev_term: int = 0
    commit: int = 0
    entries: list[Entry] = field(default_factory=list)


@dataclass(slots=True)
class AppendResponse(Message):
    """Follower → leader. Success: ``index`` is the follower's matched index. Reject: ``index`` is
    the rejected ``prev_index`` and ``(hint_index, hint_term)`` the fast-backup hint (etcd's
    findConflictByTerm): the follower's largest index <= ``prev_index`` whose term is <= the leader's
    ``prev_term``."""

    KIND: ClassVar[int] = 0x02
    index: int = 0
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@dataclass(slots=True)
class Heartbeat(Message):
    """Leader → follower: liveness, a safe commit index (<= the follower's known match), and a read
    round nonce (0 = a commit notice that needs no reply)."""

    KIND: ClassVar[int] = 0x03
    commit: int = 0
    round: int = 0


@dataclass(slots=True)
class HeartbeatResponse(Message):
    KIND: ClassVar[int] = 0x04
    round: int = 0


@dataclass(slots=True)
class VoteRequest(Message):
    """RequestVote, or PreVote when ``pre`` (whose ``term`` is the *proposed* term, not adopted)."""

    KIND: ClassVar[int] = 0x05
    last_index: int = 0
    last_term: int = 0
    pre: bool = False
    transfer: bool = False
    round: int = 0


@dataclass(slots=True)
class VoteResponse(Message):
    KIND: ClassVar[int] = 0x06
    granted: bool = False
    pre: bool = False
    round: int = 0


@dataclass(slots=True)
class TimeoutNow(Message):
    """Leadership transfer (dissertation §3.10): start an election now, skipping PreVote."""

    KIND: ClassVar[int] = 0x07


@dataclass(slots=True)
class SnapshotChunk(Message):
    """One chunk of InstallSnapshot: bytes ``[offset, offset+len(data))`` of a ``size``-byte snapshot."""

    KIND: ClassVar[int] = 0x08
    index: int = 0
    snap_term: int = 0
    membership: Membership = field(default_factory=lambda: Membership(frozenset()))
    size: int = 0
    offset: int = 0
    data: bytes = b""


@dataclass(slots=True)
class SnapshotResponse(Message):
    """Follower → leader: the next byte offset it wants of snapshot ``index`` (== size when done)."""

    KIND: ClassVar[int] = 0x09
    index: int = 0
    next_offset: int = 0
    done: bool = False


@dataclass(slots=True)
class Forward(Message):
    """Follower → leader: proposals made on the follower, each ``(data, client, seq, floor)``."""

    KIND: ClassVar[int] = 0x0A
    items: list[tuple[bytes, str, int, int]] = field(default_factory=list)


#: ForwardResponse statuses.
FWD_NOT_LEADER = 0
FWD_BUSY = 1
FWD_COMMITTED = 2


@dataclass(slots=True)
class ForwardResponse(Message):
    """Leader (or ex-leader) → proposer, only for items it did not append: ``(client, seq, status,
    index)``; status COMMITTED means the key was already committed at ``index``."""

    KIND: ClassVar[int] = 0x0B
    results: list[tuple[str, int, int, int]] = field(default_factory=list)
    leader_hint: str | None = None


@dataclass(slots=True)
class ReadRequest(Message):
    """Follower → leader: please confirm a read index for each request id (dissertation §6.4)."""

    KIND: ClassVar[int] = 0x0C
    ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class ReadResponse(Message):
    """Leader → follower: ``(id, index)``; index -1 means "I am not the leader, ask again"."""

    KIND: ClassVar[int] = 0x0D
    results: list[tuple[int, int]] = field(default_factory=list)
    leader_hint: str | None = None


# -- encoding ------------------------------------------------------------------------------------

def _enc_entries(entries: list[Entry]) -> list[Any]:
    return [(e[1], e[2], e[3]) if e[4] is None else e[1:] for e in entries]


def encode(m: Message) -> bytes:
    """Encode a message as one frame (``frm``/``to`` are not encoded: the transport knows them)."""
    k = m.KIND
    if k == 0x01:
        assert isinstance(m, AppendEntries)
        body: list[Any] = [m.term, m.prev_index, m.prev_term, m.commit, _enc_entries(m.entries)]
    elif k == 0x02:
        assert isinstance(m, AppendResponse)
        body = [m.term, m.index, m.reject, m.hint_index, m.hint_term]
    elif k == 0x03:
        assert isinstance(m, Heartbeat)
        body = [m.term, m.commit, m.round]
    elif k == 0x04:
        assert isinstance(m, HeartbeatResponse)
        body = [m.term, m.round]
    elif k == 0x05:
        assert isinstance(m, VoteRequest)
        body = [m.term, m.last_index, m.last_term, m.pre, m.transfer, m.round]
    elif k == 0x06:
        assert isinstance(m, VoteResponse)
        body = [m.term, m.granted, m.pre, m.round]
    elif k == 0x07:
        body = [m.term]
    elif k == 0x08:
        assert isinstance(m, SnapshotChunk)
        body = [m.term, m.index, m.snap_term, m.membership.encode(), m.size, m.offset, m.data]
    elif k == 0x09:
        assert isinstance(m, SnapshotResponse)
        body = [m.term, m.index, m.next_offset, m.done]
    elif k == 0x0A:
        assert isinstance(m, Forward)
        body = [m.term, [list(i) for i in m.items]]
    elif k == 0x0B:
        assert isinstance(m, ForwardResponse)
        body = [m.term, [list(r) for r in m.results], m.leader_hint]
    elif k == 0x0C:
        assert isinstance(m, ReadRequest)
        body = [m.term, m.ids]
    elif k == 0x0D:
        assert isinstance(m, ReadResponse)
        body = [m.term, [list(r) for r in m.results], m.leader_hint]
    else:  # pragma: no cover - programming error
        raise TypeError(f"cannot encode {type(m).__name__}")
    return encode_frame(k, body)


# -- decoding with validation --------------------------------------------------------------------

def _int(x: Any, what: str, hi: int = MAX_INDEX, lo: int = 0) -> int:
    if type(x) is not int or not lo <= x <= hi:
        raise BadMessage("field_range", f"{what}={x!r} outside [{lo}, {hi}]")
    return x


def _bool(x: Any, what: str) -> bool:
    if type(x) is not bool:
        raise BadMessage("field_type", f"{what} must be a bool")
    return x


def _bytes(x: Any, what: str) -> bytes:
    if not isinstance(x, (bytes, bytearray)):
        raise BadMessage("field_type", f"{what} must be bytes")
    return bytes(x)


def _id(x: Any, what: str) -> str:
    if not isinstance(x, str) or not 0 < len(x) <= MAX_ID_BYTES:
        raise BadMessage("field_type", f"{what} must be a non-empty id of <= {MAX_ID_BYTES} chars")
    return x


def _opt_id(x: Any, what: str) -> str | None:
    return None if x is None else _id(x, what)


def _list(x: Any, what: str, n: int | None = None) -> list[Any]:
    if not isinstance(x, (list, tuple)):
        raise BadMessage("field_type", f"{what} must be a list")
    if n is not None and len(x) != n:
        raise BadMessage("arity", f"{what} must have {n} fields, got {len(x)}")
    if len(x) > MAX_BATCH_ITEMS:
        raise BadMessage("too_many_items", f"{what} has {len(x)} items")
    return list(x)


_new_entry = tuple.__new__
_BAD_SHAPE = "entry must be a list of 3 or 6 fields"


def _dec_entries(raw: Any, prev_index: int, msg_term: int, prev_term: int) -> list[Entry]:
    # The hot path of every follower: checks are inlined (one Python call per entry, not ten).
    items = _list(raw, "entries")
    out: list[Entry] = []
    append = out.append
    index = prev_index
    last_term = prev_term
    for it in items:
        if type(it) is not list:
            raise BadMessage("entry_shape", _BAD_SHAPE)
        n = len(it)
        if n != 3 and n != 6:
            raise BadMessage("entry_shape", _BAD_SHAPE)
        index += 1
        term = it[0]
        if type(term) is not int or term > msg_term or term < last_term:
            raise BadMessage("entry_term", f"entry {index} term {term!r} not within [{last_term}, {msg_term}]")
        last_term = term
        kind = it[1]
        if type(kind) is not int or not 0 <= kind <= 2:
            raise BadMessage("field_range", f"entry.kind={kind!r} outside [0, 2]")
        data = it[2]
        if type(data) is not bytes:
            raise BadMessage("field_type", "entry.data must be bytes")
        if n == 3:
            append(_new_entry(Entry, (index, term, kind, data, None, 0, 0)))
        else:
            client, seq, floor = it[3], it[4], it[5]
            if type(client) is not str or not 0 < len(client) <= MAX_ID_BYTES:
                raise BadMessage("field_type", "entry.client must be a non-empty id")
            if type(seq) is not int or type(floor) is not int or not 0 <= seq <= MAX_INDEX \
                    or not 0 <= floor <= MAX_INDEX:
                raise BadMessage("field_range", "entry.seq/floor out of range")
            append(_new_entry(Entry, (index, term, kind, data, client, seq, floor)))
        if kind == 2:  # EntryKind.CONFIG
            try:
                Membership.from_bytes(data)
            except ValueError as err:
                raise BadMessage("entry_config", str(err)) from None
    if index > MAX_INDEX:
        raise BadMessage("field_range", "entry index overflows")
    return out


def decode(data: bytes, frm: str, to: str, *, max_size: int | None = None) -> Message:
    """Decode and validate one frame from ``frm``; raise :class:`BadMessage` or ``FrameError``."""
    frame = decode_frame(data) if max_size is None else decode_frame(data, max_size=max_size)
    try:
        return _decode_body(frame.kind, frame.body, frm, to)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        if isinstance(err, BadMessage):
            raise
        # A shape no explicit check anticipated: still a refusal, never an exception upward.
        raise BadMessage("malformed", f"{type(err).__name__}: {err}") from None


def _decode_body(k: int, b: Any, frm: str, to: str) -> Message:
    if not isinstance(b, (list, tuple)) or not b:
        raise BadMessage("body_shape", "body must be a non-empty list")
    term = _int(b[0], "term", MAX_TERM)
    if k == 0x01:
        _list(b, "AppendEntries", 5)
        prev_index = _int(b[1], "prev_index")
        prev_term = _int(b[2], "prev_term", MAX_TERM)
        if prev_term > term:
            raise BadMessage("entry_term", "prev_term above message term")
        commit = _int(b[3], "commit")
        return AppendEntries(frm, to, term, prev_index, prev_term, commit,
                             _dec_entries(b[4], prev_index, term, prev_term))
    if k == 0x02:
        _list(b, "AppendResponse", 5)
        return AppendResponse(frm, to, term, _int(b[1], "index"), _bool(b[2], "reject"),
                              _int(b[3], "hint_index"), _int(b[4], "hint_term", MAX_TERM))
    if k == 0x03:
        _list(b, "Heartbeat", 3)
        return Heartbeat(frm, to, term, _int(b[1], "commit"), _int(b[2], "round"))
    if k == 0x04:
        _list(b, "HeartbeatResponse", 2)
        return HeartbeatResponse(frm, to, term, _int(b[1], "round"))
    if k == 0x05:
        _list(b, "VoteRequest", 6)
        return VoteRequest(frm, to, term, _int(b[1], "last_index"), _int(b[2], "last_term", MAX_TERM),
                           _bool(b[3], "pre"), _bool(b[4], "transfer"), _int(b[5], "round"))
    if k == 0x06:
        _list(b, "VoteResponse", 4)
        return VoteResponse(frm, to, term, _bool(b[1], "granted"), _bool(b[2], "pre"), _int(b[3], "round"))
    if k == 0x07:
        _list(b, "TimeoutNow", 1)
        return TimeoutNow(frm, to, term)
    if k == 0x08:
        _list(b, "SnapshotChunk", 7)
        index = _int(b[1], "index")
        snap_term = _int(b[2], "snap_term", MAX_TERM)
        if snap_term > term:
            raise BadMessage("snapshot_meta", "snapshot term above message term")
        try:
            membership = Membership.decode(b[3])
        except ValueError as err:
            raise BadMessage("snapshot_meta", str(err)) from None
        size = _int(b[4], "size")
        offset = _int(b[5], "offset")
        chunk = _bytes(b[6], "data")
        if offset + len(chunk) > size:
            raise BadMessage("snapshot_chunk", "chunk extends past the snapshot size")
        if index == 0:
            raise BadMessage("snapshot_meta", "snapshot index 0")
        return SnapshotChunk(frm, to, term, index, snap_term, membership, size, offset, chunk)
    if k == 0x09:
        _list(b, "SnapshotResponse", 4)
        return SnapshotResponse(frm, to, term, _int(b[1], "index"), _int(b[2], "next_offset"),
                                _bool(b[3], "done"))
    if k == 0x0A:
        _list(b, "Forward", 2)
        items = []
        for it in _list(b[1], "items"):
            it = _list(it, "item", 4)
            items.append((_bytes(it[0], "data"), _id(it[1], "client"), _int(it[2], "seq", lo=1),
                          _int(it[3], "floor")))
        return Forward(frm, to, term, items)
    if k == 0x0B:
        _list(b, "ForwardResponse", 3)
        results = []
        for r in _list(b[1], "results"):
            r = _list(r, "result", 4)
            results.append((_id(r[0], "client"), _int(r[1], "seq"), _int(r[2], "status", 2),
                            _int(r[3], "index")))
        return ForwardResponse(frm, to, term, results, _opt_id(b[2], "leader_hint"))
    if k == 0x0C:
        _list(b, "ReadRequest", 2)
        return ReadRequest(frm, to, term, [_int(i, "read id") for i in _list(b[1], "ids")])
    if k == 0x0D:
        _list(b, "ReadResponse", 3)
        reads: list[tuple[int, int]] = []
        for r in _list(b[1], "results"):
            r = _list(r, "result", 2)
            reads.append((_int(r[0], "read id"), _int(r[1], "index", lo=-1)))
        return ReadResponse(frm, to, term, reads, _opt_id(b[2], "leader_hint"))
    raise BadMessage("unknown_kind", f"kind {k:#x}")
