"""The mesh handshake as plain function calls: mutual HMAC challenge-response, refusals, timeouts."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpmesh.net.handshake import (
    CHALLENGE,
    HELLO,
    PROOF,
    REFUSE,
    WELCOME,
    AdmissionRequired,
    Established,
    Failed,
    Handshake,
    HandshakeError,
    PeerInfo,
    Refusal,
    Role,
    State,
)
from warpmesh.wire.frame import Frame, StreamDecoder, encode_frame

SECRET = b"correct horse battery staple"
A = PeerInfo("a", 7, ("127.0.0.1", 7001))
B = PeerInfo("b", 9, ("127.0.0.1", 7002))


def counter_nonces(seed: int):
    """Deterministic, distinct 32-byte nonces."""
    counter = itertools.count()

    def source(n: int) -> bytes:
        return (seed.to_bytes(4, "big") + next(counter).to_bytes(4, "big")) * (n // 8)

    return source


def frames(data: bytes) -> list[Frame]:
    dec = StreamDecoder(versions=frozenset(range(256)))
    out = dec.feed(data)
    assert dec.stats.refused_total == 0 and dec.buffered == 0
    return out


def make(role: Role, local: PeerInfo, secret: bytes | None = SECRET, seed: int = 1, **kw: Any) -> Handshake:
    hs = Handshake(role, local, secret=secret, nonce_source=counter_nonces(seed), **kw)
    hs.start(now=100.0)
    return hs


def pump(src: Handshake, dst: Handshake) -> list[Any]:
    """Deliver everything ``src`` has queued to ``dst``; return dst's events."""
    events = []
    for frame in frames(src.data_to_send()):
        if dst.finished:
            break
        events.append(dst.receive(frame))
    return events


def run_to_end(i: Handshake, r: Handshake, *, admit_i: Any = None, admit_r: Any = None) -> None:
    """Drive both machines until neither has anything to say; admission via callables or accept()."""
    for _ in range(10):
        for src, dst, admit in ((i, r, admit_r), (r, i, admit_i)):
            for ev in pump(src, dst):
                if isinstance(ev, AdmissionRequired):
                    if admit is None:
                        dst.accept()
                    else:
                        admit(dst, ev)
        if i.finished and r.finished and not i._out and not r._out:
            return


def test_success_both_sides_learn_each_other_and_the_version() -> None:
    i, r = make(Role.INITIATOR, A, seed=1), make(Role.RESPONDER, B, seed=2)
    admissions: list[tuple[str, PeerInfo]] = []

    def admit(hs: Handshake, ev: AdmissionRequired) -> None:
        admissions.append((hs.local.node_id, ev.peer))
        hs.accept()

    run_to_end(i, r, admit_i=admit, admit_r=admit)
    assert i.outcome == Established(PeerInfo("b", 9, ("127.0.0.1", 7002), (1,)), 1)
    assert isinstance(r.outcome, Established)
    assert r.outcome.peer == A and r.outcome.version == 1
    # The initiator admits the responder first (after checking its MAC), then the responder admits.
    assert [who for who, _ in admissions] == ["a", "b"]


def test_frames_are_deterministic_given_the_nonce_source() -> None:
    def transcript() -> list[bytes]:
        i, r = make(Role.INITIATOR, A, seed=1), make(Role.RESPONDER, B, seed=2)
        log = []
        for _ in range(3):
            for src, dst in ((i, r), (r, i)):
                data = src.data_to_send()
                log.append(data)
                for f in frames(data):
                    if isinstance(dst.receive(f), AdmissionRequired):
                        dst.accept()
        return log

    assert transcript() == transcript()


def test_no_secret_on_both_sides_still_completes() -> None:
    i, r = make(Role.INITIATOR, A, secret=None), make(Role.RESPONDER, B, secret=None, seed=2)
    run_to_end(i, r)
    assert isinstance(i.outcome, Established) and isinstance(r.outcome, Established)


@pytest.mark.parametrize(
    ("secret_i", "secret_r"),
    [(b"wrong secret!", SECRET), (SECRET, b"wrong secret!"), (None, SECRET), (SECRET, None)],
    ids=["initiator-wrong", "responder-wrong", "initiator-none", "responder-none"],
)
def test_wrong_secret_is_refused_with_a_reason_sent_to_the_other_side(secret_i: Any, secret_r: Any) -> None:
    i, r = make(Role.INITIATOR, A, secret_i), make(Role.RESPONDER, B, secret_r, seed=2)
    run_to_end(i, r)
    # The initiator checks the responder's MAC first and refuses before proving anything itself.
    assert isinstance(i.outcome, Failed) and i.outcome.code == "bad_secret" and not i.outcome.by_peer
    assert isinstance(r.outcome, Failed) and r.outcome.code == "bad_secret" and r.outcome.by_peer
    assert "cluster secret mismatch" in r.outcome.reason and "WARPMESH_SECRET" in r.outcome.reason


