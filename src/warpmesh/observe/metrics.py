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


def metrics_text(board: Callable[[], Board]) -> bytes:
    """One scrape of ``board`` in the text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BoardCollector(board))
    return generate_latest(registry)
