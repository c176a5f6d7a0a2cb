"""Log compaction and InstallSnapshot (Raft §7): trailing log, chunking, resume, restart recovery.

Ported from the reference's InstallSnapshotTest, CompactionTest, SnapshotRecoveryTest,
FinalizeInstalledSnapshotGuardTest, SnapshotReceiverTest, SnapshotSenderOffsetClampTest and
SnapshotJointConfigTest.
"""

from __future__ import annotations

import pytest

from warpmesh.raft.config import RaftConfig
from warpmesh.raft.messages import SnapshotChunk, SnapshotResponse
from warpmesh.raft.progress import ProgressState
from warpmesh.raft.storage import InMemoryRaftStorage, StorageBatch
from warpmesh.raft.testing import ScriptedCluster
from warpmesh.raft.types import Entry, EntryKind, HardState, Snapshot, SnapshotMeta


def cfg(**kw: object) -> RaftConfig:
    base: dict[str, object] = dict(election_timeout_min=0.1, election_timeout_max=0.2, heartbeat_interval=0.02)
    base.update(kw)
    return RaftConfig(**base)  # type: ignore[arg-type]


def fill(c: ScriptedCluster, leader: str, n: int) -> None:
    for i in range(n):
        c[leader].c.propose(f"v{i}".encode(), c.now)
    c.pump(leader)
    c.run(0.2)


def state_of(node) -> bytes:  # type: ignore[no-untyped-def]
    """The test application's state: all commands applied so far, joined."""
    return b",".join(node.commands())


def test_publishing_a_snapshot_compacts_the_log_but_keeps_the_trailing_entries() -> None:
    c = ScriptedCluster(3, config=cfg(trailing_entries=3))
    ld = c.wait_leader()
    fill(c, ld.id, 10)
    applied = ld.c.log.applied
    assert ld.c.publish_snapshot(applied, b"S", c.now)
    c.pump(ld.id)
    log = ld.c.log
    assert log.snap_index == applied and log.offset == applied - 3 + 1
    assert next(e.index for e in ld.storage.entries()) == applied - 2
    assert ld.storage.load_snapshot().index == applied  # type: ignore[union-attr]


def test_a_snapshot_beyond_the_applied_index_is_refused_and_an_older_one_ignored() -> None:
    c = ScriptedCluster(1)
    ld = c.wait_leader()
    fill(c, ld.id, 3)
    with pytest.raises(ValueError):
        ld.c.publish_snapshot(ld.c.log.applied + 1, b"", c.now)
    assert ld.c.publish_snapshot(3, b"a", c.now)
    assert not ld.c.publish_snapshot(2, b"old", c.now)


def test_offline_follower_rejoins_via_install_snapshot_after_compaction() -> None:
    c = ScriptedCluster(3, config=cfg(trailing_entries=0))
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    c.crash(f.id)
    fill(c, ld.id, 20)
    ld.c.publish_snapshot(ld.c.log.applied, state_of(ld), c.now)
    c.pump(ld.id)
    c.start(f.id)
    fill(c, ld.id, 2)
    c.run(0.5)
    assert f.installs and f.installs[-1].data == b",".join(f"v{i}".encode() for i in range(20))
    assert f.commands() == [b"v0", b"v1"]  # the second fill, applied after the install
    assert f.c.commit == ld.c.commit


def test_a_follower_just_behind_the_snapshot_catches_up_from_the_trailing_log() -> None:
    c = ScriptedCluster(3, config=cfg(trailing_entries=50))
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    c.crash(f.id)
    fill(c, ld.id, 20)
    ld.c.publish_snapshot(ld.c.log.applied, state_of(ld), c.now)
    c.pump(ld.id)
    c.start(f.id)
    c.run(0.5)
    assert f.installs == [] and len(f.commands()) == 20
    assert not [m for m in c.delivered if isinstance(m, SnapshotChunk)]


def test_chunked_transfer_reassembles_under_a_tiny_chunk_size() -> None:
    c = ScriptedCluster(3, config=cfg(trailing_entries=0, snapshot_chunk_bytes=32, snapshot_inflight_chunks=2))
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    c.crash(f.id)
    fill(c, ld.id, 5)
    data = bytes(range(256)) * 4  # 1000+ bytes
    ld.c.publish_snapshot(ld.c.log.applied, data, c.now)
    c.pump(ld.id)
    c.start(f.id)
    c.run(1.0)
    chunks = [m for m in c.delivered if isinstance(m, SnapshotChunk) and m.to == f.id]
    assert len(chunks) >= len(data) // 32 and all(len(m.data) <= 32 for m in chunks)
    assert f.installs[-1].data == data