def _raw_hello(node: PeerInfo, nonce: bytes, versions: list[int] | None = None) -> Frame:
    return Frame(HELLO, {"id": node.node_id, "inc": node.incarnation, "listen": list(node.listen or ()),
                         "versions": versions or [1], "nonce": nonce})


def test_initiator_without_the_secret_cannot_forge_a_proof() -> None:
    """An attacker that ignores the responder's MAC and sends any PROOF is refused by the responder."""
    r = make(Role.RESPONDER, B, seed=2)
    assert r.receive(_raw_hello(A, b"\x01" * 32)) is None
    challenge = frames(r.data_to_send())[0]
    assert challenge.kind == CHALLENGE
    ev = r.receive(Frame(PROOF, {"mac": b"\x00" * 32}))
    assert isinstance(ev, Failed) and ev.code == "bad_secret" and not ev.by_peer
    refuse = frames(r.data_to_send())[0]
    assert refuse.kind == REFUSE and refuse.body["code"] == "bad_secret"


def test_reflected_responder_mac_is_not_a_valid_proof() -> None:
    r = make(Role.RESPONDER, B, seed=2)
    r.receive(_raw_hello(A, b"\x01" * 32))
    mac_r = frames(r.data_to_send())[0].body["mac"]
    ev = r.receive(Frame(PROOF, {"mac": mac_r}))
    assert isinstance(ev, Failed) and ev.code == "bad_secret"


def test_replayed_hello_and_proof_fail_against_a_fresh_responder_nonce() -> None:
    # Session 1, recorded by an eavesdropper.
    i1, r1 = make(Role.INITIATOR, A, seed=1), make(Role.RESPONDER, B, seed=2)
    hello = frames(i1.data_to_send())
    for f in hello:
        r1.receive(f)
    for f in frames(r1.data_to_send()):
        i1.receive(f)
    i1.accept()
    proof = frames(i1.data_to_send())
    assert proof[0].kind == PROOF
    # Session 2: the attacker replays HELLO and PROOF to the responder, which picks a new nonce.
    r2 = make(Role.RESPONDER, B, seed=3)
    r2.receive(hello[0])
    ev = r2.receive(proof[0])
    assert isinstance(ev, Failed) and ev.code == "bad_secret"


def test_replayed_challenge_fails_against_a_fresh_initiator_nonce() -> None:
    i1, r1 = make(Role.INITIATOR, A, seed=1), make(Role.RESPONDER, B, seed=2)
    for f in frames(i1.data_to_send()):
        r1.receive(f)
    challenge = frames(r1.data_to_send())[0]
    i2 = make(Role.INITIATOR, A, seed=4)
    i2.data_to_send()
    ev = i2.receive(challenge)
    assert isinstance(ev, Failed) and ev.code == "bad_secret"


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        (HELLO, "id", "mallory"),
        (HELLO, "inc", 8),
        (HELLO, "listen", ["10.0.0.66", 7001]),
        (HELLO, "nonce", b"\x02" * 32),
        (HELLO, "max_frame", 4096),
        (CHALLENGE, "id", "mallory"),
        (CHALLENGE, "inc", 10),
        (CHALLENGE, "listen", ["10.0.0.66", 7002]),
        (CHALLENGE, "nonce", b"\x03" * 32),
        (CHALLENGE, "max_frame", 4096),
        (PROOF, "mac", b"\x04" * 32),
    ],
)
def test_tampering_with_any_authenticated_field_is_detected(kind: int, field: str, value: Any) -> None:
    i, r = make(Role.INITIATOR, A, seed=1), make(Role.RESPONDER, B, seed=2)
    outcomes = []
    for _ in range(4):
        for src, dst in ((i, r), (r, i)):
            for f in frames(src.data_to_send()):
                if dst.finished:
                    continue
                if f.kind == kind:
                    f = Frame(f.kind, {**f.body, field: value}, f.version)
                ev = dst.receive(f)
                if isinstance(ev, AdmissionRequired):
                    dst.accept()
                outcomes.append(ev)
    assert not isinstance(i.outcome, Established) or not isinstance(r.outcome, Established)
    failed = [o for o in (i.outcome, r.outcome) if isinstance(o, Failed)]
    assert failed and {o.code for o in failed} == {"bad_secret"}


