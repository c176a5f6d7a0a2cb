"""``warpmesh draft``: explain a draft's plan, and run the seed's queries on local peer processes.

* ``draft explain MODULE:ATTR`` prints :meth:`Draft.explain` for a draft (or a function returning
  one) defined in a Python module; ``--ops MODULE:ATTR`` first runs it in process over that op table,
  so the plan uses real statistics.
* ``draft demo`` starts 3 peer processes on loopback (TCP mesh: Warp, Raft on 0x50, statistics on
  0x51), runs a query unplanned and then planned from the gossiped statistics on one of them, and
  reports rounds (cost model), Raft proposals (counted from the committed log), coordinated volume
  and whether both results are equal.
* ``draft peer`` (hidden) is one such peer, driven by JSON lines on stdin.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import sys
from typing import Any

import click

from warpmesh.cli.common import parse_addr

QUERIES = ("three-branch", "thousand-docs")


def _load(ref: str, what: str) -> Any:
    if ":" not in ref:
        raise click.BadParameter(f"expected MODULE:ATTR, got {ref!r}", param_hint=what)
    module, attr = ref.split(":", 1)
    try:
        obj = getattr(importlib.import_module(module), attr)
    except ImportError as err:
        raise click.BadParameter(f"cannot import {module!r}: {err}", param_hint=what) from None
    except AttributeError:
        raise click.BadParameter(f"{module!r} has no attribute {attr!r}", param_hint=what) from None
    return obj


def _query(name: str) -> tuple[Any, dict[str, Any]]:
    from warpmesh.planning import examples

    if name == "thousand-docs":
        return examples.thousand_docs(), examples.THOUSAND_DOCS_OPS
    return examples.three_branch(), examples.THREE_BRANCH_OPS


def _nodes_json(d: Any) -> list[dict[str, Any]]:
    return [{"id": n.id, "kind": n.stage.kind.name, "op_ids": list(n.stage.op_ids),
             "predecessors": sorted(n.predecessors)} for n in d.nodes]


def _cost_json(c: Any) -> dict[str, int]:
    return {"rounds": c.rounds, "coupling": c.coupling, "coordinated_volume": c.coordinated_volume}


@click.group()
def draft() -> None:
    """Drafts: explain a plan, or run the seed's three-branch query on local peer processes."""


@draft.command("explain")
@click.argument("ref", metavar="MODULE:ATTR")
@click.option("--ops", "ops_ref", metavar="MODULE:ATTR", default=None,
              help="An op table (dict: op id -> function): run the draft in process first, for statistics.")
@click.option("--max-coupling", type=click.IntRange(min=1), default=None, help="Largest batch the plan may form.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: nodes and costs before and after.")
def explain(ref: str, ops_ref: str | None, max_coupling: int | None, as_json: bool) -> None:
    """Print the plan of the draft at MODULE:ATTR (a Draft, or a function returning one)."""
    from warpmesh.planning import Draft, WarpStats
    from warpmesh.planning.interpret import evaluate

    obj = _load(ref, "MODULE:ATTR")
    d = obj() if callable(obj) and not isinstance(obj, Draft) else obj
    if not isinstance(d, Draft):
        raise click.BadParameter(f"{ref} is not a Draft (nor a function returning one)", param_hint="MODULE:ATTR")
    stats = WarpStats()
    if ops_ref is not None:
        ops = _load(ops_ref, "--ops")
        try:
            evaluate(d, ops, stats=stats)
        except Exception as err:  # the user's ops: report, do not trace back
            raise click.ClickException(f"running the draft over {ops_ref} failed: {err}; check the op table") from None
    planned = d.plan(stats, max_coupling=max_coupling)
    if as_json:
        print(json.dumps({
            "nodes": _nodes_json(d), "cost": _cost_json(d.coordination_cost(stats)),
            "planned_nodes": _nodes_json(planned), "planned_cost": _cost_json(planned.coordination_cost(stats)),
            "equivalent": planned.is_equivalent_to(d),
        }, sort_keys=True))
        return
    click.echo(d.explain(stats, max_coupling=max_coupling))


# -- the demo: 3 peer processes ----------------------------------------------------------------
async def run_demo(query: str, timeout: float) -> dict[str, Any]:
    from warpmesh.cli.procs import NodeProcess

    ids = ["p1", "p2", "p3"]
    voters = ",".join(ids)

    def args(node_id: str, join: list[str]) -> list[str]:
        a = [sys.executable, "-m", "warpmesh.cli.app", "draft", "peer", "--id", node_id, "--listen",
             "127.0.0.1:0", "--voters", voters, "--query", query]
        for j in join:
            a += ["--join", j]
        return a

    procs: list[NodeProcess] = []
    try:
        first = await NodeProcess(ids[0], args(ids[0], [])).start(timeout)
        procs.append(first)
        assert first.address is not None
        for i in ids[1:]:
            procs.append(await NodeProcess(i, args(i, [first.address])).start(timeout))
        for proc in procs:
            await _ok(proc, {"cmd": "wait_ready"}, timeout)
        coord = procs[0]
        u = await _ok(coord, {"cmd": "run", "planned": False}, timeout)
        p = await _ok(coord, {"cmd": "run", "planned": True}, timeout)
        counts = [(await _ok(x, {"cmd": "count", "at_least": p["proposals"]}, timeout))["proposals"] for x in procs]
        if len(set(counts)) != 1:
            raise click.ClickException(f"peers disagree on the committed log: {counts}")
        return {
            "rounds_unplanned": p["rounds_unplanned"],
            "rounds_planned": p["rounds_planned"],
            "raft_proposals_unplanned": u["proposals"],
            "raft_proposals_planned": p["proposals"] - u["proposals"],
            "coordinated_volume_unplanned": p["volume_unplanned"],
            "coordinated_volume_planned": p["volume_planned"],
            "results_equal": u["result"] == p["result"],
        }
    finally:
        await asyncio.gather(*(x.stop() for x in procs), return_exceptions=True)


