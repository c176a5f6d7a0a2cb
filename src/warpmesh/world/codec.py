"""Byte formats of a replicated world (pure): Raft entries, snapshot-fetch frames, engine state.

Raft entries are msgpack lists whose first item is the entry kind:

* ``[INTENTS, origin, [intent bytes ...]]`` - intents submitted on ``origin``; many per entry;
* ``[TICK, n]`` - the boundary of tick ``n``: every intent committed since tick ``n - 1`` is in it;
* ``[REPORT, peer, n, commit, state_root, patch_digest]`` - what ``peer`` computed for tick ``n``;
* ``[REPORTS, peer, [[n, commit, state_root, patch_digest], ...]]`` - several ticks in one entry (a
  peer reports in tick order: its next entry is proposed once the previous one committed);
* ``[RESTORED, peer, n]`` - ``peer`` replaced its state with the majority's snapshot of tick ``n``.

A world snapshot is ``[tick, raft_index, snapshot fields, state]`` where the state lists every warp
instance with its nodes, edges and attachments in canonical (sorted) order, so equal states encode to
equal bytes. Decoding validates shapes and raises :class:`WorldCodecError`, never a bare exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warpmesh.engine import AtomPayload, Descend, EdgeRecord, GraphStore, NodeRecord, Snapshot
from warpmesh.engine.attachment import AttachmentKey, AttachmentValue
from warpmesh.engine.ident import Hash, NodeKey
from warpmesh.engine.state import WarpInstance, WarpState
from warpmesh.errors import WarpmeshError
from warpmesh.wire.frame import FrameError, pack, unpack

__all__ = [
    "INTENTS",
    "REPORT",
    "RESTORED",
    "TICK",
    "IntentsEntry",
    "ReportEntry",
    "ReportsEntry",
    "RestoredEntry",
    "TickEntry",
    "WorldCodecError",
    "WorldSnapshot",
    "decode_entry",
    "decode_snapshot",
    "decode_state",
    "encode_intents",
    "encode_report",
    "encode_reports",
    "encode_restored",
    "encode_snapshot",
    "encode_state",
    "encode_tick",
]

INTENTS = 1
TICK = 2
REPORT = 3
RESTORED = 4
REPORTS = 5


class WorldCodecError(WarpmeshError, ValueError):
    """Bytes that are not a valid world entry, frame or snapshot."""


@dataclass(frozen=True, slots=True)
class IntentsEntry:
    origin: str
    intents: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class TickEntry:
    tick: int


@dataclass(frozen=True, slots=True)
class ReportEntry:
    peer: str
    tick: int
    commit: bytes
    state_root: bytes
    patch_digest: bytes


@dataclass(frozen=True, slots=True)
class ReportsEntry:
    peer: str
    items: tuple[tuple[int, bytes, bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class RestoredEntry:
    peer: str
    tick: int


Entry = IntentsEntry | TickEntry | ReportEntry | ReportsEntry | RestoredEntry


def encode_intents(origin: str, intents: list[bytes]) -> bytes:
    return pack([INTENTS, origin, list(intents)])


def encode_tick(tick: int) -> bytes:
    return pack([TICK, tick])


def encode_report(peer: str, tick: int, commit: bytes, state_root: bytes, patch_digest: bytes) -> bytes:
    return pack([REPORT, peer, tick, commit, state_root, patch_digest])


def encode_reports(peer: str, items: list[tuple[int, bytes, bytes, bytes]]) -> bytes:
    return pack([REPORTS, peer, [list(i) for i in items]])


def encode_restored(peer: str, tick: int) -> bytes:
    return pack([RESTORED, peer, tick])


def _h(v: Any) -> bytes:
    if type(v) is not bytes or len(v) != 32:
        raise WorldCodecError("expected a 32-byte hash")
    return v


def _int(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise WorldCodecError("expected a non-negative integer")
    return v


def _str(v: Any) -> str:
    if type(v) is not str:
        raise WorldCodecError("expected a string")
    return v


def _unpack(data: bytes, what: str) -> Any:
    """msgpack-decode ``data``; undecodable bytes raise :class:`WorldCodecError` naming ``what``."""
    try:
        return unpack(data)
    except (FrameError, ValueError, TypeError) as err:
        raise WorldCodecError(f"undecodable {what}: {err}") from None


def decode_entry(data: bytes) -> Entry:
    """One Raft entry of a world; raises :class:`WorldCodecError` if malformed."""
    obj = _unpack(data, "world entry")
    if type(obj) is not list or not obj or type(obj[0]) is not int:
        raise WorldCodecError("a world entry is a list starting with its kind")
    kind = obj[0]
    if kind == INTENTS and len(obj) == 3 and type(obj[2]) is list:
        if not all(type(i) is bytes for i in obj[2]):
            raise WorldCodecError("intents must be bytes")
        return IntentsEntry(_str(obj[1]), tuple(obj[2]))
    if kind == TICK and len(obj) == 2:
        return TickEntry(_int(obj[1]))
    if kind == REPORT and len(obj) == 6:
        return ReportEntry(_str(obj[1]), _int(obj[2]), _h(obj[3]), _h(obj[4]), _h(obj[5]))
    if kind == REPORTS and len(obj) == 3 and type(obj[2]) is list and obj[2]:
        items = []
        for it in obj[2]:
            if type(it) is not list or len(it) != 4:
                raise WorldCodecError("a report is [tick, commit, state_root, patch_digest]")
            items.append((_int(it[0]), _h(it[1]), _h(it[2]), _h(it[3])))
        return ReportsEntry(_str(obj[1]), tuple(items))
    if kind == RESTORED and len(obj) == 3:
        return RestoredEntry(_str(obj[1]), _int(obj[2]))
    raise WorldCodecError(f"unknown world entry kind {kind} (or wrong arity)")


# ---------------------------------------------------------------------------------------------- state
def _att_obj(value: AttachmentValue | None) -> Any:
    if value is None:
        return None
    if type(value) is AtomPayload:
        return [1, value.type_id, value.data]
    return [2, value[0]]


def _att_val(obj: Any) -> AttachmentValue | None:
    if obj is None:
        return None
    if type(obj) is list and len(obj) == 3 and obj[0] == 1 and type(obj[2]) is bytes:
        return AtomPayload(_h(obj[1]), obj[2])  # type: ignore[arg-type]
    if type(obj) is list and len(obj) == 2 and obj[0] == 2:
        return Descend(_h(obj[1]))  # type: ignore[arg-type]
    raise WorldCodecError("bad attachment")


def state_obj(state: WarpState) -> list[Any]:
    """The state as a canonical msgpack-able list (sorted by raw ids)."""
    out = []
    for warp in sorted(state.instances):
        inst = state.instances[warp]
        store = state.stores[warp]
        parent = None if inst.parent is None else list(inst.parent)
        nodes = [[n, store.nodes[n].ty, _att_obj(store.node_attachments.get(n))] for n in sorted(store.nodes)]
        edges = []
        for eid in sorted(store.edge_index):
            rec = store.edges_from[store.edge_index[eid]][eid]
            edges.append([eid, rec.from_, rec.to, rec.ty, _att_obj(store.edge_attachments.get(eid))])
        out.append([warp, inst.root_node, parent, nodes, edges])
    return out


def encode_state(state: WarpState) -> bytes:
    return pack(state_obj(state))


def state_from_obj(obj: Any) -> WarpState:
    """Rebuild a :class:`WarpState` (through the store's own mutators, so its hash caches are right)."""
    if type(obj) is not list:
        raise WorldCodecError("a state is a list of warp instances")
    state = WarpState()
    try:
        for warp, root, parent, nodes, edges in obj:
            store = GraphStore(_h(warp))  # type: ignore[arg-type]
            for n, ty, att in nodes:
                store.insert_node(_h(n), NodeRecord(_h(ty)))  # type: ignore[arg-type]
                value = _att_val(att)
                if value is not None:
                    store.set_node_attachment(n, value)
            for eid, src, dst, ty, att in edges:
                store.upsert_edge(EdgeRecord(_h(eid), _h(src), _h(dst), _h(ty)))  # type: ignore[arg-type]
                value = _att_val(att)
                if value is not None:
                    store.set_edge_attachment(eid, value)
            key = None if parent is None else AttachmentKey(_int(parent[0]), _h(parent[1]),  # type: ignore[arg-type]
                                                            _h(parent[2]), _int(parent[3]))
            state.stores[warp] = store
            state.instances[warp] = WarpInstance(warp, _h(root), key)  # type: ignore[arg-type]
    except WorldCodecError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, WarpmeshError) as err:
        raise WorldCodecError(f"malformed state: {err!r}") from None
    return state


