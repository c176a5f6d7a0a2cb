"""The mesh handshake: a pure, sans-I/O state machine (frames in, frames out, an outcome).

Two peers that open a TCP (or TLS) connection run this before any seam traffic. It exchanges each
side's node id, per-boot incarnation, supported protocol versions and advertised listen address, and
proves knowledge of a shared cluster secret by **mutual HMAC-SHA256 challenge-response**::

    initiator (dialer)                                     responder (listener)
    HELLO     {id, inc, listen, versions,
               max_frame, nonce_i}                   -->
                                                     <--   CHALLENGE {id, inc, listen, version,
                                                                      max_frame, nonce_r, mac_r}
    (check mac_r, then ask the host to admit the responder)
    PROOF     {mac_i}                                -->
                                                           (check mac_i, then ask the host to admit)
                                                     <--   WELCOME   {}

    mac_r = HMAC(secret, transcript("responder->initiator"))
    mac_i = HMAC(secret, transcript("initiator->responder"))
    transcript(direction) = msgpack([LABEL, direction, version,
                                     id_i, inc_i, listen_i, max_frame_i, nonce_i,
                                     id_r, inc_r, listen_r, max_frame_r, nonce_r])

Either side may answer any step with ``REFUSE {code, reason}`` and close. Properties:

* Both MACs bind both fresh nonces, so a recorded CHALLENGE or PROOF is useless in another session
  (replay), and both ids, incarnations, listen addresses and frame limits, so none can be altered in
  transit.
* The direction label makes the two MACs of one session different: a responder's MAC can never be
  reflected back as an initiator's proof.
* The initiator proves itself only *after* checking the responder's MAC, so a listener without the
  secret learns nothing it could use to answer anyone else's challenge.
* MACs are compared with :func:`hmac.compare_digest`.

Without a secret (loopback-only meshes) both sides use a fixed public key: the exchange still
detects a peer that *does* have a secret (the MACs differ) but authenticates nothing.

The machine never touches sockets, clocks or randomness: nonces come from an injected
``nonce_source`` and time from ``now`` arguments, so tests are plain function calls. The host reads
frames (:class:`~warpmesh.wire.frame.StreamDecoder`), passes them to :meth:`Handshake.receive`, sends
:meth:`Handshake.data_to_send`, answers :class:`AdmissionRequired` with :meth:`Handshake.accept` or
:meth:`Handshake.refuse` (its policy: duplicate ids, duplicate links, incarnations) and calls
:meth:`Handshake.expire` when :attr:`Handshake.deadline` passes.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from warpmesh import PROTOCOL_VERSION
from warpmesh.errors import WarpmeshError
from warpmesh.wire.frame import DEFAULT_MAX_FRAME, Frame, encode_frame, length_prefixed, pack

# Frame kinds of the mesh link protocol that belong to the handshake. Link-level kinds (data, ping,
# roster gossip) are numbered from 0x10 in :mod:`warpmesh.net.linkframe`.
HELLO = 0x01
CHALLENGE = 0x02
PROOF = 0x03
WELCOME = 0x04
REFUSE = 0x05

#: Domain separation for the MAC transcript; bump if the transcript layout ever changes.
LABEL = "warpmesh/mesh-handshake/1"
NONCE_BYTES = 32
MAC_BYTES = 32
#: Key used when no cluster secret is configured (loopback only): public, authenticates nothing.
NO_SECRET_KEY = b"warpmesh: no cluster secret (loopback only)"
#: Longest node id accepted (ids travel in every roster frame; 255 UTF-8 bytes is plenty).
MAX_ID_BYTES = 255
#: Versions a peer may advertise; more is a malformed HELLO.
MAX_VERSIONS = 16
#: Default time allowed from connection to WELCOME (also covers the host's admission check).
DEFAULT_TIMEOUT = 10.0
#: Bounds of an advertised frame limit (the length prefix is a u32).
MIN_FRAME_LIMIT = 1024
MAX_FRAME_LIMIT = 2**32 - 1

Address = tuple[str, int]


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class State(enum.Enum):
    IDLE = "idle"
    WAIT_HELLO = "wait_hello"  # responder
    WAIT_CHALLENGE = "wait_challenge"  # initiator
    WAIT_PROOF = "wait_proof"  # responder
    ADMIT = "admit"  # either: peer authenticated, host must accept() or refuse()
    WAIT_WELCOME = "wait_welcome"  # initiator
    DONE = "done"
    FAILED = "failed"


class Refusal(enum.StrEnum):
    """Stable refusal codes (counted in stats, sent in REFUSE frames)."""

    BAD_SECRET = "bad_secret"
    VERSION = "version"
    DUPLICATE_ID = "duplicate_id"
    STALE_INCARNATION = "stale_incarnation"
    DUPLICATE_LINK = "duplicate_link"
    SELF = "self_connection"
    PROTOCOL = "protocol"
    TIMEOUT = "timeout"
    SHUTTING_DOWN = "shutting_down"
    OVERLOADED = "overloaded"


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What a handshake tells about one side."""

    node_id: str
    incarnation: int
    listen: Address | None
    versions: tuple[int, ...] = (PROTOCOL_VERSION,)
    #: Largest frame this side accepts; the other side must not send more.
    max_frame: int = DEFAULT_MAX_FRAME


