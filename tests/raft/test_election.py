"""Leader election (Raft §5.2), PreVote (§9.6), stickiness (§4.2.3) and CheckQuorum (§6.2).

Ported from the reference's ElectionTest, SchedulerElectionTest, PreVoteTest, VoteDenyAttribution,
VoteRestrictionSnapshotTest and CheckQuorumTest, on the scripted cluster (which also asserts election
safety and state-machine safety at every step).
"""

from __future__ import annotations

from warpmesh.raft.messages import VoteRequest, VoteResponse
from warpmesh.raft.testing import ScriptedCluster
from warpmesh.raft.types import Role


def test_initial_election_elects_exactly_one_leader() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    leaders = [n for n in c.live() if n.c.role == Role.LEADER]
    assert leaders == [ld]
    c.run(1.0)
    assert [n for n in c.live() if n.c.role == Role.LEADER] == [ld]
    assert all(n.c.term == ld.c.term for n in c.live())


def test_no_election_before_the_election_timeout() -> None:
    c = ScriptedCluster(3)
    c.run(c.cfg.election_timeout_min * 0.99)
    assert all(n.c.role == Role.FOLLOWER and n.c.term == 0 for n in c.live())


def test_election_occurs_after_the_election_timeout() -> None:
    c = ScriptedCluster(3)
    c.run(c.cfg.election_timeout_max * 1.5)
    assert c.leader() is not None


def test_heartbeats_suppress_reelection() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    term = ld.c.term
    before = {n.id: n.c.stats["election_timeouts"] for n in c.live()}
    c.run(20 * c.cfg.election_timeout_max)
    assert c.leader() is ld and ld.c.term == term
    assert all(n.c.stats["election_timeouts"] == before[n.id] for n in c.live())


def test_reelection_after_leader_crash_elects_a_different_node() -> None:
    c = ScriptedCluster(3)
    old = c.wait_leader()
    c.crash(old.id)
    new = c.wait_leader()
    assert new.id != old.id and new.c.term > 1


def test_many_elections_keep_the_invariants() -> None:
    c = ScriptedCluster(5, seed=7)
    for i in range(5):
        ld = c.wait_leader()
        c.propose(ld.id, f"cmd{i}".encode())
        c.run(0.05)
        c.crash(ld.id)
        c.wait_leader()
        c.start(ld.id)
    ld = c.wait_leader()
    c.run(0.5)
    cmds = [n.commands() for n in c.live()]
    assert all(x == cmds[0] for x in cmds) and len(cmds[0]) == 5


def test_single_voter_elects_itself_without_messages() -> None:
    c = ScriptedCluster(1)
    ld = c.wait_leader()
    assert ld.c.term == 1 and ld.sent == []


def test_prevote_granter_grants_when_no_leader_and_log_ok() -> None:
    c = ScriptedCluster(3)
    n2 = c["n2"].c
    n2.step(VoteRequest("n1", "n2", 1, 0, 0, pre=True, round=1), c.now + 1.0)
    c.pump("n2")
    resp = [m for m in c["n2"].sent if isinstance(m, VoteResponse)]
    assert resp[-1].granted and resp[-1].pre and resp[-1].term == 1
    assert n2.term == 0 and n2.vote is None  # PreVote changes no state


def test_prevote_denied_while_a_leader_is_alive() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    other = next(n for n in c.live() if n not in (ld, f))
    f.c.step(VoteRequest(other.id, f.id, ld.c.term + 1, 100, ld.c.term, pre=True, round=1), c.now)
    c.pump(f.id)
    resp = [m for m in f.sent if isinstance(m, VoteResponse) and m.pre]
    assert resp and not resp[-1].granted


def test_partitioned_voter_does_not_disrupt_the_leader_on_rejoin() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    term = ld.c.term
    victim = next(n for n in c.live() if n is not ld)
    elections = victim.c.stats["elections_started"]
    c.isolate(victim.id)
    c.run(10 * c.cfg.election_timeout_max)
    # PreVote: the isolated node kept failing its pre-votes and never bumped its term.
    assert victim.c.term == term and victim.c.stats["prevotes_started"] > 0
    assert victim.c.stats["elections_started"] == elections
    c.heal()
    c.propose(ld.id, b"after")
    c.run(0.5)
    assert c.leader() is ld and ld.c.term == term
    assert victim.commands() == [b"after"]


def test_sticky_follower_ignores_a_higher_term_vote_without_adopting_it() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    term, vote = f.c.term, f.c.vote
    f.c.step(VoteRequest("n9", f.id, term + 5, 1000, term + 4), c.now)
    c.pump(f.id)
    assert f.c.term == term and f.c.vote == vote
    assert f.c.stats["vote_ignored_sticky"] == 1
    assert not [m for m in f.sent if isinstance(m, VoteResponse) and m.to == "n9"]


def test_election_still_completes_via_prevote() -> None:
    c = ScriptedCluster(5)
    ld = c.wait_leader()
    assert ld.c.stats["prevotes_started"] >= 1 and ld.c.term == 1


