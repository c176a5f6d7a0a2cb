"""A cargo workspace with real, offline dependencies, and worktrees of it (for tests, bench, docs).

Dependencies come from Debian's packaged crate sources (``librust-*-dev`` install them under
``/usr/share/cargo/registry``), used as a *directory source* that replaces crates-io in the
workspace's ``.cargo/config.toml``: registry crates, keyed by version and checksum, no network.
Where those are missing, :func:`make_workspace` generates path-dependency crates *outside* the
workspace instead (``deps="path"``).

``python -m warpmesh.examples.cargo_workspace DIR [N]`` writes a workspace and N worktrees of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

DEBIAN_REGISTRY = Path("/usr/share/cargo/registry")
#: Light dependencies (a few seconds cold) and heavy ones (syn with "full": several seconds more).
LIGHT = {"memchr": "2", "itoa": "1", "ryu": "1", "either": "1", "fnv": "1", "bitflags": "1", "smallvec": "1"}
HEAVY = {**LIGHT, "libc": "0.2", "proc-macro2": "1", "quote": "1", "syn": '{ version = "1", features = ["full"] }'}

LIB_OK = "pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n"
#: A type error: the body is a &str where an i32 is due (E0308).
LIB_BROKEN = 'pub fn add(a: i32, b: i32) -> i32 {\n    "not a number"\n}\n'


def debian_crates_available(names: list[str] | None = None) -> bool:
    """Whether Debian's crate sources hold every crate of ``names`` (default: the light set)."""
    if not DEBIAN_REGISTRY.is_dir():
        return False
    have = {p.name.rsplit("-", 1)[0] for p in DEBIAN_REGISTRY.iterdir()}
    return all(n in have for n in (names or list(LIGHT)))


def _dep_line(name: str, spec: str) -> str:
    return f"{name} = {spec}" if spec.startswith("{") else f'{name} = "{spec}"'


def make_workspace(root: str | os.PathLike[str], *, heavy: bool = False, deps: str = "auto") -> Path:
    """Write a two-crate workspace (``app`` -> ``core_lib`` -> dependencies) with its Cargo.lock."""
    ws = Path(root)
    (ws / "app" / "src").mkdir(parents=True, exist_ok=True)
    (ws / "core" / "src").mkdir(parents=True, exist_ok=True)
    chosen = HEAVY if heavy else LIGHT
    if deps == "auto":
        deps = "debian" if debian_crates_available(list(chosen)) else "path"
    (ws / "Cargo.toml").write_text('[workspace]\nmembers = ["app", "core"]\nresolver = "2"\n')
    if deps == "debian":
        (ws / ".cargo").mkdir(exist_ok=True)
        (ws / ".cargo" / "config.toml").write_text(
            '[source.crates-io]\nreplace-with = "debian"\n\n'
            f'[source.debian]\ndirectory = "{DEBIAN_REGISTRY}"\n\n[net]\noffline = true\n')
        lines = [_dep_line(n, s) for n, s in chosen.items()]
    else:
        # Generated crates beside (not inside) the workspace: shared, immutable path dependencies.
        lines = []
        outside = ws.parent / f"{ws.name}-deps"
        for i in range(8 if heavy else 4):
            crate = outside / f"dep{i}"
            (crate / "src").mkdir(parents=True, exist_ok=True)
            (crate / "Cargo.toml").write_text(f'[package]\nname = "dep{i}"\nversion = "0.1.0"\nedition = "2021"\n')
            body = "\n".join(f"pub fn f{j}(x: u64) -> u64 {{ x.wrapping_mul({j + 3}).rotate_left({j % 13}) }}"
                             for j in range(400))
            (crate / "src" / "lib.rs").write_text(body + "\n")
            lines.append(f'dep{i} = {{ path = "{crate}" }}')
    (ws / "core" / "Cargo.toml").write_text(
        '[package]\nname = "core_lib"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n'
        + "\n".join(lines) + "\n")
    (ws / "core" / "src" / "lib.rs").write_text(LIB_OK)
    (ws / "app" / "Cargo.toml").write_text(
        '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n'
        'core_lib = { path = "../core" }\n')
    (ws / "app" / "src" / "main.rs").write_text('fn main() {\n    println!("{}", core_lib::add(1, 2));\n}\n')
    subprocess.run(["cargo", "generate-lockfile", "--offline"], cwd=ws, check=True, capture_output=True)
    return ws


def make_worktree(workspace: str | os.PathLike[str], dest: str | os.PathLike[str], *, broken: bool = False,
                  mtime: float | None = None) -> Path:
    """Copy the workspace's sources (not its target) to ``dest``; ``broken`` plants a type error.

    ``mtime`` sets the (old) modification time of the edited file, as a checkout of an old commit would.
    """
    src, out = Path(workspace), Path(dest)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("target"), symlinks=True)
    lib = out / "core" / "src" / "lib.rs"
    lib.write_text(LIB_BROKEN if broken else LIB_OK)
    if mtime is not None:
        os.utime(lib, (mtime, mtime))
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print("usage: python -m warpmesh.examples.cargo_workspace DIR [WORKTREES]", file=sys.stderr)
        return 2
    ws = make_workspace(Path(argv[0]) / "base", heavy=True)
    for i in range(int(argv[1]) if len(argv) > 1 else 2):
        make_worktree(ws, Path(argv[0]) / f"wt{i}")
    print(ws)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