def test_version_mismatch_is_refused_by_the_responder_with_both_version_lists() -> None:
    i = make(Role.INITIATOR, PeerInfo("a", 1, None, (2, 3)))
    r = make(Role.RESPONDER, B, seed=2)
    run_to_end(i, r)
    assert isinstance(r.outcome, Failed) and r.outcome.code == "version" and not r.outcome.by_peer
    assert isinstance(i.outcome, Failed) and i.outcome.code == "version" and i.outcome.by_peer
    assert "[2, 3]" in i.outcome.reason and "[1]" in i.outcome.reason


def test_versions_negotiate_to_the_highest_common_one() -> None:
    i = make(Role.INITIATOR, PeerInfo("a", 1, None, (1, 2, 3)))
    r = make(Role.RESPONDER, PeerInfo("b", 1, None, (2, 3, 4)), seed=2)
    run_to_end(i, r)
    assert isinstance(i.outcome, Established) and i.outcome.version == 3
    assert isinstance(r.outcome, Established) and r.outcome.version == 3


def test_initiator_refuses_a_challenge_with_a_version_it_does_not_speak() -> None:
    i = make(Role.INITIATOR, A)
    i.data_to_send()
    ev = i.receive(Frame(CHALLENGE, {"id": "b", "inc": 1, "listen": None, "version": 5,
                                     "nonce": b"\x00" * 32, "mac": b"\x00" * 32}))
    assert isinstance(ev, Failed) and ev.code == "version"


@pytest.mark.parametrize("side", ["responder", "initiator"])
def test_host_refusal_at_admission_reaches_the_other_side(side: str) -> None:
    """Duplicate ids are host policy: the machine carries the host's refusal to the peer."""
    i, r = make(Role.INITIATOR, A, seed=1), make(Role.RESPONDER, B, seed=2)

    def refuse(hs: Handshake, ev: AdmissionRequired) -> None:
        hs.refuse(Refusal.DUPLICATE_ID, f"duplicate id {ev.peer.node_id!r}")

    if side == "responder":
        run_to_end(i, r, admit_r=refuse)
        refuser, refused = r, i
    else:
        run_to_end(i, r, admit_i=refuse)
        refuser, refused = i, r
    assert refuser.outcome == Failed("duplicate_id", f"duplicate id {refused.local.node_id!r}", False)
    assert refused.outcome == Failed("duplicate_id", f"duplicate id {refused.local.node_id!r}", True)
    if side == "initiator":
        # The initiator refused before sending its PROOF: the responder never saw one.
        assert r.state is State.FAILED


def test_timeout_fails_and_tells_the_peer() -> None:
    r = make(Role.RESPONDER, B, timeout=5.0)
    assert r.deadline == 105.0
    assert r.expire(104.9) is None and r.state is State.WAIT_HELLO
    ev = r.expire(105.0)
    assert isinstance(ev, Failed) and ev.code == "timeout" and "wait_hello" in ev.reason
    assert frames(r.data_to_send())[0].body["code"] == "timeout"
    assert r.expire(200.0) is None  # already finished


def test_timeout_while_waiting_for_welcome() -> None:
    i, r = make(Role.INITIATOR, A, seed=1, timeout=3.0), make(Role.RESPONDER, B, seed=2)
    for f in frames(i.data_to_send()):
        r.receive(f)
    for f in frames(r.data_to_send()):
        assert isinstance(i.receive(f), AdmissionRequired)
    i.accept()
    assert i.state is State.WAIT_WELCOME
    ev = i.expire(103.0)
    assert isinstance(ev, Failed) and ev.code == "timeout"


