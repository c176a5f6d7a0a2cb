"""Fixtures for the isolate-worker tests: stores, a shared host, runners and WAT guests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime

from warpmesh.workers import HostConfig, IsolateHost, Runner, Store

REPO = Path(__file__).resolve().parents[2]
WAT_DIR = Path(__file__).resolve().parent / "wat"
PRELUDE = (REPO / "guests" / "abi_prelude.wat").read_text()


def wat(text: str) -> bytes:
    """Assemble WAT (with the guests' ABI prelude spliced in at ``;;@prelude``)."""
    return bytes(wasmtime.wat2wasm(text.replace(";;@prelude", PRELUDE)))


def wat_file(name: str) -> bytes:
    return wat((WAT_DIR / f"{name}.wat").read_text())


@pytest.fixture(scope="session")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IsolateHost]:
    h = IsolateHost(HostConfig(artifact_dir=tmp_path_factory.mktemp("compiled"), max_instances=256,
                               max_memory_bytes=256 * 1024 * 1024))
    yield h
    h.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture
def runner(store: Store, host: IsolateHost) -> Iterator[Runner]:
    r = Runner(store, host, parallelism=2)
    yield r
    r.close()
