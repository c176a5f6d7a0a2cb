"""KVClient fails at once with KVUnreachable when every server refuses the connection (issue 9)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.kv.test_processes import free_ports
from warpmesh.errors import WarpmeshError
from warpmesh.kv.client import KVClient, KVTimeout, KVUnreachable


def test_every_server_refusing_raises_kv_unreachable_at_once() -> None:
    addrs = [("127.0.0.1", p) for p in free_ports(3)]

    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(KVUnreachable) as err:
            async with KVClient(addrs, timeout=10.0) as kv:
                await kv.get("k")
        assert time.monotonic() - started < 2.0, "waited for the timeout although every server refused"
        assert all(f"127.0.0.1:{p}" in str(err.value) for _, p in addrs)
        assert isinstance(err.value, ConnectionError) and isinstance(err.value, WarpmeshError)
        assert not isinstance(err.value, KVTimeout)  # nothing was sent: the outcome is not unknown

    asyncio.run(main())


def test_a_silent_server_still_times_out() -> None:
    """A listening socket that never answers is not 'refused': the client waits its timeout."""

    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(KVTimeout):
                async with KVClient([("127.0.0.1", port)], timeout=0.6) as kv:
                    await kv.get("k")
        finally:
            server.close()

    asyncio.run(main())
