"""Limits and failure modes: each fails cleanly with a typed error, and the host keeps serving.

Also ports the kuilt WasmRuntimeConformanceSuite vectors (reference kuilt-warp.md §5.1) where they
apply to this ABI: import rejection, memory caps at load and at growth, malformed modules, missing
exports or memory, traps, CPU bombs in the body and in the start function, a timeout not poisoning
later runs, growing past a declared max, results written into freshly grown memory, and out-of-range
pointers (the driver-based cases live in test_abi.py).
"""

from __future__ import annotations

import pytest

from warpmesh.workers import FailureKind, JobError, Limits, Runner

from .conftest import wat

CALL = '(import "warpmesh_abi_v1" "call" (func $call (param i32 i32 i32) (result i32)))'
OUT_OK = "(drop (call $call (i32.const 8) (i32.const 0) (i32.const 3)))"
DATA_OK = r'(data (i32.const 0) "\03ok")'


def module(body: str, *, memory: str = "1", extra: str = "", start: str = "") -> bytes:
    return wat(f"""(module {CALL} (memory (export "memory") {memory}) {DATA_OK} {extra}
      {start}
      (func (export "warpmesh_run") {body}))""")


GOOD = module(OUT_OK)


def fails(runner: Runner, wasm: bytes, kind: FailureKind, *, limits: Limits | None = None,
          args: dict[str, str] | None = None) -> JobError:
    mid = runner.put_module(wasm)
    with pytest.raises(JobError) as info:
        runner.run(mid, args or {}, limits=limits)
    assert info.value.kind is kind, str(info.value)
    # The host keeps serving, and the failure was not memoized.
    good = runner.run(runner.put_module(GOOD), {"after": str(kind)})
    assert runner.store.get_blob(good.ref.id) == b"ok"
    assert runner.results.lookup(runner.request(mid, args or {}, limits=limits).key) is None
    return info.value


SMALL = Limits(memory_bytes=4 * 65536)


def test_memory_bomb_hits_the_cap(runner: Runner) -> None:
    bomb = module("(loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable")
    e = fails(runner, bomb, FailureKind.MEMORY_LIMIT, limits=SMALL)
    assert "cap" in str(e)


def test_initial_memory_over_the_cap_is_refused_at_instantiation(runner: Runner) -> None:  # largeinit/bigmem
    e = fails(runner, module(OUT_OK, memory="5"), FailureKind.MEMORY_LIMIT, limits=SMALL)
    assert "instantiation" in str(e)


def test_initial_memory_exactly_at_the_cap_is_accepted(runner: Runner) -> None:  # capinit
    res = runner.run(runner.put_module(module(OUT_OK, memory="4")), limits=SMALL)
    assert runner.store.get_blob(res.ref.id) == b"ok"


def test_memory_without_a_max_is_capped_by_the_limiter(runner: Runner) -> None:  # nomax
    # memory.grow past the cap returns -1 (it does not trap); the guest reports what it saw.
    body = r"""(if (i32.eq (memory.grow (i32.const 10)) (i32.const -1))
                 (then (i32.store8 (i32.const 1) (i32.const 0x4e))))  ;; "N" = refused
               (drop (call $call (i32.const 8) (i32.const 0) (i32.const 3)))"""
    res = runner.run(runner.put_module(module(body)), limits=SMALL)
    assert runner.store.get_blob(res.ref.id) == b"Nk"


def test_growing_past_the_declared_max_traps_cleanly(runner: Runner) -> None:  # growmax
    body = "(if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable)) " + OUT_OK
    fails(runner, module(body, memory="1 1"), FailureKind.TRAP)


def test_result_written_into_grown_memory_is_read_back(runner: Runner) -> None:  # growwrite
    body = r"""(drop (memory.grow (i32.const 2)))
               (i32.store8 (i32.const 131072) (i32.const 3))
               (i32.store (i32.const 131073) (i32.const 0x776f7267))  ;; "grow"
               (drop (call $call (i32.const 8) (i32.const 131072) (i32.const 5)))"""
    res = runner.run(runner.put_module(module(body)))
    assert runner.store.get_blob(res.ref.id) == b"grow"


def test_infinite_loop_runs_out_of_fuel(runner: Runner) -> None:  # loop
    e = fails(runner, module("(loop $l (br $l))"), FailureKind.FUEL_EXHAUSTED, limits=Limits(fuel=100_000))
    assert "100000" in str(e)


def test_infinite_loop_hits_the_deadline_and_does_not_poison_later_runs(runner: Runner) -> None:
    fails(runner, module("(loop $l (br $l))"), FailureKind.DEADLINE,
          limits=Limits(fuel=2**62, deadline_s=0.2))


