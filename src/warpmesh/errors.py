"""The root of warpmesh's exceptions.

Every error warpmesh raises on purpose derives from :class:`WarpmeshError`, so a caller can catch
"anything warpmesh refused" in one clause. Subsystems keep their own small hierarchies below it
(``RaftError``, ``EngineError``, ``JobError`` ...); an error that is also a standard category keeps
that base too (a malformed input is still a ``ValueError``).
"""

from __future__ import annotations

__all__ = ["WarpmeshError"]


class WarpmeshError(Exception):
    """Base class of every exception warpmesh raises on purpose."""
