"""A client reports the refusals of the peer it dialled, not those of strangers dialling it.

CI once saw ``warpmesh status`` against a TLS mesh (plain TCP, so the handshake never completes)
fail with "refused the mesh handshake (bad_secret)": a stale peer of another test, redialling an
address that had become the client's listening port, was refused there, and the client took that
refusal for its entry peer's.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.net.tcp_helpers import eventually, mesh, run
from warpmesh.client import ConnectError, MeshClient

SECRET = b"the cluster secret of the client!"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_stranger_refused_on_the_clients_port_is_not_the_entry_peers_refusal() -> None:
    async def main() -> None:
        # The entry "peer": accepts TCP and never answers (like a TLS listener to a plain client).
        silent: list[asyncio.StreamWriter] = []

        async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            silent.append(w)

        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        to = server.sockets[0].getsockname()[:2]
        port = _free_port()
        client = MeshClient(to, listen=("127.0.0.1", port), secret=SECRET, connect_timeout=2.0)
        # A stranger with another secret keeps dialling the client's listening port.
        stranger = await mesh("stranger", [("127.0.0.1", port)], secret=b"another mesh's secret, not ours")
        try:
            with pytest.raises(ConnectError) as err:
                async with client:
                    pass
            assert "handshake does not complete" in str(err.value), err.value
            assert stranger.stats.refusals["bad_secret"] >= 1  # the stranger was there, and refused
            assert client.mesh is None
        finally:
            await stranger.close()
            server.close()
            for w in silent:
                w.close()

    run(main())


def test_a_refusal_on_a_link_we_dialled_is_counted_as_such() -> None:
    async def main() -> None:
        a = await mesh("a", secret=SECRET)
        b = await mesh("b", [a.address], secret=b"another mesh's secret, not ours")  # type: ignore[list-item]
        try:
            await eventually(lambda: b.stats.refused_dialling["bad_secret"] >= 1, what="b's dial refused")
            await eventually(lambda: a.stats.refusals["bad_secret"] >= 1, what="a saw it too")
            assert not a.stats.refused_dialling  # a dialled nobody
            assert "refused_dialling" in b.stats.as_dict()
        finally:
            await b.close()
            await a.close()

    run(main())
