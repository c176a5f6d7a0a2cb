"""The per-job fast paths of the cold fold (issue 18) give exactly what the general paths give.

Each test runs the same work through the fast path and through the general path (the fast path
switched off) and compares everything a caller can see: result refs, request keys, per-subtree
counts and the bytes the guests were answered with.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from warpmesh.workers import IsolateHost, Runner, Store, abi
from warpmesh.workers import host as host_mod
from warpmesh.workers.fold import (
    import_dir,
    install_fold,
    make_fixture_tree,
    python_fold,
    subtree_counts,
    wasm_fold,
)


@pytest.fixture
def clear_decoded() -> Iterator[None]:
    tables = (host_mod._decoded_run_many, host_mod._decoded_run, host_mod._decoded_put_tree)
    for t in tables:
        t.clear()
    yield
    for t in tables:
        t.clear()


def _fold_everything(runner: Runner, root: Path, salt: str) -> tuple[bytes, object, dict[str, object]]:
    mods = install_fold(runner)
    tree = import_dir(runner.store, root)
    res = wasm_fold(runner, tree, mods, salt=salt)
    return res.key, res.ref, dict(subtree_counts(runner, tree, mods, salt=salt))


def test_decoded_requests_equal_the_decoder_and_fold_like_the_general_path(
        host: IsolateHost, tmp_path: Path, clear_decoded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two trees whose frames send requests with long common prefixes (same modules, same names).
    a = make_fixture_tree(tmp_path / "a")
    b = make_fixture_tree(tmp_path / "b")
    for f in sorted(b.rglob("*.txt"))[::3]:
        f.write_text(f.read_text() * 2)
    with Store(tmp_path / "fast") as store, Runner(store, host) as fast:
        got = [_fold_everything(fast, root, salt) for root in (a, b) for salt in ("s1", "s2")]
        assert host_mod._decoded_run_many and host_mod._decoded_run and host_mod._decoded_put_tree
        # every remembered decode is what the decoder gives for those bytes
        for req, specs in host_mod._decoded_run_many.items():
            assert specs == tuple(abi.decode_run_many(req))
        for req, spec in host_mod._decoded_run.items():
            assert spec == abi.decode_run(req)
        for req, entries in host_mod._decoded_put_tree.items():
            assert entries == abi.decode_put_tree(req)
    host_mod._decoded_run_many.clear()
    host_mod._decoded_run.clear()
    host_mod._decoded_put_tree.clear()
    monkeypatch.setattr(host_mod, "_DECODED_MAX_BYTES", -1)  # the general path: nothing remembered
    with Store(tmp_path / "general") as store, Runner(store, host) as general:
        want = [_fold_everything(general, root, salt) for root in (a, b) for salt in ("s1", "s2")]
        assert not host_mod._decoded_run_many
    assert got == want
    for (_, _, counts), root in zip(got, (a, a, b, b), strict=True):
        assert counts == python_fold(root).subtrees


def _drop_object(store: Store, oid: bytes) -> None:
    """Make ``oid`` absent, as a garbage collection would."""
    store.flush()
    store._db.execute("DELETE FROM objects WHERE id = ?", (oid,))
    for cache in (store._present, store._small, store._trees):
        cache.pop(oid, None)


def test_tree_responses_equal_the_general_encoding_while_present_and_after_removal(
        runner: Runner, store: Store) -> None:
    from warpmesh.workers.ids import Kind
    from warpmesh.workers.runner import JobContext
    from warpmesh.workers.tree import TreeEntry

    big = store.put_blob(b"x" * 5000)
    small = store.put_blob(b"small")
    sub = store.put_tree([TreeEntry("leaf", Kind.BLOB, small)])
    tid = store.put_tree([TreeEntry("big", Kind.BLOB, big), TreeEntry("sub", Kind.TREE, sub)])
    req = runner.request(install_fold(runner).post, {})
    ctx = JobContext(runner, req, req.key, (req.key,))

    def general() -> bytes:
        return abi.encode_entries(ctx.tree(tid))

    first = ctx.tree_response(tid)
    assert first == general() and tid in runner._tree_resp
    assert ctx.tree_response(tid) == general()  # remembered
    _drop_object(store, big)  # an entry leaves the store: its size is reported as 0 again
    assert abi.decode_entries(general())[0].size == 0
    assert ctx.tree_response(tid) == general()
    _drop_object(store, tid)  # the tree itself leaves: both answer not_found
    with pytest.raises(KeyError):
        general()
    with pytest.raises(KeyError):
        ctx.tree_response(tid)


@pytest.mark.parametrize("size", [0, 1, 16, 63, 64, 65, 200])
def test_small_blob_ids_remembered_by_content_equal_blob_id(store: Store, size: int) -> None:
    from warpmesh.workers.ids import blob_id

    datas = [bytes([i % 251]) * size + bytes([i]) for i in range(3)] + [bytes(size)]
    for data in datas:
        for given in (data, bytearray(data), memoryview(data)):  # the same id however the bytes come
            assert store.put_blob(given) == blob_id(data)
            assert store.get_blob(blob_id(data)) == data
    store._small_ids.clear()
    assert [store.put_blob(d) for d in datas] == [blob_id(d) for d in datas]


def test_worker_cost_is_the_median_of_the_last_three(runner: Runner) -> None:
    import itertools

    for trio in itertools.chain(itertools.permutations((0.001, 0.002, 0.009)), [(0.004, 0.004, 0.001),
                                                                                 (0.001, 0.004, 0.004)]):
        runner._cost_seen.clear()
        for i, seconds in enumerate(trio):
            runner._observe_cost("w", seconds)
            seen = trio[: i + 1]
            assert runner._cost["w"] == (sorted(seen)[1] if len(seen) == 3 else max(seen))
    runner._observe_cost("w", 0.05)  # the oldest of four is forgotten
    assert runner._cost["w"] == sorted((*trio[1:], 0.05))[1]


def test_wasm_worker_costs_are_filed_where_the_spread_decision_reads_them(
        runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from warpmesh.workers.request import WasmWorker
    from warpmesh.workers.runner import SPREAD_MIN_S, _cost_key
    from warpmesh.workers.scheduler import Pool

    root = make_fixture_tree(tmp_path / "t")
    mods = install_fold(runner)
    tree = import_dir(runner.store, root)
    wasm_fold(runner, tree, mods, salt="measure")  # measures both workers
    for mid in (mods.fold, mods.post):
        assert runner._cost[_cost_key(WasmWorker(mid))] == runner._cost[mid]
        assert len(runner._cost_seen[_cost_key(WasmWorker(mid))]) == 3
    spreads: list[bool] = []
    join_all = Pool.join_all

    def spying(self: Pool, tasks, *, spread: bool = True) -> None:  # type: ignore[no-untyped-def]
        spreads.append(spread)
        join_all(self, tasks, spread=spread)

    monkeypatch.setattr(Pool, "join_all", spying)
    for mid in (mods.fold, mods.post):  # known cheap: every batch runs on the asking thread
        runner._cost_seen.pop(_cost_key(WasmWorker(mid)))
        runner._cost[_cost_key(WasmWorker(mid))] = SPREAD_MIN_S / 10
    wasm_fold(runner, tree, mods, salt="cheap")
    assert spreads == []
    runner._cost[_cost_key(WasmWorker(mods.post))] = SPREAD_MIN_S * 2  # known costly: its batches spread
    wasm_fold(runner, tree, mods, salt="costly")
    assert spreads and all(spreads)


def test_an_idle_epoch_ticker_is_woken_once_per_idle_spell_and_still_enforces_deadlines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from warpmesh.workers import FailureKind, HostConfig, JobError, Limits

    from .conftest import wat

    host = IsolateHost(HostConfig(max_instances=64, max_memory_bytes=64 * 1024 * 1024))
    sets = []
    event_set = threading.Event.set

    def counting(self: threading.Event) -> None:
        if self is host._wakeup:
            sets.append(1)
        event_set(self)

    monkeypatch.setattr(threading.Event, "set", counting)
    root = make_fixture_tree(tmp_path / "t")
    try:
        with Store(tmp_path / "s") as store, Runner(store, host) as runner:
            mods = install_fold(runner)
            tree = import_dir(store, root)
            wasm_fold(runner, tree, mods, salt="start the ticker")
            for i in range(3):
                deadline = time.monotonic() + 5
                while not host._ticker_idle and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert host._ticker_idle
                sets.clear()
                wasm_fold(runner, tree, mods, salt=f"after idle {i}")  # 200 jobs
                assert len(sets) == 1
            while not host._ticker_idle:
                time.sleep(0.01)
            spin = runner.put_module(wat('(module (memory (export "memory") 1) '
                                         '(func (export "warpmesh_run") (loop $l (br $l))))'))
            t = time.monotonic()
            with pytest.raises(JobError) as info:
                runner.run(spin, limits=Limits(fuel=2**62, deadline_s=0.2))
            assert info.value.kind is FailureKind.DEADLINE and time.monotonic() - t < 5
    finally:
        host.close()


def test_has_and_kind_of_agree_with_stat_wherever_the_object_is(tmp_path: Path) -> None:
    from warpmesh.workers.ids import Kind
    from warpmesh.workers.tree import TreeEntry

    with Store(tmp_path / "s", cache_entries=4) as store:
        blob = store.put_blob(b"remembered")
        tree = store.put_tree([TreeEntry("b", Kind.BLOB, blob)])
        store.flush()
        evicted = [store.put_blob(f"filler {i}".encode()) for i in range(6)]  # pushes the first out of the cache
        pending = store.put_blob(b"written behind")
        absent = bytes(32)
        cases = [blob, tree, *evicted, pending, absent, b"short"]
        assert blob not in store._present  # answered from the index
        for oid in cases:
            st = store.stat(oid)
            assert store.has(oid) == (st is not None)
            assert store.kind_of(oid) == (None if st is None else st[0])


READS = r"""(module
  (import "warpmesh_abi_v1" "call" (func $call (param i32 i32 i32) (result i32)))
  (import "warpmesh_abi_v1" "read" (func $read (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "warpmesh_run")
    (local $n i32)
    (local.set $n (call $call (i32.const 1) (i32.const 0) (i32.const 0)))
    (i32.store (i32.const 0) (call $read (i32.const 4096) (i32.const 65536)))     ;; makes the view
    (drop (call $call (i32.const 1) (i32.const 0) (i32.const 0)))
    (i32.store (i32.const 4) (call $read (i32.const 8192) (i32.const 65536)))     ;; through it
    (drop (call $call (i32.const 1) (i32.const 0) (i32.const 0)))
    (i32.store (i32.const 8) (call $read (i32.const 65526) (i32.const 65536)))    ;; past the end: -1
    (drop (call $call (i32.const 1) (i32.const 0) (i32.const 0)))
    (i32.store (i32.const 12) (call $read (i32.const 100) (i32.const 3)))         ;; too small: -2
    (drop (memory.grow (i32.const 1)))
    ;; a request in the grown page before anything else looked at the new size: put_blob(16 zeros)
    (i32.store (i32.const 16) (call $call (i32.const 3) (i32.const 65540) (i32.const 16)))
    (i32.store (i32.const 20) (call $read (i32.const 200) (i32.const 64)))        ;; its id
    (drop (call $call (i32.const 1) (i32.const 0) (i32.const 0)))
    (i32.store (i32.const 24) (call $read (i32.const 65636) (i32.const 65536)))   ;; in the grown page
    ;; out (inline): the seven return codes, the id, then the bytes of the three job reads
    (i32.store8 (i32.const 70000) (i32.const 3))
    (memory.copy (i32.const 70001) (i32.const 0) (i32.const 28))
    (memory.copy (i32.const 70029) (i32.const 200) (i32.const 32))
    (memory.copy (i32.const 70061) (i32.const 4096) (local.get $n))
    (memory.copy (i32.add (i32.const 70061) (local.get $n)) (i32.const 8192) (local.get $n))
    (memory.copy (i32.add (i32.const 70061) (i32.mul (local.get $n) (i32.const 2))) (i32.const 65636)
                 (local.get $n))
    (drop (call $call (i32.const 8) (i32.const 70000)
                      (i32.add (i32.const 61) (i32.mul (local.get $n) (i32.const 3)))))))"""


def test_reads_and_requests_through_the_job_view_match_the_general_checks(runner: Runner) -> None:
    import struct

    from warpmesh.workers.ids import blob_id

    from .conftest import wat

    mid = runner.put_module(wat(READS))
    for salt in ("a", "b"):  # the second run reuses the thread's scratch: same answers
        out = runner.store.get_blob(runner.run(mid, salt=salt).ref.id)
        codes = struct.unpack_from("<7i", out)
        oid, body = out[28:60], out[60:]
        n = len(body) // 3
        assert codes == (n, n, -1, -2, 32, 32, n) and n > 0
        assert oid == blob_id(bytes(16))  # the request was read from the grown page
        assert body[:n] == body[n: 2 * n] == body[2 * n:]
        assert body[9:41] == mid  # the job response, copied whole each time


def test_decoded_request_tables_stay_within_their_bounds(
        runner: Runner, tmp_path: Path, clear_decoded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_mod, "_DECODED_MAX_TOTAL", 1500)
    monkeypatch.setattr(host_mod, "_DECODED_MAX_ENTRIES", 8)
    monkeypatch.setattr(host_mod, "_DECODED_MAX_BYTES", 700)
    root = make_fixture_tree(tmp_path / "t")
    mods = install_fold(runner)
    tree = import_dir(runner.store, root)
    tables = (host_mod._decoded_run_many, host_mod._decoded_run, host_mod._decoded_put_tree)
    peaks = [0, 0, 0]
    remember = host_mod._Decoded.remember

    def watching(self, req, decoded):  # type: ignore[no-untyped-def]
        out = remember(self, req, decoded)
        i = next(i for i, t in enumerate(tables) if t is self)
        assert len(self) <= 8 and sum(map(len, self)) <= 1500 and all(len(r) <= 700 for r in self)
        peaks[i] = max(peaks[i], len(self))
        return out

    monkeypatch.setattr(host_mod._Decoded, "remember", watching)
    for salt in ("a", "b"):
        res = wasm_fold(runner, tree, mods, salt=salt)
        assert runner.store.get_blob(res.ref.id) == python_fold(root).total.to_blob()
    assert all(peaks)  # every table was used, and cleared rather than grown past its bounds
