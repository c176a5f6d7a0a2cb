"""The frame codec refuses hostile input with a counted reason and never raises out of a stream."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpmesh import PROTOCOL_VERSION
from warpmesh.wire import (
    Frame,
    FrameTooLarge,
    FrameTruncated,
    FrameUndecodable,
    StreamDecoder,
    UnsupportedVersion,
    decode_frame,
    encode_frame,
    length_prefixed,
)
from warpmesh.wire.frame import DATA_OVERHEAD

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary()
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@given(kind=st.integers(0, 255), body=msgpack_values)
def test_round_trip(kind: int, body: object) -> None:
    frame = decode_frame(encode_frame(kind, body))
    assert frame == Frame(kind=kind, body=body, version=PROTOCOL_VERSION)


def test_header_layout_is_version_kind_body() -> None:
    data = encode_frame(7, {"a": 1})
    assert data[0] == PROTOCOL_VERSION and data[1] == 7
    assert len(length_prefixed(data)) == len(data) + 4
    assert struct.unpack(">I", length_prefixed(data)[:4])[0] == len(data)


def test_refusals_have_distinct_reasons() -> None:
    with pytest.raises(FrameTooLarge):
        decode_frame(encode_frame(1, b"x" * 100), max_size=50)
    with pytest.raises(FrameTruncated):
        decode_frame(bytes([PROTOCOL_VERSION, 1]))
    with pytest.raises(UnsupportedVersion):
        decode_frame(bytes([99, 1, 0xC0]))
    with pytest.raises(FrameUndecodable):
        decode_frame(bytes([PROTOCOL_VERSION, 1, 0xC1]))  # 0xC1 is never valid msgpack
    with pytest.raises(ValueError):
        encode_frame(256, None)


@settings(max_examples=400)
@given(st.binary(max_size=2048))
def test_decoder_never_raises_on_random_bytes(data: bytes) -> None:
    dec = StreamDecoder(max_size=1024)
    frames = dec.feed(data)
    dec.eof()
    assert all(isinstance(f, Frame) for f in frames)
    assert dec.stats.accepted == len(frames)


@given(st.binary(max_size=512))
def test_decode_frame_only_raises_frame_errors(data: bytes) -> None:
    with contextlib.suppress(FrameTooLarge, FrameTruncated, FrameUndecodable, UnsupportedVersion):
        decode_frame(data, max_size=256)


@given(
    bodies=st.lists(msgpack_values, min_size=1, max_size=8),
    cuts=st.lists(st.integers(1, 64), max_size=30),
)
def test_stream_reassembles_frames_split_anywhere(bodies: list[object], cuts: list[int]) -> None:
    stream = b"".join(length_prefixed(encode_frame(3, b)) for b in bodies)
    dec = StreamDecoder()
    got: list[Frame] = []
    pos = 0
    for c in cuts:
        got += dec.feed(stream[pos : pos + c])
        pos += c
    got += dec.feed(stream[pos:])
    assert [f.body for f in got] == bodies
    assert dec.buffered == 0


def test_bad_frame_in_the_middle_is_skipped_and_counted() -> None:
    good = length_prefixed(encode_frame(1, "ok"))
    bad = length_prefixed(bytes([PROTOCOL_VERSION, 1, 0xC1]))
    wrong_version = length_prefixed(bytes([42, 1, 0x01]))
    dec = StreamDecoder()
    frames = dec.feed(good + bad + wrong_version + good)
    assert [f.body for f in frames] == ["ok", "ok"]
    assert dec.stats.refused == {"undecodable": 1, "unsupported_version": 1}


def test_oversize_prefix_poisons_the_stream() -> None:
    dec = StreamDecoder(max_size=100)
    assert dec.feed(struct.pack(">I", 101) + b"x" * 10) == []
    assert dec.broken is not None and dec.stats.refused["too_large"] == 1
    # Later input is ignored: without a trustworthy length there is no frame boundary to resync on.
    assert dec.feed(length_prefixed(encode_frame(1, 1))) == []
    assert dec.feed_fast(fast_data(b"later")) == [] and dec.buffered == 0


def test_truncated_tail_is_counted_at_eof() -> None:
    dec = StreamDecoder()
    frame = length_prefixed(encode_frame(1, "hello"))
    assert dec.feed(frame[:-2]) == []
    dec.eof()
    assert dec.stats.refused["truncated"] == 1


# -- the fast path: a data kind's payloads come out as bytes, everything else exactly as feed() --------

DATA = 0x10  # the TCP mesh's DATA kind; any kind works


def fast_data(payload: bytes, version: int = 1) -> bytes:
    """A data frame in the fast layout (bin32 body), as the TCP mesh writes DATA."""
    n = len(payload)
    return struct.pack(">IBBBI", n + DATA_OVERHEAD, version, DATA, 0xC6, n) + payload


_stream_items = st.one_of(
    st.binary(max_size=300).map(fast_data),
    st.binary(max_size=300).map(lambda p: length_prefixed(encode_frame(DATA, p))),  # bin8/bin16 layout
    st.tuples(st.integers(0, 255), st.integers(0, 2**31)).map(
        lambda t: length_prefixed(encode_frame(t[0], {"n": t[1]}))),
    st.binary(max_size=40).map(lambda b: struct.pack(">I", len(b)) + b),  # arbitrary frame bytes
    st.binary(max_size=300).map(lambda p: fast_data(p, version=7)),  # wrong version, fast layout
    st.binary(max_size=20).map(lambda p: struct.pack(">IBBBI", len(p) + 9, 1, DATA, 0xC6, len(p)) + p + b"zz"),
    st.just(struct.pack(">I", 5000)),  # oversize prefix (limit below is 4096)
)


def _normalise(items: list[Any]) -> list[tuple[int, Any, int]]:
    out = []
    for it in items:
        if isinstance(it, bytes):
            out.append((DATA, it, 1))
        else:
            assert isinstance(it, Frame)
            out.append((it.kind, it.body, it.version))
    return out


@settings(max_examples=200, deadline=None)
@given(items=st.lists(_stream_items, max_size=12), cuts=st.lists(st.integers(0, 4000), max_size=8),
       tail=st.binary(max_size=10))
def test_fast_path_decodes_exactly_like_the_general_path(items: list[bytes], cuts: list[int],
                                                         tail: bytes) -> None:
    stream = b"".join(items) + tail
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    ref = StreamDecoder(max_size=4096)
    fast = StreamDecoder(max_size=4096, data_kind=DATA)
    got_ref: list[Any] = []
    got_fast: list[Any] = []
    for c in chunks:
        got_ref += ref.feed(c)
        got_fast += fast.feed_fast(c)
    ref.eof()
    fast.eof()
    assert _normalise(got_fast) == _normalise(got_ref)
    assert fast.stats.accepted == ref.stats.accepted
    assert fast.stats.refused == ref.stats.refused
    assert (fast.broken is None) == (ref.broken is None)


def test_fast_path_returns_payload_bytes_and_general_path_frames() -> None:
    dec = StreamDecoder(data_kind=DATA)
    out = dec.feed_fast(fast_data(b"hello") + length_prefixed(encode_frame(0x11, 5)))
    assert out[0] == b"hello" and isinstance(out[0], bytes)
    assert out[1] == Frame(0x11, 5)
    assert dec.feed(fast_data(b"hello")) == [Frame(DATA, b"hello")]  # feed() always gives Frames
    plain = StreamDecoder()  # without data_kind every item is a Frame
    assert plain.feed_fast(fast_data(b"hello")) == [Frame(DATA, b"hello")]
