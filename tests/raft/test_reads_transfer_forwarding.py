"""Linearizable reads (dissertation §6.4), leadership transfer (§3.10), and proposals from any node
with forwarding and retry under the same dedup key (§6.3).

Ported from the reference's ReadIndexTest, ReadIndexRoundClampTest, LeadershipTransferTest,
LeadershipTransferMachineTest, RaftProposeForwardingTest, ForwardResponseProvenanceTest and
RaftEngineDedupIntegrationTest, plus what the reference lacks (a read starts its heartbeat round at
once; follower reads; lease reads; forwards retried when the leader dies).
"""

from __future__ import annotations

from warpmesh.raft.config import RaftConfig
from warpmesh.raft.errors import NotLeader, TransferFailed
from warpmesh.raft.membership import Membership
from warpmesh.raft.messages import (
    FWD_NOT_LEADER,
    AppendEntries,
    Forward,
    ForwardResponse,
    Heartbeat,
    HeartbeatResponse,
    TimeoutNow,
)
from warpmesh.raft.testing import ScriptedCluster
from warpmesh.raft.types import DedupKey, EntryKind, Role


def read(c: ScriptedCluster, nid: str, rid: int) -> int | None:
    c[nid].c.read_index(rid, c.now)
    c.pump(nid)
    c.deliver()
    done = c[nid].completion("read", rid)
    return None if done is None else done.value


# -- reads ---------------------------------------------------------------------------------

def test_read_index_reflects_the_committed_write_without_a_log_entry() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    key = c.propose(ld.id, b"w")
    c.run(0.05)
    widx = ld.completion("propose", key).value[0]  # type: ignore[union-attr]
    last = ld.c.log.last_index()
    assert read(c, ld.id, 1) == widx
    assert ld.c.log.last_index() == last


def test_a_read_starts_its_heartbeat_round_at_once() -> None:
    """The reference waits for the next heartbeat tick; here no time passes at all."""
    cfg = RaftConfig(election_timeout_min=1.0, election_timeout_max=2.0, heartbeat_interval=0.5)
    c = ScriptedCluster(3, config=cfg)
    ld = c.wait_leader()
    c.run(0.01)
    t = c.now
    assert read(c, ld.id, 7) == ld.c.commit and c.now == t


def test_concurrent_reads_share_one_heartbeat_round() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    c.run(0.01)
    before = len([m for m in c.delivered if isinstance(m, Heartbeat)])
    for rid in range(10):
        ld.c.read_index(rid, c.now)
    c.pump(ld.id)
    c.deliver()
    hbs = len([m for m in c.delivered if isinstance(m, Heartbeat)]) - before
    assert hbs == 2 and all(ld.completion("read", r) is not None for r in range(10))


def test_single_voter_read_returns_immediately() -> None:
    c = ScriptedCluster(1)
    ld = c.wait_leader()
    assert read(c, ld.id, 1) == ld.c.commit


def test_a_fresh_leader_answers_reads_only_after_its_noop_commits() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    c.crash(ld.id)
    c.run(0.01)
    new_id = next(n.id for n in c.live())
    core = c[new_id].c
    for n in c.live():
        n.c.quiet_until = c.now
        n.c.leader_contact = float("-inf")
    c.filters.append(lambda m: None if isinstance(m, AppendEntries) else m)  # the no-op cannot commit
    core.election_deadline = c.now
    core.tick(c.now)
    c.pump(new_id)
    c.run_until(lambda: core.role == Role.LEADER, 2.0)
    assert read(c, new_id, 1) is None and core.reads_waiting_noop
    c.filters.clear()
    c.run(0.1)
    assert c[new_id].completion("read", 1).value >= core.noop_index  # type: ignore[union-attr]


def test_acks_of_an_earlier_round_do_not_confirm_a_read() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    c.run(0.01)
    c.filters.append(lambda m: None if isinstance(m, HeartbeatResponse) else m)
    ld.c.read_index(1, c.now)
    c.pump(ld.id)
    c.deliver()
    old_round = ld.c.round - 1
    for p in ld.c.prs:
        ld.c.step(HeartbeatResponse(p, ld.id, ld.c.term, old_round), c.now)  # a slipped round
    c.pump(ld.id)
    assert ld.completion("read", 1) is None
    ld.c.step(HeartbeatResponse(next(iter(ld.c.prs)), ld.id, ld.c.term, ld.c.round + 5), c.now)
    assert ld.completion("read", 1) is None  # a forged future round confirms nothing
    ld.c.step(HeartbeatResponse(next(iter(ld.c.prs)), ld.id, ld.c.term, ld.c.round), c.now)
    c.pump(ld.id)
    assert ld.completion("read", 1) is not None


def test_a_partitioned_leader_cannot_confirm_reads() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    c.isolate(ld.id)
    assert read(c, ld.id, 1) is None
    c.run(0.05)
    assert ld.completion("read", 1) is None


