"""The frame codec refuses hostile input with a counted reason and never raises out of a stream."""

from __future__ import annotations

import contextlib
import struct

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


def test_truncated_tail_is_counted_at_eof() -> None:
    dec = StreamDecoder()
    frame = length_prefixed(encode_frame(1, "hello"))
    assert dec.feed(frame[:-2]) == []
    dec.eof()
    assert dec.stats.refused["truncated"] == 1
