"""Log replication (Raft §5.3), the commit rule (§5.4.2, Figure 8), the paper's Figure 7 cases,
fast backup, pipelining, batching and the clamps the reference added after bugs (#1175, #1829).
"""

from __future__ import annotations

import pytest

from warpmesh.raft.config import RaftConfig
from warpmesh.raft.messages import AppendEntries, AppendResponse, Heartbeat
from warpmesh.raft.progress import ProgressState
from warpmesh.raft.testing import ScriptedCluster
from warpmesh.raft.types import Entry, EntryKind, Role


def terms_of(c: ScriptedCluster, nid: str) -> list[int]:
    log = c[nid].c.log
    return [log.term(i) for i in range(1, log.last_index() + 1)]  # type: ignore[misc]


def test_basic_replication_reaches_all_followers_and_first_user_entry_is_index_2() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    key = c.propose(ld.id, b"hello")
    c.run(0.1)
    done = ld.completion("propose", key)
    assert done is not None and done.value[0] == 2  # the election no-op is index 1
    assert all(n.commands() == [b"hello"] for n in c.live())


def test_concurrent_proposals_commit_in_order_exactly_once() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    keys = [ld.c.propose(f"{i}".encode(), c.now) for i in range(200)]
    c.pump(ld.id)
    c.run(0.2)
    want = [f"{i}".encode() for i in range(200)]
    assert all(n.commands() == want for n in c.live())
    idx = [ld.completion("propose", k).value[0] for k in keys]  # type: ignore[union-attr]
    assert idx == sorted(idx) and len(set(idx)) == 200


def test_follower_failure_quorum_continues() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    c.crash(f.id)
    key = c.propose(ld.id, b"x")
    c.run(0.1)
    assert ld.completion("propose", key) is not None


def test_no_progress_without_a_quorum() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    for n in c.live():
        if n is not ld:
            c.crash(n.id)
    key = ld.c.propose(b"x", c.now)
    c.pump(ld.id)
    c.run(0.5)
    assert ld.completion("propose", key) is None
    assert ld.c.commit == ld.c.noop_index


def test_leader_failure_new_leader_can_commit() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    c.propose(ld.id, b"a")
    c.run(0.1)
    c.crash(ld.id)
    new = c.wait_leader()
    key = c.propose(new.id, b"b")
    c.run(0.1)
    assert new.completion("propose", key) is not None
    assert new.commands() == [b"a", b"b"]


FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIG7_FOLLOWERS))
def test_figure7_follower_log_converges_to_the_leaders(case: str) -> None:
    """Raft Figure 7: whichever way a follower's log diverged, the term-8 leader makes it identical
    to its own (missing entries added, extra uncommitted ones truncated)."""
    c = ScriptedCluster(3)
    c.preload("n1", FIG7_LEADER, term=7)
    c.preload("n2", FIG7_FOLLOWERS[case], term=7)
    c.preload("n3", FIG7_LEADER, term=7)
    c.isolate("n2")
    ld = c.elect("n1")
    assert ld.c.term == 8
    c.heal()
    c.propose("n1", b"new")
    c.run(0.3)
    assert terms_of(c, "n2") == [*FIG7_LEADER, 8, 8]  # the no-op and "new"
    assert c["n2"].c.log.slice(1, 11) == c["n1"].c.log.slice(1, 11)
    assert c["n2"].c.commit == 12


