"""Membership changes (dissertation §4): joint consensus, learners, catch-up before promotion,
removal of the leader, one change at a time, and the quorum math behind them.

Ported from the reference's MembershipTest, OneChangeAtATimeGuardTest, JointSupersessionTest,
LeaderInheritsCommittedJointTest, LearnerTest and MembershipStateTest.
"""

from __future__ import annotations

from warpmesh.raft.config import RaftConfig
from warpmesh.raft.errors import CatchUpTimeout, MembershipChangeInProgress, NotLeader
from warpmesh.raft.membership import Membership, VoteOutcome, majority_index
from warpmesh.raft.messages import AppendEntries
from warpmesh.raft.testing import ScriptedCluster
from warpmesh.raft.types import EntryKind, Role


def change(c: ScriptedCluster, leader: str, voters: set[str], learners: set[str] = frozenset(),  # type: ignore[assignment]
           rid: str = "m", timeout: float = 5.0) -> Membership:
    c[leader].c.change_membership(rid, voters, learners, c.now)
    c.pump(leader)
    c.run_until(lambda: c[leader].completion("membership", rid) is not None, timeout)
    done = c[leader].completion("membership", rid)
    assert done is not None
    if done.error is not None:
        raise done.error
    return done.value


def configs_seen(node) -> list[Membership]:  # type: ignore[no-untyped-def]
    return [Membership.from_bytes(e.data) for e in node.applied if e.kind == EntryKind.CONFIG]


def test_add_learner_receives_committed_entries_and_is_excluded_from_quorum() -> None:
    c = ScriptedCluster(["n1", "n2", "n3", "n4"], voters=["n1", "n2", "n3"])
    ld = c.elect("n1")
    change(c, ld.id, {"n1", "n2", "n3"}, {"n4"})
    assert c["n4"].c.role == Role.LEARNER
    c.crash("n2")
    c.crash("n3")
    key = c.propose("n1", b"x")
    c.run(0.3)
    assert c["n4"].c.log.last_index() >= ld.c.log.last_index()  # replicated to the learner...
    assert ld.completion("propose", key) is None  # ...but the learner is not a quorum with n1


def test_followers_also_see_the_config_change() -> None:
    c = ScriptedCluster(["n1", "n2", "n3", "n4"], voters=["n1", "n2", "n3"])
    c.elect("n1")
    change(c, "n1", {"n1", "n2", "n3"}, {"n4"})
    c.run(0.1)
    assert all(c[n].c.membership.learners == {"n4"} for n in ("n2", "n3"))


def test_change_membership_on_a_follower_is_refused_with_not_leader() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    f.c.change_membership("m", {"n1"}, (), c.now)
    c.pump(f.id)
    err = f.completion("membership", "m").error  # type: ignore[union-attr]
    assert isinstance(err, NotLeader) and err.leader == ld.id


def test_change_to_an_empty_voter_set_is_refused() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    ld.c.change_membership("m", set(), {"n1"}, c.now)
    c.pump(ld.id)
    assert ld.completion("membership", "m").error is not None  # type: ignore[union-attr]


def test_grow_three_voters_to_five_via_joint_consensus() -> None:
    c = ScriptedCluster(5, voters=["n1", "n2", "n3"])
    c.elect("n1")
    m = change(c, "n1", {"n1", "n2", "n3", "n4", "n5"})
    assert m.voters == {"n1", "n2", "n3", "n4", "n5"} and not m.joint
    seen = configs_seen(c["n1"])
    assert any(x.joint for x in seen)  # went through C_old,new
    assert seen[0].learners == {"n4", "n5"}  # new voters joined as learners first (§4.2.1)
    c.crash("n2")
    c.crash("n3")
    key = c.propose("n1", b"five")  # n1, n4, n5 are a majority of five
    c.run(0.2)
    assert c["n1"].completion("propose", key) is not None


