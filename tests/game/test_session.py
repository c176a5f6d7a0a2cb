"""Game sessions in the simulator: the reference's GameNodeTest, GameSessionTest,
GameReplacementTest and GameSpectateTest scenarios, plus one test per reference bug 17-19."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.game.conftest import committed_actions, keep, leader_of, play, until
from warpmesh.game import (
    DuplicateHostError,
    JoinTimeoutError,
    ReturnAt,
    RosterFullError,
    SpectatorsClosedError,
    game_host,
    game_join,
    game_node,
    game_spectate,
)
from warpmesh.game.session import APP_TAG, LIVENESS_TAG, PRESENCE_TAG, RAFT_TAG
from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.messages import AppendEntries, encode
from warpmesh.raft.turns import Reset, TurnSequencer
from warpmesh.raft.types import Entry, Role

# -- GameNodeTest ---------------------------------------------------------------------------------


def test_roster_of_two_converges_and_any_node_proposes() -> None:
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, seed=1), game_join(f.join("p2"), seed=2))
        keep(h, j)
        assert h.book.players == ["host", "p2"] and j.book.players == ["host", "p2"]
        assert h.raft.membership.value.voters == {"host", "p2"}
        await h.sequencer().propose(1)
        await j.sequencer().propose(2)  # forwarded to the leader
        assert await committed_actions(h, 2) == await committed_actions(j, 2) == [1, 2]

    play(body)


def test_roster_of_three_converges() -> None:
    async def body(f: MemoryFabric) -> None:
        ss = await asyncio.gather(game_host(f.join("host"), 3, seed=1), game_join(f.join("p2"), seed=2),
                                  game_join(f.join("p3"), seed=3))
        keep(*ss)
        for s in ss:
            assert s.book.players[0] == "host" and sorted(s.book.players) == ["host", "p2", "p3"]
        assert ss[0].raft.membership.value.voters == {"host", "p2", "p3"}

    play(body)


def test_game_join_returns_only_after_its_promotion_committed() -> None:
    # Reference bug 19: gameJoin returned when the joint was appended, not committed.
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, seed=1), game_join(f.join("p2"), seed=2))
        keep(h, j)
        m = j.raft.membership.value
        assert not m.joint and m.is_voter("p2")
        assert j.raft.commit_index.value >= j.raft.core.log.last_index() - 0  # the seat record applied
        assert "p2" in j.book.players and j.raft.applied_index.value >= 1

    play(body, faults=LinkFaults(delay=0.05))  # slow links: appended and committed are far apart


def test_latecomer_catches_up_from_the_log() -> None:
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, allow_spectators=True, max_spectators=1,
                                              seed=1), game_join(f.join("p2"), seed=2))
        keep(h, j)
        seq = h.sequencer()
        for i in range(10):
            await seq.propose(i)
        late = await game_spectate(f.join("late"), seed=3)
        keep(late)
        assert await committed_actions(late, 10) == list(range(10))
        assert late.book.players == ["host", "p2"]

    play(body)


def test_quorum_mode_returns_at_two_of_three_then_admits_the_latecomer() -> None:
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 3, return_at=ReturnAt.QUORUM, seed=1),
                                    game_join(f.join("p2"), seed=2))
        keep(h, j)
        assert h.book.players == ["host", "p2"]
        late = await game_join(f.join("p3"), seed=3)
        keep(late)
        assert late.book.players == ["host", "p2", "p3"]
        await until(lambda: h.raft.membership.value.voters == {"host", "p2", "p3"})

    play(body)


def test_roster_full_refuses_an_extra_joiner_with_advice() -> None:
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, seed=1), game_join(f.join("p2"), seed=2))
        keep(h, j)
        with pytest.raises(RosterFullError, match="watch instead"):
            await game_join(f.join("p3"), seed=3, timeout=10)
        assert h.raft.membership.value.voters == {"host", "p2"}

    play(body)


def test_join_times_out_without_a_host() -> None:
    async def body(f: MemoryFabric) -> None:
        with pytest.raises(JoinTimeoutError, match="is a host running"):
            await game_join(f.join("p2"), seed=2, timeout=2)

    play(body)


def test_a_durable_client_id_reaches_the_dedup_key() -> None:
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, seed=1), game_join(f.join("p2"), seed=2))
        keep(h, j)
        seq = j.sequencer(client_id="player-p2")
        turn = await seq.propose(7)
        assert turn.key is not None and turn.key.client == "player-p2"
        retry = await h.sequencer().propose(7, key=turn.key)  # the same request again
        assert retry.key == turn.key
        await h.sequencer().propose(8)
        assert await committed_actions(h, 2) == [7, 8]

    play(body)


def test_game_node_roster_given_elects_and_records_seats_in_id_order() -> None:
    async def body(f: MemoryFabric) -> None:
        ids = ["c", "a", "b"]
        ss = [await game_node(f.join(i), ids, seed=n) for n, i in enumerate(ids)]
        keep(*ss)
        await until(lambda: all(len(s.book.players) == 3 for s in ss), what="seats")
        assert ss[0].book.players == ["a", "b", "c"]
        leader_of(*ss)

    play(body)


def test_duplicate_host_lowest_id_wins() -> None:
    async def body(f: MemoryFabric) -> None:
        first = asyncio.ensure_future(game_host(f.join("alpha"), 2, seed=1))
        await asyncio.sleep(0.5)
        with pytest.raises(DuplicateHostError, match="alpha already hosts"):
            await game_host(f.join("beta"), 2, seed=2)
        j = await game_join(f.join("p2"), seed=3)
        h = await first
        keep(h, j)
        assert h.book.players == ["alpha", "p2"]

    play(body)


# -- GameSessionTest ------------------------------------------------------------------------------


def test_app_channels_round_trip_and_same_names_meet() -> None:
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, seed=1), game_join(f.join("p2"), seed=2))
        keep(h, j)
        chat_j, cursor_j = j.app_channel("chat").subscribe(), j.app_channel("cursor").subscribe()
        await h.app_channel("chat").broadcast(b"hi")
        await h.app_channel("cursor").send_to("p2", b"3,4")
        assert await chat_j.get() == ("host", b"hi")
        assert await cursor_j.get() == ("host", b"3,4")
        assert h.app_channel("chat") is h.app_channel("chat")
        with pytest.raises(ValueError):
            h.app_channel("")

    play(body)


def test_raft_is_unaffected_by_app_traffic() -> None:
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, seed=1), game_join(f.join("p2"), seed=2))
        keep(h, j)
        sub = j.app_channel("noise").subscribe()
        term = h.raft.term.value

        async def noise() -> None:
            for i in range(300):
                await h.app_channel("noise").broadcast(b"x" * 200 + bytes([i % 256]))

        async def turns() -> None:
            for i in range(20):
                await h.sequencer().propose(i)

        await asyncio.gather(noise(), turns())
        assert await committed_actions(j, 20) == list(range(20))
        assert h.raft.term.value == term and h.raft.role.value == Role.LEADER
        assert len(sub) > 0

    play(body)


def test_close_is_idempotent() -> None:
    async def body(f: MemoryFabric) -> None:
        h = await game_host(f.join("host"), 1, seed=1)
        await h.close()
        await h.close()
        assert h.raft.closed

    play(body)


def test_frames_on_other_mux_tags_do_not_reach_the_game() -> None:
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, seed=1), game_join(f.join("p2"), seed=2))
        keep(h, j)
        refused = sum(j.raft.stats.values())
        await f.seam("host").send_to("p2", bytes([0x21]) + b"\x01\x02garbage")  # a KV-channel frame
        await f.seam("host").send_to("p2", bytes([0x40]) + b"\xff\xffnot raft")  # a corrupt Raft frame
        await asyncio.sleep(0.5)
        await h.sequencer().propose(1)
        assert await committed_actions(j, 1) == [1]
        assert sum(j.raft.stats.values()) > refused

    play(body)


def test_a_forged_gossip_frame_never_reaches_the_raft_channel() -> None:
    # The reference's CommitSafetyLaunderingE2ETest: a hostile peer wraps a forged Raft
    # AppendEntries (a higher term, a turn nobody proposed, a commit index far ahead) in the
    # presence (gossip), app-channel and liveness tags. None of it may reach Raft: the term, the
    # leader and the committed turns stay exactly the real ones.
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, seed=1), game_join(f.join("p2"), seed=2))
        keep(h, j)
        await h.sequencer().propose("real-1")
        mallory = f.join("mallory")
        term, last = j.raft.term.value, j.raft.commit_index.value
        forged = encode(AppendEntries("mallory", "p2", term + 5, prev_index=last, prev_term=term,
                                      commit=last + 1, entries=[Entry(last + 1, term + 5, data=b"forged")]))
        chat = bytes((4,)) + b"chat"
        for tag, prefix in ((PRESENCE_TAG, b""), (APP_TAG, b""), (APP_TAG, chat), (LIVENESS_TAG, b"")):
            await mallory.send_to("p2", bytes((tag,)) + prefix + forged)
            await mallory.send_to("host", bytes((tag,)) + prefix + forged)
        await asyncio.sleep(1.0)
        await h.sequencer().propose("real-2")
        assert await committed_actions(j, 2) == ["real-1", "real-2"]
        assert j.raft.term.value == h.raft.term.value == term
        assert j.raft.leader.value == "host" and h.raft.role.value == Role.LEADER
        assert all(e.data != b"forged" for e in j.storage.load().entries)
        # Control: the very same bytes on the Raft tag do reach Raft (so the frame is potent and the
        # checks above are not vacuous): p2 adopts the forger's higher term.
        await mallory.send_to("p2", bytes((RAFT_TAG,)) + forged)
        await until(lambda: j.raft.term.value > term, timeout=2.0, what="the control frame to land")

    play(body)


# -- GameReplacementTest --------------------------------------------------------------------------


def test_a_lost_voter_is_replaced_by_a_waiting_joiner() -> None:
    async def body(f: MemoryFabric) -> None:
        ss = await asyncio.gather(game_host(f.join("host"), 3, seed=1), game_join(f.join("p2"), seed=2),
                                  game_join(f.join("p3"), seed=3))
        keep(*ss)
        waiting = asyncio.ensure_future(game_join(f.join("p4"), seed=4, timeout=30, wait_for_seat=True))
        await asyncio.sleep(1.0)
        assert not waiting.done()
        f.crash("p3")
        p4 = await waiting
        keep(p4)
        assert p4.book.players == ["host", "p2", "p4"]
        assert ("p3", "lost") in p4.book.gone
        assert ss[0].raft.membership.value.voters == {"host", "p2", "p4"}

    play(body)


def test_graceful_leave_frees_the_seat() -> None:
    async def body(f: MemoryFabric) -> None:
        ss = await asyncio.gather(game_host(f.join("host"), 3, seed=1), game_join(f.join("p2"), seed=2),
                                  game_join(f.join("p3"), seed=3))
        keep(*ss)
        await ss[2].leave()
        await until(lambda: ss[0].book.players == ["host", "p2"], what="p3 unseated")
        assert ("p3", "left") in ss[0].book.gone
        assert ss[0].raft.membership.value.voters == {"host", "p2"}

    play(body)


def test_a_two_player_game_lets_a_player_leave_gracefully() -> None:
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, seed=1), game_join(f.join("p2"), seed=2))
        keep(h, j)
        await j.leave()  # still running, so it votes for its own removal
        await until(lambda: h.book.players == ["host"], what="p2 unseated")
        assert h.raft.membership.value.voters == {"host"} and ("p2", "left") in h.book.gone

    play(body)


def test_the_host_can_leave_and_the_game_goes_on() -> None:
    async def body(f: MemoryFabric) -> None:
        ss = await asyncio.gather(game_host(f.join("host"), 3, seed=1), game_join(f.join("p2"), seed=2),
                                  game_join(f.join("p3"), seed=3))
        keep(*ss)
        await ss[1].sequencer().propose("before")
        await ss[0].leave()
        await until(lambda: ss[1].book.players == ["p2", "p3"], what="host unseated")
        await ss[2].sequencer().propose("after")
        assert await committed_actions(ss[1], 2) == ["before", "after"]

    play(body)


def test_a_transient_blip_does_not_evict() -> None:
    async def body(f: MemoryFabric) -> None:
        ss = await asyncio.gather(game_host(f.join("host"), 3, seed=1, seat_grace=3.0),
                                  game_join(f.join("p2"), seed=2), game_join(f.join("p3"), seed=3))
        keep(*ss)
        f.isolate("p3")
        await asyncio.sleep(1.5)  # shorter than the grace period
        f.heal()
        await asyncio.sleep(5.0)
        assert ss[0].book.players == ["host", "p2", "p3"] and ss[0].book.gone == []
        assert ss[0].raft.membership.value.voters == {"host", "p2", "p3"}

    play(body)


def test_roster_full_still_holds_with_liveness_running() -> None:
    async def body(f: MemoryFabric) -> None:
        ss = await asyncio.gather(game_host(f.join("host"), 2, seed=1), game_join(f.join("p2"), seed=2))
        keep(*ss)
        await asyncio.sleep(5.0)  # liveness rounds, nobody lost
        with pytest.raises(RosterFullError):
            await game_join(f.join("p3"), seed=3)

    play(body)


# -- GameSpectateTest -----------------------------------------------------------------------------


def test_a_spectator_follows_the_same_turns_and_is_never_promoted() -> None:
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, allow_spectators=True, max_spectators=2, seed=1),
                                    game_join(f.join("p2"), seed=2))
        keep(h, j)
        w = await game_spectate(f.join("watcher"), seed=3)
        keep(w)
        for i in range(5):
            await j.sequencer().propose(i)
        assert await committed_actions(w, 5) == list(range(5))
        await asyncio.sleep(3.0)
        m = h.raft.membership.value
        assert m.is_learner("watcher") and not m.is_voter("watcher") and w.raft.role.value == Role.LEARNER

    play(body)


def test_spectators_closed_when_not_allowed() -> None:
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, seed=1), game_join(f.join("p2"), seed=2))
        keep(h, j)
        with pytest.raises(SpectatorsClosedError, match="--spectators"):
            await game_spectate(f.join("w"), seed=3)

    play(body)


def test_max_spectators_is_enforced() -> None:
    async def body(f: MemoryFabric) -> None:
        h = await game_host(f.join("host"), 1, allow_spectators=True, max_spectators=1, seed=1)
        keep(h)
        w1 = await game_spectate(f.join("w1"), seed=2)
        keep(w1)
        with pytest.raises(SpectatorsClosedError):
            await game_spectate(f.join("w2"), seed=3)

    play(body)


def test_spectators_are_kept_when_a_voter_is_admitted_later() -> None:
    # Reference bug 17: admitting a voter after a spectator dropped the spectator from the learners.
    async def body(f: MemoryFabric) -> None:
        ht = asyncio.ensure_future(game_host(f.join("host"), 2, allow_spectators=True, max_spectators=1, seed=1))
        await asyncio.sleep(0.5)
        w = await game_spectate(f.join("watcher"), seed=3)
        j = await game_join(f.join("p2"), seed=2)
        h = await ht
        keep(h, j, w)
        m = h.raft.membership.value
        assert m.voters == {"host", "p2"} and m.is_learner("watcher")
        await h.sequencer().propose("x")
        assert await committed_actions(w, 1) == ["x"]

    play(body)


def test_a_crashed_spectator_is_removed() -> None:
    async def body(f: MemoryFabric) -> None:
        h = await game_host(f.join("host"), 1, allow_spectators=True, max_spectators=1, seed=1)
        keep(h)
        w = await game_spectate(f.join("w1"), seed=2)
        f.crash("w1")
        await w.close()
        await until(lambda: not h.raft.membership.value.is_learner("w1"), what="spectator removed")
        w2 = await game_spectate(f.join("w2"), seed=3)  # the place is free again
        keep(w2)

    play(body)


# -- reference bug 18 and 19 ----------------------------------------------------------------------


def test_two_voters_pause_with_a_clear_message_and_resume_when_the_player_returns() -> None:
    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, seed=1), game_join(f.join("p2"), seed=2))
        keep(h, j)
        f.isolate("p2")
        await until(lambda: any(s.paused.value for s in (h, j)), what="pause")
        msg = next(s.paused.value for s in (h, j) if s.paused.value)
        assert "witness" in msg and "p2" in msg
        f.heal()
        await until(lambda: h.raft.role.value == Role.LEADER or j.raft.role.value == Role.LEADER)
        await h.sequencer().propose("resumed", timeout=10)
        assert await committed_actions(j, 1) == ["resumed"]
        assert h.book.players == ["host", "p2"]

    play(body)


def test_a_witness_lets_a_two_player_game_survive_losing_a_peer() -> None:
    async def body(f: MemoryFabric) -> None:
        ht = asyncio.ensure_future(game_host(f.join("host"), 2, witness=True, seed=1))
        j = await game_join(f.join("p2"), seed=2)
        wit = await game_join(f.join("wit"), witness=True, seed=3)
        h = await ht
        keep(h, j, wit)
        await until(lambda: h.raft.membership.value.voters == {"host", "p2", "wit"}, what="witness voter")
        assert h.book.players == ["host", "p2"] and h.book.witnesses == ["wit"]
        await h.sequencer().propose(1)
        f.crash("host")
        await h.close()
        await j.sequencer().propose(2, timeout=15)
        assert await committed_actions(wit, 2) == [1, 2]

    play(body)


def test_a_second_host_never_admits_anyone() -> None:
    # Reference bug 19: a slow presence exchange could yield two singleton clusters. Here the
    # outranked host (beta) is the only one the joiners can reach at first, so it learns of them
    # long before alpha does: were it to admit anyone, it would get them.
    async def body(f: MemoryFabric) -> None:
        beta_seam = f.join("beta")
        raft_to_joiners: list[str] = []
        spoke = asyncio.Event()
        send = beta_seam.send_to

        async def spy(peer: str, data: bytes) -> None:
            if data[:1] == bytes([0x40]) and peer in ("p2", "p3"):  # the game's Raft channel
                raft_to_joiners.append(peer)
                spoke.set()
            await send(peer, data)

        beta_seam.send_to = spy  # type: ignore[method-assign]
        b = asyncio.ensure_future(game_host(beta_seam, 2, seed=2))
        await asyncio.sleep(0.2)
        # "alpha" arrives later and outranks beta: beta must stop admitting; joiners go to alpha.
        a = asyncio.ensure_future(game_host(f.join("alpha"), 3, seed=1, host_declaration_timeout=0.1))
        await asyncio.sleep(0.5)
        f.partition({"alpha"}, {"p2", "p3"})
        joins = asyncio.gather(game_join(f.join("p2"), seed=3, timeout=30, wait_for_seat=True),
                               game_join(f.join("p3"), seed=4, timeout=30, wait_for_seat=True),
                               return_exceptions=True)
        # Time for beta to admit both, were it to (a broken guard admits p2 about 3.3 s after it joins).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(spoke.wait(), 6.0)
        if raft_to_joiners:
            for t in (joins, a, b):
                t.cancel()
            await f.close()  # stop the two clusters fighting over the joiners before failing
            raise AssertionError(f"the outranked host spoke Raft to {raft_to_joiners[0]}")
        f.heal()
        j2, j3 = await joins
        alpha = await a
        keep(alpha, *[x for x in (j2, j3) if not isinstance(x, BaseException)])
        assert raft_to_joiners == [], "the outranked host spoke Raft to a joiner"
        # Only alpha's cluster admitted anyone: no joiner ended up in a cluster with beta.
        assert not isinstance(j2, BaseException) and not isinstance(j3, BaseException), (j2, j3)
        for x in (j2, j3):
            assert "beta" not in x.raft.membership.value.members
        assert alpha.raft.membership.value.voters == {"alpha", "p2", "p3"}
        b.cancel()

    play(body)


def test_an_eviction_lost_with_the_leader_is_finished_by_the_next_one() -> None:
    async def body(f: MemoryFabric) -> None:
        ss = await asyncio.gather(game_host(f.join("host"), 5, seed=1),
                                  *(game_join(f.join(f"p{i}"), seed=i) for i in range(2, 6)))
        keep(*ss)
        f.crash("p5")
        await ss[4].close()
        await until(lambda: ss[0].steward_steps[-1:] == ["evict p5"], what="eviction started")
        f.crash("host")  # the leader dies with the eviction (and the seat record) unfinished
        await ss[0].close()
        await until(lambda: ss[1].book.players == ["p2", "p3", "p4"], timeout=30, what="seats recorded lost")
        assert ss[1].raft.membership.value.voters == {"p2", "p3", "p4"}
        assert {p for p, _ in ss[1].book.gone} == {"host", "p5"}

    play(body)


def test_a_restarted_player_with_storage_resumes_its_seat() -> None:
    from warpmesh.raft.storage import InMemoryRaftStorage

    async def body(f: MemoryFabric) -> None:
        disk = InMemoryRaftStorage()
        ss = await asyncio.gather(game_host(f.join("host"), 3, seed=1), game_join(f.join("p2"), seed=2),
                                  game_join(f.join("p3"), seed=3, storage=disk))
        keep(*ss[:2])
        await ss[0].sequencer().propose("a")
        f.crash("p3")
        await ss[2].close()
        again = await game_join(f.restart("p3"), seed=4, storage=disk)
        keep(again)
        assert again.book.players == ["host", "p2", "p3"]
        assert await committed_actions(again, 1) == ["a"]

    play(body)


def test_seats_survive_a_snapshot() -> None:
    cfg = RaftConfig(election_timeout_min=0.3, election_timeout_max=0.6, heartbeat_interval=0.05,
                     trailing_entries=0)

    async def body(f: MemoryFabric) -> None:
        h, j = await asyncio.gather(game_host(f.join("host"), 2, seed=1, config=cfg),
                                    game_join(f.join("p2"), seed=2, config=cfg))
        keep(h, j)
        seq: TurnSequencer[int] = h.sequencer()
        last = await seq.propose(1)
        async for ev in seq.events():
            if getattr(ev, "turn", None) is not None and getattr(ev.turn, "index", 0) == last.index:
                break
        assert seq.publish_snapshot(last.index, b"state")
        await asyncio.sleep(0.2)
        late = h.sequencer()
        first = None
        async for ev in late.events(1):
            first = ev
            break
        assert h.raft.compaction_floor >= last.index
        assert isinstance(first, Reset) and first.turn == 1
        assert first.system.players == ["host", "p2"]
        # A spectator-free restart of the seat book from the snapshot alone still knows the seats.
        assert h.book.players == ["host", "p2"]

    play(body)
