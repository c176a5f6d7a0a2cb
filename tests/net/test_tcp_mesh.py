"""TcpMesh on real loopback sockets: roster gossip, one link per pair, ordering, mux, backpressure."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

from tests.net.tcp_helpers import FAST, SECRET, WAIT, chain, close_all, converged, eventually, mesh, run
from warpmesh.net import MuxSeam, PeerUnreachable, SeamClosed
from warpmesh.net.memory import PayloadTooLarge
from warpmesh.net.secret import InsecureAddressError
from warpmesh.net.tcp import TcpMesh, format_address, parse_address


def _one_link_per_pair(meshes: list[TcpMesh]) -> None:
    by_id = {m.self_id: m for m in meshes}
    for m in meshes:
        links = m.links()
        assert set(links) == set(by_id) - {m.self_id}
        for peer, info in links.items():
            other = by_id[peer].links()[m.self_id]
            # The same TCP connection seen from both ends: exactly one of them dialled it.
            assert info["dialled"] != other["dialled"], (m.self_id, peer)


def test_full_mesh_from_a_chain_of_joins() -> None:
    """Each node joins only its predecessor; roster gossip completes the mesh (one link per pair)."""

    async def main() -> None:
        ms = await chain("abcd")
        try:
            await converged(ms)
            _one_link_per_pair(ms)
            # Every node learned every other node's listen address.
            addrs = {m.self_id: m.address for m in ms}
            for m in ms:
                for peer, info in m.links().items():
                    assert info["listen"] == addrs[peer]
        finally:
            await close_all(ms)

    run(main())


@pytest.mark.parametrize("seed", range(3))
def test_simultaneous_dials_leave_exactly_one_link(seed: int) -> None:
    """Both peers dial each other at the same moment: the link dialled by the smaller id wins."""

    async def main() -> None:
        a = TcpMesh("a", secret=SECRET, incarnation=1, config=FAST, rng=random.Random(seed))
        b = TcpMesh("b", secret=SECRET, incarnation=1, config=FAST, rng=random.Random(seed + 100))
        # Bind both first, then make each join the other and start dialling at once.
        await asyncio.gather(a.start(), b.start())
        a._target(b.address, seed=True, peer_id=None, now=0.0)  # type: ignore[arg-type]
        b._target(a.address, seed=True, peer_id=None, now=0.0)  # type: ignore[arg-type]
        try:
            await converged([a, b])
            await asyncio.sleep(0.3)  # let any losing connection finish its refusal
            _one_link_per_pair([a, b])
            assert a.roster.value == b.roster.value == {"a", "b"}
            sub = b.subscribe()
            await a.send_to("b", b"after the race")
            assert await asyncio.wait_for(sub.get(), WAIT) == ("a", b"after the race")
        finally:
            await close_all([a, b])

    run(main())


def test_send_to_is_ordered_and_every_subscriber_gets_every_frame() -> None:
    async def main() -> None:
        ms = await chain("abc")
        a, b, c = ms
        try:
            await converged(ms)
            s1, s2 = c.subscribe(), c.subscribe()
            n = 3000
            payloads = [i.to_bytes(4, "big") * (1 + i % 50) for i in range(n)]

            async def sender(src: TcpMesh) -> None:
                for p in payloads:
                    await src.send_to("c", p)

            await asyncio.gather(sender(a), sender(b))
            got1, got2 = [], []
            for _ in range(2 * n):  # read both: a full subscriber holds back every other one
                got1.append(await asyncio.wait_for(s1.get(), WAIT))
                got2.append(await asyncio.wait_for(s2.get(), WAIT))
            assert got1 == got2
            # Per-sender FIFO; the two senders interleave arbitrarily.
            assert [d for s, d in got1 if s == "a"] == payloads
            assert [d for s, d in got1 if s == "b"] == payloads
            assert a.stats.peers["c"].frames_out >= n and c.stats.peers["a"].frames_in == n
        finally:
            await close_all(ms)

    run(main())


def test_a_lone_frame_on_an_idle_link_goes_to_the_socket_at_once() -> None:
    """The first frame of a burst on an idle link is written inside ``send_to`` (no writer-task
    wake-up in between); the rest of the same burst queues behind it, and all arrive in order."""

    async def main() -> None:
        ms = await chain("ab")
        a, b = ms
        try:
            await converged(ms)
            sub = b.subscribe()
            conn = a._slots["b"]
            ps = a.stats.peers["b"]

            def parked() -> bool:
                return (conn.wake is not None and not conn.wake.done() and not conn.q and not conn.ctl
                        and not conn.burst)

            for rnd in range(2):
                await eventually(parked, what="the writer parked with nothing queued")
                before = ps.frames_out
                # None of these sends suspends, so the loop does not turn between them.
                await a.send_to("b", b"first %d" % rnd)
                assert ps.frames_out == before + 1 and not conn.q  # handed to the socket already
                await a.send_to("b", b"second %d" % rnd)
                await a.send_to("b", b"third %d" % rnd)
                assert len(conn.q) == 2  # queued for the writer, which coalesces them
                got = [await asyncio.wait_for(sub.get(), WAIT) for _ in range(3)]
                assert got == [("a", b"first %d" % rnd), ("a", b"second %d" % rnd), ("a", b"third %d" % rnd)]
        finally:
            await close_all(ms)

    run(main())


def test_broadcast_reaches_every_peer_but_not_self_and_self_send_is_local() -> None:
    async def main() -> None:
        ms = await chain("abcd")
        try:
            await converged(ms)
            subs = {m.self_id: m.subscribe() for m in ms}
            await ms[0].broadcast(b"hello all")
            for m in ms[1:]:
                assert await asyncio.wait_for(subs[m.self_id].get(), WAIT) == ("a", b"hello all")
            await ms[0].send_to("a", b"note to self")
            assert await asyncio.wait_for(subs["a"].get(), WAIT) == ("a", b"note to self")
            assert subs["a"].get_nowait() is None  # the broadcast did not loop back
        finally:
            await close_all(ms)

    run(main())


def test_unreachable_peers_oversize_payloads_and_closed_seams() -> None:
    async def main() -> None:
        a = await mesh("a", max_frame=4096)
        try:
            with pytest.raises(PeerUnreachable):
                await a.send_to("nobody", b"x")
            with pytest.raises(PayloadTooLarge):
                await a.send_to("a", b"x" * (a.max_payload + 1))
            await a.send_to("a", b"x" * a.max_payload)  # exactly the limit is fine
        finally:
            await a.close()
        with pytest.raises(SeamClosed):
            await a.send_to("a", b"x")
        assert a.closed and a.roster.value == {"a"}
        sub = a.subscribe()
        with pytest.raises(SeamClosed):
            await sub.get()

    run(main())


def test_max_size_payload_crosses_the_link() -> None:
    async def main() -> None:
        ms = await chain("ab", max_frame=2 * 1024 * 1024)
        a, b = ms
        try:
            await converged(ms)
            sub = b.subscribe()
            big = random.Random(5).randbytes(a.max_payload)
            await a.send_to("b", big)
            await a.send_to("b", b"")  # empty payloads are valid too
            assert await asyncio.wait_for(sub.get(), WAIT) == ("a", big)
            assert await asyncio.wait_for(sub.get(), WAIT) == ("a", b"")
        finally:
            await close_all(ms)

    run(main())


def test_mux_seam_runs_unchanged_over_tcp() -> None:
    async def main() -> None:
        ms = await chain("abc")
        try:
            await converged(ms)
            muxes = {m.self_id: MuxSeam(m) for m in ms}
            ch = {(i, t): muxes[i].channel(t) for i in "abc" for t in (0x11, 0x20)}
            subs = {(i, t): ch[(i, t)].subscribe() for i in "bc" for t in (0x11, 0x20)}
            await ch[("a", 0x11)].broadcast(b"crdt delta")
            await ch[("a", 0x20)].send_to("c", b"raft append")
            assert await asyncio.wait_for(subs[("b", 0x11)].get(), WAIT) == ("a", b"crdt delta")
            assert await asyncio.wait_for(subs[("c", 0x11)].get(), WAIT) == ("a", b"crdt delta")
            assert await asyncio.wait_for(subs[("c", 0x20)].get(), WAIT) == ("a", b"raft append")
            await asyncio.sleep(0.1)
            assert subs[("b", 0x20)].get_nowait() is None
            assert ch[("a", 0x11)].roster is ms[0].roster
            for m in muxes.values():
                await m.close()
        finally:
            await close_all(ms)

    run(main())


def test_slow_subscriber_slows_the_sender_and_loses_nothing() -> None:
    """A subscriber that does not read stalls the TCP reader, the socket buffers fill, and send_to
    waits: backpressure end to end, with every frame delivered once the subscriber catches up."""

    async def main() -> None:
        cfg = dataclasses.replace(FAST, send_queue_frames=8, keepalive_timeout=1.5)
        ms = await chain("ab", config=cfg)
        a, b = ms
        try:
            await converged(ms)
            slow = b.subscribe(maxsize=4)
            payload = b"\xab" * 65536
            # ~52 MB: more than the largest socket buffers Linux autotunes to (32 MB rmem + 4 MB wmem
            # by default) plus every queue; the stall usually starts after ~7 MB.
            total = 800
            sent = 0

            async def produce() -> None:
                nonlocal sent
                for i in range(total):
                    await a.send_to("b", i.to_bytes(4, "big") + payload)
                    sent += 1

            producer = asyncio.create_task(produce())
            # The subscriber reads nothing: after the buffers fill, the producer must stall.
            await eventually(lambda: sent > 0, what="the first send")
            stalled_at = -1
            for _ in range(200):
                before = sent
                await asyncio.sleep(0.05)
                if sent == before:
                    stalled_at = sent
                    break
            assert 0 < stalled_at < total, "send_to never waited for the slow subscriber"
            # The link stayed up while stalled (keepalive does not mistake backpressure for death).
            await asyncio.sleep(cfg.keepalive_timeout * 1.2)
            assert a.roster.value == {"a", "b"} and not producer.done()
            for i in range(total):
                sender, data = await asyncio.wait_for(slow.get(), WAIT)
                assert sender == "a" and int.from_bytes(data[:4], "big") == i
            await asyncio.wait_for(producer, WAIT)
            assert b.stats.peers["a"].frames_in == total and b.hub.unsubscribed_drops == 0
        finally:
            await close_all(ms)

    run(main(), timeout=120)


def test_graceful_close_says_bye_and_peers_forget_the_leaver() -> None:
    async def main() -> None:
        ms = await chain("abc")
        a, b, c = ms
        try:
            await converged(ms)
            await c.close()
            await converged([a, b], "ab")
            # c was learned from gossip by a (not a seed of a): a stops dialling it at once.
            await eventually(lambda: c.address not in a.known_peers(), what="a forgetting c")
            await eventually(lambda: c.address not in b.known_peers(), what="b forgetting c")
            assert a.stats.links_closed["eof"] >= 1
        finally:
            await close_all([a, b])

    run(main())


def test_address_parsing() -> None:
    assert parse_address("127.0.0.1:7000") == ("127.0.0.1", 7000)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address("node-3.example:1") == ("node-3.example", 1)
    assert format_address(("::1", 80)) == "[::1]:80"
    for bad in ("nope", "1.2.3.4:x", "1.2.3.4:70000", "::1:80", "[::1]80"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_non_loopback_addresses_need_a_secret() -> None:
    with pytest.raises(InsecureAddressError, match="WARPMESH_SECRET"):
        TcpMesh("a", listen=("0.0.0.0", 0), incarnation=1)
    with pytest.raises(InsecureAddressError, match=r"refusing to dial 10\.1\.2\.3"):
        TcpMesh("a", join=[("10.1.2.3", 7000)], incarnation=1)
    # With a secret the same construction is allowed (nothing is bound until start()).
    TcpMesh("a", listen=("0.0.0.0", 0), join=[("10.1.2.3", 7000)], secret=SECRET, incarnation=1)


def test_meshes_without_a_secret_work_on_loopback() -> None:
    async def main() -> None:
        ms = await chain("ab", secret=None)
        try:
            await converged(ms)
        finally:
            await close_all(ms)

    run(main())


def test_joining_yourself_is_harmless() -> None:
    async def main() -> None:
        a = await mesh("a")
        b = await mesh("b", [a.address])
        a2 = TcpMesh("c", secret=SECRET, incarnation=1, config=FAST, join=[])
        try:
            # c lists itself and b as seeds (a common copy-pasted config).
            await a2.start()
            a2._target(a2.address, seed=True, peer_id=None, now=0.0)  # type: ignore[arg-type]
            a2._target(b.address, seed=True, peer_id=None, now=0.0)  # type: ignore[arg-type]
            await converged([a, b, a2])
            await eventually(lambda: a2.address not in a2.known_peers(), what="self address dropped")
            assert a2.stats.refused_by_us.get("self_connection", 0) >= 1
        finally:
            await close_all([a, b, a2])

    run(main())


def test_eight_peers_joining_random_peers_form_one_full_mesh() -> None:
    """Joins race with gossip from every side; the result is still one link per pair."""

    async def main() -> None:
        rng = random.Random(8)
        ms = [await mesh("p0")]
        for i in range(1, 8):
            ms.append(await mesh(f"p{i}", [rng.choice(ms).address]))  # type: ignore[list-item]
        try:
            await converged(ms)
            await asyncio.sleep(0.3)
            _one_link_per_pair(ms)
            assert sum(m.stats.reconnects for m in ms) == 0
        finally:
            await close_all(ms)

    run(main())
