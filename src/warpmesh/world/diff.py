"""Structural diff of two engine states (pure): what a diverged replica holds that the majority does not.

``diff_states(majority, local)`` compares every warp instance's nodes (by type), edges (by endpoints
and type) and attachments (node alpha and edge beta) and lists ids, hex-encoded and sorted, under
``added`` (only in ``local``), ``removed`` (only in the majority's) and ``changed``.
"""

from __future__ import annotations

from typing import Any

from warpmesh.engine.state import WarpState

__all__ = ["diff_states", "is_empty"]


def _cmp(a: dict[bytes, Any], b: dict[bytes, Any]) -> dict[str, list[str]]:
    return {
        "added": sorted(k.hex() for k in b.keys() - a.keys()),
        "removed": sorted(k.hex() for k in a.keys() - b.keys()),
        "changed": sorted(k.hex() for k in a.keys() & b.keys() if a[k] != b[k]),
    }


def _flatten(state: WarpState) -> tuple[dict[bytes, Any], dict[bytes, Any], dict[bytes, Any]]:
    nodes: dict[bytes, Any] = {}
    edges: dict[bytes, Any] = {}
    atts: dict[bytes, Any] = {}
    multi = len(state.stores) > 1
    for warp, store in state.stores.items():
        pre = warp if multi else b""
        for n, rec in store.nodes.items():
            nodes[pre + n] = rec
        for n, v in store.node_attachments.items():
            atts[pre + n] = v
        for bucket in store.edges_from.values():
            for eid, erec in bucket.items():
                edges[pre + eid] = erec
        for eid, v in store.edge_attachments.items():
            atts[pre + eid] = v
    return nodes, edges, atts


def diff_states(majority: WarpState, local: WarpState) -> dict[str, dict[str, list[str]]]:
    """``{"nodes"|"edges"|"attachments": {"added", "removed", "changed": [hex id, ...]}}``."""
    mn, me, ma = _flatten(majority)
    ln, le, la = _flatten(local)
    return {"nodes": _cmp(mn, ln), "edges": _cmp(me, le), "attachments": _cmp(ma, la)}


def is_empty(diff: dict[str, dict[str, list[str]]]) -> bool:
    return not any(v for part in diff.values() for v in part.values())
