"""One peer's replica of a world (pure): committed Raft entries in, ticks, reports and verdicts out.

:meth:`Replica.apply` takes committed entries in log order. ``INTENTS`` are queued; a ``TICK`` entry
for the next tick number commits a tick with every queued intent (a duplicate or stale tick entry - a
retried proposal - is ignored); ``REPORT``/``RESTORED`` go to the :class:`Agreement`. The result says
which tick was committed (the runtime proposes its report) and which verdicts were reached.

A replica may be rewound: :meth:`restore` loads a snapshot (the majority's, proven by its hashes) and
the runtime feeds the log again from the snapshot's index. The engine replays those entries; the
agreement does not (it saw them already), so verdicts are never decided twice.

``corrupt_at`` is fault injection for demos and tests: at those ticks (first pass only) the replica
adds a push of its own to the tick's intents, so its state differs from every other replica's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from warpmesh.engine import Engine, Snapshot
from warpmesh.engine.state import WarpState, compute_state_root
from warpmesh.errors import WarpmeshError
from warpmesh.world.agreement import Agreement, Event, Hashes
from warpmesh.world.codec import (
    IntentsEntry,
    ReportEntry,
    ReportsEntry,
    RestoredEntry,
    TickEntry,
    WorldCodecError,
    WorldSnapshot,
    decode_entry,
)
from warpmesh.world.diff import diff_states
from warpmesh.world.rules import build_world_engine, push, run_tick

__all__ = ["Replica", "SnapshotMismatch", "Step"]


class SnapshotMismatch(WarpmeshError, ValueError):
    """A fetched snapshot does not hash to what the majority reported for its tick."""


@dataclass
class Step:
    """What one applied entry produced."""

    committed: Snapshot | None = None
    tick: int = 0
    events: list[Event] = field(default_factory=list)


class Replica:
    """See the module docstring. ``keep`` recent ticks' states are kept to serve snapshot fetches."""

    def __init__(self, peer: str, members: Iterable[str], *, workers: int = 1,
                 corrupt_at: Iterable[int] = (), keep: int = 8) -> None:
        self.peer = peer
        self.workers = workers
        self.engine: Engine = build_world_engine(workers)
        self.agreement = Agreement.of(members)
        self.tick = 0
        self.index = 0  # highest log index applied to the engine
        self.agreed = 0  # highest log index fed to the agreement
        self.pending: list[bytes] = []
        self.corrupt_at = set(corrupt_at)
        self.injected: list[int] = []
        self.keep = keep
        #: tick -> (raft index of its TICK entry, engine snapshot, state copy, agreement standing).
        self.recent: OrderedDict[int, tuple[int, Snapshot | None, WarpState, dict[str, Any]]] = OrderedDict()
        #: The newest snapshot whose tick the majority confirmed (set by :meth:`confirm`).
        self.checkpoint: WorldSnapshot | None = None
        self.tick_index: dict[int, int] = {0: 0}
        self.malformed = 0
        self.last_intents = 0  # intents in the newest committed tick
        #: Set while this replica is known diverged: ticks are skipped (the state is wrong anyway),
        #: verdicts still followed, until :meth:`restore`.
        self.halted = False
        self._remember(0, 0, None)
        self.checkpoint = self.snapshot(0)

    # ------------------------------------------------------------------ log
    def apply(self, index: int, data: bytes) -> Step:
        """Apply the committed entry at ``index``; entries at or below an applied index are skipped."""
        step = Step()
        if index <= self.index:
            return step
        self.index = index
        try:
            entry = decode_entry(data)
        except WorldCodecError:
            self.malformed += 1
            return step
        if type(entry) is IntentsEntry:
            if not self.halted:
                self.pending.extend(entry.intents)
        elif type(entry) is TickEntry:
            if entry.tick == self.tick + 1 and not self.halted:
                intents = self.pending
                self.pending = []
                if entry.tick in self.corrupt_at:
                    self.corrupt_at.discard(entry.tick)
                    self.injected.append(entry.tick)
                    intents = [*intents, push("e0", (1, 0, 0))]
                snap = run_tick(self.engine, entry.tick, intents)
                self.last_intents = len(intents)
                self.tick = entry.tick
                self.tick_index[entry.tick] = index
                self._remember(entry.tick, index, snap)
                step.committed, step.tick = snap, entry.tick
        elif index > self.agreed:
            self.agreed = index
            if type(entry) is ReportEntry:
                step.events = self.agreement.report(
                    entry.peer, entry.tick, Hashes(entry.commit, entry.state_root, entry.patch_digest))
            elif type(entry) is ReportsEntry:
                for tick, commit, state_root, patch_digest in entry.items:
                    step.events += self.agreement.report(entry.peer, tick, Hashes(commit, state_root, patch_digest))
            elif type(entry) is RestoredEntry:
                step.events = self.agreement.restored(entry.peer, entry.tick)
        return step

    def skip(self, index: int) -> None:
        """A Raft-internal entry (no-op, configuration) at ``index``."""
        self.index = max(self.index, index)

    @property
    def status(self) -> str:
        """This replica's own standing in the agreement: ok, diverged or repairing."""
        st = self.agreement.peers.get(self.peer)
        return "ok" if st is None else st.status

    # ------------------------------------------------------------------ snapshots
    def _remember(self, tick: int, index: int, snap: Snapshot | None) -> None:
        self.recent[tick] = (index, snap, self.engine.state.clone(), self.agreement.standing())
        while len(self.recent) > self.keep:
            self.recent.popitem(last=False)

    def snapshot(self, tick: int | None = None) -> WorldSnapshot | None:
        """The state after ``tick`` (default: the newest) if still kept."""
        if tick is None:
            tick = self.tick
        got = self.recent.get(tick)
        if got is None:
            return None
        index, last, state, standing = got
        return WorldSnapshot(tick, index, last, state, standing)

    def confirm(self, tick: int) -> WorldSnapshot | None:
        """Mark ``tick`` as confirmed by the majority (the caller checked); it becomes the checkpoint
        served to repairing peers once the tick itself is no longer kept. Returns it."""
        snap = self.snapshot(tick)
        if snap is not None and (self.checkpoint is None or snap.tick > self.checkpoint.tick):
            self.checkpoint = snap
        return snap

    def serve(self, tick: int) -> WorldSnapshot | None:
        """What to send a peer repairing tick ``tick``: that tick, else the newest confirmed one."""
        snap = self.snapshot(tick)
        if snap is None:
            snap = self.checkpoint
        return snap

    def verify(self, snap: WorldSnapshot) -> None:
        """Check ``snap`` hashes to the majority's report for its tick; raises :class:`SnapshotMismatch`."""
        maj = self.agreement.decided(snap.tick)
        if maj is None and not (snap.tick == 0 and snap.last is None):
            raise SnapshotMismatch(f"snapshot of tick {snap.tick}: no majority known here to prove it")
        root = self.engine.root_key
        state_root = compute_state_root(snap.state, root[0], root[1], self.engine.profile)
        if snap.last is not None and snap.last.state_root != state_root:
            raise SnapshotMismatch(f"snapshot of tick {snap.tick}: state root does not match its commit")
        if maj is not None and (snap.last is None or snap.last.hash != maj.commit):
            raise SnapshotMismatch(f"snapshot of tick {snap.tick}: commit differs from the majority's")

    def diff_against(self, snap: WorldSnapshot) -> dict[str, dict[str, list[str]]] | None:
        """Structural diff of this replica's state at ``snap.tick`` against ``snap`` (if still kept)."""
        own = self.recent.get(snap.tick)
        return None if own is None else diff_states(snap.state, own[2])

    def restore(self, snap: WorldSnapshot, *, installed: bool = False) -> None:
        """Replace the engine with ``snap``; the caller replays the log from ``snap.index + 1``.
        ``installed``: the snapshot replaces the log too (Raft install, restart), so the agreement
        continues from the snapshot's standing as well."""
        if installed:
            if snap.standing is not None:
                self.agreement.load_standing(snap.standing)
            self.agreed = max(self.agreed, snap.index)
        self.engine = build_world_engine(self.workers, restore=(snap.state.clone(), snap.last))
        self.halted = False
        self.tick = snap.tick
        self.index = snap.index
        self.pending = []
        self.tick_index[snap.tick] = snap.index
        for t in [t for t in self.recent if t > snap.tick]:
            del self.recent[t]
        self._remember(snap.tick, snap.index, snap.last)
        if installed or snap.tick == 0:
            self.checkpoint = self.snapshot(snap.tick)
