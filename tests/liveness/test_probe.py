"""SWIM-style probing (HeartbeatConfig.probe): flat cost per peer, detection, helpers, refutation."""

from __future__ import annotations

import asyncio
import random

import pytest

from warpmesh.liveness import FailureDetector, HeartbeatConfig, Liveness, PeerHealth
from warpmesh.liveness.probe import PROBE, PROBE_REQ, RELAYED, SUSPECT, Outgoing, Prober
from warpmesh.net import MuxSeam
from warpmesh.net.memory import MemoryFabric
from warpmesh.sim import run_virtual
from warpmesh.wire.frame import encode_frame

CFG = HeartbeatConfig(interval=0.5, timeout=2.0, lost_after=10.0, probe=True)


def _core(peers: str = "bcde") -> tuple[Prober, FailureDetector]:
    d = FailureDetector(CFG)
    for p in peers:
        d.track(p, 0.0)
    prober = Prober("a", CFG, random.Random(1))
    prober.set_peers(["a", *peers])
    return prober, d


# -- the pure core ---------------------------------------------------------------------------
def test_silence_alone_is_no_evidence_in_probe_mode() -> None:
    d = FailureDetector(CFG)
    d.track("b", 0.0)
    assert d.tick(100.0) == [] and d.state("b") is PeerHealth.HEALTHY


def test_one_probe_per_interval_to_the_peer_with_the_oldest_news() -> None:
    prober, d = _core()
    d.heard("b", 0.2)
    d.heard("c", 0.1)
    d.heard("d", 0.3)
    d.heard("e", 0.4)
    out, failed = prober.tick(1.0, d)
    assert out == [Outgoing("c", PROBE, None)] and failed == []
    d.heard("c", 1.01)  # it answered
    out, _ = prober.tick(1.5, d)
    assert out == [Outgoing("b", PROBE, None)]
    d.heard("b", 1.51)
    # d, e, then c and b again: a round robin that emerges from "oldest news first"
    order = []
    for i in range(4):
        now = 2.0 + i * 0.5
        out, _ = prober.tick(now, d)
        [o] = out
        order.append(o.to)
        d.heard(o.to, now + 0.01)
    assert order == ["d", "e", "c", "b"]
    # News from a peer within the last interval: nobody is due.
    for p in "bcde":
        d.heard(p, 4.0)
    assert prober.tick(4.2, d) == ([], [])


def test_an_unanswered_probe_asks_helpers_then_fails() -> None:
    prober, d = _core()
    for p in "bcde":
        d.heard(p, 0.5)
    out, _ = prober.tick(1.0, d)
    target = out[0].to
    assert target is not None
    out, failed = prober.tick(1.4, d)  # a quarter of the timeout not yet over
    assert all(o.kind != PROBE_REQ for o in out) and not failed
    out, failed = prober.tick(1.5, d)
    reqs = [o for o in out if o.kind == PROBE_REQ]
    assert len(reqs) == 3 and {o.body for o in reqs} == {target} and target not in {o.to for o in reqs}
    out, failed = prober.tick(2.9, d)
    assert not failed
    _, failed = prober.tick(3.0, d)
    assert failed == [target]
    assert d.suspect(target, 3.0) is not None and d.state(target) is PeerHealth.UNRESPONSIVE


def test_a_relayed_answer_or_a_late_frame_saves_the_suspect() -> None:
    prober, d = _core()

    def tick(now: float, quiet: str) -> list[str]:
        for p in "bcde":
            if p != quiet:
                d.heard(p, now)  # the others chatter: only ``quiet`` is ever due
        return prober.tick(now, d)[1]

    d.heard("b", 0.0)
    assert tick(1.0, "b") == [] and prober.inflight == {"b"}
    tick(1.5, "b")
    prober.on_relayed("b")
    assert tick(3.5, "b") == []  # (b is probed again: a relayed answer is no news of our own)
    tick(4.0, "c")
    assert "c" in prober.inflight
    d.heard("c", 5.9)  # any frame from it, however late, before the timeout
    assert tick(6.5, "c") == [] and d.state("c") is PeerHealth.HEALTHY


