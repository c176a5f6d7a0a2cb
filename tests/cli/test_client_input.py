"""``warpmesh submit`` input: the ARGS convention, jobs files, task ids, and errors before any network."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from warpmesh.cli.client import (
    MAX_ARGS_BYTES,
    Job,
    batches,
    check_job,
    cli_args,
    content_task_id,
    dedupe,
    jsonable,
    parse_arg,
    read_jobs,
    render_value,
)


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warpmesh.cli.app", *args], capture_output=True, text=True,
                          timeout=60, input=stdin)


@pytest.mark.parametrize(("text", "value"), [
    ("7", 7), ("-2.5", -2.5), ("true", True), ("null", None), ('"7"', "7"), ("[1, 2]", [1, 2]),
    ('{"a": 1}', {"a": 1}), ("hello", "hello"), ("/tmp/x.png", "/tmp/x.png"), ("", ""),
    ("NaN", "NaN"), ("Infinity", "Infinity"), ("1 2", "1 2"),
])
def test_each_arg_is_json_if_it_parses_else_a_string(text: str, value: object) -> None:
    assert parse_arg(text) == value
    assert type(parse_arg(text)) is type(value)


def test_one_arg_is_the_value_several_make_a_list_none_is_null() -> None:
    assert cli_args([], None) is None
    assert cli_args(["7"], None) == 7
    assert cli_args(["7", "x", "[1]"], None) == [7, "x", [1]]
    assert cli_args([], '{"n": [1, 2]}') == {"n": [1, 2]}
    assert cli_args([], '"7"') == "7"


def test_content_task_ids_are_stable_and_tell_jobs_apart() -> None:
    a = content_task_id("op", {"x": 1, "y": [1, 2]})
    assert a == content_task_id("op", {"y": [1, 2], "x": 1})  # key order does not matter
    assert a.startswith("op-") and len(a) == len("op-") + 16
    assert a != content_task_id("op", {"x": 1, "y": [2, 1]})
    assert a != content_task_id("other", {"x": 1, "y": [1, 2]})
    assert a != content_task_id("op", {"x": 1, "y": [1, 2]}, pin="n1")
    assert content_task_id("op", 1) != content_task_id("op", "1")


def test_jobs_file_lines_comments_defaults_and_pins() -> None:
    text = '# header\n{"op": "sq", "args": 3}\n\n{"task": "t1", "op": "sq", "args": [1], "pin": "n2"}\n'
    jobs = read_jobs(io.StringIO(text), "jobs.jsonl")
    assert jobs[0] == Job(task=content_task_id("sq", 3), op="sq", args=3, where="jobs.jsonl:2")
    assert jobs[1] == Job(task="t1", op="sq", args=[1], pin="n2", where="jobs.jsonl:4")


@pytest.mark.parametrize(("line", "message"), [
    ('{"op": "sq", args: 1}', "jobs.jsonl:2: not valid JSON"),
    ("[1, 2]", "jobs.jsonl:2: expected a JSON object"),
    ('{"args": 1}', 'jobs.jsonl:2: "op" must be a non-empty string'),
    ('{"op": "sq", "priority": 1}', "unknown field(s) priority"),
    ('{"op": "sq", "task": 5}', '"task" must be a non-empty string'),
    ('{"op": "sq", "pin": ""}', '"pin" must be a peer id'),
    ('{"op": "sq", "args": 18446744073709551616}', "args cannot be encoded"),
    ('{"op": "sq", "args": NaN}', "not valid JSON"),
])
def test_a_bad_line_is_named(line: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        read_jobs(io.StringIO('{"op": "ok"}\n' + line + "\n"), "jobs.jsonl")
    assert message in str(err.value)


def test_oversized_args_are_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="pass a reference"):
        check_job(Job(task="t", op="o", args="x" * (MAX_ARGS_BYTES + 1)))


def test_identical_jobs_are_dropped_and_a_reused_task_id_is_an_error() -> None:
    jobs = [Job("t1", "o", 1, where="f:1"), Job("t1", "o", 1, where="f:2"), Job("t2", "o", 2, where="f:3")]
    kept, dropped = dedupe(jobs)
    assert [j.where for j in kept] == ["f:1", "f:3"] and dropped == 1
    with pytest.raises(ValueError, match="f:2: task 't1' was already given for another job at f:1"):
        dedupe([Job("t1", "o", 1, where="f:1"), Job("t1", "o", 2, where="f:2")])


def test_batches_bound_jobs_and_bytes_and_keep_order() -> None:
    jobs = [Job(f"t{i}", "o", "x" * 1000) for i in range(50)]
    out = list(batches(jobs, max_jobs=8, max_bytes=5000))
    assert [j for b in out for j in b] == jobs
    assert all(0 < len(b) <= 8 for b in out) and max(len(b) for b in out) == 4  # 4 x ~1.1 kB fit 5 kB
    assert list(batches([Job("big", "o", "x" * 10_000)], max_bytes=100)) == [[Job("big", "o", "x" * 10_000)]]


def test_values_print_as_json_with_bytes_in_base64() -> None:
    value = {"b": b"\x00\xff", 1: [b"a"], "s": "é"}
    assert jsonable(value) == {"b": {"$base64": "AP8="}, "1": [{"$base64": "YQ=="}], "s": "é"}
    assert render_value("plain") == "plain"
    assert json.loads(render_value({"k": [1, None]})) == {"k": [1, None]}


@pytest.mark.parametrize(("argv", "needle"), [
    (["submit", "--to", "127.0.0.1:1"], "name an OP"),
    (["submit", "--to", "127.0.0.1:1", "op", "1", "--args-json", "2"], "either ARGS or --args-json"),
    (["submit", "--to", "127.0.0.1:1", "op", "--args-json", "{nope"], "--args-json"),
    (["submit", "--to", "127.0.0.1:1", "--file", "-", "op"], "--file cannot be combined"),
    (["submit", "--to", "nonsense", "op"], "HOST:PORT"),
    (["submit", "--to", "127.0.0.1:1", "--file", "/no/such/jobs.jsonl"], "/no/such/jobs.jsonl"),
    (["results", "--to", "127.0.0.1:1", "--connect-timeout", "0"], "connect-timeout"),
    (["status"], "--to"),
])
def test_usage_errors_exit_2_with_one_line_before_touching_the_network(argv: list[str], needle: str) -> None:
    out = _run(*argv)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "--help" in lines[0], out.stderr


def test_a_malformed_jobs_file_names_the_line_and_submits_nothing(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"op": "sq", "args": 1}\n{"op": "sq", "args": 2\n')
    # The address is unreachable on purpose: the file is rejected before any connection is tried.
    out = _run("submit", "--to", "127.0.0.1:1", "--file", str(jobs))
    assert out.returncode == 2
    assert f"{jobs}:2: not valid JSON" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = _run("submit", "--to", "127.0.0.1:1", "--file", "-", stdin="\n# nothing\n")
    assert out.returncode == 2 and "<stdin> holds no jobs" in out.stderr


@pytest.mark.parametrize("command", [["submit", "op", "1"], ["results"], ["status"]])
def test_an_unreachable_peer_is_one_line_naming_the_address(command: list[str]) -> None:
    out = _run(command[0], "--to", "127.0.0.1:1", *command[1:])
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach 127.0.0.1:1" in lines[0] and "warpmesh node" in lines[0], out.stderr


def test_without_a_secret_a_remote_peer_is_refused_before_dialling() -> None:
    out = subprocess.run([sys.executable, "-m", "warpmesh.cli.app", "status", "--to", "192.0.2.1:7000"],
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 2  # a usage error (issue 9), one line
    assert len(out.stderr.strip().splitlines()) == 1
    assert "refusing to dial 192.0.2.1" in out.stderr and "WARPMESH_SECRET" in out.stderr
