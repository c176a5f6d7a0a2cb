"""Errors raised by the engine. All derive from :class:`EngineError`.

A failed commit never leaves a half-applied state: the engine rolls the graph back to its pre-tick
contents before raising, and records nothing in the tick history.
"""

from __future__ import annotations

from typing import Any

from warpmesh.errors import WarpmeshError

__all__ = [
    "CrossWarpEmission",
    "DuplicateRuleId",
    "DuplicateRuleName",
    "EngineError",
    "FootprintViolation",
    "InternalCorruption",
    "InvalidOperation",
    "MergeConflict",
    "NodeNotIsolated",
    "ReplayMismatch",
    "UnknownRule",
    "UnknownTx",
    "UnknownWarp",
    "WriteToNewWarp",
]


class EngineError(WarpmeshError):
    """Base class of every engine error."""


class UnknownTx(EngineError):
    """The transaction id is 0, was never begun, or was already committed or aborted."""


class UnknownRule(EngineError):
    """No rule is registered under that name."""


class UnknownWarp(EngineError):
    """The warp instance does not exist."""


class DuplicateRuleName(EngineError):
    """A rule with that name is already registered."""


class DuplicateRuleId(EngineError):
    """A rule with that 32-byte id is already registered."""


class InvalidOperation(EngineError):
    """An op could not be applied to the state (missing owner, mismatched edge source, bad plane ...)."""


class NodeNotIsolated(InvalidOperation):
    """``DeleteNode`` on a node that still has incident edges (delete the edges in the same tick first)."""


class FootprintViolation(EngineError):
    """An executor read or wrote something its rule's footprint did not declare."""


class CrossWarpEmission(FootprintViolation):
    """An executor emitted an op into a warp other than the one its scope lives in."""


class InternalCorruption(EngineError):
    """An invariant the engine relies on does not hold (a bug in the engine or a rule)."""


class MergeConflict(EngineError):
    """Two rewrites in one tick wrote different values under the same op key.

    ``key`` is the 97-byte op sort key; ``writers`` lists every writer as
    ``(rule_name, scope NodeKey, op)``, in canonical order, so the author can see which rules disagree.
    """

    def __init__(self, key: bytes, writers: list[tuple[str, Any, Any]]) -> None:
        self.key = key
        self.writers = writers
        names = ", ".join(f"{name}@{scope[1].hex()[:12]}" for name, scope, _ in writers)
        super().__init__(f"divergent writes to op key {key[:1].hex()}:{key[1:].hex()[:24]}... by {names}")


class WriteToNewWarp(EngineError):
    """A rewrite wrote into a warp instance that another rewrite creates in the same tick."""


class ReplayMismatch(EngineError):
    """Replaying a recorded history produced a different hash than the one recorded."""

    def __init__(self, tick: int, field: str, expected: bytes, actual: bytes) -> None:
        self.tick = tick
        self.field = field
        self.expected = expected
        self.actual = actual
        super().__init__(f"tick {tick}: {field} is {actual.hex()}, history recorded {expected.hex()}")
