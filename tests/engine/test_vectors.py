"""Echo's pinned vectors: ids (§3.4), shard routing (§3.1), GV-001..GV-004 (§3.2), digests (§3.3)."""

from __future__ import annotations

import struct

import pytest
from blake3 import blake3

from warpmesh.engine import (
    ECHO,
    SEED,
    Duplicate,
    Engine,
    GraphStore,
    NodeRecord,
    UpsertNode,
    WarpState,
    commit_hash_v2,
    compute_intent_id,
    compute_state_root,
    digest_len0_u64,
    make_channel_id,
    make_edge_id,
    make_node_id,
    make_rule_id,
    make_type_id,
    make_warp_id,
    pack_port_key,
    pending_edge_id,
    rule_pack_id,
    scope_hash,
    shard_of,
)
from warpmesh.engine.hashing import emissions_digest, op_emission_index_digest, tick_commit_hash_v2
from warpmesh.engine.patch import STATUS_COMMITTED, TickPatch

ROOT = make_node_id("root")
TEST_WARP = make_warp_id("test-warp")


def initial_store(warp: bytes = TEST_WARP) -> GraphStore:
    """Echo's ``create_initial_store``: one node ``root`` of type ``RootType``."""
    store = GraphStore(warp)  # type: ignore[arg-type]
    store.insert_node(ROOT, NodeRecord(make_type_id("RootType")))
    return store


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        (make_node_id("root"), "401e1d8fcbc26350901be9100a153e8eaf644560386edf68f876ffc1335cccf0"),
        (make_node_id("world-root"), "06effb3ccc7ccbec22b62d92b640266b27f940bd2abe9fb94ebb325d9f317479"),
        (make_node_id("sim"), "ee5023985033c82820ffc496cd8b906a4c62493283ee46a3bed68d22f7f8068d"),
        (make_node_id("sim/inbox"), "dc3c67a9a7dc63f39308afaee524093fe28cf93c5724adc9d826f7bc445aa6a9"),
        (make_type_id("RootType"), "dc17f9b4d84b40a62def2f4cacae101e024b67466881b77b54a443e958c8d788"),
        (make_type_id("edge:pending"), "6e9583459a82503f1b8bc8ac72339456975842661aa476b5100c47c4ed2480c4"),
        (make_rule_id("sys/ack_pending"), "c983eb6aacb7aa6f98d7727796dac90cf173f009469e3004849d847390547474"),
        (make_edge_id("edge:root/sim"), "cab90b7e889b849631b4a9a6b4b33ad09e721d8aaab8e198396914222b82f9c5"),
        (make_warp_id("root"), "3e888b35fc1d18b5487da6704fa71c3374e95dd52bc83963239b127f9293f228"),
        (make_warp_id("test-warp"), "fd0ea1ebe8f8d972e30bf683ffe35f568c2cbb0ecc860bc735e75f8e7fa7f386"),
        (blake3(b"rule:motion/update").digest(), "8c9fdd3840ee70704ee58b9169e0083f9a42273bff5af921ec1e7a1958e98473"),
        (rule_pack_id([]), "93027240ab099263be56afec706cccc0bcf70e8603b89c7b2186e650659747f0"),
        (digest_len0_u64(), "71e0a99173564931c0b8acc52d2685a8e39c64dc52e3d02390fdac2a12b155cb"),
        (
            pending_edge_id(make_node_id("sim/inbox"), compute_intent_id(b"test-intent-payload-001")),
            "6191ba71725e25e670028df9e9a3469d617f8e53539157ad457bb92a7b2e9bf0",
        ),
        (
            scope_hash(make_rule_id("sys/ack_pending"), make_warp_id("root"),
                       compute_intent_id(b"test-intent-payload-001")),
            "55a571b57a889ad516d3eacbc0fcee3923fc365f2eb34db5881bd15ec3a10c98",
        ),
    ],
)
def test_derived_id_vectors(made: bytes, expected: str) -> None:
    assert made.hex() == expected


def test_domain_separation_keeps_same_label_apart() -> None:
    ids = {make_node_id("x"), make_type_id("x"), make_edge_id("x"), make_warp_id("x"), make_channel_id("x"),
           compute_intent_id(b"x")}
    assert len(ids) == 6


