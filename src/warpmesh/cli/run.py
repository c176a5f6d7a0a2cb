"""``warpmesh run MODULE.wasm [--arg NAME=VALUE ...] [--json]``: run a module as a memoized isolate job."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from warpmesh.cli._workers_common import check_wasm, job_failed, limits, open_runner, store_options


def _parse_arg(text: str, store: Any) -> tuple[str, Any]:
    from warpmesh.workers.fold import FoldError, import_dir

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"expected NAME=VALUE, got {text!r}", param_hint="--arg")
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.exists():
            raise click.BadParameter(f"{name}: no such file or directory {path}", param_hint="--arg")
        try:
            return name, import_dir(store, path)
        except FoldError as exc:
            raise click.BadParameter(f"{name}: {exc}", param_hint="--arg") from None
    return name, value


def _module_bytes(module: str) -> bytes:
    path = Path(module)
    if not path.is_file():
        raise click.BadParameter(f"no such file {module!r}", param_hint="MODULE")
    data = path.read_bytes()
    if path.suffix == ".wat":
        import wasmtime

        try:
            return bytes(wasmtime.wat2wasm(data.decode("utf-8")))
        except (wasmtime.WasmtimeError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"{module}: not valid WAT: {str(exc).splitlines()[0]}",
                                     param_hint="MODULE") from None
    return check_wasm(data, module, "MODULE")


def describe_value(store: Any, ref: Any) -> dict[str, Any]:
    """A printable view of a result object."""
    from warpmesh.workers import Kind

    if ref.kind is Kind.TREE:
        entries = store.get_tree(ref.id)
        return {"entries": [{"name": e.name, "kind": e.kind.name.lower(), "id": e.id.hex()} for e in entries]}
    data = store.get_blob(ref.id)
    try:
        text = data.decode("utf-8")
        if text.isprintable() or all(c.isprintable() or c in "\n\t\r" for c in text):
            return {"text": text}
    except UnicodeDecodeError:
        pass
    return {"hex": data[:256].hex(), "truncated": len(data) > 256}


@click.command("run")
@click.argument("module")
@click.option("--arg", "args", multiple=True, metavar="NAME=VALUE",
              help="An argument: a string, or @PATH for a file's bytes or a directory's tree. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@store_options
def run(module: str, args: tuple[str, ...], as_json: bool, store_dir: Path | None, trace_path: Path | None,
        salt: str, fuel: int, memory_mib: int, deadline: float) -> None:
    """Run MODULE (a .wasm or .wat file) as a memoized, sandboxed job and print its result.

    The result hash is the id of the output object; the key is the request's hash (module, args,
    salt, limits). Running the same request again is answered from the cache.
    """
    from warpmesh.workers import JobError

    wasm = _module_bytes(module)
    runner, host = open_runner(store_dir, trace_path)
    try:
        parsed = dict(_parse_arg(a, runner.store) for a in args)
        mid = runner.put_module(wasm)
        t0 = time.perf_counter()
        try:
            res = runner.run(mid, parsed, salt=salt, limits=limits(fuel, memory_mib, deadline))
        except JobError as exc:
            raise job_failed(exc) from None
        elapsed = (time.perf_counter() - t0) * 1e3
        value = describe_value(runner.store, res.ref)
        doc = {"module": mid.hex(), "key": res.key.hex(), "result": res.ref.hex, "kind": res.ref.kind.name.lower(),
               "size": res.size, "hit": res.hit, "source": res.source, "memoized": res.clean,
               "elapsed_ms": round(elapsed, 3), "value": value}
        if as_json:
            click.echo(json.dumps(doc))
            return
        how = {"memo": "cache hit", "flight": "shared a concurrent run", "run": "ran"}[res.source]
        click.echo(f"result {doc['kind']} {doc['result']} ({res.size} bytes) - {how} in {elapsed:.2f} ms")
        click.echo(f"key    {doc['key']}")
        if "text" in value:
            click.echo(value["text"].rstrip("\n"))
        elif "hex" in value:
            click.echo(f"hex    {value['hex']}{'...' if value['truncated'] else ''}")
        else:
            for e in value["entries"]:
                click.echo(f"  {e['kind']:4} {e['id']}  {e['name']}")
        if not res.clean:
            click.echo("note: the job saw a nested run fail, so this result was not memoized", err=True)
    finally:
        runner.close()
        runner.store.close()
        host.close()