def test_follower_reads_are_confirmed_by_the_leader() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    key = c.propose(ld.id, b"w")
    c.run(0.05)
    f = next(n for n in c.live() if n is not ld)
    assert read(c, f.id, 3) == ld.completion("propose", key).value[0]  # type: ignore[union-attr]


def test_a_read_on_a_leader_that_steps_down_moves_to_the_next_leader() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    c.filters.append(lambda m: None if isinstance(m, HeartbeatResponse) else m)
    ld.c.read_index(9, c.now)
    c.pump(ld.id)
    c.deliver()
    c.heal()
    c.isolate(ld.id)
    c.run(1.0)  # it steps down (CheckQuorum); the others elect a new leader
    c.heal()
    c.run(1.0)
    done = ld.completion("read", 9)
    assert done is not None and done.error is None


def test_joint_reads_need_both_majorities() -> None:
    c = ScriptedCluster(5)
    ld = c.elect("n1")
    ld.c.membership = Membership(frozenset({"n1", "n2", "n3"}), frozenset(), frozenset({"n1", "n4", "n5"}))
    c.isolate("n4")
    c.isolate("n5")
    assert read(c, "n1", 1) is None  # n1,n2,n3 confirm the new half only
    c.heal()
    c.run(0.05)
    assert ld.completion("read", 1) is not None


def test_lease_reads_answer_without_a_round_while_the_lease_holds() -> None:
    cfg = RaftConfig(election_timeout_min=0.3, election_timeout_max=0.6, heartbeat_interval=0.05,
                     lease_read=True, lease_drift=0.1)
    c = ScriptedCluster(3, config=cfg)
    ld = c.wait_leader()
    c.run(0.1)
    hb = len([m for m in c.delivered if isinstance(m, Heartbeat)])
    assert read(c, ld.id, 1) == ld.c.commit
    assert len([m for m in c.delivered if isinstance(m, Heartbeat)]) == hb
    assert ld.c.stats["lease_reads"] == 1
    c.isolate(ld.id)
    c.run(cfg.lease_duration + 0.01)
    assert read(c, ld.id, 2) is None  # lease expired: it must confirm again, and cannot
    assert cfg.lease_duration < cfg.election_timeout_min


# -- leadership transfer ------------------------------------------------------------------

def transfer(c: ScriptedCluster, leader: str, target: str, rid: str = "t", run: float = 1.0):  # type: ignore[no-untyped-def]
    c[leader].c.transfer_leadership(rid, target, c.now)
    c.pump(leader)
    c.run(run)
    return c[leader].completion("transfer", rid)


def test_transfer_hands_leadership_to_the_target() -> None:
    c = ScriptedCluster(3)
    ld = c.elect("n1")
    done = transfer(c, ld.id, "n3")
    assert done is not None and done.error is None and done.value == "n3"
    assert c["n3"].c.role == Role.LEADER and c["n3"].c.stats["timeout_now"] == 1


def test_transfer_with_two_voters() -> None:
    c = ScriptedCluster(2)
    c.elect("n1")
    assert transfer(c, "n1", "n2").error is None  # type: ignore[union-attr]


def test_proposals_during_a_transfer_are_held_and_commit_under_the_new_leader() -> None:
    c = ScriptedCluster(3)
    c.elect("n1")
    c["n1"].c.transfer_leadership("t", "n2", c.now)
    key = c["n1"].c.propose(b"during", c.now)
    c.pump("n1")
    c.run(1.0)
    assert c["n1"].completion("propose", key) is not None
    assert c["n2"].c.role == Role.LEADER and all(n.commands() == [b"during"] for n in c.live())


def test_an_unreachable_target_times_out_and_the_leader_resumes() -> None:
    c = ScriptedCluster(3)
    c.elect("n1")
    c.isolate("n3")
    done = transfer(c, "n1", "n3", run=2 * c.cfg.transfer_timeout_s)
    assert isinstance(done.error, TransferFailed) and "timed out" in str(done.error)  # type: ignore[union-attr]
    assert c["n1"].c.role == Role.LEADER
    key = c.propose("n1", b"again")
    c.run(0.1)
    assert c["n1"].completion("propose", key) is not None


def test_cancel_transfer() -> None:
    c = ScriptedCluster(3)
    c.elect("n1")
    c.isolate("n3")
    c["n1"].c.transfer_leadership("t", "n3", c.now)
    c["n1"].c.cancel_transfer(c.now)
    c.pump("n1")
    assert "cancelled" in str(c["n1"].completion("transfer", "t").error)  # type: ignore[union-attr]
    assert c["n1"].c.transfer is None


