"""``TurnSequencer[A]``: typed actions in one agreed order on every peer (the seed's game facade).

Any peer proposes an action; every peer sees the same sequence of :class:`Committed` turns, each
action exactly once even when a proposal was retried under the same key after a leader change, and a
:class:`Reset` whenever its replica must restart from a snapshot.

    seq: TurnSequencer[int] = TurnSequencer(node)     # msgpack by default; any Serializer works
    turn = await seq.propose(7)                       # IndexedAction(index, action, key, turn)
    async for event in seq.events():                  # on every peer, in the same order
        match event:
            case Committed(turn): apply(turn.turn, turn.action)
            case Reset(state, index): restore(state)
            case SystemRecord(): ...                  # seat changes etc. (see ``system``)

``turn`` numbers are 1-based and contiguous (a no-op, configuration entry, duplicate or system record
takes a Raft index but no turn), and survive snapshots. Publish your game state now and then with
:meth:`TurnSequencer.publish_snapshot`; the sequencer adds its dedup table, turn counter and system
state to it, so exactly-once and numbering survive compaction.

System records: a command whose first byte is :data:`SYSTEM_PREFIX` (0xC1, a byte msgpack never
emits) carries a record of the layer above (a game session's seat changes). Such records are fed to
the ``system`` state object (``apply``/``to_obj``/``from_obj``), snapshotted with it, and reported
as :class:`SystemRecord` events; a custom serializer must not emit that first byte.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from warpmesh.raft.errors import RaftError
from warpmesh.raft.runtime import CommittedEntry, CommittedInstall, RaftNode
from warpmesh.raft.sessions import SessionTable, Verdict
from warpmesh.raft.types import DedupKey
from warpmesh.wire.frame import pack, unpack

A = TypeVar("A")
#: First byte of a system record (msgpack never produces 0xC1).
SYSTEM_PREFIX = b"\xc1"


class Serializer(Protocol[A]):  # type: ignore[misc]
    """How actions become log commands and back."""

    def dumps(self, action: A) -> bytes: ...

    def loads(self, data: bytes) -> A: ...


class MsgpackSerializer:
    """The default serializer: any msgpack-able value (ints, strings, lists, dicts, bytes)."""

    def dumps(self, action: Any) -> bytes:
        return pack(action)

    def loads(self, data: bytes) -> Any:
        return unpack(data)


class SystemState(Protocol):
    """Replicated state of the layer above, driven by system records (e.g. a game's seats)."""

    def apply(self, record: Any) -> None: ...

    def to_obj(self) -> Any: ...


class SnapshotFormatError(RaftError, ValueError):
    """A snapshot that was not written by :meth:`TurnSequencer.publish_snapshot`."""


@dataclass(frozen=True, slots=True)
class IndexedAction(Generic[A]):
    """An action, the Raft ``index`` it was committed at and its 1-based contiguous ``turn``."""

    index: int
    action: A
    key: DedupKey | None
    turn: int = 0


@dataclass(frozen=True, slots=True)
class Committed(Generic[A]):
    """One committed turn."""

    turn: IndexedAction[A]


@dataclass(frozen=True, slots=True)
class Reset:
    """Restart your state from ``state`` (what you passed to ``publish_snapshot``) at ``index``;
    ``turn`` is the last turn the state includes and ``system`` the restored system state."""

    state: bytes
    index: int
    turn: int = 0
    system: Any = None


@dataclass(frozen=True, slots=True)
class SystemRecord:
    """A system record committed at ``index``; ``state`` is the system state after it."""

    index: int
    record: Any
    state: Any


TurnEvent = Committed[Any] | Reset | SystemRecord


class TurnSequencer(Generic[A]):
    """Turn order over ``node``; see the module docstring.

    ``client_id`` names this proposer in the dedup table; pass a stable one (with explicit keys) to
    make retries exactly-once across restarts. The default is random per instance: two sequencers,
    or two incarnations of one process, never share a client id (deriving it from ``id(self)``
    could, and a colliding id silently swallows the newer incarnation's turns as duplicates).
    """

    def __init__(self, node: RaftNode, serializer: Serializer[A] | None = None, *,
                 client_id: str | None = None,
                 system: Callable[[Any], SystemState] | None = None) -> None:
        self.node = node
        self.serializer: Serializer[A] = serializer if serializer is not None else MsgpackSerializer()
        self.client_id = client_id or f"{node.id}/turns/{os.urandom(8).hex()}"
        self._system_factory = system
        self._sessions = SessionTable()
        self._turn = 0
        self._system: SystemState | None = system(None) if system is not None else None
        self._seq = 0
        self._outstanding: dict[int, None] = {}

    @property
    def turn(self) -> int:
        """The last turn number an :meth:`events` iterator of this sequencer delivered."""
        return self._turn

    def _key(self) -> DedupKey:
        self._seq += 1
        self._outstanding[self._seq] = None
        return DedupKey(self.client_id, self._seq, next(iter(self._outstanding)))

    async def propose(self, action: A, *, key: DedupKey | None = None,
                      timeout: float | None = None) -> IndexedAction[A]:
        """Commit ``action``; returns it with its Raft index (``turn`` is 0 here: the turn number is
        assigned when the entry is applied, see :meth:`events`). Pass ``key`` (client, seq, floor)
        to make a retry of the same action after a crash apply once."""
        data = self.serializer.dumps(action)
        if data[:1] == SYSTEM_PREFIX:
            raise ValueError("a serialized action must not start with the system prefix 0xC1")
        index, key = await self._propose(data, key, timeout)
        return IndexedAction(index, action, key)

    async def propose_system(self, record: Any, *, key: DedupKey | None = None,
                             timeout: float | None = None) -> int:
        """Commit a system record (msgpack-able); returns its Raft index."""
        index, _ = await self._propose(SYSTEM_PREFIX + pack(record), key, timeout)
        return index

    async def _propose(self, data: bytes, key: DedupKey | None,
                       timeout: float | None) -> tuple[int, DedupKey]:
        own = key is None
        if key is None:
            key = self._key()
        try:
            index, _ = await self.node.propose(data, key=key, timeout=timeout)
        finally:
            if own:
                self._outstanding.pop(key.seq, None)
        return index, key

    async def events(self, from_index: int = 1) -> AsyncIterator[TurnEvent]:
        """Every turn from ``from_index`` on (a :class:`Reset` first if that is compacted away),
        then live turns. Duplicated proposals are delivered once. Turn numbers are only complete
        when reading from index 1 or from a snapshot."""
        sessions = SessionTable()
        turn = 0
        factory = self._system_factory
        system = factory(None) if factory is not None else None
        async for item in self.node.committed_from(from_index):
            if isinstance(item, CommittedInstall):
                try:
                    state, table, turn, sys_obj = unpack(item.snapshot.data)
                except (ValueError, TypeError) as err:
                    raise SnapshotFormatError(f"snapshot at {item.index} is not a TurnSequencer "
                                              f"snapshot: {err}") from err
                sessions = SessionTable.from_obj(table)
                system = factory(sys_obj) if factory is not None else None
                self._sessions, self._turn, self._system = sessions, turn, system
                yield Reset(bytes(state), item.index, turn, system)
            elif isinstance(item, CommittedEntry):
                if item.key is not None:
                    verdict, _ = sessions.check(item.key)
                    # EXPIRED means "a client this table never saw, past its first request": a
                    # reader that started mid-log sees exactly that, and must not drop the turn.
                    if verdict not in (Verdict.APPLY, Verdict.EXPIRED):
                        continue
                    sessions.record(item.key, item.index)
                self._sessions = sessions
                data = item.data
                if data[:1] == SYSTEM_PREFIX:
                    record = unpack(data[1:])
                    view = None
                    if system is not None and factory is not None:
                        system.apply(record)
                        view = factory(system.to_obj())  # a copy: later records must not change it
                    self._system = system
                    yield SystemRecord(item.index, record, view)
                    continue
                turn += 1
                self._turn = turn
                yield Committed(IndexedAction(item.index, self.serializer.loads(data), item.key, turn))

    def publish_snapshot(self, index: int, state: bytes) -> bool:
        """Your state after applying Raft index ``index`` (call it right after handling that
        event, so the dedup table, turn counter and system state match it)."""
        sys_obj = self._system.to_obj() if self._system is not None else None
        return self.node.publish_snapshot(index, pack([state, self._sessions.to_obj(), self._turn, sys_obj]))
