"""Durable Quilter state (a runtime module): a node's boards survive a crash or a power cut.

A :class:`NodeStore` keeps, in one data directory (SQLite, WAL, ``synchronous=FULL``), everything a
node's Quilters need to come back: each board's state (a snapshot plus a journal of the deltas
joined since), how far it had received every stream (its frontier: the acks it sent promised that
much), and the node's incarnation, so a restart always takes a higher one and never reuses dots.

* **Restore before talking.** A Quilter built with ``store=node_store.board(name)`` joins what is
  on disk into its (empty) state in its constructor, before it sends or receives any frame.
* **Ack only what is durable.** The store sets the core's ``hold_acks``: an ack owed at state
  version v leaves only after the store reports v on disk (:meth:`QuilterCore.persisted`). A local
  write counts toward its own majority (:meth:`Quilter.replicated`) only once it is on disk too.
* **Group commit.** One committer task per node writes whatever every board journaled since the
  previous commit in one transaction, one fsync: while one fsync runs, the next batch gathers. A
  busy node pays one fsync per batch of many jobs, never one per job.
* **Bounded.** When a board's journal outgrows four times its last snapshot (plus 4 MiB), the next
  commit writes a fresh snapshot and drops the journal; a node idle for :attr:`NodeStore.idle_after`
  folds every journal into its snapshot and truncates the WAL (incremental vacuum returns the pages).
* **Refusal.** A directory holding anything but this store, a file that is not a warpmesh store,
  another node's store, or a record whose checksum does not match is refused with
  :class:`DataDirError` before anything is loaded. An I/O error while committing (disk full) stops
  the store: from then on nothing more is acknowledged (:attr:`NodeStore.failed` says why).

:class:`MemoryMedium` is the simulator's disk: writes survive :meth:`MemoryMedium.power_cut` only
once synced, so a simulated crash loses exactly what a real one may.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import blake3

from warpmesh.errors import WarpmeshError
from warpmesh.wire.frame import pack, unpack

if TYPE_CHECKING:
    from warpmesh.quilt.runtime import Quilter

log = logging.getLogger("warpmesh.quilt.store")

__all__ = ["DB_NAME", "BoardStore", "DataDirError", "IncarnationRefused", "MemoryMedium", "NodeStore"]

MAGIC = "warpmesh-node-data"
SCHEMA = 1
#: The one database file in a data directory (SQLite adds ``-wal`` and ``-shm`` beside it).
DB_NAME = "warpmesh-node.sqlite3"
_ALLOWED = {DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", DB_NAME + "-journal"}
_CHECK_BYTES = 16
#: A journal is compacted into a snapshot once it exceeds JOURNAL_FACTOR times the last snapshot
#: plus JOURNAL_SLACK. A snapshot encodes the whole board on the event loop, so while a node is busy
#: it is rare (its cost amortized over many times its size in journal); an idle node compacts anyway.
JOURNAL_FACTOR = 4
JOURNAL_SLACK = 4 * 1024 * 1024


class DataDirError(WarpmeshError):
    """A data directory that cannot be used: corrupt, foreign, another node's, or an incarnation refused."""


class IncarnationRefused(DataDirError):
    """An explicit incarnation not above the one stored in the data directory."""


def _check(data: bytes) -> bytes:
    return blake3.blake3(data).digest(_CHECK_BYTES)


@dataclass
class BoardWrite:
    """One board's part of a commit."""

    snapshot: bytes | None = None  # replaces the snapshot and the whole journal
    deltas: list[bytes] = field(default_factory=list)
    frontier: bytes | None = None


@dataclass
class Txn:
    """One atomic commit: everything in it reaches the disk together, with one sync."""

    incarnation: int | None = None
    boards: dict[str, BoardWrite] = field(default_factory=dict)

    def empty(self) -> bool:
        return self.incarnation is None and not self.boards


@dataclass
class BoardImage:
    """What the disk holds for one board."""

    snapshot: bytes | None = None
    journal: list[bytes] = field(default_factory=list)
    frontier: bytes | None = None


@dataclass
class DiskImage:
    node_id: str | None = None
    incarnation: int = 0
    boards: dict[str, BoardImage] = field(default_factory=dict)


class Disk(Protocol):
    """Where a :class:`NodeStore` writes: ``write`` stages a transaction, ``sync`` makes it durable."""

    blocking: bool

    def describe(self) -> str: ...
    def load(self) -> DiskImage: ...
    def write(self, txn: Txn) -> None: ...
    def sync(self) -> None: ...
    def checkpoint(self) -> None: ...
    def close(self) -> None: ...


