"""Quilter: delta-state anti-entropy that keeps CRDT replicas converged over any seam.

:mod:`warpmesh.quilt.core` is the pure protocol; :mod:`warpmesh.quilt.runtime` runs it on asyncio
and loads on first use of ``Quilter`` (see docs/architecture.md).
"""

from typing import TYPE_CHECKING

from warpmesh._lazy import lazy_exports
from warpmesh.quilt.core import QuilterConfig, QuilterCore, QuiltKind, StateCodec

if TYPE_CHECKING:
    from warpmesh.quilt.runtime import Quilter

__getattr__, __dir__ = lazy_exports(__name__, globals(), {"Quilter": "warpmesh.quilt.runtime"})

__all__ = ["QuiltKind", "Quilter", "QuilterConfig", "QuilterCore", "StateCodec"]
