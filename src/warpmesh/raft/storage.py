"""Durable Raft state: ``RaftStorage`` (interface), ``InMemoryRaftStorage``, ``SqliteRaftStorage``.

What Raft needs durable before a node speaks (Raft §5, Figure 2): the current term and vote (saved
*together*, atomically), the log, and the latest snapshot. The host writes one :class:`StorageBatch`
per :class:`~warpmesh.raft.core.Ready` in a single transaction with a single fsync, which is what
makes group commit work: every proposal that arrived while the previous write was in progress rides
on the next one.

``SqliteRaftStorage`` uses SQLite in WAL mode with ``synchronous=FULL``: each transaction commit
fsyncs the WAL, so a write acknowledged by :meth:`RaftStorage.write` survives a process crash *and*
a power failure. (``synchronous=NORMAL`` in WAL mode survives a process crash but may lose the last
transactions on power loss; Raft's safety argument assumes acknowledged votes and entries survive
both, so we pay the fsync.) Large batches amortise it: one fsync per Ready, not per entry.

On open, stored state is validated (term bounds, contiguity, terms never decreasing, nothing above
the stored term, snapshot consistency); anything else raises :class:`CorruptState` naming the file
and what to do.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from warpmesh.raft.errors import CorruptState
from warpmesh.raft.membership import Membership
from warpmesh.raft.types import MAX_INDEX, MAX_TERM, Entry, HardState, Snapshot, SnapshotMeta

SCHEMA_VERSION = 1
_FORMAT = "warpmesh-raft"


@dataclass(slots=True)
class StorageBatch:
    """One atomic write: applied in this order, then made durable together."""

    snapshot: Snapshot | None = None
    log_reset: bool = False
    compact_through: int = 0
    entries: Sequence[Entry] = field(default_factory=list)
    hard_state: HardState | None = None

    @property
    def empty(self) -> bool:
        return not (self.snapshot or self.log_reset or self.compact_through or self.entries
                    or self.hard_state)


@dataclass(slots=True)
class LoadedState:
    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]


class RaftStorage(abc.ABC):
    """Durable term/vote, log and snapshot of one node. Every write is durable when it returns."""

    # -- term and vote --------------------------------------------------------------------------
    @abc.abstractmethod
    def hard_state(self) -> HardState: ...

    @abc.abstractmethod
    def save_hard_state(self, hs: HardState) -> None:
        """Save term, vote and commit hint atomically."""

    def term(self) -> int:
        return self.hard_state().term

    def voted_for(self) -> str | None:
        return self.hard_state().vote

    def save_term(self, term: int) -> None:
        hs = self.hard_state()
        self.save_hard_state(HardState(term, hs.vote, hs.commit))

    def save_voted_for(self, vote: str | None) -> None:
        hs = self.hard_state()
        self.save_hard_state(HardState(hs.term, vote, hs.commit))

    def save_term_and_vote(self, term: int, vote: str | None) -> None:
        """Both or neither (a crash between them could let a node vote twice in one term)."""
        hs = self.hard_state()
        self.save_hard_state(HardState(term, vote, hs.commit))

    # -- log ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def entries(self, lo: int = 0, hi: int | None = None) -> list[Entry]:
        """Stored entries with ``lo <= index < hi`` (``hi`` None = to the end), in order."""

    @abc.abstractmethod
    def last_index(self) -> int:
        """Index of the last stored entry (the snapshot index if the log is empty)."""

    def append(self, entries: Sequence[Entry]) -> None:
        """Store ``entries``, replacing any stored entry at or after the first one's index."""
        self.write(StorageBatch(entries=list(entries)))

    def truncate_from(self, index: int) -> None:
        """Delete every entry with index >= ``index``."""
        self._truncate_from(index)

    @abc.abstractmethod
    def _truncate_from(self, index: int) -> None: ...

    def discard_through(self, index: int) -> None:
        """Delete every entry with index <= ``index`` (covered by a saved snapshot). Idempotent."""
        self.write(StorageBatch(compact_through=index))

    # -- snapshot -------------------------------------------------------------------------------
    def save_snapshot(self, snap: Snapshot) -> None:
        """Replace the stored snapshot (durable before any prefix is discarded)."""
        self.write(StorageBatch(snapshot=snap))

    @abc.abstractmethod
    def load_snapshot(self) -> Snapshot | None: ...

    # -- batches --------------------------------------------------------------------------------
    @abc.abstractmethod
    def write(self, batch: StorageBatch) -> None:
        """Apply ``batch`` atomically and durably."""

    def begin_write(self, batch: StorageBatch) -> Callable[[], None]:
        """Two-phase :meth:`write` for a host that makes writes durable on another thread: do the
        cheap part of writing ``batch`` now, on the caller's thread, and return the call that makes
        it durable (the host runs it wherever it likes; it is as durable as :meth:`write` once that
        call returns). Nothing else may use this storage until it has run. By default everything
        happens in the returned call."""
        return functools.partial(self.write, batch)

    def load(self) -> LoadedState:
        """Everything a restarting node needs, validated (raises :class:`CorruptState`)."""
        return validate_loaded(self.hard_state(), self.load_snapshot(), self.entries(), self.describe())

    def describe(self) -> str:
        return type(self).__name__

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release resources. Idempotent."""


def validate_loaded(hs: HardState, snap: Snapshot | None, entries: list[Entry], where: str) -> LoadedState:
    """Check restored state for plausibility; the kuilt reference's restore guards, plus ours."""

    def bad(what: str) -> CorruptState:
        return CorruptState(
            f"{where}: {what}. The Raft state is damaged and this node refuses to start on it. "
            "Restore the file from a backup, or delete it and add this node back to the cluster as "
            "a new member (its data will be copied from the others); see docs/raft.md, 'Recovery'."
        )

    if not 0 <= hs.term <= MAX_TERM:
        raise bad(f"stored term {hs.term} is outside [0, 2^62]")
    if hs.vote is not None and not isinstance(hs.vote, str):
        raise bad("stored vote is not a node id")
    si, st = 0, 0
    if snap is not None:
        si, st = snap.index, snap.term
        if not (0 < si <= MAX_INDEX and 0 <= st <= MAX_TERM):
            raise bad(f"snapshot position ({si}, {st}) is out of range")
        if st > hs.term:
            raise bad(f"snapshot term {st} is above the stored term {hs.term}")
    prev: Entry | None = None
    for e in entries:
        if prev is not None and e.index != prev.index + 1:
            raise bad(f"log entries are not contiguous (entry {e.index} follows {prev.index})")
        if not 0 <= e.term <= MAX_TERM or not 0 < e.index <= MAX_INDEX:
            raise bad(f"entry {e.index} has an out-of-range position")
        if e.term > hs.term:
            raise bad(f"entry {e.index} has term {e.term}, above the stored term {hs.term}")
        if prev is not None and e.term < prev.term:
            raise bad(f"entry terms decrease at index {e.index} ({prev.term} -> {e.term})")
        prev = e
    if entries:
        first, last = entries[0].index, entries[-1].index
        if snap is None and first != 1:
            raise bad(f"the log starts at index {first} but there is no snapshot")
        if snap is not None:
            if first > si + 1:
                raise bad(f"gap between the snapshot (index {si}) and the first entry ({first})")
            if last < si:
                # Entries wholly covered by the snapshot are harmless leftovers: drop them.
                entries = []
            else:
                at = si - first
                if at >= 0 and entries[at].term != st:
                    raise bad(f"entry {si} has term {entries[at].term} but the snapshot says {st}")
    last_index = entries[-1].index if entries else si
    commit = min(max(hs.commit, si), last_index)
    return LoadedState(HardState(hs.term, hs.vote, commit), snap, entries)