def _apply(image: DiskImage, txn: Txn) -> None:
    if txn.incarnation is not None:
        image.incarnation = txn.incarnation
    for name, w in txn.boards.items():
        b = image.boards.setdefault(name, BoardImage())
        if w.snapshot is not None:
            b.snapshot = w.snapshot
            b.journal = []
        b.journal.extend(w.deltas)
        if w.frontier is not None:
            b.frontier = w.frontier


# -- SQLite ------------------------------------------------------------------------------------------
class SqliteDisk:
    """One SQLite file in a data directory; each commit is one transaction and one WAL fsync."""

    blocking = True

    def __init__(self, directory: str | os.PathLike[str], node_id: str) -> None:
        self.dir = Path(directory)
        self.path = self.dir / DB_NAME
        if self.dir.exists() and not self.dir.is_dir():
            raise DataDirError(f"{self.dir} is not a directory; give --data a directory (new or used before "
                               "by this node)")
        self.dir.mkdir(parents=True, exist_ok=True)
        foreign = sorted(p.name for p in self.dir.iterdir() if p.name not in _ALLOWED)
        if foreign:
            shown = ", ".join(foreign[:3]) + (" ..." if len(foreign) > 3 else "")
            raise DataDirError(f"{self.dir} is not a warpmesh node data directory (it holds {shown}); give an "
                               "empty or new directory, or the one this node used before")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise DataDirError(f"{self.path}: cannot open ({err}); check the path and its permissions") from None
        try:
            self._setup(node_id)
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise DataDirError(f"{self.path}: not a readable warpmesh node store ({err}); move the directory "
                               "aside and start the node on a new one (its peers hold the boards)") from None
        self._in_txn = False

    def describe(self) -> str:
        return str(self.dir)

    def _setup(self, node_id: str) -> None:
        db = self._db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only effective before the first table
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"could not enable WAL (journal_mode={mode})")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA journal_size_limit=4194304")  # a checkpointed WAL shrinks back to 4 MiB at most
        if not tables:
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
            db.execute("CREATE TABLE board (name TEXT PRIMARY KEY, snapshot BLOB, snapshot_check BLOB, "
                       "frontier BLOB, frontier_check BLOB) WITHOUT ROWID")
            db.execute("CREATE TABLE journal (id INTEGER PRIMARY KEY, name TEXT NOT NULL, delta BLOB NOT NULL, "
                       "delta_check BLOB NOT NULL)")
            db.executemany("INSERT INTO meta VALUES (?, ?)",
                           [("magic", MAGIC), ("schema", SCHEMA), ("node_id", node_id), ("incarnation", 0)])
            db.execute("COMMIT")
            return
        if tables != {"meta", "board", "journal"}:
            raise sqlite3.DatabaseError(f"unexpected tables {sorted(tables)}")
        res = db.execute("PRAGMA quick_check").fetchone()[0]
        if res != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {res}")

    def load(self) -> DiskImage:
        db = self._db
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            image = DiskImage(node_id=meta.get("node_id"), incarnation=int(meta.get("incarnation") or 0))
            if meta.get("magic") != MAGIC or meta.get("schema") != SCHEMA:
                raise DataDirError(f"{self.path}: not a warpmesh node store of schema {SCHEMA} "
                                   f"(magic {meta.get('magic')!r}, schema {meta.get('schema')!r})")
            for name, snap, snap_check, front, front_check in db.execute(
                    "SELECT name, snapshot, snapshot_check, frontier, frontier_check FROM board"):
                if snap is not None and _check(snap) != snap_check:
                    raise DataDirError(f"{self.path}: board {name!r} snapshot is corrupt (checksum mismatch)")
                if front is not None and _check(front) != front_check:
                    raise DataDirError(f"{self.path}: board {name!r} frontier is corrupt (checksum mismatch)")
                image.boards[name] = BoardImage(snap, [], front)
            for rid, name, delta, delta_check in db.execute("SELECT id, name, delta, delta_check FROM journal "
                                                            "ORDER BY id"):
                if _check(delta) != delta_check:
                    raise DataDirError(f"{self.path}: journal record {rid} of board {name!r} is corrupt "
                                       "(checksum mismatch)")
                image.boards.setdefault(name, BoardImage()).journal.append(delta)
        except sqlite3.DatabaseError as err:
            raise DataDirError(f"{self.path}: unreadable ({err}); move the directory aside and start the node "
                               "on a new one") from None
        return image

    def write(self, txn: Txn) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        self._in_txn = True
        try:
            if txn.incarnation is not None:
                db.execute("UPDATE meta SET value = ? WHERE key = 'incarnation'", (txn.incarnation,))
            for name, w in txn.boards.items():
                db.execute("INSERT OR IGNORE INTO board (name) VALUES (?)", (name,))
                if w.snapshot is not None:
                    db.execute("UPDATE board SET snapshot = ?, snapshot_check = ? WHERE name = ?",
                               (w.snapshot, _check(w.snapshot), name))
                    db.execute("DELETE FROM journal WHERE name = ?", (name,))
                if w.deltas:
                    db.executemany("INSERT INTO journal (name, delta, delta_check) VALUES (?, ?, ?)",
                                   [(name, d, _check(d)) for d in w.deltas])
                if w.frontier is not None:
                    db.execute("UPDATE board SET frontier = ?, frontier_check = ? WHERE name = ?",
                               (w.frontier, _check(w.frontier), name))
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._in_txn:
            self._in_txn = False
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def sync(self) -> None:
        try:
            self._db.execute("COMMIT")  # synchronous=FULL in WAL mode: the WAL is fsynced here
        except BaseException:
            self._rollback()
            raise
        self._in_txn = False

    def checkpoint(self) -> None:
        """Return free pages, copy the WAL into the database file and truncate it (the node is idle)."""
        # executescript steps the pragma to the end (execute would free one page per call).
        self._db.executescript("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")

    def close(self) -> None:
        self._rollback()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


