"""The KV state machine and the client protocol codec."""

from __future__ import annotations

import contextlib

import pytest

from warpmesh.kv import protocol as P
from warpmesh.kv.state import KVStateMachine, encode_cas, encode_delete, encode_put
from warpmesh.wire.frame import FrameError, pack


def test_put_get_delete_and_revisions() -> None:
    sm = KVStateMachine()
    assert sm.apply(encode_put("a", b"1"), 5) == 5
    assert sm.get_with_revision("a") == (b"1", 5)
    assert sm.apply(encode_delete("a"), 6) is True
    assert sm.apply(encode_delete("a"), 7) is False
    assert sm.get("a") is None


def test_cas_swaps_only_on_the_expected_value() -> None:
    sm = KVStateMachine()
    assert sm.apply(encode_cas("k", None, b"x"), 1) == [True, b"x", 1]  # create if absent
    assert sm.apply(encode_cas("k", None, b"y"), 2) == [False, b"x", 1]
    assert sm.apply(encode_cas("k", b"x", b"y"), 3) == [True, b"y", 3]
    assert sm.apply(encode_cas("k", b"y", None), 4) == [True, None, 4]  # cas-delete
    assert sm.get("k") is None


def test_malformed_commands_are_deterministic_errors_not_crashes() -> None:
    sm = KVStateMachine()
    for bad in (b"\xc1", pack(["nope"]), pack(["put", "", b"v"]), pack(["put", "k", "not bytes"]),
                pack(["put", 3, b"v"]), pack({"a": 1})):
        r = sm.apply(bad, 1)
        assert isinstance(r, list) and r[0] == "error"
    assert sm.data == {}


def test_snapshot_round_trip() -> None:
    sm = KVStateMachine()
    for i in range(50):
        sm.apply(encode_put(f"k{i}", bytes([i])), i + 1)
    other = KVStateMachine()
    other.restore(sm.snapshot())
    assert other.data == sm.data
    assert sm.snapshot() == other.snapshot()  # canonical bytes


def test_protocol_round_trip_and_refusals() -> None:
    req = P.encode_request(7, "put", "k", b"v", None, "c1", 3, 2)
    assert P.decode_request(req) == [7, "put", "k", b"v", None, "c1", 3, 2]
    resp = P.encode_response(7, P.OK, 12, "n1", "")
    assert P.decode_response(resp) == [7, P.OK, 12, "n1", ""]
    with pytest.raises(P.BadFrame):
        P.decode_request(P.encode_request(1, "put", "k", b"v"))  # a write without a dedup key
    with pytest.raises(P.BadFrame):
        P.decode_request(P.encode_request(1, "drop_table", "k"))
    with pytest.raises((P.BadFrame, FrameError)):
        P.decode_request(b"\x01\x01garbage")


def test_mutated_and_weird_frames_are_refused_never_raised() -> None:
    import random

    rng = random.Random(2)
    samples = [P.encode_request(7, "put", "k", b"v", None, "c", 3, 2), P.encode_request(1, "get", "key"),
               P.encode_response(1, 0, [1, 2], "n1", "")]
    weird = [{"a": 1}, [1], None, 1.5, b"x", "s", -1, 2**62]
    from warpmesh.wire.frame import encode_frame

    for _ in range(5000):
        f = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 3)):
            f[rng.randrange(len(f))] = rng.randrange(256)
        body = [rng.choice(weird) for _ in range(rng.choice((5, 8)))]
        for data in (bytes(f), encode_frame(rng.choice((1, 2)), body)):
            for fn in (P.decode_request, P.decode_response):
                with contextlib.suppress(FrameError, P.BadFrame):
                    fn(data)
