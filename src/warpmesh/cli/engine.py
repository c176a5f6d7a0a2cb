"""``warpmesh engine``: the deterministic graph-rewrite engine from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from warpmesh.engine.hashing import PROFILES


@click.group("engine")
def engine() -> None:
    """Deterministic graph-rewrite engine (hash-compatible with Echo's warp-core)."""
    from warpmesh.aio.tuning import install_gc_pause

    install_gc_pause()  # a tick is a bulk section: pause the cyclic GC in it


@engine.command("replay", short_help="Replay an Echo DIND log; print the state hash after each step.")
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--expect", "expect", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Echo's LOG.hashes.json: exit 0 only if every step's hash matches.")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="echo", show_default=True,
              help="Hash layout: 'echo' (current Echo) or 'seed' (Echo 720eea7a, the tour).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text lines.")
def replay(log: Path, expect: Path | None, profile: str, as_json: bool) -> None:
    """Replay one of Echo's DIND logs (LOG.eintlog) and print the state hash after every step.

    The replay mode (per-frame, or ingest-all-first) is chosen from the file name or the MANIFEST.json
    tags beside the log, as Echo's harness does.
    """
    from warpmesh.examples.dind.eintlog import EintLogError
    from warpmesh.examples.dind.harness import first_mismatch, load_expected, replay_log

    expected = None
    if expect is not None:
        try:
            expected = load_expected(expect).hashes
        except (OSError, ValueError) as err:
            raise click.ClickException(f"--expect: {err}") from None
    try:
        result = replay_log(log, profile)
    except (EintLogError, OSError) as err:
        raise click.ClickException(f"{err} (is this one of Echo's DIND .eintlog files?)") from None

    mismatch = first_mismatch(result.hashes, expected) if expected is not None else None
    if as_json:
        doc = {
            "log": str(log),
            "mode": result.mode,
            "profile": profile,
            "frames": result.frames,
            "steps": len(result.hashes) - 1,
            "hashes_hex": [h.hex() for h in result.hashes],
        }
        if expected is not None:
            doc["expect"] = str(expect)
            doc["match"] = mismatch is None
            doc["first_mismatch"] = mismatch
        click.echo(json.dumps(doc, indent=1))
    else:
        for i, h in enumerate(result.hashes):
            click.echo(f"{i:6d}  {h.hex()}")
        click.echo(f"# {log.name}: {result.frames} frames, {len(result.hashes) - 1} steps, "
                   f"mode {result.mode}, profile {profile}", err=True)
    if expected is None or expect is None:
        return
    if mismatch is None:
        if not as_json:
            click.echo(f"# all {len(expected)} hashes match {expect.name}", err=True)
        return
    got = result.hashes[mismatch].hex() if mismatch < len(result.hashes) else "(no such step)"
    want = expected[mismatch].hex() if mismatch < len(expected) else "(no such step)"
    hint = " (step 0 is the initial state: check --profile)" if mismatch == 0 else ""
    click.echo(f"warpmesh engine replay: step {mismatch} differs from {expect.name}: got {got}, "
               f"expected {want}{hint}", err=True)
    sys.exit(1)
