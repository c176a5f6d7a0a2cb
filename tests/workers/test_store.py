"""The content-addressed store: ids, canonical trees, files + index, pins, GC, verification."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warpmesh.workers import CorruptObject, Kind, ObjectNotFound, Ref, Store, blob_id, tree_id
from warpmesh.workers.canonical import CanonicalError, build_tree
from warpmesh.workers.store import StoreError, default_store_dir
from warpmesh.workers.tree import (
    EMPTY_TREE_ID,
    TreeEntry,
    TreeError,
    decode_tree,
    encode_tree,
    make_tree_sorted,
)

# Frozen test vectors: changing the hashing or the tree encoding changes every cache key, so a
# change here must be a deliberate, versioned format change (new derive_key contexts).
EMPTY_TREE_HEX = "185f0ad18569fd55036de24bb05092e9a73defa3409dd4374b1c41d2ec665b5a"
EMPTY_BLOB_HEX = "3f28fd95294f0da29a0fa7e092ed50cc867cf971d969fb37468316178ff7af09"


def test_ids_are_domain_separated_and_stable() -> None:
    assert blob_id(b"\x00\x00\x00\x00") != tree_id(b"\x00\x00\x00\x00")
    assert tree_id(encode_tree([])) == EMPTY_TREE_ID
    assert EMPTY_TREE_ID.hex() == EMPTY_TREE_HEX
    assert blob_id(b"").hex() == EMPTY_BLOB_HEX


def test_tree_encoding_is_order_independent_and_exact() -> None:
    a, b = blob_id(b"a"), blob_id(b"b")
    one = encode_tree([TreeEntry("b.txt", Kind.BLOB, b), TreeEntry("a.txt", Kind.BLOB, a),
                       TreeEntry("sub", Kind.TREE, EMPTY_TREE_ID)])
    two = encode_tree({"sub": Ref(Kind.TREE, EMPTY_TREE_ID), "a.txt": Ref(Kind.BLOB, a),
                       "b.txt": Ref(Kind.BLOB, b)})
    assert one == two
    assert [e.name for e in decode_tree(one)] == ["a.txt", "b.txt", "sub"]
    assert one[:4] == b"\x00\x00\x00\x03" and one[4:7] == b"\x01\x00\x05"


@pytest.mark.parametrize("entries, what", [
    ([TreeEntry("x", Kind.BLOB, bytes(32))] * 2, "duplicate"),
    ([TreeEntry("", Kind.BLOB, bytes(32))], "empty"),
    ([TreeEntry("a/b", Kind.BLOB, bytes(32))], "'/'"),
    ([TreeEntry("..", Kind.BLOB, bytes(32))], "reserved"),
    ([TreeEntry("x", Kind.BLOB, bytes(31))], "32 bytes"),
    ([TreeEntry("x", 7, bytes(32))], "kind"),  # type: ignore[arg-type]
    ([TreeEntry("\udc80", Kind.BLOB, bytes(32))], "UTF-8"),
])
def test_bad_entries_are_refused(entries: list[TreeEntry], what: str) -> None:
    with pytest.raises(TreeError) as info:
        encode_tree(entries)
    assert what in str(info.value)


@pytest.mark.parametrize("data", [
    b"\x00\x00\x00",  # truncated count
    b"\x00\x00\x00\x01\x01\x00\x01x" + bytes(31),  # truncated id
    b"\x00\x00\x00\x00junk",  # trailing bytes
    b"\x00\x00\x00\x02" + b"\x01\x00\x01b" + bytes(32) + b"\x01\x00\x01a" + bytes(32),  # unsorted
    b"\x00\x00\x00\x01\x03\x00\x01a" + bytes(32),  # unknown kind
])
def test_non_canonical_tree_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(TreeError):
        decode_tree(data)


names = st.text(alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


@given(st.dictionaries(names, st.tuples(st.sampled_from([Kind.BLOB, Kind.TREE]), st.binary(min_size=32, max_size=32)),
                       max_size=12))
def test_tree_encoding_round_trips(entries: dict[str, tuple[Kind, bytes]]) -> None:
    tree = [TreeEntry(n, k, i) for n, (k, i) in entries.items()]
    data = encode_tree(tree)
    decoded = decode_tree(data)
    assert encode_tree(decoded) == data
    assert sorted(decoded) == sorted(tree)
    assert encode_tree(list(reversed(tree))) == data
    # what the store remembers of a tree it writes is exactly what reading it back decodes
    oid, data2, remembered = make_tree_sorted(list(reversed(tree)))
    assert (oid, data2) == (tree_id(data), data) and remembered == decoded


def test_blobs_inline_and_on_disk(store: Store) -> None:
    small = store.put_blob(b"small")
    big_bytes = os.urandom(100_000)
    big = store.put_blob(big_bytes)
    assert store.get_blob(small) == b"small"
    assert store.get_blob(big) == big_bytes
    assert store.stat(big) == (Kind.BLOB, 100_000)
    path = store.root / "objects" / big.hex()[:2] / big.hex()[2:]
    assert path.read_bytes() == big_bytes


def test_a_corrupt_file_is_detected(store: Store) -> None:
    big = store.put_blob(b"x" * 50_000)
    path = store.root / "objects" / big.hex()[:2] / big.hex()[2:]
    path.write_bytes(b"y" * 50_000)
    with pytest.raises(CorruptObject) as info:
        store.get_blob(big)
    assert str(path) in str(info.value)
    path.unlink()
    with pytest.raises(CorruptObject) as info:
        store.get_blob(big)
    assert "missing" in str(info.value)


def test_read_range_reads_pieces_of_inline_and_file_objects(store: Store) -> None:
    small = store.put_blob(b"0123456789")
    big_data = bytes(range(256)) * 400
    big = store.put_blob(big_data)
    assert store.read_range(small, 2, 3) == b"234"
    assert store.read_range(big, 1000, 5000) == big_data[1000:6000]
    assert store.read_range(big, len(big_data) - 10, 100) == big_data[-10:]
    with pytest.raises(ObjectNotFound):
        store.read_range(blob_id(b"absent"), 0, 1)
    with pytest.raises(ValueError):
        store.read_range(big, -1, 1)


def test_trees_need_their_entries(store: Store) -> None:
    with pytest.raises(ObjectNotFound):
        store.put_tree({"x": Ref(Kind.BLOB, blob_id(b"not stored"))})
    b = store.put_blob(b"stored")
    with pytest.raises(StoreError):
        store.put_tree({"x": Ref(Kind.TREE, b)})  # wrong kind
    t = store.put_tree({"x": Ref(Kind.BLOB, b)})
    assert store.get_tree(t) == (TreeEntry("x", Kind.BLOB, b),)


def test_put_verified_refuses_bytes_that_do_not_match(store: Store) -> None:
    good = b"module bytes"
    with pytest.raises(CorruptObject):
        store.put_verified(Ref(Kind.BLOB, blob_id(good)), b"tampered bytes")
    assert not store.has(blob_id(good))
    store.put_verified(Ref(Kind.BLOB, blob_id(good)), good)
    assert store.get_blob(blob_id(good)) == good


def test_gc_keeps_pinned_trees_and_drops_the_rest(store: Store) -> None:
    keep = store.put_blob(b"keep")
    drop = store.put_blob(b"drop" * 10_000)  # file-backed
    sub = store.put_tree({"k": Ref(Kind.BLOB, keep)})
    root = store.put_tree({"sub": Ref(Kind.TREE, sub)})
    store.pin("mine", Ref(Kind.TREE, root))
    store.memo_put(b"k" * 32, Ref(Kind.BLOB, drop))
    store.memo_put(b"j" * 32, Ref(Kind.TREE, root))
    report = store.gc(grace_seconds=-1)
    assert report.deleted >= 1 and report.memo_dropped == 1
    assert store.has(keep) and store.has(sub) and store.has(root)
    assert not store.has(drop)
    assert not (store.root / "objects" / drop.hex()[:2] / drop.hex()[2:]).exists()
    assert store.memo_get(b"k" * 32) is None and store.memo_get(b"j" * 32) == Ref(Kind.TREE, root)
    assert store.unpin("mine")
    store.gc(grace_seconds=-1)
    assert not store.has(keep)


def test_a_tree_put_again_after_gc_is_stored_again(store: Store) -> None:
    # put_tree remembers entries -> id; a repeat must still notice the tree was collected since.
    entries = (TreeEntry("x", Kind.BLOB, store.put_blob(b"x")),)
    tid = store.put_tree(entries)
    assert store.put_tree(entries) == tid  # remembered
    store.gc(grace_seconds=-1)
    assert not store.has(tid)
    with pytest.raises(ObjectNotFound):  # its entry went too: refused, as for any new tree
        store.put_tree(entries)
    store.put_blob(b"x")
    assert store.put_tree(entries) == tid and store.has(tid)
    assert store.get_tree(tid) == entries


def test_gc_grace_protects_recent_objects(store: Store) -> None:
    fresh = store.put_blob(b"fresh")
    store.gc(grace_seconds=3600)
    assert store.has(fresh)


def test_index_is_durable_after_flush_and_reopen(tmp_path: Path) -> None:
    with Store(tmp_path / "s") as s:
        oid = s.put_blob(b"durable")
        s.memo_put(b"m" * 32, Ref(Kind.BLOB, oid))
    with Store(tmp_path / "s") as s:
        assert s.get_blob(oid) == b"durable"
        assert s.memo_get(b"m" * 32) == Ref(Kind.BLOB, oid)


def test_pending_rows_commit_by_the_age_of_the_oldest_not_the_last_commit(tmp_path: Path) -> None:
    import time

    from warpmesh.workers.store import COMMIT_EVERY_S

    def committed(key: bytes) -> bool:  # seen by another connection, i.e. in the database
        db = sqlite3.connect(tmp_path / "s" / "index.sqlite")
        try:
            return db.execute("SELECT 1 FROM memo WHERE key = ?", (key,)).fetchone() is not None
        finally:
            db.close()

    with Store(tmp_path / "s") as s:
        oid = s.put_blob(b"x")
        s.flush()
        time.sleep(COMMIT_EVERY_S * 1.5)  # a quiet spell
        s.memo_put(b"a" * 32, Ref(Kind.BLOB, oid))
        assert not committed(b"a" * 32)  # the first write after it waits for its batch
        time.sleep(COMMIT_EVERY_S * 1.5)
        s.memo_put(b"b" * 32, Ref(Kind.BLOB, oid))  # ... which a later write closes
        assert committed(b"a" * 32) and committed(b"b" * 32)


def test_unreadable_index_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "index.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as info:
        Store(tmp_path / "s")
    assert "move it aside" in str(info.value)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path / "s").close()
    db = sqlite3.connect(tmp_path / "s" / "index.sqlite")
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError) as info:
        Store(tmp_path / "s")
    assert "v99" in str(info.value)


def test_default_store_dir_honours_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARPMESH_STORE", str(tmp_path / "here"))
    assert default_store_dir() == tmp_path / "here"
    monkeypatch.delenv("WARPMESH_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_store_dir() == tmp_path / "cache" / "warpmesh" / "store"


def test_canonical_args_build_nested_trees() -> None:
    ref, pending = build_tree({"n": 5, "s": "x", "b": b"\x00", "sub": {"k": "v"}})
    ids = {oid for _, oid, _ in pending}
    assert ref.id in ids and blob_id(b"5") in ids and blob_id(b"x") in ids
    assert build_tree({"n": 5})[0] == build_tree({"n": "5"})[0]  # same bytes, same input
    with pytest.raises(CanonicalError):
        build_tree({"f": 0.1})


def test_request_keys_are_the_canonical_tree_of_the_request() -> None:
    from warpmesh.workers.request import JobRequest, Limits, OpWorker, WasmWorker
    from warpmesh.workers.tree import make_tree

    args, salt, module = blob_id(b"a"), blob_id(b"s"), blob_id(b"m")
    for worker in (WasmWorker(module), OpWorker("count", "2")):
        req = JobRequest(worker, EMPTY_TREE_ID, salt, Limits(fuel=7), "wasmtime-50")
        key, pending = req.plan()
        runtime = blob_id(req.runtime_text())
        entries = {"args": Ref(Kind.TREE, EMPTY_TREE_ID), "salt": Ref(Kind.BLOB, salt),
                   "runtime": Ref(Kind.BLOB, runtime)}
        if isinstance(worker, WasmWorker):
            entries["wasm"] = Ref(Kind.BLOB, module)
        else:
            entries["op"] = Ref(Kind.BLOB, blob_id(b"count@2"))
        assert (key, pending[-1][2]) == make_tree(entries)
        assert req.key == key  # the key-only path (nested requests) hashes the same bytes
        assert args != key
