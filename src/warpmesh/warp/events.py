"""What a Warp peer tells its observers: one :class:`WarpEvent` per protocol step worth showing.

Pure data (no I/O): :class:`~warpmesh.warp.core.WarpCore` puts events in its ready batch, and the
runtime (:meth:`WarpNode.subscribe_events <warpmesh.warp.node.WarpNode.subscribe_events>`) hands
each one to its subscribers, synchronously and in order. The live view and tests consume them;
nothing in the protocol depends on them, so an event is a report, never a command.

The kinds are plain strings (constants below), stable names that observers match on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: A task was put on the queue by this peer (``detail``: ``run``, ``op``, ``pin``).
ENQUEUED = "enqueued"
#: This peer claimed a run it owns and will run it now (``detail``: ``run``, ``op``).
CLAIMED = "claimed"
#: This peer claimed a run whose ownership may be contested: it waits out the settle window
#: (``detail``: ``run``, ``claimants``).
CONTESTED = "contested"
#: A contested claim settled (``peer``: the winner; ``detail``: ``run``, ``claimants``, ``won``).
SETTLED = "settled"
#: A run started here (``detail``: ``run``, ``op``, ``mode``).
STARTED = "started"
#: A run finished here with an answer (``detail``: ``run``, ``attempts``, ``duration``).
FINISHED = "finished"
#: A run ended here with a failure answer (``detail``: ``run``, ``attempts``, ``duration``, ``error``).
FAILED = "failed"
#: Tasks moved by work stealing (``peer``: the other side; ``detail``: ``run``, ``direction``
#: ``"in"`` when this peer received the task, ``"out"`` when it granted it away).
STOLEN = "stolen"
#: This peer adopted an answer whose writer is gone (``peer``: the writer; ``detail``: ``run``).
ADOPTED = "adopted"
#: A worker joined this peer's live worker set (``peer``).
PEER_JOINED = "peer_joined"
#: A worker left the live worker set but is still on the roster (unresponsive) (``peer``).
PEER_SUSPECTED = "peer_suspected"
#: A worker left the live worker set and the roster (``peer``).
PEER_LOST = "peer_lost"
#: A worker that had left came back into the live worker set (``peer``).
PEER_READMITTED = "peer_readmitted"

#: Every kind, in protocol order.
KINDS = (ENQUEUED, CLAIMED, CONTESTED, SETTLED, STARTED, FINISHED, FAILED, STOLEN, ADOPTED, PEER_JOINED,
         PEER_SUSPECTED, PEER_LOST, PEER_READMITTED)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class WarpEvent:
    """One observable step of a Warp peer.

    ``at`` is the core's ``now`` (the node's clock: the event loop's, or the simulator's virtual
    one), ``job`` the task id when the event is about a task, ``peer`` the other peer involved (or
    this one), and ``detail`` the rest (run id, attempts, duration, error, claimants, holders...).
    """

    kind: str
    at: float
    job: str | None = None
    peer: str | None = None
    detail: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
