"""Failure detector in heartbeat mode (``probe=False``): transitions on silence and speech; a Lost
peer that returns is readmitted. Probe mode (the default) is tests/liveness/test_probe.py."""

from __future__ import annotations

import asyncio

import pytest

from warpmesh.liveness import FailureDetector, HeartbeatConfig, Liveness, PeerHealth
from warpmesh.net import MuxSeam
from warpmesh.net.memory import MemoryFabric
from warpmesh.sim import run_virtual

CFG = HeartbeatConfig(interval=0.1, timeout=0.5, lost_after=2.0, probe=False)


def test_silence_makes_a_peer_unresponsive_then_lost() -> None:
    d = FailureDetector(CFG)
    d.track("b", 0.0)
    assert d.tick(0.4) == []
    [ev] = d.tick(0.6)
    assert (ev.peer, ev.old, ev.new) == ("b", PeerHealth.HEALTHY, PeerHealth.UNRESPONSIVE)
    assert d.alive() == frozenset()
    [ev] = d.tick(2.1)
    assert ev.new is PeerHealth.LOST


def test_any_frame_keeps_a_peer_healthy() -> None:
    d = FailureDetector(CFG)
    d.track("b", 0.0)
    for t in range(1, 50):
        d.heard("b", t * 0.3)
        assert d.tick(t * 0.3 + 0.1) == []
    assert d.state("b") is PeerHealth.HEALTHY


def test_lost_peer_is_readmitted_when_it_speaks_again() -> None:
    # The reference stops the detector after Lost, so a returning peer stays excluded forever.
    d = FailureDetector(CFG)
    d.track("b", 0.0)
    d.tick(1.0)
    d.tick(3.0)
    assert d.state("b") is PeerHealth.LOST
    ev = d.heard("b", 10.0)
    assert ev is not None and (ev.old, ev.new) == (PeerHealth.LOST, PeerHealth.RECOVERED)
    assert "b" in d.alive()
    d.heard("b", 10.4)
    [ev] = d.tick(10.6)
    assert ev.new is PeerHealth.HEALTHY


def test_recovered_peer_that_goes_silent_again_is_unresponsive() -> None:
    d = FailureDetector(CFG)
    d.track("b", 0.0)
    d.tick(0.6)
    d.heard("b", 0.7)
    assert d.state("b") is PeerHealth.RECOVERED
    [ev] = d.tick(1.3)
    assert (ev.old, ev.new) == (PeerHealth.RECOVERED, PeerHealth.UNRESPONSIVE)


def test_next_deadline_and_untrack() -> None:
    d = FailureDetector(CFG)
    assert d.next_deadline(0.0) is None
    d.track("b", 1.0)
    assert d.next_deadline(1.0) == pytest.approx(1.5)
    d.untrack("b")
    assert d.tracked() == [] and d.heard("b", 2.0) is None


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        HeartbeatConfig(interval=1.0, timeout=0.5)
    with pytest.raises(ValueError):
        HeartbeatConfig(interval=0.1, timeout=1.0, lost_after=0.5)


def test_runtime_detects_partition_and_readmits_after_heal() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=3)
        nodes = {}
        for name in ("a", "b", "c"):
            seam = fabric.join(name)
            nodes[name] = await Liveness(MuxSeam(seam), CFG).start()
        await asyncio.sleep(1.0)
        assert nodes["a"].live.value == {"a", "b", "c"}
        events = nodes["a"].events()

        fabric.isolate("c")
        await nodes["a"].live.wait_for(lambda live: live == {"a", "b"}, timeout=2.0)
        assert nodes["c"].live.value == {"c"}
        await asyncio.sleep(3.0)
        assert nodes["a"].state("c") is PeerHealth.LOST

        fabric.heal()
        await nodes["a"].live.wait_for(lambda live: live == {"a", "b", "c"}, timeout=2.0)
        seen = []
        while len(seen) < 3:
            ev = await events.__anext__()
            if ev.peer == "c":
                seen.append(ev.new)
        assert seen == [PeerHealth.UNRESPONSIVE, PeerHealth.LOST, PeerHealth.RECOVERED]
        await asyncio.sleep(1.0)
        assert nodes["a"].state("c") is PeerHealth.HEALTHY
        for n in nodes.values():
            await n.close()
        await fabric.close()

    run_virtual(main())