class InMemoryRaftStorage(RaftStorage):
    """Storage in plain Python objects: for tests and the simulator (survives a simulated crash
    because the simulator keeps the object and builds a new node on it)."""

    def __init__(self) -> None:
        self._hs = HardState()
        self._snap: Snapshot | None = None
        self._entries: list[Entry] = []
        self._offset = 1  # index of _entries[0]
        self.writes = 0

    def hard_state(self) -> HardState:
        return self._hs

    def save_hard_state(self, hs: HardState) -> None:
        self.write(StorageBatch(hard_state=hs))

    def entries(self, lo: int = 0, hi: int | None = None) -> list[Entry]:
        last = self._offset + len(self._entries)
        hi = last if hi is None else min(hi, last)
        lo = max(lo, self._offset)
        if lo >= hi:
            return []
        return self._entries[lo - self._offset:hi - self._offset]

    def last_index(self) -> int:
        if self._entries:
            return self._entries[-1].index
        return self._snap.index if self._snap else 0

    def _truncate_from(self, index: int) -> None:
        if index < self._offset:
            index = self._offset
        del self._entries[index - self._offset:]

    def load_snapshot(self) -> Snapshot | None:
        return self._snap

    def write(self, batch: StorageBatch) -> None:
        self.writes += 1
        if batch.snapshot is not None:
            self._snap = batch.snapshot
        if batch.log_reset:
            self._entries = []
            self._offset = (self._snap.index + 1) if self._snap else 1
        if batch.compact_through and batch.compact_through >= self._offset:
            drop = min(batch.compact_through - self._offset + 1, len(self._entries))
            del self._entries[:drop]
            self._offset = batch.compact_through + 1
        if batch.entries:
            first = batch.entries[0].index
            if not self._entries:
                self._offset = first
            elif first > self._offset + len(self._entries):
                raise ValueError(f"append at {first} leaves a gap after {self.last_index()}")
            else:
                self._truncate_from(first)
                if not self._entries:
                    self._offset = first
            self._entries.extend(batch.entries)
        if batch.hard_state is not None:
            self._hs = batch.hard_state


