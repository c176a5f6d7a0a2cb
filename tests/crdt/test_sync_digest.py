"""The anti-entropy digest of causal states (``sync_digest``): equal states digest alike, different
ones differ, and a digest after a few changes to a big board costs those changes, not the board
(issue 16: a long-lived mesh's digest rounds used to re-encode every answer it held)."""

from __future__ import annotations

import random

import pytest

from warpmesh.crdt import GSet, LWWRegister, MVRegister, ORMap, ORSet, causal, decode, encode, sync_digest

A, B, C = "a@1", "b@1", "c@1"


def fresh_digest(state: object) -> bytes:
    """The digest computed from nothing: a decoded copy has no incremental bookkeeping."""
    return sync_digest(decode(encode(state)))  # type: ignore[arg-type]


def put(board: ORMap[LWWRegister], replica: str, key: str, value: object) -> ORMap[LWWRegister]:
    return board.update(replica, key, lambda reg: reg.set(replica, value))


@pytest.mark.parametrize("seed", range(12))
def test_the_incremental_digest_equals_the_digest_from_scratch_through_random_histories(seed: int) -> None:
    rng = random.Random(seed)
    replicas = {r: ORMap(LWWRegister) for r in (A, B, C)}
    in_flight: list[tuple[str, ORMap[LWWRegister]]] = []
    for step in range(400):
        r = rng.choice(sorted(replicas))
        board = replicas[r]
        roll = rng.random()
        if roll < 0.45:
            in_flight.append((r, put(board, r, f"k{rng.randrange(60)}", step)))
        elif roll < 0.6 and len(board):
            in_flight.append((r, board.remove(rng.choice(sorted(board.keys())))))
        elif roll < 0.7:
            keys = rng.sample(range(60), 5)
            in_flight.append((r, board.update_many(r, [(f"k{k}", lambda reg, s=step, w=r: reg.set(w, s)) for k in keys])))
        elif roll < 0.75 and len(board):
            in_flight.append((r, board.remove_all(rng.sample(sorted(board.keys()), min(3, len(board))))))
        elif in_flight:
            # Deliver a random delta to a random replica, out of order and perhaps twice.
            _, delta = in_flight.pop(rng.randrange(len(in_flight))) if rng.random() < 0.8 else rng.choice(in_flight)
            replicas[rng.choice(sorted(replicas))].join(delta)
        if rng.random() < 0.3:
            target = replicas[rng.choice(sorted(replicas))]
            assert sync_digest(target) == fresh_digest(target), f"seed {seed} step {step}"
    for _, delta in in_flight:
        for board in replicas.values():
            board.join(delta)
    for a in replicas.values():
        for b in replicas.values():
            a.join(b)
    digests = {sync_digest(board) for board in replicas.values()}
    assert len(digests) == 1
    assert digests == {fresh_digest(replicas[A])}


def test_equal_contexts_with_different_alive_dots_digest_differently() -> None:
    # One side has applied a removal the other has not: the contexts are equal (a removal adds no
    # dot the receiver had not seen), so only the alive set tells the states apart.
    a, b = ORMap(LWWRegister), ORMap(LWWRegister)
    b.join(put(a, A, "t1", 1))
    b.join(put(a, A, "t2", 2))
    assert sync_digest(a) == sync_digest(b)
    a.remove("t1")
    assert a._ds.ctx == b._ds.ctx
    assert sync_digest(a) != sync_digest(b)


@pytest.mark.parametrize("make", [lambda: ORSet(), lambda: ORMap(GSet), lambda: MVRegister()])
def test_every_causal_type_digests_incrementally(make: object) -> None:
    x, y = make(), make()  # type: ignore[operator]
    for i in range(30):
        if isinstance(x, ORSet):
            d = x.add(A, f"e{i}")
            if i % 3 == 0:
                x.remove(f"e{i // 2}")
        elif isinstance(x, MVRegister):
            d = x.write(A, i)
        else:
            d = x.update(A, f"k{i % 7}", lambda g, i=i: g.add(i))
        y.join(d)
        assert sync_digest(x) == fresh_digest(x)
    y.join(x)
    assert sync_digest(x) == sync_digest(y) == fresh_digest(y)


def test_a_digest_after_a_few_changes_to_a_big_board_hashes_only_those(monkeypatch: pytest.MonkeyPatch) -> None:
    board = ORMap(LWWRegister)
    board.update_many(A, [(f"task-{i}", lambda reg, i=i: reg.set(A, i)) for i in range(20_000)])
    calls = 0
    real = causal._dot_hash

    def counting(d: tuple[str, int]) -> int:
        nonlocal calls
        calls += 1
        return real(d)

    monkeypatch.setattr(causal, "_dot_hash", counting)
    sync_digest(board)
    assert calls == 20_000  # the first digest of a board sees every dot once
    calls = 0
    for i in range(5):
        put(board, A, f"new-{i}", i)  # five dots born
    board.remove("task-7")  # one retired
    put(board, A, "task-8", "again")  # one superseded (retired) and one born
    incremental = sync_digest(board)
    assert calls == 8
    assert incremental == fresh_digest(board)
    calls = 0
    assert sync_digest(board) == incremental
    assert calls == 0  # nothing changed since: nothing hashed


def test_past_as_many_touches_as_alive_dots_the_bookkeeping_stops_and_the_digest_stays_right() -> None:
    board = ORMap(LWWRegister)
    board.update_many(A, [(f"t{i}", lambda reg, i=i: reg.set(A, i)) for i in range(100)])
    sync_digest(board)
    for round_ in range(60):  # 6,000 dots born and retired: more than the floor and the board
        board.update_many(A, [(f"t{i}", lambda reg, r=round_: reg.set(A, r)) for i in range(100)])
    assert board._ds._touched is None  # tracking was dropped: a full pass is cheaper now
    assert sync_digest(board) == fresh_digest(board)
    assert board._ds._touched == {}  # and resumed from that digest on
    put(board, A, "t1", "x")
    assert sync_digest(board) == fresh_digest(board)
