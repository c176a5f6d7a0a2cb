"""``/metrics`` parsed by prometheus_client's own parser: its counters are the board's (in-process mesh)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

import warpmesh
from warpmesh.observe.http import DashboardServer


def _ops() -> warpmesh.OpRegistry:
    reg = warpmesh.OpRegistry()
    reg.register("sq", lambda x: x * x)
    reg.register("boom", _boom)
    return reg


def _boom() -> None:
    raise RuntimeError("kaboom")


def test_metrics_parse_and_match_the_board() -> None:
    async def main() -> tuple[str, dict[str, Any], str, int]:
        fabric = warpmesh.MemoryFabric()
        async with (warpmesh.open_node("a", fabric=fabric, ops=_ops()) as a,
                    warpmesh.open_node("b", fabric=fabric, ops=_ops()) as b,
                    warpmesh.open_node("c", fabric=fabric, ops=_ops()) as c):
            server = await DashboardServer(a.observer, "127.0.0.1", 0).start()
            try:
                for i in range(30):
                    await (a, b, c)[i % 3].enqueue(f"t{i}", "sq", i)
                await b.enqueue("bad", "boom")
                for i in range(30):
                    await a.result(f"t{i}", 10)
                await a.outcome("bad", 10)
                await asyncio.sleep(0.5)  # the other peers' counters reach a
                async with aiohttp.ClientSession() as http:
                    async with http.get(server.url + "metrics") as r:
                        text, ctype = await r.text(), r.headers["Content-Type"]
                    async with http.get(server.url + "api/summary") as r:
                        summary = json.loads(await r.text())
                    async with http.post(server.url + "metrics") as r:
                        refused = r.status
            finally:
                await server.close()
            return text, summary, ctype, refused

    text, summary, ctype, refused = asyncio.run(main())
    assert ctype.startswith("text/plain")
    assert refused == 405  # read-only
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    jobs = summary["jobs"]
    assert jobs["finished"] == 30 and jobs["failed"] == 1 and jobs["enqueued"] == 31
    for name in ("finished", "failed", "enqueued", "duplicates", "stolen"):
        assert samples[(f"warpmesh_jobs_{name}_total", ())] == jobs[name], name
    for name, value in summary["mesh_counters"].items():
        assert samples[("warpmesh_mesh_total", (("name", name),))] == value, name
    assert samples[("warpmesh_queue_depth", ())] == jobs["queue_depth"] == 0
    for p in summary["peers"]:
        assert samples[("warpmesh_ring_share", (("peer", p["peer"]),))] == p["ring_share"]
    runs = summary["counters"]["finished"] + summary["counters"]["failed"]
    assert samples[("warpmesh_job_duration_seconds_count", ())] == runs
    assert samples[("warpmesh_events_total", (("kind", "finished"),))] == summary["counters"]["finished"]
    # Replication lag: a's view of b and c (at rest, they confirmed every delta of a's).
    for peer in ("b", "c"):
        row = next(p for p in summary["peers"] if p["peer"] == peer)
        assert row["lag"] == {"batches": 0, "seconds": 0.0}, row
        assert samples[("warpmesh_replication_lag_batches", (("peer", peer),))] == 0
        assert samples[("warpmesh_replication_lag_seconds", (("peer", peer),))] == 0


def test_raft_commit_latency_is_a_histogram_per_node() -> None:
    from warpmesh.observe.board import Board
    from warpmesh.observe.hub import Event
    from warpmesh.observe.metrics import metrics_text
    from warpmesh.raft.config import COMMIT_LATENCY_BUCKETS

    board = Board()
    counts = [0] * len(COMMIT_LATENCY_BUCKETS)
    counts[1], counts[3], counts[-1] = 5, 2, 1  # <= 1 ms, <= 5 ms, beyond 10 s
    detail = {"leader": "r1", "term": 2, "commit": 9, "role": "leader",
              "commit_latency": {"buckets": counts, "sum": 12.5}}
    board.apply(Event(seq=1, kind="raft_commit", at=1.0, node="r1", job=None, peer="r1", detail=detail))
    text = metrics_text(lambda: board).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    name = "warpmesh_raft_commit_latency_seconds"
    assert samples[(f"{name}_bucket", (("le", "0.0005"), ("node", "r1")))] == 0
    assert samples[(f"{name}_bucket", (("le", "0.001"), ("node", "r1")))] == 5
    assert samples[(f"{name}_bucket", (("le", "0.005"), ("node", "r1")))] == 7
    assert samples[(f"{name}_bucket", (("le", "+Inf"), ("node", "r1")))] == 8
    assert samples[(f"{name}_count", (("node", "r1"),))] == 8
    assert samples[(f"{name}_sum", (("node", "r1"),))] == 12.5