def test_promote_learner_to_voter_leaves_the_learner_role_and_joins_quorum() -> None:
    c = ScriptedCluster(["n1", "n2", "n3"], voters=["n1", "n2"], learners=["n3"])
    c.elect("n1")
    assert c["n3"].c.role == Role.LEARNER
    change(c, "n1", {"n1", "n2", "n3"})
    assert c["n3"].c.role == Role.FOLLOWER
    c.crash("n2")
    key = c.propose("n1", b"q")
    c.run(0.2)
    assert c["n1"].completion("propose", key) is not None


def test_shrink_five_to_three_removed_voters_drop_from_quorum() -> None:
    c = ScriptedCluster(5)
    c.elect("n1")
    change(c, "n1", {"n1", "n2", "n3"})
    c.crash("n4")
    c.crash("n5")
    c.crash("n3")
    key = c.propose("n1", b"x")  # n1 + n2 of three
    c.run(0.2)
    assert c["n1"].completion("propose", key) is not None


def test_replace_a_voter() -> None:
    c = ScriptedCluster(4, voters=["n1", "n2", "n3"])
    c.elect("n1")
    m = change(c, "n1", {"n1", "n2", "n4"})
    assert m.voters == {"n1", "n2", "n4"}
    c.crash("n2")
    key = c.propose("n1", b"x")
    c.run(0.2)
    assert c["n1"].completion("propose", key) is not None


def test_removing_the_leader_steps_it_down_and_the_survivors_elect() -> None:
    c = ScriptedCluster(3)
    c.elect("n1")
    change(c, "n1", {"n2", "n3"})
    assert c["n1"].c.role != Role.LEADER and c["n1"].c.last_stepdown_reason == "removed_from_config"
    new = c.wait_leader()
    assert new.id in ("n2", "n3")
    # The hand-off was immediate: the removed leader sent TimeoutNow to the caught-up voter.
    assert new.c.term == c["n1"].c.term or new.c.stats["timeout_now"] == 1
    key = c.propose(new.id, b"after")
    c.run(0.2)
    assert new.completion("propose", key) is not None


def test_crash_of_the_leader_mid_joint_survivors_converge_without_split_brain() -> None:
    c = ScriptedCluster(5, voters=["n1", "n2", "n3"], seed=3)
    ld = c.elect("n1")
    change(c, "n1", {"n1", "n2", "n3"}, {"n4", "n5"})
    c.filters.append(lambda m: m if not (isinstance(m, AppendEntries) and m.frm == "n1" and any(
        e.kind == EntryKind.CONFIG and Membership.from_bytes(e.data).joint for e in m.entries)) else None)
    ld.c.change_membership("grow", {"n1", "n2", "n3", "n4", "n5"}, (), c.now)
    c.pump("n1")
    c.run(0.1)
    assert ld.c.membership.joint  # only the leader has the joint entry
    c.crash("n1")
    c.heal()
    new = c.wait_leader()
    c.run(0.5)
    assert new.id != "n1" and not new.c.membership.joint
    assert new.c.membership.voters == {"n1", "n2", "n3"}  # the joint never committed: rolled back


def test_follower_adopts_an_uncommitted_joint_and_rolls_back_when_it_is_overwritten() -> None:
    c = ScriptedCluster(5)
    ld = c.elect("n1")
    # Only n2 receives the joint entry of "remove n5".
    c.filters.append(lambda m: None if m.frm == "n1" and m.to != "n2" else m)
    ld.c.change_membership("shrink", {"n1", "n2", "n3", "n4"}, (), c.now)
    c.pump("n1")
    c.run_until(lambda: c["n2"].c.membership.joint, 2.0)
    c.crash("n1")
    c.heal()
    c.isolate("n2")
    new = c.wait_leader()
    assert new.id in ("n3", "n4", "n5")
    c.propose(new.id, b"overwrite")
    c.heal()
    c.run(0.5)
    assert not c["n2"].c.membership.joint
    assert c["n2"].c.membership.voters == {"n1", "n2", "n3", "n4", "n5"}
    assert c["n2"].commands() == [b"overwrite"]