def test_runtime_follows_roster_on_crash_and_restart() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=4)
        a = await Liveness(MuxSeam(fabric.join("a")), CFG).start()
        b = await Liveness(MuxSeam(fabric.join("b")), CFG).start()
        await asyncio.sleep(0.5)
        assert a.live.value == {"a", "b"}
        await b.close()
        fabric.crash("b")
        await asyncio.sleep(0.01)
        assert a.live.value == {"a"} and a.state("b") is None
        b2 = await Liveness(MuxSeam(fabric.join("b")), CFG).start()
        await a.live.wait_for(lambda live: live == {"a", "b"}, timeout=1.0)
        await asyncio.sleep(1.0)
        assert a.state("b") is PeerHealth.HEALTHY and b2.live.value == {"a", "b"}
        await a.close()
        await b2.close()
        await fabric.close()

    run_virtual(main())


def test_heartbeats_go_only_to_peers_that_heard_nothing_else_from_us() -> None:
    # a talks to b on an app channel all the time: b needs no heartbeat from a (any frame counts),
    # c still gets them, and everyone stays healthy (issue 16: heartbeats cost every peer one frame
    # per peer per interval, however busy the mesh).
    async def main() -> None:
        fabric = MemoryFabric(seed=5)
        muxes = {n: MuxSeam(fabric.join(n)) for n in "abc"}
        quiet = HeartbeatConfig(interval=0.1, timeout=0.5, lost_after=2.0, quiet_when_busy=True, probe=False)
        nodes = {n: await Liveness(m, quiet).start() for n, m in muxes.items()}
        beats_from_a: dict[str, int] = {"b": 0, "c": 0}
        for n in "bc":
            muxes[n].channel(0x42).add_handler(lambda _s, _d: None)

            def count(sender: str, _data: bytes, n: str = n) -> None:
                if sender == "a":
                    beats_from_a[n] += 1

            muxes[n].channel(0x10).add_handler(count)
        await asyncio.sleep(0.3)
        beats_from_a.update(b=0, c=0)
        app = muxes["a"].channel(0x42)
        # 2 s of app traffic a -> b every 40 ms (heartbeats every 100 ms skip peers sent to in the
        # last 50 ms; not every 50 ms, which would tie with that window and leave the outcome to
        # the order of equal timers)
        for _ in range(50):
            await app.send_to("b", b"work")
            await asyncio.sleep(0.04)
        assert nodes["b"].state("a") is PeerHealth.HEALTHY and nodes["c"].state("a") is PeerHealth.HEALTHY
        assert beats_from_a["b"] == 0 and beats_from_a["c"] >= 15, beats_from_a
        for n in nodes.values():
            await n.close()
        await fabric.close()

    run_virtual(main())


QUIET = HeartbeatConfig(interval=0.1, timeout=0.5, lost_after=2.0, quiet_when_busy=True, probe=False)


PROBING = HeartbeatConfig(interval=0.1, timeout=0.5, lost_after=2.0, probe=True)


async def _beacon_mesh(fabric: MemoryFabric, names: str, cfg: HeartbeatConfig = QUIET) -> dict[str, Liveness]:
    nodes = {n: await Liveness(MuxSeam(fabric.join(n)), cfg).start() for n in names}
    await asyncio.sleep(0.35)  # mid-interval: what arrives within 10 ms is no periodic heartbeat
    return nodes


