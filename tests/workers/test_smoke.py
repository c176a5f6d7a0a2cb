"""A first end-to-end path: store a module, run it, hit the memo."""

from warpmesh.workers import Runner

from .conftest import wat

TRIVIAL = r"""(module
  (import "warpmesh_abi_v1" "call" (func $call (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\03ok")
  (func (export "warpmesh_run") (drop (call $call (i32.const 8) (i32.const 0) (i32.const 3)))))"""


def test_trivial_guest_runs_then_hits_the_memo(runner: Runner) -> None:
    mid = runner.put_module(wat(TRIVIAL))
    first = runner.run(mid, {"x": "1"})
    assert first.source == "run"
    assert runner.store.get_blob(first.ref.id) == b"ok"
    again = runner.run(mid, {"x": "1"})
    assert again.source == "memo" and again.ref == first.ref and again.key == first.key
    assert runner.executions == 1