# -- the simulator's disk ----------------------------------------------------------------------------
class MemoryMedium:
    """A simulated disk: what was synced survives :meth:`power_cut`; staged writes do not.

    ``disk(node_id)`` opens a handle as a process would; a power cut kills every open handle (later
    writes through them vanish, as a dead process writes nothing). ``fail`` injects an I/O error.
    """

    def __init__(self, sync_delay: float = 0.0) -> None:
        #: How long a sync takes (virtual seconds): acks wait that long, and a cut may fall inside it.
        self.sync_delay = sync_delay
        self.images: dict[str, DiskImage] = {}
        self.generation = 0
        self.syncs = 0
        self.fail: Exception | None = None

    def disk(self, node_id: str) -> MemoryDisk:
        return MemoryDisk(self, node_id)

    def power_cut(self) -> None:
        self.generation += 1


class MemoryDisk:
    """One handle on a :class:`MemoryMedium` (see there)."""

    blocking = False

    def __init__(self, medium: MemoryMedium, node_id: str) -> None:
        self.medium = medium
        self.node_id = node_id
        self.generation = medium.generation
        self.sync_delay = medium.sync_delay
        self._staged: list[Txn] = []

    def describe(self) -> str:
        return f"memory:{self.node_id}"

    def _alive(self) -> bool:
        return self.generation == self.medium.generation

    def load(self) -> DiskImage:
        image = self.medium.images.get(self.node_id)
        if image is None:
            return DiskImage(node_id=self.node_id)
        return DiskImage(image.node_id, image.incarnation,
                         {n: BoardImage(b.snapshot, list(b.journal), b.frontier) for n, b in image.boards.items()})

    def write(self, txn: Txn) -> None:
        if self.medium.fail is not None:
            raise self.medium.fail
        if self._alive():
            self._staged.append(txn)

    def sync(self) -> None:
        if self.medium.fail is not None:
            raise self.medium.fail
        if not self._alive():
            self._staged.clear()
            return
        image = self.medium.images.setdefault(self.node_id, DiskImage(node_id=self.node_id))
        for txn in self._staged:
            _apply(image, txn)
        self._staged.clear()
        self.medium.syncs += 1

    def checkpoint(self) -> None:
        pass

    def close(self) -> None:
        self._staged.clear()


