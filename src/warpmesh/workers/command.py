"""Command jobs: the ``command.run`` argument, parsed and validated.

A command job is one subprocess: ``{"argv": [...], "cwd": ..., "tree": ..., "env": {...},
"deadline": seconds, "cpu_seconds": ..., "memory_mb": ...}`` (only ``argv`` is required). ``cwd``
names a directory on the executing peer; ``tree`` names a content-addressed tree of the peer's
store, materialized into a fresh directory for the job (the two are exclusive).

Pure core: parsing only, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from warpmesh.errors import WarpmeshError

__all__ = ["DEFAULT_DEADLINE", "MAX_CAPTURE", "CommandError", "CommandSpec", "parse_command"]

#: Wall-clock budget of a job that names none, in seconds.
DEFAULT_DEADLINE = 600.0
#: Bytes of stdout (and, separately, of stderr) a result carries; the rest is counted, not kept.
MAX_CAPTURE = 1 << 20

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYS = frozenset({"argv", "cwd", "tree", "env", "deadline", "cpu_seconds", "memory_mb"})


class CommandError(WarpmeshError, ValueError):
    """A command job's argument is malformed (names the field and what was wrong)."""


@dataclass(frozen=True)
class CommandSpec:
    """A validated command job."""

    argv: tuple[str, ...]
    cwd: str | None = None
    #: 64 hex digits naming a tree in the executing peer's store.
    tree: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    deadline: float = DEFAULT_DEADLINE
    cpu_seconds: int | None = None
    memory_mb: int | None = None

    def as_arg(self) -> dict[str, Any]:
        """The JSON-able ``command.run`` argument (round-trips through :func:`parse_command`)."""
        out: dict[str, Any] = {"argv": list(self.argv), "deadline": self.deadline}
        if self.cwd is not None:
            out["cwd"] = self.cwd
        if self.tree is not None:
            out["tree"] = self.tree
        if self.env:
            out["env"] = dict(self.env)
        if self.cpu_seconds is not None:
            out["cpu_seconds"] = self.cpu_seconds
        if self.memory_mb is not None:
            out["memory_mb"] = self.memory_mb
        return out


def _number(arg: Mapping[str, Any], key: str, *, integer: bool) -> Any:
    value = arg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise CommandError(f"command.run: {key!r} must be {kind}, got {value!r}")
    if value <= 0:
        raise CommandError(f"command.run: {key!r} must be positive, got {value!r}")
    return value


def parse_command(arg: Any) -> CommandSpec:
    """Validate a ``command.run`` argument; raises :class:`CommandError` naming the bad field."""
    if isinstance(arg, CommandSpec):
        return arg
    if not isinstance(arg, Mapping):
        raise CommandError(f"command.run takes one object with 'argv', got {type(arg).__name__}")
    unknown = sorted(str(k) for k in arg if k not in _KEYS)
    if unknown:
        raise CommandError(f"command.run: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    argv = arg.get("argv")
    if not isinstance(argv, (list, tuple)) or not argv or not all(isinstance(a, str) for a in argv):
        raise CommandError("command.run: 'argv' must be a non-empty list of strings")
    if any("\0" in a for a in argv) or not argv[0]:
        raise CommandError("command.run: 'argv' entries must not contain NUL and argv[0] must not be empty")
    cwd, tree = arg.get("cwd"), arg.get("tree")
    if cwd is not None and (not isinstance(cwd, str) or not cwd or "\0" in cwd):
        raise CommandError("command.run: 'cwd' must be a non-empty path string")
    if tree is not None:
        if not isinstance(tree, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", tree):
            raise CommandError("command.run: 'tree' must be a 64-hex-digit tree id")
        if cwd is not None:
            raise CommandError("command.run: give 'cwd' or 'tree', not both")
        tree = tree.lower()
    env = arg.get("env") or {}
    if not isinstance(env, Mapping):
        raise CommandError("command.run: 'env' must be an object of strings")
    for k, v in env.items():
        if not isinstance(k, str) or not _ENV_NAME.match(k):
            raise CommandError(f"command.run: bad environment variable name {k!r}")
        if not isinstance(v, str) or "\0" in v:
            raise CommandError(f"command.run: environment variable {k} must be a string without NUL")
    deadline = _number(arg, "deadline", integer=False)
    return CommandSpec(
        argv=tuple(argv), cwd=cwd, tree=tree, env=dict(env),
        deadline=float(deadline) if deadline is not None else DEFAULT_DEADLINE,
        cpu_seconds=_number(arg, "cpu_seconds", integer=True),
        memory_mb=_number(arg, "memory_mb", integer=True),
    )
