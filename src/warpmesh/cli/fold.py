"""``warpmesh fold DIR [--json]``: count files and bytes per subtree with isolate workers."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from warpmesh.cli._workers_common import check_wasm, job_failed, limits, open_runner, store_options


@click.command("fold")
@click.argument("directory", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--visitor", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A visitor module to use instead of the bundled filecount.wasm.")
@store_options
def fold(directory: Path, as_json: bool, visitor: Path | None, store_dir: Path | None, trace_path: Path | None,
         salt: str, fuel: int, memory_mib: int, deadline: float) -> None:
    """Fold DIRECTORY bottom-up with isolates: one fold frame per directory, children through one
    run_many, the visitor (default: count files and bytes) per node. Every subtree is memoized, so
    a rerun after a change only recomputes the path from the change to the root."""
    from warpmesh.workers import JobError, Kind
    from warpmesh.workers.fold import Counts, FoldError, import_dir, install_fold, wasm_fold
    from warpmesh.workers.guests import GuestNotFound

    visitor_wasm = check_wasm(visitor.read_bytes(), str(visitor), "--visitor") if visitor else None
    runner, host = open_runner(store_dir, trace_path)
    try:
        t0 = time.perf_counter()
        try:
            tree = _import(runner.store, directory, import_dir, show=not as_json and sys.stderr.isatty())
        except FoldError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            mods = install_fold(runner, visitor_wasm)
        except GuestNotFound as exc:
            raise click.ClickException(str(exc)) from None
        t1 = time.perf_counter()
        try:
            res = wasm_fold(runner, tree, mods, salt=salt, limits=limits(fuel, memory_mib, deadline))
        except JobError as exc:
            raise job_failed(exc) from None
        t2 = time.perf_counter()
        doc: dict[str, object] = {
            "directory": str(directory), "tree": tree.hex, "key": res.key.hex(), "result": res.ref.hex,
            "kind": res.ref.kind.name.lower(), "hit": res.hit, "source": res.source,
            "import_ms": round((t1 - t0) * 1e3, 3), "fold_ms": round((t2 - t1) * 1e3, 3)}
        counts = None
        if visitor is None and res.ref.kind is Kind.BLOB:
            counts = Counts.from_blob(runner.store.get_blob(res.ref.id))
            doc.update(files=counts.files, bytes=counts.bytes)
        if as_json:
            click.echo(json.dumps(doc))
            return
        how = {"memo": "cache hit", "flight": "shared a concurrent run", "run": "computed"}[res.source]
        click.echo(f"result {doc['kind']} {doc['result']} - {how} in {doc['fold_ms']} ms "
                   f"(import {doc['import_ms']} ms)")
        click.echo(f"key    {doc['key']}")
        if counts is not None:
            click.echo(f"{counts.files} files, {counts.bytes} bytes")
    finally:
        runner.close()
        runner.store.close()
        host.close()


def _import(store, directory, import_dir, show: bool):  # type: ignore[no-untyped-def]
    if not show:
        return import_dir(store, directory)
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("importing {task.fields[n]} entries"), transient=True,
                  console=None) as progress:
        task = progress.add_task("import", n=0, total=None)
        return import_dir(store, directory, progress=lambda n: progress.update(task, n=n))
