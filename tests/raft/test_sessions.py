"""Client sessions (dissertation §6.3): exactly-once verdicts with bounded memory.

Ported from the reference's ClientSessionTableTest and ClientSessionCloseIntegrationTest, adapted
to our floor-based table (which, unlike a high-water mark, is correct when one client's requests
commit out of order).
"""

from __future__ import annotations

from warpmesh.raft.sessions import SessionTable, Verdict
from warpmesh.raft.types import DedupKey
from warpmesh.wire.frame import pack, unpack


def apply(t: SessionTable, client: str, seq: int, floor: int = 1, result: object = None) -> Verdict:
    v, _ = t.check(DedupKey(client, seq, floor))
    if v == Verdict.APPLY:
        t.record(DedupKey(client, seq, floor), result if result is not None else seq * 10)
    return v


def test_first_request_applies_and_a_repeat_is_a_duplicate_with_the_cached_result() -> None:
    t = SessionTable()
    assert apply(t, "c", 1) == Verdict.APPLY
    assert t.check(DedupKey("c", 1, 1)) == (Verdict.DUPLICATE, 10)


def test_out_of_order_commits_of_one_client_both_apply() -> None:
    t = SessionTable()
    assert apply(t, "c", 2) == Verdict.APPLY
    assert apply(t, "c", 1) == Verdict.APPLY  # a high-water mark would wrongly drop this one
    assert apply(t, "c", 2) == Verdict.DUPLICATE


def test_requests_below_the_floor_are_stale() -> None:
    t = SessionTable()
    apply(t, "c", 1)
    apply(t, "c", 2)
    assert apply(t, "c", 3, floor=3) == Verdict.APPLY
    assert apply(t, "c", 1, floor=1) == Verdict.STALE
    assert len(t._sessions["c"].results) == 1  # results below the floor were forgotten


def test_an_unknown_client_with_a_raised_floor_is_expired_not_reapplied() -> None:
    t = SessionTable(max_sessions=2)
    apply(t, "a", 1)
    apply(t, "b", 1)
    apply(t, "c", 1)  # evicts "a", the least recently active
    assert apply(t, "a", 5, floor=3) == Verdict.EXPIRED
    assert apply(t, "d", 1, floor=1) == Verdict.APPLY  # a brand-new client is welcome


def test_session_count_is_bounded_and_eviction_is_least_recently_active() -> None:
    t = SessionTable(max_sessions=3)
    for c in "abc":
        apply(t, c, 1)
    apply(t, "a", 2, floor=2)  # "a" is active again
    apply(t, "d", 1)
    assert len(t) == 3 and "b" not in t._sessions and "a" in t._sessions


def test_results_per_client_are_bounded() -> None:
    t = SessionTable(max_results=4)
    for s in range(1, 11):
        apply(t, "c", s)  # the client never raises its floor
    assert len(t._sessions["c"].results) == 4
    assert apply(t, "c", 3) == Verdict.STALE  # forgotten, and never applied twice


def test_unkeyed_entries_are_not_the_tables_business() -> None:
    t = SessionTable()
    assert len(t) == 0


def test_snapshot_round_trip_preserves_verdicts_and_eviction_order() -> None:
    t = SessionTable(max_sessions=3)
    for c in "abc":
        apply(t, c, 1)
    apply(t, "a", 2)
    u = SessionTable.from_obj(unpack(pack(t.to_obj())))
    assert u.check(DedupKey("a", 2, 1)) == (Verdict.DUPLICATE, 20)
    apply(t, "d", 1)
    apply(u, "d", 1)
    assert list(t._sessions) == list(u._sessions)  # the same client ("b") was evicted


def test_verdicts_are_deterministic_under_replay() -> None:
    import random

    rng = random.Random(3)
    ops = [(rng.choice("abcdef"), rng.randint(1, 30), rng.randint(1, 10)) for _ in range(2000)]
    runs = []
    for _ in range(2):
        t = SessionTable(max_sessions=4, max_results=8)
        runs.append([apply(t, c, s, f) for c, s, f in ops])
    assert runs[0] == runs[1]


def test_close_session_resets_the_client() -> None:
    t = SessionTable()
    apply(t, "c", 1)
    t.close_session("c")
    assert apply(t, "c", 1) == Verdict.APPLY
