"""The World runtime against hostile input: malformed entries and fetch frames are counted, not fatal."""

from __future__ import annotations

import asyncio

from warpmesh.net.memory import MemoryFabric
from warpmesh.net.mux import MuxSeam
from warpmesh.raft.runtime import RaftNode
from warpmesh.raft.storage import InMemoryRaftStorage
from warpmesh.raft.transport import SeamRaftTransport
from warpmesh.sim.loop import run_virtual
from warpmesh.wire.frame import pack
from warpmesh.world.rules import entity_motion, spawn
from warpmesh.world.runtime import WORLD_FETCH_CHANNEL, WORLD_RAFT_CHANNEL, World


def test_malformed_entries_and_fetch_frames_are_refused_and_counted() -> None:
    async def main() -> tuple[int, int, int, object]:
        fabric = MemoryFabric(seed=1)
        mux = MuxSeam(fabric.join("p1"))
        node = await RaftNode("p1", SeamRaftTransport(mux.channel(WORLD_RAFT_CHANNEL)), InMemoryRaftStorage(),
                              voters=["p1"], seed=1).start()
        w = await World(node, mux.channel(WORLD_FETCH_CHANNEL), ["p1"]).start()
        evil = MuxSeam(fabric.join("evil")).channel(WORLD_FETCH_CHANNEL)
        await asyncio.sleep(1.0)  # elected
        for junk in (b"\x00garbage", pack([1, "x", 3]), pack([2, 1, 0, 5, 2, b"x"]), pack({"a": 1}),
                     pack([1, 7, 99])):
            await evil.send_to("p1", junk)
        await node.propose(b"not a world entry")
        await node.propose(pack([2, "tick"]))
        await w.submit([spawn("a", (0, 0, 0), (1, 0, 0))])
        await w.advance()
        await w.advance()
        await asyncio.sleep(0.1)
        out = (w.stats["fetch_refused"], w.replica.malformed, w.tick.value, entity_motion(w.replica.engine, "a"))
        await w.close()
        await node.close()
        await fabric.close()
        return out

    refused, malformed, tick, motion = run_virtual(main())
    assert refused == 4  # the well-formed request for a missing tick is answered GONE, not refused
    assert malformed == 2
    assert tick == 2 and motion is not None and motion[0] == 1 << 32