# -- the node's store and its committer ----------------------------------------------------------
class NodeStore:
    """One node's durable boards (see the module docstring). Open it with :meth:`open` (a directory)."""

    def __init__(self, disk: Disk, node_id: str) -> None:
        self.disk = disk
        self.node_id = node_id
        image = disk.load()
        if image.node_id is not None and image.node_id != node_id:
            disk.close()
            raise DataDirError(f"{disk.describe()} belongs to node {image.node_id!r}, not {node_id!r}; give this "
                               "node its own data directory")
        self._image: DiskImage | None = image
        #: The incarnation stored when the store was opened (0: a new directory).
        self.stored_incarnation = image.incarnation
        self.incarnation: int | None = None
        #: Why the store stopped (an I/O error while committing); nothing is acknowledged after it.
        self.failed: BaseException | None = None
        #: Commits written (each one transaction and one sync).
        self.commits = 0
        #: Seconds without a commit after which journals are folded into snapshots and the WAL truncated.
        self.idle_after = 1.0
        #: Test hook, called with "collected", "written", "synced", "released" at each commit step.
        self.step_hook: Callable[[str], None] | None = None
        self._boards: dict[str, BoardStore] = {}
        # How long a commit waits after a change, to cut its batches when the Quilters would anyway.
        self._gather_delay = 0.0
        self._attached = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def open(cls, directory: str | os.PathLike[str], node_id: str) -> NodeStore:
        """Open (or create) the data directory of ``node_id``; :class:`DataDirError` if unusable."""
        return cls(SqliteDisk(directory, node_id), node_id)

    def describe(self) -> str:
        return self.disk.describe()

    def claim_incarnation(self, incarnation: int | None = None, *, default: int = 0) -> int:
        """Take this run's incarnation and store it durably before anything else.

        Explicit ``incarnation`` must exceed the stored one (else :class:`DataDirError`); otherwise
        the larger of ``default`` and stored + 1. So every run of a directory is a new replica.
        """
        if self.incarnation is not None:
            return self.incarnation
        stored = self.stored_incarnation
        if incarnation is not None:
            if incarnation <= stored:
                raise IncarnationRefused(f"incarnation {incarnation} is not above {stored}, the one stored in "
                                   f"{self.describe()}; omit --incarnation (the data directory picks a higher one)")
        else:
            incarnation = max(default, stored + 1)
        self.disk.write(Txn(incarnation=incarnation))
        self.disk.sync()
        self.incarnation = incarnation
        return incarnation

    def board(self, name: str) -> BoardStore:
        """The handle a Quilter persists board ``name`` through (``Quilter(..., store=...)``)."""
        if name in self._boards:
            raise ValueError(f"board {name!r} already has a store")
        image = self._image.boards.get(name) if self._image is not None else None
        b = self._boards[name] = BoardStore(self, name, image)
        return b

    def stats(self) -> dict[str, Any]:
        return {"dir": self.describe(), "incarnation": self.incarnation, "commits": self.commits,
                "failed": None if self.failed is None else str(self.failed)}

    # -- committer ------------------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    def _start(self) -> None:
        self._attached += 1
        if self._task is None and not self._closed:
            self._image = None  # restored: free it
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"store-{self.node_id}")

    async def _detach(self) -> None:
        self._attached -= 1
        if self._attached <= 0:
            await self.close()

    def _step(self, what: str) -> None:
        if self.step_hook is not None:
            self.step_hook(what)

    async def _run(self) -> None:
        compacted = True
        while not self._closed:
            if compacted:
                await self._wake.wait()
            else:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.idle_after)
                except TimeoutError:
                    # Idle: fold every journal into a snapshot and shrink the WAL, so a quiet node's
                    # files shrink back to what it still holds.
                    compacted = True
                    if not await self.commit(compact=True):
                        return
                    continue
            self._wake.clear()
            # Let the changes of this moment join in: as long as the Quilters coalesce their batches
            # (the commit cuts them), then to the end of this loop iteration.
            if self._gather_delay > 0:
                await asyncio.sleep(self._gather_delay)
            await asyncio.sleep(0)
            if not await self.commit():
                return
            compacted = False
        await self.commit()  # closing: the last of it

    async def commit(self, *, compact: bool = False) -> bool:
        """Write what every board journaled since the last commit (one transaction, one sync),
        then release the acks and local writes it covers. False once the store has failed.
        ``compact``: snapshot every board that has a journal, then checkpoint and truncate the WAL."""
        if self.failed is not None:
            return False
        txn = Txn()
        marks: list[tuple[BoardStore, int]] = []
        for b in self._boards.values():
            if compact and b._journal_bytes:
                b._snapshot_due = True
            mark = b.collect(txn)
            if mark is not None:
                marks.append((b, mark))
        self._step("collected")
        try:
            if not txn.empty():
                if self.disk.blocking and self.step_hook is None:
                    await asyncio.to_thread(self._write_sync, txn)  # one hop to the worker thread
                elif self.disk.blocking:
                    await asyncio.to_thread(self.disk.write, txn)
                    self._step("written")
                    await asyncio.to_thread(self.disk.sync)
                else:
                    self.disk.write(txn)
                    self._step("written")
                    delay = getattr(self.disk, "sync_delay", 0.0)
                    if delay:
                        await asyncio.sleep(delay)
                    self.disk.sync()
                self.commits += 1
            if compact:
                if self.disk.blocking:
                    await asyncio.to_thread(self.disk.checkpoint)
                else:
                    self.disk.checkpoint()
        except Exception as err:  # whatever it was, nothing more may be acknowledged
            self.failed = err
            log.error("%s: cannot write the data directory (%s); this node no longer acknowledges anything. "
                      "Free space or fix the disk, then restart it", self.describe(), err, exc_info=err)
            return False
        self._step("synced")
        for b, version in marks:
            b.release(version)
        self._step("released")
        return True

    def _write_sync(self, txn: Txn) -> None:
        self.disk.write(txn)
        self.disk.sync()

    async def close(self) -> None:
        """Commit what is left (unless failed), stop the committer and close the disk."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._task is not None:
            # Never cancelled mid-commit: a write running on a worker thread would race the close.
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        self.disk.close()


class BoardStore:
    """One board of a :class:`NodeStore`, attached to one Quilter (see the module docstring)."""

    def __init__(self, node: NodeStore, name: str, image: BoardImage | None) -> None:
        self.node = node
        self.name = name
        self._image = image
        self._quilter: Quilter[Any] | None = None
        self._wires: list[Any] = []  # deltas since the last commit, as they travel (encoded)
        self._snapshot_due = False
        self._snapshot_bytes = 0
        self._journal_bytes = 0
        self._frontier: bytes | None = None

    def attach(self, quilter: Quilter[Any]) -> None:
        """Restore the board into ``quilter``'s state (before it talks) and hook its core."""
        if self._quilter is not None:
            raise ValueError(f"board {self.name!r} is attached already")
        self._quilter = quilter
        core = quilter.core
        image, self._image = self._image, None
        if image is not None:
            values: list[Any] = []
            frontier: dict[str, int] = {}
            where = f"{self.node.describe()}: board {self.name!r}"
            try:
                if image.snapshot is not None:
                    values.append(core.codec.decode(unpack(image.snapshot)))
                for record in image.journal:
                    wires = unpack(record)
                    if not isinstance(wires, list):
                        raise ValueError("a journal record is not a list of deltas")
                    values.extend(core.codec.decode(w) for w in wires)
                if image.frontier is not None:
                    frontier = {str(s): int(u) for s, u in unpack(image.frontier)}
            except (ValueError, TypeError, KeyError, IndexError) as err:
                raise DataDirError(f"{where} does not decode ({err}); move the directory aside and start the "
                                   "node on a new one") from None
            for v in values:
                if type(v) is not type(core.state):
                    raise DataDirError(f"{where} holds a {type(v).__name__}, not a {type(core.state).__name__}; "
                                       "is this directory another application's?")
            try:
                now = asyncio.get_running_loop().time()
            except RuntimeError:
                now = 0.0
            core.restore(values, frontier, now)
            self._snapshot_bytes = len(image.snapshot or b"")
            self._journal_bytes = sum(len(d) for d in image.journal)
            self._frontier = image.frontier
        core.hold_acks = True
        core.journal = self._journaled
        core.journal_batch = self._journal_batch
        self.node._gather_delay = max(self.node._gather_delay, quilter.coalesce_delay)

    def _journaled(self, value: Any, wire: Any) -> None:
        if value is None:
            self._snapshot_due = True
            self._wires.clear()
        elif wire is not None and not self._snapshot_due:
            self._wires.append(wire)  # a received delta: already encoded, nothing to join
        # A local delta (no wire) comes back through _journal_batch, encoded, when its batch is cut.
        self.node.wake()

    def _journal_batch(self, wire: Any) -> None:
        if not self._snapshot_due:
            self._wires.append(wire)

    def collect(self, txn: Txn) -> int | None:
        """Add what this board changed since the last commit to ``txn``; the state version it covers."""
        q = self._quilter
        if q is None:
            return None
        core = q.core
        q.cut_batch()  # every local change so far joins the journal as its batch's wire form
        w = BoardWrite()
        if self._wires and not self._snapshot_due:
            # One journal record per commit: the wire forms of every delta joined since the last one.
            wires, self._wires = self._wires, []
            delta = pack(wires)
            self._journal_bytes += len(delta)
            if self._journal_bytes > JOURNAL_FACTOR * self._snapshot_bytes + JOURNAL_SLACK:
                self._snapshot_due = True
            else:
                w.deltas.append(delta)
        if self._snapshot_due:
            self._snapshot_due = False
            self._wires = []
            w.snapshot = pack(core.codec.encode(core.state))
            self._snapshot_bytes = len(w.snapshot)
            self._journal_bytes = 0
        frontier = pack(sorted([s, u] for s, u in core.frontier().items() if u > 0))
        if frontier != self._frontier:
            w.frontier = self._frontier = frontier
        if w.snapshot is not None or w.deltas or w.frontier is not None:
            txn.boards[self.name] = w
        return core.version

    def release(self, version: int) -> None:
        q = self._quilter
        if q is not None:
            q._persisted(version)