def test_a_helper_probes_once_for_many_requesters_and_relays_to_each() -> None:
    prober, d = _core()
    assert prober.on_probe_request("b", "e", 1.0, d) == [Outgoing("e", PROBE, None)]
    assert prober.on_probe_request("c", "e", 1.1, d) == []  # one probe serves both
    assert prober.relaying
    assert sorted(prober.heard("e", 1.2), key=lambda o: str(o.to)) == [
        Outgoing("b", RELAYED, "e"), Outgoing("c", RELAYED, "e")]
    assert not prober.relaying
    d.heard("e", 2.0)
    assert prober.on_probe_request("b", "e", 2.1, d) == [Outgoing("b", RELAYED, "e")]  # heard just now
    # Nonsense is dropped and counted: ourselves, strangers, non-strings.
    assert prober.on_probe_request("b", "a", 3.0, d) == []
    assert prober.on_probe_request("b", "zz", 3.0, d) == []
    assert prober.on_probe_request("b", 7, 3.0, d) == []
    assert prober.stats["bad_frames"] == 1


def test_a_down_peer_is_probed_once_per_timeout_without_helpers_or_new_rumours() -> None:
    prober, d = _core("bc")
    d.heard("c", 0.0)
    out, _ = prober.tick(3.0, d)
    assert d.suspect("b", 3.0) is not None
    sent: list[Outgoing] = []
    failed_all: list[str] = []
    now = 3.0
    while now < 13.0:
        now += 0.5
        d.heard("c", now)  # c chatters; only b is down
        out, failed = prober.tick(now, d)
        sent += out
        failed_all += failed
    probes_b = [o for o in sent if o.to == "b" and o.kind == PROBE]
    assert 4 <= len(probes_b) <= 6  # every timeout (2 s) over 10 s
    assert not [o for o in sent if o.kind == PROBE_REQ]
    assert all(d.suspect(p, now) is None for p in failed_all)  # already down: no new broadcast


def test_a_suspicion_is_believed_only_without_fresh_news_and_refuted_by_its_subject() -> None:
    prober, d = _core()
    d.heard("b", 5.0)
    assert prober.on_suspect("b", 6.0) == "believe"
    assert d.suspect("b", 6.0) is None  # we heard b a second ago ourselves
    assert d.suspect("c", 6.0) is not None
    assert prober.on_suspect("a", 6.0) == "refute"
    assert prober.on_suspect("a", 6.1) is None  # one refutation per half interval
    assert prober.on_suspect("a", 6.3) == "refute"
    assert prober.on_suspect("zz", 6.3) is None


def test_unresponsive_becomes_lost_after_the_rest_of_lost_after() -> None:
    d = FailureDetector(CFG)
    d.track("b", 0.0)
    d.suspect("b", 5.0)
    assert d.next_deadline(5.0) == pytest.approx(13.0)
    assert d.tick(12.9) == []
    [ev] = d.tick(13.1)
    assert ev.new is PeerHealth.LOST
    ev2 = d.heard("b", 20.0)
    assert ev2 is not None and ev2.new is PeerHealth.RECOVERED
    [ev] = d.tick(22.0)
    assert ev.new is PeerHealth.HEALTHY


# -- the runtime over a simulated network ------------------------------------------------------
async def _mesh(fabric: MemoryFabric, n: int) -> list[Liveness]:
    return [await Liveness(MuxSeam(fabric.join(f"p{i}")), CFG).start() for i in range(n)]