def decode_state(data: bytes) -> WarpState:
    obj = _unpack(data, "state")
    return state_from_obj(obj)


# ---------------------------------------------------------------------------------------------- snapshot
@dataclass(frozen=True, slots=True)
class WorldSnapshot:
    """A replica's world after tick ``tick`` (the tick entry at Raft index ``index``)."""

    tick: int
    index: int
    last: Snapshot | None
    state: WarpState
    #: The agreement's standing of every peer at ``index``: peer -> [status, since, last_tick], plus
    #: the counters under "" as [detected, repaired]. Lets a replica installed from this snapshot
    #: continue the verdicts exactly as the others do.
    standing: dict[str, list[int | str]] | None = None

    @property
    def commit(self) -> Hash | None:
        return None if self.last is None else self.last.hash


def _snap_obj(s: Snapshot | None) -> Any:
    if s is None:
        return None
    return [s.root[0], s.root[1], s.hash, s.state_root, list(s.parents), s.plan_digest, s.decision_digest,
            s.rewrites_digest, s.patch_digest, s.policy_id, s.tx]


def _snap_val(o: Any) -> Snapshot | None:
    if o is None:
        return None
    if type(o) is not list or len(o) != 11 or type(o[4]) is not list:
        raise WorldCodecError("bad engine snapshot")
    return Snapshot(NodeKey(_h(o[0]), _h(o[1])), _h(o[2]), _h(o[3]),  # type: ignore[arg-type]
                    tuple(_h(p) for p in o[4]), _h(o[5]), _h(o[6]), _h(o[7]), _h(o[8]),  # type: ignore[arg-type, misc]
                    _int(o[9]), _int(o[10]))


def encode_snapshot(snap: WorldSnapshot) -> bytes:
    return pack([snap.tick, snap.index, _snap_obj(snap.last), state_obj(snap.state), snap.standing])


def decode_snapshot(data: bytes) -> WorldSnapshot:
    """Raises :class:`WorldCodecError` on anything but a well-formed snapshot."""
    obj = _unpack(data, "snapshot")
    if type(obj) is not list or len(obj) != 5:
        raise WorldCodecError("a world snapshot is [tick, index, last, state, standing]")
    standing = obj[4]
    if standing is not None and (type(standing) is not dict
                                 or not all(type(k) is str and type(v) is list for k, v in standing.items())):
        raise WorldCodecError("bad agreement standing in snapshot")
    return WorldSnapshot(_int(obj[0]), _int(obj[1]), _snap_val(obj[2]), state_from_obj(obj[3]), standing)
