"""Work stealing between Warp peers: the messages, and the owner's estimate of its backlog.

The ring gives every task one natural runner, which balances *counts* of tasks, not their cost: a
peer can sit idle while another still has a backlog of claimed, unstarted tasks. Stealing moves
part of that backlog, and only that backlog - never a running task, never a pinned one - so a task
still runs once at steady membership:

1. An idle worker sends ``REQUEST [seq, want, held, incarnation]`` to one peer (the one that last reported the
   biggest backlog). ``held`` lists the tasks it holds from that peer: granted, accepted, and not
   finished long ago - and a finished one stays listed until the owner has confirmed the results
   batch that carried its answer (else the owner, missing the answer, would run it again).
2. The owner takes up to half of its estimated backlog *from the back of its ready queue* (tasks
   it has claimed and not started), forgets its own claim on them, records them as delegated, and
   answers ``GRANT [seq, [[task, descriptor], ...], backlog_seconds, 0]``.
3. The thief runs a grant only if it answers its current request and it is still short of work
   (its own backlog under ``steal_min_backlog``: work of its own may have reached it since it
   asked); a late, duplicated or declined grant is not run, and the thief's next request (sent at
   once) omits its tasks from ``held``.
4. On every request, the owner takes back the tasks it delegated to that thief under an earlier
   request that ``held`` does not list: they were never accepted. It also takes back everything
   delegated to a thief that leaves the live roster.

A task's answer and dequeue follow the usual path (the thief writes the answer; a majority must
hold it before the task leaves the queue), so stealing changes who runs a task, not its guarantees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warpmesh.wire.frame import FrameUndecodable, pack, unpack

REQUEST, GRANT = 0, 1
#: Grants stop adding tasks past this many bytes of descriptors (well under the frame limit).
MAX_GRANT_BYTES = 1 << 20
MAX_HELD = 100_000


@dataclass(frozen=True)
class StealRequest:
    seq: int
    want: int
    held: frozenset[str]
    incarnation: int  # the thief's: a restarted thief numbers its requests afresh


@dataclass(frozen=True)
class StealGrant:
    seq: int
    tasks: tuple[tuple[str, bytes], ...]  # (task id, packed descriptor as stored on the queue board)
    backlog: float  # the owner's remaining backlog, in estimated seconds of work


def encode_request(seq: int, want: int, held: list[str], incarnation: int) -> bytes:
    return pack([REQUEST, seq, want, held, incarnation])


def encode_grant(seq: int, tasks: list[tuple[str, bytes]], backlog: float) -> bytes:
    return pack([GRANT, seq, [[t, d] for t, d in tasks], backlog, 0])


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 63


def decode(data: bytes) -> StealRequest | StealGrant:
    """Parse one steal message; raises ``ValueError`` on anything malformed (peers may be hostile)."""
    try:
        msg = unpack(data)
    except FrameUndecodable as err:
        raise ValueError(f"undecodable steal message: {err}") from None
    if not isinstance(msg, list) or len(msg) != 5 or msg[0] not in (REQUEST, GRANT) or not _is_count(msg[1]):
        raise ValueError("bad steal message header")
    if msg[0] == REQUEST:
        want, held, incarnation = msg[2], msg[3], msg[4]
        if not _is_count(want) or not _is_count(incarnation) or not isinstance(held, list) \
                or len(held) > MAX_HELD or not all(isinstance(t, str) for t in held):
            raise ValueError("bad steal request")
        return StealRequest(msg[1], want, frozenset(held), incarnation)
    tasks, backlog = msg[2], msg[3]
    if not isinstance(tasks, list) or not isinstance(backlog, (int, float)) or isinstance(backlog, bool) \
            or not 0 <= backlog < 1e12:
        raise ValueError("bad steal grant")
    out: list[tuple[str, bytes]] = []
    for item in tasks:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], bytes)):
            raise ValueError("bad steal grant entry")
        out.append((item[0], item[1]))
    return StealGrant(msg[1], tuple(out), float(backlog))


class OpCosts:
    """Exponentially weighted mean run time per op, on the node's clock (virtual in the simulator)."""

    def __init__(self, weight: float = 0.2) -> None:
        self._mean: dict[str, float] = {}
        self._weight = weight

    def observe(self, op: str, seconds: float) -> None:
        seconds = max(0.0, seconds)
        old = self._mean.get(op)
        self._mean[op] = seconds if old is None else old + self._weight * (seconds - old)

    def estimate(self, op: str) -> float:
        """Mean seconds per run of ``op`` (0 until measured: an unmeasured op is never granted)."""
        return self._mean.get(op, 0.0)