def test_figure8_prior_term_entry_on_a_majority_is_not_committed_by_counting() -> None:
    """Figure 8 (c): S1 leads term 4 and gets its term-2 entry onto a majority; it must not commit
    it, because S5 (term-3 entry at the same index) could still be elected and overwrite it (d)."""
    cfg = RaftConfig(election_timeout_min=0.1, election_timeout_max=0.2, heartbeat_interval=0.02,
                     max_append_entries=1)
    c = ScriptedCluster(5, config=cfg)
    c.preload("n1", [1, 2], term=3)
    c.preload("n2", [1, 2], term=3)
    c.preload("n3", [1], term=3)
    c.preload("n4", [1], term=3)
    c.preload("n5", [1, 3], term=3)
    # S1's term-4 no-op (index 3) never arrives anywhere: strip it from every append.
    def strip(m):  # type: ignore[no-untyped-def]
        if isinstance(m, AppendEntries):
            m.entries = [e for e in m.entries if e.index < 3]
            m.commit = min(m.commit, 1)
        return m

    c.filters.append(strip)
    c.isolate("n5")
    ld = c.elect("n1", wait_commit=False)
    c.run(0.2)
    assert ld.c.term == 4
    assert c["n3"].c.log.term(2) == 2  # index 2 (term 2) is now on S1, S2, S3: a majority
    assert ld.c.prs["n3"].match >= 2
    assert ld.c.commit < 2  # ...yet not committed: its term is not the current term
    # (d): S1 crashes, S5 is elected by S2, S3, S4 and overwrites index 2 with its term-3 entry.
    c.crash("n1")
    c.heal()
    c["n5"].c.step(Heartbeat("n1", "n5", 4, 0, 0), c.now)  # S5 learns term 4 (any message would do)
    for n in ("n2", "n3", "n4"):
        c[n].c.election_deadline = float("inf")  # they have not timed out yet; S5 does first
    s5 = c.elect("n5")
    c.run(0.2)
    assert s5.c.term == 5 and all(c[n].c.log.term(2) == 3 for n in ("n2", "n3", "n4", "n5"))


def test_figure8_prior_term_entries_commit_with_the_leaders_noop() -> None:
    c = ScriptedCluster(5)
    c.preload("n1", [1, 2], term=3)
    c.preload("n2", [1, 2], term=3)
    for n in ("n3", "n4", "n5"):
        c.preload(n, [1], term=3)
    ld = c.elect("n1")
    c.run(0.1)
    assert ld.c.commit == 3 and ld.c.log.term(3) == 4  # entry 2 committed by the term-4 no-op


def test_noop_commits_prior_term_entries_without_a_new_proposal() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    ld.c.propose(b"x", c.now)
    c.pump(ld.id)
    c.queue.clear()  # nobody else got it; only the leader has it
    c.crash(ld.id)
    c.start(ld.id)
    c.isolate("n2" if ld.id != "n2" else "n3")
    new = c.elect(ld.id)
    c.run(0.1)
    assert [e.data for e in new.applied if e.kind == EntryKind.NORMAL] == [b"x"]


def test_committed_stream_withholds_noop_and_config_entries_from_commands() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    c.propose(ld.id, b"")
    c.run(0.1)
    kinds = [e.kind for e in ld.applied]
    assert kinds == [EntryKind.NOOP, EntryKind.NORMAL]
    assert ld.commands() == [b""]  # an empty user command is a real command


def test_conflict_below_the_first_batch_entry_truncates_and_adopts() -> None:
    c = ScriptedCluster(3)
    f = c.preload("n2", [1] * 7, term=2)
    ents = [Entry(5, 1, 0, b"5@1"), Entry(6, 2, 0, b"x"), Entry(7, 2, 0, b"y")]
    f.step(AppendEntries("n1", "n2", 2, 4, 1, 0, ents), c.now)
    c.pump("n2")
    assert terms_of(c, "n2") == [1, 1, 1, 1, 1, 2, 2]
    resp = [m for m in c["n2"].sent if isinstance(m, AppendResponse)][-1]
    assert not resp.reject and resp.index == 7


def test_stale_suffix_does_not_over_attest_or_over_commit() -> None:
    c = ScriptedCluster(3)
    f = c.preload("n2", [1] * 5, term=1)
    f.step(AppendEntries("n1", "n2", 1, 2, 1, 5, [Entry(3, 1, 0, b"3@1")]), c.now)
    c.pump("n2")
    resp = [m for m in c["n2"].sent if isinstance(m, AppendResponse)][-1]
    assert resp.index == 3 and f.commit == 3  # only what the batch proves


