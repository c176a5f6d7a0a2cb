"""``warpmesh node --join``: "ready" only once joined; unreachable seeds, a taken id and a wrong
secret exit 1 with the reason; a restart (same id, higher incarnation) is not a duplicate (issue 9)."""

from __future__ import annotations

import json
import os
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.process

SECRET = "issue-9 join test secret, long enough"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(secret: str | None = SECRET) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WARPMESH_SECRET"}
    if secret is not None:
        env["WARPMESH_SECRET"] = secret
    return env


def _node(node_id: str, listen: str, *extra: str, secret: str | None = SECRET) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "warpmesh.cli.app", "node", "--id", node_id, "--listen", listen,
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(secret))


def _ready(p: subprocess.Popen[str], timeout: float) -> dict[str, object] | None:
    """The "ready" event if it comes within ``timeout`` (None if the process exits or time runs out)."""
    assert p.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                return None
            line = p.stdout.readline()
            if not line:
                return None
            event = json.loads(line)
            if event.get("event") == "ready":
                return event
        return None
    finally:
        sel.close()


def _finish(p: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        raise AssertionError(f"node did not exit within {timeout} s; stderr: {err[-1000:]}") from None
    return p.returncode, err


@contextmanager
def _seed(node_id: str = "seed") -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = _free_port()
    p = _node(node_id, f"127.0.0.1:{port}")
    try:
        assert _ready(p, 30) is not None, "the first peer (no --join) must be ready at once"
        yield p, f"127.0.0.1:{port}"
    finally:
        p.terminate()
        _finish(p, 15)


def test_unreachable_join_target_exits_1_after_join_timeout_naming_it() -> None:
    port = _free_port()
    started = time.monotonic()
    p = _node("lonely", "127.0.0.1:0", "--join", f"127.0.0.1:{port}", "--join-timeout", "1.5")
    assert _ready(p, 20) is None, "'ready' printed although the --join target is unreachable"
    code, err = _finish(p, 20)
    assert code == 1
    assert f"127.0.0.1:{port}" in err and "refused" in err and "--join-timeout" in err
    assert "Traceback" not in err
    assert time.monotonic() - started < 15


def test_ready_waits_for_a_late_seed_then_joins() -> None:
    """A whole mesh restarting at once: the seed comes up after its joiner, within --join-timeout."""
    port = _free_port()
    joiner = _node("late-b", "127.0.0.1:0", "--join", f"127.0.0.1:{port}", "--join-timeout", "30")
    seed = None
    try:
        assert _ready(joiner, 1.5) is None, "'ready' before any peer was reachable"
        seed = _node("late-a", f"127.0.0.1:{port}")
        assert _ready(seed, 30) is not None
        assert _ready(joiner, 30) is not None
    finally:
        for p in (joiner, seed):
            if p is not None:
                p.terminate()
                _finish(p, 15)


def test_a_taken_id_exits_1_with_the_reason() -> None:
    with _seed() as (_, addr):
        p = _node("seed", "127.0.0.1:0", "--join", addr)
        assert _ready(p, 20) is None
        code, err = _finish(p, 20)
        assert code == 1 and "duplicate_id" in err and "--id" in err and "Traceback" not in err


def test_a_wrong_secret_exits_1_with_the_reason() -> None:
    with _seed() as (_, addr):
        p = _node("intruder", "127.0.0.1:0", "--join", addr, secret="a different secret entirely")
        assert _ready(p, 20) is None
        code, err = _finish(p, 20)
        assert code == 1 and "bad_secret" in err and "secret" in err and "Traceback" not in err


def test_a_restart_with_the_same_id_is_not_a_duplicate() -> None:
    with _seed() as (_, addr):
        first = _node("phoenix", "127.0.0.1:0", "--join", addr)
        assert _ready(first, 20) is not None
        first.kill()  # SIGKILL: no goodbye; the new boot has a higher incarnation
        first.wait(10)
        again = _node("phoenix", "127.0.0.1:0", "--join", addr)
        try:
            assert _ready(again, 20) is not None, "a restart was refused as a duplicate id"
        finally:
            again.terminate()
            _finish(again, 15)


def test_ops_module_without_ops_is_a_usage_error(tmp_path: pytest.TempPathFactory) -> None:
    (tmp_path / "empty_ops_mod.py").write_text("X = 1\n")  # type: ignore[operator]
    # The console script (not `python -m`, which puts the current directory on sys.path itself):
    # --ops finds the module in the current directory, then refuses it for having no ops.
    script = Path(sys.executable).with_name("warpmesh")
    out = subprocess.run([str(script), "node", "--id", "x", "--listen", "127.0.0.1:0", "--ops", "empty_ops_mod"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path, env=_env())
    assert out.returncode == 2, out.stderr
    assert "no @warp_op ops" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_join_list_naming_only_this_peer_makes_it_the_first_peer() -> None:
    """Every peer may get the same --join list; the one whose own address it is starts the mesh."""
    port = _free_port()
    p = _node("first", f"127.0.0.1:{port}", "--join", f"127.0.0.1:{port}", "--join-timeout", "20")
    try:
        assert _ready(p, 15) is not None
    finally:
        p.terminate()
        _finish(p, 15)
