"""SqliteRaftStorage beyond the conformance suite: refusing corrupt or foreign files with a clear
error, and a SIGKILL crash test (no acknowledged write lost; the database opens cleanly)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from warpmesh.raft.errors import CorruptState
from warpmesh.raft.storage import SqliteRaftStorage, StorageBatch
from warpmesh.raft.types import Entry, HardState


def test_random_bytes_are_refused_with_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "raft.sqlite"
    p.write_bytes(os.urandom(8192))
    with pytest.raises(CorruptState) as err:
        SqliteRaftStorage(p)
    msg = str(err.value)
    assert str(p) in msg and "Recovery" in msg


def test_a_truncated_database_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "raft.sqlite"
    s = SqliteRaftStorage(p)
    s.append([Entry(i, 1, 0, os.urandom(3000)) for i in range(1, 200)])
    s.checkpoint()
    s.close()
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    for extra in ("-wal", "-shm"):
        Path(str(p) + extra).unlink(missing_ok=True)
    with pytest.raises(CorruptState):
        st = SqliteRaftStorage(p)
        st.load()


def test_a_sqlite_file_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    import sqlite3

    p = tmp_path / "other.sqlite"
    db = sqlite3.connect(p)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(CorruptState, match="not a warpmesh Raft file"):
        SqliteRaftStorage(p)


def test_another_nodes_database_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "raft.sqlite"
    SqliteRaftStorage(p, node_id="n1").close()
    with pytest.raises(CorruptState, match="belongs to node 'n1'"):
        SqliteRaftStorage(p, node_id="n2")
    SqliteRaftStorage(p, node_id="n1").close()  # its owner still opens it


def test_a_future_schema_version_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "raft.sqlite"
    s = SqliteRaftStorage(p)
    s._db.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
    s.close()
    with pytest.raises(CorruptState, match="schema version 99"):
        SqliteRaftStorage(p)


def test_one_batch_is_one_transaction(tmp_path: Path) -> None:
    s = SqliteRaftStorage(tmp_path / "raft.sqlite")
    ents = [Entry(i, 1, 0, b"x") for i in range(1, 1001)]
    s.write(StorageBatch(entries=ents, hard_state=HardState(1, "n1", 0)))
    assert s.last_index() == 1000
    s.close()


WRITER = r"""
import sys
from warpmesh.raft.storage import SqliteRaftStorage, StorageBatch
from warpmesh.raft.types import Entry, HardState
s = SqliteRaftStorage(sys.argv[1], node_id="n1")
last = s.last_index()
term = s.hard_state().term + 1
while True:
    batch = [Entry(last + i, term, 0, b"p" * 200) for i in range(1, 51)]
    s.write(StorageBatch(entries=batch, hard_state=HardState(term, "n1", last)))
    last += 50
    print(last, flush=True)  # acknowledged: durable before this line is written
"""


@pytest.mark.process
class _QuickCheckpoints(SqliteRaftStorage):
    CHECKPOINT_INTERVAL = 0.01


def test_the_wal_starts_over_under_a_steady_stream_of_writes(tmp_path: Path) -> None:
    """Checkpoints keep up with a writer that barely pauses, so the WAL is started over from its
    beginning (commits overwrite it in place: no fdatasync has to journal a new file size)
    instead of growing for as long as the writes go on."""
    s = _QuickCheckpoints(tmp_path / "raft.sqlite", synchronous="NORMAL")
    wal = Path(str(s.path) + "-wal")
    try:
        n = 0
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            n += 1
            s.write(StorageBatch(entries=[Entry(n, 1, 0, b"x" * 16)], hard_state=HardState(1, None, n)))
            time.sleep(0.0001)  # a node's writes wait for the network in between; this one barely
        # Every commit adds two pages (the log's and meta's) and a frame header each: ~8 KiB.
        grown_unchecked = n * 2 * (4096 + 24)
        assert n > 200 and wal.stat().st_size < grown_unchecked / 5, (n, wal.stat().st_size)
    finally:
        s.close()


def test_sigkill_during_heavy_writes_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    db = tmp_path / "raft.sqlite"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE,
                                text=True, env=env)
        acked = 0
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
            if acked >= 1500 * (round_ + 1):
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert acked > 0
        s = SqliteRaftStorage(db, node_id="n1")  # opens cleanly (quick_check passes)
        st = s.load()
        assert st.entries[-1].index >= acked, f"acknowledged {acked}, found {st.entries[-1].index}"
        assert [e.index for e in st.entries] == list(range(1, len(st.entries) + 1))
        s.close()
