"""Warp over real TCP: three ``warpmesh node`` processes, the reference scenarios (kuilt-warp §5.1-5.2)
and ``warpmesh submit`` / ``results`` / ``status`` end to end.

Who ran what comes from per-node run logs written by the ops themselves
(``tests/cli/warp_test_ops.py``), not from the answers alone, so a duplicate execution cannot hide
behind the results board. Every wait polls for a condition with a generous deadline: nothing here
depends on how fast a loaded machine is.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from warpmesh.cli.procs import NodeProcess
from warpmesh.warp import TaskRing

pytestmark = pytest.mark.process

T = TypeVar("T")
OPS = "tests.cli.warp_test_ops"
ROOT = Path(__file__).resolve().parents[2]
NAMES = ["a", "b", "c"]


class LoopThread:
    """An event loop in a background thread: node processes outlive one test's ``asyncio.run``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="warp-procs", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 180.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Mesh:
    """Three worker processes serving the test ops, each with its own run log."""

    def __init__(self, lt: LoopThread, tmp: Path) -> None:
        self.lt = lt
        self.tmp = tmp
        self.nodes: dict[str, NodeProcess] = {}

    def env(self, name: str, **extra: str) -> dict[str, str]:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, "WARP_TEST_RUNLOG": str(self.tmp / f"runs-{name}.log"), **extra}

    async def start_node(self, name: str, join: list[str]) -> NodeProcess:
        proc = NodeProcess(name, NodeProcess.command(name, "127.0.0.1:0", join, "--ops", OPS), env=self.env(name))
        self.nodes[name] = await proc.start(timeout=60)
        return proc

    async def start(self) -> None:
        first = await self.start_node(NAMES[0], [])
        assert first.address
        await asyncio.gather(*(self.start_node(n, [first.address]) for n in NAMES[1:]))
        await self.steady(NAMES)

    def addr(self, name: str) -> str:
        address = self.nodes[name].address
        assert address is not None
        return address

    def live(self) -> list[NodeProcess]:
        return [p for p in self.nodes.values() if p.running]

    async def steady(self, workers: list[str], timeout: float = 60.0) -> None:
        """Every running node sees exactly ``workers`` as its live workers."""
        want = sorted(workers)
        seen: dict[str, Any] = {}

        async def check() -> None:
            while True:
                for p in self.live():
                    seen[p.node_id] = (await p.status())["warp"]["live_workers"]
                if all(v == want for v in seen.values()):
                    return
                await asyncio.sleep(0.1)

        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            raise AssertionError(f"membership did not settle on {want}: {seen}") from None

    async def answers(self, name: str) -> dict[str, Any]:
        return (await self.nodes[name].call({"cmd": "results"}, timeout=60))["results"]

    async def boards_have(self, tasks: list[str], timeout: float = 60.0,
                          on: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Wait until every (running) node's results board answers every task; return the boards."""
        names = on or [p.node_id for p in self.live()]
        boards: dict[str, dict[str, Any]] = {}

        async def check() -> None:
            while True:
                for n in names:
                    boards[n] = await self.answers(n)
                if all(t in boards[n] for n in names for t in tasks):
                    return
                await asyncio.sleep(0.1)

        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            missing = {n: sorted(set(tasks) - set(b))[:5] for n, b in boards.items()}
            raise AssertionError(f"answers missing after {timeout:.0f} s: {missing}") from None
        return boards

    def runs(self, tasks: list[str] | None = None) -> dict[str, list[str]]:
        """task -> the nodes that started it (from the run logs)."""
        out: dict[str, list[str]] = {}
        for name in NAMES:
            path = self.tmp / f"runs-{name}.log"
            if path.exists():
                for line in path.read_text().splitlines():
                    if tasks is None or line in tasks:
                        out.setdefault(line, []).append(name)
        return out

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.nodes.values()), return_exceptions=True)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    lt = LoopThread()
    m = Mesh(lt, tmp_path_factory.mktemp("warp-mesh"))
    try:
        lt.run(m.start())
        yield m
    finally:
        lt.run(m.stop())
        lt.close()


def owned_by(owner: str, peers: list[str], prefix: str, n: int) -> list[str]:
    ring = TaskRing(peers)
    out: list[str] = []
    i = 0
    while len(out) < n:
        t = f"{prefix}{i}"
        if ring.owner(t) == owner:
            out.append(t)
        i += 1
    return out