@pytest.mark.parametrize(
    "frame",
    [
        Frame(PROOF, {"mac": b"\x00" * 32}),  # out of order
        Frame(WELCOME, {}),
        Frame(0x77, {}),
        Frame(HELLO, ["not", "a", "map"]),
        Frame(HELLO, {"id": "a", "inc": 1, "versions": [1]}),  # no nonce
        Frame(HELLO, {"id": "a", "inc": 1, "versions": [1], "nonce": b"short"}),
        Frame(HELLO, {"id": "", "inc": 1, "versions": [1], "nonce": b"\x00" * 32}),
        Frame(HELLO, {"id": "x" * 300, "inc": 1, "versions": [1], "nonce": b"\x00" * 32}),
        Frame(HELLO, {"id": "a", "inc": -1, "versions": [1], "nonce": b"\x00" * 32}),
        Frame(HELLO, {"id": "a", "inc": 1, "versions": [], "nonce": b"\x00" * 32}),
        Frame(HELLO, {"id": "a", "inc": 1, "versions": [1], "nonce": b"\x00" * 32, "listen": ["h"]}),
        Frame(HELLO, {"id": "a", "inc": 1, "versions": [1], "nonce": b"\x00" * 32,
                      "listen": ["h", 70000]}),
        Frame(HELLO, {"id": "a", "inc": 1, "versions": [1], "nonce": b"\x00" * 32, "max_frame": 10}),
        Frame(HELLO, {"id": "a", "inc": 1, "versions": [1], "nonce": b"\x00" * 32, "max_frame": "big"}),
    ],
)
def test_malformed_or_unexpected_frames_are_refused_as_protocol_errors(frame: Frame) -> None:
    r = make(Role.RESPONDER, B)
    ev = r.receive(frame)
    assert isinstance(ev, Failed) and ev.code == "protocol" and not ev.by_peer
    sent = frames(r.data_to_send())
    assert [f.kind for f in sent] == [REFUSE] and sent[0].body["code"] == "protocol"


def test_received_refuse_is_reported_with_code_and_truncated_reason() -> None:
    i = make(Role.INITIATOR, A)
    ev = i.receive(Frame(REFUSE, {"code": "duplicate_id", "reason": "x" * 10_000}))
    assert isinstance(ev, Failed) and ev.by_peer and ev.code == "duplicate_id" and len(ev.reason) == 500
    i2 = make(Role.INITIATOR, A)
    ev2 = i2.receive(Frame(REFUSE, "garbage"))
    assert isinstance(ev2, Failed) and ev2.code == "protocol" and ev2.reason == "no reason given"


def test_host_misuse_raises_handshake_error() -> None:
    hs = Handshake(Role.RESPONDER, B, secret=SECRET, nonce_source=counter_nonces(1))
    with pytest.raises(HandshakeError):
        hs.receive(Frame(HELLO, {}))
    hs.start(0.0)
    with pytest.raises(HandshakeError):
        hs.start(0.0)
    with pytest.raises(HandshakeError):
        hs.accept()
    hs.refuse(Refusal.SHUTTING_DOWN, "bye")
    with pytest.raises(HandshakeError):
        hs.receive(Frame(HELLO, {}))
    with pytest.raises(HandshakeError):
        hs.refuse(Refusal.SHUTTING_DOWN, "again")
    bad = Handshake(Role.INITIATOR, A, secret=SECRET, nonce_source=lambda n: b"short")
    with pytest.raises(HandshakeError):
        bad.start(0.0)


def test_handshake_frames_are_ordinary_wire_frames() -> None:
    i = make(Role.INITIATOR, A)
    data = i.data_to_send()
    (f,) = frames(data)
    assert f.kind == HELLO and f.version == 1
    assert data[4:] == encode_frame(HELLO, f.body)


_bodies = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(["id", "inc", "listen", "versions", "nonce", "mac", "version", "code", "reason"]),
        inner, max_size=9),
    max_leaves=8,
)


@settings(max_examples=120, deadline=None)
@given(role=st.sampled_from(list(Role)), kinds=st.lists(st.integers(0, 8), min_size=1, max_size=5),
       bodies=st.lists(_bodies, min_size=5, max_size=5))
def test_hostile_frames_never_raise_out_of_the_machine(role: Role, kinds: list[int], bodies: list[Any]) -> None:
    hs = make(role, A)
    for kind, body in zip(kinds, bodies):
        if hs.finished:
            break
        ev = hs.receive(Frame(kind, body))
        if isinstance(ev, AdmissionRequired):
            pytest.fail("a peer without the secret was admitted")
    # Whatever happened, the machine is in a defined state and its output is decodable.
    frames(hs.data_to_send())


def test_frame_limits_are_exchanged() -> None:
    i = make(Role.INITIATOR, PeerInfo("a", 1, None, max_frame=1 << 20))
    r = make(Role.RESPONDER, PeerInfo("b", 1, None, max_frame=1 << 16), seed=2)
    run_to_end(i, r)
    assert isinstance(i.outcome, Established) and i.outcome.peer.max_frame == 1 << 16
    assert isinstance(r.outcome, Established) and r.outcome.peer.max_frame == 1 << 20
