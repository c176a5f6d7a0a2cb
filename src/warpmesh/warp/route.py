"""Cells: which cell queues a task, and the messages that carry a task to its cell and its answer back.

A mesh may be split into *cells* (``WarpConfig.cell``): replica groups that each keep their own
queue, results and intents boards, replicated among the cell's peers only, so a job's deltas and
acknowledgements cost the cell's size, not the mesh's (issue 16; the same idea as Dynamo's bounded
replication factor, or "copysets": a fixed replica group per key range). Membership, liveness and
the counters stay mesh-wide.

Every peer computes a task's cell the same way, from the cells on the members board:
:func:`cell_for` is rendezvous hashing (the cell with the highest BLAKE3 score of cell and task id),
so adding a cell moves only the tasks that now score highest there. A pinned task goes to its pin's
cell. A peer that is not of the task's cell (a peer of another cell, or a client of none) forwards it:

1. ``SUBMIT [seq, [[task, descriptor], ...]]`` to a live peer of the cell. That peer queues the
   tasks as they are (same run tokens: a retry through another peer names the same runs) and
2. answers ``ACCEPT [seq, ok, reason]`` once a majority of its cell holds them (or at once with
   ``ok`` false when it cannot). The submitter's ``enqueue`` returns on ``ok``; otherwise, or
   after ``replicate_timeout``, it tries another live peer of the cell, and finally raises
   ``NotReplicated`` (with the run token to retry with, as for a local enqueue).
3. The peer that accepted a task pushes its answer, ``ANSWERS [0, [[task, result], ...]]``, when
   its board gets it; the submitter also asks, ``FETCH [seq, [task, ...]]`` every ``route_poll``
   for answers still missing, to any live peer of the cell (the push may be lost, its sender
   may have crashed); the reply also lists ``[task, run]`` of the tasks asked for that are queued
   there without an answer yet. An ``ACK [seq, [task, ...]]`` removes answers from the cell's board
   (confirmed by an ``ACCEPT``, resent like a ``SUBMIT`` until then).
4. ``CANCEL [seq, [[task, reason], ...]]`` cancels tasks in their cell (``warpmesh cancel`` through
   a peer of another cell); ``CANCELLED [seq, [[task, state], ...]]`` answers with what
   ``WarpNode.cancel`` said there (``cancelled``, ``done`` or ``unknown``), once a majority of the
   cell holds the cancels.
5. ``COUNTS [seq]`` asks a peer for its cell's counters (each cell keeps its own counters board, so
   their traffic stays within the cell too): ``COUNTED [seq, {name: {peer: count}}]``. Mesh-wide
   figures (``warpmesh status``) are the sums over the cells.
6. ``HELLO [seq]`` asks a peer for its cell: ``CELL [seq, cell, [cells]]``. A client (``warpmesh
   submit``, ``status``, ``results``) joins the cell of the peer it connects through, so what it
   reads - the queue, the claims, the answers - is that cell's.

Only the routing state lives on the submitter (the tasks it waits for and the answers it got); the
queue, the claims, the runs and the answers live in the cell, under the cell's usual guarantees.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import blake3

from warpmesh.wire.frame import FrameUndecodable, pack, unpack

#: The mux channel of routing messages.
ROUTE_TAG = 0x08
SUBMIT, ACCEPT, FETCH, ANSWERS, ACK, HELLO, CELL, CANCEL, CANCELLED, COUNTS, COUNTED = range(11)
#: Names and peers per COUNTED message, at most.
MAX_COUNTS = 10_000
#: Tasks per SUBMIT, FETCH or ANSWERS message (a batch of more travels as several messages).
MAX_BATCH = 2_000
MAX_REASON = 500


def cell_for(task_id: str, cells: Iterable[str | None]) -> str | None:
    """The cell that queues ``task_id``: the highest rendezvous score among ``cells``.

    ``None`` names the default cell (peers without one). Every peer that knows the same cells picks
    the same one; with no cells at all, None.
    """
    key = task_id.encode()
    best: str | None = None
    best_score = b""
    for cell in cells:
        name = b"\x00" if cell is None else b"\x01" + cell.encode()
        score = blake3.blake3(name + b"\x00" + key).digest(8)
        if score > best_score:
            best, best_score = cell, score
    return best


@dataclass(frozen=True)
class Submit:
    seq: int
    tasks: tuple[tuple[str, bytes], ...]  # (task id, packed descriptor)


@dataclass(frozen=True)
class Accept:
    seq: int
    ok: bool
    reason: str


@dataclass(frozen=True)
class Fetch:
    seq: int
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class Answers:
    seq: int  # 0: pushed, unasked
    answers: tuple[tuple[str, bytes], ...]  # (task id, packed OpResult as stored on the results board)
    queued: tuple[tuple[str, bytes], ...] = ()  # (task id, run as UTF-8): asked for, queued, unanswered


@dataclass(frozen=True)
class Ack:
    seq: int
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class Hello:
    seq: int


@dataclass(frozen=True)
class Cell:
    seq: int
    cell: str | None
    cells: tuple[str, ...]


@dataclass(frozen=True)
class Cancel:
    seq: int
    tasks: tuple[tuple[str, bytes], ...]  # (task id, reason as UTF-8)


@dataclass(frozen=True)
class Cancelled:
    seq: int
    states: tuple[tuple[str, bytes], ...]  # (task id, state as UTF-8)


@dataclass(frozen=True)
class Counts:
    seq: int


@dataclass(frozen=True)
class Counted:
    seq: int
    counts: dict[str, dict[str, int]]  # counter name -> peer -> count


Message = Submit | Accept | Fetch | Answers | Ack | Hello | Cell | Cancel | Cancelled | Counts | Counted


def encode_submit(seq: int, tasks: list[tuple[str, bytes]]) -> bytes:
    return pack([SUBMIT, seq, [[t, d] for t, d in tasks]])


def encode_accept(seq: int, ok: bool, reason: str = "") -> bytes:
    return pack([ACCEPT, seq, ok, reason[:MAX_REASON]])


def encode_fetch(seq: int, tasks: list[str]) -> bytes:
    return pack([FETCH, seq, tasks])


def encode_answers(seq: int, answers: list[tuple[str, bytes]], queued: list[tuple[str, str]] | None = None) -> bytes:
    if not queued:
        return pack([ANSWERS, seq, [[t, r] for t, r in answers]])
    return pack([ANSWERS, seq, [[t, r] for t, r in answers], [[t, run.encode()] for t, run in queued]])


def encode_cancel(seq: int, tasks: list[tuple[str, str]]) -> bytes:
    return pack([CANCEL, seq, [[t, r[:MAX_REASON].encode()] for t, r in tasks]])


def encode_cancelled(seq: int, states: list[tuple[str, str]]) -> bytes:
    return pack([CANCELLED, seq, [[t, st.encode()] for t, st in states]])


def encode_counts(seq: int) -> bytes:
    return pack([COUNTS, seq, 0])


def encode_counted(seq: int, counts: dict[str, dict[str, int]]) -> bytes:
    return pack([COUNTED, seq, counts])


def _counts(raw: Any) -> dict[str, dict[str, int]]:
    if not isinstance(raw, dict) or len(raw) > MAX_COUNTS:
        raise ValueError("bad counts")
    out: dict[str, dict[str, int]] = {}
    for name, by_peer in raw.items():
        if not isinstance(name, str) or not isinstance(by_peer, dict) or len(by_peer) > MAX_COUNTS \
                or not all(isinstance(p, str) and _is_count(n) for p, n in by_peer.items()):
            raise ValueError("bad counts entry")
        out[name] = dict(by_peer)
    return out


def encode_hello(seq: int) -> bytes:
    return pack([HELLO, seq, 0])


def encode_cell(seq: int, cell: str | None, cells: list[str]) -> bytes:
    return pack([CELL, seq, cell, cells])


def encode_ack(seq: int, tasks: list[str]) -> bytes:
    return pack([ACK, seq, tasks])


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 63


def _pairs(items: Any, what: str) -> tuple[tuple[str, bytes], ...]:
    if not isinstance(items, list) or len(items) > MAX_BATCH:
        raise ValueError(f"bad {what} list")
    out: list[tuple[str, bytes]] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and item[0]
                and isinstance(item[1], bytes)):
            raise ValueError(f"bad {what} entry")
        out.append((item[0], item[1]))
    return tuple(out)


def _names(items: Any, what: str) -> tuple[str, ...]:
    if not isinstance(items, list) or len(items) > MAX_BATCH or not all(isinstance(t, str) and t for t in items):
        raise ValueError(f"bad {what} list")
    return tuple(items)


def decode(data: bytes) -> Message:
    """Parse one routing message; raises ``ValueError`` on anything malformed (peers may be hostile)."""
    try:
        msg = unpack(data)
    except FrameUndecodable as err:
        raise ValueError(f"undecodable routing message: {err}") from None
    if not isinstance(msg, list) or len(msg) < 3 or not _is_count(msg[1]):
        raise ValueError("bad routing message header")
    kind, seq = msg[0], msg[1]
    if kind == SUBMIT and len(msg) == 3:
        return Submit(seq, _pairs(msg[2], "submit"))
    if kind == ACCEPT and len(msg) == 4 and isinstance(msg[2], bool) and isinstance(msg[3], str):
        return Accept(seq, msg[2], msg[3][:MAX_REASON])
    if kind == FETCH and len(msg) == 3:
        return Fetch(seq, _names(msg[2], "fetch"))
    if kind == ANSWERS and len(msg) in (3, 4):
        return Answers(seq, _pairs(msg[2], "answers"), _pairs(msg[3], "queued") if len(msg) == 4 else ())
    if kind == CANCEL and len(msg) == 3:
        return Cancel(seq, _pairs(msg[2], "cancel"))
    if kind == CANCELLED and len(msg) == 3:
        return Cancelled(seq, _pairs(msg[2], "cancelled"))
    if kind == COUNTS and len(msg) == 3:
        return Counts(seq)
    if kind == COUNTED and len(msg) == 3:
        return Counted(seq, _counts(msg[2]))
    if kind == HELLO and len(msg) == 3:
        return Hello(seq)
    if kind == CELL and len(msg) == 4 and (msg[2] is None or (isinstance(msg[2], str) and msg[2])):
        return Cell(seq, msg[2], _names(msg[3], "cell"))
    if kind == ACK and len(msg) == 3:
        return Ack(seq, _names(msg[2], "ack"))
    raise ValueError(f"unknown routing message kind {kind!r}")


def chunks(items: list[Any], size: int = MAX_BATCH) -> Iterable[list[Any]]:
    """``items`` in lists of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i:i + size]
