"""The recursive directory fold (the caos ``fold`` example), as isolates and in plain Python.

``fold(in, post)`` folds a tree bottom-up: each child is folded, the results are gathered into a
tree under the children's names, and ``post(in, children)`` combines them. As isolates, each
directory is one ``fold.wasm`` frame whose children are folded through a single ``run_many``; files
go straight to ``post`` (no frame). The bundled visitor ``filecount.wasm`` counts files and bytes per
subtree; :func:`python_fold` computes the same counts (and the same result bytes) by walking the
directory directly.

Directory import (:func:`import_dir`) stores regular files as blobs of their contents and symbolic
links as blobs of their target path (links are never followed, like git), and refuses other file
types (devices, sockets, FIFOs) with an error naming the path.
"""

from __future__ import annotations

import builtins
import os
import stat as stat_mod
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from warpmesh.errors import WarpmeshError
from warpmesh.workers.guests import guest_bytes
from warpmesh.workers.ids import Kind, Ref
from warpmesh.workers.request import Limits
from warpmesh.workers.runner import Runner, RunResult
from warpmesh.workers.store import Store
from warpmesh.workers.tree import TreeEntry

_COUNTS = struct.Struct("<QQ")


class Counts(NamedTuple):
    """What the filecount visitor computes for a subtree."""

    files: int
    bytes: int

    def to_blob(self) -> builtins.bytes:  # ``bytes`` here is the field
        return _COUNTS.pack(self.files, self.bytes)

    @classmethod
    def from_blob(cls, data: builtins.bytes) -> Counts:
        if len(data) != _COUNTS.size:
            raise ValueError(f"a filecount result is {_COUNTS.size} bytes, got {len(data)}")
        return cls(*_COUNTS.unpack(data))


class FoldError(WarpmeshError):
    """The directory cannot be folded (unreadable entry, unsupported file type ...)."""


def make_fixture_tree(root: str | os.PathLike[str], *, depth: int = 3, dirs: int = 3, files: int = 3) -> Path:
    """Create the caos fold-bench fixture: ``files`` files and ``dirs`` subdirectories per directory,
    ``depth`` levels below the root (3/3/3 gives 40 directories + 120 files = 160 nodes). Each file
    holds its own relative path, so no two subtrees are alike (the memoization worst case)."""
    root = Path(root)

    def make(d: Path, rel: str, level: int) -> None:
        d.mkdir(parents=True, exist_ok=True)
        for f in range(files):
            (d / f"file{f}.txt").write_text(f"{rel}/file{f}.txt\n")
        if level < depth:
            for k in range(dirs):
                make(d / f"dir{k}", f"{rel}/dir{k}", level + 1)

    make(root, ".", 0)
    return root


def _entry_kind(path: Path, st: os.stat_result) -> str:
    if stat_mod.S_ISLNK(st.st_mode):
        return "link"
    if stat_mod.S_ISDIR(st.st_mode):
        return "dir"
    if stat_mod.S_ISREG(st.st_mode):
        return "file"
    raise FoldError(f"{path}: unsupported file type (only files, directories and symlinks can be folded)")


def _leaf_bytes(path: Path, kind: str) -> bytes:
    if kind == "link":
        return os.fsencode(os.readlink(path))
    return path.read_bytes()


def _children(path: Path) -> list[tuple[str, Path, os.stat_result]]:
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise FoldError(f"{path}: cannot list directory: {exc.strerror}") from None
    out = []
    for name in names:
        child = path / name
        try:
            st = child.lstat()
        except OSError as exc:
            raise FoldError(f"{child}: {exc.strerror}") from None
        out.append((name, child, st))
    return out


