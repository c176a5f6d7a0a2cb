"""Byte layouts of ops, op keys and slots exactly as reference §2.1 and §2.5 spell them out.

Echo's pinned vectors only exercise UpsertNode and empty patches, so every other op encoding is pinned
here from the specification.
"""

from __future__ import annotations

import struct

from warpmesh.engine import (
    ECHO,
    SEED,
    AtomPayload,
    DeleteEdge,
    DeleteNode,
    DeleteWarpInstance,
    Descend,
    EdgeRecord,
    NodeRecord,
    OpenPortal,
    SetAttachment,
    SlotSet,
    TickPatch,
    UpsertEdge,
    UpsertNode,
    UpsertWarpInstance,
    edge_beta,
    node_alpha,
)
from warpmesh.engine.patch import _encode_ops

W, N, E, F, T, C = (bytes([i]) * 32 for i in (1, 2, 3, 4, 5, 6))
Z = bytes(32)
u64 = struct.Struct("<Q").pack


def test_op_digest_encodings() -> None:
    atom = AtomPayload(T, b"xyz")
    cases = [
        (UpsertWarpInstance(W, N, None), b"\x01" + W + N + b"\x00"),
        (UpsertWarpInstance(W, N, node_alpha(C, F)), b"\x01" + W + N + b"\x01\x01\x01" + C + F),
        (DeleteWarpInstance(W), b"\x02" + W),
        (UpsertNode(W, N, NodeRecord(T)), b"\x03" + W + N + T),
        (DeleteNode(W, N), b"\x04" + W + N),
        (UpsertEdge(W, EdgeRecord(E, F, N, T)), b"\x05" + W + F + E + N + T),
        (DeleteEdge(W, F, E), b"\x06" + W + F + E),
        (SetAttachment(node_alpha(W, N), atom), b"\x07\x01\x01" + W + N + b"\x01\x01" + T + u64(3) + b"xyz"),
        (SetAttachment(edge_beta(W, E), Descend(C)), b"\x07\x02\x02" + W + E + b"\x01\x02" + C),
        (SetAttachment(edge_beta(W, E), None), b"\x07\x02\x02" + W + E + b"\x00"),
        (OpenPortal(node_alpha(W, N), C, F, None), b"\x08\x01\x01" + W + N + C + F + b"\x00"),
        (OpenPortal(node_alpha(W, N), C, F, NodeRecord(T)), b"\x08\x01\x01" + W + N + C + F + b"\x01" + T),
    ]
    for op, expected in cases:
        assert op.encode() == expected, op
    ops = [op for op, _ in cases]
    assert b"".join(_encode_ops(ops)) == b"".join(op.encode() for op in ops)


def test_op_sort_keys() -> None:
    tags = b"\x01\x01" + bytes(30)
    assert OpenPortal(node_alpha(W, N), C, F, None).sort_key() == b"\x01" + W + tags + N
    assert UpsertWarpInstance(W, N, None).sort_key() == b"\x02" + W + W + Z
    assert DeleteWarpInstance(W).sort_key() == b"\x03" + W + W + Z
    assert DeleteEdge(W, F, E).sort_key() == b"\x04" + W + F + E
    assert DeleteNode(W, N).sort_key() == b"\x05" + W + N + Z
    assert UpsertNode(W, N, NodeRecord(T)).sort_key() == b"\x06" + W + N + Z
    assert UpsertEdge(W, EdgeRecord(E, F, N, T)).sort_key() == b"\x07" + W + F + E
    assert SetAttachment(edge_beta(W, E), None).sort_key() == b"\x08" + W + b"\x02\x02" + bytes(30) + E
    # within a kind, warp first: an op in a smaller warp sorts first whatever its ids
    assert UpsertNode(W, b"\xff" * 32, NodeRecord(T)).sort_key() < UpsertNode(N, Z, NodeRecord(T)).sort_key()


def test_slot_encoding_and_order_per_profile() -> None:
    slots = SlotSet.of(nodes={(W, N), (W, F)}, edges={(W, E)}, attachments={(1, W, N, 1), (2, W, E, 2)},
                       ports={(W, 7), (N, 7), (W, 1 << 40)})
    echo = slots.encode(ECHO)
    assert echo == (u64(8) + b"\x01" + W + N + b"\x01" + W + F + b"\x02" + W + E
                    + b"\x03\x01\x01" + W + N + b"\x03\x02\x02" + W + E
                    + b"\x04" + W + u64(7) + b"\x04" + W + u64(1 << 40) + b"\x04" + N + u64(7))
    # seed: bare u64 port keys, so the two port-7 slots of different warps merge
    assert slots.encode(SEED) == echo[:8].replace(u64(8), u64(7)) + echo[8:echo.index(b"\x04" + W)] + (
        b"\x04" + u64(7) + b"\x04" + u64(1 << 40))


def test_patch_canonicalises_last_wins() -> None:
    a = SetAttachment(node_alpha(W, N), AtomPayload(T, b"1"))
    b = SetAttachment(node_alpha(W, N), AtomPayload(T, b"2"))
    patch = TickPatch.new(0, Z, 1, ops=[b, UpsertNode(W, N, NodeRecord(T)), a])
    assert patch.ops == (UpsertNode(W, N, NodeRecord(T)), a)


def test_slots_follow_reference_rules() -> None:
    """n_read→in; n_write→in+out; same for edges and attachments; b_in→in; b_out→in+out."""
    from warpmesh.engine import Footprint
    from warpmesh.engine.patch import slots_of

    a = Footprint(W).read_node(N).write_node(F).read_edge(E).write_alpha(N).port_in(N, 1)
    b = Footprint(W).write_node(N).write_edge(E).read_beta(E).port_out(F, 2).read_node(F)
    ins, outs = slots_of([a, b])
    assert ins.nodes == ((W, N), (W, F)) and outs.nodes == ((W, N), (W, F))
    assert ins.edges == ((W, E),) and outs.edges == ((W, E),)
    assert ins.attachments == ((1, W, N, 1), (2, W, E, 2)) and outs.attachments == ((1, W, N, 1),)
    assert len(ins.ports) == 2 and len(outs.ports) == 1 and outs.ports[0] in ins.ports
    only_reads = slots_of([Footprint(W).read_node(N).read_alpha(N)])
    assert only_reads[1] == SlotSet() and only_reads[0].nodes == ((W, N),)
