"""The root of warpmesh's exceptions.

Every error warpmesh raises on purpose derives from :class:`WarpmeshError`, so a caller can catch
"anything warpmesh refused" in one clause. A few categories cut across subsystems:

* :class:`DecodeError` - malformed input (a frame, a message, a file); also a ``ValueError``.
* :class:`Closed` - the object (seam, queue, Raft node) was closed; nothing more will happen on it.
* :class:`Unavailable` - the peer or service cannot be reached now; retrying later may work.
* :class:`PayloadTooLarge` - a payload exceeds a configured limit; also a ``ValueError``.

Subsystems keep their own small hierarchies below the root (``RaftError``, ``EngineError``,
``JobError`` ...); an error that is also a standard category keeps that base too (a malformed input
is still a ``ValueError``). ``tests/test_layers.py`` fails on any public exception class outside the
tree.
"""

from __future__ import annotations

__all__ = ["Closed", "DecodeError", "PayloadTooLarge", "Unavailable", "WarpmeshError"]


class WarpmeshError(Exception):
    """Base class of every exception warpmesh raises on purpose."""


class DecodeError(WarpmeshError, ValueError):
    """Malformed input: bytes, a message or a file that does not decode to what it should be."""


class Closed(WarpmeshError):
    """The object was closed (or its peer left); nothing more will be sent or received on it."""


class Unavailable(WarpmeshError):
    """A peer or service cannot be reached now; the same request may succeed later."""


class PayloadTooLarge(WarpmeshError, ValueError):
    """A payload (a mesh frame, a Raft command) exceeds a configured size limit."""
