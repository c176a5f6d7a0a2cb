"""Hash profiles and the small digests of a commit (reference §2.4–§2.5, §8).

Two byte layouts exist in Echo's history and both are pinned by golden files:

* ``echo`` — current Echo (HEAD ``c354d531``): state root, patch digest and commit id start with the
  domain-separation prefixes ``echo:state_root:v1\\0``, ``echo:patch_digest:v1\\0`` and
  ``echo:commit_id:v2\\0``, and a port slot carries its warp id. The default.
* ``seed`` — the layout of the tour (Echo ``720eea7a``): no prefixes, bare port keys, and the DIND state
  hash prefix ``DIND_STATE_HASH_V2\\0``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from blake3 import blake3

from warpmesh.engine.ident import Hash

__all__ = [
    "ECHO",
    "POLICY_ID_NO_POLICY_V0",
    "PROFILES",
    "SEED",
    "HashProfile",
    "commit_hash_v1",
    "commit_hash_v2",
    "digest_len0_u64",
    "emissions_digest",
    "get_profile",
    "op_emission_index_digest",
    "rule_pack_id",
    "tick_commit_hash_v2",
]

_u16 = struct.Struct("<H").pack
_u32 = struct.Struct("<I").pack
_u64 = struct.Struct("<Q").pack

#: ``u32::from_le_bytes(b"NOP0")``: the policy id when no policy is configured.
POLICY_ID_NO_POLICY_V0 = int.from_bytes(b"NOP0", "little")


@dataclass(frozen=True, slots=True)
class HashProfile:
    """Which byte layout the engine hashes with."""

    name: Literal["echo", "seed"]
    state_root_prefix: bytes
    patch_digest_prefix: bytes
    commit_id_prefix: bytes
    dind_state_prefix: bytes
    port_slot_has_warp: bool


ECHO = HashProfile(
    name="echo",
    state_root_prefix=b"echo:state_root:v1\x00",
    patch_digest_prefix=b"echo:patch_digest:v1\x00",
    commit_id_prefix=b"echo:commit_id:v2\x00",
    dind_state_prefix=b"echo:state_root:v1\x00",
    port_slot_has_warp=True,
)
SEED = HashProfile(
    name="seed",
    state_root_prefix=b"",
    patch_digest_prefix=b"",
    commit_id_prefix=b"",
    dind_state_prefix=b"DIND_STATE_HASH_V2\x00",
    port_slot_has_warp=False,
)
PROFILES: dict[str, HashProfile] = {"echo": ECHO, "seed": SEED}


def get_profile(profile: str | HashProfile) -> HashProfile:
    """Resolve a profile name (``"echo"`` or ``"seed"``) or pass a profile through."""
    if isinstance(profile, HashProfile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown hash profile {profile!r}: use 'echo' or 'seed'") from None


_LEN0 = Hash(blake3(_u64(0)).digest())


def digest_len0_u64() -> Hash:
    """``blake3(u64le(0))``: Echo's digest of an empty list (not ``blake3(b"")``)."""
    return _LEN0


def rule_pack_id(rule_ids: list[bytes]) -> Hash:
    """``blake3(u16le(1) ‖ u64le(n) ‖ ids…)`` over the sorted, deduplicated ids of all registered rules."""
    ids = sorted(set(rule_ids))
    return Hash(blake3(_u16(1) + _u64(len(ids)) + b"".join(ids)).digest())


def commit_hash_v2(
    profile: HashProfile, state_root: bytes, parents: list[bytes], patch_digest: bytes, policy_id: int
) -> Hash:
    """``[prefix] ‖ u16le(2) ‖ u64le(#parents) ‖ parents ‖ state_root ‖ patch_digest ‖ u32le(policy)``."""
    data = b"".join(
        (profile.commit_id_prefix, b"\x02\x00", _u64(len(parents)), *parents, state_root, patch_digest,
         _u32(policy_id))
    )
    return Hash(blake3(data).digest())


def commit_hash_v1(
    parents: list[bytes],
    state_root: bytes,
    plan_digest: bytes,
    decision_digest: bytes,
    rewrites_digest: bytes,
    policy_id: int,
) -> Hash:
    """Echo's legacy v1 commit hash (unused by commits; kept for completeness, no prefix in any profile)."""
    data = b"".join(
        (b"\x01\x00", _u64(len(parents)), *parents, state_root, plan_digest, decision_digest,
         rewrites_digest, _u32(policy_id))
    )
    return Hash(blake3(data).digest())


def emissions_digest(channels: list[tuple[bytes, bytes]]) -> Hash:
    """``u16le(1) ‖ u64le(n) ‖ (channel_id ‖ u64le(len) ‖ data)*`` with channels sorted by id."""
    parts = [_u16(1), _u64(len(channels))]
    for cid, data in sorted(channels, key=lambda c: c[0]):
        parts += [cid, _u64(len(data)), data]
    return Hash(blake3(b"".join(parts)).digest())


def op_emission_index_digest(entries: list[tuple[bytes, list[bytes]]]) -> Hash:
    """``u16le(1) ‖ u64le(n) ‖ (op_id ‖ u64le(#ch) ‖ sorted channel ids)*`` with entries sorted by op id."""
    parts = [_u16(1), _u64(len(entries))]
    for op_id, chans in sorted(entries, key=lambda e: e[0]):
        parts += [op_id, _u64(len(chans)), *sorted(chans)]
    return Hash(blake3(b"".join(parts)).digest())


def tick_commit_hash_v2(
    schema_hash: bytes,
    worldline_id: bytes,
    tick: int,
    parents: list[bytes],
    patch_digest: bytes,
    state_root: bytes | None,
    emissions: bytes,
    op_emission_index: bytes | None,
) -> Hash:
    """Echo's time-travel ``compute_tick_commit_hash_v2`` (parents hashed in the order given)."""
    parts = [b"tick_commit:v2", schema_hash, worldline_id, _u64(tick), _u64(len(parents)), *parents, patch_digest]
    parts.append(b"\x00" if state_root is None else b"\x01" + state_root)
    parts.append(emissions)
    parts.append(b"\x00" if op_emission_index is None else b"\x01" + op_emission_index)
    return Hash(blake3(b"".join(parts)).digest())
