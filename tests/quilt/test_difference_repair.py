"""Quilter repair of causal states ships the difference, not the board (issue 16)."""

from __future__ import annotations

from collections import Counter

from warpmesh.crdt import LWWRegister, ORMap, encode
from warpmesh.quilt import QuilterConfig, QuilterCore, QuiltKind
from warpmesh.quilt.codec import CRDT_CODEC
from warpmesh.wire import encode_frame

from .test_quilter import _pump

CFG = QuilterConfig(anti_entropy_interval=0.2, resend_after=0.1, evict_after=20.0, frontier_interval=3.0)


def _reg(replica: str, value: int) -> LWWRegister:
    reg = LWWRegister()
    reg.set(replica, value, value)
    return reg


def _cores(names: str) -> dict[str, QuilterCore[ORMap]]:
    cores = {n: QuilterCore(n, f"{n}@1", ORMap(LWWRegister), CRDT_CODEC, config=CFG) for n in names}
    for core in cores.values():
        core.roster_changed(set(names), 0.0)
    return cores


def test_a_dead_origins_batch_reaches_the_others_as_a_difference_not_a_board() -> None:
    cores = _cores("abc")
    kinds: Counter[int] = Counter()
    _pump(cores, 0.0, set(), kinds)
    for i in range(2_000):  # a big board everybody holds
        cores["a"].mutate(lambda s, i=i: s.put("a", f"task-{i}", _reg("a", i)))
    cores["a"].flush(0.0)
    _pump(cores, 0.0, set(), kinds)
    board = len(encode_frame(QuiltKind.STATE, encode(cores["a"].state)))
    # c's last batch (an answer and a removal) reaches a only; then c dies.
    cores["c"].mutate(lambda s: s.put("c", "from-c", _reg("c", 1)))
    cores["c"].mutate(lambda s: s.remove("task-7"))
    cores["c"].flush(0.0)
    for peer, frame in cores["c"].take_outbox():
        if peer in (None, "a"):
            cores["a"].receive("c", frame, 0.0)
    live = {"a": cores["a"], "b": cores["b"]}
    for core in live.values():
        core.roster_changed({"a", "b"}, 0.1)
    kinds.clear()
    now = 0.1
    while now < 30.0 and "from-c" not in cores["b"].state:
        now += 0.05
        for name, core in live.items():
            core.mutate(lambda s, name=name, now=now: s.put(name, f"busy-{name}", _reg(name, int(now * 1000))))
            core.flush(now)
            core.tick(now)
        _pump(live, now, {"c"}, kinds)
    assert "from-c" in cores["b"].state and "task-7" not in cores["b"].state
    assert kinds[QuiltKind.STATE] == 0, "a full state was sent to a peer that holds almost everything"
    assert kinds[QuiltKind.DIFF] > 0
    repair = kinds[QuiltKind.SUMMARY] + kinds[QuiltKind.DIFF]
    assert repair < board / 3, (repair, board)
    assert encode(cores["a"].state) == encode(cores["b"].state)


def test_an_empty_newcomer_gets_the_board_through_a_difference() -> None:
    cores = _cores("ab")
    kinds: Counter[int] = Counter()
    for i in range(300):
        cores["a"].mutate(lambda s, i=i: s.put("a", f"task-{i}", _reg("a", i)))
    cores["a"].flush(0.0)
    cores["a"].mutate(lambda s: s.remove("task-3"))
    cores["a"].flush(0.0)
    cores["a"].take_outbox()  # the deltas are lost ...
    cores["a"]._buffer.clear()  # ... and the history is gone: only a repair can bring b up to date
    cores["a"]._buffer_bytes = 0
    now = 0.0
    while now < 10 and encode(cores["a"].state) != encode(cores["b"].state):
        now += 0.05
        for core in cores.values():
            core.tick(now)
            core.flush(now)
        _pump(cores, now, set(), kinds)
    assert encode(cores["a"].state) == encode(cores["b"].state)
    assert cores["b"].stats["differences_in"] >= 1


def test_hostile_summaries_and_differences_are_refused_and_counted() -> None:
    cores = _cores("ab")
    a = cores["a"]
    a.mutate(lambda s: s.put("a", "k", _reg("a", 1)))
    before = encode(a.state)
    bad = [
        encode_frame(QuiltKind.SUMMARY, ["b@1", 0, 1, True, [[], 99, b""]]),  # too many bucket bits
        encode_frame(QuiltKind.SUMMARY, ["b@1", 0, 1, True, [[], 1, b"short"]]),
        encode_frame(QuiltKind.SUMMARY, ["b@1", 0]),
        encode_frame(QuiltKind.DIFF, ["b@1", 0, False, 1, 0, 1, b"\xc1", False]),  # not msgpack
    ]
    for frame in bad:
        a.receive("b", frame, 0.0)
    assert a.stats["refused"] == len(bad)
    assert encode(a.state) == before


