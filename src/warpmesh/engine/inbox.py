"""The inbox system rules (Echo ``inbox.rs``): acknowledging and draining ingested intents.

:meth:`Engine.ingest_intent <warpmesh.engine.engine.Engine.ingest_intent>` links each new event node
from ``sim/inbox`` with a *pending* edge. These rules consume pending edges; event nodes stay, so a
re-ingested intent is still recognised as a duplicate. Register them like any rule.
"""

from __future__ import annotations

from warpmesh.engine.engine import INBOX_NODE, PENDING_EDGE_TYPE, RewriteRule
from warpmesh.engine.execution import TickDelta
from warpmesh.engine.footprint import Footprint
from warpmesh.engine.graph import GraphView
from warpmesh.engine.ident import Hash, NodeId, pending_edge_id

__all__ = ["ack_pending_rule", "dispatch_inbox_rule"]


def _ack_matches(view: GraphView, scope: NodeId) -> bool:
    edge = view.edge(pending_edge_id(INBOX_NODE, Hash(scope)))
    return edge is not None and edge.from_ == INBOX_NODE


def _ack_footprint(view: GraphView, scope: NodeId) -> Footprint:
    pending = pending_edge_id(INBOX_NODE, Hash(scope))
    return (
        Footprint(view.warp_id)
        .read_node(INBOX_NODE).read_node(scope).write_node(INBOX_NODE)
        .read_edge(pending).write_edge(pending).write_beta(pending)
    )


def _ack_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    delta.delete_edge(INBOX_NODE, pending_edge_id(INBOX_NODE, Hash(scope)))


def ack_pending_rule() -> RewriteRule:
    """``sys/ack_pending`` at an event node: delete its pending edge (HEAD footprint, reference §4)."""
    return RewriteRule("sys/ack_pending", _ack_matches, _ack_execute, _ack_footprint)


def _pending(view: GraphView) -> list:
    return sorted((e for e in view.edges_from(INBOX_NODE) if e.ty == PENDING_EDGE_TYPE), key=lambda e: e.id)


def _dispatch_matches(view: GraphView, scope: NodeId) -> bool:
    return scope == INBOX_NODE and bool(_pending(view))


def _dispatch_footprint(view: GraphView, scope: NodeId) -> Footprint:
    fp = Footprint(view.warp_id).read_node(INBOX_NODE)
    pending = _pending(view)
    for e in pending:
        fp.read_edge(e.id).write_edge(e.id).write_beta(e.id)
    if pending:
        fp.write_node(INBOX_NODE)
    return fp


def _dispatch_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    for e in _pending(view):
        delta.delete_edge(INBOX_NODE, e.id)


def dispatch_inbox_rule() -> RewriteRule:
    """``sys/dispatch_inbox`` at ``sim/inbox``: drain every pending edge at once (event nodes stay)."""
    return RewriteRule("sys/dispatch_inbox", _dispatch_matches, _dispatch_execute, _dispatch_footprint)
