"""Worked examples built on warpmesh's public APIs (kept importable so the CLI can run them)."""
