"""The local content-addressed store: files on disk plus an SQLite index.

Layout under the store root::

    index.sqlite          objects (id, kind, size, inline bytes or NULL, created),
                          pins (name -> ref), memo (request key -> result ref)
    objects/ab/cdef...    bytes of objects larger than ``inline_max`` (named by id hex)

Small objects (most trees, most job results) live inline in the index: one SQLite row is much
cheaper than a file. Every object is addressed by its BLAKE3 id (:mod:`warpmesh.workers.ids`) and
every read of a file-backed object re-hashes it, so a torn or tampered file is reported as
:class:`CorruptObject` (naming the file and what to do) instead of being returned.

Writes are idempotent (same bytes, same id) and safe from many threads and processes: files are
written to a temporary name and renamed into place before their index row exists. Index rows are
written behind: they are visible to this process at once and reach SQLite in one batched transaction
(by :meth:`Store.flush`, after ``COMMIT_EVERY_S`` or ``COMMIT_EVERY_WRITES``, and on close) -- one
statement and commit per object would cost more than running the job. The runner flushes after every
top-level run, so a result it returns is durable in the index. A crash loses only unflushed rows,
i.e. cache entries that are recomputed on demand.

Garbage collection keeps everything reachable from a pin and everything younger than a grace
period (so objects written by a job still running are never collected), deletes the rest, and
drops memo entries whose results are gone.

Objects arriving from elsewhere (a peer, a file) go through :meth:`Store.put_verified`, which
checks the id *before* anything is written: a mesh layer fetching a module by hash uses it so an
unverified byte never reaches the compiler.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from warpmesh.errors import WarpmeshError
from warpmesh.workers.ids import ID_LEN, Kind, Ref, blob_id, object_id, short
from warpmesh.workers.tree import EMPTY_TREE_ID, TreeEntry, decode_tree, make_tree_sorted

# Enum members as module constants: an attribute access on an enum class costs ~0.2 µs in CPython
# 3.11, paid several times per job on these paths.
_BLOB, _TREE = Kind.BLOB, Kind.TREE
_KIND = {1: _BLOB, 2: _TREE}

#: Re-putting an existing object refreshes its age at most this often (seconds); see Store.gc.
TOUCH_INTERVAL = 60.0

#: An open index transaction is committed after this long or this many writes (see module doc).
COMMIT_EVERY_S = 0.2
COMMIT_EVERY_WRITES = 4096

#: Objects up to this many bytes are kept in an in-memory cache once written or read.
SMALL_CACHE_MAX = 4096

#: Blobs up to this many bytes have their ids remembered by content (see Store.put_blob).
SMALL_ID_MAX = 64

#: Objects up to this many bytes are stored inline in the SQLite index instead of as files.
DEFAULT_INLINE_MAX = 16 * 1024

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    id      BLOB PRIMARY KEY,
    kind    INTEGER NOT NULL,
    size    INTEGER NOT NULL,
    data    BLOB,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pins (
    name    TEXT PRIMARY KEY,
    kind    INTEGER NOT NULL,
    id      BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS memo (
    key     BLOB PRIMARY KEY,
    kind    INTEGER NOT NULL,
    id      BLOB NOT NULL,
    created REAL NOT NULL
) WITHOUT ROWID;
"""


@functools.lru_cache(maxsize=64)
def _memo_select(n: int) -> str:
    # A few keys (a job's nested batch): one primary-key probe each, UNION ALL'd -- about a third
    # cheaper than IN (...), for which SQLite first builds a temporary index of the keys.
    if n <= 16:
        return " UNION ALL ".join(["SELECT key, kind, id FROM memo WHERE key = ?"] * n)
    return f"SELECT key, kind, id FROM memo WHERE key IN ({','.join('?' * n)})"


class StoreError(WarpmeshError):
    """A store operation failed; the message says what to do next."""


