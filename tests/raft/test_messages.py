"""Wire codec of Raft messages: round trips, and every validation gate for hostile frames.

Ported from the reference's FrameRefusedTest, TermJumpBoundTest, AppendEntriesBatchValidationTest,
InstallSnapshotMetaValidationTest, SnapshotChunkSignClausesTest and UndecodableFrameTest: a bad
frame is refused with a stable gate label before it reaches the core, and never raises anything
else.
"""

from __future__ import annotations

import contextlib
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpmesh.raft.membership import Membership
from warpmesh.raft.messages import (
    AppendEntries,
    AppendResponse,
    BadMessage,
    Forward,
    ForwardResponse,
    Heartbeat,
    HeartbeatResponse,
    ReadRequest,
    ReadResponse,
    SnapshotChunk,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    decode,
    encode,
)
from warpmesh.raft.testing import ScriptedCluster
from warpmesh.raft.types import MAX_TERM, Entry, EntryKind
from warpmesh.wire.frame import FrameError, encode_frame

MEM = Membership(frozenset({"a", "b"}), frozenset({"c"}), frozenset({"a", "d"}))
SAMPLES = [
    AppendEntries("a", "b", 5, 3, 2, 4, [Entry(4, 5, EntryKind.NORMAL, b"x"),
                                         Entry(5, 5, EntryKind.NORMAL, b"y", "cl", 9, 3),
                                         Entry(6, 5, EntryKind.CONFIG, MEM.to_bytes())]),
    AppendEntries("a", "b", 5, 0, 0, 0, []),
    AppendResponse("b", "a", 5, 7, True, 3, 2),
    Heartbeat("a", "b", 5, 4, 17),
    HeartbeatResponse("b", "a", 5, 17),
    VoteRequest("a", "b", 6, 10, 5, True, True, 3),
    VoteResponse("b", "a", 6, True, True, 3),
    TimeoutNow("a", "b", 5),
    SnapshotChunk("a", "b", 5, 100, 4, MEM, 1000, 200, b"\x00" * 100),
    SnapshotResponse("b", "a", 5, 100, 300, False),
    Forward("b", "a", 5, [(b"cmd", "cl", 1, 1), (b"", "cl2", 7, 3)]),
    ForwardResponse("a", "b", 5, [("cl", 1, 2, 40)], "a"),
    ReadRequest("b", "a", 5, [1, 2, 3]),
    ReadResponse("a", "b", 5, [(1, 40), (2, -1)], None),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg) -> None:  # type: ignore[no-untyped-def]
    assert decode(encode(msg), msg.frm, msg.to) == msg


def bad(kind: int, body: object) -> str:
    with pytest.raises(BadMessage) as err:
        decode(encode_frame(kind, body), "x", "y")
    return err.value.gate


def test_negative_or_huge_terms_and_indexes_are_refused() -> None:
    assert bad(0x03, [-1, 0, 0]) == "field_range"
    assert bad(0x03, [MAX_TERM + 1, 0, 0]) == "field_range"
    assert bad(0x02, [1, -5, True, 0, 0]) == "field_range"


def test_wrong_types_and_arity_are_refused() -> None:
    assert bad(0x06, [1, 1, False, 0]) == "field_type"  # int where a bool belongs
    assert bad(0x03, [1, 0]) == "arity"
    assert bad(0x03, {"t": 1}) == "body_shape"
    assert bad(0x03, [True, 0, 0]) == "field_range"  # a bool is not a term
    assert bad(0x7F, [1]) == "unknown_kind"


def test_append_batch_validation() -> None:
    # prev_term above the message term
    assert bad(0x01, [2, 1, 3, 0, []]) == "entry_term"
    # an entry term above the message term, or decreasing along the batch
    assert bad(0x01, [2, 0, 0, 0, [[3, 0, b""]]]) == "entry_term"
    assert bad(0x01, [3, 0, 0, 0, [[2, 0, b""], [1, 0, b""]]]) == "entry_term"
    assert bad(0x01, [3, 1, 2, 0, [[1, 0, b""]]]) == "entry_term"  # below prev_term
    assert bad(0x01, [3, 0, 0, 0, [[1, 9, b""]]]) == "field_range"  # unknown entry kind
    assert bad(0x01, [3, 0, 0, 0, [[1, 0]]]) == "entry_shape"
    assert bad(0x01, [3, 0, 0, 0, [[1, EntryKind.CONFIG, b"junk"]]]) == "entry_config"


