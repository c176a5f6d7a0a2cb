"""Quilter core: delta-state anti-entropy as a pure state machine (bytes and time in, frames out).

One :class:`QuilterCore` replicates one lattice state (a CRDT) among the peers of a channel. It is
sans-I/O in the h11 sense: the runtime feeds it local mutations, received frames, roster changes and
the clock, and sends whatever it leaves in :attr:`QuilterCore.outbox`.

Protocol (frames on one channel; each node's *stream* is its replica id, which changes on restart):

``DELTA [stream, seq, delta]``
    Local mutations are joined into one pending delta and broadcast as one batch per flush
    (coalescing). Batches are numbered per stream and kept until every live peer acks them.
``ACK [stream, upto, held?, since?]``
    Cumulative: the receiver has every batch of ``stream`` up to ``upto`` (coalesced per flush).
    ``held`` (selective ack, only while there is a gap) lists batches beyond ``upto`` it holds too,
    so the origin's timed resends skip them: after one lost batch, only that batch is resent.
    ``since`` (from a *partial* replica, below) says it holds the batches from ``since`` on only: the
    origin stops buffering the rest for it, but never counts it as holding a batch.
``RESEND [stream, from, to]``
    Gap detection: a receiver that sees ``seq`` beyond ``upto + 1`` (or learns the stream's tail
    from a digest) asks the origin for the gap. If the origin no longer holds it, it sends its full
    state instead. The origin also resends unacked batches on its own after ``resend_after``.
``DIGEST [stream, seq, state_digest, frontier_digest]``
    Every ``anti_entropy_interval`` to one random peer: the digest of the canonical state and of
    the sender's *frontier* (how far it has received every stream). Equal state digests: settled
    (this round costs ~50 bytes). Different states with equal frontiers mean real divergence, so the
    two exchange full states. With different frontiers deltas are merely in flight: only a mismatch
    that persists for ``mismatch_rounds`` rounds while neither frontier moves (or an empty
    receiver) triggers the exchange, so a busy mesh never ships its whole state to repair what the
    delta path is already delivering. A sender whose state changed since its previous round sends
    an empty state digest (computing it would be wasted work): that round only reveals a lost tail.
``STATE [stream, seq, want_reply, transfer, part, parts, chunk, sync, frontier?]``
    Full state, chunked to ``state_chunk_bytes``; always correct to join. ``want_reply`` asks the
    receiver to answer with its own state if it differs. The ``sync`` flag (sent by
    :meth:`QuilterCore.request_sync`) asks for an answer even when it does not differ: then a
    DIGEST (now equal to the sender's), so the sender learns that it holds everything the receiver
    has. Anti-entropy exchanges never set it: an unasked-for digest answer to a busy peer whose
    state moved on meanwhile would start another exchange. Part 0 carries the sender's frontier
    ``[[stream, upto], ...]``: the receiver now holds all of that too, and acks it to each origin.
``FRONTIER [stream, [[stream, upto], ...]]``
    The explicit frontier of *closed* streams (evicted ones included, at the point we had them; open
    streams are left out, so the frame does not grow with the mesh), sent at most every
    ``frontier_interval`` to a peer whose frontier digest differs from ours while our states are not
    known to be equal (a settled mesh never sends one). A receiver that holds
    more of a *closed* stream (its origin gone or restarted, so no resend can ever come) than the
    sender, in two frontiers in a row, answers with its full state; it also shows its own frontier
    back. This repairs a dead origin's last batches that reached only some peers while the mesh
    stays busy (busy frontiers never stand still, so the digest rule alone would wait for a lull).
``SUMMARY [stream, seq, nonce, want_reply, summary]`` and ``DIFF`` (chunked like STATE)
    Repair of causal states (ORMap, ORSet) costs the difference, not the state: wherever a repair is
    due (a resend no longer buffered, a digest mismatch, a closed-stream gap, a restarted origin), we
    send our summary (context + bucketed dot hashes, :mod:`warpmesh.crdt.difference`); the peer
    answers with the DIFF we lack and, if it lacks something of ours, its own summary. Other states
    are still repaired with full STATEs.

Bootstrap (causal states): a new or restarted Quilter asks *one* peer for what it lacks (its summary;
another peer after ``bootstrap_timeout`` without progress) and, until that answer is complete, starts
no repair of its own and answers other peers' summaries without its own summary back, so an empty
newcomer receives the board once instead of once per peer that noticed it.

Partial replicas (``history=False``, e.g. ``warpmesh submit``'s boards, which need the answers to
their own jobs and nothing older): a stream met mid-way is followed from there (its acks carry
``since``), no bootstrap, no repair is ever started by or toward them (their digests are empty, they
send no frontiers, they answer summaries without their own), and they never count towards a
majority of holders (:meth:`QuilterCore.majority_others`). A partial replica joining a big board so
costs what it receives from then on, not the board.

Sync hooks (for short-lived readers such as ``warpmesh results``): :meth:`QuilterCore.request_sync`
sends our state to one peer with ``want_reply``; :meth:`QuilterCore.synced_at` tells when we last
knew we held all of a peer's state (its full state joined, or its state digest equal to ours or to
a state we sent it).

Deltas are joined whenever they arrive, in any order and any number of times (joins are
idempotent and commutative); sequence numbers only drive acks, resends and buffer GC. A receiver
tracks every stream from batch 0, and acks only what it holds contiguously (or through a state
whose frontier covers it): an ack promises that the batches are here. Meeting a stream mid-way,
it waits one resend interval before asking for the history, which a newcomer's bootstrap state
usually brings. Hostile or malformed frames are refused and counted, never raised.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, Protocol, TypeVar

import blake3

from warpmesh.crdt.base import CrdtDecodeError
from warpmesh.crdt.causal import DotContext
from warpmesh.crdt.difference import Difference, Summary, difference_for, is_causal, retirements, summarize
from warpmesh.wire.frame import FrameError, decode_frame, encode_frame, pack, unpack

S = TypeVar("S")


class Lattice(Protocol):
    """What the Quilter needs from a replicated state (every ``warpmesh.crdt`` type has it)."""

    def join(self, other: Any) -> None: ...
    def copy(self) -> Any: ...
    def is_bottom(self) -> bool: ...


class StateCodec(Protocol[S]):
    """Canonical encoding of states and deltas (see :mod:`warpmesh.quilt.codec` for CRDTs)."""

    def encode(self, state: S) -> Any: ...
    def decode(self, wire: Any) -> S: ...
    def digest(self, state: S) -> bytes: ...


class QuiltKind(IntEnum):
    DELTA = 1
    ACK = 2
    RESEND = 3
    DIGEST = 4
    STATE = 5
    FRONTIER = 6
    SUMMARY = 7
    DIFF = 8


@dataclass(frozen=True, slots=True)
class QuilterConfig:
    """Anti-entropy timing and limits (seconds, bytes).

    The reference defaults to a one-minute anti-entropy interval; a settled round here costs about
    50 bytes, so one second is affordable and makes repair after loss prompt.
    """

    anti_entropy_interval: float = 1.0
    resend_after: float = 0.5
    evict_after: float = 60.0
    mismatch_rounds: int = 3
    max_buffer_bytes: int = 8 * 1024 * 1024
    state_chunk_bytes: int = 1024 * 1024
    max_state_bytes: int = 512 * 1024 * 1024
    max_resend_batches: int = 256
    #: Ceiling of the exponential backoff between resends to a peer that does not ack.
    max_resend_backoff: float = 10.0
    #: Least time between two explicit frontiers sent to one peer (while our frontiers differ);
    #: keep it well under ``evict_after``, or a closed stream may be forgotten before it is repaired.
    frontier_interval: float = 3.0
    #: How long a newcomer waits for its bootstrap difference from one peer, since the last chunk of
    #: it arrived (or since it asked), before it asks another peer instead.
    bootstrap_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.anti_entropy_interval <= 0 or self.resend_after <= 0 or self.evict_after <= 0:
            raise ValueError("intervals must be positive")
        if self.state_chunk_bytes < 1024:
            raise ValueError("state_chunk_bytes must be at least 1 KiB")


@dataclass(slots=True)
class _RecvStream:
    """What we have received of one remote stream."""

    peer: str
    upto: int
    extra: set[int]
    last_heard: float
    last_resend_request: float = float("-inf")
    #: First batch we hold and want (a partial replica meeting the stream mid-way); 1 otherwise.
    since: int = 1
    #: Highest batch known to exist (seen, or named by a digest) and since when we lack some batch
    #: up to it (None: no gap). Gaps are asked for only once they outlive a short grace: most are
    #: reordered or in-flight batches, and asking at once made most resends redundant.
    known: int = 0
    gap_since: float | None = None


@dataclass(slots=True)
class _Batch:
    frame: bytes
    sent_at: float


@dataclass(slots=True)
class _Transfer:
    parts: int
    seq: int
    want_reply: bool
    chunks: dict[int, bytes]
    size: int = 0
    sync: bool = False
    frontier: dict[str, int] = field(default_factory=dict)


Outgoing = tuple[str | None, bytes]  # (peer, frame); peer None = broadcast
MAX_SACK = 64  # batches beyond the cumulative ack listed in a selective ack
MAX_FORGOTTEN = 100_000  # evicted streams remembered (a few dozen bytes each)
MAX_HELD_ACKS = 10_000  # acks awaiting the disk before they are folded per peer and stream


def _short_digest(data: bytes) -> bytes:
    return blake3.blake3(data).digest(16)


class QuilterCore(Generic[S]):
    """Replicates one state among the peers of a channel. See the module docstring for the protocol."""

    def __init__(
        self,
        self_id: str,
        stream: str,
        state: S,
        codec: StateCodec[S],
        *,
        config: QuilterConfig | None = None,
        rng: random.Random | None = None,
        now: float = 0.0,
        history: bool = True,
    ) -> None:
        self.self_id = self_id
        #: False: a partial replica (see the module docstring): follows streams from when it meets
        #: them, never repairs, never counts as a holder.
        self.history = history
        self._partial: set[str] = set()  # live peers that told us (acks with ``since``) they are partial
        self.stream = stream
        self.state = state
        self.codec = codec
        self.config = config or QuilterConfig()
        self.rng = rng or random.Random(0)
        self.version = 0
        self.outbox: list[Outgoing] = []
        self.stats: Counter[str] = Counter()
        self._state_type = type(state)
        self._pending: S | None = None
        self._pending_shared = False  # _pending is the caller's delta itself (copy before joining)
        self._seq = 0
        self._buffer: dict[int, _Batch] = {}
        self._buffer_bytes = 0
        # Buffer GC floor (the least ack of any live peer) and how many peers sit at it: an ack
        # rescans the peers only when it lifts the last peer off the floor (O(peers) per batch, not
        # per ack: scanning on every ack cost O(peers^2) per batch in a big mesh).
        self._floor = 0
        self._at_floor = 0
        self._peers: dict[str, float] = {}  # live peer -> when it joined
        self._departed: dict[str, float] = {}  # peer -> when it left the roster
        self._acked: dict[str, int] = {}  # for buffer GC: acked, or assumed covered by a full state
        self._confirmed: dict[str, int] = {}  # acked for real: the peer holds our batches up to here
        # Batches beyond its cumulative ack that a peer told us it holds (selective ack): never resent.
        self._sacked: dict[str, frozenset[int]] = {}
        self._last_resend: dict[str, float] = {}
        self._resend_backoff: dict[str, tuple[int, float]] = {}  # peer -> (its ack then, next wait)
        self._state_sent: dict[str, tuple[float, int, float]] = {}  # peer -> (when, its ack then, gap)
        self._recv: dict[str, _RecvStream] = {}
        # Streams whose gap_since is set (a superset: entries are dropped when found filled), so
        # the gap check of every tick does not walk every stream ever received.
        self._gaps: dict[str, None] = {}
        self._owed_acks: dict[str, set[str]] = {}  # peer -> streams to ack
        self._transfers: dict[tuple[str, int], _Transfer] = {}
        self._diff_transfers: dict[tuple[str, int], _Transfer] = {}
        self._transfer_seq = 0
        # Difference repair applies to causal states (ORMap, ORSet); others are repaired by full states.
        self._by_difference = is_causal(state)
        self._summary_seq = 0
        self._asked: dict[str, dict[int, DotContext]] = {}  # peer -> summary nonce -> context we summarized
        self._mismatch: Counter[str] = Counter()
        self._mismatch_frontiers: dict[str, tuple[bytes, bytes]] = {}
        self._frontier_sent: dict[str, float] = {}  # peer -> when we last sent it our explicit frontier
        # Evicted streams and how far we had them: shown in explicit frontiers and never resurrected
        # by an older state, so two peers evicting at different times do not ship states back and forth.
        self._forgotten: dict[str, int] = {}
        self._frontier_gaps: dict[str, set[tuple[str, int]]] = {}  # peer -> its closed-stream gaps last seen
        self._bootstrap_at = float("-inf")
        # Bootstrap (causal states): until one peer's difference has brought us everything it holds,
        # we ask only that peer for what we lack; repairs other peers start toward us get the little
        # they lack from us, never our summary back, so the board reaches us once, not once per peer.
        self._bootstrapped = not self._by_difference or not history
        self._bootstrap_peer: str | None = None
        self._bootstrap_nonce = 0
        # One round for a greeting digest to name a reachable peer before the timer picks one.
        self._bootstrap_deadline = now + self.config.anti_entropy_interval
        self._bootstrap_failed: set[str] = set()
        self._version_at_round = -1
        self._next_ae = now + self.rng.uniform(0.5, 1.0) * self.config.anti_entropy_interval
        self._digest_cache: tuple[int, bytes] | None = None
        self._synced: dict[str, float] = {}  # peer -> when we last knew we held all of its state
        self._sync_sent: dict[str, list[bytes]] = {}  # peer -> digests of states sent by request_sync
        #: Called after every remote join with the joined delta, or None after a full state
        #: (anything may have changed). Lets applications react to just the keys a delta touched.
        self.listener: Callable[[S | None], None] | None = None
        #: Durability hooks (set by a runtime with a store, :mod:`warpmesh.quilt.store`). ``journal`` is
        #: called with every value joined into the state (local or remote delta) and its wire form when
        #: at hand (a received delta: no need to encode it again), or (None, None) when a full state or
        #: difference was joined. With ``hold_acks``, an ack owed at :attr:`version` v is sent only
        #: after :meth:`persisted` reports v on disk: an ack promises the batches survive a crash.
        self.journal: Callable[[S | None, Any], None] | None = None
        #: With ``journal_batch`` set, a local delta reaches the journal as the wire form of the batch
        #: that carries it (encoded once, for the peers and the disk): ``journal`` is still called
        #: with it at :meth:`mutate` (so a store knows there is something to write), but may ignore it.
        self.journal_batch: Callable[[Any], None] | None = None
        self.hold_acks = False
        self._persisted = 0
        self._held_acks: list[tuple[int, str, str, int]] = []  # (version owed at, peer, stream, upto)

    # -- observation ------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        """Sequence number of the last batch this node sent on its stream."""
        return self._seq

    @property
    def pending_seq(self) -> int:
        """The sequence number the batch holding the current pending mutations will carry."""
        return self._seq + 1

    def acked_count(self, seq: int) -> int:
        """How many live peers have acknowledged our batches up to ``seq`` (real acks only; a partial
        replica never confirms a batch)."""
        return sum(1 for p in self._peers if self._confirmed.get(p, 0) >= seq)

    def majority_others(self) -> int:
        """Peers besides us that must hold a batch for a majority of the roster (us included) to.

        Partial replicas (short-lived readers such as ``warpmesh submit``) are not counted: they
        leave soon and hold only what arrived after they joined."""
        return (len(self._peers) - len(self._partial) + 1) // 2

    @property
    def bootstrapping(self) -> bool:
        """Whether we still wait for our first complete repair from a peer (causal states only)."""
        return not self._bootstrapped

    def confirmed(self) -> dict[str, int]:
        """Per live peer: the highest of our batches it acknowledged holding (with all before it)."""
        return {p: self._confirmed.get(p, 0) for p in self._peers}

    def replication_lag(self, now: float) -> dict[str, tuple[int, float]]:
        """Per live peer: how many of our batches it has not confirmed yet, and how long the oldest of
        them has waited (seconds; 0.0 when it holds them all, or when the oldest left our buffer)."""
        out: dict[str, tuple[int, float]] = {}
        for p in self._peers:
            done = self._confirmed.get(p, 0)
            behind = max(0, self._seq - done)
            oldest = self._buffer.get(done + 1) if behind else None
            out[p] = (behind, max(0.0, now - oldest.sent_at) if oldest is not None else 0.0)
        return out

    @property
    def buffered_batches(self) -> int:
        return len(self._buffer)

    @property
    def peers(self) -> list[str]:
        return sorted(self._peers)

    def state_digest(self) -> bytes:
        if self._digest_cache is None or self._digest_cache[0] != self.version:
            self._digest_cache = (self.version, self.codec.digest(self.state))
        return self._digest_cache[1]

    def frontier(self) -> dict[str, int]:
        """How far this node has received every stream it knows, its own included."""
        f = {s: r.upto for s, r in self._recv.items()}
        f[self.stream] = self._seq
        return f

    def frontier_digest(self) -> bytes:
        return _short_digest(pack(sorted(self.frontier().items())))[:8]

    def synced_at(self, peer: str) -> float | None:
        """When we last knew we held every update ``peer`` held (None: not known yet).

        Set when a full state from ``peer`` has been joined, or when ``peer``'s state digest equals
        ours or that of a state we sent it with :meth:`request_sync` (our state only grows, so we
        still hold it). It never goes back: later updates of ``peer`` arrive as deltas.
        """
        return self._synced.get(peer)

    def take_outbox(self) -> list[Outgoing]:
        out, self.outbox = self.outbox, []
        return out

    # -- local mutations --------------------------------------------------------------------
    def mutate(self, fn: Callable[[S], S]) -> S:
        """Apply ``fn(state) -> delta`` (a CRDT mutator) and queue the delta for the next flush.

        The delta returned is read-only: it may be what the next flush encodes and sends."""
        delta = fn(self.state)
        self._queue_delta(delta)
        return delta

    def _queue_delta(self, delta: S) -> None:
        self.version += 1
        if self.journal is not None:
            self.journal(delta, None)
        if self._pending is None:
            # Held as is until a second delta joins it (flush only reads it): under load a window
            # usually carries one big delta (a batch of 10,000 enqueues), which is then never copied.
            self._pending = delta
            self._pending_shared = True
        else:
            pending: Any = self._pending
            if self._pending_shared:
                pending = self._pending = pending.copy()
                self._pending_shared = False
            pending.join(delta)

    @property
    def has_pending_delta(self) -> bool:
        """Local mutations not yet flushed into a batch."""
        return self._pending is not None

    @property
    def has_pending(self) -> bool:
        return (self._pending is not None or bool(self._owed_acks)
                or bool(self._held_acks and self._held_acks[0][0] <= self._persisted))

    @property
    def persisted_version(self) -> int:
        """The :attr:`version` last reported durable (see :meth:`persisted`)."""
        return self._persisted

    def persisted(self, version: int) -> None:
        """The runtime made the state as of ``version`` durable: acks owed up to it may go (next flush)."""
        self._persisted = max(self._persisted, version)

    def restore(self, values: list[S], frontier: dict[str, int], now: float) -> None:
        """Resume from durable storage, before any frame: join the stored ``values`` (a snapshot and
        journaled deltas) and how far we held each stream then (our acks promised it, and the values
        hold it). Our own stream is new (a new incarnation); the old one is a stream like any other."""
        for value in values:
            self.state.join(value)  # type: ignore[attr-defined]
        self.version += 1
        for s_id, upto in frontier.items():
            if s_id != self.stream and upto > 0:
                self._recv[s_id] = _RecvStream(s_id.rpartition("@")[0] or s_id, upto, set(), now,
                                               last_resend_request=now)
        self._persisted = self.version

    def flush(self, now: float) -> None:
        """Broadcast the coalesced pending delta as one batch and send owed acks."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.is_bottom():  # type: ignore[attr-defined]
            self._seq += 1
            wire = self.codec.encode(pending)
            frame = encode_frame(QuiltKind.DELTA, [self.stream, self._seq, wire])
            if self.journal_batch is not None:
                self.journal_batch(wire)
            self._buffer[self._seq] = _Batch(frame, now)
            self._buffer_bytes += len(frame)
            self._send(None, frame, "delta")
            self._gc_buffer()
        if self._owed_acks:
            owed, self._owed_acks = self._owed_acks, {}
            for peer in sorted(owed):
                for stream in sorted(owed[peer]):
                    r = self._recv.get(stream)
                    if r is not None:
                        if self.hold_acks:
                            # Durable: the ack waits for the disk (cumulative only; held acks fold).
                            self._held_acks.append((self.version, peer, stream, r.upto))
                            continue
                        body: list[Any] = [stream, r.upto]
                        if r.extra or r.since > 1:
                            # Selective ack: what we hold beyond the gap, so the origin resends only
                            # the gap (resending every overdue batch made most resends redundant).
                            body.append(sorted(r.extra)[:MAX_SACK])
                        if r.since > 1:
                            body.append(r.since)
                        self._send(peer, encode_frame(QuiltKind.ACK, body), "ack")
        if self._held_acks and self._held_acks[0][0] <= self._persisted:
            self._release_acks()
        elif len(self._held_acks) > MAX_HELD_ACKS:
            # Nothing reaches the disk (a failed store): keep only the newest ack per peer and stream.
            newest = {(p, s): (v, p, s, u) for v, p, s, u in self._held_acks}
            self._held_acks = sorted(newest.values())

    def _release_acks(self) -> None:
        # Held acks are in version order; send those now durable, one (the highest) per peer and stream.
        n = 0
        ready: dict[tuple[str, str], int] = {}
        for version, peer, stream, upto in self._held_acks:
            if version > self._persisted:
                break
            n += 1
            ready[(peer, stream)] = max(ready.get((peer, stream), 0), upto)
        del self._held_acks[:n]
        for (peer, stream), upto in sorted(ready.items()):
            r = self._recv.get(stream)
            body: list[Any] = [stream, upto] if r is None or r.since <= 1 else [stream, upto, [], r.since]
            self._send(peer, encode_frame(QuiltKind.ACK, body), "ack")

    def request_sync(self, peer: str) -> None:
        """Ask ``peer`` for everything it holds: send it our state with ``want_reply``.

        It answers with its own state if, after joining ours, it holds more, else with its (now equal)
        digest; either sets :meth:`synced_at`. Frames may be lost: repeat until it is set.
        """
        sent = self._sync_sent.setdefault(peer, [])
        digest = self.state_digest()
        if digest not in sent:
            sent.append(digest)
            del sent[:-4]  # a few recent requests are enough to recognise a late answer
        self.stats["sync_requests"] += 1
        self._send_state(peer, want_reply=True, sync=True)

    # -- membership -------------------------------------------------------------------------
    def roster_changed(self, roster: frozenset[str] | set[str], now: float) -> None:
        """The channel's live peers changed (self may be included; it is ignored)."""
        peers = set(roster) - {self.self_id}
        for peer in sorted(peers - set(self._peers)):
            self._peers[peer] = now
            self._departed.pop(peer, None)
            # Batches sent before it joined reach it through a full state, not resends.
            self._acked[peer] = max(self._acked.get(peer, 0), self._seq)
            # First contact: tell it our digest now instead of waiting for a random round.
            self._send_digest(peer)
        for peer in sorted(set(self._peers) - peers):
            del self._peers[peer]
            self._departed[peer] = now
            self._partial.discard(peer)
        self._gc_buffer()

    # -- receiving --------------------------------------------------------------------------
    def receive(self, sender: str, data: bytes, now: float) -> None:
        """Handle one frame from ``sender``. Malformed frames are counted in ``stats`` and dropped."""
        try:
            frame = decode_frame(data)
            body = frame.body
            kind = frame.kind
            if not isinstance(body, list):
                raise FrameError("body must be an array")
            if kind == QuiltKind.DELTA:
                self._on_delta(sender, body, now)
            elif kind == QuiltKind.ACK:
                self._on_ack(sender, body)
            elif kind == QuiltKind.RESEND:
                self._on_resend(sender, body, now)
            elif kind == QuiltKind.DIGEST:
                self._on_digest(sender, body, now)
            elif kind == QuiltKind.STATE:
                self._on_state(sender, body, now)
            elif kind == QuiltKind.FRONTIER:
                self._on_frontier(sender, body, now)
            elif kind == QuiltKind.SUMMARY:
                self._on_summary(sender, body, now)
            elif kind == QuiltKind.DIFF:
                self._on_diff(sender, body, now)
            else:
                raise FrameError(f"unknown quilt frame kind {kind}")
        except (FrameError, CrdtDecodeError, ValueError, TypeError, KeyError, IndexError) as err:
            self.stats["refused"] += 1
            self.stats[f"refused_{type(err).__name__}"] += 1
            return
        self.stats["frames_in"] += 1

    def _decode_state(self, wire: Any) -> S:
        value = self.codec.decode(wire)
        if type(value) is not self._state_type:
            raise TypeError(f"expected {self._state_type.__name__}, got {type(value).__name__}")
        return value

    @staticmethod
    def _parse_frontier(wire: Any) -> dict[str, int]:
        if not isinstance(wire, list) or len(wire) > 1_000_000:
            raise ValueError("bad frontier")
        out: dict[str, int] = {}
        for pair in wire:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                    and isinstance(pair[1], int) and not isinstance(pair[1], bool) and 0 <= pair[1] < 1 << 63):
                raise ValueError("bad frontier entry")
            out[pair[0]] = pair[1]
        return out

    @staticmethod
    def _stream_and_seq(body: list[Any]) -> tuple[str, int]:
        stream, seq = body[0], body[1]
        if not isinstance(stream, str) or not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("bad stream id or sequence number")
        return stream, seq

    def _track(self, stream: str, sender: str, now: float, first_seen: int = 1) -> _RecvStream:
        # A stream is tracked from batch 0: an ack promises that we hold *every* batch up to it, so
        # nothing may be assumed about batches we never received (they come by resend, or by a
        # full state whose frontier covers them). Meeting a stream mid-way (first seen beyond batch
        # 1), the first gap request waits one resend interval: a newcomer's bootstrap state
        # usually covers that history by then, without a resend from every origin.
        r = self._recv.get(stream)
        if r is None:
            upto = self._forgotten.pop(stream, 0)
            if not self.history and first_seen - 1 > upto:
                # A partial replica follows the stream from here: its history is not wanted.
                r = self._recv[stream] = _RecvStream(sender, first_seen - 1, set(), now, since=first_seen)
                return r
            r = self._recv[stream] = _RecvStream(
                sender, upto, set(), now,
                last_resend_request=now if first_seen > 1 else float("-inf"))
        else:
            r.peer = sender
            r.last_heard = now
        return r

    def _on_delta(self, sender: str, body: list[Any], now: float) -> None:
        stream, seq = self._stream_and_seq(body)
        if stream == self.stream or seq == 0:
            raise ValueError("delta on our own stream or with sequence 0")
        delta = self._decode_state(body[2])
        # The decoded delta is ours alone (listeners read its keys at once): a CRDT state joins it
        # without copying what it adopts (Crdt.absorb); any other lattice joins it.
        absorb = getattr(self.state, "absorb", None)
        if absorb is not None:
            absorb(delta)
        else:
            self.state.join(delta)  # type: ignore[attr-defined]
        self.version += 1
        self.stats["deltas_in"] += 1
        if self.journal is not None:
            self.journal(delta, body[2])
        if self.listener is not None:
            self.listener(delta)
        r = self._track(stream, sender, now, first_seen=seq)
        if seq <= r.upto or seq in r.extra:
            self.stats["deltas_redundant"] += 1  # a resend or a duplicate of what we hold
        if seq > r.upto:
            r.extra.add(seq)
            while r.upto + 1 in r.extra:
                r.upto += 1
                r.extra.discard(r.upto)
            if r.extra:
                self._gap_opened(stream, r, now)
        self._owed_acks.setdefault(sender, set()).add(stream)

    def _gap_opened(self, stream: str, r: _RecvStream, now: float) -> None:
        """``stream`` lacks batches we know of: from now on the ticks ask for them."""
        if r.gap_since is None:
            r.gap_since = now
            self._gaps[stream] = None

    def _ask_for_gaps(self, now: float) -> None:
        if not self._gaps:
            return
        grace = self.config.resend_after / 2
        for stream in list(self._gaps):
            r = self._recv.get(stream)
            if r is None or r.gap_since is None:
                del self._gaps[stream]  # forgotten, or replaced by a fresh record
                continue
            if now - r.gap_since < grace:
                continue
            hi = min(r.extra) - 1 if r.extra else r.known
            if hi <= r.upto:
                r.gap_since = None  # filled meanwhile
                del self._gaps[stream]
                continue
            r.gap_since = now
            self._request_resend(r, stream, r.upto + 1, hi, now)

    def _request_resend(self, r: _RecvStream, stream: str, lo: int, hi: int, now: float) -> None:
        if hi < lo or now - r.last_resend_request < self.config.resend_after:
            return
        r.last_resend_request = now
        hi = min(hi, lo + self.config.max_resend_batches - 1)
        self._send(r.peer, encode_frame(QuiltKind.RESEND, [stream, lo, hi]), "resend_request")

    def _on_ack(self, sender: str, body: list[Any]) -> None:
        stream, upto = self._stream_and_seq(body)
        if stream != self.stream:
            return  # an ack for a previous incarnation of ours
        if upto > self._seq:
            raise ValueError("ack beyond our last batch")
        sack = body[2] if len(body) > 2 else []
        if not isinstance(sack, list) or len(sack) > MAX_SACK or not all(
                isinstance(x, int) and not isinstance(x, bool) and upto < x <= self._seq for x in sack):
            raise ValueError("bad selective ack")
        since = body[3] if len(body) > 3 else 1
        if not isinstance(since, int) or isinstance(since, bool) or not 1 <= since <= upto + 1:
            raise ValueError("bad ack start")
        if sack:
            self._sacked[sender] = frozenset(sack)
        else:
            self._sacked.pop(sender, None)
        if since > 1:
            # A partial replica: it will never ask for what came before ``since`` (so we stop
            # buffering it for it), and it never counts as holding a batch of ours.
            if sender in self._peers:  # kept a subset of the live peers (left: discarded)
                self._partial.add(sender)
        else:
            self._partial.discard(sender)
            if upto > self._confirmed.get(sender, 0):
                self._confirmed[sender] = upto
        old = self._acked.get(sender, 0)
        if upto > old:
            self._acked[sender] = upto
            if sender in self._peers and old == self._floor:
                self._at_floor -= 1
                if self._at_floor <= 0:
                    self._gc_buffer()

    def _on_resend(self, sender: str, body: list[Any], now: float) -> None:
        stream, lo = self._stream_and_seq(body)
        hi = body[2]
        if stream != self.stream:
            # We restarted since; the asker gets everything of ours through a repair.
            self._repair(sender, now=now, why="restarted_stream")
            return
        if not isinstance(hi, int) or hi < lo or hi - lo >= self.config.max_resend_batches:
            raise ValueError("bad resend range")
        hi = min(hi, self._seq)
        if any(s not in self._buffer for s in range(max(lo, 1), hi + 1)):
            self._repair(sender, now=now, why="resend_unbuffered")  # the difference, not the board
            return
        for s in range(max(lo, 1), hi + 1):
            self._send(sender, self._buffer[s].frame, "resend")
        self._last_resend[sender] = now

    def _on_digest(self, sender: str, body: list[Any], now: float) -> None:
        stream, seq = self._stream_and_seq(body)
        theirs, their_frontier = body[2], body[3]
        if not isinstance(theirs, bytes) or not isinstance(their_frontier, bytes) or len(theirs) > 64:
            raise ValueError("bad digest")
        if stream != self.stream and seq > 0:
            r = self._track(stream, sender, now, first_seen=seq + 1)
            if seq > r.upto:  # batches (its tail, or history) that never reached us, or are in flight
                r.known = max(r.known, seq)
                self._gap_opened(stream, r, now)
        settled = bool(theirs) and (theirs == self.state_digest() or theirs in self._sync_sent.get(sender, ()))
        mine = self.frontier_digest()
        if their_frontier != mine and not settled:
            self._maybe_send_frontier(sender, now)
        if not theirs:
            return  # the sender is busy; this round only checked its tail
        if settled:
            self._synced[sender] = now
            self._bootstrap_done()  # we hold all it holds: nothing to bootstrap from it
            self._mismatch.pop(sender, None)
            self._mismatch_frontiers.pop(sender, None)
            self.stats["digest_match"] += 1
            return
        frontiers = (their_frontier, mine)
        if self._mismatch_frontiers.get(sender) == frontiers:
            self._mismatch[sender] += 1  # nothing moved since the last mismatch: suspicious
        else:
            self._mismatch[sender] = 1
            self._mismatch_frontiers[sender] = frontiers
        diverged = their_frontier == mine
        if not self.history:
            return  # a partial replica differs by design: it repairs nothing
        if not self._bootstrapped:
            self._maybe_bootstrap(sender, now)  # the sender is reachable: ask it for what we lack
            return
        # An empty node (just joined or restarted) asks for a full state at once - but from one
        # peer per round: every peer greets a newcomer with a digest, and one state is enough.
        empty = self.state.is_bottom() and now - self._bootstrap_at >= self.config.anti_entropy_interval  # type: ignore[attr-defined]
        if empty:
            self._bootstrap_at = now
        if diverged or empty or self._mismatch[sender] >= self.config.mismatch_rounds:
            self._mismatch.pop(sender, None)
            self._mismatch_frontiers.pop(sender, None)
            self._repair(sender, now=now, why="diverged" if diverged else "empty" if empty else "digest_mismatch")

    def _maybe_send_frontier(self, peer: str, now: float, closed: set[str] | None = None) -> None:
        if not self.history:
            return  # our frontier is partial by design: showing it would only start repairs toward us
        # Frontiers differ. Usually deltas are in flight, but a batch whose origin is gone (crashed,
        # restarted, left) can reach some peers only through a full state - and busy peers, whose
        # frontiers never stand still, would never decide to exchange one. So now and then we show
        # the peer our frontier itself; it sends its state only if it holds more of a closed stream.
        if peer not in self._peers or now - self._frontier_sent.get(peer, float("-inf")) < self.config.frontier_interval:
            return
        self._frontier_sent[peer] = now
        # Only closed streams matter to the receiver (it compares what it holds of streams it sees
        # closed); open ones would make the frame grow with the mesh. An omitted stream reads as
        # "none of it": if the receiver sees closed a stream we still see open, it repairs only after
        # the gap outlives two frontiers, by which time our view has caught up.
        shown = dict(self._forgotten)
        if closed is None:
            closed = self._closed_streams()
        shown.update((s_id, r.upto) for s_id, r in self._recv.items() if s_id in closed)
        entries = [[s_id, upto] for s_id, upto in sorted(shown.items())]
        self._send(peer, encode_frame(QuiltKind.FRONTIER, [self.stream, entries]), "frontier")

    def _closed_streams(self) -> set[str]:
        """The streams we receive whose origin can send no more batches (gone, or restarted).

        One pass over the streams (the set is asked for all of them at once: a stream-by-stream
        test was quadratic in the streams seen, which grow with every restart in a long run)."""
        newest: dict[str, int] = {}
        parsed: list[tuple[str, str, int | None]] = []
        for s_id in self._recv:
            node, _, inc = s_id.rpartition("@")
            n = int(inc) if inc.isdigit() else None
            parsed.append((s_id, node, n))
            if n is not None and n > newest.get(node, -1):
                newest[node] = n
        peers = self._peers
        return {s_id for s_id, node, n in parsed
                if node not in peers or (n is not None and n < newest.get(node, -1))}

    def _on_frontier(self, sender: str, body: list[Any], now: float) -> None:
        stream = body[0]
        if not isinstance(stream, str) or len(body) != 2:
            raise ValueError("bad frontier frame")
        theirs = self._parse_frontier(body[1])
        closed = self._closed_streams()
        behind = {(s_id, theirs.get(s_id, 0)) for s_id, r in self._recv.items()
                  if s_id != stream and r.upto > theirs.get(s_id, 0) and s_id in closed}
        # Only a gap that outlived one whole frontier interval is worth a full state: most are
        # being filled already (a state or resend in flight, or another peer's repair).
        if behind & self._frontier_gaps.get(sender, set()):
            self.stats["frontier_repairs"] += 1
            self._repair(sender, now=now, why="closed_stream")
        self._frontier_gaps[sender] = behind
        # They may hold more of a closed stream than we do: show them ours too (rate-limited).
        self._maybe_send_frontier(sender, now, closed)

    def _assemble(self, transfers: dict[tuple[str, int], _Transfer], sender: str, body: list[Any]
                  ) -> tuple[_Transfer, bytes] | None:
        """Collect one chunk of a state or difference transfer; the whole payload once complete.

        Body: ``[stream, seq, want_reply, transfer, part, parts, chunk, sync, frontier?]``.
        """
        _, seq = self._stream_and_seq(body)
        want_reply, transfer, part, parts, chunk = body[2], body[3], body[4], body[5], body[6]
        sync = len(body) > 7 and body[7] is True
        frontier = self._parse_frontier(body[8]) if len(body) > 8 else {}
        if not (isinstance(want_reply, bool) and isinstance(transfer, int) and isinstance(part, int)
                and isinstance(parts, int) and isinstance(chunk, bytes) and 0 <= part < parts):
            raise ValueError("bad state chunk header")
        key = (sender, transfer)
        t = transfers.get(key)
        if t is None:
            if parts * self.config.state_chunk_bytes > self.config.max_state_bytes:
                raise ValueError("announced state exceeds max_state_bytes")
            # One transfer per sender at a time: a newer one supersedes an abandoned older one.
            for old in [k for k in transfers if k[0] == sender]:
                del transfers[old]
            t = transfers[key] = _Transfer(parts, seq, want_reply, {}, sync=sync, frontier=frontier)
        if t.parts != parts or part in t.chunks:
            return None
        if frontier:
            t.frontier = frontier  # it rides on part 0, which may not be the first to arrive
        t.chunks[part] = chunk
        t.size += len(chunk)
        if t.size > self.config.max_state_bytes:
            del transfers[key]
            raise ValueError("state transfer exceeds max_state_bytes")
        if len(t.chunks) < parts:
            return None
        del transfers[key]
        return t, b"".join(t.chunks[i] for i in range(parts))

    def _on_state(self, sender: str, body: list[Any], now: float) -> None:
        done = self._assemble(self._transfers, sender, body)
        if done is None:
            return
        t, payload = done
        received = self._decode_state(unpack(payload))
        before = self.state_digest()
        self.state.join(received)  # type: ignore[attr-defined]
        self.version += 1
        self.stats["states_in"] += 1
        if self.journal is not None:
            self.journal(None, None)
        if self.listener is not None:
            self.listener(None)
        self._cover(sender, body[0], t, now)
        self._bootstrap_done()
        after = self.state_digest()
        if t.want_reply and self.codec.digest(received) != after:
            self._send_state(sender, want_reply=False)
            return
        if t.sync:
            self._send_digest(sender)  # "I hold exactly what you sent": the requester can stop asking
        if before != after:
            self.stats["states_useful"] += 1

    def _cover(self, sender: str, stream: str, t: _Transfer, now: float) -> None:
        # A full state (or a difference, which leaves us holding all its sender holds) holds every batch
        # its sender had received of every stream (its frontier), and all of its own: we hold them now
        # too. Say so to each origin, so it can count on us.
        covered = dict(t.frontier)
        if t.seq > 0:
            covered[stream] = max(covered.get(stream, 0), t.seq)
        for s_id, upto in covered.items():
            if s_id == self.stream or upto <= 0:
                continue
            origin = sender if s_id == stream else s_id.rpartition("@")[0] or s_id
            r = self._recv.get(s_id)
            if r is None:
                if upto <= self._forgotten.get(s_id, -1):
                    continue  # a stream we had as far as this, and have since forgotten
                self._forgotten.pop(s_id, None)
                r = self._recv[s_id] = _RecvStream(origin, 0, set(), now, last_resend_request=now)
            if upto > r.upto:
                r.upto = upto
                r.extra = {x for x in r.extra if x > upto}
                while r.upto + 1 in r.extra:
                    r.upto += 1
                    r.extra.discard(r.upto)
            if r.peer in self._peers:
                self._owed_acks.setdefault(r.peer, set()).add(s_id)
        self._synced[sender] = now

    # -- difference repair --------------------------------------------------------------------
    def _repair(self, peer: str, *, now: float, why: str) -> bool:
        """Bring ``peer`` (and us) up to date with each other; False if deferred until bootstrapped.

        For causal states: send our summary asking for what we lack; the peer answers with that
        difference and, if it lacks something of ours, with its own summary, which we answer with the
        difference it lacks. Costs the difference, not the state. Other states: a full state.
        While we bootstrap, our summary would fetch the whole board from every peer we repair with:
        we wait for our one bootstrap peer instead. ``why`` names the trigger (``stats["repair_<why>"]``).
        """
        self.stats[f"repair_{why}"] += 1
        if not self.history:
            return False  # a partial replica wants nothing old and owes nobody a repair
        if not self._by_difference:
            self._send_state(peer, want_reply=True, now=now)
            return True
        if not self._bootstrapped:
            self.stats["repairs_deferred_bootstrap"] += 1
            return False
        if self._heavy_allowed(peer, now):
            self._send_summary(peer, want_reply=True)
        return True

    # -- bootstrap ------------------------------------------------------------------------------
    def _maybe_bootstrap(self, peer: str, now: float) -> None:
        """Ask ``peer`` for everything we lack, unless a bootstrap from another peer is in flight."""
        if self._bootstrapped or peer not in self._peers:
            return
        current = self._bootstrap_peer
        if current is not None and current in self._peers and now < self._bootstrap_deadline:
            return
        if current is not None and current != peer:
            self._bootstrap_failed.add(current)
        self._bootstrap_peer = peer
        self._bootstrap_deadline = now + self.config.bootstrap_timeout
        self.stats["bootstraps_started"] += 1
        self._send_summary(peer, want_reply=True)
        self._bootstrap_nonce = self._summary_seq

    def _bootstrap_tick(self, now: float) -> None:
        # The bootstrap peer went silent (or left): ask another, each at most once; when every peer
        # has failed us, give up and repair the usual way (no newcomer may stay deaf to repairs).
        if self._bootstrapped or not self._peers or now < self._bootstrap_deadline:
            return
        if self._bootstrap_peer is not None:
            self._bootstrap_failed.add(self._bootstrap_peer)
            self.stats["bootstrap_timeouts"] += 1
        candidates = sorted(set(self._peers) - self._bootstrap_failed)
        if not candidates:
            self._bootstrap_done()
            return
        self._bootstrap_peer = None
        self._maybe_bootstrap(self.rng.choice(candidates), now)

    def _bootstrap_done(self) -> None:
        if not self._bootstrapped:
            self._bootstrapped = True
            self._bootstrap_peer = None
            self._bootstrap_failed.clear()

    def _send_summary(self, peer: str, *, want_reply: bool) -> None:
        summary = summarize(self.state)  # type: ignore[arg-type]
        self._summary_seq += 1
        asked = self._asked.setdefault(peer, {})
        asked[self._summary_seq] = summary.ctx
        while len(asked) > 4:  # a few outstanding questions per peer are enough
            del asked[min(asked)]
        body = [self.stream, self._seq, self._summary_seq, want_reply, summary.to_wire()]
        self._send(peer, encode_frame(QuiltKind.SUMMARY, body), "summary")

    def _on_summary(self, sender: str, body: list[Any], now: float) -> None:
        stream, seq = self._stream_and_seq(body)
        if len(body) != 5 or not isinstance(body[2], int) or not isinstance(body[3], bool):
            raise ValueError("bad summary frame")
        if not self._by_difference:
            raise ValueError("summary on a channel whose state is not causal")
        nonce, want_reply = body[2], body[3]
        summary = Summary.from_wire(body[4])
        diff = difference_for(self.state, summary)  # type: ignore[arg-type]
        self.stats["summaries_in"] += 1
        if not diff.is_empty() or want_reply:
            # Even an empty difference is worth sending to an asker: it carries our frontier, so the
            # asker learns it holds everything we have (and can ack it to the origins).
            self._send_chunked(sender, QuiltKind.DIFF, pack([nonce, diff.to_wire(self.codec.encode)]),
                               want_reply=False, what="difference")
        if not diff.we_lack and stream != self.stream:
            # We hold all the sender holds (every dot it has seen, and its alive entries): so every
            # batch of its stream up to ``seq`` too, which joined here would change nothing. Say so
            # (ack it), as a full state from it would: its batches may be gone from its buffer, and a
            # gap we never close would hold back our acks of its later batches forever.
            self._cover(sender, stream, _Transfer(1, seq, False, {}), now)
        if want_reply and diff.we_lack and self.history:
            if self._bootstrapped:
                self._send_summary(sender, want_reply=False)
            else:
                # Our summary back would bring the whole board from this peer too: bootstrap from
                # one peer (this one, if none is in flight), and repair by difference afterwards.
                self._maybe_bootstrap(sender, now)

    def _on_diff(self, sender: str, body: list[Any], now: float) -> None:
        if not self._by_difference:
            raise ValueError("difference on a channel whose state is not causal")
        if sender == self._bootstrap_peer:
            self._bootstrap_deadline = now + self.config.bootstrap_timeout  # it is coming: keep waiting
        done = self._assemble(self._diff_transfers, sender, body)
        if done is None:
            return
        t, payload = done
        top = unpack(payload)
        if not isinstance(top, list) or len(top) != 2 or not isinstance(top[0], int):
            raise ValueError("bad difference payload")
        delta, their_ctx, bits, alive = Difference.from_wire(top[1], self._decode_state)
        before = self.state_digest()
        self.state.join(delta)  # type: ignore[attr-defined]
        asked = self._asked.get(sender, {}).pop(top[0], None)
        complete = asked is not None or not alive
        if asked is not None and alive:
            self.state.join(retirements(self.state, asked, their_ctx, bits, alive))  # type: ignore[arg-type, attr-defined]
        self.version += 1
        self.stats["differences_in"] += 1
        if self.journal is not None:
            self.journal(None, None)
        if self.listener is not None:
            self.listener(None)
        if complete:
            # We now hold all the sender holds: its frontier too. (Without the question's context the
            # retirements could not be judged; the next round repairs them, and nothing is acked early.)
            self._cover(sender, body[0], t, now)
            if asked is not None:
                self._bootstrap_done()  # it answered our question: we hold all it holds
        if before != self.state_digest():
            self.stats["differences_useful"] += 1

    # -- timers -----------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Periodic work: anti-entropy digest, resends of unacked batches, eviction."""
        cfg = self.config
        self._bootstrap_tick(now)
        self._ask_for_gaps(now)
        if now >= self._next_ae:
            self._next_ae = now + self.rng.uniform(0.75, 1.25) * cfg.anti_entropy_interval
            if self._peers:
                quiet = self.version == self._version_at_round
                self._version_at_round = self.version
                self._send_digest(self.rng.choice(sorted(self._peers)), with_state=quiet)
        if self._buffer:
            for peer in sorted(self._peers):
                acked = self._acked.get(peer, 0)
                if acked >= self._seq:
                    self._resend_backoff.pop(peer, None)
                    continue
                # A peer that does not ack (partitioned, stalled) gets exponentially rarer resends,
                # not a retransmission storm; any ack progress resets the backoff.
                backoff = self._resend_backoff.get(peer)
                if backoff is not None and backoff[0] != acked:
                    backoff = None
                wait = cfg.resend_after if backoff is None else backoff[1]
                if now - self._last_resend.get(peer, float("-inf")) < wait:
                    continue
                held = self._sacked.get(peer, frozenset())
                overdue = [s for s in range(acked + 1, self._seq + 1)
                           if s in self._buffer and s not in held and now - self._buffer[s].sent_at >= cfg.resend_after]
                if not overdue:
                    continue
                self._last_resend[peer] = now
                self._resend_backoff[peer] = (acked, min(wait * 2, cfg.max_resend_backoff))
                if len(overdue) > cfg.max_resend_batches or (acked + 1) not in self._buffer:
                    if self._repair(peer, now=now, why="resend_overdue"):
                        self._acked[peer] = self._seq  # the state covers them; do not resend again
                else:
                    if backoff is not None:
                        # It did not answer our last resend (partitioned, stalled): probe with the
                        # oldest batch instead of the whole range; its ack brings the rest next round.
                        overdue = overdue[:1]
                    for s in overdue:
                        self._send(peer, self._buffer[s].frame, "resend")
        for peer, left in list(self._departed.items()):
            if now - left >= cfg.evict_after:
                del self._departed[peer]
                self._acked.pop(peer, None)
                self._confirmed.pop(peer, None)
                self._last_resend.pop(peer, None)
                self._resend_backoff.pop(peer, None)
                self._sacked.pop(peer, None)
                self._state_sent.pop(peer, None)
                self._mismatch.pop(peer, None)
                self._synced.pop(peer, None)
                self._sync_sent.pop(peer, None)
                self._frontier_sent.pop(peer, None)
                self._frontier_gaps.pop(peer, None)
                for key in [k for k in self._transfers if k[0] == peer]:
                    del self._transfers[key]
                for key in [k for k in self._diff_transfers if k[0] == peer]:
                    del self._diff_transfers[key]
                self._asked.pop(peer, None)
        for stream, r in list(self._recv.items()):
            if r.peer not in self._peers and now - r.last_heard >= cfg.evict_after:
                del self._recv[stream]
                self._forgotten[stream] = r.upto
                if len(self._forgotten) > MAX_FORGOTTEN:
                    del self._forgotten[next(iter(self._forgotten))]
        if self._buffer:
            # (An empty buffer has nothing to free; the floor is recomputed once batches are
            # buffered again, here or when an ack moves it.)
            self._gc_buffer()

    def next_deadline(self) -> float:
        """When :meth:`tick` next has timed work (the anti-entropy round)."""
        return self._next_ae

    # -- sending ----------------------------------------------------------------------------
    def _send(self, peer: str | None, frame: bytes, what: str) -> None:
        self.outbox.append((peer, frame))
        self.stats[f"out_{what}"] += 1
        self.stats[f"bytes_{what}"] += len(frame)

    def _send_digest(self, peer: str, *, with_state: bool = True) -> None:
        # A partial replica's state differs from every full one: its digest would only start repairs.
        state = self.state_digest() if with_state and self.history else b""
        body = [self.stream, self._seq, state, self.frontier_digest()]
        self._send(peer, encode_frame(QuiltKind.DIGEST, body), "digest")

    def _heavy_allowed(self, peer: str, now: float) -> bool:
        # Repairs are the expensive traffic: to a peer that shows no sign of receiving them (no ack
        # progress since the last one, e.g. behind a one-way partition), start them at an exponentially
        # growing interval instead of every round.
        last = self._state_sent.get(peer)
        confirmed = self._confirmed.get(peer, 0)
        if last is not None and last[1] == confirmed and now - last[0] < last[2]:
            self.stats["states_deferred"] += 1
            return False
        gap = self.config.anti_entropy_interval if last is None or last[1] != confirmed else last[2] * 2
        self._state_sent[peer] = (now, confirmed, min(gap, self.config.max_resend_backoff * 3))
        return True

    def _send_state(self, peer: str, *, want_reply: bool, now: float | None = None, sync: bool = False) -> None:
        if now is not None and not self._heavy_allowed(peer, now):
            return
        self._send_chunked(peer, QuiltKind.STATE, pack(self.codec.encode(self.state)), want_reply=want_reply,
                           sync=sync, what="state")
        self.stats["states_out"] += 1

    def _send_chunked(self, peer: str, kind: QuiltKind, data: bytes, *, want_reply: bool, what: str,
                      sync: bool = False) -> None:
        # What the payload leaves the receiver holding of every stream: it may ack it all to the origins.
        frontier = [[s_id, r.upto] for s_id, r in sorted(self._recv.items()) if r.upto > 0]
        size = self.config.state_chunk_bytes
        parts = max(1, -(-len(data) // size))
        self._transfer_seq += 1
        for i in range(parts):
            body = [self.stream, self._seq, want_reply, self._transfer_seq, i, parts, data[i * size:(i + 1) * size],
                    sync]
            if i == 0:
                body.append(frontier)
            self._send(peer, encode_frame(kind, body), what)

    def _gc_buffer(self) -> None:
        acks = [self._acked.get(p, 0) for p in self._peers]
        floor = min(acks, default=self._seq)
        self._floor, self._at_floor = floor, acks.count(floor)
        if not self._buffer:
            return
        for s in [s for s in self._buffer if s <= floor]:
            self._buffer_bytes -= len(self._buffer.pop(s).frame)
        # A peer that never acks must not grow memory without bound: it will get a full state.
        while self._buffer_bytes > self.config.max_buffer_bytes and self._buffer:
            oldest = min(self._buffer)
            self._buffer_bytes -= len(self._buffer.pop(oldest).frame)
            self.stats["buffer_overflow"] += 1
