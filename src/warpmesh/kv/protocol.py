"""The KV client protocol: request/response frames on mesh channel 0x21.

A client is a mesh peer (it proves the cluster secret in the TCP handshake like any node) that is
never a Raft member. It sends REQUEST frames to any server and gets one RESPONSE per request:

``REQUEST  [rid, op, key, a, b, client, seq, floor]``
    ``op`` is "get", "sget" (stale local read), "put" (a = value), "del", "cas" (a = expected,
    b = new; None = absent) or "hello" (discovery). Writes carry the client's dedup key
    ``(client, seq, floor)``; a retry of the same write reuses it, so it is applied once.

``RESPONSE [rid, status, result, leader, info]``
    ``status`` OK, RETRY (outcome unknown or node unavailable: retry the *same* request, anywhere),
    ERROR (the request is invalid; do not retry) or EXPIRED (the client's session expired; the
    write was not applied). ``leader`` is the server's view of the Raft leader (a routing hint);
    ``info`` a human-readable detail. For "hello", ``result`` is ``[voters, learners]``.

Operator (admin) requests use the same frames; ``key`` is a node id where the op names one:

* answered by the node asked: "status" (its own row of ``kv status``);
* answered by the leader (others answer RETRY with the leader hint): "members" (``kv member
  list``), "add" (a = address, b = ``{"learner": bool}``), "join" (a = address, b = ``{"token":
  str, "force": bool, "learner": bool}``, sent by ``kv serve --join``), "promote", "remove",
  "transfer" (key = target or None), "check" (is this id removed?), "snapsave" (a consistent
  snapshot: ``[index, state bytes]``).
"""

from __future__ import annotations

from typing import Any

from warpmesh.errors import DecodeError
from warpmesh.wire.frame import decode_frame, encode_frame

KV_CHANNEL = 0x21
REQUEST = 0x01
RESPONSE = 0x02

OK = 0
RETRY = 1
ERROR = 2
EXPIRED = 3

OPS = frozenset({"get", "sget", "put", "del", "cas", "hello", "state", "status", "members", "add",
                 "join", "promote", "remove", "transfer", "check", "snapsave"})
WRITE_OPS = frozenset({"put", "del", "cas"})
#: Operator requests: never deduplicated (each is idempotent in effect), slower attempts allowed.
ADMIN_OPS = frozenset({"status", "members", "add", "join", "promote", "remove", "transfer", "check",
                       "snapsave"})
#: How operators know each request (for messages).
ADMIN_NAMES = {"members": "member list", "add": "member add", "join": "the join of", "promote": "member promote",
               "remove": "member remove", "transfer": "transfer-leader", "check": "the removal check of",
               "snapsave": "snapshot save", "status": "status"}
#: Requests whose ``key`` may be None.
KEYLESS_OPS = frozenset({"hello", "state", "status", "members", "transfer", "snapsave"})


class BadFrame(DecodeError):
    pass


def encode_request(rid: int, op: str, key: str | None, a: Any = None, b: Any = None,
                   client: str | None = None, seq: int = 0, floor: int = 0) -> bytes:
    return encode_frame(REQUEST, [rid, op, key, a, b, client, seq, floor])


def encode_response(rid: int, status: int, result: Any = None, leader: str | None = None,
                    info: str = "") -> bytes:
    return encode_frame(RESPONSE, [rid, status, result, leader, info])


def decode_request(data: bytes) -> list[Any]:
    """Decode and validate a request; raises :class:`BadFrame` (or a ``FrameError``) on anything else."""
    try:
        return _decode_request(data)
    except (TypeError, KeyError, IndexError, AttributeError) as err:
        raise BadFrame(f"malformed request: {err}") from None


def _decode_request(data: bytes) -> list[Any]:
    f = decode_frame(data)
    b = f.body
    if f.kind != REQUEST or not isinstance(b, list) or len(b) != 8:
        raise BadFrame("not a KV request")
    rid, op, key, _a, _b, client, seq, floor = b
    if type(rid) is not int or not isinstance(op, str) or op not in OPS:
        raise BadFrame("bad request id or op")
    if key is not None and not isinstance(key, str):
        raise BadFrame("a key is a string")
    if op not in KEYLESS_OPS and (not isinstance(key, str) or not key):
        raise BadFrame("a request needs a non-empty string key")
    if op in WRITE_OPS and (not isinstance(client, str) or not client or len(client) > 256
                            or type(seq) is not int or seq < 1 or type(floor) is not int or floor < 0):
        raise BadFrame("a write needs a dedup key (client, seq >= 1, floor)")
    return b


def decode_response(data: bytes) -> list[Any]:
    f = decode_frame(data)
    b = f.body
    if f.kind != RESPONSE or not isinstance(b, list) or len(b) != 5 or type(b[0]) is not int:
        raise BadFrame("not a KV response")
    return b