class SqliteRaftStorage(RaftStorage):
    """SQLite (WAL, ``synchronous=FULL``) storage in one file. See the module docstring.

    ``node_id`` (optional) is recorded on first use; opening the file later as another node is
    refused, so a data directory copied to the wrong machine cannot corrupt a cluster.
    Thread-safe: calls are serialized, so the runtime may run writes on a worker thread.
    """

    def __init__(self, path: str | os.PathLike[str], *, node_id: str | None = None,
                 synchronous: str = "FULL", check: bool = True, background_checkpoint: bool = True) -> None:
        self.path = Path(path)
        if synchronous not in ("FULL", "EXTRA", "NORMAL", "OFF"):
            raise ValueError("synchronous must be FULL, EXTRA, NORMAL or OFF")
        self._lock = threading.RLock()
        self._closed = False
        self._staged = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise CorruptState(f"{self.path}: cannot open the Raft database ({err}). Check the path and "
                               "its permissions.") from None
        try:
            self._setup(node_id, synchronous, check)
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise CorruptState(
                f"{self.path}: not a readable warpmesh Raft database ({err}). Restore it from a backup, "
                "or move it aside and add this node back to the cluster as a new member "
                "(see docs/raft.md, 'Recovery')."
            ) from None
        self._hs = self._read_hard_state()
        self._last = self._read_last_index()
        # Checkpoints (copying the WAL into the main file, with an fsync of it) can take hundreds of
        # milliseconds on a slow disk; run them on a thread with its own connection, off the write
        # path, instead of inside whichever commit crosses SQLite's auto-checkpoint threshold.
        self._ckpt_stop = threading.Event()
        self._ckpt_wake = threading.Event()
        self._ckpt_thread: threading.Thread | None = None
        self._since_ckpt = 0
        if background_checkpoint:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._ckpt_thread = threading.Thread(target=self._checkpointer, daemon=True,
                                                 name=f"raft-checkpoint-{self.path.name}")
            self._ckpt_thread.start()

    def describe(self) -> str:
        return str(self.path)

    def _setup(self, node_id: str | None, synchronous: str, check: bool) -> None:
        db = self._db
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"could not enable WAL (journal_mode={mode})")
        db.execute(f"PRAGMA synchronous={synchronous}")
        if check:
            res = db.execute("PRAGMA quick_check").fetchone()[0]
            if res != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {res}")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
            db.execute("CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, "
                       "kind INTEGER NOT NULL, data BLOB NOT NULL, client TEXT, seq INTEGER, "
                       "floor INTEGER)")
            db.execute("CREATE TABLE snapshot (id INTEGER PRIMARY KEY CHECK (id = 1), idx INTEGER NOT "
                       "NULL, term INTEGER NOT NULL, membership BLOB NOT NULL, data BLOB NOT NULL)")
            db.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format", _FORMAT), ("schema", SCHEMA_VERSION), ("node_id", node_id),
                ("term", 0), ("vote", None), ("commit", 0),
            ])
            db.execute("COMMIT")
            return
        if not {"meta", "log", "snapshot"} <= tables:
            raise sqlite3.DatabaseError(f"unexpected tables {sorted(tables)} (not a warpmesh Raft file)")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("format") != _FORMAT:
            raise sqlite3.DatabaseError(f"format marker is {meta.get('format')!r}, not {_FORMAT!r}")
        if meta.get("schema") != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {meta.get('schema')} is not {SCHEMA_VERSION} (written by another "
                "warpmesh version)")
        stored = meta.get("node_id")
        if node_id is not None:
            if stored is None:
                db.execute("UPDATE meta SET value = ? WHERE key = 'node_id'", (node_id,))
            elif stored != node_id:
                raise CorruptState(
                    f"{self.path}: this Raft database belongs to node {stored!r}, not {node_id!r}. "
                    "Point --data at that node's own directory (each node needs its own).")

    def _read_hard_state(self) -> HardState:
        meta = dict(self._db.execute("SELECT key, value FROM meta WHERE key IN ('term','vote','commit')"))
        term, vote, commit = meta.get("term", 0), meta.get("vote"), meta.get("commit", 0)
        if type(term) is not int or type(commit) is not int or (vote is not None and not isinstance(vote, str)):
            raise CorruptState(f"{self.path}: the stored term/vote/commit are malformed. Restore the file "
                               "from a backup (see docs/raft.md, 'Recovery').")
        return HardState(term, vote, commit)

    def _read_last_index(self) -> int:
        row = self._db.execute("SELECT MAX(idx) FROM log").fetchone()
        if row[0] is not None:
            return int(row[0])
        row = self._db.execute("SELECT idx FROM snapshot WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    # -- reads ----------------------------------------------------------------------------------
    def hard_state(self) -> HardState:
        return self._hs

    def entries(self, lo: int = 0, hi: int | None = None) -> list[Entry]:
        with self._lock:
            self._check_open()
            if hi is None:
                rows = self._db.execute("SELECT idx, term, kind, data, client, seq, floor FROM log "
                                        "WHERE idx >= ? ORDER BY idx", (lo,)).fetchall()
            else:
                rows = self._db.execute("SELECT idx, term, kind, data, client, seq, floor FROM log "
                                        "WHERE idx >= ? AND idx < ? ORDER BY idx", (lo, hi)).fetchall()
        out = []
        for idx, term, kind, data, client, seq, floor in rows:
            if client is None:
                out.append(Entry(idx, term, kind, bytes(data)))
            else:
                out.append(Entry(idx, term, kind, bytes(data), client, seq, floor))
        return out

    def last_index(self) -> int:
        return self._last

    def load_snapshot(self) -> Snapshot | None:
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT idx, term, membership, data FROM snapshot WHERE id = 1").fetchone()
        if row is None:
            return None
        try:
            membership = Membership.from_bytes(bytes(row[2]))
        except ValueError as err:
            raise CorruptState(f"{self.path}: the stored snapshot's membership is malformed ({err}). "
                               "Restore the file from a backup (see docs/raft.md, 'Recovery').") from None
        return Snapshot(SnapshotMeta(int(row[0]), int(row[1]), membership), bytes(row[3]))

    # -- writes ---------------------------------------------------------------------------------
    def save_hard_state(self, hs: HardState) -> None:
        self.write(StorageBatch(hard_state=hs))

    def _truncate_from(self, index: int) -> None:
        with self._lock:
            self._check_open()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM log WHERE idx >= ?", (index,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._last = self._read_last_index()

    #: Batches up to this many entries (and :attr:`STAGE_BYTES` of data) are staged on the caller's
    #: thread by :meth:`begin_write`; larger ones are written wholly by the returned call.
    STAGE_ENTRIES = 64
    STAGE_BYTES = 256 * 1024

    def write(self, batch: StorageBatch) -> None:
        if batch.empty:
            return
        with self._lock:
            self._check_open()
            self._stage(batch)
            self._commit(batch)

    def begin_write(self, batch: StorageBatch) -> Callable[[], None]:
        """Run a small batch's statements now, inside an open transaction, and return the call that
        commits it: SQLite's COMMIT (the WAL write and its fsync, padded exactly as
        ``synchronous=FULL`` pads it) is all that is left for the worker thread. A thread that runs
        the whole transaction re-takes the GIL around every statement, and a busy event loop holds
        the GIL for milliseconds at a time: staging turned a ~80 us write into 0.3-0.8 ms on the
        loaded test machine. Large batches (throughput load) are still written wholly off-thread."""
        ents = batch.entries
        if batch.empty or batch.snapshot is not None or len(ents) > self.STAGE_ENTRIES or sum(
                len(e.data) for e in ents) > self.STAGE_BYTES:
            return functools.partial(self.write, batch)
        with self._lock:
            self._check_open()
            self._stage(batch)
        return functools.partial(self._commit_staged, batch)

    def _commit_staged(self, batch: StorageBatch) -> None:
        with self._lock:
            self._commit(batch)

    def _stage(self, batch: StorageBatch) -> None:
        """BEGIN and every statement of ``batch`` (rolled back if any fails); no COMMIT yet."""
        db = self._db
        if self._staged:
            raise RuntimeError(f"{self.path}: a staged write is not committed yet")
        db.execute("BEGIN IMMEDIATE")
        try:
            if batch.snapshot is not None:
                s = batch.snapshot
                db.execute("INSERT OR REPLACE INTO snapshot VALUES (1, ?, ?, ?, ?)",
                           (s.index, s.term, s.meta.membership.to_bytes(), s.data))
            if batch.log_reset:
                db.execute("DELETE FROM log")
            if batch.compact_through:
                db.execute("DELETE FROM log WHERE idx <= ?", (batch.compact_through,))
            ents = batch.entries
            if ents:
                db.execute("DELETE FROM log WHERE idx >= ?", (ents[0].index,))
                db.executemany("INSERT INTO log VALUES (?, ?, ?, ?, ?, ?, ?)", ents)
            hs = batch.hard_state
            if hs is not None:
                db.executemany("UPDATE meta SET value = ? WHERE key = ?",
                               ((hs.term, "term"), (hs.vote, "vote"), (hs.commit, "commit")))
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        self._staged = True

    def _commit(self, batch: StorageBatch) -> None:
        """COMMIT the staged transaction (durable when it returns), then update cached state."""
        db = self._db
        self._staged = False
        try:
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        hs = batch.hard_state
        ents = batch.entries
        if hs is not None:
            self._hs = hs
        if self._ckpt_thread is not None:
            self._since_ckpt += sum(len(e.data) + 64 for e in ents) + 256
            if self._since_ckpt >= self.CHECKPOINT_BYTES:
                self._since_ckpt = 0
                self._ckpt_wake.set()
        if ents:
            self._last = ents[-1].index
        elif batch.log_reset or batch.snapshot is not None:
            self._last = self._read_last_index()

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: storage is closed")

    #: Bytes written since the last checkpoint that wake the checkpointer early.
    CHECKPOINT_BYTES = 16 * 1024 * 1024
    #: Seconds between checkpoints otherwise.
    CHECKPOINT_INTERVAL = 1.0

    def _checkpointer(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return
        try:
            while not self._ckpt_stop.is_set():
                self._ckpt_wake.wait(self.CHECKPOINT_INTERVAL)
                self._ckpt_wake.clear()
                if self._ckpt_stop.is_set():
                    break
                with contextlib.suppress(sqlite3.Error):
                    # PASSIVE never blocks the writer; the writer never waits for it either.
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    # Then the frames committed meanwhile (a few pages), with commits held off:
                    # only a WAL wholly copied into the main file is started over from its
                    # beginning by the next write. Under a steady stream of writes the PASSIVE
                    # pass alone never catches up, so the WAL only grew and every commit's
                    # fdatasync also had to journal the file's new size: 0.31 vs 0.19 ms per
                    # fdatasync with three nodes' disks busy at once on the test machine.
                    with self._lock:
                        if not self._closed:
                            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def checkpoint(self) -> None:
        """Fold the WAL into the main file now and truncate it."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        if self._ckpt_thread is not None:
            self._ckpt_stop.set()
            self._ckpt_wake.set()
            self._ckpt_thread.join(timeout=10)
            self._ckpt_thread = None
        with self._lock:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.close()
