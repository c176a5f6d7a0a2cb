"""Guest ABI v1: every host operation, driven through raw calls from a real guest.

Bad requests must come back as error answers (negative return, "<code>: <text>" message) and never
as traps: the driver guest keeps going after each one and records what it was told.
"""

from __future__ import annotations

import logging
import struct

import pytest

from warpmesh.workers import FailureKind, JobError, Kind, Ref, Runner, abi, blob_id
from warpmesh.workers.abi import SizedEntry
from warpmesh.workers.tree import EMPTY_TREE_ID, TreeEntry

from .conftest import wat, wat_file
from .scripts import parse_transcript, raw_call, raw_read, run_script, run_script_raw, step

TRIVIAL = r"""(module
  (import "warpmesh_abi_v1" "call" (func $call (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\03ok")
  (func (export "warpmesh_run") (drop (call $call (i32.const 8) (i32.const 0) (i32.const 3)))))"""


@pytest.fixture
def driver(runner: Runner) -> bytes:
    return runner.put_module(wat_file("driver"))


def ok(rec: tuple[int, bytes]) -> bytes:
    r, data = rec
    assert r >= 0, data.decode(errors="replace")
    assert r == len(data)
    return data


def err(rec: tuple[int, bytes], code: str) -> str:
    r, data = rec
    assert r < 0, f"expected an error {code}, got success {data!r}"
    text = data.decode()
    assert -r == len(data)
    assert text.startswith(code + ":"), text
    return text


def test_job_describes_the_request(runner: Runner, driver: bytes) -> None:
    script = step(abi.Op.JOB)
    res = run_script_raw(runner, driver, script, salt="pepper")
    (rec,) = parse_transcript(runner.store.get_blob(res.ref.id))
    data = ok(rec)
    version, depth, wk, worker, args, salt, count = struct.unpack_from("<IIB32s32s32sI", data)
    assert (version, depth, wk) == (1, 0, abi.WorkerKind.WASM)
    assert worker == driver
    assert salt == blob_id(b"pepper")
    req = runner.request(driver, {"script": script}, salt="pepper")
    assert args == req.args
    entries = abi.decode_entries(struct.pack("<I", count) + data[109:])
    assert entries == [SizedEntry("script", Kind.BLOB, blob_id(script), len(script))]


def test_get_whole_ranged_and_errors(runner: Runner, driver: bytes) -> None:
    blob = runner.store.put_blob(b"0123456789")
    tree = runner.store.put_tree({"b": Ref(Kind.BLOB, blob)})
    recs = run_script(
        runner, driver,
        step(abi.Op.GET, blob),
        step(abi.Op.GET, struct.pack("<32sQI", blob, 3, 4)),
        step(abi.Op.GET, struct.pack("<32sQI", blob, 8, 100)),
        step(abi.Op.GET, tree),
        step(abi.Op.GET, bytes(32)),
        step(abi.Op.GET, b"short"),
    )
    assert ok(recs[0]) == b"0123456789"
    assert ok(recs[1]) == b"3456"
    assert ok(recs[2]) == b"89"
    assert "tree" in err(recs[3], "bad_request")
    err(recs[4], "not_found")
    err(recs[5], "bad_request")


def test_put_blob_put_tree_and_tree(runner: Runner, driver: bytes) -> None:
    a = runner.store.put_blob(b"a-bytes")
    entries = [TreeEntry("zeta", Kind.BLOB, a), TreeEntry("alpha", Kind.TREE, EMPTY_TREE_ID)]
    recs = run_script(
        runner, driver,
        step(abi.Op.PUT_BLOB, b"hello"),
        step(abi.Op.PUT_TREE, abi.encode_request_entries(entries)),  # unsorted on purpose
        step(abi.Op.PUT_TREE, abi.encode_request_entries([TreeEntry("x", Kind.BLOB, bytes(32))])),
        step(abi.Op.PUT_TREE, abi.encode_request_entries([TreeEntry("x", Kind.BLOB, a)] * 2)),
        step(abi.Op.PUT_TREE, abi.encode_request_entries([TreeEntry("a/b", Kind.BLOB, a)])),
        step(abi.Op.PUT_TREE, b"\x01\x00\x00\x00\x07"),
        step(abi.Op.PUT_TREE, abi.encode_request_entries([TreeEntry("x", Kind.TREE, a)])),
        step(abi.Op.TREE, runner.store.put_tree(entries)),
        step(abi.Op.TREE, a),
    )
    assert ok(recs[0]) == blob_id(b"hello")
    assert runner.store.get_blob(blob_id(b"hello")) == b"hello"
    assert ok(recs[1]) == runner.store.put_tree(entries)
    err(recs[2], "not_found")
    assert "duplicate" in err(recs[3], "bad_request")
    err(recs[4], "bad_request")
    err(recs[5], "bad_request")
    assert "blob" in err(recs[6], "bad_request")
    assert abi.decode_entries(ok(recs[7])) == [
        SizedEntry("alpha", Kind.TREE, EMPTY_TREE_ID, 4), SizedEntry("zeta", Kind.BLOB, a, 7)]
    err(recs[8], "bad_request")


