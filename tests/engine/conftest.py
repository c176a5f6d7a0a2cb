"""Shared helpers for the engine tests: where Echo's golden logs live."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The in-repo copy of Echo's DIND golden files (the tests always replay these).
GOLDEN = Path(__file__).resolve().parent / "golden"


def shared_echo_dind() -> Path | None:
    """The project's shared reference copy, if this checkout has one: ``$WARPMESH_SHARED`` or ``../shared``."""
    candidates = []
    env = os.environ.get("WARPMESH_SHARED")
    if env:
        candidates.append(Path(env) / "echo-dind")
    candidates.append(REPO / ".." / "shared" / "echo-dind")
    for c in candidates:
        if (c / "head").is_dir():
            return c.resolve()
    return None
