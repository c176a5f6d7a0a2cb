"""Helpers to drive the test driver guest (wat/driver.wat) with scripts of raw ABI calls."""

from __future__ import annotations

import struct

from warpmesh.workers import Runner, RunResult


def step(op: int, payload: bytes = b"") -> bytes:
    return struct.pack("<II", op, len(payload)) + payload


def raw_call(op: int, ptr: int, length: int) -> bytes:
    return step(1000, struct.pack("<III", op, ptr, length))


def raw_read(ptr: int, cap: int) -> bytes:
    return step(1001, struct.pack("<II", ptr, cap))


def parse_transcript(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        r, n = struct.unpack_from("<iI", data, pos)
        pos += 8
        out.append((r, data[pos : pos + n]))
        pos += n
    return out


def run_script(runner: Runner, driver: bytes, *steps: bytes, salt: str = "") -> list[tuple[int, bytes]]:
    res = run_script_raw(runner, driver, *steps, salt=salt)
    return parse_transcript(runner.store.get_blob(res.ref.id))


def run_script_raw(runner: Runner, driver: bytes, *steps: bytes, salt: str = "") -> RunResult:
    return runner.run(driver, {"script": b"".join(steps)}, salt=salt)