def test_duplicate_batch_is_a_noop() -> None:
    c = ScriptedCluster(3)
    f = c.preload("n2", [1, 1, 1], term=1)
    before = list(f.log.entries)
    writes = c["n2"].storage.writes
    m = AppendEntries("n1", "n2", 1, 1, 1, 0, [Entry(2, 1, 0, b"2@1"), Entry(3, 1, 0, b"3@1")])
    f.step(m, c.now)
    c.pump("n2")
    assert f.log.entries == before and c["n2"].storage.writes - writes <= 1  # at most the vote/term


def test_forward_only_commit_clamp() -> None:
    c = ScriptedCluster(3)
    f = c.preload("n2", [1] * 5, term=1)
    f.step(AppendEntries("n1", "n2", 1, 5, 1, 5, []), c.now)
    assert f.commit == 5
    f.step(AppendEntries("n1", "n2", 1, 2, 1, 2, [Entry(3, 1, 0, b"3@1")]), c.now)
    assert f.commit == 5


def test_committed_entries_are_never_truncated() -> None:
    """PySyncObj truncates already-applied entries under load; a batch that would overwrite a
    committed entry is refused here instead."""
    c = ScriptedCluster(3)
    f = c.preload("n2", [1] * 5, term=1)
    f.step(AppendEntries("n1", "n2", 1, 5, 1, 5, []), c.now)
    assert f.commit == 5
    # Entries at or below commit are known identical and skipped without comparison...
    f.step(AppendEntries("n3", "n2", 2, 2, 1, 5, [Entry(3, 2, 0, b"evil")]), c.now)
    assert terms_of(c, "n2") == [1] * 5
    # ...and a batch that contradicts a committed entry is refused, never applied.
    f.step(AppendEntries("n3", "n2", 2, 4, 1, 5, [Entry(5, 2, 0, b"evil"), Entry(6, 2, 0, b"x")]), c.now)
    assert terms_of(c, "n2") == [1] * 5
    assert f.stats["refused:committed_conflict"] == 1


def test_log_too_short_rejection_closes_the_gap_in_one_round() -> None:
    c = ScriptedCluster(3)
    c.preload("n1", [1] * 50, term=1)
    c.preload("n3", [1] * 50, term=1)
    c.preload("n2", [1] * 3, term=1)
    c.isolate("n2")
    ld = c.elect("n1")
    c.heal()
    c.run(0.2)
    rejects = [m for m in c["n2"].sent if isinstance(m, AppendResponse) and m.reject]
    assert len(rejects) == 1
    assert rejects[0].hint_index == 3  # points at the follower's tail
    assert terms_of(c, "n2") == terms_of(c, ld.id)


def test_every_backup_round_probes_a_strictly_lower_index() -> None:
    c = ScriptedCluster(3)
    c.preload("n1", [1, 1, 3, 3, 5, 5, 7, 7, 9], term=9)
    c.preload("n3", [1, 1, 3, 3, 5, 5, 7, 7, 9], term=9)
    c.preload("n2", [1, 1, 2, 2, 4, 4, 6, 6, 8, 8, 8, 8], term=9)
    c.isolate("n2")
    c.elect("n1")
    c.heal()
    c.run(0.3)
    probes = [m.prev_index for m in c.delivered if isinstance(m, AppendEntries) and m.to == "n2"]
    rejected = [m.index for m in c["n2"].sent if isinstance(m, AppendResponse) and m.reject]
    assert rejected == sorted(rejected, reverse=True) and len(set(rejected)) == len(rejected)
    assert len(rejected) <= 4  # by term, not by entry
    assert probes and terms_of(c, "n2")[:9] == [1, 1, 3, 3, 5, 5, 7, 7, 9]


def test_success_response_past_the_leader_log_does_not_move_match_beyond_it() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    f = next(p for p in ld.c.prs)
    ld.c.step(AppendResponse(f, ld.id, ld.c.term, 10_000), c.now)
    assert ld.c.prs[f].match == ld.c.log.last_index()


def test_rejection_with_hint_past_the_leader_log_does_not_crash_or_advance() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    f = next(p for p in ld.c.prs)
    pr = ld.c.prs[f]
    pr.become_probe()
    pr.next = ld.c.log.last_index() + 1
    ld.c.step(AppendResponse(f, ld.id, ld.c.term, pr.next - 1, True, 10_000, 10_000), c.now)
    assert 1 <= pr.next <= ld.c.log.last_index() + 1
    c.run(0.2)
    assert c.leader() is ld


