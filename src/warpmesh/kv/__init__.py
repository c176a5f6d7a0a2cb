"""A replicated key-value store on Raft: get, put, cas, delete; exactly-once writes; linearizable.

* :mod:`warpmesh.kv.state` - the deterministic state machine.
* :mod:`warpmesh.kv.server` - ``KVServer`` (one replica) and ``open_kv_node`` (TCP + SQLite).
* :mod:`warpmesh.kv.client` - ``KVClient``: finds the leader, retries under one dedup key.
* :mod:`warpmesh.kv.protocol` - the client protocol on mesh channel 0x21.
* :mod:`warpmesh.kv.linearizability` - a Wing-Gong/Porcupine-style checker for KV histories.
* :mod:`warpmesh.kv.admin` - the operator's safety rules (member add/remove/promote, transfer).
* :mod:`warpmesh.kv.backup` - ``kv snapshot save/restore`` files.

See docs/raft.md. The client (a runtime) loads on first use (see docs/architecture.md).
"""

from typing import TYPE_CHECKING

from warpmesh._lazy import lazy_exports
from warpmesh.kv.state import KVStateMachine

if TYPE_CHECKING:
    from warpmesh.kv.client import KVClient, KVError, KVTimeout

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {"KVClient": "warpmesh.kv.client", "KVError": "warpmesh.kv.client", "KVTimeout": "warpmesh.kv.client"},
)

__all__ = ["KVClient", "KVError", "KVStateMachine", "KVTimeout"]
