"""TcpMesh under faults and hostile peers: garbage frames, dead links, restarts, impostors."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import struct

import pytest

from tests.net.tcp_helpers import FAST, WAIT, RawPeer, chain, close_all, converged, eventually, mesh, run
from warpmesh.net.memory import PayloadTooLarge
from warpmesh.net.tcp import DATA, PING, PONG, ROSTER
from warpmesh.wire.frame import encode_frame, length_prefixed


def test_garbage_frames_are_refused_and_counted_and_the_link_keeps_serving() -> None:
    """Undecodable bodies, unknown kinds, wrong body types and unknown versions on an authenticated
    link are refused and counted; valid frames around them are still delivered in order."""

    async def main() -> None:
        ms = await chain("ab")
        a, b = ms
        try:
            await converged(ms)
            sub = a.subscribe()
            raw = await RawPeer.connect(a, "mallory")
            assert raw.established
            await eventually(lambda: "mallory" in a.roster.value, what="raw peer admitted")
            raw.send(length_prefixed(encode_frame(DATA, b"first")))
            raw.send(struct.pack(">I", 3) + bytes([1, DATA, 0xC1]))  # 0xc1 is never valid msgpack
            raw.send(length_prefixed(encode_frame(0x7E, {"what": "unknown kind"})))
            raw.send(length_prefixed(encode_frame(DATA, "a str, not bytes")))
            raw.send(length_prefixed(bytes([9, DATA]) + b"\xc4\x01x"))  # unsupported version byte
            raw.send(struct.pack(">I", 1) + b"\x01")  # shorter than a header
            raw.send(length_prefixed(encode_frame(ROSTER, {"peers": [["x", -1, "h", 0], "junk"]})))
            raw.send(length_prefixed(encode_frame(DATA, b"second")))
            assert await asyncio.wait_for(sub.get(), WAIT) == ("mallory", b"first")
            assert await asyncio.wait_for(sub.get(), WAIT) == ("mallory", b"second")
            refused = a.stats.peers["mallory"].frames.refused
            assert refused == {"undecodable": 1, "unknown_kind": 1, "bad_body": 1, "unsupported_version": 1,
                               "truncated": 1, "bad_roster": 2}
            assert a.stats.frames_refused["undecodable"] == 1
            # The link is still up, and the rest of the mesh never noticed.
            assert "mallory" in a.roster.value
            bsub = b.subscribe()
            await a.send_to("b", b"still fine")
            assert await asyncio.wait_for(bsub.get(), WAIT) == ("a", b"still fine")
            raw.close()
        finally:
            await close_all(ms)

    run(main())


def test_oversize_length_prefix_closes_only_that_link() -> None:
    async def main() -> None:
        ms = await chain("ab", max_frame=64 * 1024)
        a, b = ms
        try:
            await converged(ms)
            raw = await RawPeer.connect(a, "mallory")
            await eventually(lambda: "mallory" in a.roster.value, what="raw peer admitted")
            raw.send(struct.pack(">I", 64 * 1024 + 1) + b"\x00" * 100)
            assert await raw.at_eof(), "the mesh must close a link it cannot resynchronise"
            await eventually(lambda: "mallory" not in a.roster.value, what="roster drop")
            assert a.stats.frames_refused["too_large"] == 1
            assert a.stats.links_closed["oversize_frame"] == 1
            assert a.roster.value == {"a", "b"}
            bsub = b.subscribe()
            await a.send_to("b", b"unaffected")
            assert await asyncio.wait_for(bsub.get(), WAIT) == ("a", b"unaffected")
        finally:
            await close_all(ms)

    run(main())


def test_truncated_frame_at_eof_is_counted() -> None:
    async def main() -> None:
        a = await mesh("a")
        try:
            raw = await RawPeer.connect(a, "mallory")
            await eventually(lambda: "mallory" in a.roster.value, what="raw peer admitted")
            frame = length_prefixed(encode_frame(DATA, b"x" * 1000))
            raw.send(frame[:500])
            await raw.writer.drain()
            raw.writer.close()
            await eventually(lambda: "mallory" not in a.roster.value, what="roster drop")
            assert a.stats.frames_refused["truncated"] == 1
        finally:
            await a.close()

    run(main())


def test_garbage_before_the_handshake_is_refused_without_disturbing_the_mesh(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ms = await chain("ab")
        a, b = ms
        try:
            await converged(ms)
            assert a.address is not None
            for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", struct.pack(">I", 3) + b"\x01\x01\xc1",
                         struct.pack(">I", 1 << 30)):
                reader, writer = await asyncio.open_connection(*a.address)
                writer.write(junk)
                # The mesh answers with REFUSE (or just closes) and never admits the stranger.
                data = await asyncio.wait_for(reader.read(), WAIT)
                assert data == b"" or b"protocol" in data
                writer.close()
            assert a.stats.refused_by_us["protocol"] == 3
            assert sum(a.stats.handshake_frames.refused.values()) >= 2
            assert a.roster.value == {"a", "b"}
            sub = b.subscribe()
            await a.send_to("b", b"still serving")
            assert await asyncio.wait_for(sub.get(), WAIT) == ("a", b"still serving")
        finally:
            await close_all(ms)

    with caplog.at_level(logging.WARNING, logger="warpmesh.net.tcp"):
        run(main())
    assert "malformed handshake" in caplog.text


def test_silent_peer_is_dropped_by_the_keepalive() -> None:
    """A link whose peer neither answers nor closes (a dead host, a pulled cable) is noticed."""

    async def main() -> None:
        cfg = dataclasses.replace(FAST, keepalive_interval=0.1, keepalive_timeout=0.8)
        a = await mesh("a", config=cfg)
        try:
            raw = await RawPeer.connect(a, "zombie")
            await eventually(lambda: "zombie" in a.roster.value, what="admitted")
            raw.reader._transport.pause_reading()  # type: ignore[attr-defined]  # never read, never answer
            await eventually(lambda: "zombie" not in a.roster.value, what="keepalive drop")
            assert a.stats.links_closed["keepalive_timeout"] == 1
            raw.close()
        finally:
            await a.close()

    run(main())


def test_idle_links_exchange_pings() -> None:
    async def main() -> None:
        a = await mesh("a")
        try:
            raw = await RawPeer.connect(a, "watcher")
            frames = await raw.read_frames(timeout=0.6)
            kinds = [f.kind for f in frames]
            assert ROSTER in kinds and PING in kinds
            raw.send(length_prefixed(encode_frame(PING, 42)))
            frames = await raw.read_frames(timeout=0.3)
            assert any(f.kind == PONG and f.body == 42 for f in frames)
            raw.close()
        finally:
            await a.close()

    run(main())


def test_killed_link_reconnects() -> None:
    async def main() -> None:
        ms = await chain("abc")
        a, b, _c = ms
        try:
            await converged(ms)
            sub = b.subscribe()
            assert a.drop_link("b")
            assert "b" not in a.roster.value  # dropped from the roster at once
            await converged(ms)  # and back, through a new TCP connection
            assert a.stats.reconnects + b.stats.reconnects >= 1
            assert a.stats.links_closed["dropped"] == 1
            await a.send_to("b", b"after reconnect")
            assert await asyncio.wait_for(sub.get(), WAIT) == ("a", b"after reconnect")
        finally:
            await close_all(ms)

    run(main())


def test_restarted_peer_with_higher_incarnation_is_readmitted() -> None:
    async def main() -> None:
        ms = await chain("abc")
        a, b, c = ms
        try:
            await converged(ms)
            port = b.address[1]  # type: ignore[index]
            await b.abort()  # a crash: no BYE
            b2 = await mesh("b", [a.address], incarnation=2, listen=("127.0.0.1", port))  # type: ignore[list-item]
            ms[1] = b2
            await converged(ms)
            # The roster can be full again before a and c notice the crash; wait for the new links.
            await eventually(lambda: a.links().get("b", {}).get("incarnation") == 2
                             and c.links().get("b", {}).get("incarnation") == 2, what="b#2 linked")
            sub = b2.subscribe()
            await c.send_to("b", b"welcome back")
            assert await asyncio.wait_for(sub.get(), WAIT) == ("c", b"welcome back")
        finally:
            await close_all(ms)

    run(main())


def test_restart_on_a_new_port_replaces_a_half_open_link_promptly() -> None:
    """The old incarnation hangs without closing its sockets (half-open links): when the new
    incarnation arrives, the old link is probed and replaced well before the keepalive would fire."""

    async def main() -> None:
        cfg = dataclasses.replace(FAST, keepalive_timeout=60.0, probe_timeout=0.5)
        a = await mesh("a", config=cfg)
        c = await mesh("c", [a.address], config=cfg)  # type: ignore[list-item]
        b1 = await mesh("b", [a.address], config=cfg)  # type: ignore[list-item]
        try:
            await converged([a, b1, c])
            # Freeze b1 (a hung process): it stops reading and answering, its sockets stay open.
            assert b1._ticker is not None
            b1._ticker.cancel()
            for conn in list(b1._conns):
                conn.writer.transport.pause_reading()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            b2 = await mesh("b", [a.address], config=cfg, incarnation=2)  # type: ignore[list-item]
            await eventually(lambda: a.links().get("b", {}).get("incarnation") == 2, what="a adopts b#2")
            await eventually(lambda: c.links().get("b", {}).get("incarnation") == 2, what="c adopts b#2")
            assert loop.time() - t0 < 30.0  # the probe, not the 60 s keepalive, replaced the link
            assert a.stats.links_closed["replaced_dead"] >= 1
            await converged([a, b2, c])
            await b2.close()
        finally:
            await b1.abort()
            await close_all([a, c])

    run(main())


def test_two_live_nodes_with_the_same_id_the_newcomer_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ms = await chain("ab")
        a, _b = ms
        impostor = await mesh("b", [a.address], incarnation=5)  # type: ignore[list-item]
        try:
            await converged(ms)
            await eventually(lambda: impostor.stats.refused_by_peer["duplicate_id"] >= 1, what="refusal")
            assert a.links()["b"]["incarnation"] == 1  # the live original keeps its link
            assert impostor.roster.value == {"b"}
        finally:
            await close_all([*ms, impostor])

    with caplog.at_level(logging.WARNING, logger="warpmesh.net.tcp"):
        run(main())
    assert "two live nodes share the id 'b'" in caplog.text


def test_a_peer_using_our_own_id_is_refused() -> None:
    async def main() -> None:
        a = await mesh("a")
        try:
            raw = await RawPeer.connect(a, "a", incarnation=99)
            failure = raw.failure
            assert failure is not None and failure.by_peer and failure.code == "duplicate_id"
            assert "give every node a unique --id" in failure.reason
        finally:
            await a.close()

    run(main())


def test_stale_incarnation_is_refused() -> None:
    async def main() -> None:
        a = await mesh("a")
        try:
            first = await RawPeer.connect(a, "b", incarnation=7)
            assert first.established
            await eventually(lambda: "b" in a.roster.value, what="admitted")
            old = await RawPeer.connect(a, "b", incarnation=6)
            assert old.failure is not None and old.failure.code == "stale_incarnation"
            first.close()
        finally:
            await a.close()

    run(main())


def test_wrong_secret_is_refused_and_the_reason_logged_on_both_sides(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ms = await chain("ab")
        a, _b = ms
        intruder = await mesh("x", [a.address], secret=b"not the cluster secret!!")  # type: ignore[list-item]
        try:
            await converged(ms)
            await eventually(lambda: a.stats.refused_by_peer["bad_secret"] >= 1, what="refusal at a")
            await eventually(lambda: intruder.stats.refused_by_us["bad_secret"] >= 1, what="refusal at x")
            assert "x" not in a.roster.value and intruder.roster.value == {"x"}
            assert not a.stats.peers.get("x")  # no link was ever established
        finally:
            await close_all([*ms, intruder])

    with caplog.at_level(logging.WARNING, logger="warpmesh.net.tcp"):
        run(main())
    assert "cluster secret mismatch" in caplog.text
    refusals = [r for r in caplog.records if "bad_secret" in r.getMessage()]
    assert refusals and all(r.levelno == logging.WARNING for r in refusals)


def test_forged_proof_is_refused_by_the_responder() -> None:
    """An initiator that ignores the responder's MAC and sends a made-up PROOF gets REFUSE."""

    async def main() -> None:
        from warpmesh.net.handshake import PROOF, Handshake, PeerInfo, Role, State
        from warpmesh.wire.frame import StreamDecoder

        a = await mesh("a")
        try:
            assert a.address is not None
            reader, writer = await asyncio.open_connection(*a.address)
            hs = Handshake(Role.INITIATOR, PeerInfo("eve", 1, None), secret=b"x" * 20,
                           nonce_source=lambda n: b"\x07" * n)
            hs.start(0.0)
            writer.write(hs.data_to_send())
            dec = StreamDecoder()
            frames = []
            while not frames:
                frames = dec.feed(await asyncio.wait_for(reader.read(4096), WAIT))
            assert hs.state is State.WAIT_CHALLENGE
            writer.write(length_prefixed(encode_frame(PROOF, {"mac": b"\x00" * 32})))
            reply = []
            while not reply:
                reply = dec.feed(await asyncio.wait_for(reader.read(4096), WAIT))
            assert reply[0].body["code"] == "bad_secret"
            await eventually(lambda: a.stats.refused_by_us["bad_secret"] == 1, what="count")
            writer.close()
        finally:
            await a.close()

    run(main())


