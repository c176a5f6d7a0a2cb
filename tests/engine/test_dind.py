"""Echo's DIND golden logs replay hash-for-hash: ``head`` under ``echo``, ``seed-720eea7a`` under ``seed``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.engine.conftest import GOLDEN, shared_echo_dind
from warpmesh.cli.engine import engine as engine_cli
from warpmesh.examples.dind import typeids
from warpmesh.examples.dind.eintlog import EintLogError, pack_intent, parse_eintlog, unpack_intent
from warpmesh.examples.dind.harness import (
    DEFAULT,
    INGEST_ALL_FIRST,
    first_mismatch,
    load_expected,
    mode_for,
    replay_log,
)
from warpmesh.examples.dind.kernel import OP_TOAST, build_motion_demo_engine, state_hash, step

CASES = [(p, "echo") for p in sorted((GOLDEN / "head").glob("*.eintlog"))] + [
    (p, "seed") for p in sorted((GOLDEN / "seed-720eea7a").glob("*.eintlog"))
]


def expected_for(log: Path) -> list[bytes]:
    return load_expected(log.with_name(log.name.replace(".eintlog", ".hashes.json"))).hashes


def test_every_golden_log_is_covered() -> None:
    names = {(p.parent.name, p.name) for p, _ in CASES}
    assert len(names) == 5
    assert ("head", "050_randomized_order_small_seed0001.eintlog") in names


@pytest.mark.parametrize(("log", "profile"), CASES, ids=[f"{p.parent.name}/{p.stem}" for p, _ in CASES])
def test_golden_log_replays_hash_for_hash(log: Path, profile: str) -> None:
    expected = expected_for(log)
    result = replay_log(log, profile)
    assert first_mismatch(result.hashes, expected) is None
    assert len(result.hashes) == len(expected)


def test_head_initial_hashes_differ_only_by_prefix() -> None:
    assert expected_for(GOLDEN / "head/030_error_determinism.eintlog")[0].hex().startswith("94386b7b")
    assert expected_for(GOLDEN / "seed-720eea7a/030_error_determinism.eintlog")[0].hex().startswith("735cc97c")


def test_replay_mode_follows_name_and_manifest(tmp_path: Path) -> None:
    assert mode_for(GOLDEN / "head/050_randomized_order_small_seed0001.eintlog") == INGEST_ALL_FIRST
    assert mode_for(GOLDEN / "head/010_dense_rewrite_seed0001.eintlog") == DEFAULT
    log = tmp_path / "123_custom.eintlog"
    log.write_bytes(b"")
    (tmp_path / "MANIFEST.json").write_text(json.dumps([{"path": log.name, "tags": ["permute-invariant"]}]))
    assert mode_for(log) == INGEST_ALL_FIRST


def test_ingest_all_first_is_permutation_invariant() -> None:
    """Echo's 050 property: any ingestion order yields the same hash chain (dispatch takes the smallest id)."""
    log = GOLDEN / "head/050_randomized_order_small_seed0001.eintlog"
    frames = list(parse_eintlog(log.read_bytes()).frames)
    import random

    random.Random(7).shuffle(frames)
    engine = build_motion_demo_engine("echo")
    chain = [state_hash(engine)]
    for f in frames:
        engine.ingest_intent(f)
    while engine.pending_intent_count():
        if step(engine):
            chain.append(state_hash(engine))
    assert chain == expected_for(log)


def test_replay_with_several_workers_gives_the_same_hashes() -> None:
    log = GOLDEN / "head/010_dense_rewrite_seed0001.eintlog"
    assert replay_log(log, "echo", workers=4).hashes == expected_for(log)


def test_golden_copy_is_intact() -> None:
    for line in (GOLDEN / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((GOLDEN / name).read_bytes()).hexdigest() == digest, name


def test_golden_copy_matches_shared_reference_when_present() -> None:
    shared = shared_echo_dind()
    if shared is None:
        pytest.skip("no shared echo-dind directory beside this checkout (the in-repo copy is used)")
    for line in (GOLDEN / "SHA256SUMS").read_text().splitlines():
        _, name = line.split()
        assert (shared / name).read_bytes() == (GOLDEN / name).read_bytes(), name


def test_typeids_are_the_literal_constants() -> None:
    doc = json.loads((GOLDEN / "dind_typeids.json").read_text())["typeids_hex"]
    assert {k: v.hex() for k, v in typeids.ALL.items()} == doc


def test_eint_envelope_round_trip_and_refusals() -> None:
    env = pack_intent(OP_TOAST, b"\x02\x00\x00\x00hi")
    assert unpack_intent(env) == (OP_TOAST, b"\x02\x00\x00\x00hi")
    assert unpack_intent(env + b"x") is None  # must be exactly 12 + vars_len
    assert unpack_intent(env[:-1]) is None
    assert unpack_intent(b"JUNK" + env[4:]) is None


def test_corrupt_logs_are_refused_with_a_reason() -> None:
    good = (GOLDEN / "head/030_error_determinism.eintlog").read_bytes()
    with pytest.raises(EintLogError, match="shorter than"):
        parse_eintlog(good[:20])
    with pytest.raises(EintLogError, match="magic"):
        parse_eintlog(b"XLOG" + good[4:])
    with pytest.raises(EintLogError, match="truncated"):
        parse_eintlog(good[:-3])
    with pytest.raises(EintLogError, match="version"):
        parse_eintlog(good[:4] + b"\x09\x00" + good[6:])


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_replay_expect_passes_and_fails() -> None:
    runner = CliRunner()
    log = GOLDEN / "head/030_error_determinism.eintlog"
    hashes = GOLDEN / "head/030_error_determinism.hashes.json"
    ok = runner.invoke(engine_cli, ["replay", str(log), "--expect", str(hashes)])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.splitlines()[1].split()[1] == "4cdc81d3e68e86aac436750ed321f29b3a1b20fed5c9d69a0c0f7408598e78c7"
    bad = runner.invoke(engine_cli, ["replay", str(log), "--expect", str(hashes), "--profile", "seed"])
    assert bad.exit_code == 1
    assert "step 0 differs" in bad.stderr


def test_cli_json_names_first_mismatch(tmp_path: Path) -> None:
    log = GOLDEN / "head/030_error_determinism.eintlog"
    doc = json.loads((GOLDEN / "head/030_error_determinism.hashes.json").read_text())
    doc["hashes_hex"][4] = "00" * 32
    tampered = tmp_path / "t.hashes.json"
    tampered.write_text(json.dumps(doc))
    res = CliRunner().invoke(engine_cli, ["replay", str(log), "--expect", str(tampered), "--json"])
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["match"] is False and out["first_mismatch"] == 4 and out["steps"] == 6
    assert "step 4 differs" in res.stderr


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path: Path) -> None:
    junk = tmp_path / "junk.eintlog"
    junk.write_bytes(b"ELOG\x01\x00")
    res = CliRunner().invoke(engine_cli, ["replay", str(junk)])
    assert res.exit_code != 0
    assert "shorter than" in res.output and len(res.output.strip().splitlines()) == 1
    missing = CliRunner().invoke(engine_cli, ["replay", str(tmp_path / "none.eintlog")])
    assert missing.exit_code == 2
