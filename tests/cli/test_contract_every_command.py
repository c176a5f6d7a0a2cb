"""The CLI contract, for EVERY subcommand (issue 9, "Done when"): found by walking the click app.

* missing or invalid arguments: exit 2 and ONE line on stderr, no traceback;
* an absent server (every connection refused): exit 1 within 2 s, a message that says what to do;
* a bare command group: its normal help on stdout, exit 0.

The cases are data-driven. Invalid values come from each parameter's click type (ranges, choices,
paths that must exist) and from :data:`INVALID` by parameter name; required parameters are filled
from :data:`VALID` by name (else from their type). A command added later is covered automatically;
if the tables cannot build a valid command line for it, its cases are skipped with a note saying
which entry to add, but a traceback always fails. Commands run in-process through ``main(argv)``.
"""

from __future__ import annotations

import gc
import logging
import socket
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from warpmesh.cli.app import cli, main

#: A command that ignores a bad value may go on to serve forever: that must fail, not hang the suite.
pytestmark = pytest.mark.timeout(60)


def _refused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


REFUSED = f"127.0.0.1:{_refused_port()}"
#: Must not be present: each is the default of some option (or would change what is tested).
ENV_CLEARED = ("WARPMESH_SECRET", "WARPMESH_TO", "WARPMESH_KV_SERVERS", "WARPMESH_STORE")

#: A valid value per name of a string parameter ("{tmp}" is replaced by a scratch directory, "{file}" by a file in it).
VALID: dict[str, str] = {
    "key": "k", "value": "v", "expected": "a", "new": "b",
    "node_id": "contract-x", "listen": "127.0.0.1:0", "peers": "contract-x=127.0.0.1:1",
    "data_dir": "{tmp}/data", "store_dir": "{tmp}/store", "directory": "{tmp}", "log": "{file}",
    "to": REFUSED, "servers": REFUSED, "join": REFUSED,
    "op": "demo.square", "tasks": "t1", "task": "t1", "module": "{file}",
}

#: Invalid values per parameter name, for string parameters (other types get values from their type).
_BAD_ADDRESSES = ["nonsense", "127.0.0.1:99999", "127.0.0.1:-1"]
_INSECURE = "10.0.0.1:7101"  # a non-loopback address without a cluster secret
INVALID: dict[str, list[str]] = {
    "listen": [*_BAD_ADDRESSES, _INSECURE], "join": [*_BAD_ADDRESSES, _INSECURE], "to": [*_BAD_ADDRESSES, _INSECURE],
    "servers": [*_BAD_ADDRESSES, _INSECURE],
    "key": [""], "peers": ["nonsense", f"contract-x=127.0.0.1:1,other={_INSECURE}"],
}

#: Extra arguments for the absent-server case, per command path; a command that talks to a server
#: through a parameter named in UNREACHABLE_PARAMS is covered without an entry here.
UNREACHABLE_EXTRA: dict[str, list[str]] = {
    "node": ["--join", REFUSED, "--join-timeout", "0.5"],
    "submit": ["demo.square", "3"],
}
UNREACHABLE_PARAMS = ("to", "servers")
#: Absent-server runs must end within this many seconds (connections are refused at once).
PROMPT_S = 2.0
#: Words one of which a "what to do next" message contains.
ADVICE = ("start", "--", "warpmesh ", "is a", "check", "pass ")


def _walk(cmd: click.Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, (*path, name))


ALL = [(p, c) for p, c in _walk(cli, ()) if p]
LEAVES = [(p, c) for p, c in ALL if not isinstance(c, click.Group)]
GROUPS = [(p, c) for p, c in _walk(cli, ()) if isinstance(c, click.Group)]


def _params(cmd: click.Command) -> list[click.Parameter]:
    return [p for p in cmd.params if not getattr(p, "hidden", False) and not p.is_eager
            and p.name not in ("help", "version")]


def _flag(p: click.Parameter) -> str:
    assert isinstance(p, click.Option)
    return max(p.opts, key=len)


