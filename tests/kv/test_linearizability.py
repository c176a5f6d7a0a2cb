"""The linearizability checker: it accepts every linearizable history and rejects broken ones."""

from __future__ import annotations

import random

from warpmesh.kv.linearizability import History, check


def h_seq(*ops: tuple) -> History:  # type: ignore[type-arg]
    """Ops (client, op, key, args, output, call, ret)."""
    h = History()
    for client, op, key, args, out, call, ret in ops:
        o = h.invoke(client, op, key, *args, at=call)
        if ret is None:
            h.unknown(o)
        else:
            h.ok(o, out, at=ret)
    return h


def test_sequential_put_then_get_is_linearizable() -> None:
    h = h_seq(("a", "put", "k", (b"1",), True, 0, 1), ("a", "get", "k", (), b"1", 2, 3))
    assert check(h).ok


def test_a_stale_read_after_an_acknowledged_write_is_not() -> None:
    h = h_seq(("a", "put", "k", (b"1",), True, 0, 1), ("b", "put", "k", (b"2",), True, 2, 3),
              ("c", "get", "k", (), b"1", 4, 5))
    r = check(h)
    assert not r.ok and r.bad_key == "k"


def test_a_lost_acknowledged_write_is_caught() -> None:
    h = h_seq(("a", "put", "k", (b"1",), True, 0, 1), ("b", "get", "k", (), None, 2, 3))
    assert not check(h).ok


def test_concurrent_write_may_be_seen_or_not() -> None:
    for seen in (None, b"1"):
        h = h_seq(("a", "put", "k", (b"1",), True, 0, 10), ("b", "get", "k", (), seen, 1, 2))
        assert check(h).ok


def test_reads_cannot_go_back_in_time() -> None:
    h = h_seq(("a", "put", "k", (b"1",), True, 0, 10), ("b", "get", "k", (), b"1", 1, 2),
              ("c", "get", "k", (), None, 3, 4))
    assert not check(h).ok


def test_cas_semantics() -> None:
    ok = h_seq(("a", "put", "k", (b"1",), True, 0, 1), ("a", "cas", "k", (b"1", b"2"), True, 2, 3),
               ("b", "cas", "k", (b"1", b"3"), False, 4, 5), ("b", "get", "k", (), b"2", 6, 7))
    assert check(ok).ok
    bad = h_seq(("a", "put", "k", (b"1",), True, 0, 1), ("a", "cas", "k", (b"1", b"2"), True, 2, 3),
                ("b", "cas", "k", (b"1", b"3"), True, 4, 5))
    assert not check(bad).ok


def test_an_unknown_write_may_have_happened_or_not() -> None:
    for seen in (None, b"x"):
        h = h_seq(("a", "put", "k", (b"x",), None, 0, None), ("b", "get", "k", (), seen, 5, 6))
        assert check(h).ok
    # ...but once seen it cannot be unseen.
    h = h_seq(("a", "put", "k", (b"x",), None, 0, None), ("b", "get", "k", (), b"x", 5, 6),
              ("b", "get", "k", (), None, 7, 8))
    assert not check(h).ok


def test_a_write_applied_twice_is_caught() -> None:
    # put x, then put y, then x shows up again: only a duplicate application of put x explains it.
    h = h_seq(("a", "put", "k", (b"x",), True, 0, 1), ("a", "put", "k", (b"y",), True, 2, 3),
              ("b", "get", "k", (), b"x", 4, 5))
    assert not check(h).ok


def test_keys_are_independent() -> None:
    h = h_seq(("a", "put", "k1", (b"1",), True, 0, 1), ("a", "put", "k2", (b"2",), True, 0, 1),
              ("b", "get", "k1", (), b"1", 2, 3), ("b", "get", "k2", (), b"2", 2, 3))
    assert check(h).ok and check(h).keys == 2


def random_history(seed: int, n: int = 200, clients: int = 5) -> History:
    """A linearizable history: a sequential execution whose ops get random overlapping intervals
    containing their linearization point."""
    rng = random.Random(seed)
    state: dict[str, bytes | None] = {}
    h = History()
    t = 0.0
    for i in range(n):
        t += rng.random()
        key = rng.choice("ab")
        cur = state.get(key)
        call = t - rng.random() * 3
        ret = t + rng.random() * 3
        c = f"c{rng.randrange(clients)}"
        r = rng.random()
        if r < 0.4:
            h.ok(h.invoke(c, "get", key, at=call), cur, at=ret)
        elif r < 0.75:
            v = f"{i}".encode()
            h.ok(h.invoke(c, "put", key, v, at=call), True, at=ret)
            state[key] = v
        else:
            exp = rng.choice([cur, b"nope"])
            new = f"{i}c".encode()
            swapped = exp == cur
            h.ok(h.invoke(c, "cas", key, exp, new, at=call), swapped, at=ret)
            if swapped:
                state[key] = new
    return h


def test_random_linearizable_histories_pass() -> None:
    for seed in range(20):
        assert check(random_history(seed)).ok, seed


def test_random_corruptions_are_mostly_caught() -> None:
    caught = 0
    for seed in range(30):
        h = random_history(seed)
        rng = random.Random(seed)
        reads = [o for o in h.ops if o.op == "get"]
        victim = rng.choice(reads)
        victim.output = b"never-written"
        caught += not check(h).ok
    assert caught == 30  # a value nobody wrote can never be linearized