@pytest.mark.parametrize(
    ("scope", "shard"),
    [
        (bytes.fromhex("BEBAFECAEFBEADDE") + bytes(24), 190),
        (bytes(32), 0),
        (b"\x2a" + bytes(31), 42),
        (b"\xff" * 8 + bytes(24), 255),
    ],
)
def test_shard_of_vectors(scope: bytes, shard: int) -> None:
    assert shard_of(scope) == shard
    assert shard_of(scope) == struct.unpack("<Q", scope[:8])[0] & 255


def test_shard_of_ignores_bytes_beyond_eight() -> None:
    head = bytes(range(1, 9))
    assert shard_of(head + b"\xaa" * 12 + b"\xcc" * 12) == shard_of(head + b"\xbb" * 12 + b"\xdd" * 12)


def test_pack_port_key_layout() -> None:
    node = bytes.fromhex("0102030405060708") + bytes(24)
    key = pack_port_key(node, 5, True)
    assert key >> 32 == 0x04030201
    assert (key >> 2) & 0x3FFF_FFFF == 5 and key & 1 == 1 and key & 2 == 0
    assert pack_port_key(node, 5, False) == key - 1


def test_gv001_empty_commit() -> None:
    engine = Engine.builder(initial_store(), ROOT).workers(1).build()
    snap = engine.commit(engine.begin())
    assert snap.state_root.hex() == "ca5b20c5da9c999a1ed795a93dfb7ce057fa26f84f1be99c9daa6b57c8725b5c"
    assert snap.patch_digest.hex() == "b1b99e0b4ecb7f32c3bfeb335e3213593f80e98047e7e61822079953e1984ac1"
    assert snap.hash.hex() == "16fc18a0622b1c4a177cbaf1618fc48f5433f9b1bebb92a522b15923ec9f75fe"
    assert snap.parents == ()


def test_gv001_seed_layout() -> None:
    engine = Engine.builder(initial_store(), ROOT).profile("seed").build()
    snap = engine.commit(engine.begin())
    assert snap.state_root.hex() == "0b626c714fd88f7dbfcc662043c2128b7824b138bd16af05940ec6114c8fadf5"
    assert snap.patch_digest.hex() == "abf25601cfb6eea9383e77cf784c8a9fdb51ba7430f2ab476eddef1d52c1b678"
    assert snap.hash.hex() == "4fcc212c288e3d32aedc17359ff40af0ea269ef657d4a1d70edd43b3d9572c14"


def test_gv004_ingest_then_empty_commit() -> None:
    engine = Engine.builder(initial_store(), ROOT).workers(1).build()
    accepted = engine.ingest_intent(b"test-intent-payload-001")
    assert accepted.intent_id.hex() == "b79ec7afbbe66524a17ae9bb1820f1551655ff5266bd8a3fad2dcb437ec3db5a"
    snap = engine.commit(engine.begin())
    assert snap.state_root.hex() == "ac7ac3aa3655a6c26de76668f4e19d562b7c48c9fa5aabfe3080fbb03d70e1c4"
    # Ingestion happens outside the tick: the patch is GV-001's.
    assert snap.patch_digest.hex() == "b1b99e0b4ecb7f32c3bfeb335e3213593f80e98047e7e61822079953e1984ac1"
    assert snap.hash.hex() == "33cb8f904a8c3124fd8a2b09125190d49a783c3367e1d044c6708e8015f4716d"
    assert engine.ingest_intent(b"test-intent-payload-001") == Duplicate(accepted.intent_id)


GV002 = [
    ("c8a5742eac00bd749b047eb370a216550d89506db974f33ea8e38267fbb99c30",
     "3a812930ebb500193e04eb54dd9d91464dc083bc5831d1f56cda003a979ba79b"),
    ("6233bde837b9ed096bb9cf4da088b473774ef93c6ac5b81d802671198f4ce1d7",
     "f636478b62ab0a9ba53fcb4265f16b249094715827c383d58ed508cf2033936d"),
    ("28e6bfae2d50e1a6844e5b2296b3919763ead2456193abb76afb11d71feb09e7",
     "cf7104578e38084fd967da50094d12001dd1c26bb43c3cf08d1469c2f1128355"),
    ("1a22ffbe3349630eca690769929680a1916c2cff141d03884c395e8174b7c13e",
     "3b0e8f0ba658ef7d0bd434335050804197f02916480571a43fb2266208e82daf"),
    ("449e6e3b7af6c76b0052747afaf5ff2779c6e3881523326926c0699e005ef9c4",
     "b2800a319ccc208e8d627b9b78c8c4d88c2494cfc9eeb4d98a2720b2a881b92c"),
    ("377d79e9a3f9fcda8201267903e79363a9bbe4f5d5cedb25615c94c659007e90",
     "983390108e4cc9d8d0c21fa47f0ee84eae115757d63d0b3f599925877c5bc30e"),
]