def _beat_bytes(n: int, seconds: float) -> float:
    async def main() -> float:
        fabric = MemoryFabric(seed=3, classify=lambda d: "beat" if d[:1] == b"\x10" else "app")
        nodes = await _mesh(fabric, n)
        await asyncio.sleep(1.0)
        b0 = fabric.bytes_by_kind["beat"]
        await asyncio.sleep(seconds)
        per_peer = (fabric.bytes_by_kind["beat"] - b0) / n / seconds
        assert all(h.alive for node in nodes for h in node.health.value.values())
        for node in nodes:
            await node.close()
        await fabric.close()
        return per_peer

    return run_virtual(main())


def test_a_quiet_mesh_costs_each_peer_the_same_at_8_and_32_peers() -> None:
    small, big = _beat_bytes(8, 10.0), _beat_bytes(32, 10.0)
    assert big <= small * 1.25, (small, big)
    assert big < 40  # bytes per peer per second; heartbeats to every peer cost ~250 here


def test_an_isolated_peer_is_suspected_by_all_and_readmitted_after_the_heal() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=4)
        nodes = await _mesh(fabric, 12)
        await asyncio.sleep(2.0)
        loop = asyncio.get_running_loop()
        cut = loop.time()
        fabric.isolate("p5")
        others = [n for n in nodes if n.self_id != "p5"]

        async def all_see(pred: object) -> float:
            while not all(pred(n) for n in others):  # type: ignore[operator]
                await asyncio.sleep(0.05)
            return loop.time()

        seen = await asyncio.wait_for(all_see(lambda n: n.state("p5") is PeerHealth.UNRESPONSIVE), 10.0)
        assert seen - cut < 5.0, seen - cut  # found by someone's probe, then told to all at once
        await asyncio.sleep(0.1)
        assert all(n.state(p.self_id) is not PeerHealth.UNRESPONSIVE for n in others for p in others if p is not n)
        p5 = nodes[5]
        await asyncio.sleep(3.0)
        assert sum(1 for h in p5.health.value.values() if not h.alive) >= 9  # it suspects its probes' targets
        healed = loop.time()
        fabric.heal()
        back = await asyncio.wait_for(all_see(lambda n: n.state("p5") in (PeerHealth.RECOVERED, PeerHealth.HEALTHY)), 10.0)
        assert back - healed < 3.0, back - healed
        for node in nodes:
            await node.close()
        await fabric.close()

    run_virtual(main())


def test_a_broken_link_between_two_live_peers_suspects_neither() -> None:
    # a cannot reach x, everyone else can: helpers relay x's answers, so nobody suspects x (a
    # heartbeat detector would have a drop x, and a's silence would cost x nothing but a's news).
    async def main() -> None:
        fabric = MemoryFabric(seed=5)
        nodes = await _mesh(fabric, 8)
        await asyncio.sleep(1.0)
        fabric.partition({"p0"}, {"p1"})
        await asyncio.sleep(20.0)
        for n in nodes:
            assert all(h.alive for h in n.health.value.values()), (n.self_id, n.health.value)
        assert nodes[0].prober is not None and nodes[0].prober.stats["helper_requests"] > 0
        assert sum(n.prober.stats["relayed"] for n in nodes if n.prober) > 0
        for node in nodes:
            await node.close()
        await fabric.close()

    run_virtual(main())


def test_a_false_suspicion_is_refuted_at_once() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=6)
        nodes = await _mesh(fabric, 24)
        await asyncio.sleep(5.0)  # quiet: most peers have not heard p3 within the timeout
        liar = nodes[0]
        await liar._channel.broadcast(encode_frame(SUSPECT, "p3"))
        await asyncio.sleep(0.1)
        believers = [n.self_id for n in nodes if n.prober is not None and n.prober.stats["believed"]]
        assert all(n.state("p3") in (PeerHealth.HEALTHY, PeerHealth.RECOVERED) for n in nodes if n.self_id != "p3")
        assert nodes[3].prober is not None and nodes[3].prober.stats["refuted"] == 1
        assert believers, "the test needs someone to have believed it"
        for node in nodes:
            await node.close()
        await fabric.close()

    run_virtual(main())
