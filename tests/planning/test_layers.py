"""The planning core stays pure: its modules import no runtime, and importing the package does not
load the runtime (docs/architecture.md, import rules)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import warpmesh.planning

CORE = ("model", "rewrites", "cost", "stats", "explain", "interpret")
FORBIDDEN = ("asyncio", "socket", "ssl", "sqlite3", "threading", "time", "wasmtime", "warpmesh.net",
             "warpmesh.raft", "warpmesh.warp", "warpmesh.quilt", "warpmesh.planning.runtime", "warpmesh.sim",
             "warpmesh.cli")


def test_core_modules_import_no_runtime() -> None:
    root = pathlib.Path(warpmesh.planning.__file__).parent
    for name in CORE:
        tree = ast.parse((root / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for m in mods:
                assert not any(m == f or m.startswith(f + ".") for f in FORBIDDEN), f"{name} imports {m}"


def test_importing_the_package_does_not_load_the_runtime() -> None:
    code = ("import sys, warpmesh.planning as p; p.Warp.shuttle('s').embroider('e').plan(); "
            "bad = [m for m in sys.modules if m.startswith(('asyncio', 'warpmesh.raft', 'warpmesh.warp', "
            "'warpmesh.planning.runtime'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