def test_start_function_bomb_is_bounded(runner: Runner) -> None:  # startbomb
    e = fails(runner, module(OUT_OK, extra="(func $spin (loop $l (br $l)))", start="(start $spin)"),
              FailureKind.FUEL_EXHAUSTED, limits=Limits(fuel=100_000))
    assert "instantiation" in str(e)


def test_trap_is_a_typed_error(runner: Runner) -> None:  # trap
    e = fails(runner, module("unreachable"), FailureKind.TRAP)
    assert "unreachable" in str(e)


def test_missing_out(runner: Runner) -> None:
    fails(runner, module("nop"), FailureKind.MISSING_OUT)


def test_double_out(runner: Runner) -> None:
    fails(runner, module(OUT_OK + OUT_OK), FailureKind.DOUBLE_OUT)


def test_proc_exit_traps(runner: Runner) -> None:
    wasm = wat(f"""(module {CALL}
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "warpmesh_run") (call $exit (i32.const 7))))""")
    e = fails(runner, wasm, FailureKind.TRAP)
    assert "proc_exit(7)" in str(e)


@pytest.mark.parametrize("imp", [
    '(import "wasi_snapshot_preview1" "path_open" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))',
    '(import "env" "socket" (func))',
    '(import "warpmesh_abi_v1" "call" (global i32))',
])
def test_unknown_imports_are_refused_before_instantiation(runner: Runner, imp: str) -> None:  # imports
    wasm = wat(f'(module {imp} (memory (export "memory") 1) (func (export "warpmesh_run")))')
    e = fails(runner, wasm, FailureKind.MODULE_REJECTED)
    assert "warpmesh_abi_v1" in str(e) or "socket" in str(e) or "path_open" in str(e)


def test_import_with_the_wrong_signature_is_refused(runner: Runner) -> None:
    wasm = wat('(module (import "warpmesh_abi_v1" "call" (func (param i32)))'
               ' (memory (export "memory") 1) (func (export "warpmesh_run")))')
    e = fails(runner, wasm, FailureKind.MODULE_REJECTED)
    assert "wrong type" in str(e)


@pytest.mark.parametrize("wasm, what", [
    (b"\x00asm\x01\x00\x00\x00\xff\xff", "not valid"),  # malformed bytes
    (b"definitely not wasm", "not valid"),
    (wat('(module (memory (export "memory") 1))'), "warpmesh_run"),  # noabi
    (wat('(module (func (export "warpmesh_run")))'), "memory"),  # nomemory
    (wat('(module (memory (export "memory") 1) (func (export "warpmesh_run") (param i32)))'), "() -> ()"),
])
def test_malformed_or_incomplete_modules_are_refused(runner: Runner, wasm: bytes, what: str) -> None:
    e = fails(runner, wasm, FailureKind.MODULE_REJECTED)
    assert what in str(e)


def test_fuel_and_memory_cap_are_part_of_the_key(runner: Runner) -> None:
    mid = runner.put_module(GOOD)
    keys = {runner.request(mid, limits=lim).key for lim in
            (Limits(), Limits(fuel=12345), Limits(memory_bytes=2 * 65536))}
    assert len(keys) == 3
    # the deadline is not: it only decides whether a run fails, and failures are never cached
    assert runner.request(mid, limits=Limits(deadline_s=1)).key == runner.request(mid).key


def test_memory_cap_above_the_host_maximum_is_a_bad_request(runner: Runner) -> None:
    fails(runner, GOOD, FailureKind.BAD_REQUEST, limits=Limits(memory_bytes=2 * 1024 * 1024 * 1024))


def test_wasi_stubs_are_deterministic(runner: Runner) -> None:
    wasm = wat(f"""(module {CALL}
      (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
      (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env (param i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "warpmesh_run")
        (i64.store (i32.const 1) (i64.const -1))
        (i32.store8 (i32.const 0) (i32.const 3))
        (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 1)))
        (drop (call $random (i32.const 9) (i32.const 4)))
        (i32.store (i32.const 13) (i32.const -1)) (i32.store (i32.const 17) (i32.const -1))
        (drop (call $env (i32.const 13) (i32.const 17)))
        (i32.store8 (i32.const 21) (call $read (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 30)))
        (drop (call $call (i32.const 8) (i32.const 0) (i32.const 22)))))""")
    res = runner.run(runner.put_module(wasm))
    out = runner.store.get_blob(res.ref.id)
    assert out[:8] == bytes(8)            # the clock reads 0
    assert out[8:12] == b"\x42" * 4       # "random" bytes are 0x42
    assert out[12:20] == bytes(8)         # no environment
    assert out[20] == 8                   # EBADF: no files
