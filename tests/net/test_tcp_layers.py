"""The layers above the seam run unchanged on TcpMesh: Quilter (ORSet) over a MuxSeam channel
converges through a dropped link and a crashed-and-restarted peer."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.net.tcp_helpers import close_all, converged, mesh, run
from warpmesh.crdt import base as crdt
from warpmesh.crdt.sets import ORSet
from warpmesh.net import MuxSeam
from warpmesh.net.tcp import TcpMesh
from warpmesh.quilt import Quilter, QuilterConfig

QUILT = QuilterConfig(anti_entropy_interval=0.2, resend_after=0.2)
TAG = 0x11


class _Codec:
    """ORSet wire form through warpmesh.crdt's tagged encoding (a StateCodec)."""

    def encode(self, state: ORSet) -> Any:
        return crdt.encode(state)

    def decode(self, wire: Any) -> ORSet:
        state = crdt.decode(wire)
        if not isinstance(state, ORSet):
            raise ValueError("not an ORSet")
        return state

    def digest(self, state: ORSet) -> bytes:
        return crdt.digest(state)


async def _replica(m: TcpMesh) -> tuple[MuxSeam, Quilter[ORSet]]:
    mux = MuxSeam(m)
    q: Quilter[ORSet] = Quilter(mux.channel(TAG), ORSet(), stream=f"{m.self_id}@{m.incarnation}",
                                 codec=_Codec(), config=QUILT)
    return mux, await q.start()


def test_quilter_over_tcp_converges_through_link_loss_and_a_restart() -> None:
    async def main() -> None:
        a = await mesh("a")
        b = await mesh("b", [a.address])  # type: ignore[list-item]
        c = await mesh("c", [b.address])  # type: ignore[list-item]
        meshes = {"a": a, "b": b, "c": c}
        await converged(meshes.values())
        reps = {k: await _replica(m) for k, m in meshes.items()}
        want: set[str] = set()
        try:
            for i in range(30):
                for k, (_, q) in reps.items():
                    e = f"{k}-{i}"
                    q.mutate(lambda s, e=e, r=f"{k}@{meshes[k].incarnation}": s.add(r, e))
                    want.add(e)
                if i == 10:
                    a.drop_link("b")
                await asyncio.sleep(0.005)
            # Crash c mid-stream and bring it back with a new incarnation (and replica id).
            await reps["c"][1].close()
            await c.abort()
            c2 = await mesh("c", [a.address], incarnation=2)  # type: ignore[list-item]
            meshes["c"] = c2
            reps["c"] = await _replica(c2)
            reps["c"][1].mutate(lambda s: s.add("c@2", "c-reborn"))
            want.add("c-reborn")
            await converged(meshes.values())
            for _, q in reps.values():
                await q.wait_for(lambda s: s.elements == frozenset(want), timeout=20.0)
            assert a.stats.peers["b"].links >= 2  # the dropped link came back
        finally:
            for mux, q in reps.values():
                await q.close()
                await mux.close()
            await close_all(meshes.values())

    run(main())
