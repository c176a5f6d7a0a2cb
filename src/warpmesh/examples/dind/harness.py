"""Replaying Echo's DIND logs through the kernel (Echo ``echo-dind-harness/src/dind.rs``).

Two modes, chosen as Echo's harness chooses them:

* ``default`` — per frame: ingest it, then ``step``; a hash is recorded after every step, committed or not.
* ``ingest-all-first`` — ingest every frame, then ``step`` until no intent is pending, recording a hash
  only for steps that committed. Used for files whose name starts with ``050_`` or whose MANIFEST entry
  is tagged ``ingest-all-first``, ``permute-invariant`` or ``order-sensitive``.

The first recorded hash is always the initial state's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from warpmesh.engine import ShardExecutor
from warpmesh.examples.dind.eintlog import SCHEMA_HASH, EintLog, EintLogError, read_eintlog
from warpmesh.examples.dind.kernel import build_motion_demo_engine, state_hash, step

__all__ = [
    "DEFAULT",
    "INGEST_ALL_FIRST",
    "ExpectedHashes",
    "ReplayResult",
    "first_mismatch",
    "load_expected",
    "mode_for",
    "replay_log",
]

DEFAULT = "default"
INGEST_ALL_FIRST = "ingest-all-first"
_INGEST_ALL_TAGS = {"ingest-all-first", "permute-invariant", "order-sensitive"}


@dataclass(frozen=True)
class ReplayResult:
    """The hashes after every recorded step, and how they were produced."""

    path: Path
    mode: str
    profile: str
    frames: int
    hashes: list[bytes]


@dataclass(frozen=True)
class ExpectedHashes:
    """A ``*.hashes.json`` golden file."""

    schema_hash: bytes
    hash_domain: str
    hashes: list[bytes]


def mode_for(path: str | Path) -> str:
    """The replay mode Echo's harness would use for ``path`` (file name, then a sibling MANIFEST.json)."""
    p = Path(path)
    if p.name.startswith("050_"):
        return INGEST_ALL_FIRST
    manifest = p.parent / "MANIFEST.json"
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text())
        except (OSError, ValueError):
            entries = []
        for entry in entries if isinstance(entries, list) else []:
            if (isinstance(entry, dict) and entry.get("path") == p.name
                    and _INGEST_ALL_TAGS & set(entry.get("tags") or ())):
                return INGEST_ALL_FIRST
    return DEFAULT


def load_expected(path: str | Path) -> ExpectedHashes:
    """Read a ``*.hashes.json`` file; raises ``ValueError`` naming what is wrong."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
        hashes = [bytes.fromhex(h) for h in doc["hashes_hex"]]
        schema = bytes.fromhex(doc.get("schema_hash_hex", SCHEMA_HASH.hex()))
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{p.name}: not a DIND hashes file ({err})") from None
    if any(len(h) != 32 for h in hashes):
        raise ValueError(f"{p.name}: every entry of hashes_hex must be 32 bytes of hex")
    return ExpectedHashes(schema, str(doc.get("hash_domain", "")), hashes)


def replay_log(
    path: str | Path,
    profile: str = "echo",
    *,
    mode: str | None = None,
    workers: int = 1,
    executor: ShardExecutor | None = None,
    log: EintLog | None = None,
    on_step: Callable[[int, bytes], None] | None = None,
) -> ReplayResult:
    """Replay one ``.eintlog`` and return the state hash after every recorded step.

    Raises :class:`~warpmesh.examples.dind.eintlog.EintLogError` for a corrupt log or a log of another
    schema. ``on_step(index, hash)`` is called as each hash is recorded (progress display). ``workers``
    and ``executor`` (e.g. a process pool) change how ticks execute, never the hashes.
    """
    p = Path(path)
    elog = log if log is not None else read_eintlog(p)
    if elog.schema_hash != SCHEMA_HASH:
        raise EintLogError(f"{p.name}: schema hash {elog.schema_hash.hex()[:16]}... is not the DIND kernel's "
                           f"({SCHEMA_HASH.hex()[:16]}...)")
    chosen = mode or mode_for(p)
    if chosen not in (DEFAULT, INGEST_ALL_FIRST):
        raise ValueError(f"unknown replay mode {chosen!r}")
    engine = build_motion_demo_engine(profile, workers=workers, executor=executor)
    hashes: list[bytes] = [state_hash(engine)]

    def record() -> None:
        hashes.append(state_hash(engine))
        if on_step is not None:
            on_step(len(hashes) - 1, hashes[-1])

    if on_step is not None:
        on_step(0, hashes[0])
    if chosen == DEFAULT:
        for frame in elog.frames:
            engine.ingest_intent(frame)
            step(engine)
            record()
    else:
        for frame in elog.frames:
            engine.ingest_intent(frame)
        while engine.pending_intent_count():
            if step(engine):
                record()
    return ReplayResult(p, chosen, profile, len(elog.frames), hashes)


def first_mismatch(got: list[bytes], expected: list[bytes]) -> int | None:
    """Index of the first differing step (a length difference counts at the shorter length), or None."""
    for i, (a, b) in enumerate(zip(got, expected)):
        if a != b:
            return i
    if len(got) != len(expected):
        return min(len(got), len(expected))
    return None
