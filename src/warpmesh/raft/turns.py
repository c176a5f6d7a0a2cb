"""``TurnSequencer``: typed actions in one agreed order on every peer (the seed's game facade).

Any peer proposes an action (any msgpack-able value); every peer sees the same sequence of
:class:`Committed` turns, each action exactly once even when a proposal was retried under the same
key after a leader change, and a :class:`Reset` whenever its replica must restart from a snapshot.

    seq = TurnSequencer(node)
    turn = await seq.propose({"move": "e4"})          # IndexedAction(index, action, key)
    async for event in seq.events():                  # on every peer, in the same order
        match event:
            case Committed(turn): apply(turn.action)
            case Reset(state, index): restore(state)

Publish your game state now and then with :meth:`TurnSequencer.publish_snapshot` (the sequencer
adds its dedup table to it, so exactly-once survives compaction).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from warpmesh.raft.runtime import CommittedEntry, CommittedInstall, RaftNode
from warpmesh.raft.sessions import SessionTable, Verdict
from warpmesh.raft.types import DedupKey
from warpmesh.wire.frame import pack, unpack


@dataclass(frozen=True, slots=True)
class IndexedAction:
    """An action and the log index it was committed at (turn numbers have gaps: no-ops and
    configuration entries also take indexes)."""

    index: int
    action: Any
    key: DedupKey | None


@dataclass(frozen=True, slots=True)
class Committed:
    turn: IndexedAction


@dataclass(frozen=True, slots=True)
class Reset:
    """Restart your state from ``state`` (what you passed to ``publish_snapshot``) at ``index``."""

    state: bytes
    index: int


TurnEvent = Committed | Reset


class TurnSequencer:
    """Turn order over ``node``; see the module docstring."""

    def __init__(self, node: RaftNode) -> None:
        self.node = node
        self._sessions = SessionTable()
        self._seq = 0
        self._client = f"{node.id}/turns/{id(self):x}"
        self._outstanding: dict[int, None] = {}

    async def propose(self, action: Any, *, key: DedupKey | None = None,
                      timeout: float | None = None) -> IndexedAction:
        """Commit ``action``; returns it with its index. Pass ``key`` (client, seq, floor) to make a
        retry of the same action after a crash apply once."""
        data = pack(action)
        own = key is None
        if key is None:
            self._seq += 1
            self._outstanding[self._seq] = None
            key = DedupKey(self._client, self._seq, next(iter(self._outstanding)))
        try:
            index, _ = await self.node.propose(data, key=key, timeout=timeout)
        finally:
            if own:
                self._outstanding.pop(key.seq, None)
        return IndexedAction(index, action, key)

    async def events(self, from_index: int = 1) -> AsyncIterator[TurnEvent]:
        """Every turn from ``from_index`` on (a :class:`Reset` first if that is compacted away),
        then live turns. Duplicated proposals are delivered once."""
        sessions = SessionTable()
        async for item in self.node.committed_from(from_index):
            if isinstance(item, CommittedInstall):
                state, table = unpack(item.snapshot.data)
                sessions = SessionTable.from_obj(table)
                self._sessions = sessions
                yield Reset(bytes(state), item.index)
            elif isinstance(item, CommittedEntry):
                if item.key is not None:
                    verdict, _ = sessions.check(item.key)
                    if verdict != Verdict.APPLY:
                        continue
                    sessions.record(item.key, item.index)
                self._sessions = sessions
                yield Committed(IndexedAction(item.index, unpack(item.data), item.key))

    def publish_snapshot(self, index: int, state: bytes) -> bool:
        """Your state after applying turn ``index`` (call it right after handling that event)."""
        return self.node.publish_snapshot(index, pack([state, self._sessions.to_obj()]))