def test_run_and_run_many_keep_order_and_report_errors_per_element(runner: Runner, driver: bytes) -> None:
    trivial = runner.put_module(wat(TRIVIAL))
    runner.register_op("upper", lambda ctx: ctx.arg_bytes("s").upper())
    s1 = runner.store.put_blob(b"abc")
    s2 = runner.store.put_blob(b"xyz")
    many = abi.encode_run_many_request([
        abi.encode_run("upper@1", [TreeEntry("s", Kind.BLOB, s1)]),
        abi.encode_run(bytes(32), []),  # no such module
        abi.encode_run("upper", [TreeEntry("s", Kind.BLOB, s2)]),
        abi.encode_run(trivial, EMPTY_TREE_ID),
    ])
    recs = run_script(
        runner, driver,
        step(abi.Op.RUN, abi.encode_run(trivial, [])),
        step(abi.Op.RUN, abi.encode_run("nosuchop", [])),
        step(abi.Op.RUN, b"\x05" + bytes(40)),
        step(abi.Op.RUN_MANY, many),
    )
    ref, size = abi.decode_result(ok(recs[0]))
    assert runner.store.get_blob(ref.id) == b"ok" and size == 2
    assert "worker_not_found" in err(recs[1], "job_failed")
    err(recs[2], "bad_request")
    results = abi.decode_run_many_response(ok(recs[3]))
    assert runner.store.get_blob(results[0][0].id) == b"ABC"  # type: ignore[index]
    assert isinstance(results[1], str) and "worker_not_found" in results[1]
    assert runner.store.get_blob(results[2][0].id) == b"XYZ"  # type: ignore[index]
    assert runner.store.get_blob(results[3][0].id) == b"ok"  # type: ignore[index]


def test_out_inline_and_by_ref(runner: Runner, driver: bytes) -> None:
    res = run_script_raw(runner, driver, step(abi.Op.OUT, b"\x03inline!"))
    assert res.ref.kind is Kind.BLOB and runner.store.get_blob(res.ref.id) == b"inline!"
    res = run_script_raw(runner, driver, step(abi.Op.OUT, b"\x02" + EMPTY_TREE_ID))
    assert res.ref == Ref(Kind.TREE, EMPTY_TREE_ID)


def test_out_of_a_missing_object_is_an_answer_not_a_trap(runner: Runner, driver: bytes) -> None:
    # The driver survives the refused out, returns, and the job fails for lack of an out.
    with pytest.raises(JobError) as info:
        run_script_raw(runner, driver, step(abi.Op.OUT, b"\x01" + bytes(32)))
    assert info.value.kind is FailureKind.MISSING_OUT
    with pytest.raises(JobError) as info:
        run_script_raw(runner, driver, step(abi.Op.OUT, b"\x02" + blob_id(b"")), step(abi.Op.OUT, b"\x09"))
    assert info.value.kind is FailureKind.MISSING_OUT


def test_double_out_fails_the_job(runner: Runner, driver: bytes) -> None:
    with pytest.raises(JobError) as info:
        run_script_raw(runner, driver, step(abi.Op.OUT, b"\x03a"), step(abi.Op.OUT, b"\x03b"))
    assert info.value.kind is FailureKind.DOUBLE_OUT
    assert runner.results.lookup(runner.request(driver, {"script": step(abi.Op.OUT, b"\x03a")
                                                         + step(abi.Op.OUT, b"\x03b")}).key) is None


def test_log_goes_to_the_guest_logger(runner: Runner, driver: bytes, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="warpmesh.guest"):
        recs = run_script(runner, driver, step(abi.Op.LOG, "héllo from the guest".encode()))
    assert ok(recs[0]) == b""
    assert any("héllo from the guest" in r.getMessage() for r in caplog.records)


def test_malformed_calls_are_answered_with_errors(runner: Runner, driver: bytes) -> None:
    recs = run_script(
        runner, driver,
        step(42, b""),                          # unknown op
        step(abi.Op.JOB, b"junk"),              # job takes no request
        raw_call(abi.Op.GET, 0xFFFFFF00, 64),   # window outside memory
        raw_call(abi.Op.GET, 65536 * 2 - 10, 32),  # window straddling the end of memory
        step(abi.Op.PUT_BLOB, b"pending"),
        raw_read(0xFFFFFFF0, 100),              # read into a window outside memory
        raw_read(0, 4),                         # buffer smaller than the pending response
        step(abi.Op.GET, b"x" * 33),            # wrong request length
    )
    assert "unknown op" in err(recs[0], "bad_request")
    err(recs[1], "bad_request")
    assert "outside memory" in err(recs[2], "bad_request")
    assert "outside memory" in err(recs[3], "bad_request")
    ok(recs[4])
    assert recs[5] == (-1, b"")
    assert recs[6] == (-2, b"")
    err(recs[7], "bad_request")


def test_refused_out_then_missing_out(runner: Runner, driver: bytes) -> None:
    with pytest.raises(JobError) as info:
        run_script_raw(runner, driver, step(abi.Op.OUT, b""))
    assert info.value.kind is FailureKind.MISSING_OUT


def test_malformed_run_many_is_an_answer(runner: Runner, driver: bytes) -> None:
    recs = run_script(runner, driver, step(abi.Op.RUN_MANY, b"\xff\xff\xff\xff"),
                      step(abi.Op.RUN_MANY, b"\x01\x00\x00\x00\x01"))
    assert "limit" in err(recs[0], "bad_request")
    assert "truncated" in err(recs[1], "bad_request")
