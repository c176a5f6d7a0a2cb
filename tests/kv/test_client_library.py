"""Issue 9 defect 6: the library honours what the CLI honours.

* ``KVClient`` reads ``$WARPMESH_SECRET`` (a client in the servers' shell is not refused).
* ``put``/``cas`` refuse values that are neither bytes nor str (``bytes(5)`` would be five NULs).
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from warpmesh.errors import WarpmeshError
from warpmesh.kv.client import KVClient, KVError


def _port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_client_reads_warpmesh_secret(tmp_path, monkeypatch):
    from warpmesh.kv.server import open_kv_node
    from warpmesh.raft.config import RaftConfig

    secret = b"a-long-enough-cluster-secret-for-tests"
    monkeypatch.setenv("WARPMESH_SECRET", secret.decode())

    async def main() -> None:
        port = _port()
        node = await open_kv_node("n1", listen=("127.0.0.1", port), peers={"n1": ("127.0.0.1", port)},
                                  data_dir=tmp_path / "n1", secret=secret,
                                  config=RaftConfig(election_timeout_min=0.05, election_timeout_max=0.1,
                                                    heartbeat_interval=0.01))
        try:
            async with KVClient([f"127.0.0.1:{port}"], timeout=5.0) as kv:  # no secret= given
                assert kv.secret == secret
                rev = await kv.put("hello", "world")
                assert await kv.get_with_revision("hello") == (b"world", rev)
        finally:
            await node.close()

    asyncio.run(main())


def test_client_without_env_secret_has_none(monkeypatch):
    monkeypatch.delenv("WARPMESH_SECRET", raising=False)
    assert KVClient(["127.0.0.1:1"]).secret is None


@pytest.mark.parametrize("value", [5, 3.5, None, ["a"], {"a": 1}, True])
def test_put_refuses_non_bytes_values(value):
    kv = KVClient(["127.0.0.1:1"])

    async def main() -> None:
        with pytest.raises(TypeError, match="bytes or str"):
            await kv.put("k", value)
        with pytest.raises(TypeError, match="bytes or str"):
            await kv.cas("k", value if value is not None else 5, b"x")

    asyncio.run(main())


def test_kv_errors_are_warpmesh_errors():
    assert issubclass(KVError, WarpmeshError)