def test_appends_are_pipelined_within_the_inflight_window() -> None:
    cfg = RaftConfig(election_timeout_min=0.1, election_timeout_max=0.2, heartbeat_interval=0.02,
                     max_append_entries=1, max_inflight_msgs=4)
    c = ScriptedCluster(3, config=cfg)
    ld = c.wait_leader()
    c.run(0.05)
    f = next(iter(sorted(ld.c.prs)))
    assert ld.c.prs[f].state == ProgressState.REPLICATE
    held: list = []
    c.filters.append(lambda m: held.append(m) if isinstance(m, AppendResponse) and m.to == ld.id else m)
    start = len(c.delivered)
    for i in range(10):
        ld.c.propose(bytes([i]), c.now)
    c.pump(ld.id)
    c.deliver()
    sent = [m for m in c.delivered[start:] if isinstance(m, AppendEntries) and m.to == f and m.entries]
    # Four batches went out back to back without waiting for any answer, and no more.
    assert len(sent) == 4
    c.filters.clear()
    for m in held:
        c.queue.append(m)
    c.deliver()
    c.run(0.2)
    assert c[f].commands() == [bytes([i]) for i in range(10)]


def test_batches_respect_the_byte_budget() -> None:
    cfg = RaftConfig(election_timeout_min=0.1, election_timeout_max=0.2, heartbeat_interval=0.02,
                     max_append_bytes=1000)
    c = ScriptedCluster(3, config=cfg)
    ld = c.wait_leader()
    for _i in range(50):
        ld.c.propose(bytes(100), c.now)
    c.pump(ld.id)
    c.run(0.3)
    for m in c.delivered:
        if isinstance(m, AppendEntries) and len(m.entries) > 1:
            assert sum(e.size for e in m.entries) <= 1000
    assert all(len(n.commands()) == 50 for n in c.live())


def test_lagging_follower_catches_up_when_its_tail_exceeds_the_budget() -> None:
    cfg = RaftConfig(election_timeout_min=0.1, election_timeout_max=0.2, heartbeat_interval=0.02,
                     max_append_bytes=300)
    c = ScriptedCluster(3, config=cfg)
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    c.crash(f.id)
    for _i in range(100):
        c.propose(ld.id, bytes(64))
    c.start(f.id)
    c.run(1.0)
    assert len(f.commands()) == 100


def test_many_proposals_share_one_write_and_one_append_per_follower() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    c.run(0.1)
    writes = ld.storage.writes
    before = len(c.queue)
    for i in range(100):
        ld.c.propose(bytes([i]), c.now)
    rd = ld.c.ready()
    assert rd is not None and len(rd.entries) == 100
    appends = [m for m in rd.early_messages if isinstance(m, AppendEntries)]
    assert len(appends) == 2 and all(len(m.entries) == 100 for m in appends)
    assert before == len(c.queue) and ld.storage.writes == writes


def test_followers_learn_the_commit_index_without_waiting_for_a_heartbeat() -> None:
    cfg = RaftConfig(election_timeout_min=1.0, election_timeout_max=2.0, heartbeat_interval=0.5)
    c = ScriptedCluster(3, config=cfg)
    ld = c.wait_leader()
    c.run(0.6)
    key = ld.c.propose(b"x", c.now)
    c.pump(ld.id)
    c.deliver()  # no time passes: no heartbeat can fire
    assert ld.completion("propose", key) is not None
    assert all(n.commands() == [b"x"] for n in c.live())
    notices = [m for m in c.delivered if isinstance(m, Heartbeat) and m.round == 0]
    assert notices  # the commit notice, not a periodic heartbeat


def test_leader_never_truncates_or_rewrites_its_own_log() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    for i in range(20):
        c.propose(ld.id, bytes([i]))
    snap = list(ld.c.log.entries)
    c.run(0.5)
    assert ld.c.log.entries[:len(snap)] == snap and ld.c.role == Role.LEADER
