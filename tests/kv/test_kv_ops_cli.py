"""The operator commands' usage contract: bad arguments exit 2 with one line; an unreachable
cluster exits 1 with one line that says what to do."""

from __future__ import annotations

import pytest

from warpmesh.cli.app import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


@pytest.mark.parametrize("argv", [
    ["kv", "serve", "--id", "n1", "--listen", "127.0.0.1:0", "--data", "d"],  # neither --peers nor --join
    ["kv", "serve", "--id", "n1", "--listen", "127.0.0.1:0", "--data", "d", "--peers", "n1=127.0.0.1:1",
     "--join", "127.0.0.1:2"],
    ["kv", "serve", "--id", "n1", "--listen", "127.0.0.1:0", "--data", "d", "--peers", "n1=127.0.0.1:1",
     "--force"],
    ["kv", "serve", "--id", "n1", "--listen", "127.0.0.1:0", "--data", "d", "--join", "nonsense"],
    ["kv", "member", "add", "n4"],
    ["kv", "member", "add", "n4=nonsense"],
    ["kv", "member", "remove"],
    ["kv", "transfer-leader", "a", "b"],
    ["kv", "snapshot", "save"],
    ["kv", "snapshot", "restore", "f.snap", "--data", "d", "--id", "x", "--peers", "y=127.0.0.1:1"],
    ["kv", "snapshot", "restore", "f.snap", "--data", "d", "--id", "x"],
    ["kv", "snapshot", "save", "/no/such/dir/b.snap"],
    ["kv", "up", "--restart-after", "-1"],
    ["sim", "raft", "--scenario", "grow", "--seeds", "1"],  # --scenario needs --runtime
    ["sim", "raft", "--runtime", "--scenario", "explode"],
])
def test_bad_arguments_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _run(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], err


@pytest.mark.parametrize("argv", [
    ["kv", "member", "list"], ["kv", "member", "remove", "n2"], ["kv", "status"],
    ["kv", "transfer-leader"], ["kv", "member", "add", "n4=127.0.0.1:9"],
])
def test_unreachable_cluster_exits_1_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARPMESH_SECRET", raising=False)
    code, _out, err = _run([*argv, "--servers", "127.0.0.1:9", "--timeout", "0.5"], capsys)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--servers" in lines[0], err


def test_restore_refuses_a_missing_file(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _run(["kv", "snapshot", "restore", str(tmp_path / "none.snap"), "--data",
                            str(tmp_path / "d"), "--id", "a1", "--peers", "a1=127.0.0.1:1"], capsys)
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1, err


def test_join_with_no_cluster_exits_1_saying_what_to_check(tmp_path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WARPMESH_SECRET", raising=False)
    code, _out, err = _run(["kv", "serve", "--id", "n9", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "n9"),
                            "--join", "127.0.0.1:9", "--join-timeout", "1"], capsys)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot join" in lines[0] and "secret" in lines[0], err
