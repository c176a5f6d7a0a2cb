"""RaftStorage conformance: one suite, run against InMemoryRaftStorage and SqliteRaftStorage.

Ported from the reference's 42-case RaftStorageConformanceSuite (term/vote round trips and the
atomic term+vote write; append, read ranges, truncation and contiguity; snapshots, overwrite and
empty state; plausibility-edge values; survival across reopen; entry fields). The reference's
"leader for term" record has no counterpart here (a restarted node re-learns the leader from the
first AppendEntries of the term); its cases are replaced by the commit-hint and batch cases.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from warpmesh.raft.membership import Membership
from warpmesh.raft.storage import InMemoryRaftStorage, RaftStorage, SqliteRaftStorage, StorageBatch
from warpmesh.raft.types import MAX_INDEX, MAX_TERM, Entry, EntryKind, HardState, Snapshot, SnapshotMeta

Backend = tuple[Callable[[], RaftStorage], Callable[[RaftStorage], RaftStorage]]


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened: list[RaftStorage] = []
    if request.param == "memory":
        def new() -> RaftStorage:
            s = InMemoryRaftStorage()
            opened.append(s)
            return s

        def reopen(s: RaftStorage) -> RaftStorage:
            # Rebuild a fresh instance through the public read API, as the reference does.
            t = InMemoryRaftStorage()
            snap = s.load_snapshot()
            t.write(StorageBatch(snapshot=snap, entries=s.entries(), hard_state=s.hard_state()))
            return t
    else:
        path = tmp_path / "raft.sqlite"

        def new() -> RaftStorage:
            s = SqliteRaftStorage(path)
            opened.append(s)
            return s

        def reopen(s: RaftStorage) -> RaftStorage:
            s.close()
            t = SqliteRaftStorage(path)
            opened.append(t)
            return t
    yield new, reopen
    for s in opened:
        s.close()


def E(i: int, t: int, data: bytes = b"", **kw: object) -> Entry:
    return Entry(i, t, EntryKind.NORMAL, data or f"{i}".encode(), **kw)  # type: ignore[arg-type]


MEM = Membership(frozenset({"a", "b", "c"}), frozenset({"l"}))


# -- term and vote ------------------------------------------------------------------------------

def test_fresh_storage_has_term_zero_and_no_vote(backend: Backend) -> None:
    s = backend[0]()
    assert s.term() == 0 and s.voted_for() is None and s.hard_state() == HardState()


def test_term_round_trips(backend: Backend) -> None:
    s = backend[0]()
    s.save_term(7)
    assert s.term() == 7


def test_vote_round_trips(backend: Backend) -> None:
    s = backend[0]()
    s.save_voted_for("n2")
    assert s.voted_for() == "n2"


def test_vote_can_be_cleared(backend: Backend) -> None:
    s = backend[0]()
    s.save_voted_for("n2")
    s.save_voted_for(None)
    assert s.voted_for() is None


def test_term_and_vote_are_saved_together(backend: Backend) -> None:
    s = backend[0]()
    s.save_term_and_vote(9, "n3")
    assert (s.term(), s.voted_for()) == (9, "n3")


def test_saving_term_keeps_the_vote_and_vice_versa(backend: Backend) -> None:
    s = backend[0]()
    s.save_term_and_vote(3, "n1")
    s.save_term(4)
    assert s.voted_for() == "n1"
    s.save_voted_for("n2")
    assert s.term() == 4


def test_term_at_the_plausibility_edge_keeps_every_bit(backend: Backend) -> None:
    s = backend[0]()
    s.save_term(MAX_TERM - 1)  # needs all mantissa bits: a float column would round it
    assert s.term() == MAX_TERM - 1


def test_hard_state_with_commit_hint_round_trips(backend: Backend) -> None:
    s = backend[0]()
    s.save_hard_state(HardState(5, "x", 42))
    assert s.hard_state() == HardState(5, "x", 42)


# -- log ---------------------------------------------------------------------------------------

def test_fresh_storage_has_no_entries(backend: Backend) -> None:
    s = backend[0]()
    assert s.entries() == [] and s.last_index() == 0


def test_append_then_read_all(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(1, 1), E(2, 1), E(3, 2)])
    assert s.entries() == [E(1, 1), E(2, 1), E(3, 2)] and s.last_index() == 3


def test_appends_accumulate(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(1, 1)])
    s.append([E(2, 1), E(3, 1)])
    assert [e.index for e in s.entries()] == [1, 2, 3]


def test_read_from_an_index(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(i, 1) for i in range(1, 6)])
    assert [e.index for e in s.entries(3)] == [3, 4, 5]


def test_read_a_range(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(i, 1) for i in range(1, 6)])
    assert [e.index for e in s.entries(2, 4)] == [2, 3]


def test_read_past_the_end_is_empty(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(1, 1)])
    assert s.entries(5) == []


def test_truncate_from_removes_the_suffix(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(i, 1) for i in range(1, 6)])
    s.truncate_from(3)
    assert [e.index for e in s.entries()] == [1, 2] and s.last_index() == 2


def test_truncate_everything(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(i, 1) for i in range(1, 4)])
    s.truncate_from(1)
    assert s.entries() == [] and s.last_index() == 0


def test_truncate_past_the_end_is_a_noop(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(1, 1)])
    s.truncate_from(10)
    assert [e.index for e in s.entries()] == [1]


def test_append_overwrites_a_conflicting_suffix(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(i, 1) for i in range(1, 6)])
    s.append([E(3, 2, b"new3"), E(4, 2, b"new4")])
    assert [(e.index, e.term) for e in s.entries()] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert s.entries(3, 4)[0].data == b"new3"


def test_append_after_truncate_continues_contiguously(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(i, 1) for i in range(1, 6)])
    s.truncate_from(4)
    s.append([E(4, 3)])
    assert [(e.index, e.term) for e in s.entries()] == [(1, 1), (2, 1), (3, 1), (4, 3)]


def test_entry_fields_round_trip(backend: Backend) -> None:
    s = backend[0]()
    ents = [
        Entry(1, 1, EntryKind.NOOP, b""),
        Entry(2, 1, EntryKind.CONFIG, MEM.to_bytes()),
        Entry(3, 2, EntryKind.NORMAL, b"\x00\xff" * 100, "client/1", 42, 40),
        Entry(4, 2, EntryKind.NORMAL, b""),
    ]
    s.append(ents)
    got = s.entries()
    assert got == ents and got[2].key is not None and got[2].key.seq == 42 and got[3].key is None


def test_large_payload_round_trips(backend: Backend) -> None:
    s = backend[0]()
    big = bytes(range(256)) * 4096  # 1 MiB
    s.append([E(1, 1, big)])
    assert s.entries()[0].data == big


def test_index_and_term_at_the_plausibility_edge(backend: Backend) -> None:
    s = backend[0]()
    s.save_term(MAX_TERM)
    s.append([Entry(MAX_INDEX - 1, MAX_TERM, EntryKind.NORMAL, b"edge")])
    got = s.entries()[0]
    assert (got.index, got.term) == (MAX_INDEX - 1, MAX_TERM)


def test_discard_through_drops_the_prefix(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(i, 1) for i in range(1, 11)])
    s.discard_through(4)
    assert [e.index for e in s.entries()] == list(range(5, 11)) and s.last_index() == 10


def test_discard_through_is_idempotent(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(i, 1) for i in range(1, 11)])
    s.discard_through(4)
    s.discard_through(4)
    s.discard_through(2)
    assert next(e.index for e in s.entries()) == 5


# -- snapshots ---------------------------------------------------------------------------------

def test_no_snapshot_initially(backend: Backend) -> None:
    assert backend[0]().load_snapshot() is None


def test_snapshot_round_trips_with_its_config(backend: Backend) -> None:
    s = backend[0]()
    snap = Snapshot(SnapshotMeta(10, 3, MEM), b"state")
    s.save_snapshot(snap)
    assert s.load_snapshot() == snap


def test_a_newer_snapshot_replaces_the_older(backend: Backend) -> None:
    s = backend[0]()
    s.save_snapshot(Snapshot(SnapshotMeta(10, 3, MEM), b"old"))
    s.save_snapshot(Snapshot(SnapshotMeta(20, 4, MEM), b"new"))
    assert s.load_snapshot().data == b"new" and s.load_snapshot().index == 20  # type: ignore[union-attr]


def test_empty_state_snapshot(backend: Backend) -> None:
    s = backend[0]()
    s.save_snapshot(Snapshot(SnapshotMeta(5, 1, MEM), b""))
    assert s.load_snapshot().data == b""  # type: ignore[union-attr]


def test_joint_config_snapshot_round_trips(backend: Backend) -> None:
    s = backend[0]()
    joint = Membership(frozenset({"a", "b"}), frozenset(), frozenset({"a", "c"}))
    s.save_snapshot(Snapshot(SnapshotMeta(5, 1, joint), b"j"))
    assert s.load_snapshot().meta.membership == joint  # type: ignore[union-attr]


def test_last_index_falls_back_to_the_snapshot(backend: Backend) -> None:
    s = backend[0]()
    s.write(StorageBatch(snapshot=Snapshot(SnapshotMeta(30, 2, MEM), b""), log_reset=True))
    assert s.last_index() == 30 and s.entries() == []


# -- batches -----------------------------------------------------------------------------------

def test_batch_applies_snapshot_compaction_entries_and_hard_state_together(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(i, 1) for i in range(1, 11)])
    s.write(StorageBatch(snapshot=Snapshot(SnapshotMeta(8, 1, MEM), b"s8"), compact_through=6,
                         entries=[E(11, 2)], hard_state=HardState(2, "b", 9)))
    assert [e.index for e in s.entries()] == [7, 8, 9, 10, 11]
    assert s.hard_state() == HardState(2, "b", 9) and s.load_snapshot().index == 8  # type: ignore[union-attr]


def test_batch_log_reset_discards_a_conflicting_log(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(i, 1) for i in range(1, 6)])
    s.write(StorageBatch(snapshot=Snapshot(SnapshotMeta(20, 3, MEM), b"x"), log_reset=True))
    assert s.entries() == [] and s.last_index() == 20
    s.append([E(21, 3)])
    assert [e.index for e in s.entries()] == [21]


def test_empty_batch_changes_nothing(backend: Backend) -> None:
    s = backend[0]()
    s.append([E(1, 1)])
    s.write(StorageBatch())
    assert [e.index for e in s.entries()] == [1]


# -- reopen ------------------------------------------------------------------------------------

def test_term_and_vote_survive_reopen(backend: Backend) -> None:
    new, reopen = backend
    s = new()
    s.save_term_and_vote(12, "n5")
    s = reopen(s)
    assert (s.term(), s.voted_for()) == (12, "n5")


def test_log_survives_reopen(backend: Backend) -> None:
    new, reopen = backend
    s = new()
    ents = [E(1, 1), E(2, 1, b"x", client="c", seq=1, floor=1), E(3, 2)]
    s.append(ents)
    s = reopen(s)
    assert s.entries() == ents and s.last_index() == 3


def test_truncation_survives_reopen(backend: Backend) -> None:
    new, reopen = backend
    s = new()
    s.append([E(i, 1) for i in range(1, 6)])
    s.truncate_from(3)
    s = reopen(s)
    assert s.last_index() == 2


def test_snapshot_and_its_config_survive_reopen(backend: Backend) -> None:
    new, reopen = backend
    s = new()
    snap = Snapshot(SnapshotMeta(10, 3, MEM), b"persist")
    s.save_snapshot(snap)
    s = reopen(s)
    assert s.load_snapshot() == snap


def test_compaction_survives_reopen(backend: Backend) -> None:
    new, reopen = backend
    s = new()
    s.append([E(i, 1) for i in range(1, 11)])
    s.write(StorageBatch(snapshot=Snapshot(SnapshotMeta(6, 1, MEM), b""), compact_through=6))
    s = reopen(s)
    assert next(e.index for e in s.entries()) == 7 and s.load_snapshot().index == 6  # type: ignore[union-attr]


def test_commit_hint_survives_reopen(backend: Backend) -> None:
    new, reopen = backend
    s = new()
    s.append([E(1, 1), E(2, 1)])
    s.save_hard_state(HardState(1, None, 2))
    s = reopen(s)
    assert s.hard_state().commit == 2


def test_load_validates_and_returns_the_whole_state(backend: Backend) -> None:
    new, _ = backend
    s = new()
    s.write(StorageBatch(snapshot=Snapshot(SnapshotMeta(4, 1, MEM), b"s"),
                         entries=[E(3, 1), E(4, 1), E(5, 2)], hard_state=HardState(2, None, 99)))
    st = s.load()
    assert st.snapshot is not None and [e.index for e in st.entries] == [3, 4, 5]
    assert st.hard_state.commit == 5  # clamped to the last entry


def test_load_refuses_a_log_with_a_gap(backend: Backend) -> None:
    from warpmesh.raft.errors import CorruptState

    s = backend[0]()
    s.save_term(3)
    if isinstance(s, SqliteRaftStorage):
        s._db.execute("INSERT INTO log VALUES (1, 1, 0, x'', NULL, NULL, NULL)")
        s._db.execute("INSERT INTO log VALUES (3, 1, 0, x'', NULL, NULL, NULL)")
    else:
        s._entries = [E(1, 1), E(3, 1)]  # type: ignore[attr-defined]
    with pytest.raises(CorruptState, match="not contiguous"):
        s.load()


def test_load_refuses_entries_above_the_stored_term(backend: Backend) -> None:
    from warpmesh.raft.errors import CorruptState

    s = backend[0]()
    s.append([E(1, 5)])
    s.save_term(3)
    with pytest.raises(CorruptState, match="above the stored term"):
        s.load()


def test_load_refuses_decreasing_entry_terms(backend: Backend) -> None:
    from warpmesh.raft.errors import CorruptState

    s = backend[0]()
    s.save_term(5)
    s.append([E(1, 3), E(2, 2)])
    with pytest.raises(CorruptState, match="decrease"):
        s.load()
