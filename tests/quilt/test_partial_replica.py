"""Partial replicas (``history=False``): a short-lived reader that joins a big board follows what is
written from then on and never fetches the board (issue 16: each ``warpmesh submit`` into a long-lived
mesh pulled every answer the mesh held); it never counts as a holder of anyone's batches."""

from __future__ import annotations

from collections import Counter

from warpmesh.crdt import LWWRegister, ORMap, encode
from warpmesh.quilt import QuilterCore, QuiltKind
from warpmesh.quilt.codec import CRDT_CODEC
from warpmesh.wire import encode_frame

from .test_difference_repair import CFG, _cores, _reg


def _run(cores: dict[str, QuilterCore[ORMap]], start: float, until: float, busy: str = "ab",
         into: Counter[str] | None = None, drop: set[tuple[str, str, int]] | None = None) -> float:
    """Tick, flush and deliver every 50 ms; the ``busy`` peers keep writing; ``into`` counts the bytes
    of each frame kind reaching c; ``drop`` loses (origin, receiver, seq) delta batches once."""
    now = start
    while now < until:
        now += 0.05
        for name, core in cores.items():
            if name in busy:
                core.mutate(lambda s, name=name, now=now: s.put(name, f"{name}-{int(now * 1000)}", _reg(name, 1)))
            core.flush(now)
            core.tick(now)
        moved = True
        while moved:
            moved = False
            for name, core in cores.items():
                for peer, frame in core.take_outbox():
                    for t in ([p for p in cores if p != name] if peer is None else [peer]):
                        kind = QuiltKind(frame[1])
                        if drop and kind is QuiltKind.DELTA:
                            seq = core.seq
                            if (name, t, seq) in drop:
                                drop.discard((name, t, seq))
                                continue
                        moved = True
                        if t == "c" and into is not None:
                            into[kind.name] += len(frame)
                        cores[t].receive(name, frame, now)
    return now


def _big_mesh() -> dict[str, QuilterCore[ORMap]]:
    cores = _cores("ab")
    for i in range(3000):
        cores["a"].mutate(lambda s, i=i: s.put("a", f"answer-{i}", _reg("a", i)))
    _run(cores, 0.0, 1.0)
    return cores


def test_a_partial_replica_joining_a_big_board_receives_only_what_is_written_after() -> None:
    cores = _big_mesh()
    board = len(encode_frame(QuiltKind.STATE, encode(cores["a"].state)))
    c: QuilterCore[ORMap] = QuilterCore("c", "c@1", ORMap(LWWRegister), CRDT_CODEC, config=CFG, now=1.0,
                                        history=False)
    cores["c"] = c
    for core in cores.values():
        core.roster_changed(set("abc"), 1.0)
    into: Counter[str] = Counter()
    _run(cores, 1.0, 12.0, into=into)
    # c saw every write made since it joined, and none of the 3,000 answers from before.
    assert not any(k.startswith("answer-") for k in c.state.keys())
    assert {"a-2000", "b-2000", "a-11000", "b-11000"} <= set(c.state.keys())
    assert sum(into.values()) < board / 4, (dict(into), board)
    assert into["STATE"] == into["DIFF"] == into["SUMMARY"] == 0, dict(into)  # no repair toward c
    assert c.stats["out_frontier"] == 0 and c.stats["bytes_digest"] < 200  * c.stats["out_digest"]
    assert c.stats["out_summary"] == c.stats["out_resend_request"] == 0
    for name in "ab":
        # c acked (buffers are freed for it) but never counts as a holder: a majority of a, b, c is
        # a and b; c's acks carry where it started.
        assert cores[name]._partial == {"c"}
        assert cores[name].majority_others() == 1
        assert cores[name].replication_lag(12.0)["c"][0] == cores[name].seq  # never confirmed
        assert cores[name].buffered_batches < 5
        assert not any(k.startswith("repair_") for k in cores[name].stats), cores[name].stats


def test_a_partial_replica_still_gets_a_lost_batch_written_after_it_joined() -> None:
    cores = _big_mesh()
    c: QuilterCore[ORMap] = QuilterCore("c", "c@1", ORMap(LWWRegister), CRDT_CODEC, config=CFG, now=1.0,
                                        history=False)
    cores["c"] = c
    for core in cores.values():
        core.roster_changed(set("abc"), 1.0)
    now = _run(cores, 1.0, 2.0)
    seq = cores["a"].seq + 2  # a batch a little later is lost on its way to c only
    now = _run(cores, now, 6.0, drop={("a", "c", seq)})
    assert c.stats["out_resend_request"] >= 1
    missing = set(cores["a"].state.keys()) - set(c.state.keys())
    # Only the history from before c joined (at 1.0 s) is missing; the lost batch came again.
    assert missing and all(k.startswith("answer-") or int(k.split("-")[1]) <= 1000 for k in missing), missing


def test_a_full_replica_rejoining_under_a_partial_ones_name_counts_again() -> None:
    # Acks without ``since`` (a full replica) clear the mark: a restarted worker is a holder again.
    cores = _cores("ab")
    a = cores["a"]
    a.mutate(lambda s: s.put("a", "k", _reg("a", 1)))
    a.flush(0.0)
    a.take_outbox()
    a.receive("b", encode_frame(QuiltKind.ACK, ["a@1", 1, [], 1]), 0.1)  # since=1: full
    assert a._partial == set() and a.acked_count(1) == 1
    a.mutate(lambda s: s.put("a", "k2", _reg("a", 2)))
    a.flush(0.2)
    a.receive("b", encode_frame(QuiltKind.ACK, ["a@1", 2, [], 2]), 0.3)
    assert a._partial == {"b"} and a.majority_others() == 0
    a.receive("b", encode_frame(QuiltKind.ACK, ["a@1", 2]), 0.4)
    assert a._partial == set() and a.majority_others() == 1 and a.acked_count(2) == 1
    a.receive("b", encode_frame(QuiltKind.ACK, ["a@1", 2, [], 4]), 0.5)  # since beyond upto + 1
    assert a.stats["refused"] == 1


def test_the_first_batch_after_joining_is_resent_if_lost() -> None:
    # A batch written after c joined is not history: if it is lost, its origin (which counts c among
    # its peers from the join and has no ack from it) resends it, and c, which learnt where the
    # stream stood from the greeting digest, asks for the gap too. An answer a client waits for may
    # be in that batch.
    cores = _cores("a")
    for i in range(50):
        cores["a"].mutate(lambda s, i=i: s.put("a", f"old-{i}", _reg("a", i)))
    _run(cores, 0.0, 0.5, busy="")
    c: QuilterCore[ORMap] = QuilterCore("c", "c@1", ORMap(LWWRegister), CRDT_CODEC, config=CFG, now=0.5,
                                        history=False)
    cores["c"] = c
    for core in cores.values():
        core.roster_changed(set("ac"), 0.5)
    now = _run(cores, 0.5, 1.0, busy="")  # greetings only: nothing written
    first = cores["a"].seq + 1
    cores["a"].mutate(lambda s: s.put("a", "answer-for-c", _reg("a", 1)))
    now = _run(cores, now, 1.2, busy="", drop={("a", "c", first)})  # that batch never reaches c
    cores["a"].mutate(lambda s: s.put("a", "later", _reg("a", 2)))
    _run(cores, now, 4.0, busy="")
    assert "answer-for-c" in c.state and "later" in c.state
    assert not any(k.startswith("old-") for k in c.state.keys())
