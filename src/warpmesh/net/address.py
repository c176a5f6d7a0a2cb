"""Mesh addresses as plain values: parsing, formatting, loopback and wildcard rules (a pure core).

Kept apart from the TCP runtime so the roster merge (:mod:`warpmesh.net.roster`) and the CLI can use
the same rules without loading asyncio or sockets.
"""

from __future__ import annotations

import ipaddress

from warpmesh.net.handshake import Address

#: Hosts that mean "every interface": never dialled, and replaced by the address a peer is seen at.
WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})


def parse_address(text: str, *, what: str = "address") -> Address:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> ``(host, port)``. Raises ``ValueError`` naming the problem."""
    s = text.strip()
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{what} {text!r} must look like [IPv6]:PORT")
        port_s = rest[1:]
    else:
        host, sep, port_s = s.rpartition(":")
        if not sep:
            raise ValueError(f"{what} {text!r} must look like HOST:PORT (e.g. 127.0.0.1:7000)")
        if ":" in host:
            raise ValueError(f"{what} {text!r}: write IPv6 addresses as [ADDR]:PORT")
    if not port_s.isdigit() or not 0 <= int(port_s) <= 0xFFFF:
        raise ValueError(f"{what} {text!r}: port must be a number in 0..65535")
    return (host, int(port_s))


def format_address(addr: Address) -> str:
    """``(host, port)`` -> ``HOST:PORT``, or ``[HOST]:PORT`` for IPv6 (the inverse of :func:`parse_address`)."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1, ::ffff:127.x).

    Other host names count as non-loopback: resolving them here would be I/O and could change later.
    Wildcards (``0.0.0.0``, ``::``, empty) listen on every interface, so they are not loopback.
    """
    h = host.strip().strip("[]").lower()
    if h in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        addr = ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def resolve_listen(listen: Address | None, remote: Address | None) -> Address | None:
    """The address to dial a peer at: its advertised ``listen``, with a wildcard host replaced by the
    host the peer's connection came from (``remote``)."""
    if listen is not None and listen[0] in WILDCARDS and remote is not None:
        return (remote[0], listen[1])
    return listen


__all__ = ["WILDCARDS", "Address", "format_address", "is_loopback", "parse_address", "resolve_listen"]