def test_snapshot_chunk_validation() -> None:
    mem = MEM.encode()
    assert bad(0x08, [5, 10, 6, mem, 10, 0, b""]) == "snapshot_meta"  # snap term above term
    assert bad(0x08, [5, 10, 4, mem, 10, 8, b"abc"]) == "snapshot_chunk"  # past the size
    assert bad(0x08, [5, 0, 4, mem, 10, 0, b""]) == "snapshot_meta"  # index 0
    assert bad(0x08, [5, 10, 4, [["a"], ["a"], None], 10, 0, b""]) == "snapshot_meta"
    assert bad(0x08, [5, -1, 4, mem, 10, 0, b""]) == "field_range"


def test_oversize_ids_and_item_counts_are_refused() -> None:
    assert bad(0x0A, [1, [[b"", "x" * 300, 1, 1]]]) == "field_type"
    assert bad(0x0C, [1, list(range(70_000))]) == "too_many_items"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_are_refused_never_raised_otherwise(data: bytes) -> None:
    with contextlib.suppress(FrameError, BadMessage):
        decode(data, "x", "y")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(SAMPLES) - 1), st.integers(0, 10_000), st.integers(0, 255))
def test_mutated_frames_are_refused_or_decode_to_a_valid_message(i: int, pos: int, byte: int) -> None:
    frame = bytearray(encode(SAMPLES[i]))
    frame[pos % len(frame)] = byte
    with contextlib.suppress(FrameError, BadMessage):
        decode(bytes(frame), "x", "y")


def test_a_term_jump_beyond_the_bound_is_dropped() -> None:
    from warpmesh.raft.config import RaftConfig

    cfg = RaftConfig(election_timeout_min=0.1, election_timeout_max=0.2, heartbeat_interval=0.02,
                     max_term_jump=100)
    c = ScriptedCluster(3, config=cfg)
    ld = c.wait_leader()
    c.propose(ld.id, b"x")
    f = next(n for n in c.live() if n is not ld)
    term = f.c.term
    f.c.step(Heartbeat("n9", f.id, term + 101, 0, 0), c.now)
    assert f.c.term == term and f.c.stats["refused:term_jump"] == 1
    f.c.step(Heartbeat(ld.id, f.id, term + 100, 0, 0), c.now)
    assert f.c.term == term + 100  # within the bound


def test_a_second_leader_claim_in_the_same_term_is_refused() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    other = next(n for n in c.live() if n not in (ld, f))
    f.c.step(AppendEntries(other.id, f.id, ld.c.term, 0, 0, 0, []), c.now)
    assert f.c.leader == ld.id and f.c.stats["refused:forged_leader"] == 1


def test_hostile_message_storm_never_breaks_safety() -> None:
    """Random well-formed messages from a hostile peer interleaved with normal traffic."""
    rng = random.Random(5)
    c = ScriptedCluster(3, seed=5)
    ld = c.wait_leader()
    for i in range(300):
        target = rng.choice(["n1", "n2", "n3"])
        core = c[target].core
        if core is None:
            continue
        t = max(0, core.term + rng.randint(-2, 1))
        m = rng.choice([
            AppendResponse("n9", target, t, rng.randint(0, 50), rng.random() < 0.5, rng.randint(0, 50),
                           rng.randint(0, t)),
            HeartbeatResponse("n9", target, t, rng.randint(0, 1000)),
            SnapshotResponse("n9", target, t, rng.randint(0, 50), rng.randint(0, 10**6), rng.random() < 0.5),
            ForwardResponse("n9", target, t, [("x", rng.randint(0, 5), rng.randint(0, 2), rng.randint(0, 60))]),
            ReadResponse("n9", target, t, [(rng.randint(0, 5), rng.randint(-1, 60))]),
        ])
        core.step(m, c.now)
        c.pump(target)
        if i % 10 == 0:
            c.propose(c.leader().id if c.leader() else "n1", bytes([i % 256]))
        c.run(0.002)
    c.run(1.0)
    logs = [n.commands() for n in c.live()]
    assert all(x == logs[0] for x in logs) and len(logs[0]) >= 25
    assert ld.c.role is not None


