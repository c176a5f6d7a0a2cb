"""Direct bindings to the wasmtime C API for the per-job hot path.

wasmtime-py's high-level ``Func.__call__`` and host-function trampolines convert every value through
``Val`` objects and cost tens of microseconds per crossing (about 68 µs per call measured on this
project's machine), which would dominate a job that should cost about as much as instantiation. So
the isolate host calls a handful of C API functions directly -- the ``*_unchecked`` call and define
functions, stores, limits, fuel, epochs, memory access and the pooling allocator -- through the
shared library that wasmtime-py already loaded (``wasmtime._ffi.dll``).

These are functions of wasmtime's documented, versioned C API (``wasmtime.h``); we declare our own
ctypes prototypes for them (with plain ``c_void_p`` pointers, so passing an ``int`` costs nothing)
instead of relying on wasmtime-py's generated wrappers. The struct layouts (``wasmtime_extern_t``,
``wasmtime_instance_t``) come from wasmtime-py's generated bindings, which are generated from the
headers of the exact library it ships. :func:`check` verifies at import time that every symbol is
present, and the supported wasmtime-py range is pinned in pyproject.toml.
"""

from __future__ import annotations

import ctypes
from ctypes import (
    POINTER,
    c_bool,
    c_char_p,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

_dll = ffi.dll

ExternT = ffi.wasmtime_extern_t
InstanceT = ffi.wasmtime_instance_t
#: Offset of the union (func / memory ...) inside ``wasmtime_extern_t``.
EXTERN_OF = ffi.wasmtime_extern_t.of.offset
ByteVec = ffi.wasm_byte_vec_t


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    # dll[name] (not dll.name) builds a fresh function object, so our prototypes never change the
    # ones wasmtime-py's own wrappers use.
    f = _dll[name]
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


store_new = _fn("wasmtime_store_new", c_void_p, c_void_p, c_void_p, c_void_p)
store_context = _fn("wasmtime_store_context", c_void_p, c_void_p)
store_delete = _fn("wasmtime_store_delete", None, c_void_p)
store_limiter = _fn("wasmtime_store_limiter", None, c_void_p, c_int64, c_int64, c_int64, c_int64, c_int64)
set_fuel = _fn("wasmtime_context_set_fuel", c_void_p, c_void_p, c_uint64)
get_fuel = _fn("wasmtime_context_get_fuel", c_void_p, c_void_p, c_void_p)
set_epoch_deadline = _fn("wasmtime_context_set_epoch_deadline", None, c_void_p, c_uint64)
increment_epoch = _fn("wasmtime_engine_increment_epoch", None, c_void_p)
pre_instantiate = _fn("wasmtime_instance_pre_instantiate", c_void_p, c_void_p, c_void_p, c_void_p, c_void_p)
instance_export_get = _fn("wasmtime_instance_export_get", c_bool, c_void_p, c_void_p, c_char_p, c_size_t,
                          c_void_p)
func_call_unchecked = _fn("wasmtime_func_call_unchecked", c_void_p, c_void_p, c_void_p, c_void_p, c_size_t,
                          c_void_p)
memory_data = _fn("wasmtime_memory_data", c_void_p, c_void_p, c_void_p)
memory_data_size = _fn("wasmtime_memory_data_size", c_size_t, c_void_p, c_void_p)
trap_new = _fn("wasmtime_trap_new", c_void_p, c_char_p, c_size_t)
trap_code = _fn("wasmtime_trap_code", c_bool, c_void_p, c_void_p)
trap_message = _fn("wasm_trap_message", None, c_void_p, c_void_p)
trap_delete = _fn("wasm_trap_delete", None, c_void_p)
byte_vec_delete = _fn("wasm_byte_vec_delete", None, c_void_p)
error_message = _fn("wasmtime_error_message", None, c_void_p, c_void_p)
error_delete = _fn("wasmtime_error_delete", None, c_void_p)
linker_define_func_unchecked = _fn("wasmtime_linker_define_func_unchecked", c_void_p, c_void_p, c_char_p,
                                   c_size_t, c_char_p, c_size_t, c_void_p, c_void_p, c_void_p, c_void_p)
pooling_new = _fn("wasmtime_pooling_allocation_config_new", c_void_p)
pooling_delete = _fn("wasmtime_pooling_allocation_config_delete", None, c_void_p)
pooling_total_core_instances = _fn("wasmtime_pooling_allocation_config_total_core_instances_set", None,
                                   c_void_p, c_uint32)
pooling_total_memories = _fn("wasmtime_pooling_allocation_config_total_memories_set", None, c_void_p, c_uint32)
pooling_total_tables = _fn("wasmtime_pooling_allocation_config_total_tables_set", None, c_void_p, c_uint32)
pooling_max_memory_size = _fn("wasmtime_pooling_allocation_config_max_memory_size_set", None, c_void_p, c_size_t)
pooling_strategy_set = _fn("wasmtime_pooling_allocation_strategy_set", None, c_void_p, c_void_p)
pooling_memory_keep_resident = _fn("wasmtime_pooling_allocation_config_linear_memory_keep_resident_set", None,
                                   c_void_p, c_size_t)
pooling_table_keep_resident = _fn("wasmtime_pooling_allocation_config_table_keep_resident_set", None,
                                  c_void_p, c_size_t)

#: Signature of an unchecked host function: (env, caller, args_and_results, n) -> wasm_trap_t*.
#: Arguments and results are 16-byte ``wasmtime_val_raw_t`` slots; an i32 sits in a slot's first
#: four bytes, so as a ``c_int32`` array slot ``k`` is at index ``4 * k``.
HostCallback = ctypes.CFUNCTYPE(c_size_t, c_void_p, c_void_p, POINTER(c_int32), c_size_t)
VAL_RAW_SIZE = ctypes.sizeof(ffi.wasmtime_val_raw_t)

# Trap codes (wasmtime_trap_code_t).
TRAP_STACK_OVERFLOW = ffi.wasmtime_trap_code_enum.WASMTIME_TRAP_CODE_STACK_OVERFLOW.value
TRAP_MEMORY_OUT_OF_BOUNDS = ffi.wasmtime_trap_code_enum.WASMTIME_TRAP_CODE_MEMORY_OUT_OF_BOUNDS.value
TRAP_UNREACHABLE = ffi.wasmtime_trap_code_enum.WASMTIME_TRAP_CODE_UNREACHABLE_CODE_REACHED.value
TRAP_INTERRUPT = ffi.wasmtime_trap_code_enum.WASMTIME_TRAP_CODE_INTERRUPT.value
TRAP_OUT_OF_FUEL = ffi.wasmtime_trap_code_enum.WASMTIME_TRAP_CODE_OUT_OF_FUEL.value


def ptr(obj: Any) -> int:
    """The address behind a wasmtime-py object (Engine, Config, Linker, InstancePre, FuncType)."""
    return ctypes.cast(obj.ptr(), c_void_p).value or 0


def take_error(err: int) -> str:
    """The message of a ``wasmtime_error_t*``, which is freed."""
    vec = ByteVec()
    error_message(err, ctypes.addressof(vec))
    try:
        return ctypes.string_at(vec.data, vec.size).decode("utf-8", "replace")
    finally:
        byte_vec_delete(ctypes.addressof(vec))
        error_delete(err)


def take_trap(trap: int) -> tuple[int | None, str]:
    """``(trap code or None for host traps, message)`` of a ``wasm_trap_t*``, which is freed."""
    code = c_uint8()
    has_code = trap_code(trap, ctypes.addressof(code))
    vec = ByteVec()
    trap_message(trap, ctypes.addressof(vec))
    try:
        msg = ctypes.string_at(vec.data, vec.size).decode("utf-8", "replace").rstrip("\x00")
    finally:
        byte_vec_delete(ctypes.addressof(vec))
        trap_delete(trap)
    return (code.value if has_code else None), msg


def make_trap(message: str) -> int:
    """A new ``wasm_trap_t*`` for a host function to return (wasmtime takes ownership)."""
    raw = message.encode("utf-8", "replace")
    return trap_new(raw, len(raw)) or 0


def configure_pooling(config: wasmtime.Config, *, instances: int, max_memory: int, keep_resident: int = 0) -> None:
    """Switch ``config`` to the pooling instance allocator (not exposed by wasmtime-py's Config).

    ``keep_resident``: bytes of each memory (and table) slot that are zeroed in place when an
    instance goes, instead of being given back to the kernel (``madvise``) and faulted in again by
    the next instance; a small guest's whole memory then costs no system call per job.
    """
    pac = pooling_new()
    try:
        pooling_total_core_instances(pac, instances)
        pooling_total_memories(pac, instances)
        pooling_total_tables(pac, instances)
        pooling_max_memory_size(pac, max_memory)
        if keep_resident:
            pooling_memory_keep_resident(pac, keep_resident)
            pooling_table_keep_resident(pac, keep_resident)
        pooling_strategy_set(ptr(config), pac)
    finally:
        pooling_delete(pac)


def get_fuel_left(ctx: int) -> int | None:
    out = c_uint64()
    err = get_fuel(ctx, ctypes.addressof(out))
    if err:
        take_error(err)
        return None
    return out.value


def check() -> None:
    """Raise ImportError if this wasmtime-py lacks something the host needs."""
    for name in ("wasmtime_func_call_unchecked", "wasmtime_linker_define_func_unchecked",
                 "wasmtime_instance_pre_instantiate", "wasmtime_pooling_allocation_strategy_set"):
        try:
            _dll[name]
        except AttributeError as exc:  # pragma: no cover - depends on the installed wheel
            raise ImportError(f"wasmtime-py {wasmtime_version()} lacks C API function {name}; "
                              "install a wasmtime version in the range pinned by warpmesh") from exc


def wasmtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wasmtime")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


check()

__all__ = ["EXTERN_OF", "VAL_RAW_SIZE", "ExternT", "HostCallback", "InstanceT", "c_uint32"]
