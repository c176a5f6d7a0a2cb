"""Bulk sections: cores only mark them; the runtime's GcPause pauses the collector, safely across threads."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from warpmesh import bulk
from warpmesh.aio.tuning import GcPause, install_gc_pause
from warpmesh.crdt import ORMap, ORSet, decode, encode


@pytest.fixture
def no_guard() -> Iterator[None]:
    previous = bulk.set_guard(None)
    yield
    bulk.set_guard(previous)


def test_a_bulk_section_does_nothing_without_a_guard(no_guard: None) -> None:
    with bulk.bulk(10**6):
        assert gc.isenabled()


def test_the_installed_guard_runs_only_for_big_sections(no_guard: None) -> None:
    install_gc_pause()
    assert bulk.current_guard() is GcPause
    with bulk.bulk(bulk.BULK_THRESHOLD):
        assert gc.isenabled()
    with bulk.bulk(bulk.BULK_THRESHOLD + 1):
        assert not gc.isenabled()
    with bulk.bulk():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_big_crdt_encoding_is_a_bulk_section(no_guard: None) -> None:
    seen: list[bool] = []

    class Probe:
        def __enter__(self) -> None:
            seen.append(True)

        def __exit__(self, *exc: object) -> None:
            return None

    bulk.set_guard(Probe)
    m: ORMap[ORSet] = ORMap(ORSet)
    for i in range(bulk.BULK_THRESHOLD + 10):
        m.update("r@1", f"k{i}", lambda s, i=i: s.add("r@1", i))
    wire = encode(m)
    assert seen
    assert decode(wire) == m


def test_nested_pauses_restore_the_callers_state(no_guard: None) -> None:
    with GcPause():
        with GcPause():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer section is still open
    assert gc.isenabled()
    gc.disable()
    try:
        with GcPause():
            pass
        assert not gc.isenabled()  # the caller had it off: a pause never turns it on
    finally:
        gc.enable()


def test_overlapping_pauses_on_two_threads_keep_the_collector_off_until_both_end(no_guard: None) -> None:
    """The race the process-wide toggle had: thread A's exit re-enabled GC under thread B's section."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    observed: list[bool] = []

    def thread_a() -> None:
        with GcPause():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def thread_b() -> None:
        a_in.wait(5)
        with GcPause():
            b_in.set()
            a_out.wait(5)
            observed.append(gc.isenabled())

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert observed == [False]
    assert gc.isenabled()


def test_a_server_pause_freezes_what_sections_built_and_thaws_every_nth(
    no_guard: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tune_gc_for_server's policy: a bulk section's survivors leave the collector's sight, and a
    periodic thaw lets cycles that died while frozen be reclaimed after all."""
    monkeypatch.setattr(GcPause, "freeze", True)
    monkeypatch.setattr(GcPause, "unfreeze_every", 3)
    monkeypatch.setattr(GcPause, "_ends", 0)
    gc.unfreeze()

    class Node:
        me: object

    try:
        node = Node()
        node.me = node
        ref = weakref.ref(node)
        with GcPause():
            pass  # end 1: frozen
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert ref() is not None  # a dead cycle, frozen: the collector does not walk it
        with GcPause():
            pass  # end 2: frozen
        with GcPause():
            pass  # end 3: thawed
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert ref() is None
    finally:
        gc.unfreeze()