@settings(max_examples=int(os.environ.get("WARPMESH_FUZZ_EXAMPLES", "150")), deadline=None)
@given(st.data())
def test_any_well_formed_message_in_any_state_never_raises(data: st.DataObject) -> None:
    """A single core fed arbitrary (valid-typed) messages, ticks and API calls: no exception."""
    from warpmesh.raft.config import RaftConfig
    from warpmesh.raft.core import RaftCore

    cfg = RaftConfig(election_timeout_min=0.1, election_timeout_max=0.2, heartbeat_interval=0.02,
                     snapshot_chunk_bytes=8, max_pending_reads=5)
    core = RaftCore("n1", bootstrap=Membership.of(["n1", "n2", "n3"]), now=0.0, rng=random.Random(0),
                    config=cfg)
    peers = st.sampled_from(["n2", "n3", "n9"])
    small = st.integers(0, 12)
    terms = st.integers(0, 8)
    mem = st.sampled_from([Membership.of(["n1", "n2", "n3"]), Membership.of(["n2"]), MEM])

    @st.composite
    def entries(draw, prev: int, term: int):  # type: ignore[no-untyped-def]
        n = draw(st.integers(0, 4))
        t0 = draw(st.integers(0, term))
        return [Entry(prev + i + 1, t0, draw(st.sampled_from([0, 1])), b"x") for i in range(n)]

    now = 0.0
    for _ in range(data.draw(st.integers(1, 60))):
        now += data.draw(st.floats(0, 0.3))
        kind = data.draw(st.integers(0, 16))
        f = data.draw(peers)
        t = data.draw(terms)
        if kind == 0:
            prev = data.draw(small)
            m = AppendEntries(f, "n1", t, prev, min(t, data.draw(terms)), data.draw(small),
                              data.draw(entries(prev, t)))
        elif kind == 1:
            m = AppendResponse(f, "n1", t, data.draw(small), data.draw(st.booleans()), data.draw(small),
                               data.draw(terms))
        elif kind == 2:
            m = Heartbeat(f, "n1", t, data.draw(small), data.draw(small))
        elif kind == 3:
            m = HeartbeatResponse(f, "n1", t, data.draw(small))
        elif kind == 4:
            m = VoteRequest(f, "n1", t, data.draw(small), data.draw(terms), data.draw(st.booleans()),
                            data.draw(st.booleans()), data.draw(small))
        elif kind == 5:
            m = VoteResponse(f, "n1", t, data.draw(st.booleans()), data.draw(st.booleans()), data.draw(small))
        elif kind == 6:
            m = TimeoutNow(f, "n1", t)
        elif kind == 7:
            size = data.draw(st.integers(1, 20))
            off = data.draw(st.integers(0, size))
            m = SnapshotChunk(f, "n1", t, data.draw(st.integers(1, 12)), data.draw(st.integers(0, t)),
                              data.draw(mem), size, off, b"z" * data.draw(st.integers(0, size - off)))
        elif kind == 8:
            m = SnapshotResponse(f, "n1", t, data.draw(small), data.draw(st.integers(0, 100)),
                                 data.draw(st.booleans()))
        elif kind == 9:
            m = Forward(f, "n1", t, [(b"c", "cl", data.draw(st.integers(1, 5)), 1)])
        elif kind == 10:
            m = ForwardResponse(f, "n1", t, [("cl", data.draw(small), data.draw(st.integers(0, 2)),
                                              data.draw(small))])
        elif kind == 11:
            m = ReadRequest(f, "n1", t, data.draw(st.lists(small, max_size=8)))
        elif kind == 12:
            m = ReadResponse(f, "n1", t, [(data.draw(small), data.draw(st.integers(-1, 12)))])
        elif kind == 13:
            core.tick(now)
            m = None
        elif kind == 14:
            with contextlib.suppress(Exception):
                core.propose(b"p", now)
            m = None
        elif kind == 15:
            core.read_index(data.draw(small), now)
            m = None
        else:
            core.change_membership("m", {"n1", data.draw(peers)}, (), now)
            core.transfer_leadership("t", data.draw(peers), now)
            m = None
        if m is not None:
            core.step(m, now)
        rd = core.ready()
        if rd is not None:
            core.advance(rd, now)
