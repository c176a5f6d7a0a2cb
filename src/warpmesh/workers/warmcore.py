"""Warm boot, the pure part: outcomes, cache keys, name rules, build counts and the GC plan.

Pure core: no I/O, no clock (``now`` is passed in), no subprocesses. The runtime is
:mod:`warpmesh.workers.warm`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import blake3

from warpmesh.errors import WarpmeshError

__all__ = [
    "BuildCounts", "CacheEntry", "WarmError", "WarmReport", "WarmStatus", "WorkerConfig", "check_status",
    "content_key", "count_lock_waits", "gc_plan", "parse_cargo_messages", "sanitize_name",
]

#: What cargo prints when a build waits for another build's lock on the same directory.
LOCK_WAIT_LINE = "Blocking waiting for file lock"


class WarmError(WarpmeshError, ValueError):
    """A warm-cache request is malformed (unknown recipe, bad cache name...)."""


class WarmStatus(Enum):
    """How a warm boot ended. It never raises: every failure is ``UNAVAILABLE`` with a reason."""

    SKIPPED = "skipped"
    WARMED = "warmed"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class WarmReport:
    """The outcome of :func:`~warpmesh.workers.warm.warm_boot`."""

    status: WarmStatus
    reason: str
    #: The content key of the cache (None when skipped or when the inputs could not be read).
    key: str | None = None
    cache_dir: str | None = None
    seconds: float = 0.0
    #: True when the cache was already warm (no build ran now).
    reused: bool = False

    @property
    def warm(self) -> bool:
        return self.status is WarmStatus.WARMED

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status.value, "reason": self.reason, "key": self.key,
                "cache_dir": self.cache_dir, "seconds": round(self.seconds, 3), "reused": self.reused}


@dataclass(frozen=True)
class WorkerConfig:
    """The one switchboard every entry point that starts command workers threads through."""

    #: Warm caches and seed job directories from them (off: every job builds from empty).
    speculative: bool = False
    #: Root of warm caches and job directories (None: ``$WARPMESH_WARM`` or the per-user cache dir).
    cache_dir: str | None = None
    #: Budget of one warm-up (the tool's process group is killed at the end of it).
    warm_timeout: float = 600.0
    #: Keep each job's seeded directory after the job (for debugging).
    keep_job_dirs: bool = False


_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def sanitize_name(text: str, *, limit: int = 64) -> str:
    """A name safe as one path component: ``[A-Za-z0-9-]`` only, at most ``limit`` characters.

    Anything else becomes ``-``; an empty result becomes ``x``. Session ids only *name* things.
    """
    name = _UNSAFE.sub("-", text).strip("-")[:limit].strip("-")
    return name or "x"


def content_key(recipe: str, parts: Mapping[str, str | bytes]) -> str:
    """The cache key: a BLAKE3 digest of the recipe name and every input that determines the content.

    Inputs are length-prefixed and sorted by name, so no two different input sets collide by
    concatenation and the order they were gathered in does not matter.
    """
    h = blake3.blake3(b"warpmesh-warm-v1\0")
    for name, value in sorted({"recipe": recipe, **parts}.items()):
        raw = value if isinstance(value, bytes) else value.encode()
        h.update(f"{len(name)}:{name}{len(raw)}:".encode())
        h.update(raw)
    return f"{sanitize_name(recipe, limit=16)}-{h.hexdigest()[:32]}"


@dataclass
class BuildCounts:
    """Units a build compiled (``rebuilt``) vs found up to date (``fresh``), from its JSON messages."""

    rebuilt: int = 0
    fresh: int = 0
    #: Names of rebuilt units whose source is a local path (the worktree's own crates).
    rebuilt_local: list[str] = field(default_factory=list)
    #: Names of rebuilt units from a registry or other immutable source (dependencies).
    rebuilt_deps: list[str] = field(default_factory=list)
    #: Error diagnostics in local crates vs in dependencies.
    errors_local: int = 0
    errors_deps: int = 0
    success: bool | None = None


def _package_name(package_id: str) -> str:
    # "path+file:///w/core#core_lib@0.1.0", "registry+https://...#syn@1.0.107", or the old
    # "syn 1.0.107 (registry+...)" form.
    if "#" in package_id:
        tail = package_id.rsplit("#", 1)[1]
        return tail.split("@", 1)[0] if "@" in tail else package_id.rsplit("#", 1)[0].rsplit("/", 1)[-1]
    return package_id.split(" ", 1)[0]


def parse_cargo_messages(stdout: str) -> BuildCounts:
    """Count ``compiler-artifact`` messages of cargo's ``--message-format=json`` by ``fresh``."""
    counts = BuildCounts()
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        reason = msg.get("reason")
        if reason == "compiler-artifact":
            if msg.get("fresh"):
                counts.fresh += 1
                continue
            counts.rebuilt += 1
            pid = str(msg.get("package_id", ""))
            local = pid.startswith("path+") or "(path+" in pid
            (counts.rebuilt_local if local else counts.rebuilt_deps).append(_package_name(pid))
        elif reason == "compiler-message" and (msg.get("message") or {}).get("level") == "error":
            pid = str(msg.get("package_id", ""))
            if pid.startswith("path+") or "(path+" in pid:
                counts.errors_local += 1
            else:
                counts.errors_deps += 1
        elif reason == "build-finished":
            counts.success = bool(msg.get("success"))
    return counts


def count_lock_waits(stderr: str, on: str = "") -> int:
    """How many times a cargo run printed that it waited for a file lock (``on``: only locks whose
    line continues with it, e.g. ``"build directory"`` or ``"package cache"``)."""
    return stderr.count(f"{LOCK_WAIT_LINE} on {on}" if on else LOCK_WAIT_LINE)


def check_status(exit_code: int | None, signal: str | None, *, spawned: bool = True) -> str:
    """``passed`` (exit 0), ``failed`` (the tool reported failure) or ``error`` (killed, never ran)."""
    if not spawned or signal is not None or exit_code is None:
        return "error"
    return "passed" if exit_code == 0 else "failed"


@dataclass(frozen=True)
class CacheEntry:
    """One warm cache, as the GC planner sees it."""

    key: str
    size: int
    last_used: float
    in_use: bool = False


def gc_plan(entries: Iterable[CacheEntry], *, now: float, max_bytes: int | None,
            max_age: float | None) -> list[str]:
    """Keys to delete: every cache unused for ``max_age`` seconds, then least recently used ones
    until the rest fit in ``max_bytes``. A cache in use is never chosen."""
    alive = sorted(entries, key=lambda e: (e.last_used, e.key))
    doomed: list[str] = []
    kept: list[CacheEntry] = []
    for e in alive:
        if not e.in_use and max_age is not None and now - e.last_used > max_age:
            doomed.append(e.key)
        else:
            kept.append(e)
    if max_bytes is not None:
        total = sum(e.size for e in kept)
        for e in kept:
            if total <= max_bytes:
                break
            if not e.in_use:
                doomed.append(e.key)
                total -= e.size
    return doomed
