"""The cluster secret, and the rule that without one the mesh stays on loopback.

Every node of a mesh proves knowledge of the same secret in the handshake
(:mod:`warpmesh.net.handshake`). It comes from ``--secret-file FILE`` (preferred: it stays out of
``ps`` output and shell history) or the environment variable ``WARPMESH_SECRET``. With neither, a
node may only listen on and dial loopback addresses, where every process is already on this machine.

Make a secret with, for example::

    python -c "import secrets; print(secrets.token_urlsafe(32))" > cluster.secret
    chmod 600 cluster.secret
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from warpmesh.errors import WarpmeshError
from warpmesh.net.address import is_loopback  # re-exported: it lived here first

log = logging.getLogger("warpmesh.net.secret")

ENV_VAR = "WARPMESH_SECRET"
#: Secrets shorter than this are accepted with a warning (a guessable secret is an open mesh).
MIN_RECOMMENDED_BYTES = 16
#: A secret file larger than this is almost certainly the wrong file.
MAX_SECRET_BYTES = 64 * 1024

HOW_TO = (f"pass --secret-file FILE or set {ENV_VAR} (the same secret on every node); make one with: "
          "python -c \"import secrets; print(secrets.token_urlsafe(32))\" > cluster.secret && "
          "chmod 600 cluster.secret")


class SecretError(WarpmeshError, ValueError):
    """The cluster secret could not be loaded (message says why and what to do)."""


class InsecureAddressError(WarpmeshError, ValueError):
    """A non-loopback address was to be used without a cluster secret."""


def load_secret(secret_file: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> bytes | None:
    """Return the cluster secret from ``secret_file`` or ``$WARPMESH_SECRET``, or None if neither.

    The file wins over the environment. Surrounding whitespace (a trailing newline from ``echo``) is
    stripped. Raises :class:`SecretError` for an unreadable, empty or oversized file or an empty
    variable.
    """
    environ = os.environ if env is None else env
    if secret_file is not None:
        return _read_file(Path(secret_file))
    raw = environ.get(ENV_VAR)
    if raw is None:
        return None
    secret = raw.strip().encode("utf-8")
    if not secret:
        raise SecretError(f"{ENV_VAR} is set but empty; unset it for a loopback-only mesh, or {HOW_TO}")
    _warn_if_short(secret, ENV_VAR)
    return secret


def _read_file(path: Path) -> bytes:
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            raise SecretError(f"secret file {path} is a directory; point --secret-file at a file")
        if st.st_size > MAX_SECRET_BYTES:
            raise SecretError(f"secret file {path} is {st.st_size} bytes (more than {MAX_SECRET_BYTES}); "
                              "is it the right file?")
        data = path.read_bytes()
    except FileNotFoundError:
        raise SecretError(f"secret file {path} does not exist; {HOW_TO}") from None
    except PermissionError:
        raise SecretError(f"cannot read secret file {path}: permission denied; make it readable by the "
                          f"user running warpmesh (e.g. chown that user and chmod 600 {path})") from None
    except OSError as err:
        raise SecretError(f"cannot read secret file {path}: {err.strerror or err}") from None
    secret = data.strip()
    if not secret:
        raise SecretError(f"secret file {path} is empty; {HOW_TO}")
    if st.st_mode & 0o077:
        log.warning("secret file %s is readable by other users (mode %o); run chmod 600 %s",
                    path, stat.S_IMODE(st.st_mode), path)
    _warn_if_short(secret, str(path))
    return secret


def _warn_if_short(secret: bytes, where: str) -> None:
    if len(secret) < MIN_RECOMMENDED_BYTES:
        log.warning("the cluster secret from %s is only %d bytes; use at least %d random bytes",
                    where, len(secret), MIN_RECOMMENDED_BYTES)


def check_addresses(secret: bytes | None, *, listen: Iterable[str] = (), dial: Iterable[str] = ()) -> None:
    """Raise :class:`InsecureAddressError` if there is no secret and a host is not loopback."""
    if secret:
        return
    for what, hosts in (("listen on", listen), ("dial", dial)):
        for host in hosts:
            if not is_loopback(host):
                raise InsecureAddressError(
                    f"refusing to {what} {host or '*'} without a cluster secret: only loopback addresses "
                    f"(127.0.0.1, ::1, localhost) may be used without one; {HOW_TO}")
