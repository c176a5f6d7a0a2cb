"""Entry point of the ``warpmesh`` console script.

Subcommands are registered by import path in :data:`COMMANDS` and imported only when invoked, so
``warpmesh --help`` stays fast and a subcommand's heavy dependencies (wasmtime, SQLite drivers...)
load only when needed.

Every usage error (unknown option, bad value, missing argument) exits with status 2 and one line on
stderr naming the problem and pointing at ``--help``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from warpmesh import __version__

#: name -> "module:attribute" of a click command or group. Keep sorted; one line per command.
COMMANDS: dict[str, tuple[str, str]] = {
    "cache": ("warpmesh.cli.check:cache", "Warm build caches on this machine: list, collect old ones."),
    "cancel": ("warpmesh.cli.jobs:cancel", "Cancel jobs of a running mesh (queued ones removed, running ones stopped)."),
    "check": ("warpmesh.cli.check:check", "Run a build tool's check in many worktrees as command jobs (warm boot)."),
    "dashboard": ("warpmesh.cli.dashboard:dashboard", "Serve a live web dashboard of a running mesh (peers, jobs, metrics)."),
    "demo": ("warpmesh.cli.demo:demo", "N local peer processes share a pile of jobs; every answer is checked."),
    "draft": ("warpmesh.cli.draft:draft", "Drafts: explain a plan; run the seed's query planned vs unplanned on 3 peers."),
    "engine": ("warpmesh.cli.engine:engine", "Deterministic graph-rewrite engine: replay Echo's DIND logs."),
    "fold": ("warpmesh.cli.fold:fold", "Fold a directory with isolate workers (files and bytes per subtree)."),
    "game": ("warpmesh.cli.game:game", "Turn-based games over Raft on a TCP mesh: host, join, watch."),
    "jobs": ("warpmesh.cli.jobs:jobs", "List the jobs of a running mesh: state, owner, attempts, errors."),
    "kv": ("warpmesh.cli.kv:kv", "A replicated key-value store on Raft: serve, get, put, cas, up."),
    "mesh-demo": ("warpmesh.cli.mesh_demo:mesh_demo", "Three local peers replicate CRDTs over TCP while one is killed."),
    "node": ("warpmesh.cli.node:node", "Run one long-lived mesh peer (a Warp worker)."),
    "results": ("warpmesh.cli.client:results", "Print (and optionally acknowledge) answers from a running mesh."),
    "run": ("warpmesh.cli.run:run", "Run a WebAssembly module as a memoized, sandboxed job."),
    "sim": ("warpmesh.cli.sim:sim", "Deterministic simulations over many seeds, with one-command replay."),
    "status": ("warpmesh.cli.client:status", "Show a running mesh: peers, ring shares, queue, counters."),
    "submit": ("warpmesh.cli.client:submit", "Submit jobs to a running mesh and wait for their answers."),
    "top": ("warpmesh.cli.top:top", "Watch a running mesh live in the terminal: peers, job counts, task stream."),
    "world": ("warpmesh.cli.world:world", "Replicated worlds: one engine per peer, ordered by Raft, hashes compared."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):  # pragma: no cover - registry mistake
            raise TypeError(f"{target[0]} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # List lazily registered commands with their one-line help without importing them.
        rows = [(name, help_text) for name, (_, help_text) in sorted(COMMANDS.items())]
        rows += [(n, c.get_short_help_str()) for n, c in sorted(self.commands.items()) if n not in COMMANDS]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="warpmesh")
def cli() -> None:
    """warpmesh: leaderless distributed work (replicated queues, a hash ring, Raft, memoized workers)."""


def _one_line(err: click.ClickException) -> str:
    return " ".join(err.format_message().split())


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; usage errors print one line and exit 2, other click errors exit 1.

    A bare command group prints its help and exits 0 (the one exception to the one-line rule).
    """
    try:
        rv = cli.main(args=argv, prog_name="warpmesh", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("warpmesh: aborted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as err:
        # A bare group (`warpmesh`, `warpmesh kv`): its normal help, not a one-line error.
        click.echo(err.ctx.get_help() if err.ctx is not None else cli.get_help(click.Context(cli)))
        sys.exit(0)
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx is not None else "warpmesh"
        click.echo(f"{where}: error: {_one_line(err)} (see '{where} --help')", err=True)
        sys.exit(2)
    except click.ClickException as err:
        click.echo(f"warpmesh: error: {_one_line(err)}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as err:
        # Any command: a non-loopback address without a cluster secret is a usage error, not a traceback.
        secret_mod = sys.modules.get("warpmesh.net.secret")
        if secret_mod is not None and isinstance(err, secret_mod.InsecureAddressError):
            click.echo(f"warpmesh: error: {' '.join(str(err).split())}", err=True)
            sys.exit(2)
        raise
    # In non-standalone mode click returns ctx.exit()'s code instead of exiting.
    if isinstance(rv, int) and rv != 0:
        sys.exit(rv)
    return rv


if __name__ == "__main__":  # pragma: no cover
    main()