@pytest.mark.parametrize("cfg", [QUIET, PROBING], ids=["heartbeats", "probes"])
def test_a_changed_beacon_reaches_every_peer_at_once_and_stays_quiet_after(cfg: HeartbeatConfig) -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=6)
        nodes = await _beacon_mesh(fabric, "abc", cfg)
        heard: list[tuple[str, str, bytes]] = []
        for n in "bc":
            nodes[n].on_beacon = lambda peer, beacon, n=n: heard.append((n, peer, beacon))
        nodes["a"].set_beacon(b"view-1")
        await asyncio.sleep(0.01)  # well before the next heartbeat: the announcement itself
        assert sorted(heard) == [("b", "a", b"view-1"), ("c", "a", b"view-1")]
        assert nodes["b"].beacons["a"] == b"view-1"
        await asyncio.sleep(1.0)  # heartbeats carry it again: no new callback for the same beacon
        assert len(heard) == 2
        nodes["a"].set_beacon(b"view-1")  # unchanged: nothing announced
        assert nodes["a"].beacon_stats["announced"] == 1
        for node in nodes.values():
            await node.close()
        await fabric.close()

    run_virtual(main())


def test_a_lost_announcement_is_repaired_by_asking_and_answers_are_rate_limited() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=7)
        nodes = await _beacon_mesh(fabric, "ab")
        fabric.partition({"a"}, {"b"})
        nodes["a"].set_beacon(b"view-2")  # lost: b is cut off
        await asyncio.sleep(0.01)
        fabric.heal()
        # Keep b hearing from a on another channel, so a sends it no heartbeat (quiet when busy).
        muxes_b_app = nodes["b"]._mux.channel(0x42)
        muxes_b_app.add_handler(lambda _s, _d: None)
        app = nodes["a"]._mux.channel(0x42)
        for _ in range(6):
            await app.send_to("b", b"work")
            await asyncio.sleep(0.04)
        assert "a" not in nodes["b"].beacons
        assert nodes["b"].ask_beacons(["a", "b"]) == 1  # never ourselves
        assert nodes["b"].ask_beacons(["a"]) == 0  # asked within the interval already
        await asyncio.sleep(0.02)
        assert nodes["b"].beacons["a"] == b"view-2"
        # A peer asking over and over gets at most two answers per interval.
        answered = nodes["a"].beacon_stats["answered"]
        for _ in range(10):
            await nodes["b"]._channel.send_to("a", bytes((1, 2, 0xC0)))  # ASK
        await asyncio.sleep(0.01)
        assert nodes["a"].beacon_stats["answered"] - answered <= 1
        for node in nodes.values():
            await node.close()
        await fabric.close()

    run_virtual(main())


@pytest.mark.parametrize("cfg", [QUIET, PROBING], ids=["heartbeats", "probes"])
def test_a_newcomer_gets_the_beacons_it_missed_and_bad_frames_are_counted(cfg: HeartbeatConfig) -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=8)
        nodes = await _beacon_mesh(fabric, "ab", cfg)
        nodes["a"].set_beacon(b"view-3")
        await asyncio.sleep(0.01)
        c = await Liveness(MuxSeam(fabric.join("c")), cfg).start()
        await asyncio.sleep(0.02)  # before any periodic heartbeat: a greeted the newcomer
        assert c.beacons.get("a") == b"view-3"
        for junk in (b"", b"\x01", bytes((1, 1, 0x05)), bytes((1, 9, 0xC0))):  # empty, short, int body, kind 9
            await c._channel.send_to("a", junk)
        await asyncio.sleep(0.01)
        assert nodes["a"].beacon_stats["bad_frames"] == 4
        assert nodes["a"].state("c") is PeerHealth.HEALTHY  # still a sign of life
        with pytest.raises(ValueError, match="at most"):
            nodes["a"].set_beacon(b"x" * 300)
        for node in [*nodes.values(), c]:
            await node.close()
        await fabric.close()

    run_virtual(main())
