"""The in-memory Raft log: retained entries, snapshot boundary, commit/applied/persisted pointers.

Positions are plain arithmetic (``entries[i - offset]``). The log may keep a *trailing* window of
entries at or below the snapshot index (so a follower just behind a compaction catches up from the
log, not with a whole snapshot), hence ``offset <= snap_index + 1``.

Pointers, always ``applied <= commit <= last_index``:

* ``commit`` - highest index known committed. Never moves backwards, and nothing at or below it is
  ever truncated: :meth:`maybe_append` refuses such a batch instead (PySyncObj's "truncating
  already-applied log entries" cannot happen here).
* ``applied`` - highest index handed to the application.
* ``persisted`` - highest index the host confirmed durable (and still identical in memory).
* ``unstable`` - first index not yet handed to the host for persisting.
"""

from __future__ import annotations

from warpmesh.errors import WarpmeshError
from warpmesh.raft.types import Entry


class CommittedTruncation(WarpmeshError, ValueError):
    """A batch would overwrite a committed entry (a buggy or hostile leader); it is refused."""


class RaftLog:
    __slots__ = ("applied", "commit", "entries", "offset", "persisted", "snap_index", "snap_term", "unstable",
                 "written_from")

    def __init__(self, snap_index: int = 0, snap_term: int = 0, entries: list[Entry] | None = None,
                 commit: int = 0) -> None:
        self.snap_index = snap_index
        self.snap_term = snap_term
        self.entries: list[Entry] = list(entries or ())
        self.offset = self.entries[0].index if self.entries else snap_index + 1
        last = self.last_index()
        self.commit = min(max(commit, snap_index), last)
        self.applied = snap_index
        self.persisted = last
        self.unstable = last + 1
        self.written_from = 0

    # -- reading -------------------------------------------------------------------------------
    def last_index(self) -> int:
        e = self.entries
        return e[-1].index if e else self.snap_index

    def last_term(self) -> int:
        e = self.entries
        return e[-1].term if e else self.snap_term

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if compacted away or beyond the end."""
        i = index - self.offset
        if 0 <= i < len(self.entries):
            return self.entries[i].term
        if index == self.snap_index:
            return self.snap_term
        if index == 0:
            return 0
        return None

    def entry(self, index: int) -> Entry | None:
        i = index - self.offset
        if 0 <= i < len(self.entries):
            return self.entries[i]
        return None

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with ``lo <= index < hi`` (clamped to what is retained)."""
        lo = max(lo, self.offset)
        hi = min(hi, self.last_index() + 1)
        if lo >= hi:
            return []
        return self.entries[lo - self.offset:hi - self.offset]

    def has(self, index: int) -> bool:
        return self.offset <= index <= self.last_index()

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a candidate's log at least as up to date as ours (snapshot-aware)."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest ``i <= index`` whose term is ``<= term`` (etcd's findConflictByTerm), with its term.

        Used both by a follower building a rejection hint and by the leader interpreting one, so a
        divergent suffix is skipped a whole term at a time instead of one entry per round trip.
        """
        i = min(index, self.last_index())
        while i >= self.offset:
            t = self.entries[i - self.offset].term
            if t <= term:
                return i, t
            i -= 1
        # Ran into the compacted prefix: the snapshot boundary (or 0) is the best we know.
        boundary = self.term(i)
        return i, (boundary if boundary is not None else 0)

    # -- writing -------------------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> None:
        """Append entries that start right after the last index (the leader's own proposals)."""
        if not entries:
            return
        assert entries[0].index == self.last_index() + 1, "non-contiguous append"
        self.entries.extend(entries)

    def maybe_append(self, prev_index: int, prev_term: int, entries: list[Entry]) -> int | None:
        """Follower side of AppendEntries. Returns the last index the batch proves we match, or None
        when ``(prev_index, prev_term)`` does not match. Entries at or below ``commit`` are skipped
        without comparison (committed entries are identical on every log, §5.4.3). Sets
        ``written_from`` to the first index written (0 if the batch was already here)."""
        self.written_from = 0
        if prev_index < self.commit:
            # The part of the batch at or below commit is already here, identical; skip it.
            skip = self.commit - prev_index
            if skip >= len(entries):
                return prev_index + len(entries)
            prev_index = self.commit
            prev_term = entries[skip - 1].term
            entries = entries[skip:]
            if self.term(prev_index) != prev_term:
                raise CommittedTruncation(f"leader's entry {prev_index} differs from our committed one")
        elif self.term(prev_index) != prev_term:
            return None
        last_new = prev_index + len(entries)
        # Find the first entry that is new or conflicts (term differs); everything before it is here.
        last = self.last_index()
        start = 0
        for e in entries:
            if e.index > last:
                break
            t = self.term(e.index)
            if t != e.term:
                if e.index <= self.commit:
                    raise CommittedTruncation(f"entry {e.index} conflicts with a committed entry")
                self._truncate_from(e.index)
                break
            start += 1
        if start < len(entries):
            self.written_from = entries[start].index
            self.entries.extend(entries[start:])
        return last_new

    def _truncate_from(self, index: int) -> None:
        assert index > self.commit, "never truncate committed entries"
        del self.entries[index - self.offset:]
        if self.persisted >= index:
            self.persisted = index - 1
        if self.unstable > index:
            self.unstable = index

    def commit_to(self, index: int) -> bool:
        index = min(index, self.last_index())
        if index > self.commit:
            self.commit = index
            return True
        return False

    def take_unstable(self) -> list[Entry]:
        """Entries the host must persist next (everything from the first unpersisted/rewritten one)."""
        if self.unstable > self.last_index():
            return []
        out = self.entries[self.unstable - self.offset:]
        self.unstable = self.last_index() + 1
        return out

    def stable_to(self, index: int, term: int) -> None:
        """The host made entries through ``(index, term)`` durable. Ignored if that entry has since
        been replaced in memory (a newer write is on its way)."""
        if index > self.persisted and self.term(index) == term:
            self.persisted = index

    def compact(self, through: int) -> None:
        """Drop retained entries with index <= ``through`` (they are covered by a snapshot)."""
        if through < self.offset:
            return
        assert through <= self.applied, "compaction beyond applied"
        drop = min(through - self.offset + 1, len(self.entries))
        del self.entries[:drop]
        self.offset = through + 1

    def restore(self, snap_index: int, snap_term: int) -> None:
        """Install a snapshot from the leader: keep our suffix if it extends the snapshot, else reset."""
        if self.term(snap_index) == snap_term and self.has(snap_index):
            self.compact_unchecked(snap_index)
            self.persisted = max(self.persisted, snap_index)
        else:
            self.entries = []
            self.offset = snap_index + 1
            self.unstable = snap_index + 1
            self.persisted = snap_index
        self.snap_index = snap_index
        self.snap_term = snap_term
        self.commit = max(self.commit, snap_index)
        self.applied = max(self.applied, snap_index)
        if self.unstable <= snap_index:
            self.unstable = snap_index + 1

    def compact_unchecked(self, through: int) -> None:
        drop = min(through - self.offset + 1, len(self.entries))
        if drop > 0:
            del self.entries[:drop]
        self.offset = through + 1