def test_a_lost_chunk_resumes_from_the_gap_not_from_zero() -> None:
    c = ScriptedCluster(3, config=cfg(trailing_entries=0, snapshot_chunk_bytes=100, snapshot_inflight_chunks=4))
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    c.crash(f.id)
    fill(c, ld.id, 5)
    data = bytes(1000)
    ld.c.publish_snapshot(ld.c.log.applied, data, c.now)
    c.pump(ld.id)
    dropped: list[int] = []

    def drop_once(m):  # type: ignore[no-untyped-def]
        if isinstance(m, SnapshotChunk) and m.offset == 300 and not dropped:
            dropped.append(m.offset)
            return None
        return m

    c.filters.append(drop_once)
    c.start(f.id)
    c.run(1.0)
    offsets = [m.offset for m in c.delivered if isinstance(m, SnapshotChunk) and m.to == f.id]
    assert dropped == [300] and 300 in offsets
    assert offsets.count(0) == 1  # never restarted from the beginning
    assert f.installs[-1].data == data


def test_heartbeat_during_a_stalled_transfer_resumes_from_the_acked_offset() -> None:
    c = ScriptedCluster(3, config=cfg(trailing_entries=0, snapshot_chunk_bytes=100, snapshot_inflight_chunks=1))
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    c.crash(f.id)
    fill(c, ld.id, 3)
    ld.c.publish_snapshot(ld.c.log.applied, bytes(500), c.now)
    c.pump(ld.id)
    lost: list[int] = []

    def drop_acks(m):  # type: ignore[no-untyped-def]
        if isinstance(m, SnapshotResponse) and m.next_offset == 200 and len(lost) < 3:
            lost.append(1)
            return None
        return m

    c.filters.append(drop_acks)
    c.start(f.id)
    c.run(2.0)
    offsets = [m.offset for m in c.delivered if isinstance(m, SnapshotChunk) and m.to == f.id]
    assert offsets.count(0) == 1 and offsets.count(100) >= 2  # resent from the last acked offset
    assert f.installs[-1].data == bytes(500)


def test_malformed_ack_offsets_never_escape_the_snapshot_bounds() -> None:
    c = ScriptedCluster(3, config=cfg(trailing_entries=0, snapshot_chunk_bytes=100))
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    c.crash(f.id)
    fill(c, ld.id, 3)
    ld.c.publish_snapshot(ld.c.log.applied, bytes(500), c.now)
    c.pump(ld.id)
    pr = ld.c.prs[f.id]
    pr.become_snapshot(ld.c.snapshot)  # type: ignore[arg-type]
    idx = ld.c.snapshot.index  # type: ignore[union-attr]
    ld.c.step(SnapshotResponse(f.id, ld.id, ld.c.term, idx, 10**9, False), c.now)
    assert 0 <= pr.snap_acked <= 500 and pr.snap_sent <= 500
    c.start(f.id)
    c.run(1.0)
    assert f.installs and f.installs[-1].data == bytes(500)


def test_a_stale_install_at_or_below_commit_does_not_wipe_the_log() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    fill(c, ld.id, 5)
    f = next(n for n in c.live() if n is not ld)
    before = list(f.c.log.entries)
    m = SnapshotChunk(ld.id, f.id, ld.c.term, 2, 1, ld.c.membership, 3, 0, b"old")
    f.c.step(m, c.now)
    c.pump(f.id)
    assert f.c.log.entries == before and f.installs == []
    resp = [x for x in f.sent if isinstance(x, SnapshotResponse)][-1]
    assert resp.done


def test_an_oversize_snapshot_is_refused_by_the_receiver() -> None:
    c = ScriptedCluster(3, config=cfg(snapshot_max_bytes=100))
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    f.c.step(SnapshotChunk(ld.id, f.id, ld.c.term, 50, 1, ld.c.membership, 101, 0, b"x" * 10), c.now)
    assert f.c.snap_rx is None and f.c.stats["refused:snapshot_too_large"] == 1