def test_incompatible_version_is_refused_with_a_reason() -> None:
    async def main() -> None:
        a = await mesh("a")
        try:
            raw = await RawPeer.connect(a, "future", versions=(2, 3))
            assert raw.failure is not None and raw.failure.code == "version"
            assert "[2, 3]" in raw.failure.reason
            assert a.stats.refused_by_us["version"] == 1
        finally:
            await a.close()

    run(main())


def test_handshake_timeout_refuses_a_silent_connection() -> None:
    async def main() -> None:
        cfg = dataclasses.replace(FAST, handshake_timeout=0.3)
        a = await mesh("a", config=cfg)
        try:
            assert a.address is not None
            reader, writer = await asyncio.open_connection(*a.address)
            data = await asyncio.wait_for(reader.read(), WAIT)  # say nothing; the mesh gives up
            assert b"timeout" in data
            assert a.stats.refused_by_us["timeout"] == 1
            writer.close()
        finally:
            await a.close()

    run(main())


def test_gossiped_peer_is_forgotten_after_a_long_absence_but_seeds_are_not() -> None:
    async def main() -> None:
        cfg = dataclasses.replace(FAST, forget_after=0.5)
        ms = await chain("abc", config=cfg)
        a, b, c = ms
        try:
            await converged(ms)
            b_addr, c_addr = b.address, c.address
            await c.abort()
            await b.abort()
            # a learned c from gossip: forgotten. b is a's... a has no seed; c's seed is b.
            await eventually(lambda: c_addr not in a.known_peers(), what="a forgets c")
            await eventually(lambda: b_addr not in a.known_peers(), what="a forgets b")
        finally:
            await close_all(ms)
        seeded = await mesh("s", [("127.0.0.1", 1)], config=cfg)  # a seed nobody listens on
        try:
            await asyncio.sleep(1.0)
            assert ("127.0.0.1", 1) in seeded.known_peers()
            assert seeded.stats.dial_failures >= 2
        finally:
            await seeded.close()

    run(main())


