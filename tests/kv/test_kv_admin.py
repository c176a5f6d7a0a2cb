"""Issue 17's pure parts: the operator's safety rules (kv.admin), the member book (kv.state) and the
backup file format (kv.backup)."""

from __future__ import annotations

import pytest

from warpmesh.kv import admin as A
from warpmesh.kv.backup import BackupError, decode_backup, encode_backup, restore_data_dir, write_backup
from warpmesh.kv.state import KVStateMachine, encode_member, encode_put, encode_retire
from warpmesh.raft.membership import Membership

M3 = Membership.of(["n1", "n2", "n3"])


def test_remove_refused_without_a_live_quorum():
    # n3 is dead: removing a live voter would leave {n1, n3} with one live node.
    reason = A.remove_refusal(M3, "n2", live={"n1", "n2"})
    assert reason is not None and "quorum" in reason and "n3" in reason
    # Removing the dead one is safe, and so is anything when all answer.
    assert A.remove_refusal(M3, "n3", live={"n1", "n2"}) is None
    assert A.remove_refusal(M3, "n2", live={"n1", "n2", "n3"}) is None
    # The last voter can never go; learners never count.
    assert "last voter" in (A.remove_refusal(Membership.of(["n1"]), "n1", live={"n1"}) or "")
    assert A.remove_refusal(Membership.of(["n1"], ["l1"]), "l1", live={"n1"}) is None


def test_remove_checks_the_current_voters_too():
    m5 = Membership.of(["n1", "n2", "n3", "n4", "n5"])
    # Only n1, n2 answer: the current five have no live majority, so no change can commit.
    assert A.remove_refusal(m5, "n5", live={"n1", "n2"}) is not None
    assert A.remove_refusal(m5, "n5", live={"n1", "n2", "n3"}) is None


def test_live_voters_uses_recent_contact():
    age = {"n2": 0.1, "n3": 50.0}
    assert A.live_voters(M3, "n1", age, election_timeout=0.6) == {"n1", "n2"}
    assert A.live_voters(M3, "n1", {"n2": None}, election_timeout=0.6) == {"n1"}


def test_join_verdicts():
    book = {"n1": ("h:1", None, False), "n4": ("h:4", "tok-a", False)}
    m = Membership.of(["n1", "n2", "n3"], ["n4"])
    assert A.join_verdict("n5", token="t", force=False, membership=m, book=book, retired={}).action == "add"
    # Removed ids are never reused by accident.
    v = A.join_verdict("n9", token="t", force=False, membership=m, book=book, retired={"n9": 12})
    assert v.action == "refuse" and "--force" in v.detail and "12" in v.detail
    assert A.join_verdict("n9", token="t", force=True, membership=m, book=book, retired={"n9": 12}).action == "add"
    # The same data directory asking again is fine; an empty one under a member's id is not.
    assert A.join_verdict("n4", token="tok-a", force=False, membership=m, book=book, retired={}).action == "already"
    v = A.join_verdict("n4", token="tok-b", force=False, membership=m, book=book, retired={})
    assert v.action == "refuse" and "same id" in v.detail
    # A bootstrap member (not in the book yet) rejoining from an empty directory: refused.
    v = A.join_verdict("n2", token="t", force=False, membership=m, book=book, retired={})
    assert v.action == "refuse"
    # member add of a node already there: success, says so.
    v = A.join_verdict("n1", token=None, force=False, membership=m, book=book, retired={})
    assert v.action == "already" and "voter" in v.detail


def test_transfer_target_is_the_most_up_to_date_live_voter():
    match = {"n2": 10, "n3": 12}
    assert A.pick_transfer_target(M3, "n1", match, 12, live={"n1", "n2", "n3"}) == "n3"
    assert A.pick_transfer_target(M3, "n1", match, 12, live={"n1", "n2"}) == "n2"
    assert A.pick_transfer_target(M3, "n1", match, 12, live={"n1"}) is None


