"""Roster gossip whose upkeep per peer does not grow with the square of the mesh (issue 16).

Each ``gossip_interval`` a peer sends its roster's 16-byte digest to one random linked peer; only a
peer whose roster differs answers with the whole roster. A newcomer dialling us is announced to the
others in one entry; a periodic full roster to every peer (N entries to N - 1 peers, per peer) is gone.
"""

from __future__ import annotations

import asyncio
import dataclasses

from tests.net.tcp_helpers import FAST, RawPeer, close_all, converged, eventually, mesh, run
from warpmesh.net.linkframe import ROSTER, ROSTER_DIGEST
from warpmesh.net.roster import RosterEntry, parse_roster, roster_digest
from warpmesh.net.tcp import TcpMesh
from warpmesh.wire.frame import encode_frame, length_prefixed

QUIET = dataclasses.replace(FAST, keepalive_interval=2.0, keepalive_timeout=10.0, gossip_interval=0.25)


def test_a_digest_names_a_set_of_entries_whatever_their_order() -> None:
    a = RosterEntry("a", 1, ("127.0.0.1", 1000))
    b = RosterEntry("b", 2, ("127.0.0.1", 1001))
    assert roster_digest([a, b]) == roster_digest([b, a]) and len(roster_digest([a])) == 16
    assert roster_digest([a, b]) != roster_digest([a, RosterEntry("b", 3, ("127.0.0.1", 1001))])
    assert roster_digest([a, b]) != roster_digest([a, RosterEntry("b", 2, ("127.0.0.1", 1002))])


def _upkeep(n: int, seconds: float) -> float:
    """Roster bytes (full rosters and digests) sent per peer per second by a settled quiet mesh."""

    async def main() -> float:
        first = await mesh("p00", config=QUIET)
        ms = [first, *[await mesh(f"p{i:02d}", [first.address], config=QUIET)  # type: ignore[list-item]
                       for i in range(1, n)]]
        try:
            await converged(ms)
            await asyncio.sleep(0.5)
            before = sum(m.stats.control_bytes_out["roster"] + m.stats.control_bytes_out["roster_digest"]
                         for m in ms)
            await asyncio.sleep(seconds)
            after = sum(m.stats.control_bytes_out["roster"] + m.stats.control_bytes_out["roster_digest"]
                        for m in ms)
            assert all(m.stats.control_bytes_out["roster_digest"] > 0 for m in ms)
            return (after - before) / n / seconds
        finally:
            await close_all(ms)

    return run(main())


def test_a_settled_mesh_gossips_the_same_bytes_per_peer_at_4_and_12_peers() -> None:
    small, big = _upkeep(4, 2.0), _upkeep(12, 2.0)
    # A digest frame is ~30 bytes, four a second; full rosters to every peer would be ~12x at 12 peers.
    assert big <= small * 1.5 + 10, (small, big)
    assert big < 200, big


def test_a_differing_digest_is_answered_with_the_roster_and_a_matching_one_is_not() -> None:
    async def main() -> None:
        a = await mesh("a", config=dataclasses.replace(QUIET, gossip_interval=60.0))
        listen = ("127.0.0.1", 1)
        raw = await RawPeer.connect(a, "x", listen=listen)
        try:
            assert raw.established
            await eventually(lambda: "x" in a.roster.value, what="x linked")
            await raw.read_frames(0.3)
            raw.frames.clear()
            assert a.address is not None
            same = roster_digest([RosterEntry("a", a.incarnation, a.address), RosterEntry("x", 1, listen)])
            raw.writer.write(length_prefixed(encode_frame(ROSTER_DIGEST, same)))
            assert not [f for f in await raw.read_frames(0.5) if f.kind == ROSTER]
            raw.writer.write(length_prefixed(encode_frame(ROSTER_DIGEST, b"\0" * 16)))
            rosters = [f for f in await raw.read_frames(0.5) if f.kind == ROSTER]
            assert len(rosters) == 1
            parsed = parse_roster(rosters[0].body)
            assert parsed is not None and {e.peer for e in parsed[0]} == {"a", "x"}
            # Asking again at once is not answered again (one roster per second per link).
            raw.writer.write(length_prefixed(encode_frame(ROSTER_DIGEST, b"\1" * 16)))
            assert not [f for f in await raw.read_frames(0.3) if f.kind == ROSTER][1:]
        finally:
            raw.writer.close()
            await a.close()

    run(main())


def test_a_newcomer_is_announced_by_the_peer_it_joins_through_and_everyone_links_it() -> None:
    async def main() -> None:
        slow = dataclasses.replace(QUIET, gossip_interval=60.0)  # no digest rounds: the announcement does it
        ms: list[TcpMesh] = [await mesh("a", config=slow)]
        for name in "bcde":
            ms.append(await mesh(name, [ms[0].address], config=slow))  # type: ignore[list-item]
        try:
            await converged(ms)
            sent = {m.self_id: m.stats.control_bytes_out["roster"] for m in ms}
            z = await mesh("z", [ms[1].address], config=slow)  # type: ignore[list-item]
            ms.append(z)
            await converged(ms, timeout=5.0)
            grew = {m.self_id for m in ms[:-1] if m.stats.control_bytes_out["roster"] > sent[m.self_id]}
            # Every old peer sent z its roster on linking; b (the seed) also told the others.
            assert grew == {"a", "b", "c", "d", "e"}
            extra = {m.self_id: m.stats.control_bytes_out["roster"] - sent[m.self_id] for m in ms[:-1]}
            assert extra["b"] > max(v for k, v in extra.items() if k != "b"), extra
        finally:
            await close_all(ms)

    run(main())


def test_an_idle_link_costs_no_keepalives_and_a_link_owed_an_answer_is_pinged() -> None:
    async def main() -> None:
        cfg = dataclasses.replace(FAST, keepalive_interval=0.1, keepalive_timeout=0.8, gossip_interval=60.0)
        a = await mesh("a", config=cfg)
        b = await mesh("b", [a.address], config=cfg)  # type: ignore[list-item]
        try:
            await converged([a, b])
            await asyncio.sleep(0.3)
            pings = a.stats.control_bytes_out["ping"] + b.stats.control_bytes_out["ping"]
            await asyncio.sleep(2.0)  # 20 keepalive intervals, 2.5 timeouts of an idle link
            assert a.stats.control_bytes_out["ping"] + b.stats.control_bytes_out["ping"] == pings
            assert a.roster.value == {"a", "b"} and not a.stats.links_closed  # idle, not dead
            # b takes a's frames and never answers on that link: a pings it within an interval or two.
            got: list[bytes] = []
            b.add_handler(lambda _s, d: got.append(d))
            before = a.stats.control_bytes_out["ping"]
            await a.send_to("b", b"one-way")
            await eventually(lambda: a.stats.control_bytes_out["ping"] > before, what="a pinged b")
            # The link had been silent for 2 s (> keepalive_timeout) before a spoke: silence counts
            # from a's frame, so b's PONG keeps it up.
            await asyncio.sleep(1.5)
            assert got == [b"one-way"] and a.roster.value == {"a", "b"} and not a.stats.links_closed
        finally:
            await close_all([a, b])

    run(main())
