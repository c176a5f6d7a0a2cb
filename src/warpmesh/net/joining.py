"""Deciding whether a starting peer has joined its mesh (pure: no I/O, no clock).

A peer started with ``--join`` seeds must not claim to be ready before it is part of a mesh, and
must not wait forever when it never will be. :class:`~warpmesh.net.tcp.TcpMesh` records what
happened at each seed (:meth:`~warpmesh.net.tcp.TcpMesh.seed_outcomes`); :func:`join_verdict`
turns those outcomes, the time spent and the budget into one of three states:

* ``joined``: a link exists (through a seed or because a peer dialled us), or every seed is our own
  address (we are the first peer);
* ``failed``: a seed gave an answer that waiting cannot change (a wrong cluster secret, our id is
  taken by a live peer, no common protocol version), or the budget ran out; ``reason`` says which
  targets failed and why, in words a user can act on;
* ``waiting``: keep retrying. Refused and unreachable seeds are retried until the budget runs out,
  so a whole mesh restarting at once still finds itself.

:func:`all_refused` is the client's fast path: when every server actively refused the TCP
connection, nothing is listening and waiting the whole request timeout helps nobody.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

#: Outcome kinds recorded per seed (besides the handshake refusal codes of
#: :class:`~warpmesh.net.handshake.Refusal`).
PENDING = "pending"  #: not tried yet, or a dial is in flight
OK = "ok"  #: a link to the seed's peer is up
SELF = "self_connection"  #: the seed is our own address
REFUSED = "refused"  #: TCP connection refused: nothing listens there
UNREACHABLE = "unreachable"  #: no route, timeout, DNS or TLS failure

#: Handshake refusals that retrying cannot fix, with what to do about each.
FATAL: dict[str, str] = {
    "bad_secret": "the cluster secret differs; use the mesh's secret (--secret-file or $WARPMESH_SECRET)",
    "duplicate_id": "this id is taken by a live peer; give every peer a unique --id (restarting a "
                    "peer is fine once its old process has exited)",
    "stale_incarnation": "a newer incarnation of this id is live; give every peer a unique --id",
    "version": "no common protocol version; run the same warpmesh version on every peer",
}

_TRANSIENT: dict[str, str] = {
    PENDING: "no answer yet",
    REFUSED: "connection refused (is a peer running there?)",
    UNREACHABLE: "unreachable",
    "timeout": "the handshake timed out (an overloaded peer, or mismatched TLS options?)",
    "eof": "closed the connection during the handshake (TLS on one side only?)",
    "reset": "reset the connection during the handshake (TLS on one side only?)",
    "overloaded": "too many pending handshakes there",
    "shutting_down": "that peer is shutting down",
}


@dataclass(frozen=True, slots=True)
class SeedOutcome:
    """The latest result of dialling one seed address."""

    address: str
    kind: str = PENDING
    #: The error or refusal reason as reported (may be empty).
    detail: str = ""
    attempts: int = 0

    def describe(self) -> str:
        """``address: what happened`` in plain words."""
        if self.kind in FATAL:  # the refusal reason names the problem; the hint says what to do
            return f"{self.address} refused us [{self.kind}]: {self.detail or FATAL[self.kind]}"
        what = _TRANSIENT.get(self.kind, self.kind)
        if self.detail and self.kind not in (REFUSED, PENDING):
            what = f"{what} ({self.detail})"
        return f"{self.address}: {what}"


@dataclass(frozen=True, slots=True)
class JoinVerdict:
    """Whether a starting peer is in its mesh: ``joined``, ``waiting`` or ``failed`` (with a reason)."""

    state: Literal["joined", "waiting", "failed"]
    reason: str = ""


def join_verdict(outcomes: Sequence[SeedOutcome], *, linked: bool, elapsed: float,
                 timeout: float) -> JoinVerdict:
    """Decide from the per-seed outcomes; ``linked`` is whether any link is up (seed or not)."""
    fatal = [o for o in outcomes if o.kind in FATAL]
    if fatal:  # even when linked elsewhere: a taken id or a wrong secret is a setup mistake to fix now
        return JoinVerdict("failed", "cannot join the mesh: " + "; ".join(o.describe() for o in fatal))
    if linked or any(o.kind == OK for o in outcomes):
        return JoinVerdict("joined")
    others = [o for o in outcomes if o.kind != SELF]
    if not others:
        return JoinVerdict("joined", "every --join address is this peer's own: it is the first peer")
    if elapsed >= timeout:
        return JoinVerdict("failed", f"could not join the mesh within {timeout:g} s: "
                                     + "; ".join(o.describe() for o in others)
                                     + " (start a peer there, fix --join, or raise --join-timeout)")
    return JoinVerdict("waiting")


def all_refused(outcomes: Sequence[SeedOutcome], *, min_attempts: int = 1) -> bool:
    """True when there is at least one seed and every seed refused the TCP connection
    ``min_attempts`` times in a row (nothing listens at any of them)."""
    return bool(outcomes) and all(o.kind == REFUSED and o.attempts >= min_attempts for o in outcomes)