def worldline(ticks: int) -> list[tuple[str, str, str]]:
    """GV-002's worldline: tick t upserts the unreachable node ``node-{t}``; policy 0, zero rule pack."""
    state = WarpState.from_root_store(initial_store(), ROOT)
    out = []
    parent: bytes | None = None
    for t in range(ticks):
        op = UpsertNode(TEST_WARP, make_node_id(f"node-{t}"), NodeRecord(make_type_id(f"Type{t}")))
        patch = TickPatch.new(0, bytes(32), STATUS_COMMITTED, ops=[op])
        patch.apply_to(state)
        root = compute_state_root(state, TEST_WARP, ROOT, ECHO)
        digest = patch.digest(ECHO)
        parent = commit_hash_v2(ECHO, root, [parent] if parent else [], digest, 0)
        out.append((root.hex(), digest.hex(), parent.hex()))
    return out


def test_gv002_worldline_chain() -> None:
    chain = worldline(6)
    for t, (root, digest, commit) in enumerate(chain):
        assert root == "c867d82d58d4d32dbba9b3df68fd2db5b5fac7d798b863c31ae219593b15941d", t
        assert (digest, commit) == GV002[t], t


def test_gv003_fork_prefix_equals_original() -> None:
    full = worldline(10)
    fork = worldline(6)  # GV-003: a fork at tick 5 carries ticks 0..=5 unchanged
    assert fork == full[:6]
    assert fork[5][2] == "983390108e4cc9d8d0c21fa47f0ee84eae115757d63d0b3f599925877c5bc30e"


def test_seed_profile_drops_every_prefix() -> None:
    assert SEED.state_root_prefix == SEED.patch_digest_prefix == SEED.commit_id_prefix == b""
    assert ECHO.commit_id_prefix == b"echo:commit_id:v2\x00"


def make_hash(seed: int) -> bytes:
    """The DIND harness helper: ``make_hash(s)[i] = (s + 17·i) mod 256``."""
    return bytes((seed + 17 * i) % 256 for i in range(32))


def test_emission_and_tick_commit_digest_vectors() -> None:
    a, b = make_channel_id("alpha"), make_channel_id("beta")
    emissions = emissions_digest([(b, bytes([4, 5])), (a, bytes([1, 2, 3]))])
    assert emissions.hex() == "9cd163d40fd2b8b089c5bed80c328ffc5695926cdbe2aaf1a99c83adf0bbe2ea"
    index = op_emission_index_digest([(make_hash(0xBB), [a]), (make_hash(0xAA), [b, a])])
    assert index.hex() == "cbb1f5f73d0b5da137b0bde7b7d242fb44b8b6d0f5d4f8391105b6c36aa7a974"
    only_aa = op_emission_index_digest([(make_hash(0xAA), [a, b])])
    tick = tick_commit_hash_v2(make_hash(0xAB), make_hash(0xCD), 42, [make_hash(0x11)], make_hash(0x22),
                               make_hash(0x33), emissions, only_aa)
    assert tick.hex() == "8a769a8d8dd847be4ff546f1214a44d49446f05a0a10450b5d0ec21bd68613e9"


def test_tick_commit_hash_v2_constant_vector() -> None:
    got = tick_commit_hash_v2(b"\xab" * 32, b"\xcd" * 32, 42, [b"\x11" * 32], b"\x22" * 32, b"\x33" * 32,
                              b"\x44" * 32, b"\x55" * 32)
    assert got.hex() == "a83bc43c4c35757493c95eaa14ba1c08403f94f02a3955b0c05b73a1af3618bf"
