"""``warpmesh top --to HOST:PORT``: the dashboard's views in the terminal, refreshing live (rich).

Joins the mesh as a client and watches every peer's event feed (as ``warpmesh dashboard`` does);
shows the job counters, the peers (state, ring share, runs), throughput and the newest runs of the
task stream. ``--once`` prints one snapshot and exits; ``--json`` prints snapshots as JSON lines
(the board's summary object; with ``--once``, exactly one).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from warpmesh.cli.client import _prepare, _run, client_options


def render(summary: dict[str, Any], where: str) -> Any:
    """One screen of ``top`` as a rich renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    jobs = summary["jobs"]
    series = summary["series"]
    rate = series[-1]["rate"] if series else 0
    head = Text.assemble(("warpmesh top", "bold"), f"  mesh via {where}   ",
                         ("jobs finished ", "dim"), (f"{jobs['finished']}", "bold green"),
                         ("  failed ", "dim"), f"{jobs['failed']}", ("  running ", "dim"), f"{jobs['running']}",
                         ("  queue ", "dim"), f"{jobs['queue_depth']}", ("  rate ", "dim"), f"{rate}/s",
                         ("  duplicates ", "dim"), f"{jobs['duplicates']}", ("  stolen ", "dim"), f"{jobs['stolen']}")
    peers = Table(box=None, pad_edge=False, header_style="bold", title=None)
    for col in ("peer", "role", "state", "ring share", "ran", "running", "lag"):
        peers.add_column(col, justify="left" if col in ("peer", "role", "state") else "right")
    colours = {"live": "green", "suspected": "yellow", "lost": "red"}
    for p in summary["peers"]:
        peers.add_row(p["peer"], p["role"], f"[{colours.get(p['state'], 'white')}]{p['state']}[/]",
                      f"{100 * p['ring_share']:.1f}%" if p["role"] == "worker" else "", str(p["executions"]),
                      str(p["running"]), _lag_text(p.get("lag")))
    stream = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("#", "job", "op", "peer", "took", ""):
        stream.add_column(col)
    for r in summary["stream"]["runs"][:10]:
        took = "" if r["duration"] is None else f"{1000 * r['duration']:.1f} ms"
        marks = " ".join(m for m, on in (("failed", not r["ok"]), ("dup", r["duplicate"]), ("stolen", r["stolen"]))
                         if on)
        stream.add_row(str(r["n"]), r["job"], r["op"], r["peer"], took, marks)
    raft = summary.get("raft") or {}
    extra = [Text("raft: " + ", ".join(f"{n} term {v.get('term')} commit {v.get('commit')}"
                                        + (" (leader)" if v.get("leader") == n else "") for n, v in raft.items()))] \
        if raft else []
    return Group(head, Text(""), peers, Text(""), Text("task stream (newest first)", style="bold"), stream, *extra)


def _lag_text(lag: Any) -> str:
    """Our board deltas a peer has not confirmed, and the oldest one's age ("" for a non-replica)."""
    if not lag:
        return ""
    return f"{lag['batches']} ({1000 * lag['seconds']:.0f} ms)" if lag["batches"] else "0"


@click.command()
@click.option("--once", is_flag=True, help="Print one snapshot (after --settle seconds) and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print snapshots as JSON lines (the board's summary object).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=0.5, show_default=True, metavar="SECONDS",
              help="Seconds between refreshes.")
@click.option("--settle", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="SECONDS",
              help="With --once: listen this long for events before the snapshot.")
@client_options
def top(once: bool, as_json: bool, interval: float, settle: float, to: tuple[str, int],
        listen: tuple[str, int] | None, connect_timeout: float, log_level: str, secret_file: Path | None,
        tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
    """Watch a running mesh in the terminal: peers, job counts, throughput, the task stream."""
    from warpmesh.cli.dashboard import watching

    secret, tls = _prepare(log_level, secret_file, tls_cert, tls_key, tls_ca)
    where = f"{to[0]}:{to[1]}"

    async def main() -> None:
        async with watching(to, listen, secret, tls, connect_timeout) as observer:
            board = observer.board

            def summary() -> dict[str, Any]:
                observer.refresh()
                return board.summary(observer.node.now())

            if once:
                await asyncio.sleep(settle)
                snap = summary()
                if as_json:
                    sys.stdout.write(json.dumps(snap, default=str) + "\n")
                else:
                    from rich.console import Console

                    Console(highlight=False).print(render(snap, where))
                return
            if as_json:
                while True:
                    sys.stdout.write(json.dumps(summary(), default=str) + "\n")
                    sys.stdout.flush()
                    await asyncio.sleep(interval)
            from rich.console import Console
            from rich.live import Live

            with Live(render(summary(), where), console=Console(highlight=False), auto_refresh=False,
                      screen=False) as live:
                while True:
                    await asyncio.sleep(interval)
                    live.update(render(summary(), where), refresh=True)

    _run(main(), "stopped")