def test_member_rows_shape():
    m = Membership.of(["n1", "n2"], ["n3"])
    out = A.member_rows(m, "n1", "n1", 40, {"n2": 39, "n3": 7}, {"n2": 0.05, "n3": None},
                        {"n2": ("10.0.0.2:7101", None, False)}, {"n3": "10.0.0.3:7101"})
    assert out["leader"] == "n1"
    rows = {r["id"]: r for r in out["members"]}
    assert set(rows["n1"]) == {"id", "address", "role", "match_index", "last_contact_s"}
    assert rows["n1"]["match_index"] == 40 and rows["n1"]["last_contact_s"] == 0.0
    assert rows["n2"] == {"id": "n2", "address": "10.0.0.2:7101", "role": "voter", "match_index": 39,
                          "last_contact_s": 0.05}
    assert rows["n3"]["role"] == "learner" and rows["n3"]["last_contact_s"] is None
    assert rows["n3"]["address"] == "10.0.0.3:7101"


def test_member_book_is_replicated_state():
    sm = KVStateMachine()
    sm.apply(encode_put("a", b"1"), 1)
    sm.apply(encode_member("n4", "h:4", "tok", False), 2)
    sm.apply(encode_member("n5", "h:5", None, True), 3)
    sm.apply(encode_retire("n5"), 4)
    assert sm.members == {"n4": ("h:4", "tok", False)} and sm.retired == {"n5": 4}
    other = KVStateMachine()
    other.restore(sm.snapshot())
    assert (other.data, other.members, other.retired) == (sm.data, sm.members, sm.retired)
    # A forced rejoin clears the retirement.
    sm.apply(encode_member("n5", "h:5b", "t2", False), 5)
    assert "n5" not in sm.retired
    # A snapshot of the old format (no book) still restores.
    old = KVStateMachine()
    old.apply(encode_put("a", b"1"), 1)
    again = KVStateMachine()
    again.restore(old.snapshot())
    assert again.data == {"a": (b"1", 1)}


def _state(n: int = 3) -> bytes:
    sm = KVStateMachine()
    for i in range(n):
        sm.apply(encode_put(f"k{i}", f"v{i}".encode()), 10 + i)
    return sm.snapshot()


def test_backup_round_trip_and_refusals(tmp_path):
    data = _state()
    blob = encode_backup(12, data)
    assert decode_backup(blob) == (12, data)
    with pytest.raises(BackupError, match="not a warpmesh KV snapshot"):
        decode_backup(b"hello" + blob)
    for cut in (len(blob) - 1, len(blob) // 2, 30):
        with pytest.raises(BackupError, match=r"truncated|corrupt"):
            decode_backup(blob[:cut])
    flipped = bytearray(blob)
    flipped[-3] ^= 0x01
    with pytest.raises(BackupError, match="corrupt"):
        decode_backup(bytes(flipped))
    info = write_backup(tmp_path / "b.snap", 12, data)
    assert info["index"] == 12 and info["keys"] == 3 and (tmp_path / "b.snap").exists()


def test_restore_builds_a_data_directory_and_refuses_to_overwrite(tmp_path):
    from warpmesh.raft.storage import SqliteRaftStorage

    write_backup(tmp_path / "b.snap", 12, _state())
    peers = {"a1": "127.0.0.1:1", "a2": "127.0.0.1:2"}
    out = restore_data_dir(tmp_path / "b.snap", tmp_path / "a1", "a1", peers)
    assert out["index"] == 12 and out["keys"] == 3
    st = SqliteRaftStorage(tmp_path / "a1" / "raft.sqlite", node_id="a1")
    try:
        loaded = st.load()
        assert loaded.snapshot is not None and loaded.snapshot.index == 12
        assert loaded.snapshot.meta.membership == Membership.of(["a1", "a2"])
    finally:
        st.close()
    with pytest.raises(BackupError, match="already holds"):
        restore_data_dir(tmp_path / "b.snap", tmp_path / "a1", "a1", peers)
    with pytest.raises(BackupError, match="must include"):
        restore_data_dir(tmp_path / "b.snap", tmp_path / "x", "zz", peers)
    (tmp_path / "bad.snap").write_bytes((tmp_path / "b.snap").read_bytes()[:-10])
    with pytest.raises(BackupError):
        restore_data_dir(tmp_path / "bad.snap", tmp_path / "a2", "a2", peers)
    assert not (tmp_path / "a2" / "raft.sqlite").exists()
