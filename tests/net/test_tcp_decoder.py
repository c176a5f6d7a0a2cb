"""LinkDecoder (the mesh's read path) decodes exactly like the shared StreamDecoder, whatever the
bytes and however they are chunked; its DATA fast path only changes the representation."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from warpmesh.net.tcp import DATA, LinkDecoder
from warpmesh.wire.frame import Frame, StreamDecoder, encode_frame, length_prefixed


def fast_data(payload: bytes, version: int = 1) -> bytes:
    """A DATA frame as TcpMesh writes it (bin32 body)."""
    n = len(payload)
    return struct.pack(">IBBBI", n + 7, version, DATA, 0xC6, n) + payload


_frames = st.one_of(
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
@given(frames=st.lists(_frames, max_size=12), cuts=st.lists(st.integers(0, 4000), max_size=8),
       tail=st.binary(max_size=10))
def test_link_decoder_matches_stream_decoder(frames: list[bytes], cuts: list[int], tail: bytes) -> None:
    stream = b"".join(frames) + tail
    points = sorted({min(c, len(stream)) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    ref = StreamDecoder(max_size=4096)
    fast = LinkDecoder(max_size=4096, data_kind=DATA)
    got_ref: list[Any] = []
    got_fast: list[Any] = []
    for c in chunks:
        got_ref += ref.feed(c)
        got_fast += fast.feed(c)
    ref.eof()
    fast.eof()
    assert _normalise(got_fast) == _normalise(got_ref)
    assert fast.stats.accepted == ref.stats.accepted
    assert fast.stats.refused == ref.stats.refused
    assert (fast.broken is None) == (ref.broken is None)


def test_fast_path_returns_payload_bytes_and_general_path_frames() -> None:
    dec = LinkDecoder(data_kind=DATA)
    out = dec.feed(fast_data(b"hello") + length_prefixed(encode_frame(0x11, 5)))
    assert out[0] == b"hello" and isinstance(out[0], bytes)
    assert out[1] == Frame(0x11, 5)
    plain = LinkDecoder()  # without data_kind every item is a Frame
    assert plain.feed(fast_data(b"hello")) == [Frame(DATA, b"hello")]


def test_oversize_prefix_poisons_the_stream() -> None:
    dec = LinkDecoder(max_size=100)
    assert dec.feed(struct.pack(">I", 101) + b"x" * 200) == []
    assert dec.broken is not None and dec.stats.refused["too_large"] == 1
    assert dec.feed(fast_data(b"later")) == [] and dec.buffered == 0
