"""The KV store over mutual TLS (and the cluster secret): nodes and client under one CA."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.kv.test_processes import free_ports
from tests.net import tls_certs
from warpmesh.kv.client import KVClient
from warpmesh.kv.server import open_kv_node
from warpmesh.net.tls import mesh_tls

pytestmark = pytest.mark.skipif(tls_certs.how() is None, reason="needs cryptography or openssl for test certs")


def test_kv_cluster_and_client_over_mutual_tls(tmp_path: Path) -> None:
    ca = tls_certs.make_ca(tmp_path, "ca")
    tls = {}
    for name in ("n1", "n2", "n3", "client"):
        cert, key = tls_certs.make_node(tmp_path, ca, name)
        tls[name] = mesh_tls(ca_file=ca[0], cert_file=cert, key_file=key)
    secret = b"a-cluster-secret-of-some-length"

    async def main() -> None:
        ports = free_ports(3)
        peers = {f"n{i + 1}": ("127.0.0.1", p) for i, p in enumerate(ports)}
        nodes = [await open_kv_node(nid, listen=addr, peers=peers, data_dir=tmp_path / nid, secret=secret,
                                    tls=tls[nid]) for nid, addr in peers.items()]
        try:
            async with KVClient([f"127.0.0.1:{p}" for p in ports], secret=secret, tls=tls["client"],
                                timeout=30) as kv:
                assert await kv.put("k", b"over tls") > 0
                assert await kv.get("k") == b"over tls"
        finally:
            for n in nodes:
                await n.close()

    asyncio.run(main())