def test_mesh_keeps_serving_while_a_peer_flaps() -> None:
    async def main() -> None:
        ms = await chain("abc")
        a, _b, c = ms
        try:
            await converged(ms)
            sub = c.subscribe()
            for _ in range(5):
                a.drop_link("b")
                await a.send_to("c", b"tick")
            got = [await asyncio.wait_for(sub.get(), WAIT) for _ in range(5)]
            assert got == [("a", b"tick")] * 5
            await converged(ms)
        finally:
            await close_all(ms)

    run(main())


def test_peers_with_smaller_frame_limits_are_never_sent_oversize_frames() -> None:
    """Frame limits travel in the handshake: send_to refuses a payload the receiver would have to
    refuse (which would cost it the link), broadcast skips that peer and counts it."""

    async def main() -> None:
        a = await mesh("a", max_frame=1024 * 1024)
        b = await mesh("b", [a.address], max_frame=64 * 1024)  # type: ignore[list-item]
        c = await mesh("c", [a.address], max_frame=1024 * 1024)  # type: ignore[list-item]
        try:
            await converged([a, b, c])
            sub_b, sub_c = b.subscribe(), c.subscribe()
            big = b"x" * 100_000  # fits a's and c's limits, not b's
            with pytest.raises(PayloadTooLarge, match="limit of 'b'"):
                await a.send_to("b", big)
            await a.send_to("c", big)
            await a.broadcast(big)
            assert a.stats.peers["b"].oversize_skipped == 1
            await a.send_to("b", b"small")
            assert await asyncio.wait_for(sub_b.get(), WAIT) == ("a", b"small")
            assert await asyncio.wait_for(sub_c.get(), WAIT) == ("a", big)
            assert await asyncio.wait_for(sub_c.get(), WAIT) == ("a", big)
            assert b.stats.links_closed == {} and b.stats.peers["a"].links == 1
        finally:
            await close_all([a, b, c])

    run(main())


