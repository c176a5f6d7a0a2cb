"""Wire format: msgpack-format frames with a version byte, a message kind and a body.

Pure and synchronous: bytes in, frames (or counted refusals) out. See :mod:`warpmesh.wire.frame`.
"""

from warpmesh.wire.frame import (
    DEFAULT_MAX_FRAME,
    Frame,
    FrameError,
    FrameStats,
    FrameTooLarge,
    FrameTruncated,
    FrameUndecodable,
    StreamDecoder,
    UnsupportedVersion,
    decode_frame,
    encode_frame,
    length_prefixed,
    pack,
    unpack,
)

__all__ = [
    "DEFAULT_MAX_FRAME",
    "Frame",
    "FrameError",
    "FrameStats",
    "FrameTooLarge",
    "FrameTruncated",
    "FrameUndecodable",
    "StreamDecoder",
    "UnsupportedVersion",
    "decode_frame",
    "encode_frame",
    "length_prefixed",
    "pack",
    "unpack",
]
