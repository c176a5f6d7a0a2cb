"""Every subcommand has --help; bad arguments exit 2 with a one-line reason."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from warpmesh.cli.app import COMMANDS, cli, main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warpmesh.cli.app", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_top_level_help_lists_commands_without_importing_them() -> None:
    out = _run("--help")
    assert out.returncode == 0
    for name in COMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("argv", [
    ["no-such-command"],
    ["demo", "--peers", "0"],
    ["demo", "--jobs", "many"],
    ["node", "--listen", "127.0.0.1:7000"],  # missing --id
    ["node", "--id", "x", "--listen", "nonsense"],
    ["sim", "crdt", "--seeds", "0"],
    ["mesh-demo", "--elements", "1"],
])
def test_bad_arguments_exit_2_with_one_line(argv: list[str]) -> None:
    out = _run(*argv)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "error:" in lines[0] and "--help" in lines[0]


def test_main_reports_usage_errors_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--peers", "-3"])
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_node_refuses_a_non_loopback_address_without_a_secret() -> None:
    out = subprocess.run([sys.executable, "-m", "warpmesh.cli.app", "node", "--id", "x", "--listen", "0.0.0.0:0"],
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2  # a usage error since issue 9, like kv --servers and submit --to
    assert "secret" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_node_with_an_unimportable_ops_module_is_a_usage_error() -> None:
    out = _run("node", "--id", "x", "--listen", "127.0.0.1:0", "--ops", "no_such_module_here")
    assert out.returncode == 2 and "no_such_module_here" in out.stderr