class ObjectNotFound(StoreError, KeyError):
    """The requested object is not in this store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "object not found"


class CorruptObject(StoreError):
    """An object's bytes on disk do not hash to its id."""


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one garbage collection did."""

    kept: int
    deleted: int
    deleted_bytes: int
    memo_dropped: int


def default_store_dir() -> Path:
    """``$WARPMESH_STORE``, else the per-user cache directory (XDG on Linux, Caches on macOS)."""
    env = os.environ.get("WARPMESH_STORE")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "warpmesh" / "store"


class Store:
    """A content-addressed store of blobs and trees (thread-safe; several processes may share it)."""

    def __init__(self, root: str | os.PathLike[str], *, inline_max: int = DEFAULT_INLINE_MAX,
                 cache_entries: int = 65536) -> None:
        self.root = Path(root)
        self.inline_max = inline_max
        self._objects_dir = self.root / "objects"
        try:
            self._objects_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store at {self.root}: {exc.strerror}; "
                             "pass --store DIR or set WARPMESH_STORE to a writable directory") from exc
        self._lock = threading.RLock()
        # Write-behind rows (see the module doc): id -> objects row, key -> memo row, touched ids.
        self._pend_obj: dict[bytes, tuple[bytes, int, int, bytes | None, float]] = {}
        self._pend_memo: dict[bytes, tuple[bytes, int, bytes, float]] = {}
        self._pend_touch: dict[bytes, float] = {}
        self._pend_since: float | None = None  # when the oldest pending row was written
        try:
            self._db = sqlite3.connect(self.root / "index.sqlite", check_same_thread=False,
                                       isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a power cut may lose the last commits (cache entries and objects that can be
            # recomputed) but never corrupts the index.
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise StoreError(f"store {self.root} has index schema v{version}, this warpmesh "
                                 f"speaks v{_SCHEMA_VERSION}; use another --store directory")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            # One cursor for memo lookups, used under the lock (Connection.execute makes a new one
            # per call, a noticeable part of a job's few-key lookup).
            self._memo_cur = self._db.cursor()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the store index {self.root / 'index.sqlite'} is unreadable ({exc}); "
                             "move it aside and the store will rebuild an empty index") from exc
        # id -> (kind, size) of objects known to be present; trees decoded recently.
        self._present: OrderedDict[bytes, tuple[Kind, int, float]] = OrderedDict()
        self._trees: OrderedDict[bytes, tuple[TreeEntry, ...]] = OrderedDict()
        # Recently written or read small objects (job results are mostly tiny and read by parents).
        self._small: OrderedDict[bytes, tuple[Kind, bytes]] = OrderedDict()
        self._cache_entries = cache_entries
        # entries tuple -> the id of the tree they make (see put_tree)
        self._tree_ids: dict[tuple[TreeEntry, ...], bytes] = {}
        # bytes of a blob up to SMALL_ID_MAX long -> its id
        self._small_ids: dict[bytes, bytes] = {}
        self.put_tree(())  # the empty tree is always present

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        """Commit pending index writes and close. The store must not be used afterwards."""
        with self._lock:
            self.flush()
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Write pending index rows (objects, memo entries) to SQLite in one transaction."""
        with self._lock:
            if not (self._pend_obj or self._pend_memo or self._pend_touch):
                return
            self._db.execute("BEGIN")
            try:
                # In key order: each B-tree page is then visited once, in one pass.
                self._db.executemany("INSERT INTO objects VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
                                     "SET created = excluded.created", sorted(self._pend_obj.values()))
                self._db.executemany("INSERT OR REPLACE INTO memo VALUES (?, ?, ?, ?)", sorted(self._pend_memo.values()))
                self._db.executemany("UPDATE objects SET created = ? WHERE id = ?",
                                     [(t, oid) for oid, t in self._pend_touch.items()])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._pend_obj.clear()
            self._pend_memo.clear()
            self._pend_touch.clear()
            self._pend_since = None

    def _maybe_flush(self) -> None:
        # Called with the lock held, after adding a pending row. The clock starts at the oldest
        # pending row (not at the last commit), so the first write after a quiet spell does not
        # commit at once on its own -- which cost every top-level run an extra commit.
        if self._pend_since is None:
            self._pend_since = time.monotonic()
        elif time.monotonic() - self._pend_since >= COMMIT_EVERY_S:
            self.flush()
            return
        if len(self._pend_obj) + len(self._pend_memo) >= COMMIT_EVERY_WRITES:
            self.flush()

    # -- writing ---------------------------------------------------------------------------------

    def put_blob(self, data: bytes | bytearray | memoryview) -> bytes:
        """Store a blob; return its id."""
        data = bytes(data)
        if len(data) <= SMALL_ID_MAX:
            # Tiny blobs (job results, salts, counters) recur: hash each distinct one once.
            oid = self._small_ids.get(data)
            if oid is None:
                oid = blob_id(data)
                if len(self._small_ids) >= self._cache_entries:
                    self._small_ids.clear()
                self._small_ids[data] = oid
        else:
            oid = blob_id(data)
        self._put(oid, _BLOB, data)
        return oid

    def put_tree(self, entries: Iterable[TreeEntry] | Mapping[str, Ref]) -> bytes:
        """Store a tree built from ``entries`` (any order); every entry must already be present."""
        known = None
        if isinstance(entries, tuple):
            # The same entries again (a job's args under a new salt, a fold's results): skip the
            # validation, sorting, encoding and hashing they went through the first time.
            try:
                known = self._tree_ids.get(entries)
            except TypeError:  # an unhashable id (bytearray): encode it below, which normalizes it
                known = None
            if known is not None and self._fresh(known):
                return known
        if isinstance(entries, tuple | list):
            norm = entries
        elif isinstance(entries, Mapping):
            norm = [TreeEntry(name, ref.kind, ref.id) for name, ref in entries.items()]
        else:
            norm = list(entries)
        oid, data, decoded = make_tree_sorted(norm)
        if self._fresh(oid):
            self._remember_tree_id(entries, oid)
            return oid
        for e in norm:
            got = self.kind_of(e.id)
            if got is None:
                raise ObjectNotFound(f"tree entry {e.name!r} names {e.kind.name.lower()} "
                                     f"{short(e.id)}, which is not in the store; put it first")
            if got is not e.kind:
                raise StoreError(f"tree entry {e.name!r} says {e.kind.name.lower()} but "
                                 f"{short(e.id)} is a {got.name.lower()}")
        self._put(oid, _TREE, data)
        self._remember_tree_id(entries, oid)
        # A tree just written is usually read next (a job's args, a fold's children): keep it
        # decoded, as get_tree would.
        with self._lock:
            self._trees[oid] = decoded
            if len(self._trees) > self._cache_entries:
                self._trees.popitem(last=False)
        return oid

    def _remember_tree_id(self, entries: object, oid: bytes) -> None:
        if isinstance(entries, tuple):
            if len(self._tree_ids) >= self._cache_entries:
                self._tree_ids.clear()
            with contextlib.suppress(TypeError):  # unhashable entries: just not remembered
                self._tree_ids[entries] = oid

    def put_verified(self, expected: Ref, data: bytes | bytearray | memoryview) -> None:
        """Store bytes received from elsewhere, refusing them unless they hash to ``expected``.

        Checked before anything is written. Trees are also checked to be canonical and complete.
        """
        data = bytes(data)
        got = object_id(expected.kind, data)
        if got != expected.id:
            raise CorruptObject(f"received bytes for {expected} hash to {got.hex()}; refused")
        if expected.kind is _TREE:
            entries = decode_tree(data)
            self.put_tree(entries)
        else:
            self._put(got, _BLOB, data)

    def put_computed(self, kind: Kind, oid: bytes, data: bytes) -> None:
        """Store an object whose id the caller computed from ``data`` with our own hashing code.

        For warpmesh's own planning code (request trees, canonical args), which already hashed the
        bytes; skips re-hashing and the presence check of tree entries. Never use it for bytes or
        ids from outside the process: use :meth:`put_verified`.
        """
        self._put(oid, kind, data)

    def _fresh(self, oid: bytes) -> bool:
        """Whether ``oid`` is known present and was written or touched recently.

        A put of an object that exists refreshes its ``created`` time once per
        :data:`TOUCH_INTERVAL`, so a garbage collection with a grace period longer than that never
        deletes an object a running job has just (re)written.
        """
        hit = self._present.get(oid)
        if hit is None:
            return False
        if hit[2] >= time.time() - TOUCH_INTERVAL:
            return True
        with self._lock:
            now = time.time()
            self._pend_touch[oid] = now
            self._present[oid] = (hit[0], hit[1], now)
            self._maybe_flush()
            return True

    def _put(self, oid: bytes, kind: Kind, data: bytes) -> None:
        if self._fresh(oid):
            return
        inline = len(data) <= self.inline_max
        if not inline:
            path = self._path(oid)
            if not path.exists():
                path.parent.mkdir(exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                    os.replace(tmp, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
        with self._lock:
            now = time.time()
            self._pend_obj[oid] = (oid, int(kind), len(data), data if inline else None, now)
            self._remember(oid, kind, len(data), now)
            if len(data) <= SMALL_CACHE_MAX:
                self._cache_small(oid, kind, data)
            self._maybe_flush()

    def _remember(self, oid: bytes, kind: Kind, size: int, created: float) -> None:
        self._present[oid] = (kind, size, created)
        if len(self._present) > self._cache_entries:
            self._present.popitem(last=False)

    def _cache_small(self, oid: bytes, kind: Kind, data: bytes) -> None:
        # Called with the lock held.
        self._small[oid] = (kind, data)
        if len(self._small) > self._cache_entries // 8:
            self._small.popitem(last=False)

    def _path(self, oid: bytes) -> Path:
        h = oid.hex()
        return self._objects_dir / h[:2] / h[2:]

    # -- reading ---------------------------------------------------------------------------------

    def stat(self, oid: bytes) -> tuple[Kind, int] | None:
        """``(kind, size)`` of an object, or ``None`` if it is not here."""
        hit = self._present.get(oid)
        if hit is not None:
            return hit[0], hit[1]
        if len(oid) != ID_LEN:
            return None
        with self._lock:
            pend = self._pend_obj.get(oid)
            if pend is not None:
                return _KIND[pend[1]], pend[2]
            row = self._db.execute("SELECT kind, size, created FROM objects WHERE id = ?",
                                   (oid,)).fetchone()
            if row is None:
                return None
            kind, size = _KIND[row[0]], row[1]
            self._remember(oid, kind, size, row[2])
            return kind, size

    def kind_of(self, oid: bytes) -> Kind | None:
        """The kind of an object, or ``None`` if it is not here."""
        hit = self._present.get(oid)  # stat's first step, inline: asked several times per job
        if hit is not None:
            return hit[0]
        st = self.stat(oid)
        return None if st is None else st[0]

    def has(self, oid: bytes) -> bool:
        return oid in self._present or self.stat(oid) is not None

    def read(self, oid: bytes) -> tuple[Kind, bytes]:
        """The kind and stored bytes of an object."""
        hit = self._small.get(oid)
        if hit is not None:
            return hit
        with self._lock:
            pend = self._pend_obj.get(oid)
            if pend is not None:
                row = (pend[1], pend[3])
            else:
                row = self._db.execute("SELECT kind, data FROM objects WHERE id = ?", (oid,)).fetchone()
        if row is None:
            raise ObjectNotFound(f"object {short(oid)} is not in the store")
        kind = _KIND[row[0]]
        data = row[1]
        if data is None:
            path = self._path(oid)
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise CorruptObject(f"object {oid.hex()} is indexed but its file {path} is missing; "
                                    "run the job again (or re-import the data) to restore it") from None
        if object_id(kind, data) != oid:
            raise CorruptObject(f"object {oid.hex()} is corrupt ({path if row[1] is None else 'index row'}"
                                " does not hash to its id); delete it and re-run the job that made it")
        data = bytes(data)
        if len(data) <= SMALL_CACHE_MAX:
            with self._lock:
                self._cache_small(oid, kind, data)
        return kind, data

    def read_range(self, oid: bytes, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of an object, *without* re-hashing the whole object.

        For serving a large object to a peer in pieces (the peer verifies what it receives): read
        the whole object once with :meth:`read` (which verifies it), then serve ranges from here.
        """
        st = self.stat(oid)
        if st is None:
            raise ObjectNotFound(f"object {short(oid)} is not in the store")
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        if st[1] <= self.inline_max:
            return self.read(oid)[1][offset: offset + length]
        path = self._path(oid)
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            raise CorruptObject(f"object {oid.hex()} is indexed but its file {path} is missing; "
                                "run the job again (or re-import the data) to restore it") from None

    def get_blob(self, oid: bytes) -> bytes:
        """The bytes of a blob."""
        kind, data = self.read(oid)
        if kind is not _BLOB:
            raise StoreError(f"{short(oid)} is a tree, not a blob")
        return data

    def get_tree(self, oid: bytes) -> tuple[TreeEntry, ...]:
        """The entries of a tree, sorted by name."""
        hit = self._trees.get(oid)
        if hit is not None:
            return hit
        kind, data = self.read(oid)
        if kind is not _TREE:
            raise StoreError(f"{short(oid)} is a blob, not a tree")
        entries = decode_tree(data)
        with self._lock:
            self._trees[oid] = entries
            if len(self._trees) > self._cache_entries:
                self._trees.popitem(last=False)
        return entries

    # -- pins, memo, gc --------------------------------------------------------------------------

    def pin(self, name: str, ref: Ref) -> None:
        """Keep ``ref`` (and everything it reaches) through garbage collection, under ``name``."""
        if self.kind_of(ref.id) is not ref.kind:
            raise ObjectNotFound(f"cannot pin {ref}: not in the store")
        with self._lock:
            self.flush()
            self._db.execute("INSERT OR REPLACE INTO pins VALUES (?, ?, ?, ?)",
                             (name, int(ref.kind), ref.id, time.time()))

    def unpin(self, name: str) -> bool:
        """Remove a pin; return whether it existed."""
        with self._lock:
            return self._db.execute("DELETE FROM pins WHERE name = ?", (name,)).rowcount > 0

    def pins(self) -> dict[str, Ref]:
        with self._lock:
            rows = self._db.execute("SELECT name, kind, id FROM pins ORDER BY name").fetchall()
        return {name: Ref(_KIND[kind], oid) for name, kind, oid in rows}

    def memo_get(self, key: bytes) -> Ref | None:
        """The memoized result of request ``key``, if it and its object are here."""
        with self._lock:
            pend = self._pend_memo.get(key)
            if pend is not None:
                row = (pend[1], pend[2])
            else:
                row = self._db.execute("SELECT kind, id FROM memo WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        ref = Ref(_KIND[row[0]], row[1])
        return ref if self.kind_of(ref.id) is ref.kind else None

    def memo_get_many(self, keys: list[bytes]) -> dict[bytes, Ref]:
        """Memoized results for those of ``keys`` that have one (one query per 500 keys)."""
        found: dict[bytes, Ref] = {}
        with self._lock:
            rest = []
            for k in keys:
                pend = self._pend_memo.get(k)
                if pend is not None:
                    found[k] = Ref(_KIND[pend[1]], pend[2])
                else:
                    rest.append(k)
            cur = self._memo_cur
            for i in range(0, len(rest), 500):
                chunk = rest[i : i + 500]
                rows = cur.execute(_memo_select(len(chunk)), chunk).fetchall()
                for key, kind, oid in rows:
                    found[key] = Ref(_KIND[kind], oid)
        return {k: r for k, r in found.items() if self.kind_of(r.id) is r.kind} if found else found

    def memo_put(self, key: bytes, ref: Ref) -> None:
        with self._lock:
            self._pend_memo[key] = (key, int(ref.kind), ref.id, time.time())
            self._maybe_flush()

    def memo_count(self) -> int:
        with self._lock:
            self.flush()
            return self._db.execute("SELECT count(*) FROM memo").fetchone()[0]

    def object_count(self) -> int:
        with self._lock:
            self.flush()
            return self._db.execute("SELECT count(*) FROM objects").fetchone()[0]

    def gc(self, *, grace_seconds: float = 3600.0) -> GcReport:
        """Delete objects unreachable from any pin and older than ``grace_seconds``.

        ``grace_seconds`` must exceed :data:`TOUCH_INTERVAL` plus the longest running job, so that
        nothing a running job wrote or re-wrote is collected under it (the default is an hour).

        Memo entries whose result was deleted are dropped with it. Objects written while this runs
        are younger than the cutoff and therefore kept.
        """
        cutoff = time.time() - grace_seconds
        marked: set[bytes] = set()
        stack = [ref for ref in self.pins().values()]
        while stack:
            ref = stack.pop()
            if ref.id in marked:
                continue
            marked.add(ref.id)
            if ref.kind is _TREE:
                try:
                    stack.extend(e.ref for e in self.get_tree(ref.id))
                except ObjectNotFound:
                    continue
        marked.add(EMPTY_TREE_ID)
        with self._lock:
            self.flush()
            rows = self._db.execute("SELECT id, size, data IS NULL FROM objects WHERE created < ?",
                                    (cutoff,)).fetchall()
            doomed = [(oid, size, is_file) for oid, size, is_file in rows if oid not in marked]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM objects WHERE id = ?", [(d[0],) for d in doomed])
                before = self._db.execute("SELECT count(*) FROM memo").fetchone()[0]
                self._db.execute("DELETE FROM memo WHERE id NOT IN (SELECT id FROM objects)")
                after = self._db.execute("SELECT count(*) FROM memo").fetchone()[0]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            for oid, _, _ in doomed:
                self._present.pop(oid, None)
                self._trees.pop(oid, None)
                self._small.pop(oid, None)
            total = self._db.execute("SELECT count(*) FROM objects").fetchone()[0]
        for oid, _, is_file in doomed:
            if is_file:
                with contextlib.suppress(FileNotFoundError):
                    self._path(oid).unlink()
        return GcReport(kept=total, deleted=len(doomed), deleted_bytes=sum(d[1] for d in doomed),
                        memo_dropped=before - after)

