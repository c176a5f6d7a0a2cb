#!/usr/bin/env python3
"""Build (or check) the committed guest modules from their WAT sources.

    python guests/build.py           rebuild every guests/*.wasm from guests/*.wat
    python guests/build.py --check   exit 1 if a committed .wasm differs from a fresh build

Each guest source may contain the marker ``;;@prelude``, replaced by ``abi_prelude.wat`` (the ABI
imports and small helpers shared by all guests). Compilation is wasmtime's own WAT assembler, so
building needs nothing beyond the project's Python dependencies; CI runs ``--check`` (through the
test suite) so every committed .wasm is provably built from the committed source.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PRELUDE_MARKER = ";;@prelude"


def sources() -> list[Path]:
    return sorted(p for p in HERE.glob("*.wat") if p.name != "abi_prelude.wat")


def assemble(source: Path) -> bytes:
    import wasmtime

    text = source.read_text(encoding="utf-8")
    if PRELUDE_MARKER in text:
        text = text.replace(PRELUDE_MARKER, (HERE / "abi_prelude.wat").read_text(encoding="utf-8"))
    return bytes(wasmtime.wat2wasm(text))


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for src in sources():
        wasm = assemble(src)
        out = src.with_suffix(".wasm")
        if check:
            if not out.exists() or out.read_bytes() != wasm:
                stale.append(out.name)
        elif not out.exists() or out.read_bytes() != wasm:
            out.write_bytes(wasm)
            print(f"built {out.name} ({len(wasm)} bytes)")
    if stale:
        print(f"stale guest modules: {', '.join(stale)}; run: python guests/build.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