def _is_flag(p: click.Parameter) -> bool:
    return isinstance(p, click.Option) and (p.is_flag or p.count)


def _valid(p: click.Parameter) -> str | None:
    """A value ``p`` accepts, or None when the tables do not know one."""
    t = p.type
    if p.name in VALID and isinstance(t, click.types.StringParamType):  # names mean strings only
        return VALID[p.name]
    if isinstance(t, click.Choice):
        return str(t.choices[0])
    if isinstance(t, click.IntRange | click.FloatRange):
        lo = t.min if t.min is not None else 1
        return str(lo + 1 if t.min_open else lo)
    if isinstance(t, click.types.IntParamType | click.types.FloatParamType):
        return "1"
    if isinstance(t, click.Path):
        return "{file}" if t.exists else "{tmp}/new"
    if isinstance(t, click.types.StringParamType):
        return "x"
    return None


def _invalid(p: click.Parameter) -> list[str]:
    """Values ``p`` must refuse as a usage error."""
    t = p.type
    if p.name in INVALID and isinstance(t, click.types.StringParamType):
        return INVALID[p.name]
    if isinstance(t, click.Choice):
        return ["no-such-choice"]
    if isinstance(t, click.IntRange | click.FloatRange):
        out = ["not-a-number"]
        if t.min is not None:
            out.append(str(t.min - 1))
        if t.max is not None:
            out.append(str(t.max + 1))
        return out
    if isinstance(t, click.types.IntParamType | click.types.FloatParamType):
        return ["not-a-number"]
    if isinstance(t, click.Path) and t.exists:
        return ["/no/such/path/for/the/contract/test"]
    return []


def _required_argv(cmd: click.Command, skip: click.Parameter | None = None,
                   override: tuple[click.Parameter, str] | None = None) -> list[str] | None:
    """Options first, then positional arguments: every required one valid (``skip`` left out,
    ``override`` given its value even when optional)."""
    opts: list[str] = []
    args: list[str] = []
    for p in _params(cmd):
        if p is skip:
            continue
        if override is not None and p is override[0]:
            v: str | None = override[1]
        elif p.required:
            v = _valid(p)
            if v is None:
                return None
        else:
            continue
        if isinstance(p, click.Argument):
            args.append(v)  # type: ignore[arg-type]
        else:
            opts += [_flag(p), v]  # type: ignore[list-item]
    if any(a.startswith("-") for a in args):
        args.insert(0, "--")
    return [*opts, *args]


def _with(cmd: click.Command, p: click.Parameter, value: str) -> list[str] | None:
    """A command line with ``p`` set to ``value`` and every other required parameter valid."""
    return _required_argv(cmd, override=(p, value))


@dataclass
class Outcome:
    code: int | None
    out: str
    err: str
    seconds: float
    crash: str = ""

    def lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    for name in ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WARPMESH_STORE", str(tmp_path / "store"))
    scratch = tmp_path / "file.bin"
    scratch.write_bytes(b"\0asm\x01\0\0\0")

    def invoke(argv: list[str], collect: bool = False) -> Outcome:
        argv = [a.replace("{tmp}", str(tmp_path)).replace("{file}", str(scratch)) for a in argv]
        root = logging.getLogger()
        saved = list(root.handlers)
        capsys.readouterr()
        started = time.perf_counter()
        code: int | None = 0
        crash = ""
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # anything else reaching the user is a traceback
            code, crash = None, traceback.format_exc()
        seconds = time.perf_counter() - started
        if collect:
            gc.collect()  # "Task exception was never retrieved" is reported when the task is collected
        root.handlers[:] = saved  # setup_logging() bound a handler to this test's captured stream
        cap = capsys.readouterr()
        return Outcome(code, cap.out, cap.err, seconds, crash)

    return invoke


def _no_traceback(o: Outcome, argv: list[str]) -> None:
    assert not o.crash, f"warpmesh {' '.join(argv)} raised:\n{o.crash}"
    for marker in ("Traceback", "Task exception was never retrieved", "Exception ignored"):
        assert marker not in o.err, f"warpmesh {' '.join(argv)} printed a traceback:\n{o.err}"