async def _ok(p: Any, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
    answer: dict[str, Any] = await p.call(cmd, timeout)
    if answer["event"] != "ok":
        raise click.ClickException(f"{p.node_id}: {answer.get('message', answer)}")
    return answer


@draft.command("demo")
@click.option("--query", type=click.Choice(QUERIES), default="three-branch", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=1.0), default=60.0, show_default=True,
              help="Seconds to wait for each step.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line.")
def demo(query: str, timeout: float, as_json: bool) -> None:
    """Run the seed's query on 3 local peer processes, unplanned then planned, and compare."""
    from warpmesh.cli.procs import NodeProcessError

    try:
        out = asyncio.run(run_demo(query, timeout))
    except NodeProcessError as err:
        raise click.ClickException(f"{err} (is loopback TCP available? try a longer --timeout)") from None
    if as_json:
        print(json.dumps(out, sort_keys=True))
        return
    click.echo(f"query {query} on 3 peer processes")
    click.echo(f"  rounds (cost model):      unplanned {out['rounds_unplanned']}  planned {out['rounds_planned']}")
    click.echo(f"  Raft proposals (log):     unplanned {out['raft_proposals_unplanned']}  "
               f"planned {out['raft_proposals_planned']}")
    click.echo(f"  coordinated volume:       unplanned {out['coordinated_volume_unplanned']}  "
               f"planned {out['coordinated_volume_planned']}")
    click.echo(f"  results equal:            {out['results_equal']}")


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


@draft.command("peer", hidden=True)
@click.option("--id", "node_id", required=True)
@click.option("--listen", default="127.0.0.1:0", show_default=True)
@click.option("--join", multiple=True)
@click.option("--voters", required=True, help="Comma-separated ids of every peer (the Raft cluster).")
@click.option("--query", type=click.Choice(QUERIES), default="three-branch")
def peer(node_id: str, listen: str, join: tuple[str, ...], voters: str, query: str) -> None:
    """One demo peer: a PlanningNode on a TCP mesh, driven by JSON lines on stdin."""
    listen_addr = parse_addr(listen, "--listen")
    join_addrs = [parse_addr(j, "--join") for j in join]
    voter_ids = [v for v in voters.split(",") if v]
    asyncio.run(_peer(node_id, listen_addr, join_addrs, voter_ids, query))


async def _peer(node_id: str, listen: tuple[str, int], join: list[tuple[str, int]], voters: list[str],
                query: str) -> None:
    from warpmesh.net.tcp import TcpMesh, boot_incarnation
    from warpmesh.planning import PlanningNode

    d, ops = _query(query)
    mesh = TcpMesh(node_id, listen=listen, join=join, incarnation=boot_incarnation())
    await mesh.start()
    node = await PlanningNode(mesh, ops, voters=voters, chunk_size=64).start()
    assert mesh.address is not None
    _emit("ready", node=node_id, address=f"{mesh.address[0]}:{mesh.address[1]}")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            try:
                cmd = json.loads(line)
                what = cmd.get("cmd")
                if what == "quit":
                    break
                if what == "wait_ready":
                    while not (node.warp.workers == frozenset(voters) and node.raft.leader.value):
                        await asyncio.sleep(0.02)
                    _emit("ok")
                elif what == "run":
                    stats = await node.sync_stats()  # what the planner sees now (the run adds to it)
                    planned = d.plan(stats)
                    costs = {"rounds_unplanned": d.coordination_cost(stats).rounds,
                             "rounds_planned": planned.coordination_cost(stats).rounds,
                             "volume_unplanned": d.coordination_cost(stats).coordinated_volume,
                             "volume_planned": planned.coordination_cost(stats).coordinated_volume}
                    ex, _ = await node.execute(planned if cmd.get("planned") else d)
                    state = sorted(repr(x) for x in ex.result.state)
                    _emit("ok", proposals=node.embroider_proposals,
                          result=hashlib.blake2b("\n".join(state).encode(), digest_size=16).hexdigest(), **costs)
                elif what == "count":
                    want = int(cmd.get("at_least", 0))
                    for _ in range(500):
                        if node.embroider_proposals >= want:
                            break
                        await asyncio.sleep(0.01)
                    _emit("ok", proposals=node.embroider_proposals)
                else:
                    _emit("error", message=f"unknown command {what!r}")
            except Exception as err:  # report to the driver, keep serving
                _emit("error", message=f"{type(err).__name__}: {err}")
    finally:
        await node.close()
        await mesh.close()