def test_only_one_change_at_a_time() -> None:
    c = ScriptedCluster(5, voters=["n1", "n2", "n3"])
    ld = c.elect("n1")
    ld.c.change_membership("a", {"n1", "n2", "n3"}, {"n4"}, c.now)
    ld.c.change_membership("b", {"n1", "n2", "n3"}, {"n5"}, c.now)
    c.pump("n1")
    err = ld.completion("membership", "b").error  # type: ignore[union-attr]
    assert isinstance(err, MembershipChangeInProgress)
    c.run(0.2)
    assert ld.completion("membership", "a").error is None  # type: ignore[union-attr]


def test_an_inherited_uncommitted_config_entry_refuses_the_next_change() -> None:
    c = ScriptedCluster(5, voters=["n1", "n2", "n3"])
    ld = c.elect("n1")
    c.isolate("n2")
    c.isolate("n3")
    ld.c.change_membership("a", {"n1", "n2", "n3"}, {"n4"}, c.now)
    c.pump("n1")
    ld.c.change_membership("b", {"n1", "n2", "n3"}, {"n5"}, c.now)
    c.pump("n1")
    assert isinstance(ld.completion("membership", "b").error, MembershipChangeInProgress)  # type: ignore[union-attr]


def test_config_change_pending_covers_in_flight_and_uncommitted_changes() -> None:
    # The public accessor the game steward plans from: True from the request until C_new commits,
    # on the leader and on a follower holding an uncommitted configuration entry.
    c = ScriptedCluster(5, voters=["n1", "n2", "n3"])
    ld = c.elect("n1")
    assert not ld.c.config_change_pending
    c.isolate("n3")
    c.blocked.add(("n2", "n1"))  # n2 gets the configuration entry but its acks are lost
    ld.c.change_membership("a", {"n1", "n2", "n3"}, {"n4"}, c.now)
    assert ld.c.config_change_pending
    c.pump("n1")
    c.run(0.2)
    assert ld.c.config_change_pending and ld.completion("membership", "a") is None
    # n2 runs no change itself and is not joint: only its uncommitted entry makes it pending.
    assert c["n2"].c.conf_change is None and c["n2"].c.config_change_pending
    c.heal()
    c.run_until(lambda: ld.completion("membership", "a") is not None, 5.0)
    c.run(0.2)
    assert not ld.c.config_change_pending and not c["n2"].c.config_change_pending


def test_leader_elected_with_a_committed_joint_appends_c_new_and_settles() -> None:
    c = ScriptedCluster(5, voters=["n1", "n2", "n3"])
    ld = c.elect("n1")
    change(c, "n1", {"n1", "n2", "n3"}, {"n4", "n5"})
    # Let the joint commit everywhere but stop the leader's C_new from leaving n1.
    def no_cnew(m):  # type: ignore[no-untyped-def]
        if isinstance(m, AppendEntries) and m.frm == "n1":
            m.entries = [e for e in m.entries if not (e.kind == EntryKind.CONFIG
                                                        and not Membership.from_bytes(e.data).joint)]
        return m

    c.filters.append(no_cnew)
    ld.c.change_membership("grow", {"n1", "n2", "n3", "n4", "n5"}, (), c.now)
    c.pump("n1")
    c.run_until(lambda: c["n2"].c.membership.joint and c["n2"].c.commit >= max(
        i for i, m in c["n2"].c.config_entries if m.joint), 3.0)
    c.crash("n1")
    c.heal()
    new = c.wait_leader()
    c.run(0.3)
    assert not new.c.membership.joint and new.c.membership.voters == {"n1", "n2", "n3", "n4", "n5"}


def test_a_learner_that_cannot_catch_up_is_not_promoted() -> None:
    cfg = RaftConfig(election_timeout_min=0.1, election_timeout_max=0.2, heartbeat_interval=0.02,
                     catchup_timeout=0.5)
    c = ScriptedCluster(4, voters=["n1", "n2", "n3"], config=cfg)
    c.elect("n1")
    change(c, "n1", {"n1", "n2", "n3"}, {"n4"})
    c.isolate("n4")
    c.propose("n1", b"more")
    c["n1"].c.change_membership("p", {"n1", "n2", "n3", "n4"}, (), c.now)
    c.pump("n1")
    c.run(1.0)
    err = c["n1"].completion("membership", "p").error  # type: ignore[union-attr]
    assert isinstance(err, CatchUpTimeout)
    assert c["n1"].c.membership.voters == {"n1", "n2", "n3"}