def test_transfer_refusals() -> None:
    c = ScriptedCluster(["n1", "n2", "n3", "n4"], voters=["n1", "n2", "n3"], learners=["n4"])
    c.elect("n1")
    c["n2"].c.transfer_leadership("a", "n3", c.now)
    c["n1"].c.transfer_leadership("b", "n4", c.now)
    c["n1"].c.transfer_leadership("c", "n1", c.now)
    c.pump("n1")
    c.pump("n2")
    assert isinstance(c["n2"].completion("transfer", "a").error, NotLeader)  # type: ignore[union-attr]
    assert isinstance(c["n1"].completion("transfer", "b").error, TransferFailed)  # type: ignore[union-attr]
    assert c["n1"].completion("transfer", "c").value == "n1"  # type: ignore[union-attr]


def test_timeout_now_is_withheld_until_the_target_has_the_whole_log() -> None:
    c = ScriptedCluster(4)
    c.elect("n1")
    c.isolate("n4")
    for i in range(5):
        c.propose("n1", bytes([i]))
    c["n1"].c.transfer_leadership("t", "n4", c.now)
    c.pump("n1")
    c.run(0.1)
    assert not [m for m in c["n1"].sent if isinstance(m, TimeoutNow)]
    c.heal()
    c.run(1.0)
    assert c["n4"].c.role == Role.LEADER  # with n=4 it also had to bypass stickiness
    assert c["n1"].completion("transfer", "t").error is None  # type: ignore[union-attr]


def test_timeout_now_from_a_non_leader_or_to_a_learner_is_ignored() -> None:
    c = ScriptedCluster(["n1", "n2", "n3", "n4"], voters=["n1", "n2", "n3"], learners=["n4"])
    c.elect("n1")
    t = c["n2"].c.term
    c["n2"].c.step(TimeoutNow("n3", "n2", t), c.now)
    c["n4"].c.step(TimeoutNow("n1", "n4", t), c.now)
    assert c["n2"].c.role == Role.FOLLOWER and c["n4"].c.role == Role.LEARNER
    assert c["n2"].c.stats["refused:timeout_now_not_leader"] == 1
    assert c["n4"].c.stats["refused:timeout_now_role"] == 1


def test_membership_change_during_a_transfer_is_refused_and_vice_versa() -> None:
    c = ScriptedCluster(4, voters=["n1", "n2", "n3"])
    c.elect("n1")
    c.isolate("n3")
    c["n1"].c.transfer_leadership("t", "n3", c.now)
    c["n1"].c.change_membership("m", {"n1", "n2"}, (), c.now)
    c.pump("n1")
    assert c["n1"].completion("membership", "m").error is not None  # type: ignore[union-attr]
    c["n1"].c.cancel_transfer(c.now)
    c.heal()
    c["n1"].c.change_membership("m2", {"n1", "n2", "n3"}, {"n4"}, c.now)
    c["n1"].c.transfer_leadership("t2", "n2", c.now)
    c.pump("n1")
    assert isinstance(c["n1"].completion("transfer", "t2").error, TransferFailed)  # type: ignore[union-attr]


def test_no_committed_entry_is_lost_across_transfers() -> None:
    c = ScriptedCluster(3)
    c.elect("n1")
    for i in range(3):
        c.propose(c.leader().id, bytes([i]))  # type: ignore[union-attr]
        ld = c.leader()
        target = next(n for n in ("n1", "n2", "n3") if n != ld.id)  # type: ignore[union-attr]
        transfer(c, ld.id, target, rid=f"t{i}")  # type: ignore[union-attr]
    c.run(0.3)
    assert all(n.commands() == [bytes([i]) for i in range(3)] for n in c.live())


# -- proposals from any node --------------------------------------------------------------

def test_a_follower_forwards_its_proposal_and_sees_it_commit_locally() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    f = next(n for n in c.live() if n is not ld)
    key = c.propose(f.id, b"fwd")
    c.run(0.05)
    done = f.completion("propose", key)
    assert done is not None and f.commands() == [b"fwd"]  # read-your-writes on the follower
    assert [m for m in c.delivered if isinstance(m, Forward)]


def test_a_proposal_made_before_any_leader_exists_waits_then_commits() -> None:
    c = ScriptedCluster(3)
    key = c.propose("n2", b"early")
    c.run(2.0)
    assert c["n2"].completion("propose", key) is not None


def test_a_forward_lost_with_a_crashed_leader_is_retried_under_the_same_key() -> None:
    c = ScriptedCluster(3)
    ld = c.elect("n1")
    f = c["n2"]
    c.filters.append(lambda m: None if isinstance(m, Forward) else m)
    key = c.propose(f.id, b"retry-me")
    c.crash(ld.id)
    c.heal()
    c.run(2.0)
    done = f.completion("propose", key)
    assert done is not None and done.error is None
    ents = [e for e in c[c.leader().id].c.log.entries if e.data == b"retry-me"]  # type: ignore[union-attr]
    assert ents and all(e.key == key for e in ents)