def _usage_error(o: Outcome, argv: list[str]) -> None:
    _no_traceback(o, argv)
    assert o.code == 2, f"warpmesh {' '.join(argv)}: exit {o.code}, want 2; stderr:\n{o.err}"
    assert len(o.lines()) == 1, f"warpmesh {' '.join(argv)}: want one line, got:\n{o.err}"
    assert "error" in o.err


def _name(path: tuple[str, ...]) -> str:
    return " ".join(path)


# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [p for p, _ in GROUPS], ids=lambda p: _name(p) or "warpmesh")
def test_a_bare_group_prints_its_help_and_exits_0(run, path: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    o = run(list(path))
    _no_traceback(o, list(path))
    assert o.code == 0 and "Usage:" in o.out and "Commands:" in o.out, o.err


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=_name)
def test_an_unknown_option_is_a_one_line_usage_error(run, path: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    argv = [*path, "--no-such-option-for-the-contract"]
    _usage_error(run(argv), argv)


@pytest.mark.parametrize("path", [p for p, c in LEAVES if any(q.required for q in _params(c))], ids=_name)
def test_missing_required_arguments_are_a_one_line_usage_error(run, path: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    argv = list(path)
    _usage_error(run(argv), argv)
    # And each required parameter missing alone, the others given.
    cmd = dict(LEAVES)[path]
    for p in _params(cmd):
        if not p.required or isinstance(p, click.Argument):
            continue  # a missing positional shifts the others; covered by the bare call above
        rest = _required_argv(cmd, skip=p)
        if rest is not None:
            _usage_error(run([*path, *rest]), [*path, *rest])


def _invalid_cases() -> Iterator[tuple[tuple[str, ...], str, str]]:
    for path, cmd in LEAVES:
        for p in _params(cmd):
            if _is_flag(p):
                continue
            for bad in _invalid(p):
                yield path, p.name or "?", bad


@pytest.mark.parametrize(("path", "param", "bad"), list(_invalid_cases()),
                         ids=[f"{_name(p)} {n}={b!r}" for p, n, b in _invalid_cases()])
def test_an_invalid_value_is_a_one_line_usage_error(run, path: tuple[str, ...], param: str, bad: str) -> None:  # type: ignore[no-untyped-def]
    cmd = dict(LEAVES)[path]
    p = next(q for q in _params(cmd) if q.name == param)
    argv = _with(cmd, p, bad)
    if argv is None:
        pytest.skip(f"add a VALID entry for a required parameter of {_name(path)}")
    _usage_error(run([*path, *argv]), [*path, *argv])


def _unreachable_cases() -> list[tuple[str, ...]]:
    return [p for p, c in LEAVES
            if _name(p) in UNREACHABLE_EXTRA or any(q.name in UNREACHABLE_PARAMS for q in _params(c))]


@pytest.mark.parametrize("path", _unreachable_cases(), ids=_name)
def test_an_absent_server_fails_promptly_with_advice(run, path: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    cmd = dict(LEAVES)[path]
    base = _required_argv(cmd)
    if base is None:
        pytest.skip(f"add a VALID entry for a required parameter of {_name(path)}")
    argv = [*path, *base, *UNREACHABLE_EXTRA.get(_name(path), [])]
    for p in _params(cmd):
        if p.name in UNREACHABLE_PARAMS and not p.required:
            argv += [_flag(p), REFUSED]
    o = run(argv, collect=True)
    _no_traceback(o, argv)
    if o.code == 2:
        pytest.skip(f"the tables do not build a valid command line for {_name(path)}: {o.err.strip()}")
    assert o.code == 1, f"warpmesh {' '.join(argv)}: exit {o.code}, want 1; stderr:\n{o.err}"
    assert o.seconds < PROMPT_S, f"warpmesh {' '.join(argv)} took {o.seconds:.2f} s to fail"
    last = o.lines()[-1]
    assert "error" in last and any(w in last for w in ADVICE), f"no advice in: {last}"
