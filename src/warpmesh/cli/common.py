"""Options and helpers shared by the commands that join a mesh (node, submit, results, status)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import click


def parse_addr(value: str, what: str) -> tuple[str, int]:
    from warpmesh.net.tcp import parse_address

    try:
        return parse_address(value, what=what)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _addr_callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, tuple):
        return [parse_addr(v, param.name or "address") for v in value]
    return parse_addr(value, param.name or "address")


def tls_options(f: Callable[..., Any], *, ca_help: str, who: str = "peer",
                cert_note: str = "") -> Callable[..., Any]:
    """--tls-ca, --tls-key and --tls-cert (existing PEM files); ``who`` names the holder in the help."""
    f = click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=ca_help)(f)
    f = click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help=f"This {who}'s TLS private key (PEM).")(f)
    f = click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help=f"This {who}'s TLS certificate (PEM{cert_note}).")(f)
    return f


def mesh_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--secret-file and the TLS options (the secret may also come from $WARPMESH_SECRET)."""
    f = tls_options(f, ca_help="CA certificate that signs every peer's certificate (enables TLS).")
    f = click.option("--secret-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="File holding the cluster secret (else $WARPMESH_SECRET; with neither, "
                          "only loopback addresses may be used).")(f)
    f = click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
                     default="warning", show_default=True)(f)
    return f


def load_mesh_security(secret_file: Path | None, tls_cert: Path | None, tls_key: Path | None,
                       tls_ca: Path | None) -> tuple[bytes | None, Any]:
    """The cluster secret and TLS config from the CLI options; clear errors for bad files."""
    from warpmesh.net.secret import SecretError, load_secret

    try:
        secret = load_secret(secret_file)
    except SecretError as err:
        raise click.ClickException(str(err)) from None
    tls = None
    given = [p for p in (tls_cert, tls_key, tls_ca) if p is not None]
    if given:
        if len(given) != 3:
            raise click.UsageError("TLS needs all of --tls-cert, --tls-key and --tls-ca")
        import ssl

        from warpmesh.net.tls import mesh_tls

        try:
            tls = mesh_tls(ca_file=tls_ca, cert_file=tls_cert, key_file=tls_key)  # type: ignore[arg-type]
        except (ssl.SSLError, OSError) as err:
            raise click.ClickException(f"cannot load the TLS files: {err}; check --tls-cert, --tls-key "
                                       "and --tls-ca (PEM files; see docs/mesh.md)") from None
    return secret, tls


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_until_signal(main: Callable[[asyncio.Event], Any]) -> Any:
    """Run ``main(stop_event)``; SIGINT/SIGTERM set the event for a graceful shutdown."""

    async def runner() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    return asyncio.run(runner())


async def stdin_lines(limit: int = 64 * 1024) -> AsyncIterator[bytes]:
    """This process's stdin line by line, read on the event loop (the JSON commands a parent process
    sends a node); ends at EOF. ``limit`` is the longest line accepted."""
    reader = asyncio.StreamReader(limit=limit)
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line
