"""Locating the bundled guest modules (built from guests/*.wat, see guests/build.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from warpmesh.errors import WarpmeshError


class GuestNotFound(WarpmeshError, FileNotFoundError):
    """A bundled guest module could not be located."""


def guests_dir() -> Path:
    """``$WARPMESH_GUESTS``, else ``guests/`` of the source checkout, else ``<prefix>/share/warpmesh/guests``."""
    env = os.environ.get("WARPMESH_GUESTS")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "guests")
    candidates.append(Path(sys.prefix) / "share" / "warpmesh" / "guests")
    for c in candidates:
        if (c / "fold.wasm").is_file():
            return c
    raise GuestNotFound("cannot find the bundled guest modules (fold.wasm); set WARPMESH_GUESTS to the "
                        "guests/ directory of a warpmesh checkout")


def guest_bytes(name: str) -> bytes:
    """The bytes of bundled guest ``name`` (e.g. ``"fold"``, ``"filecount"``)."""
    path = guests_dir() / f"{name}.wasm"
    if not path.is_file():
        raise GuestNotFound(f"no bundled guest {name!r} in {path.parent}")
    return path.read_bytes()
