"""TcpMesh over mutual TLS: a mesh forms under one CA; a node from another CA or without TLS cannot join."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tests.net import tls_certs
from tests.net.tcp_helpers import WAIT, close_all, converged, mesh, run
from warpmesh.net.tls import mesh_tls

TOOL = tls_certs.how()
pytestmark = pytest.mark.skipif(TOOL is None, reason="needs the cryptography package or the openssl command "
                                                     "to make test certificates")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, ...]]:
    d = tmp_path_factory.mktemp("pki")
    ca = tls_certs.make_ca(d, "ca")
    rogue_ca = tls_certs.make_ca(d, "rogue-ca")
    out: dict[str, tuple[Path, ...]] = {"ca": ca, "rogue-ca": rogue_ca}
    for name in ("a", "b", "c"):
        out[name] = (ca[0], *tls_certs.make_node(d, ca, name))
    out["rogue"] = (rogue_ca[0], *tls_certs.make_node(d, rogue_ca, "rogue"))
    return out


def _tls(pki: dict[str, tuple[Path, ...]], name: str, **kw: object):  # type: ignore[no-untyped-def]
    ca, cert, key = pki[name]
    return mesh_tls(ca_file=ca, cert_file=cert, key_file=key, **kw)  # type: ignore[arg-type]


def test_mesh_forms_and_carries_data_over_mutual_tls(pki: dict[str, tuple[Path, ...]]) -> None:
    async def main() -> None:
        a = await mesh("a", tls=_tls(pki, "a"))
        b = await mesh("b", [a.address], tls=_tls(pki, "b"))  # type: ignore[list-item]
        c = await mesh("c", [b.address], tls=_tls(pki, "c", check_hostname=True))  # type: ignore[list-item]
        ms = [a, b, c]
        try:
            await converged(ms)
            sub = c.subscribe()
            for i in range(200):
                await a.send_to("c", i.to_bytes(2, "big") * 100)
            got = [await asyncio.wait_for(sub.get(), WAIT) for _ in range(200)]
            assert got == [("a", i.to_bytes(2, "big") * 100) for i in range(200)]
            conn = a._slots["c"]
            assert conn.writer.get_extra_info("ssl_object") is not None
        finally:
            await close_all(ms)

    run(main())


def test_certificate_from_another_ca_or_plain_tcp_cannot_join(
        pki: dict[str, tuple[Path, ...]], caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        a = await mesh("a", tls=_tls(pki, "a"))
        rogue = await mesh("r", [a.address], tls=_tls(pki, "rogue"))  # type: ignore[list-item]
        plain = await mesh("p", [a.address])  # type: ignore[list-item]  # right secret, no TLS
        try:
            await asyncio.sleep(1.0)
            assert a.roster.value == {"a"}
            assert rogue.roster.value == {"r"} and plain.roster.value == {"p"}
            assert rogue.stats.dial_failures >= 1
        finally:
            await close_all([a, rogue, plain])

    # asyncio reports failed TLS handshakes on the accepting side through the loop's error log.
    with caplog.at_level(logging.CRITICAL, logger="asyncio"):
        run(main())
