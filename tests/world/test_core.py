"""The pure parts of replicated worlds: codec, rules, agreement, diff, replica, Engine.resume_after."""

from __future__ import annotations

import pytest

from warpmesh.wire.frame import pack
from warpmesh.world import Agreement, Hashes, Replica, SnapshotMismatch, WorldCodecError, diff_states
from warpmesh.world.codec import (
    IntentsEntry,
    ReportEntry,
    ReportsEntry,
    RestoredEntry,
    TickEntry,
    WorldSnapshot,
    decode_entry,
    decode_snapshot,
    encode_intents,
    encode_report,
    encode_reports,
    encode_restored,
    encode_snapshot,
    encode_tick,
)
from warpmesh.world.diff import is_empty
from warpmesh.world.rules import ONE, build_world_engine, entity_id, entity_motion, push, run_tick, spawn

MEMBERS = ("a", "b", "c")


def _ticks(n: int, per_tick: int = 3) -> list[list[bytes]]:
    out = [[spawn(f"e{i}", (i, 0, 0), (0, 1, 0)) for i in range(8)]]
    for t in range(1, n):
        out.append([push(f"e{(t * 7 + k) % 8}", (k - 1, 1, 0)) for k in range(per_tick)])
    return out


class _Log:
    """A committed log fed to replicas by hand."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []

    def add(self, data: bytes) -> int:
        self.entries.append(data)
        return len(self.entries)

    def feed(self, r: Replica, start: int = 1) -> list:
        out = []
        for i in range(start, len(self.entries) + 1):
            out.append(r.apply(i, self.entries[i - 1]))
        return out


def _run_world(log: _Log, ticks: list[list[bytes]]) -> None:
    for t, intents in enumerate(ticks, 1):
        log.add(encode_intents("a", intents))
        log.add(encode_tick(t))


# ---------------------------------------------------------------------------------------------- codec
def test_entries_round_trip() -> None:
    assert decode_entry(encode_intents("a", [b"x", b"y"])) == IntentsEntry("a", (b"x", b"y"))
    assert decode_entry(encode_tick(7)) == TickEntry(7)
    h = bytes(range(32))
    assert decode_entry(encode_report("b", 3, h, h, h)) == ReportEntry("b", 3, h, h, h)
    assert decode_entry(encode_restored("c", 9)) == RestoredEntry("c", 9)
    assert decode_entry(encode_reports("a", [(1, h, h, h), (2, h, h, h)])) == ReportsEntry("a", ((1, h, h, h), (2, h, h, h)))


@pytest.mark.parametrize("bad", [b"", b"\xc1\xff", pack([]), pack([99, 1]), pack([2, -1]), pack([2, "x"]),
                                 pack([3, "a", 1, b"short", b"", b""]), pack([1, "a", ["not bytes"]]),
                                 pack([5, "a", []]), pack([5, "a", [[1, b"x"]]]),
                                 pack({"k": 1})])
def test_malformed_entries_are_refused(bad: bytes) -> None:
    with pytest.raises(WorldCodecError):
        decode_entry(bad)


def test_snapshot_round_trip_and_malformed() -> None:
    log = _Log()
    _run_world(log, _ticks(4))
    r = Replica("a", MEMBERS)
    log.feed(r)
    snap = r.snapshot()
    assert snap is not None
    back = decode_snapshot(encode_snapshot(snap))
    assert (back.tick, back.index, back.last) == (snap.tick, snap.index, snap.last)
    assert encode_snapshot(back) == encode_snapshot(snap)  # canonical bytes
    for bad in (b"junk", pack([1, 2, 3]), pack([1, 2, None, [[b"x"]], None])):
        with pytest.raises(WorldCodecError):
            decode_snapshot(bad)


# ---------------------------------------------------------------------------------------------- rules
def test_rules_move_entities_and_worker_count_does_not_matter() -> None:
    ticks = _ticks(12, per_tick=5)
    ticks[0] = [*ticks[0], spawn("z", (0, 0, 0), (0, 1, 0))]  # never pushed
    engines = [build_world_engine(w) for w in (1, 2, 4, 16)]
    for t, intents in enumerate(ticks, 1):
        hashes = {run_tick(e, t, intents).hash for e in engines}
        assert len(hashes) == 1, f"tick {t}: worker counts disagree"
    e = engines[0]
    m = entity_motion(e, "z")
    assert m is not None and m[4] == ONE  # vy stays 1 unit/tick
    assert m[1] == 11 * ONE  # 11 steps after the spawn tick
    pushed = entity_motion(e, "e0")
    assert pushed is not None and pushed[4] != ONE
    e.replay()  # the history replays to the same hashes


def test_intents_change_the_commit_even_when_ignored() -> None:
    a, b = build_world_engine(), build_world_engine()
    assert run_tick(a, 1, [b"garbage"]).hash != run_tick(b, 1, [b"other garbage"]).hash


def test_resume_after_continues_the_commit_chain() -> None:
    ticks = _ticks(6)
    e = build_world_engine()
    for t, intents in enumerate(ticks[:3], 1):
        run_tick(e, t, intents)
    resumed = build_world_engine(4, restore=(e.state.clone(), e.last_snapshot))
    for t, intents in enumerate(ticks[3:], 4):
        assert run_tick(e, t, intents).hash == run_tick(resumed, t, intents).hash
    # Without the parent the chain breaks: the commit hash covers the parent.
    orphan = build_world_engine(restore=(e.state.clone(), None))
    twin = build_world_engine(restore=(e.state.clone(), e.last_snapshot))
    assert run_tick(orphan, 7, []).hash != run_tick(twin, 7, []).hash


# ---------------------------------------------------------------------------------------------- agreement
H1 = Hashes(b"1" * 32, b"s" * 32, b"p" * 32)
H2 = Hashes(b"2" * 32, b"t" * 32, b"p" * 32)


def test_agreement_declares_the_odd_one_out_at_its_tick_with_the_parts() -> None:
    ag = Agreement.of(MEMBERS)
    assert ag.report("c", 5, H2) == []  # no majority yet
    assert ag.report("a", 5, H1) == []
    events = ag.report("b", 5, H1)
    assert [(e.kind, e.peer, e.tick, e.parts) for e in events] == [("diverged", "c", 5, ("commit", "state_root"))]
    assert ag.decided(5) == H1 and ag.detected == 1
    # Its later reports are ignored until it restores; a matching report after the restore repairs it.
    assert ag.report("c", 6, H1) == []
    ag.report("a", 6, H1)
    assert ag.restored("c", 6) == []
    assert ag.report("c", 6, H1) == []  # not after the restored tick
    ag.report("a", 7, H1)
    assert ag.report("c", 7, H1)[0].kind == "repaired"
    assert ag.repaired == 1 and ag.peer("c").status == "ok"


def test_agreement_ignores_duplicate_reports_and_counts_only_members_for_the_majority() -> None:
    ag = Agreement.of(MEMBERS)
    ag.report("a", 1, H1)
    assert ag.report("a", 1, H2) == []  # a replay's second report of the same tick
    ag.report("x", 1, H2)  # a learner: not a voter
    ag.report("y", 1, H2)
    assert ag.decided(1) is None
    events = ag.report("b", 1, H1)
    assert ag.decided(1) == H1
    assert {(e.peer, e.kind) for e in events} == {("x", "diverged"), ("y", "diverged")}


def test_agreement_standing_survives_a_snapshot() -> None:
    ag = Agreement.of(MEMBERS)
    ag.report("a", 1, H1)
    ag.report("c", 1, H2)
    ag.report("b", 1, H1)
    again = Agreement.of(MEMBERS)
    again.load_standing(ag.standing())
    assert again.peer("c").status == "diverged" and again.detected == 1
    again.report("a", 2, H1)
    assert again.report("b", 2, H1) == [] and again.report("c", 2, H2) == []


# ---------------------------------------------------------------------------------------------- replica
def test_replicas_agree_and_a_corrupted_one_is_caught_diffed_and_restored() -> None:
    log = _Log()
    _run_world(log, _ticks(6))
    good = Replica("a", MEMBERS)
    other = Replica("b", MEMBERS, workers=4)
    bad = Replica("c", MEMBERS, corrupt_at=[4])
    steps = {r.peer: [s for s in log.feed(r) if s.committed] for r in (good, other, bad)}
    for t in range(6):
        ok = steps["a"][t].committed.hash
        assert steps["b"][t].committed.hash == ok
        assert (steps["c"][t].committed.hash == ok) == (t + 1 < 4), f"tick {t + 1}"
    # The reports go through the log: every replica reaches the same verdict at the same entry.
    for r in (good, other, bad):
        s = steps[r.peer][3].committed
        log.add(encode_reports(r.peer, [(4, s.hash, s.state_root, s.patch_digest)]))
    verdicts = {r.peer: [e for st in log.feed(r, len(log.entries) - 2) for e in st.events] for r in (good, other, bad)}
    assert all(v == verdicts["a"] for v in verdicts.values())
    assert [(e.kind, e.peer, e.tick) for e in verdicts["a"]] == [("diverged", "c", 4)]
    assert bad.status == "diverged"
    snap = good.snapshot(4)
    assert snap is not None
    bad.verify(snap)
    diff = bad.diff_against(snap)
    assert diff is not None and entity_id("e0").hex() in diff["attachments"]["changed"]
    assert not diff["nodes"]["added"] and not diff["nodes"]["removed"]
    bad.restore(snap)
    log.add(encode_tick(7))
    log.add(encode_tick(7))  # a retried proposal: ignored
    a = [s for s in log.feed(good, len(log.entries) - 1) if s.committed]
    c = [s for s in log.feed(bad, snap.index + 1) if s.committed]
    assert len(a) == 1 and c[-1].committed.hash == a[0].committed.hash
    assert bad.tick == good.tick == 7


def test_verify_refuses_a_snapshot_that_does_not_hash_to_the_majority() -> None:
    log = _Log()
    _run_world(log, _ticks(3))
    a, b = Replica("a", MEMBERS), Replica("b", MEMBERS)
    log.feed(a)
    log.feed(b)
    s = a.snapshot(3)
    assert s is not None and s.last is not None
    with pytest.raises(SnapshotMismatch):  # no majority known for tick 3 yet
        b.verify(s)
    for p in ("a", "b"):
        log.add(encode_report(p, 3, s.last.hash, s.last.state_root, s.last.patch_digest))
    log.feed(b, len(log.entries) - 1)
    b.verify(s)
    other = Replica("x", MEMBERS)
    log2 = _Log()
    _run_world(log2, _ticks(3, per_tick=1))
    log2.feed(other)
    forged = other.snapshot(3)
    assert forged is not None
    with pytest.raises(SnapshotMismatch):
        b.verify(forged)
    tampered = WorldSnapshot(s.tick, s.index, s.last, forged.state)
    with pytest.raises(SnapshotMismatch):
        b.verify(tampered)


def test_diff_lists_added_removed_and_changed() -> None:
    e1, e2 = build_world_engine(), build_world_engine()
    run_tick(e1, 1, [spawn("a"), spawn("b")])
    run_tick(e2, 1, [spawn("a", (5, 0, 0)), spawn("c")])
    d = diff_states(e1.state, e2.state)
    assert d["nodes"]["added"] == [entity_id("c").hex()]
    assert d["nodes"]["removed"] == [entity_id("b").hex()]
    assert entity_id("a").hex() in d["attachments"]["changed"]
    assert len(d["edges"]["added"]) == 1 and len(d["edges"]["removed"]) == 1
    assert is_empty(diff_states(e1.state, e1.state.clone()))


def test_a_divergence_is_declared_at_its_first_tick_even_if_a_later_tick_decides_first() -> None:
    ag = Agreement.of(MEMBERS)
    ag.report("c", 4, H2)  # c's reports of ticks 4 and 5 are both bad
    ag.report("c", 5, H2)
    ag.report("a", 5, H1)
    assert ag.report("b", 5, H1) == []  # tick 5 decided first: c's verdict waits for tick 4
    ag.report("a", 4, H1)
    events = ag.report("b", 4, H1)
    assert [(e.kind, e.peer, e.tick) for e in events] == [("diverged", "c", 4)]


def test_an_undecidable_tick_stops_holding_verdicts_back() -> None:
    ag = Agreement.of(MEMBERS)
    ag.report("c", 1, H2)  # tick 1 never reaches a majority (its other voters died)
    events = []
    for t in range(2, 12):
        ag.report("c", t, H2)
        ag.report("a", t, H1)
        events += ag.report("b", t, H1)
    assert [(e.kind, e.tick) for e in events] == [("diverged", 2)]


def test_the_core_imports_no_runtime() -> None:
    import subprocess
    import sys

    code = ("import sys, warpmesh.world, warpmesh.world.replica; "
            "print([m for m in ('asyncio', 'socket', 'sqlite3', 'warpmesh.world.runtime', 'warpmesh.raft.runtime') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