def test_a_retried_key_already_in_the_leader_log_is_appended_once() -> None:
    c = ScriptedCluster(3)
    ld = c.elect("n1")
    key = DedupKey("client-x", 1, 1)
    c.isolate("n3")
    c.isolate("n2")
    ld.c.propose(b"once", c.now, key)
    ld.c.step(Forward("n2", "n1", ld.c.term, [(b"once", "client-x", 1, 1)]), c.now)
    c.pump("n1")
    c.heal()
    c.run(0.2)
    assert [e.data for e in ld.applied if e.kind == EntryKind.NORMAL] == [b"once"]


def test_a_retried_key_that_already_committed_is_answered_not_appended() -> None:
    c = ScriptedCluster(3)
    ld = c.elect("n1")
    c.propose("n1", b"done", DedupKey("client-y", 1, 1))
    c.run(0.1)
    ld.c.step(Forward("n2", "n1", ld.c.term, [(b"done", "client-y", 1, 1)]), c.now)
    c.pump("n1")
    resp = [m for m in ld.sent if isinstance(m, ForwardResponse)][-1]
    assert resp.results[0][2] == 2  # FWD_COMMITTED, with the index
    assert [e.data for e in ld.applied if e.kind == EntryKind.NORMAL] == [b"done"]


def test_forward_responses_are_only_accepted_from_the_node_asked() -> None:
    c = ScriptedCluster(3)
    ld = c.elect("n1")
    f = c["n2"]
    c.filters.append(lambda m: None if isinstance(m, Forward) else m)
    key = c.propose(f.id, b"x")
    assert f.c.pending[(key.client, key.seq)].sent_to == ld.id
    f.c.step(ForwardResponse("n3", f.id, ld.c.term, [(key.client, key.seq, 2, 1)]), c.now)
    assert (key.client, key.seq) in f.c.pending  # ignored: n3 was never asked
    f.c.step(ForwardResponse("n1", f.id, ld.c.term, [(key.client, key.seq, FWD_NOT_LEADER, 0)]), c.now)
    assert f.c.pending[(key.client, key.seq)].sent_to is None  # re-sent after a short delay


def test_a_removed_node_refuses_new_proposals() -> None:
    c = ScriptedCluster(3)
    c.elect("n1")
    c["n1"].c.change_membership("m", {"n1", "n2"}, (), c.now)
    c.pump("n1")
    c.run(0.5)
    try:
        c["n3"].c.propose(b"x", c.now)
    except NotLeader as err:
        assert "removed" in str(err)
    else:
        raise AssertionError("a removed node accepted a proposal")


def _lease_scenario(lease_drift: float) -> tuple[int, int | None]:
    """n1 leads with a clock running at half speed; n2 and n3 run at 1.5x. n1 is cut off, the
    others elect a new leader and commit a write; then n1 is asked for a read index."""
    cfg = RaftConfig(election_timeout_min=0.1, election_timeout_max=0.2, heartbeat_interval=0.02,
                     lease_read=True, lease_drift=lease_drift)
    c = ScriptedCluster(3, config=cfg)
    c.rates = {"n1": 0.5, "n2": 1.5, "n3": 1.5}
    c.elect("n1")
    c.run(0.05)
    c.isolate("n1")
    new = c.wait_leader(timeout=2.0) if c.leader() is not c["n1"] else None
    deadline = c.now + 1.0
    while new is None or new.id == "n1":
        c.run(0.002)
        ld = [n for n in c.live() if n.id != "n1" and n.c.role == Role.LEADER]
        new = ld[0] if ld and ld[0].c.commit >= ld[0].c.noop_index else None
        assert c.now < deadline
    key = c.propose(new.id, b"acknowledged")
    c.run(0.004)
    widx = new.completion("propose", key).value[0]  # type: ignore[union-attr]
    c["n1"].c.read_index(99, c.t("n1"))
    c.pump("n1")
    done = c["n1"].completion("read", 99)
    return widx, (None if done is None else done.value)


def test_lease_reads_are_stale_when_clocks_drift_beyond_the_stated_bound() -> None:
    """The bound is not decorative: claim no drift while clocks differ 3x, and the old leader
    answers a read from its lease after a newer write was acknowledged elsewhere."""
    widx, ridx = _lease_scenario(lease_drift=0.0)
    assert ridx is not None and ridx < widx


def test_lease_reads_stay_linearizable_within_the_stated_bound() -> None:
    """The same clocks with lease_drift=0.5 (rates within 1 +/- 0.5): the old leader's lease has run
    out before anyone else can lead, so it cannot answer alone (and a partitioned leader never
    confirms a round)."""
    widx, ridx = _lease_scenario(lease_drift=0.5)
    assert ridx is None or ridx >= widx