def cli(m: Mesh, *args: str, env: dict[str, str] | None = None, stdin: str | None = None,
        timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warpmesh.cli.app", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or m.env("cli"), input=stdin)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# -- the reference scenarios, over TCP ---------------------------------------------------------------
def test_every_board_converges_and_the_ring_owner_runs_each_task_exactly_once(mesh: Mesh) -> None:
    async def main() -> None:
        first = [f"conv-{i}" for i in range(9)]
        await mesh.nodes["b"].call({"cmd": "enqueue_many", "items": [
            {"task": t, "op": "t.echo", "args": {"task": t, "value": i}} for i, t in enumerate(first)]})
        boards = await mesh.boards_have(first)
        reference = boards["a"]
        for name, board in boards.items():
            for i, t in enumerate(first):
                assert board[t] == reference[t], (name, t)  # one answer per task, the same everywhere
                assert board[t]["ok"] and board[t]["value"] == {"task": t, "value": i}

        ring = TaskRing(NAMES)
        more = [f"once-{i}" for i in range(30)]
        # A driver can wait for a count of answers without polling (what the benchmarks do).
        await mesh.nodes["a"].send({"cmd": "wait_results", "count": len(first) + len(more), "timeout": 60})
        await mesh.nodes["c"].call({"cmd": "enqueue_many", "items": [
            {"task": t, "op": "t.echo", "args": {"task": t}} for t in more]})
        reached = await mesh.nodes["a"].wait_event(lambda e: e["event"] == "results_reached", 70)
        assert reached["ok"] and reached["results"] >= len(first) + len(more)
        await mesh.nodes["b"].send({"cmd": "wait_results", "count": 10**6, "timeout": 0.3})
        missed = await mesh.nodes["b"].wait_event(lambda e: e["event"] == "results_reached", 10)
        assert not missed["ok"]
        boards = await mesh.boards_have(more)
        ran = mesh.runs(first + more)
        for t in first + more:
            assert ran.get(t) == [ring.owner(t)], (t, ran.get(t))
            assert boards["a"][t]["by"] == ring.owner(t)
        assert {ring.owner(t) for t in more} == set(NAMES)  # every peer owned some
        st = await mesh.nodes["a"].status()
        assert st["warp"]["counters"]["duplicates"] == 0

    mesh.lt.run(main())


def test_a_failing_op_converges_as_a_failure_everywhere_and_the_node_keeps_serving(mesh: Mesh) -> None:
    async def main() -> None:
        victim = TaskRing(NAMES).owner("fail-1")
        assert victim is not None
        await mesh.nodes["a"].call({"cmd": "enqueue", "task": "fail-1", "op": "t.fail", "args": {"task": "fail-1"}})
        boards = await mesh.boards_have(["fail-1"])
        for name, board in boards.items():
            res = board["fail-1"]
            assert res["ok"] is False and "ValueError: boom: fail-1" in res["error"], (name, res)
            assert res["by"] == victim
        after = owned_by(victim, NAMES, "after-fail-", 3)
        for t in after:
            await mesh.nodes["b"].call({"cmd": "enqueue", "task": t, "op": "t.echo", "args": {"task": t}})
        boards = await mesh.boards_have(after)
        assert all(boards["c"][t]["ok"] and boards["c"][t]["by"] == victim for t in after)
        assert mesh.runs(["fail-1"]) == {"fail-1": [victim]}  # terminal: not retried
        assert mesh.nodes[victim].running

    mesh.lt.run(main())


def test_pinned_tasks_run_only_on_their_pin(mesh: Mesh) -> None:
    async def main() -> None:
        # Tasks the ring would give to b and c, pinned to a.
        tasks = owned_by("b", NAMES, "pin-b-", 3) + owned_by("c", NAMES, "pin-c-", 3)
        for t in tasks:
            await mesh.nodes["c"].call({"cmd": "enqueue", "task": t, "op": "t.echo", "args": {"task": t}, "pin": "a"})
        boards = await mesh.boards_have(tasks)
        assert mesh.runs(tasks) == {t: ["a"] for t in tasks}
        assert all(boards["b"][t]["by"] == "a" for t in tasks)

    mesh.lt.run(main())


# -- the command line, end to end -------------------------------------------------------------------
def test_submit_results_and_status_end_to_end(mesh: Mesh, tmp_path: Path) -> None:
    a, b, c = (mesh.addr(n) for n in NAMES)

    out = cli(mesh, "submit", "--to", a, "t.square", "7")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "49\n"

    lines = [{"op": "t.echo", "args": {"task": f"file-{i}", "value": i}, "task": f"file-{i}"} for i in range(12)]
    lines += [{"op": "t.square", "args": i} for i in range(5)]  # ids: content hashes
    lines += [{"op": "t.echo", "args": {"task": "file-pinned"}, "task": "file-pinned", "pin": "c"}]
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("# a comment\n" + "\n".join(json.dumps(x) for x in lines) + "\n\n")
    out = cli(mesh, "submit", "--to", b, "--file", str(jobs), "--json")
    assert out.returncode == 0, out.stderr
    recs = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(recs) == len(lines) and all(r["ok"] for r in recs)
    by_task = {r["task"]: r for r in recs}
    assert by_task["file-3"]["value"] == {"task": "file-3", "value": 3}
    assert sorted(r["value"] for r in recs if r["task"].startswith("t.square-")) == [0, 1, 4, 9, 16]
    assert by_task["file-pinned"]["by"] == "c"
    ring = TaskRing(NAMES)
    assert all(by_task[f"file-{i}"]["by"] == ring.owner(f"file-{i}") for i in range(12))

    # --no-wait prints the task ids at once; `results` finds the answers later, from another peer.
    out = cli(mesh, "submit", "--to", c, "--no-wait", "--task", "later", "t.square", "12")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "later\n"

    def answered() -> bool:
        r = cli(mesh, "results", "--to", a, "--json", "later")
        return r.returncode == 0 and json.loads(r.stdout)["value"] == 144

    wait_until("the answer to 'later'", answered)
    out = cli(mesh, "results", "--to", b, "--json", "file-0", "nobody-submitted-this")
    assert out.returncode == 1  # a task named but not answered
    recs = [json.loads(x) for x in out.stdout.splitlines()]
    assert recs[0]["task"] == "file-0" and recs[0]["ok"] and recs[0]["by"] == ring.owner("file-0")
    assert recs[1] == {"task": "nobody-submitted-this", "unknown": True}

    # A failing job: exit 1, the error on stderr, the node keeps serving.
    out = cli(mesh, "submit", "--to", a, "t.fail", "--args-json", '{"task": "cli-fail"}')
    assert out.returncode == 1 and "boom: cli-fail" in out.stderr

    # A misspelt op is refused before anything is enqueued (status below sees an empty queue).
    out = cli(mesh, "submit", "--to", b, "t.sqaure", "3")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "no live worker serves op 't.sqaure'" in out.stderr and "t.square" in out.stderr

    out = cli(mesh, "status", "--to", c, "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["entry"] == "c" and st["live_workers"] == NAMES and st["views_agree"]
    assert set(NAMES) <= set(st["roster"]) and st["client"] not in st["roster"]
    assert abs(sum(st["ring_shares"].values()) - 1.0) < 1e-3 and set(st["ring_shares"]) == set(NAMES)
    assert st["counters"]["executions"] >= 20 and st["counters"]["failures"] >= 1
    assert st["queue_depth"] == 0 and st["results"] >= 20
    peers = {p["peer"]: p for p in st["peers"]}
    assert all(peers[n]["role"] == "worker" and peers[n]["state"] == "live" for n in NAMES)
    assert sum(p["executions"] for p in st["peers"]) == st["counters"]["executions"]
    out = cli(mesh, "status", "--to", a)  # the table renders
    assert out.returncode == 0 and "ring share" in out.stdout and "mesh-wide" in out.stdout

    # --ack removes the answers on every peer; clients leave no member entries behind.
    out = cli(mesh, "results", "--to", a, "--ack", "--json", "file-1", "file-2")
    assert out.returncode == 0, out.stderr

    async def acked_everywhere() -> None:
        while True:
            boards = [await mesh.answers(n) for n in NAMES]
            if all("file-1" not in bd and "file-2" not in bd and "file-3" in bd for bd in boards):
                return
            await asyncio.sleep(0.1)

    mesh.lt.run(asyncio.wait_for(acked_everywhere(), 60))
    st = mesh.lt.run(mesh.nodes["b"].status())
    assert st["warp"]["live_workers"] == NAMES


def test_calling_convention_tracebacks_jobs_and_cancel_on_the_command_line(mesh: Mesh) -> None:
    a, b, _ = (mesh.addr(n) for n in NAMES)
    out = cli(mesh, "submit", "t.add", "2", "3", "--kw", "scale=10", env=mesh.env("cli", WARPMESH_TO=a))
    assert out.returncode == 0 and out.stdout == "50\n", out.stderr  # add(2, 3, scale=10); --to from $WARPMESH_TO

    out = cli(mesh, "submit", "--to", a, "t.fail", "--args-json", '[{"task": "cli-tb"}]', "--task", "cli-tb")
    assert out.returncode == 1 and "remote traceback" in out.stderr and "raise ValueError" in out.stderr
    rec = json.loads(cli(mesh, "results", "--to", b, "--json", "cli-tb").stdout)
    assert rec["error"] == "ValueError: boom: cli-tb" and "in fail" in rec["traceback"]

    out = cli(mesh, "submit", "--to", a, "--no-wait", "--task", "long", "t.slow", '{"task": "long", "seconds": 120}')
    assert out.returncode == 0, out.stderr

    def running() -> bool:
        r = cli(mesh, "jobs", "--to", b, "--json", "--state", "running")
        rows = [json.loads(x) for x in r.stdout.splitlines()]
        return any(x["task"] == "long" and x["owner"] in NAMES and x["since"] > 0 for x in rows)

    wait_until("'long' to show as running", running)
    out = cli(mesh, "jobs", "--to", a, "--json", "--op", "t.fail")
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert rows and all(set(r) == {"task", "op", "state", "owner", "since", "attempts", "error", "traceback"}
                        and r["state"] == "failed" for r in rows)

    out = cli(mesh, "cancel", "--to", a, "long", "cli-tb")
    assert out.returncode == 0 and out.stdout == "long\tcancelled\ncli-tb\tdone\n", out.stderr
    out = cli(mesh, "cancel", "--to", a, "never-submitted")
    assert out.returncode == 1 and "unknown task(s): never-submitted" in out.stderr

    def cancelled() -> bool:
        r = cli(mesh, "jobs", "--to", b, "--json", "--state", "cancelled")
        return any(json.loads(x)["task"] == "long" for x in r.stdout.splitlines())

    wait_until("'long' to show as cancelled", cancelled)
    rec = json.loads(cli(mesh, "results", "--to", a, "--json", "long").stdout)
    assert rec["ok"] is False and rec["cancelled"] is True


def test_ctrl_c_during_submit_says_the_jobs_keep_running(mesh: Mesh) -> None:
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "warpmesh.cli.app", "submit", "--to", mesh.addr("a"),
                             "--task", "interrupted", "t.slow", '{"task": "interrupted", "seconds": 60}'],
                            env=mesh.env("cli"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until("the job to be queued", lambda: any(
        json.loads(x)["task"] == "interrupted"
        for x in cli(mesh, "jobs", "--to", mesh.addr("b"), "--json").stdout.splitlines()))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "keep running" in err and "warpmesh cancel" in err, err
    assert cli(mesh, "cancel", "--to", mesh.addr("b"), "interrupted").returncode == 0


def test_submit_refused_by_a_mesh_with_another_secret_is_one_clear_line(mesh: Mesh) -> None:
    out = cli(mesh, "submit", "--to", mesh.addr("a"), "t.square", "2",
              env=mesh.env("cli", WARPMESH_SECRET="not the mesh's secret at all"))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad_secret" in lines[0] and "secret" in lines[0], out.stderr


def test_submit_over_mutual_tls_with_a_secret_file(tmp_path: Path) -> None:
    from tests.net import tls_certs

    if tls_certs.how() is None:
        pytest.skip("neither the cryptography package nor the openssl command can make test certificates")
    ca = tls_certs.make_ca(tmp_path)
    node_cert, node_key = tls_certs.make_node(tmp_path, ca, "n1")
    cli_cert, cli_key = tls_certs.make_node(tmp_path, ca, "cli")
    secret = tmp_path / "cluster.secret"
    secret.write_text("a cluster secret of some length\n")
    secret.chmod(0o600)
    lt = LoopThread()
    m = Mesh(lt, tmp_path)
    security = ["--secret-file", str(secret), "--tls-ca", str(ca[0])]

    async def start() -> None:
        proc = NodeProcess("n1", NodeProcess.command("n1", "127.0.0.1:0", [], "--ops", OPS, *security,
                                                     "--tls-cert", str(node_cert), "--tls-key", str(node_key)),
                           env=m.env("n1"))
        m.nodes["n1"] = await proc.start(timeout=60)

    try:
        lt.run(start())
        out = cli(m, "submit", "--to", m.addr("n1"), *security, "--tls-cert", str(cli_cert),
                  "--tls-key", str(cli_key), "t.square", "9")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "81\n"
        # Plain TCP to a TLS mesh: the connection opens, the mesh handshake never completes.
        out = cli(m, "status", "--to", m.addr("n1"), "--secret-file", str(secret), "--connect-timeout", "3")
        assert out.returncode == 1
        assert "handshake does not complete" in out.stderr and "--tls-*" in out.stderr, out.stderr
    finally:
        lt.run(m.stop())
        lt.close()


# -- failover: a SIGKILLed owner, a pin waiting for its node, a returning peer -----------------------
def test_survivors_pick_up_a_sigkilled_owners_tasks_and_a_returning_peer_gets_its_share(tmp_path: Path) -> None:
    lt = LoopThread()
    m = Mesh(lt, tmp_path)

    async def main() -> None:
        await m.start()
        doomed = owned_by("c", NAMES, "doomed-", 6)
        await m.nodes["a"].call({"cmd": "enqueue_many", "items": [
            {"task": t, "op": "t.slow", "args": {"task": t, "seconds": 3.0}} for t in doomed]})

        async def c_started() -> None:
            while not m.runs(doomed).keys():
                await asyncio.sleep(0.05)

        await asyncio.wait_for(c_started(), 60)
        m.nodes["c"].kill()  # mid-run: no answer from c, no goodbye
        boards = await m.boards_have(doomed, timeout=90, on=["a", "b"])
        survivors = TaskRing(["a", "b"])
        for t in doomed:
            assert boards["a"][t]["ok"] and boards["a"][t]["by"] == survivors.owner(t), (t, boards["a"][t])
            assert boards["b"][t] == boards["a"][t]
        ran = m.runs(doomed)
        for t in doomed:
            assert [n for n in ran[t] if n != "c"] == [survivors.owner(t)], (t, ran[t])  # once, on the successor

        async def failovers_counted() -> None:  # counters replicate in batches, a moment later
            while (await m.nodes["a"].status())["warp"]["counters"]["failovers"] < 1:
                await asyncio.sleep(0.1)

        await asyncio.wait_for(failovers_counted(), 30)
        await m.steady(["a", "b"])

        # A task pinned to the absent c waits; later work on a and b does not release it.
        await m.nodes["a"].call({"cmd": "enqueue", "task": "pinned-to-c", "op": "t.echo",
                                 "args": {"task": "pinned-to-c"}, "pin": "c"})
        barrier = [f"barrier-{i}" for i in range(10)]
        await m.nodes["b"].call({"cmd": "enqueue_many", "items": [
            {"task": t, "op": "t.echo", "args": {"task": t}} for t in barrier]})
        boards = await m.boards_have(barrier, on=["a", "b"])
        assert "pinned-to-c" not in boards["a"] and "pinned-to-c" not in m.runs(["pinned-to-c"])

        # c returns (a new incarnation): it runs its pinned task and gets its ring share back.
        await m.start_node("c", [m.addr("a")])
        await m.steady(NAMES)
        boards = await m.boards_have(["pinned-to-c"])
        assert boards["a"]["pinned-to-c"]["by"] == "c"
        back = owned_by("c", NAMES, "back-", 4)
        await m.nodes["a"].call({"cmd": "enqueue_many", "items": [
            {"task": t, "op": "t.echo", "args": {"task": t}} for t in back]})
        boards = await m.boards_have(back)
        assert all(boards["b"][t]["by"] == "c" for t in back)
        assert m.runs([*back, "pinned-to-c"]) == {t: ["c"] for t in [*back, "pinned-to-c"]}

    try:
        lt.run(main(), timeout=280)
    finally:
        lt.run(m.stop())
        lt.close()


def test_node_finds_ops_modules_in_its_working_directory(tmp_path: Path) -> None:
    (tmp_path / "localops.py").write_text(
        "from warpmesh.warp import OpRegistry\nregistry = OpRegistry()\n"
        "registry.register('local.twice', lambda x: 2 * x, mode='inline')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # the console script, as a user runs it (`python -m` would put the directory on sys.path itself)
    script = Path(sys.executable).with_name("warpmesh")
    if not script.exists():
        pytest.skip("no warpmesh console script next to this interpreter")
    proc = subprocess.Popen([str(script), "node", "--id", "solo", "--listen",
                             "127.0.0.1:0", "--ops", "localops", "--concurrency", "2", "--max-attempts", "1"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready" and ready["ops"] == ["local.twice"], ready
        out = subprocess.run([sys.executable, "-m", "warpmesh.cli.app", "submit", "local.twice", "21"],
                             capture_output=True, text=True, timeout=60,
                             env={**env, "WARPMESH_TO": ready["address"]})
        assert out.returncode == 0 and out.stdout == "42\n", out.stderr
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
