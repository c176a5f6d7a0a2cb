"""Link frames as plain function calls: what each frame of an established link means, malformed ones
included, decoded from the bytes a peer sends (:class:`~warpmesh.wire.frame.StreamDecoder` first)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from warpmesh import PROTOCOL_VERSION
from warpmesh.net.address import format_address, parse_address, resolve_listen
from warpmesh.net.linkframe import (
    BYE,
    DATA,
    DATA_HEADER,
    PING,
    PONG,
    ROSTER,
    ROSTER_DIGEST,
    Event,
    LinkEvent,
    decode_link_frame,
)
from warpmesh.net.meshconfig import TcpMeshConfig, backoff_delay
from warpmesh.wire.frame import DATA_OVERHEAD, Frame, StreamDecoder, encode_frame, length_prefixed


def frame(kind: int, body: Any) -> Frame:
    return Frame(kind, body, PROTOCOL_VERSION)


@pytest.mark.parametrize(("kind", "body", "event"), [
    (DATA, b"payload", LinkEvent(Event.DATA, b"payload")),
    (PING, 7, LinkEvent(Event.PING, 7)),
    (PONG, 7, LinkEvent(Event.PONG, 7)),
    (ROSTER, {"peers": []}, LinkEvent(Event.GOSSIP, {"peers": []})),
    (ROSTER_DIGEST, b"d" * 16, LinkEvent(Event.GOSSIP_DIGEST, b"d" * 16)),
    (BYE, {"code": "leaving", "reason": "bye"}, LinkEvent(Event.BYE, "leaving")),
], ids=["data", "ping", "pong", "roster", "roster-digest", "bye"])
def test_each_link_frame_means_its_event(kind: int, body: Any, event: object) -> None:
    assert decode_link_frame(frame(kind, body)) == event


@pytest.mark.parametrize(("kind", "body", "event"), [
    (DATA, "text, not bytes", LinkEvent(Event.MALFORMED, "bad_body")),
    (DATA, None, LinkEvent(Event.MALFORMED, "bad_body")),
    (DATA, bytearray(b"x"), LinkEvent(Event.MALFORMED, "bad_body")),
    (PING, "seven", LinkEvent(Event.PING, 0)),  # still answered, so a confused peer is not thought dead
    (PING, True, LinkEvent(Event.PING, 0)),
    (PONG, "seven", LinkEvent(Event.PONG, None)),  # matches no PING of ours
    (PONG, 1.0, LinkEvent(Event.PONG, None)),
    (BYE, "leaving", LinkEvent(Event.BYE, None)),
    (BYE, None, LinkEvent(Event.BYE, None)),
    (ROSTER_DIGEST, b"", LinkEvent(Event.MALFORMED, "bad_body")),
    (ROSTER_DIGEST, "digest", LinkEvent(Event.MALFORMED, "bad_body")),
    (ROSTER_DIGEST, b"x" * 65, LinkEvent(Event.MALFORMED, "bad_body")),
    (0x16, b"", LinkEvent(Event.MALFORMED, "unknown_kind")),
    (0x01, {}, LinkEvent(Event.MALFORMED, "unknown_kind")),  # a handshake kind after the handshake
], ids=["data-str", "data-none", "data-bytearray", "ping-str", "ping-bool", "pong-str", "pong-float",
        "bye-str", "bye-none", "digest-empty", "digest-str", "digest-long", "unknown", "late-handshake"])
def test_a_malformed_link_frame_is_an_event_not_an_exception(kind: int, body: Any, event: object) -> None:
    assert decode_link_frame(frame(kind, body)) == event


def test_decoded_from_the_wire_good_frames_pass_and_bad_ones_are_refused_or_flagged() -> None:
    """A peer's bytes: DATA in the fast layout, DATA with a non-bytes body, garbage that is not msgpack,
    an unknown kind, PING: the stream survives all of them and each is accounted for."""
    payload = b"\x00hello"
    fast = DATA_HEADER.pack(len(payload) + DATA_OVERHEAD, PROTOCOL_VERSION, DATA, 0xC6, len(payload)) + payload
    garbage = length_prefixed(bytes([PROTOCOL_VERSION, DATA, 0xC1]))  # 0xc1 is never valid msgpack
    stream = b"".join([
        fast,
        length_prefixed(encode_frame(DATA, "not bytes")),
        garbage,
        length_prefixed(encode_frame(0x7E, 1)),
        length_prefixed(encode_frame(PING, 3)),
    ])
    decoder = StreamDecoder(data_kind=DATA)
    got: list[object] = []
    for i in range(0, len(stream), 5):  # arrives in small pieces
        for item in decoder.feed_fast(stream[i:i + 5]):
            got.append(LinkEvent(Event.DATA, item) if type(item) is bytes else decode_link_frame(item))
    decoder.eof()
    assert got == [LinkEvent(Event.DATA, payload), LinkEvent(Event.MALFORMED, "bad_body"), LinkEvent(Event.MALFORMED, "unknown_kind"), LinkEvent(Event.PING, 3)]
    assert decoder.stats.refused_total == 1 and decoder.broken is None


def test_a_data_header_is_what_the_fast_path_expects() -> None:
    payload = b"x" * 300
    wire = DATA_HEADER.pack(len(payload) + DATA_OVERHEAD, PROTOCOL_VERSION, DATA, 0xC6, len(payload)) + payload
    assert StreamDecoder(data_kind=DATA).feed(wire) == [Frame(DATA, payload, PROTOCOL_VERSION)]


@pytest.mark.parametrize(("listen", "remote", "expected"), [
    (("0.0.0.0", 7000), ("10.0.0.5", 51000), ("10.0.0.5", 7000)),
    (("", 7000), ("::1", 51000), ("::1", 7000)),
    (("10.0.0.9", 7000), ("10.0.0.5", 51000), ("10.0.0.9", 7000)),
    (("0.0.0.0", 7000), None, ("0.0.0.0", 7000)),
    (None, ("10.0.0.5", 51000), None),
])
def test_a_wildcard_listen_address_is_dialled_where_the_peer_came_from(listen: Any, remote: Any,
                                                                       expected: Any) -> None:
    assert resolve_listen(listen, remote) == expected


@pytest.mark.parametrize("text", ["127.0.0.1:7000", "[::1]:7000", "example.org:0"])
def test_addresses_round_trip(text: str) -> None:
    assert format_address(parse_address(text)) == text


def test_backoff_grows_to_its_cap_and_jitter_only_shortens_it() -> None:
    cfg = TcpMeshConfig(backoff_initial=0.1, backoff_max=2.0, backoff_multiplier=2.0, backoff_jitter=0.5)
    assert [backoff_delay(cfg, n, 0.0) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert backoff_delay(cfg, 1000, 0.0) == 2.0
    rng = random.Random(1)
    for n in range(10):
        d = backoff_delay(cfg, n, rng.random())
        assert backoff_delay(cfg, n, 0.0) / 2 <= d <= backoff_delay(cfg, n, 0.0)