def import_dir(store: Store, root: str | os.PathLike[str],
               progress: Callable[[int], None] | None = None) -> Ref:
    """Store a directory (or a single file) as a tree (or blob); return its ref."""
    root = Path(root)
    try:
        st = root.lstat()
    except OSError as exc:
        raise FoldError(f"{root}: {exc.strerror}") from None
    count = [0]

    def visit(path: Path, st: os.stat_result) -> Ref:
        kind = _entry_kind(path, st)
        count[0] += 1
        if progress is not None and count[0] % 64 == 0:
            progress(count[0])
        if kind != "dir":
            try:
                return Ref(Kind.BLOB, store.put_blob(_leaf_bytes(path, kind)))
            except OSError as exc:
                raise FoldError(f"{path}: cannot read: {exc.strerror}") from None
        entries = []
        for name, child, cst in _children(path):
            ref = visit(child, cst)
            entries.append(TreeEntry(name, ref.kind, ref.id))
        return Ref(Kind.TREE, store.put_tree(entries))

    ref = visit(root, st)
    if progress is not None:
        progress(count[0])
    return ref


@dataclass(frozen=True, slots=True)
class PythonFold:
    """The plain-Python fold's answer: counts for the root and for every subtree by relative path."""

    total: Counts
    subtrees: dict[str, Counts]


def python_fold(root: str | os.PathLike[str]) -> PythonFold:
    """Count files and bytes per subtree by walking the directory (same rules as :func:`import_dir`)."""
    root = Path(root)
    subtrees: dict[str, Counts] = {}

    def visit(path: Path, st: os.stat_result, rel: str) -> Counts:
        kind = _entry_kind(path, st)
        if kind == "link":
            c = Counts(1, len(os.fsencode(os.readlink(path))))
        elif kind == "file":
            c = Counts(1, st.st_size)
        else:
            files = size = 0
            for name, child, cst in _children(path):
                sub = visit(child, cst, f"{rel}/{name}" if rel else name)
                files += sub.files
                size += sub.bytes
            c = Counts(files, size)
        subtrees[rel or "."] = c
        return c

    try:
        st = root.lstat()
    except OSError as exc:
        raise FoldError(f"{root}: {exc.strerror}") from None
    total = visit(root, st, "")
    return PythonFold(total, subtrees)


@dataclass(frozen=True, slots=True)
class FoldModules:
    """The ids of the fold frame module and the visitor module in a store."""

    fold: bytes
    post: bytes


def install_fold(runner: Runner, visitor: bytes | None = None) -> FoldModules:
    """Store fold.wasm and the visitor (default: filecount.wasm); return their ids."""
    fold_id = runner.put_module(guest_bytes("fold"))
    post_id = runner.put_module(visitor if visitor is not None else guest_bytes("filecount"))
    return FoldModules(fold_id, post_id)


def wasm_fold(runner: Runner, tree: Ref, modules: FoldModules | None = None, *, salt: bytes | str = b"",
              limits: Limits | None = None) -> RunResult:
    """Fold ``tree`` with isolates: ``fold(in=tree, post=<visitor module>)``."""
    mods = modules or install_fold(runner)
    return runner.run(mods.fold, {"in": tree, "post": Ref(Kind.BLOB, mods.post)}, salt=salt, limits=limits)


def subtree_counts(runner: Runner, tree: Ref, modules: FoldModules, *, salt: bytes | str = b"",
                   limits: Limits | None = None) -> dict[str, Counts]:
    """Per-subtree counts of an isolate fold already run with the same salt and limits.

    Each subtree's result is the memoized result of its own request, so this re-asks each one (all
    memo hits) and returns counts by relative path, like :attr:`PythonFold.subtrees`.
    """
    store = runner.store
    post = Ref(Kind.BLOB, modules.post)
    empty = Ref(Kind.TREE, store.put_tree(()))
    out: dict[str, Counts] = {}

    def visit(ref: Ref, rel: str) -> None:
        if ref.kind is Kind.TREE:
            r = runner.run(modules.fold, {"in": ref, "post": post}, salt=salt, limits=limits)
            for e in store.get_tree(ref.id):
                visit(e.ref, f"{rel}/{e.name}" if rel else e.name)
        else:
            r = runner.run(modules.post, {"in": ref, "children": empty}, salt=salt, limits=limits)
        out[rel or "."] = Counts.from_blob(store.get_blob(r.ref.id))

    visit(tree, "")
    return out