def test_stale_prevote_response_from_a_previous_round_is_ignored() -> None:
    c = ScriptedCluster(3)
    n1 = c["n1"].c
    c.isolate("n1")
    n1.election_deadline = c.now
    n1.tick(c.now)  # pre-vote round 1 (messages blocked)
    n1.election_deadline = c.now
    n1.tick(c.now)  # round 2
    assert n1.role == Role.PRE_CANDIDATE and n1.election_round == 2
    n1.step(VoteResponse("n2", "n1", 1, True, True, round=1), c.now)
    assert n1.role == Role.PRE_CANDIDATE  # round-1 grant does not count
    n1.step(VoteResponse("n2", "n1", 1, True, True, round=2), c.now)
    assert n1.role == Role.CANDIDATE


def _vote(c: ScriptedCluster, voter: str, req: VoteRequest) -> VoteResponse:
    c[voter].c.step(req, c.now + 10)  # far from boot: the restart quiet period is over
    c.now += 10
    c.pump(voter)
    return [m for m in c[voter].sent if isinstance(m, VoteResponse)][-1]


def test_vote_denied_for_a_stale_term() -> None:
    c = ScriptedCluster(3)
    c["n2"].c.term = 5
    r = _vote(c, "n2", VoteRequest("n1", "n2", 4, 0, 0))
    assert not r.granted and r.term == 5


def test_vote_denied_when_already_voted_for_another_candidate_in_the_term() -> None:
    c = ScriptedCluster(3)
    assert _vote(c, "n2", VoteRequest("n1", "n2", 1, 0, 0)).granted
    assert not _vote(c, "n2", VoteRequest("n3", "n2", 1, 0, 0)).granted
    assert _vote(c, "n2", VoteRequest("n1", "n2", 1, 0, 0)).granted  # a repeat is fine


def test_vote_denied_when_the_candidate_log_is_behind() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    c.propose(ld.id, b"x")
    c.run(0.1)
    f = next(n for n in c.live() if n is not ld)
    term = f.c.term
    r = _vote(c, f.id, VoteRequest("n9", f.id, term + 1, 1, term))
    assert not r.granted and f.c.term == term + 1  # term adopted (no live leader after 10 s)


def test_vote_persisted_before_the_grant_is_sent() -> None:
    c = ScriptedCluster(3)
    r = _vote(c, "n2", VoteRequest("n1", "n2", 1, 0, 0))
    assert r.granted
    # What n2's disk held when the grant left: a crash right after sending must not forget the vote.
    hs = c["n2"].durable_at_send[c["n2"].sent.index(r)]
    assert (hs.term, hs.vote) == (1, "n1")


def test_compacted_voter_rejects_stale_candidates_and_grants_up_to_date_ones() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    for i in range(5):
        c.propose(ld.id, bytes([i]))
    c.run(0.1)
    f = next(n for n in c.live() if n is not ld)
    idx = f.c.log.applied
    f.c.publish_snapshot(idx, b"state", c.now)
    c.pump(f.id)
    term = f.c.term
    assert f.c.log.snap_index == idx
    assert not _vote(c, f.id, VoteRequest("n9", f.id, term + 1, idx - 1, term)).granted
    f.c.vote = None
    assert _vote(c, f.id, VoteRequest("n8", f.id, term + 1, idx, term)).granted


def test_partitioned_leader_steps_down_within_one_election_timeout_at_the_same_term() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    term = ld.c.term
    c.isolate(ld.id)
    c.run(2.1 * c.cfg.election_timeout_min)
    assert ld.c.role == Role.FOLLOWER and ld.c.term == term
    assert ld.c.last_stepdown_reason == "lost_quorum"


def test_connected_leader_never_steps_down() -> None:
    c = ScriptedCluster(5)
    ld = c.wait_leader()
    c.run(50 * c.cfg.election_timeout_min)
    assert ld.c.role == Role.LEADER and ld.c.stats["stepdowns"] == 0


def test_single_voter_never_steps_down() -> None:
    c = ScriptedCluster(1)
    ld = c.wait_leader()
    c.run(50 * c.cfg.election_timeout_min)
    assert ld.c.role == Role.LEADER


def test_rejected_append_responses_count_as_contact_for_check_quorum() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    # Followers whose every reply is a rejection still prove they are alive.
    from warpmesh.raft.messages import AppendResponse

    def reject_all(m):  # type: ignore[no-untyped-def]
        if isinstance(m, AppendResponse):
            return AppendResponse(m.frm, m.to, m.term, 0, True, 0, 0)
        return m

    c.filters.append(reject_all)
    c.run(10 * c.cfg.election_timeout_min)
    assert ld.c.role == Role.LEADER


def test_heal_after_stepdown_rejoins_as_follower_without_term_inflation() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    elected = ld.c.term
    c.isolate(ld.id)
    c.run(20 * c.cfg.election_timeout_max)
    assert ld.c.term == elected  # stepped down but PreVote kept it from bumping its term
    c.heal()
    new = c.wait_leader()
    c.run(0.5)
    assert all(n.c.term == elected + 1 for n in c.live())
    assert new.id != ld.id or new.c.term == elected + 1


def test_restarted_node_keeps_term_and_vote() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    term, vote = ld.c.term, ld.c.vote
    core = c.restart(ld.id)
    assert (core.term, core.vote) == (term, vote)
