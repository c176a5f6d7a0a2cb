"""``/metrics``: the board in Prometheus text format, through ``prometheus_client`` (a runtime module).

A collector reads the :class:`~warpmesh.observe.board.Board` at scrape time, so the numbers a scrape
sees are the board's own (the page and ``warpmesh top`` show the same counters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from warpmesh.observe.board import DURATION_BUCKETS, JOB_KINDS, PEER_KINDS, Board
from warpmesh.raft.config import COMMIT_LATENCY_BUCKETS

__all__ = ["CONTENT_TYPE", "BoardCollector", "metrics_text"]

#: The Content-Type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class BoardCollector(Collector):
    """Exports one board: event counters, duplicates, steals, queue depth, durations, Raft, memo."""

    def __init__(self, board: Callable[[], Board]) -> None:
        self._board = board

    def collect(self) -> Iterator[Any]:
        board = self._board()
        counts = board.counters()
        events = CounterMetricFamily("warpmesh_events", "Events observed, by kind.", labels=["kind"])
        for kind in (*JOB_KINDS, *PEER_KINDS):
            events.add_metric([kind], counts[kind])
        yield events
        summary = board.summary(0.0)
        jobs = summary["jobs"]
        yield CounterMetricFamily("warpmesh_jobs_finished", "Runs that finished with an answer, mesh-wide.",
                                  value=jobs["finished"])
        yield CounterMetricFamily("warpmesh_jobs_failed", "Runs that failed, mesh-wide.", value=jobs["failed"])
        yield CounterMetricFamily("warpmesh_jobs_enqueued", "Jobs enqueued, mesh-wide.", value=jobs["enqueued"])
        yield CounterMetricFamily("warpmesh_jobs_duplicates", "Runs whose answer was already on the board.",
                                  value=jobs["duplicates"])
        yield CounterMetricFamily("warpmesh_jobs_stolen", "Jobs moved by work stealing.", value=jobs["stolen"])
        mesh = CounterMetricFamily("warpmesh_mesh", "The replicated counters board, by name.", labels=["name"])
        for name, value in sorted(summary["mesh_counters"].items()):
            mesh.add_metric([name], value)
        yield mesh
        yield CounterMetricFamily("warpmesh_events_dropped", "Events a slow reader lost (never slowed the node).",
                                  value=counts["events_dropped"])
        yield CounterMetricFamily("warpmesh_memo_hits", "Isolate memo hits.", value=counts["memo_hits"])
        yield CounterMetricFamily("warpmesh_memo_misses", "Isolate memo misses.", value=counts["memo_misses"])
        yield GaugeMetricFamily("warpmesh_queue_depth", "Tasks on the shared queue.",
                                value=summary["jobs"]["queue_depth"])
        yield GaugeMetricFamily("warpmesh_jobs_running", "Runs started and not yet finished.",
                                value=summary["jobs"]["running"])
        state = GaugeMetricFamily("warpmesh_peer_up", "1 for a live peer, 0 otherwise.", labels=["peer", "state"])
        share = GaugeMetricFamily("warpmesh_ring_share", "A worker's share of the hash ring.", labels=["peer"])
        for p in summary["peers"]:
            state.add_metric([p["peer"], p["state"]], 1.0 if p["state"] == "live" else 0.0)
            share.add_metric([p["peer"]], p["ring_share"])
        yield state
        yield share
        lag_b = GaugeMetricFamily("warpmesh_replication_lag_batches",
                                  "Our board deltas a peer has not confirmed yet.", labels=["peer"])
        lag_s = GaugeMetricFamily("warpmesh_replication_lag_seconds",
                                  "Age of the oldest board delta a peer has not confirmed.", labels=["peer"])
        for p in summary["peers"]:
            if p.get("lag") is not None:
                lag_b.add_metric([p["peer"]], p["lag"]["batches"])
                lag_s.add_metric([p["peer"]], p["lag"]["seconds"])
        yield lag_b
        yield lag_s
        cumulative, buckets = 0, []
        for bound, n in zip(DURATION_BUCKETS, board.duration_buckets):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily("warpmesh_job_duration_seconds", "How long runs took.", buckets=buckets,
                                    sum_value=board.duration_sum)
        term = GaugeMetricFamily("warpmesh_raft_term", "Raft term per node.", labels=["node"])
        commit = GaugeMetricFamily("warpmesh_raft_commit_index", "Raft commit index per node.", labels=["node"])
        for node, r in sorted(board.raft.items()):
            term.add_metric([node], float(r.get("term") or 0))
            commit.add_metric([node], float(r.get("commit") or 0))
        yield term
        yield commit
        latency = HistogramMetricFamily("warpmesh_raft_commit_latency_seconds",
                                        "Raft proposals: propose called -> committed, per proposing node.",
                                        labels=["node"])
        for node, r in sorted(board.raft.items()):
            hist = r.get("commit_latency")
            if not isinstance(hist, dict) or len(hist.get("buckets", ())) != len(COMMIT_LATENCY_BUCKETS):
                continue
            cumulative, rows = 0, []
            for bound, n in zip(COMMIT_LATENCY_BUCKETS, hist["buckets"]):
                cumulative += int(n)
                rows.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([node], rows, sum_value=float(hist.get("sum", 0.0)))
        yield latency


def metrics_text(board: Callable[[], Board]) -> bytes:
    """One scrape of ``board`` in the text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BoardCollector(board))
    return generate_latest(registry)
