"""Hostile input: random requests are answered (success or a coded error), never a trap or a crash."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warpmesh.workers import Runner, abi
from warpmesh.workers.abi import AbiError
from warpmesh.workers.tree import TreeEntry

from .conftest import wat_file
from .scripts import parse_transcript, step

DECODERS = [abi.decode_get, abi.decode_put_tree, abi.decode_run, abi.decode_run_many, abi.decode_out,
            lambda b: abi.decode_id(b, "tree")]
CODES = ("bad_request:", "not_found:", "too_large:", "job_failed:")


@given(st.binary(max_size=300), st.sampled_from(DECODERS))
def test_decoders_raise_only_abi_errors(data: bytes, decode) -> None:  # type: ignore[no-untyped-def]
    try:
        decode(data)
    except AbiError as exc:
        assert exc.code == "bad_request" and str(exc)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "é", "x" * 40]), st.sampled_from([1, 2]),
                          st.binary(min_size=32, max_size=32)), max_size=5, unique_by=lambda t: t[0]),
       st.one_of(st.binary(min_size=32, max_size=32), st.text(min_size=1, max_size=20).filter(lambda s: "@" not in s)))
def test_run_requests_round_trip(entries, worker) -> None:  # type: ignore[no-untyped-def]
    ents = [TreeEntry(n, abi.Kind(k), i) for n, k, i in entries]
    spec = abi.decode_run(abi.encode_run(worker, ents))
    assert spec.worker == worker and list(spec.args_entries or ()) == ents


@pytest.fixture(scope="module")
def fuzz_runner(tmp_path_factory, host):  # type: ignore[no-untyped-def]
    from warpmesh.workers import Store

    store = Store(tmp_path_factory.mktemp("fuzz") / "store")
    r = Runner(store, host, parallelism=2)
    yield r
    r.close()
    store.close()


ops = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 9, 0, 10, 255, 2**31 - 1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(ops, st.binary(max_size=120)), min_size=1, max_size=6))
def test_random_calls_from_a_guest_are_answered(fuzz_runner: Runner, calls: list[tuple[int, bytes]]) -> None:
    driver = fuzz_runner.put_module(wat_file("driver"))
    res = fuzz_runner.run(driver, {"script": b"".join(step(op, payload) for op, payload in calls)})
    recs = parse_transcript(fuzz_runner.store.get_blob(res.ref.id))
    assert len(recs) == len(calls)
    for r, data in recs:
        if r < 0:
            assert data.decode().startswith(CODES), data
        else:
            assert len(data) == r