@dataclass(frozen=True, slots=True)
class AdmissionRequired:
    """The peer proved the secret; the host must call ``accept()`` or ``refuse()``."""

    peer: PeerInfo
    version: int


@dataclass(frozen=True, slots=True)
class Established:
    """The handshake succeeded: link frames may flow with ``version``."""

    peer: PeerInfo
    version: int


@dataclass(frozen=True, slots=True)
class Failed:
    """The handshake failed. ``by_peer``: the other side refused us (else we refused it)."""

    code: str
    reason: str
    by_peer: bool


Event = AdmissionRequired | Established | Failed


class HandshakeError(WarpmeshError):
    """The host called a method that the current state does not allow (a bug in the host)."""


def _encode_listen(listen: Address | None) -> list[Any] | None:
    return None if listen is None else [listen[0], int(listen[1])]


def _decode_listen(raw: Any) -> Address | None:
    if raw is None:
        return None
    if (isinstance(raw, list) and len(raw) == 2 and isinstance(raw[0], str) and len(raw[0]) <= 255
            and type(raw[1]) is int and 0 <= raw[1] <= 0xFFFF):
        return (raw[0], raw[1])
    raise ValueError("listen must be null or [host, port]")


def _valid_id(raw: Any) -> str:
    if not isinstance(raw, str) or not raw or len(raw.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise ValueError(f"node id must be a non-empty string of at most {MAX_ID_BYTES} bytes")
    return raw


def _valid_int(raw: Any, what: str) -> int:
    if type(raw) is not int or raw < 0 or raw >= 1 << 63:
        raise ValueError(f"{what} must be an integer in [0, 2^63)")
    return raw


def _valid_max_frame(raw: Any) -> int:
    if raw is None:
        return DEFAULT_MAX_FRAME  # a peer that does not say accepts the default
    if type(raw) is not int or not MIN_FRAME_LIMIT <= raw <= MAX_FRAME_LIMIT:
        raise ValueError(f"max_frame must be an integer in [{MIN_FRAME_LIMIT}, {MAX_FRAME_LIMIT}]")
    return raw


def _valid_bytes(raw: Any, n: int, what: str) -> bytes:
    if not isinstance(raw, bytes) or len(raw) != n:
        raise ValueError(f"{what} must be {n} bytes")
    return raw


def transcript(
    direction: str, version: int, initiator: PeerInfo, nonce_i: bytes, responder: PeerInfo, nonce_r: bytes
) -> bytes:
    """The bytes each MAC covers: both ids, incarnations, addresses, both nonces, version, direction."""
    return pack([
        LABEL, direction, version,
        initiator.node_id, initiator.incarnation, _encode_listen(initiator.listen), initiator.max_frame,
        nonce_i,
        responder.node_id, responder.incarnation, _encode_listen(responder.listen), responder.max_frame,
        nonce_r,
    ])


TO_INITIATOR = "responder->initiator"
TO_RESPONDER = "initiator->responder"


class Handshake:
    """One side of one handshake. Create, :meth:`start`, then feed frames until DONE or FAILED."""

    def __init__(
        self,
        role: Role,
        local: PeerInfo,
        *,
        secret: bytes | None,
        nonce_source: Callable[[int], bytes],
        timeout: float = DEFAULT_TIMEOUT,
        frame_version: int = PROTOCOL_VERSION,
    ) -> None:
        if not local.versions:
            raise ValueError("local.versions must not be empty")
        self.role = role
        self.local = local
        self._key = secret if secret else NO_SECRET_KEY
        self._nonce_source = nonce_source
        self.timeout = timeout
        # Version byte of handshake frames: the lowest we speak, so an older peer can still read our
        # HELLO and refuse it with a reason instead of dropping an undecodable frame.
        self._frame_version = frame_version
        self.state = State.IDLE
        self.deadline = float("inf")
        self.peer: PeerInfo | None = None
        self.version: int | None = None
        self.outcome: Established | Failed | None = None
        self._out: list[bytes] = []
        self._nonce_local = b""
        self._nonce_peer = b""

    # -- output ---------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Length-prefixed frames to write, in order; clears the buffer."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _send(self, kind: int, body: Any) -> None:
        self._out.append(length_prefixed(encode_frame(kind, body, version=self._frame_version)))

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """Begin at time ``now``: the initiator sends HELLO, the responder waits for one."""
        if self.state is not State.IDLE:
            raise HandshakeError(f"start() in state {self.state.value}")
        self.deadline = now + self.timeout
        self._nonce_local = self._nonce()
        if self.role is Role.INITIATOR:
            self._send(HELLO, {
                "id": self.local.node_id,
                "inc": self.local.incarnation,
                "listen": _encode_listen(self.local.listen),
                "versions": list(self.local.versions),
                "max_frame": self.local.max_frame,
                "nonce": self._nonce_local,
            })
            self.state = State.WAIT_CHALLENGE
        else:
            self.state = State.WAIT_HELLO

    def _nonce(self) -> bytes:
        nonce = self._nonce_source(NONCE_BYTES)
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise HandshakeError(f"nonce_source must return {NONCE_BYTES} bytes")
        return nonce

    @property
    def finished(self) -> bool:
        return self.state in (State.DONE, State.FAILED)

    def expire(self, now: float) -> Failed | None:
        """Fail with a timeout (sending REFUSE) if ``now`` is past the deadline."""
        if self.finished or now < self.deadline:
            return None
        return self._refuse(Refusal.TIMEOUT, f"handshake not completed within {self.timeout:g} s "
                                             f"(stuck in {self.state.value})")

    def _refuse(self, code: Refusal | str, reason: str) -> Failed:
        code_s = code.value if isinstance(code, Refusal) else str(code)
        self._send(REFUSE, {"code": code_s, "reason": reason})
        return self._fail(code_s, reason, by_peer=False)

    def _fail(self, code: Refusal | str, reason: str, *, by_peer: bool) -> Failed:
        code_s = code.value if isinstance(code, Refusal) else str(code)
        self.state = State.FAILED
        self.outcome = Failed(code_s, reason, by_peer)
        return self.outcome

    # -- host decisions -------------------------------------------------------------------
    def accept(self) -> Established | None:
        """Admit the authenticated peer. The responder is established at once (WELCOME sent); the
        initiator sends its PROOF and is established when WELCOME arrives."""
        if self.state is not State.ADMIT:
            raise HandshakeError(f"accept() in state {self.state.value}")
        assert self.peer is not None and self.version is not None
        if self.role is Role.RESPONDER:
            self._send(WELCOME, {})
            self.state = State.DONE
            self.outcome = Established(self.peer, self.version)
            return self.outcome
        mac = self._mac(TO_RESPONDER)
        self._send(PROOF, {"mac": mac})
        self.state = State.WAIT_WELCOME
        return None

    def refuse(self, code: Refusal | str, reason: str) -> Failed:
        """Refuse the peer (REFUSE is queued for sending). Allowed in any unfinished state."""
        if self.finished:
            raise HandshakeError(f"refuse() in state {self.state.value}")
        return self._refuse(code, reason)

    # -- input ----------------------------------------------------------------------------
    def receive(self, frame: Frame) -> Event | None:
        """Process one frame from the peer; return an event when the host must act or it ended."""
        if self.finished:
            raise HandshakeError(f"receive() in state {self.state.value}")
        if self.state is State.IDLE:
            raise HandshakeError("receive() before start()")
        if frame.kind == REFUSE:
            return self._on_refuse(frame.body)
        try:
            if self.state is State.WAIT_HELLO and frame.kind == HELLO:
                return self._on_hello(frame.body)
            if self.state is State.WAIT_CHALLENGE and frame.kind == CHALLENGE:
                return self._on_challenge(frame.body)
            if self.state is State.WAIT_PROOF and frame.kind == PROOF:
                return self._on_proof(frame.body)
            if self.state is State.WAIT_WELCOME and frame.kind == WELCOME:
                assert self.peer is not None and self.version is not None
                self.state = State.DONE
                self.outcome = Established(self.peer, self.version)
                return self.outcome
        except (ValueError, TypeError, KeyError) as err:
            return self._refuse(Refusal.PROTOCOL, f"malformed handshake frame (kind {frame.kind}): {err}")
        return self._refuse(Refusal.PROTOCOL, f"unexpected frame kind {frame.kind} while in "
                                              f"{self.state.value}")

    def _on_refuse(self, body: Any) -> Failed:
        code = body.get("code") if isinstance(body, dict) else None
        reason = body.get("reason") if isinstance(body, dict) else None
        code_s = code[:64] if isinstance(code, str) and code else Refusal.PROTOCOL.value
        reason_s = reason[:500] if isinstance(reason, str) else "no reason given"
        return self._fail(code_s, reason_s, by_peer=True)

    def _negotiate(self, theirs: Sequence[int]) -> int | None:
        common = set(self.local.versions) & set(theirs)
        return max(common) if common else None

    def _on_hello(self, body: Any) -> Event | None:
        if not isinstance(body, dict):
            raise ValueError("HELLO body must be a map")
        versions = body["versions"]
        if (not isinstance(versions, list) or not versions or len(versions) > MAX_VERSIONS
                or not all(type(v) is int and 0 <= v <= 0xFF for v in versions)):
            raise ValueError("versions must be a non-empty list of version numbers")
        peer = PeerInfo(
            node_id=_valid_id(body["id"]),
            incarnation=_valid_int(body["inc"], "incarnation"),
            listen=_decode_listen(body.get("listen")),
            versions=tuple(versions),
            max_frame=_valid_max_frame(body.get("max_frame")),
        )
        self._nonce_peer = _valid_bytes(body["nonce"], NONCE_BYTES, "nonce")
        version = self._negotiate(peer.versions)
        if version is None:
            return self._refuse(Refusal.VERSION, f"incompatible protocol version: {peer.node_id!r} speaks "
                                                 f"{sorted(peer.versions)}, {self.local.node_id!r} speaks "
                                                 f"{sorted(self.local.versions)}")
        self.peer = peer
        self.version = version
        self._send(CHALLENGE, {
            "id": self.local.node_id,
            "inc": self.local.incarnation,
            "listen": _encode_listen(self.local.listen),
            "version": version,
            "max_frame": self.local.max_frame,
            "nonce": self._nonce_local,
            "mac": self._mac(TO_INITIATOR),
        })
        self.state = State.WAIT_PROOF
        return None

    def _on_challenge(self, body: Any) -> Event:
        if not isinstance(body, dict):
            raise ValueError("CHALLENGE body must be a map")
        version = body["version"]
        if type(version) is not int:
            raise ValueError("version must be an integer")
        peer = PeerInfo(
            node_id=_valid_id(body["id"]),
            incarnation=_valid_int(body["inc"], "incarnation"),
            listen=_decode_listen(body.get("listen")),
            versions=(version,),
            max_frame=_valid_max_frame(body.get("max_frame")),
        )
        self._nonce_peer = _valid_bytes(body["nonce"], NONCE_BYTES, "nonce")
        mac = _valid_bytes(body["mac"], MAC_BYTES, "mac")
        if version not in self.local.versions:
            return self._refuse(Refusal.VERSION, f"incompatible protocol version: {peer.node_id!r} chose "
                                                 f"{version}, {self.local.node_id!r} speaks "
                                                 f"{sorted(self.local.versions)}")
        self.peer = peer
        self.version = version
        if not hmac.compare_digest(mac, self._mac(TO_INITIATOR)):
            return self._refuse(Refusal.BAD_SECRET, _bad_secret(peer.node_id, self.local.node_id))
        self.state = State.ADMIT
        return AdmissionRequired(peer, version)

    def _on_proof(self, body: Any) -> Event:
        if not isinstance(body, dict):
            raise ValueError("PROOF body must be a map")
        mac = _valid_bytes(body["mac"], MAC_BYTES, "mac")
        assert self.peer is not None and self.version is not None
        if not hmac.compare_digest(mac, self._mac(TO_RESPONDER)):
            return self._refuse(Refusal.BAD_SECRET, _bad_secret(self.peer.node_id, self.local.node_id))
        self.state = State.ADMIT
        return AdmissionRequired(self.peer, self.version)

    def _mac(self, direction: str) -> bytes:
        assert self.peer is not None and self.version is not None
        if self.role is Role.INITIATOR:
            init, n_i, resp, n_r = self.local, self._nonce_local, self.peer, self._nonce_peer
        else:
            init, n_i, resp, n_r = self.peer, self._nonce_peer, self.local, self._nonce_local
        return hmac.new(self._key, transcript(direction, self.version, init, n_i, resp, n_r),
                        hashlib.sha256).digest()


def _bad_secret(peer: str, local: str) -> str:
    return (f"cluster secret mismatch: {peer!r} and {local!r} do not share the same cluster secret "
            f"(give every node the same --secret-file or WARPMESH_SECRET)")