def test_a_newcomer_to_a_four_peer_mesh_receives_the_board_once() -> None:
    # Every peer has reasons to repair a newcomer at once (it greets it, sees it miss history that is
    # no longer buffered, sees it behind in frontiers); the board must still reach it only once.
    cores = _cores("abc")
    kinds: Counter[int] = Counter()
    _pump(cores, 0.0, set(), kinds)
    for name, core in cores.items():
        for i in range(700):
            core.mutate(lambda s, i=i, name=name: s.put(name, f"{name}-task-{i}", _reg(name, i)))
        core.flush(0.0)
    _pump(cores, 0.0, set(), kinds)
    for core in cores.values():
        core._buffer.clear()  # the history is acked and gone: only a repair brings it to a newcomer
        core._buffer_bytes = 0
    board = len(encode_frame(QuiltKind.STATE, encode(cores["a"].state)))
    d: QuilterCore[ORMap] = QuilterCore("d", "d@1", ORMap(LWWRegister), CRDT_CODEC, config=CFG, now=0.5)
    cores["d"] = d
    for core in cores.values():
        core.roster_changed(set("abcd"), 0.5)
    into_d: Counter[str] = Counter()
    # d sits behind a slow link (0.3 s each way and 100 kB/s, so the board takes longer than a repair
    # round): answers to one repair are still in flight when the next reason to repair comes up.
    in_flight: list[tuple[float, str, str, bytes]] = []
    now = 0.5
    while now < 15.0:
        now += 0.05
        for name, core in cores.items():
            if name != "d":  # the mesh stays busy: d meets every stream mid-way and asks for history
                core.mutate(lambda s, name=name, now=now: s.put(name, f"busy-{name}", _reg(name, int(now * 1000))))
            core.flush(now)
            core.tick(now)
        moved = True
        while moved:
            moved = False
            for name, core in cores.items():
                for peer, frame in core.take_outbox():
                    for t in ([p for p in cores if p != name] if peer is None else [peer]):
                        slow = "d" in (name, t)  # 0.3 s latency and 100 kB/s
                        in_flight.append((now + (0.3 + len(frame) / 100_000 if slow else 0.0), name, t, frame))
            due = [m for m in in_flight if m[0] <= now]
            in_flight = [m for m in in_flight if m[0] > now]
            for _, name, t, frame in due:
                moved = True
                if t == "d" and frame[1] in (QuiltKind.STATE, QuiltKind.DIFF):
                    into_d[name] += len(frame)
                cores[t].receive(name, frame, now)
    assert sum(into_d.values()) < 1.5 * board, (dict(into_d), board)
    for name in "abc":
        assert f"{name}-task-699" in d.state
    assert not d.bootstrapping
    assert d.stats["bootstraps_started"] == 1


def test_a_peer_that_already_holds_a_lost_batch_acks_it_after_a_summary() -> None:
    # b got the content of c's batch 1 by another route but never the batch itself, and c no longer
    # buffers it (it assumed b covered). A summary from c shows b holds all c holds: b must close the
    # gap and ack, or it would never ack c's later batches (acks are cumulative) and an enqueue from c
    # would never count b towards its majority.
    cores = _cores("abc")
    kinds: Counter[int] = Counter()
    _pump(cores, 0.0, set(), kinds)
    c, b = cores["c"], cores["b"]
    c.mutate(lambda s: s.put("c", "s", _reg("c", 1)))
    c.flush(0.0)
    for peer, frame in c.take_outbox():
        if peer in (None, "a"):
            cores["a"].receive("c", frame, 0.0)
    b.state.join(cores["a"].state.copy())  # the content, not the batch
    c._acked["b"] = c.seq  # c assumed b covered, and let the batch go
    c._buffer.clear()
    c._buffer_bytes = 0
    c.mutate(lambda s: s.put("c", "n0", _reg("c", 2)))
    now = 0.0
    c.flush(now)
    while now < 10 and c._confirmed.get("b", 0) < 2:
        now += 0.05
        for core in cores.values():
            core.tick(now)
            core.flush(now)
        _pump(cores, now, set(), kinds)
    assert c._confirmed.get("b", 0) == 2, (c._confirmed, b._recv.get(c.stream))


def test_a_window_of_mutations_sends_their_join_and_leaves_the_returned_deltas_alone() -> None:
    """The first delta of a window is held as is (not copied); a second one must not change it."""
    a: QuilterCore[ORMap] = QuilterCore("a", "a@1", ORMap(LWWRegister), CRDT_CODEC, config=CFG)
    b: QuilterCore[ORMap] = QuilterCore("b", "b@1", ORMap(LWWRegister), CRDT_CODEC, config=CFG)
    first = a.mutate(lambda s: s.update_many("a@1", [("x", lambda r: r.set("a@1", b"1")),
                                                      ("y", lambda r: r.set("a@1", b"2"))]))
    snapshot = encode(first)
    a.mutate(lambda s: s.update("a@1", "x", lambda r: r.set("a@1", b"3")))
    a.mutate(lambda s: s.remove("y"))
    assert encode(first) == snapshot
    a.flush(0.0)
    frames = [frame for peer, frame in a.take_outbox() if peer is None]
    assert len(frames) == 1  # one batch: the window's join
    b.receive("a", frames[0], 0.0)
    assert b.state == a.state and a.state.get("x").value == b"3" and "y" not in a.state