def test_learner_never_becomes_leader_and_its_proposals_are_forwarded() -> None:
    c = ScriptedCluster(["n1", "n2", "n3"], voters=["n1", "n2"], learners=["n3"])
    c.run(3.0)
    assert c["n3"].c.role == Role.LEARNER and c["n3"].c.term <= max(
        c["n1"].c.term, c["n2"].c.term)
    key = c.propose("n3", b"from-learner")
    c.run(0.3)
    assert c["n3"].completion("propose", key) is not None
    assert all(n.commands() == [b"from-learner"] for n in c.live())


def test_learner_catches_up_after_a_partition() -> None:
    c = ScriptedCluster(["n1", "n2", "n3"], voters=["n1", "n2"], learners=["n3"])
    c.elect("n1")
    c.isolate("n3")
    for i in range(10):
        c.propose("n1", bytes([i]))
    c.heal()
    c.run(0.3)
    assert c["n3"].commands() == [bytes([i]) for i in range(10)]


# -- quorum math (MembershipStateTest) ------------------------------------------------------

def test_majority_index_of_one_two_three_and_five_voters() -> None:
    m = {"a": 5, "b": 3, "c": 9, "d": 1, "e": 7}
    assert majority_index(["a"], m.__getitem__) == 5
    assert majority_index(["a", "b"], m.__getitem__) == 3
    assert majority_index(["a", "b", "c"], m.__getitem__) == 5
    assert majority_index(["a", "b", "c", "d", "e"], m.__getitem__) == 5


def test_joint_committed_index_is_the_minimum_of_both_majorities() -> None:
    j = Membership(frozenset({"a", "b", "c"}), frozenset(), frozenset({"c", "d", "e"}))
    match = {"a": 10, "b": 10, "c": 4, "d": 2, "e": 2}
    assert j.committed_index(match.__getitem__) == 2
    match["d"] = 8
    assert j.committed_index(match.__getitem__) == 8 if match["c"] >= 8 else 4


def test_joint_votes_need_both_majorities() -> None:
    j = Membership(frozenset({"a", "b", "c"}), frozenset(), frozenset({"c", "d", "e"}))
    assert j.vote_outcome({"a": True, "b": True}) == VoteOutcome.PENDING
    assert j.vote_outcome({"a": True, "b": True, "d": True, "e": True}) == VoteOutcome.WON
    assert j.vote_outcome({"d": False, "e": False}) == VoteOutcome.LOST


def test_replication_and_election_targets() -> None:
    j = Membership(frozenset({"a", "b"}), frozenset({"l"}), frozenset({"a", "c"}))
    assert j.members == {"a", "b", "c", "l"} and j.all_voters == {"a", "b", "c"}
    assert j.is_voter("c") and not j.is_voter("l") and j.is_learner("l")
    assert Membership.of(["a"], ["a"]).learners == frozenset()  # voter wins over learner


def test_self_is_quorum_only_when_alone_in_every_set() -> None:
    assert Membership.of(["a"]).self_is_quorum("a")
    assert not Membership.of(["a", "b"]).self_is_quorum("a")
    shrinking = Membership(frozenset({"a"}), frozenset(), frozenset({"a", "b", "c"}))
    assert not shrinking.self_is_quorum("a")  # the old majority still counts


def test_membership_round_trips_and_rejects_malformed_encodings() -> None:
    j = Membership(frozenset({"a", "b"}), frozenset({"l"}), frozenset({"a", "c"}))
    assert Membership.from_bytes(j.to_bytes()) == j
    import pytest

    for bad in (b"\x00", b"\x93\x91\xa1a\x91\xa1a\xc0"):  # garbage; a node both voter and learner
        with pytest.raises(ValueError):
            Membership.from_bytes(bad)
