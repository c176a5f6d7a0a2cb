"""The event ring and the board: bounded, drop-oldest with a count, flat memory (pure cores)."""

from __future__ import annotations

import pytest

from warpmesh.observe.board import Board, BoardLimits
from warpmesh.observe.hub import Event, EventRing
from warpmesh.observe.wire import EventsMsg, SubscribeMsg, decode, encode_events, encode_subscribe


def test_a_reader_keeping_up_gets_every_event_in_order() -> None:
    ring = EventRing(8)
    cur = ring.cursor()
    for i in range(5):
        ring.append("started", float(i), "a", job=f"j{i}")
    batch = ring.take(cur)
    assert [e.job for e in batch.events] == [f"j{i}" for i in range(5)]
    assert [e.seq for e in batch.events] == [1, 2, 3, 4, 5]
    assert batch.dropped == 0
    assert ring.take(cur).events == ()


def test_the_ring_is_bounded_and_a_slow_reader_loses_the_oldest_and_is_told_how_many() -> None:
    ring = EventRing(4)
    slow = ring.cursor()
    for i in range(10):
        ring.append("finished", float(i), "a", job=f"j{i}")
    assert len(ring) == 4  # never more than its capacity
    batch = ring.take(slow)
    assert batch.dropped == 6
    assert [e.job for e in batch.events] == ["j6", "j7", "j8", "j9"]  # the newest survive
    assert slow.dropped == 6
    ring.append("finished", 10.0, "a", job="j10")
    again = ring.take(slow)
    assert again.dropped == 0 and [e.job for e in again.events] == ["j10"]


def test_readers_are_independent_and_limits_page_a_batch() -> None:
    ring = EventRing(100)
    a, b = ring.cursor(), ring.cursor()
    for i in range(30):
        ring.append("enqueued", float(i), "n", job=str(i))
    assert len(ring.take(a, 10).events) == 10
    assert len(ring.take(a, 10).events) == 10
    assert len(ring.take(b).events) == 30
    assert ring.pending(a) == 10 and ring.pending(b) == 0


def test_a_cursor_from_start_reads_what_is_held() -> None:
    ring = EventRing(3)
    for i in range(5):
        ring.append("x", float(i), "n")
    cur = ring.cursor(from_start=True)
    batch = ring.take(cur)
    assert batch.dropped == 0 and [e.seq for e in batch.events] == [3, 4, 5]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EventRing(0)


def test_the_board_stays_flat_over_many_events() -> None:
    limits = BoardLimits(stream=50, jobs=40, series=10)
    board = Board(limits)
    for i in range(20_000):
        board.apply(Event("started", float(i), "a", job=f"j{i}", detail={"op": "sq"}))
        board.apply(Event("finished", i + 0.5, "a", job=f"j{i}", detail={"op": "sq"}))
        board.tick(float(i))
    held = board.summary(20_000.0)["held"]
    assert held == {"jobs": 40, "stream": 50, "series": 10}
    assert board.counts["finished"] == 20_000
    page = board.stream_page(limit=20)
    assert [r["job"] for r in page["runs"]][:2] == ["j19999", "j19998"]
    older = board.stream_page(before=page["next"], limit=20)
    assert older["runs"][0]["n"] == page["runs"][-1]["n"] - 1
    assert board.job("j0") is None and board.job("j19999") is not None


def test_the_board_marks_duplicates_steals_and_durations() -> None:
    board = Board()
    board.apply(Event("enqueued", 0.0, "a", job="t", detail={"op": "sq"}))
    board.apply(Event("stolen", 0.1, "b", job="t"))
    board.apply(Event("started", 1.0, "b", job="t"))
    board.apply(Event("finished", 1.5, "b", job="t", detail={"result": 49}))
    board.apply(Event("finished", 2.0, "c", job="t"))
    job = board.job("t")
    assert job is not None
    assert job["duplicate"] and job["stolen"] and job["ran_on"] == ["b", "c"]
    assert job["attempts"] == 1 and job["result"] == "49"
    runs = board.stream_page()["runs"]
    assert runs[1]["duration"] == pytest.approx(0.5) and runs[1]["stolen"]
    assert runs[0]["duplicate"] and board.duplicates == 1


def test_peer_states_follow_the_snapshot() -> None:
    board = Board()
    board.observe_status({"node": "a", "roster": ["a", "b", "c"], "live_workers": ["a", "b", "c"],
                          "health": {}, "ring_shares": {"a": 0.3, "b": 0.3, "c": 0.4}}, 0.0)
    assert {p["peer"]: p["state"] for p in board.peers()} == {"a": "live", "b": "live", "c": "live"}
    board.observe_status({"node": "a", "roster": ["a", "b", "c"], "live_workers": ["a", "b"],
                          "health": {"c": "unresponsive"}}, 1.0)
    assert {p["peer"]: p["state"] for p in board.peers()}["c"] == "suspected"
    board.observe_status({"node": "a", "roster": ["a", "b"], "live_workers": ["a", "b"], "health": {}}, 2.0)
    assert {p["peer"]: p["state"] for p in board.peers()}["c"] == "lost"


def test_events_travel_on_the_wire() -> None:
    events = (Event("finished", 1.5, "a", job="j", peer="a", detail={"op": "sq"}, seq=7),)
    msg = decode(encode_events(events, 3))
    assert isinstance(msg, EventsMsg) and msg.events == events and msg.dropped == 3
    sub = decode(encode_subscribe(backlog=True))
    assert isinstance(sub, SubscribeMsg) and sub.on and sub.backlog
    with pytest.raises(ValueError):
        decode(b"\x01\x03\xc1")
    with pytest.raises(ValueError):
        Event.from_wire([1, "x"])