def test_wildcard_listen_address_is_replaced_by_the_address_seen_on_the_wire() -> None:
    async def main() -> None:
        a = await mesh("a")
        c = await mesh("c", [a.address])  # type: ignore[list-item]
        try:
            await converged([a, c])
            raw = await RawPeer.connect(a, "w", listen=("0.0.0.0", 4321))
            await eventually(lambda: "w" in a.roster.value, what="admitted")
            assert a.links()["w"]["listen"] == ("127.0.0.1", 4321)
            # c hears of w through a's gossip with the resolved address and tries to dial it.
            await eventually(lambda: c.known_peers().get(("127.0.0.1", 4321)) == "w", what="gossip")
            raw.close()
        finally:
            await close_all([a, c])

    run(main())


def test_without_a_secret_gossiped_non_loopback_addresses_are_not_dialled(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        a = await mesh("a", secret=None)
        try:
            raw = await RawPeer.connect(a, "g", secret=None)
            await eventually(lambda: "g" in a.roster.value, what="admitted")
            entry = {"peers": [["far", 1, "10.9.9.9", 7000], ["near", 1, "127.0.0.1", 1]]}
            for _ in range(3):
                raw.send(length_prefixed(encode_frame(ROSTER, entry)))
            await eventually(lambda: ("127.0.0.1", 1) in a.known_peers(), what="loopback entry kept")
            assert ("10.9.9.9", 7000) not in a.known_peers()
            raw.close()
        finally:
            await a.close()

    with caplog.at_level(logging.WARNING, logger="warpmesh.net.tcp"):
        run(main())
    assert caplog.text.count("not dialling far at 10.9.9.9:7000") == 1
