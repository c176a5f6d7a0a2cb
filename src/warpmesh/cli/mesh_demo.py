"""``warpmesh mesh-demo``: three peer processes replicate CRDTs over TCP while one is killed.

1. Start three ``warpmesh node`` processes on loopback; peers 2 and 3 join through peer 1.
2. Add elements to the ORSet and keys to the ORMap on every peer; wait until all agree.
3. SIGKILL peer 3. Keep mutating peers 1 and 2 (adds, removes, overwrites, deletes).
4. Restart peer 3 (empty, new incarnation). Anti-entropy brings it up to date.
5. Check that every replica's digest is equal and its contents equal what was written.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from warpmesh.cli.procs import NodeProcess, NodeProcessError


async def _converged(peers: list[NodeProcess], timeout: float) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        statuses = [await p.status() for p in peers]
        digests = {(s["tags_digest"], s["kv_digest"]) for s in statuses}
        rosters = {tuple(s["roster"]) for s in statuses}
        if len(digests) == 1 and len(rosters) == 1 and len(statuses[0]["roster"]) == len(peers):
            return statuses
        if asyncio.get_running_loop().time() > deadline:
            raise NodeProcessError("replicas did not converge within "
                                   f"{timeout:.0f} s: digests {sorted(digests)}")
        await asyncio.sleep(0.2)


async def run_mesh_demo(console: Console, *, elements: int, timeout: float) -> dict[str, Any]:
    started = time.perf_counter()
    names = ["peer-1", "peer-2", "peer-3"]
    want_tags: set[str] = set()
    want_kv: dict[str, Any] = {}
    peers: dict[str, NodeProcess] = {}
    try:
        first = await NodeProcess(names[0], NodeProcess.command(names[0], "127.0.0.1:0", [])).start()
        peers[names[0]] = first
        assert first.address is not None
        for n in names[1:]:
            peers[n] = await NodeProcess(n, NodeProcess.command(n, "127.0.0.1:0", [first.address])).start()
        console.print(f"started {', '.join(f'{n} ({p.address})' for n, p in peers.items())}")

        for i in range(elements):
            p = peers[names[i % 3]]
            tag, key = f"tag-{i}", f"key-{i % 10}"
            await p.call({"cmd": "add", "elem": tag})
            await p.call({"cmd": "put", "key": key, "value": i})
            want_tags.add(tag)
        await _converged(list(peers.values()), timeout)
        # Phase 1 writes to one key came from different peers concurrently (LWW picks one); phase 2
        # overwrites every key from one peer after convergence, so the final values are determined.
        console.print(f"phase 1: {len(want_tags)} tags and 10 keys replicated on all three peers")

        victim = peers[names[2]]
        victim.kill()
        await victim.proc.wait()  # type: ignore[union-attr]
        console.print("[yellow]SIGKILLed peer-3[/yellow]")
        for i in range(elements, 2 * elements):
            p = peers[names[i % 2]]
            await p.call({"cmd": "add", "elem": f"tag-{i}"})
            want_tags.add(f"tag-{i}")
        for i in range(0, elements, 3):
            await peers[names[0]].call({"cmd": "remove", "elem": f"tag-{i}"})
            want_tags.discard(f"tag-{i}")
        for k in range(10):
            await peers[names[1]].call({"cmd": "put", "key": f"key-{k}", "value": f"final-{k}"})
            want_kv[f"key-{k}"] = f"final-{k}"
        await peers[names[1]].call({"cmd": "del", "key": "key-9"})  # same replica as the puts: ordered
        want_kv.pop("key-9")

        peers[names[2]] = await NodeProcess(
            names[2], NodeProcess.command(names[2], "127.0.0.1:0", [first.address])).start()
        console.print("restarted peer-3 (new incarnation, empty state)")
        statuses = await _converged(list(peers.values()), timeout)
        failures = []
        for s in statuses:
            if set(s["tags"]) != want_tags:
                failures.append(f"{s['node']}: tags differ from what was written")
            if s["kv"] != want_kv:
                failures.append(f"{s['node']}: kv differs from what was written")
        table = Table(title="replicas after restart")
        for col in ("peer", "tags", "keys", "tags digest", "kv digest"):
            table.add_column(col)
        for s in statuses:
            table.add_row(s["node"], str(len(s["tags"])), str(len(s["kv"])), s["tags_digest"][:16],
                          s["kv_digest"][:16])
        console.print(table)
        return {
            "converged": not failures,
            "failures": failures,
            "tags": len(want_tags),
            "keys": len(want_kv),
            "seconds": round(time.perf_counter() - started, 2),
        }
    finally:
        for p in peers.values():
            await p.stop()


@click.command("mesh-demo")
@click.option("--elements", type=click.IntRange(min=3, max=10_000), default=30, show_default=True,
              help="Elements each phase writes.")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds to wait for convergence.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line with the outcome.")
def mesh_demo(elements: int, timeout: float, as_json: bool) -> None:
    """Three local peers replicate an ORSet and an ORMap over TCP while one is killed and restarted."""
    console = Console(stderr=as_json)
    try:
        outcome = asyncio.run(run_mesh_demo(console, elements=elements, timeout=timeout))
    except NodeProcessError as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        print(json.dumps(outcome, sort_keys=True))
    elif outcome["converged"]:
        console.print(f"[green]all replicas converged[/green] ({outcome['tags']} tags, {outcome['keys']} keys, "
                      f"{outcome['seconds']} s)")
    else:
        console.print("[red]replicas disagree:[/red] " + "; ".join(outcome["failures"]))
    sys.exit(0 if outcome["converged"] else 1)
