"""``warpmesh draft``: the demo on 3 real peer processes (loopback TCP) and ``draft explain``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from warpmesh.cli.app import main


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warpmesh.cli.app", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_demo_json_on_three_peer_processes() -> None:
    out = _run("draft", "demo", "--json")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    got = json.loads(lines[0])
    assert set(got) == {"rounds_unplanned", "rounds_planned", "raft_proposals_unplanned", "raft_proposals_planned",
                        "coordinated_volume_unplanned", "coordinated_volume_planned", "results_equal"}
    assert (got["rounds_unplanned"], got["rounds_planned"]) == (4, 2)
    assert (got["raft_proposals_unplanned"], got["raft_proposals_planned"]) == (4, 2)
    assert got["results_equal"] is True
    assert got["coordinated_volume_unplanned"] == got["coordinated_volume_planned"] > 0
    assert all(type(got[k]) is int for k in got if k != "results_equal")


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_explain_prints_levels_costs_and_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    code, text, err = _main(capsys, "draft", "explain", "warpmesh.planning.examples:three_branch")
    assert code == 0, err
    assert "rounds=4 coupling=1" in text and "rounds=2 coupling=3" in text
    assert "round 1 (level 0) #8: forced by embroider.a, embroider.b, embroider.c" in text
    assert "round 2 (level 1) #7: forced by embroider.d" in text
    for step in ("defer_embroidery", "pushdown_filters", "fuse_adjacent", "consolidate_embroideries"):
        assert step in text


def test_explain_json_with_statistics_from_the_op_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _main(capsys, "draft", "explain", "warpmesh.planning.examples:thousand_docs", "--ops",
                           "warpmesh.planning.examples:THOUSAND_DOCS_OPS", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["cost"]["coordinated_volume"] >= 900 and got["planned_cost"]["coordinated_volume"] == 50
    assert got["equivalent"] is True
    assert [n["kind"] for n in got["planned_nodes"]] == ["SOURCE", "FILTER", "MAP", "EMBROIDER"]


@pytest.mark.parametrize("argv", [
    ["draft", "explain", "nope"],
    ["draft", "explain", "no.such.module:x"],
    ["draft", "explain", "os:path"],
    ["draft", "explain", "warpmesh.planning.examples:three_branch", "--max-coupling", "0"],
    ["draft", "demo", "--query", "nope"],
])
def test_usage_errors_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0]


def test_usage_error_from_a_fresh_process_has_no_traceback() -> None:
    out = _run("draft", "explain", "nope")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_failing_ops_exit_1_with_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _main(capsys, "draft", "explain", "warpmesh.planning.examples:thousand_docs", "--ops",
                         "warpmesh.planning.examples:THREE_BRANCH_OPS")
    assert code == 1
    assert "check the op table" in err and "Traceback" not in err
