"""Quilter: delta-state anti-entropy that keeps CRDT replicas converged over any seam.

:mod:`warpmesh.quilt.core` is the pure protocol; :mod:`warpmesh.quilt.runtime` runs it on asyncio.
"""

from warpmesh.quilt.core import QuilterConfig, QuilterCore, QuiltKind, StateCodec
from warpmesh.quilt.runtime import Quilter

__all__ = ["QuiltKind", "Quilter", "QuilterConfig", "QuilterCore", "StateCodec"]
