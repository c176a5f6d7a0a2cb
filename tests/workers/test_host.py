"""The isolate host: compile once, compiled artifacts on disk, integrity of the artifact cache."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from warpmesh.workers import HostConfig, IsolateHost, Runner, Store

from .conftest import wat

GUEST = wat(r"""(module
  (import "warpmesh_abi_v1" "call" (func $call (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1) (data (i32.const 0) "\03ok")
  (func (export "warpmesh_run") (drop (call $call (i32.const 8) (i32.const 0) (i32.const 3)))))""")


def run_once(host: IsolateHost, store: Store, arg: str) -> None:
    with Runner(store, host) as r:
        res = r.run(r.put_module(GUEST), {"a": arg})
        assert store.get_blob(res.ref.id) == b"ok"


def test_compiled_once_per_host_and_reloaded_from_disk(tmp_path: Path) -> None:
    compiled = tmp_path / "compiled"
    with Store(tmp_path / "s") as store:
        h1 = IsolateHost(HostConfig(artifact_dir=compiled))
        for i in range(5):
            run_once(h1, store, str(i))
        assert h1.compiles == 1
        assert len(list(compiled.glob("*.cwasm"))) == 1
        h1.close()
        h2 = IsolateHost(HostConfig(artifact_dir=compiled))  # a restarted host
        run_once(h2, store, "after restart")
        assert h2.compiles == 0
        h2.close()


def test_a_damaged_artifact_is_recompiled_not_loaded(tmp_path: Path) -> None:
    compiled = tmp_path / "compiled"
    with Store(tmp_path / "s") as store:
        h1 = IsolateHost(HostConfig(artifact_dir=compiled))
        run_once(h1, store, "1")
        h1.close()
        (artifact,) = compiled.glob("*.cwasm")
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0xFF
        artifact.write_bytes(bytes(data))
        h2 = IsolateHost(HostConfig(artifact_dir=compiled))
        run_once(h2, store, "2")
        assert h2.compiles == 1
        h2.close()


def test_concurrent_first_loads_compile_once(tmp_path: Path) -> None:
    host = IsolateHost(HostConfig(artifact_dir=None))
    with Store(tmp_path / "s") as store:
        mid = store.put_blob(GUEST)
        barrier = threading.Barrier(8)
        loaded = []

        def load() -> None:
            barrier.wait()
            loaded.append(host.load(mid, lambda: store.get_blob(mid)))

        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert host.compiles == 1 and len({id(x) for x in loaded}) == 1
    host.close()


def test_the_ticker_idles_and_deadlines_still_fire(tmp_path: Path) -> None:
    from warpmesh.workers import FailureKind, JobError, Limits

    host = IsolateHost(HostConfig(artifact_dir=None))
    spin = wat('(module (memory (export "memory") 1) (func (export "warpmesh_run") (loop $l (br $l))))')
    with Store(tmp_path / "s") as store, Runner(store, host) as r:
        run_once(host, store, "warm")
        threading.Event().wait(0.2)  # let the ticker go idle
        with pytest.raises(JobError) as info:
            r.run(r.put_module(spin), limits=Limits(fuel=2**62, deadline_s=0.1))
        assert info.value.kind is FailureKind.DEADLINE
    host.close()


PEEK = wat(r"""(module
  (import "warpmesh_abi_v1" "call" (func $call (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "warpmesh_run")
    (drop (memory.grow (i32.const 1)))
    ;; out: what this instance finds at 1000 (first page) and 66536 (grown page), then leave a mark
    (i32.store8 (i32.const 2000) (i32.const 3))
    (i64.store (i32.const 2001) (i64.load (i32.const 1000)))
    (i64.store (i32.const 2009) (i64.load (i32.const 66536)))
    (i64.store (i32.const 1000) (i64.const -1))
    (i64.store (i32.const 66536) (i64.const -1))
    (drop (call $call (i32.const 8) (i32.const 2000) (i32.const 17)))))""")


def test_a_job_never_sees_the_memory_a_previous_job_left_in_its_pool_slot(store: Store, host: IsolateHost) -> None:
    # Pool slots keep their first pages resident between jobs (HostConfig.keep_resident_bytes):
    # they must still come back zeroed, in the initial pages and in grown ones.
    assert host.config.pooling and host.config.keep_resident_bytes >= 2 * 65536
    with Runner(store, host, parallelism=1) as r:
        mid = r.put_module(PEEK)
        for i in range(20):
            res = r.run(mid, {"i": str(i)})
            assert store.get_blob(res.ref.id) == bytes(16), f"job {i} saw a previous job's memory"
