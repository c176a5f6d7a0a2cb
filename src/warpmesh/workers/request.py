"""Job requests and their cache keys.

A request is itself a canonical tree, and its tree id is the cache key (and the single-flight
rendezvous). Everything that can change what the worker computes is inside it, nothing else is::

    args     tree   the worker's arguments
    salt     blob   opaque bytes; a whole run tree shares one salt, changing it re-keys everything
    runtime  blob   "warpmesh-isolate/1 abi=1 engine=wasmtime-50 fuel=... memory=..."
                    (or "warpmesh-op/1" for named ops)
    wasm     blob   the module itself (wasm workers)      -- exactly one of wasm / op
    op       blob   "name@version" (named Python ops)

Fuel and the memory cap change results deterministically (a job may fail, or see ``memory.grow``
refused), so they are in the key. The wall-clock deadline is not: a job that hits it fails, and
failures are never cached. Run context -- the stack of enclosing requests, trace ids, depth -- is
never in the key.

Pure core.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from warpmesh.workers.ids import Kind, Ref, blob_id, short, tree_id

#: Version of the guest ABI (see docs/guest-abi.md). Part of every wasm request's runtime blob.
ABI_VERSION = 1

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-job limits. ``fuel`` and ``memory_bytes`` are part of the cache key, ``deadline_s`` is not."""

    #: Deterministic CPU budget (wasmtime fuel units, about one per wasm instruction).
    fuel: int = 1_000_000_000
    #: Cap on the guest's linear memory, in bytes (rounded down to 64 KiB pages).
    memory_bytes: int = 64 * MiB
    #: Wall-clock budget for the guest's own execution, in seconds (time spent waiting on nested
    #: runs is not counted; they have their own).
    deadline_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.fuel, int) or isinstance(self.fuel, bool) or not 0 < self.fuel < 2**63:
            raise ValueError(f"fuel must be a positive integer below 2**63, got {self.fuel!r}")
        if not isinstance(self.memory_bytes, int) or self.memory_bytes < 65536:
            raise ValueError(f"memory_bytes must be an integer >= 65536 (one page), got {self.memory_bytes!r}")
        if self.memory_bytes > 4 * 1024 * MiB:
            raise ValueError("memory_bytes must be at most 4 GiB (wasm32)")
        if not self.deadline_s > 0:
            raise ValueError(f"deadline_s must be positive, got {self.deadline_s!r}")


@dataclass(frozen=True, slots=True)
class WasmWorker:
    """A worker that is a WebAssembly module, named by its blob id."""

    module: bytes

    def describe(self) -> str:
        return f"wasm:{short(self.module)}"


@dataclass(frozen=True, slots=True)
class OpWorker:
    """A worker that is a named op registered on the host (a Python function), at a version."""

    name: str
    version: str = "1"

    def __post_init__(self) -> None:
        if not self.name or "@" in self.name or "\n" in self.name:
            raise ValueError(f"op names must be non-empty without '@' or newlines, got {self.name!r}")
        if "\n" in self.version:
            raise ValueError("op versions must not contain newlines")

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    def describe(self) -> str:
        return f"op:{self.spec}"


Worker = WasmWorker | OpWorker


@functools.lru_cache(maxsize=256)
def _runtime_text(engine: str, fuel: int, memory_bytes: int) -> bytes:
    return (f"warpmesh-isolate/1 abi={ABI_VERSION} engine={engine} fuel={fuel} "
            f"memory={memory_bytes // 65536 * 65536}\n").encode("ascii")


@functools.lru_cache(maxsize=256)
def _blob_id_cached(data: bytes) -> bytes:
    return blob_id(data)


def _entry_head(kind: Kind, name: str) -> bytes:
    raw = name.encode("ascii")
    return bytes([kind]) + len(raw).to_bytes(2, "big") + raw


# Fixed pieces of the request tree's canonical encoding (tree.encode_tree: count u32 BE, then per
# entry kind u8, name_len u16 BE, name, id). Sorted by name: args, op, runtime, salt, wasm.
_REQ_COUNT = (4).to_bytes(4, "big")
_REQ_ARGS = _entry_head(Kind.TREE, "args")
_REQ_OP = _entry_head(Kind.BLOB, "op")
_REQ_RUNTIME = _entry_head(Kind.BLOB, "runtime")
_REQ_SALT = _entry_head(Kind.BLOB, "salt")
_REQ_WASM = _entry_head(Kind.BLOB, "wasm")


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job: a worker, its args tree, a salt blob and the limits. ``key`` is its cache key."""

    worker: Worker
    args: bytes
    salt: bytes
    limits: Limits = field(default_factory=Limits)
    #: The engine tag of the runtime ("wasmtime-50"); part of wasm keys.
    engine: str = "wasmtime"

    def runtime_text(self) -> bytes:
        if isinstance(self.worker, OpWorker):
            return b"warpmesh-op/1\n"
        return _runtime_text(self.engine, self.limits.fuel, self.limits.memory_bytes)

    def plan(self) -> tuple[bytes, list[tuple[Kind, bytes, bytes]]]:
        """The request key plus the small objects (runtime/op blobs, request tree) to store for it.

        The args tree, the salt blob and the module must already be stored.
        """
        runtime = self.runtime_text()
        runtime_id = _blob_id_cached(runtime)
        pending: list[tuple[Kind, bytes, bytes]] = [(Kind.BLOB, runtime_id, runtime)]
        if isinstance(self.worker, OpWorker):
            spec = self.worker.spec.encode("utf-8")
            spec_id = _blob_id_cached(spec)
            pending.append((Kind.BLOB, spec_id, spec))
            last = _REQ_OP + spec_id
        else:
            last = _REQ_WASM + self.worker.module
        # The request tree's canonical encoding written out directly (its four names are fixed);
        # byte-for-byte what encode_tree() gives for the same entries (a test checks this).
        if isinstance(self.worker, OpWorker):
            data = b"".join((_REQ_COUNT, _REQ_ARGS, self.args, last, _REQ_RUNTIME, runtime_id, _REQ_SALT, self.salt))
        else:
            data = b"".join((_REQ_COUNT, _REQ_ARGS, self.args, _REQ_RUNTIME, runtime_id, _REQ_SALT, self.salt, last))
        key = tree_id(data)
        pending.append((Kind.TREE, key, data))
        return key, pending

    @property
    def key(self) -> bytes:
        """The cache key alone (``plan()[0]``), without building the objects to store."""
        w = self.worker
        if isinstance(w, OpWorker):
            return self.plan()[0]
        runtime_id = _blob_id_cached(_runtime_text(self.engine, self.limits.fuel, self.limits.memory_bytes))
        return tree_id(b"".join((_REQ_COUNT, _REQ_ARGS, self.args, _REQ_RUNTIME, runtime_id, _REQ_SALT, self.salt,
                                 _REQ_WASM, w.module)))

    def ref(self) -> Ref:
        return Ref(Kind.TREE, self.key)
