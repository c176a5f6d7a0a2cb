"""TLS contexts for the TCP mesh: mutual TLS under one cluster CA.

Every node holds a certificate signed by the cluster's CA and its private key. A node *accepting* a
connection requires the dialler's certificate (client authentication); a node *dialling* verifies the
listener's certificate against the same CA. The HMAC handshake still runs inside TLS, so a stolen
certificate alone does not let anyone in without the cluster secret, and vice versa.

Peers usually dial each other by IP address taken from roster gossip, so host name checking is off
by default: the CA is the cluster boundary. Turn it on (``check_hostname=True``) when every
certificate lists the addresses its node is dialled at in subjectAltName (``IP:10.0.0.5`` ...).

``docs/mesh.md`` shows how to make a CA and node certificates with ``openssl``.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

PathLike = str | os.PathLike[str]


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS for the mesh: ``server`` wraps accepted connections, ``client`` wraps dialled ones.

    Build both from a cluster CA with :func:`server_context` and :func:`client_context`. ``server_hostname`` is the name the
    client checks in the server's certificate (when the client context has ``check_hostname``); by
    default the dialled host.
    """

    server: ssl.SSLContext
    client: ssl.SSLContext
    server_hostname: str | None = None


def server_context(*, ca_file: PathLike, cert_file: PathLike, key_file: PathLike,
                   require_client_cert: bool = True) -> ssl.SSLContext:
    """Context for accepted connections: present our certificate, require one from the CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.fspath(cert_file), os.fspath(key_file))
    ctx.load_verify_locations(cafile=os.fspath(ca_file))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


def client_context(*, ca_file: PathLike, cert_file: PathLike | None = None, key_file: PathLike | None = None,
                   check_hostname: bool = False) -> ssl.SSLContext:
    """Context for dialled connections: verify the listener against the CA, present our certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=os.fspath(ca_file))
    if cert_file is not None:
        ctx.load_cert_chain(os.fspath(cert_file), os.fspath(key_file) if key_file is not None else None)
    return ctx


def mesh_tls(*, ca_file: PathLike, cert_file: PathLike, key_file: PathLike,
             check_hostname: bool = False, server_hostname: str | None = None) -> TlsConfig:
    """Both contexts for a mesh node (mutual TLS). Raises ``ssl.SSLError``/``OSError`` on bad files."""
    return TlsConfig(
        server=server_context(ca_file=ca_file, cert_file=cert_file, key_file=key_file),
        client=client_context(ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                              check_hostname=check_hostname),
        server_hostname=server_hostname,
    )