def test_receiver_readvertises_its_offset_for_out_of_order_chunks() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    mem = ld.c.membership
    f.c.step(SnapshotChunk(ld.id, f.id, ld.c.term, 50, 1, mem, 30, 0, b"a" * 10), c.now)
    f.c.step(SnapshotChunk(ld.id, f.id, ld.c.term, 50, 1, mem, 30, 20, b"c" * 10), c.now)
    c.pump(f.id)
    resp = [x for x in f.sent if isinstance(x, SnapshotResponse)]
    assert [r.next_offset for r in resp[-2:]] == [10, 10]
    # A chunk of a different snapshot at a non-zero offset restarts the sender at 0.
    f.c.step(SnapshotChunk(ld.id, f.id, ld.c.term, 60, 1, mem, 30, 10, b"b" * 10), c.now)
    c.pump(f.id)
    assert [x for x in f.sent if isinstance(x, SnapshotResponse)][-1].next_offset == 0


def test_restart_recovers_the_snapshot_baseline_and_replays_the_tail() -> None:
    c = ScriptedCluster(3, config=cfg(trailing_entries=0))
    ld = c.wait_leader()
    fill(c, ld.id, 6)
    f = next(n for n in c.live() if n is not ld)
    f.c.publish_snapshot(4, b"upto4", c.now)
    c.pump(f.id)
    core = c.restart(f.id)
    assert core.log.snap_index == 4 and f.installs[0].data == b"upto4"
    c.run(0.3)
    assert next(e.index for e in f.applied) == 5  # replay starts after the snapshot


def test_restart_filters_the_compacted_prefix_when_a_discard_never_happened() -> None:
    """#1221: a crash between saving a snapshot and discarding the prefix leaves both on disk."""
    st = InMemoryRaftStorage()
    ents = [Entry(i, 1, EntryKind.NORMAL, b"") for i in range(1, 11)]
    from warpmesh.raft.membership import Membership

    snap = Snapshot(SnapshotMeta(6, 1, Membership.of(["n1"])), b"s")
    st.write(StorageBatch(snapshot=snap, entries=ents, hard_state=HardState(1, "n1", 8)))
    loaded = st.load()
    assert loaded.snapshot == snap and loaded.entries[-1].index == 10
    import random

    from warpmesh.raft.core import RaftCore

    core = RaftCore("n1", bootstrap=Membership.of(["n1"]), now=0.0, rng=random.Random(1),
                    hard_state=loaded.hard_state, entries=loaded.entries, snapshot=loaded.snapshot)
    rd = core.ready()
    assert rd is not None and [e.index for e in rd.committed] == [7, 8]
    assert core.log.snap_index == 6


def test_snapshot_taken_mid_joint_makes_the_installer_resume_the_joint_phase() -> None:
    from warpmesh.raft.membership import Membership

    c = ScriptedCluster(3)
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    joint = Membership(frozenset({"n1", "n2", "n4"}), frozenset(), frozenset({"n1", "n2", "n3"}))
    f.c.step(SnapshotChunk(ld.id, f.id, ld.c.term, 40, ld.c.term, joint, 1, 0, b"j"), c.now)
    c.pump(f.id)
    assert f.installs[-1].meta.membership == joint
    assert f.c.membership == joint and f.c.membership.joint
    # The joint configuration survives a restart through the stored snapshot.
    assert c.restart(f.id).membership == joint


def test_leader_sends_the_snapshot_it_started_with_even_if_a_newer_one_is_published() -> None:
    c = ScriptedCluster(3, config=cfg(trailing_entries=0, snapshot_chunk_bytes=10, snapshot_inflight_chunks=1))
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    c.crash(f.id)
    fill(c, ld.id, 3)
    ld.c.publish_snapshot(ld.c.log.applied, bytes(100), c.now)
    c.pump(ld.id)
    c.filters.append(lambda m: None if isinstance(m, SnapshotResponse) else m)  # keep it in flight
    c.start(f.id)
    c.run(0.05)
    pinned = ld.c.prs[f.id].snap
    assert ld.c.prs[f.id].state == ProgressState.SNAPSHOT and pinned is not None
    fill(c, ld.id, 2)
    ld.c.publish_snapshot(ld.c.log.applied, bytes(50), c.now)
    c.pump(ld.id)
    assert ld.c.prs[f.id].snap is pinned
    c.filters.clear()
    c.run(2.0)
    assert f.c.commit == ld.c.commit
