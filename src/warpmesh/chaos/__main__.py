"""``python -m warpmesh.chaos`` (``./run chaos``): run the chaos harness and print its verdict."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


@click.command()
@click.option("--variant", type=click.Choice(["warp", "kv", "both"]), default="both", show_default=True,
              help="'warp': durable Warp peers; 'kv': the Raft KV store, checked for linearizability.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the nemesis schedule and the workload.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Run this many seeds from --seed.")
@click.option("--duration", type=click.FloatRange(min=5), default=45.0, show_default=True, metavar="SECONDS",
              help="How long the nemeses strike (then everything heals and is checked).")
@click.option("--hold", type=click.FloatRange(min=0.5), default=3.0, show_default=True, metavar="SECONDS",
              help="How long each nemesis lasts.")
@click.option("--time-limit", type=click.FloatRange(min=10), default=600.0, show_default=True, metavar="SECONDS",
              help="Give up a run after this long (the lab is removed either way).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Keep the peers' data directories here (default: a temporary directory).")
@click.option("--nemesis", "nemeses", multiple=True, metavar="NAME",
              help="Only these nemeses (repeatable): partition, one-way, isolate, flap, loss, kill-one, "
                   "kill-majority, power-cut (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line per run.")
def main(variant: str, seed: int, seeds: int, duration: float, hold: float, time_limit: float, data: Path | None,
         nemeses: tuple[str, ...], as_json: bool) -> None:
    """5 peers, each in its own network namespace, under partitions, loss, kills and power cuts."""
    from warpmesh.chaos import NEMESES, run_chaos, unavailable_reason

    bad = sorted(set(nemeses) - set(NEMESES))
    if bad:
        raise click.BadParameter(f"unknown nemesis {bad[0]!r}; choose among {', '.join(NEMESES)}",
                                 param_hint="--nemesis")

    reason = unavailable_reason()
    if reason is not None:
        raise click.ClickException(f"cannot run the chaos harness: {reason}; run it as root on Linux with iproute2 "
                                   "and nftables (.ci/run installs them)")
    ok = True
    for s in range(seed, seed + seeds):
        for v in (["warp", "kv"] if variant == "both" else [variant]):
            where = None if data is None else data / f"{v}-{s}"
            report = run_chaos(s, variant=v, duration=duration, hold=hold, time_limit=time_limit, data=where,
                               nemeses=nemeses or NEMESES)
            ok = ok and bool(report["ok"])
            if as_json:
                print(json.dumps(report, sort_keys=True), flush=True)
            else:
                _print(report)
    sys.exit(0 if ok else 1)


def _print(r: dict[str, Any]) -> None:
    verdict = "ok" if r["ok"] else "FAILED"
    nemeses = ", ".join(e["nemesis"] for e in r.get("nemeses", []))
    if r["variant"] == "warp":
        click.echo(f"warp seed {r['seed']}: {verdict}: {r.get('acknowledged', 0)} jobs acknowledged, lost "
                   f"{r.get('lost')}, wrong {r.get('wrong')}, duplicates {r.get('duplicates')}, converged "
                   f"{r.get('converged')}; {r['seconds']} s; nemeses: {nemeses}")
    else:
        click.echo(f"kv seed {r['seed']}: {verdict}: {r.get('ops', 0)} operations ({r.get('unknown', 0)} unknown), "
                   f"linearizable {r.get('linearizable')}; {r['seconds']} s; nemeses: {nemeses}")
    if r.get("error"):
        click.echo(f"  error: {r['error']}")


if __name__ == "__main__":
    main()
