"""``./run`` tells how to put warpmesh on PATH and ``./run shell`` provides it (issue 9)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not (ROOT / ".venv" / ".warpmesh-installed").exists(),
                                reason="needs the checkout's .venv set up by ./run (no install from a test)")


def test_run_shell_puts_warpmesh_on_path() -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    out = subprocess.run([str(ROOT / "run"), "shell", "sh", "-c", "command -v warpmesh && warpmesh --version"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == str(ROOT / ".venv" / "bin" / "warpmesh")
    assert "warpmesh, version" in out.stdout


def test_run_usage_mentions_shell_and_the_install_prints_the_path_hint() -> None:
    out = subprocess.run([str(ROOT / "run"), "no-such-thing"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "shell" in out.stderr
    script = (ROOT / "run").read_text()
    assert "path_hint >&2" in script and 'export PATH=\\"$PWD/.venv/bin:\\$PATH\\"' in script
