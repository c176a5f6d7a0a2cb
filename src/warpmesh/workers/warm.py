"""Warm boot: build a dependency cache once per *content key*, seed every job's own directory from it.

``warm_boot(recipe, workspace)`` runs the recipe's warm command (``cargo check`` ...) into a cache
directory named by what determines its content (for cargo: the lockfile's hash, ``rustc -vV``,
profile, features, target, the workspace's cargo config), so any session or peer with the same
inputs reuses it. It returns a :class:`~warpmesh.workers.warmcore.WarmReport` and never raises or
hangs: the tool's absence is found before anything runs, every subprocess gets what is left of the
timeout, and a timeout kills the tool's whole process group (:mod:`warpmesh.workers.subproc`).

Correctness rules, against the failures of the reference (korg SP3):

* **No shared mutable target.** A job never builds in the cache: it gets its own directory seeded
  from the snapshot (``cp -a --reflink=auto``: copy-on-write where the file system allows, else a
  plain copy; hardlinks only for recipes whose artifacts are immutable files, such as wheels).
  Concurrent jobs therefore never wait on each other's build lock.
* **Only immutable inputs are cached.** After warming, the artifacts of every *local path* package
  (the workspace's own crates) are removed from the snapshot with ``cargo clean -p``. What remains
  is keyed by registry versions and checksums, not by mtimes, so a worktree whose sources carry an
  old mtime can never be judged fresh from a sibling's artifacts (the false pass of §4.2).
* **Reuse is counted, not inferred** from a non-empty directory: a snapshot is published (renamed
  into place, ``meta.json`` last) only after the warm command succeeded, and the check jobs report
  cargo's own ``fresh`` counts.
* **Single flight.** Concurrent requests for one key (threads, or processes on one machine through
  a file lock) run one warm-up; the others wait for it while it runs.

Runtime module: subprocesses, files, locks, the wall clock.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from warpmesh.workers.subproc import CommandResult, SpawnError, run_process
from warpmesh.workers.warmcore import (
    BuildCounts,
    CacheEntry,
    WarmError,
    WarmReport,
    WarmStatus,
    WorkerConfig,
    content_key,
    gc_plan,
    parse_cargo_messages,
    sanitize_name,
)

__all__ = [
    "CargoRecipe", "GenericRecipe", "Recipe", "WarmCache", "default_warm_dir", "get_recipe", "warm_boot",
    "wheelhouse_recipe",
]


def default_warm_dir() -> Path:
    """``$WARPMESH_WARM``, else ``warm`` beside the default store in the per-user cache directory."""
    env = os.environ.get("WARPMESH_WARM")
    if env:
        return Path(env).expanduser()
    from warpmesh.workers.store import default_store_dir

    return default_store_dir().parent / "warm"


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def left(self) -> float:
        return max(self.until - time.monotonic(), 0.0)


class _Unavailable(Exception):
    """Internal: ends a warm boot as UNAVAILABLE with this reason."""


def _probe(argv: Sequence[str], cwd: Path | None, env: Mapping[str, str], budget: _Budget) -> CommandResult:
    if budget.left() <= 0:
        raise _Unavailable("timed out")
    try:
        res = run_process(argv, cwd=cwd, env=env, deadline=budget.left(), grace=0.5)
    except SpawnError as err:
        raise _Unavailable(str(err)) from None
    if res.timed_out:
        raise _Unavailable(f"timed out after {res.seconds:.1f} s running {' '.join(argv[:3])} (process group killed)")
    return res


class Recipe(Protocol):
    """How one build tool is warmed, keyed, pointed at a directory and checked."""

    # Read-only members: the recipes are frozen dataclasses.
    @property
    def name(self) -> str: ...
    @property
    def tool(self) -> str: ...
    @property
    def seed_mode(self) -> str:
        """"copy" (reflink where possible) or "hardlink" (only for immutable artifacts)."""
        ...

    def not_a_project(self, workspace: Path) -> str | None:
        """Why ``workspace`` is not a project of this recipe (None: it is)."""

    def key_inputs(self, workspace: Path, env: Mapping[str, str], budget: _Budget) -> dict[str, str | bytes]:
        """Everything that determines the warm cache's content."""

    def warm_argv(self, workspace: Path, build_dir: Path) -> list[str]:
        """The warm-up command."""

    def check_argv(self, workspace: Path, build_dir: Path) -> list[str]:
        """The check command a job runs in a worktree."""

    def build_env(self, build_dir: Path) -> dict[str, str]:
        """Environment that points a job's tool at ``build_dir``."""

    def warm_env(self, build_dir: Path) -> dict[str, str]:
        """Environment of the warm-up, building into ``build_dir``."""

    def warmed(self, result: CommandResult) -> str | None:
        """None if the warm-up left a usable cache, else why not."""

    def after_warm(self, workspace: Path, build_dir: Path, env: Mapping[str, str], budget: _Budget) -> None:
        """Drop what must not be shared (mutable, mtime-judged artifacts)."""

    def counts(self, result: CommandResult) -> BuildCounts:
        """Units rebuilt vs fresh in a check's output."""

    def isolate(self, job_root: Path, env: Mapping[str, str]) -> dict[str, str]:
        """Extra environment for a warm-seeded job, so concurrent jobs share no lock (may be empty)."""


@dataclass(frozen=True)
class CargoRecipe:
    """cargo ``check`` / ``build`` / ``test``: dependencies are cached, the workspace's crates never are."""

    mode: str = "check"
    profile: str = "dev"
    features: tuple[str, ...] = ()
    target: str | None = None
    name: str = "cargo"
    tool: str = "cargo"
    seed_mode: str = "copy"

    def __post_init__(self) -> None:
        if self.mode not in ("check", "build", "test"):
            raise WarmError(f"cargo recipe mode must be check, build or test, not {self.mode!r}")

    def not_a_project(self, workspace: Path) -> str | None:
        if not (workspace / "Cargo.toml").is_file():
            return f"{workspace} is not a cargo project (no Cargo.toml)"
        if not (workspace / "Cargo.lock").is_file():
            return (f"{workspace} has no Cargo.lock (the cache is keyed by it): "
                    f"run 'cargo generate-lockfile' there and commit it")
        return None

    def key_inputs(self, workspace: Path, env: Mapping[str, str], budget: _Budget) -> dict[str, str | bytes]:
        rustc = env.get("RUSTC") or shutil.which("rustc", path=env.get("PATH")) or "rustc"
        res = _probe([rustc, "-vV"], workspace, env, budget)
        if res.exit_code != 0:
            raise _Unavailable(f"'rustc -vV' failed: {res.stderr.strip()[-200:] or res.exit_code}")
        config = workspace / ".cargo" / "config.toml"
        return {
            "lockfile": (workspace / "Cargo.lock").read_bytes(),
            "toolchain": res.stdout,
            "profile": self.profile, "features": ",".join(sorted(self.features)),
            "target": self.target or "host", "mode": self.mode,
            "config": config.read_bytes() if config.is_file() else b"",
            "rustflags": env.get("RUSTFLAGS", ""),
        }

    def _args(self) -> list[str]:
        args = ["--message-format=json"]
        if self.profile == "release":
            args.append("--release")
        elif self.profile != "dev":
            args += ["--profile", self.profile]
        if self.features:
            args += ["--features", ",".join(self.features)]
        if self.target:
            args += ["--target", self.target]
        return args

    def warm_argv(self, workspace: Path, build_dir: Path) -> list[str]:
        return [self.tool, self.mode, *(["--no-run"] if self.mode == "test" else []), *self._args()]

    def check_argv(self, workspace: Path, build_dir: Path) -> list[str]:
        return [self.tool, self.mode, *self._args()]

    def build_env(self, build_dir: Path) -> dict[str, str]:
        return {"CARGO_TARGET_DIR": str(build_dir), "CARGO_TERM_COLOR": "never"}

    def warm_env(self, build_dir: Path) -> dict[str, str]:
        return self.build_env(build_dir)

    def warmed(self, result: CommandResult) -> str | None:
        if result.exit_code == 0:
            return None
        c = parse_cargo_messages(result.stdout)
        if c.errors_local and not c.errors_deps and result.signal is None:
            return None  # the workspace's own crates failed; the dependencies they need were built
        tail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.exit_code}"]
        return f"warm-up failed: {tail[0][:200]}"

    def after_warm(self, workspace: Path, build_dir: Path, env: Mapping[str, str], budget: _Budget) -> None:
        res = _probe([self.tool, "metadata", "--format-version", "1"], workspace, env, budget)
        if res.exit_code != 0:
            raise _Unavailable(f"'cargo metadata' failed: {res.stderr.strip()[-200:]}")
        try:
            meta = json.loads(res.stdout)
            root = Path(meta["workspace_root"]).resolve()
            local = sorted({p["name"] for p in meta["packages"] if p.get("source") is None
                            and Path(p["manifest_path"]).resolve().is_relative_to(root)})
        except (ValueError, KeyError, TypeError) as err:
            raise _Unavailable(f"unreadable 'cargo metadata' output: {err}") from None
        if local:
            argv = [self.tool, "clean", *itertools.chain.from_iterable(("-p", n) for n in local)]
            if self.profile == "release":
                argv.append("--release")
            elif self.profile != "dev":
                argv += ["--profile", self.profile]
            if self.target:
                argv += ["--target", self.target]
            res = _probe(argv, workspace, {**env, **self.build_env(build_dir)}, budget)
            if res.exit_code != 0:
                raise _Unavailable(f"'cargo clean -p' failed: {res.stderr.strip()[-200:]}")

    def counts(self, result: CommandResult) -> BuildCounts:
        return parse_cargo_messages(result.stdout)

    def isolate(self, job_root: Path, env: Mapping[str, str]) -> dict[str, str]:
        # Concurrent cargo runs serialize briefly on $CARGO_HOME's package-cache lock. A warm-seeded
        # job's lockfile was fully fetched by the warm-up, so it runs offline with a private home
        # (links to the shared registry, git checkouts and config; its own lock files): no lock is
        # shared, and offline it can never write into the shared registry.
        shared = Path(env.get("CARGO_HOME") or Path(env.get("HOME") or Path.home()) / ".cargo")
        home = job_root / "cargo-home"
        home.mkdir(exist_ok=True)
        if shared.is_dir():
            for entry in shared.iterdir():
                if not entry.name.startswith((".package-cache", ".global-cache")):
                    (home / entry.name).symlink_to(entry)
        return {"CARGO_HOME": str(home), "CARGO_NET_OFFLINE": "true"}


@dataclass(frozen=True)
class GenericRecipe:
    """Any tool: a warm command, files that key the cache, env that points the tool at a directory.

    In ``warm``, ``check`` and ``env`` values, ``{dir}`` is the build directory (the cache while
    warming, the job's own seeded copy while checking) and ``{workspace}`` the project directory.
    """

    name: str
    tool: str
    warm: tuple[str, ...]
    check: tuple[str, ...]
    #: Files whose bytes key the cache; the first must exist for a directory to be a project.
    key_files: tuple[str, ...]
    #: Environment of check jobs (``{dir}``: the job's seeded directory).
    env: Mapping[str, str] = field(default_factory=dict)
    #: Environment of the warm-up (``{dir}``: the cache being built).
    warm_env_vars: Mapping[str, str] = field(default_factory=dict)
    version: tuple[str, ...] = ("--version",)
    seed_mode: str = "copy"

    def _fill(self, argv: Sequence[str], workspace: Path, build_dir: Path) -> list[str]:
        return [a.replace("{dir}", str(build_dir)).replace("{workspace}", str(workspace)) for a in argv]

    def not_a_project(self, workspace: Path) -> str | None:
        if not (workspace / self.key_files[0]).is_file():
            return f"{workspace} is not a {self.name} project (no {self.key_files[0]})"
        return None

    def key_inputs(self, workspace: Path, env: Mapping[str, str], budget: _Budget) -> dict[str, str | bytes]:
        res = _probe([self.tool, *self.version], workspace, env, budget)
        if res.exit_code != 0:
            raise _Unavailable(f"'{self.tool} {' '.join(self.version)}' failed (exit {res.exit_code})")
        parts: dict[str, str | bytes] = {"version": res.stdout + res.stderr, "warm": "\0".join(self.warm)}
        for name in self.key_files:
            path = workspace / name
            parts[f"file:{name}"] = path.read_bytes() if path.is_file() else b"\0absent"
        return parts

    def warm_argv(self, workspace: Path, build_dir: Path) -> list[str]:
        return self._fill(self.warm, workspace, build_dir)

    def check_argv(self, workspace: Path, build_dir: Path) -> list[str]:
        return self._fill(self.check, workspace, build_dir)

    def build_env(self, build_dir: Path) -> dict[str, str]:
        return {k: v.replace("{dir}", str(build_dir)) for k, v in self.env.items()}

    def warm_env(self, build_dir: Path) -> dict[str, str]:
        return {k: v.replace("{dir}", str(build_dir)) for k, v in self.warm_env_vars.items()}

    def warmed(self, result: CommandResult) -> str | None:
        if result.exit_code == 0:
            return None
        tail = result.stderr.strip().splitlines()[-1:] or [f"exit {result.exit_code}"]
        return f"warm-up failed: {tail[0][:200]}"

    def after_warm(self, workspace: Path, build_dir: Path, env: Mapping[str, str], budget: _Budget) -> None:
        return None

    def isolate(self, job_root: Path, env: Mapping[str, str]) -> dict[str, str]:
        return {}

    def counts(self, result: CommandResult) -> BuildCounts:
        # Generic tools report no units; a tool may print "warpmesh-units: REBUILT FRESH" itself.
        c = BuildCounts()
        for line in result.stdout.splitlines():
            if line.startswith("warpmesh-units:"):
                with contextlib.suppress(ValueError, IndexError):
                    rebuilt, fresh = line.split(":", 1)[1].split()
                    c.rebuilt, c.fresh = int(rebuilt), int(fresh)
        return c


def wheelhouse_recipe(python: str | None = None) -> GenericRecipe:
    """A Python wheelhouse for test jobs: wheels built once per ``requirements.txt`` and interpreter,
    installed by each job into its own directory with no index (wheels are immutable: hardlinked)."""
    py = python or sys.executable
    return GenericRecipe(
        name="wheelhouse", tool=py, version=("--version",), key_files=("requirements.txt",),
        warm=(py, "-m", "pip", "wheel", "-q", "-r", "requirements.txt", "-w", "{dir}/wheels"),
        check=(py, "-m", "pip", "install", "-q", "--no-index", "--find-links", "{dir}/wheels",
               "--target", "{dir}/site", "-r", "requirements.txt"),
        env={"PIP_FIND_LINKS": "{dir}/wheels", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        seed_mode="hardlink",
    )


def get_recipe(name: str) -> Recipe:
    """A recipe by CLI name: ``cargo`` (check), ``cargo-build``, ``cargo-test``, ``wheelhouse``."""
    if name in ("cargo", "cargo-check"):
        return CargoRecipe()
    if name == "cargo-build":
        return CargoRecipe(mode="build")
    if name == "cargo-test":
        return CargoRecipe(mode="test")
    if name == "wheelhouse":
        return wheelhouse_recipe()
    raise WarmError(f"unknown recipe {name!r}; known: cargo, cargo-build, cargo-test, wheelhouse")


def _dir_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _copy_tree(src: Path, dst: Path, mode: str) -> str:
    """Seed ``dst`` (which must not exist) from ``src``; returns how: reflink-or-copy, hardlink, copy."""
    if mode == "hardlink":
        shutil.copytree(src, dst, symlinks=True, copy_function=os.link)
        return "hardlink"
    if sys.platform.startswith("linux") and shutil.which("cp"):
        # GNU cp clones extents where the file system can (btrfs, xfs) and copies elsewhere.
        done = subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dst)], capture_output=True)
        if done.returncode == 0:
            return "reflink-or-copy"
        shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=True)
    return "copy"


class WarmCache:
    """Warm snapshots by content key, plus per-job seeded directories, under one root.

    Layout: ``caches/<key>/data`` (the snapshot) and ``caches/<key>/meta.json`` (written last:
    its presence means complete), ``jobs/<name>-<n>/`` (one per job), ``locks/<key>.lock``.
    Nothing is created on disk until something is warmed or seeded.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_warm_dir()
        self._lock = threading.Lock()
        self._flights: dict[str, concurrent.futures.Future[WarmReport]] = {}
        self._seq = itertools.count()
        #: How many warm-ups actually ran a build here (single-flight makes this one per key).
        self.builds = 0

    # -- layout ------------------------------------------------------------------------------
    def cache_dir(self, key: str) -> Path:
        return self.root / "caches" / sanitize_name(key, limit=96)

    def is_warm(self, key: str) -> bool:
        return (self.cache_dir(key) / "meta.json").is_file()

    def keys(self) -> list[str]:
        """Keys of the complete snapshots held here."""
        base = self.root / "caches"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "meta.json").is_file())

    @contextlib.contextmanager
    def _file_lock(self, key: str, how: int, budget: _Budget | None = None) -> Iterator[bool]:
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{sanitize_name(key, limit=96)}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            got = False
            while True:
                try:
                    fcntl.flock(fd, how | fcntl.LOCK_NB)
                    got = True
                    break
                except BlockingIOError:
                    if budget is None or budget.left() <= 0:
                        break
                    time.sleep(min(0.05, budget.left()))
            yield got
        finally:
            os.close(fd)

    # -- warming -----------------------------------------------------------------------------
    def warm(self, recipe: Recipe, workspace: Path, key: str, env: Mapping[str, str], budget: _Budget) -> WarmReport:
        """Make ``key`` warm (single flight); a waiter gives up when ``budget`` runs out."""
        start = time.monotonic()
        if self.is_warm(key):
            self._touch(key)
            return WarmReport(WarmStatus.WARMED, "already warm", key, str(self.cache_dir(key) / "data"), reused=True)
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = concurrent.futures.Future()
        assert flight is not None
        if not leader:
            try:
                rep = flight.result(timeout=budget.left())
            except concurrent.futures.TimeoutError:
                return WarmReport(WarmStatus.UNAVAILABLE, "timed out waiting for another job's warm-up", key)
            return WarmReport(rep.status, rep.reason if not rep.warm else "warmed by a concurrent job", key,
                              rep.cache_dir, time.monotonic() - start, reused=rep.warm)
        try:
            rep = self._warm_locked(recipe, workspace, key, env, budget, start)
        except BaseException as err:  # never leave waiters hanging
            rep = WarmReport(WarmStatus.UNAVAILABLE, f"warm-up crashed: {err}", key)
            flight.set_result(rep)
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
        flight.set_result(rep)
        return rep

    def _warm_locked(self, recipe: Recipe, workspace: Path, key: str, env: Mapping[str, str],
                     budget: _Budget, start: float) -> WarmReport:
        with self._file_lock(key, fcntl.LOCK_EX, budget) as got:
            if not got:
                return WarmReport(WarmStatus.UNAVAILABLE, "timed out waiting for another process's warm-up", key)
            final = self.cache_dir(key)
            if self.is_warm(key):  # another process finished it while we waited
                self._touch(key)
                return WarmReport(WarmStatus.WARMED, "warmed by another process", key, str(final / "data"),
                                  time.monotonic() - start, reused=True)
            scratch = final.with_name(f"{final.name}.tmp-{os.getpid()}-{next(self._seq)}")
            shutil.rmtree(scratch, ignore_errors=True)
            data = scratch / "data"
            data.mkdir(parents=True)
            try:
                with self._lock:
                    self.builds += 1
                run_env = {**env, **recipe.warm_env(data)}
                res = _probe(recipe.warm_argv(workspace, data), workspace, run_env, budget)
                why = recipe.warmed(res)
                if why is not None:
                    raise _Unavailable(why)
                recipe.after_warm(workspace, data, env, budget)
                meta = {"key": key, "recipe": recipe.name, "workspace": str(workspace), "created": time.time(),
                        "warm_seconds": round(res.seconds, 3), "size": _dir_size(data)}
                shutil.rmtree(final, ignore_errors=True)
                (scratch / "meta.json").write_text(json.dumps(meta, sort_keys=True))
                os.replace(scratch, final)
            except _Unavailable as err:
                return WarmReport(WarmStatus.UNAVAILABLE, str(err), key, seconds=time.monotonic() - start)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            self._touch(key)
            return WarmReport(WarmStatus.WARMED, f"warmed in {time.monotonic() - start:.1f} s", key,
                              str(final / "data"), time.monotonic() - start)

    def _touch(self, key: str) -> None:
        with contextlib.suppress(OSError):
            (self.cache_dir(key) / "used").touch()

    # -- jobs --------------------------------------------------------------------------------
    def job_dir(self, name: str, *, seed_from: str | None = None, mode: str = "copy") -> tuple[Path, str]:
        """A fresh build directory for one job (``jobs/<name>-<pid>-<n>/build``), seeded from warm
        ``seed_from`` (or empty); returns it and how it was seeded. :meth:`release` removes its job."""
        jobs = self.root / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        root = jobs / f"{sanitize_name(name, limit=48)}-{os.getpid()}-{next(self._seq)}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        path = root / "build"
        if seed_from is None or not self.is_warm(seed_from):
            path.mkdir()
            return path, "empty"
        with self._file_lock(seed_from, fcntl.LOCK_SH, _Budget(30.0)):
            how = _copy_tree(self.cache_dir(seed_from) / "data", path, mode)
        self._touch(seed_from)
        return path, how

    def release(self, build_dir: Path) -> None:
        """Remove a job's directory (its build directory and anything beside it)."""
        root = build_dir.parent
        shutil.rmtree(root if root.parent == self.root / "jobs" else build_dir, ignore_errors=True)

    # -- listing and collection --------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """One dict per complete snapshot: key, recipe, size, created, last_used, workspace."""
        out = []
        for key in self.keys():
            d = self.cache_dir(key)
            try:
                meta = json.loads((d / "meta.json").read_text())
            except (OSError, ValueError):
                meta = {}
            used = d / "used"
            last = used.stat().st_mtime if used.exists() else (d / "meta.json").stat().st_mtime
            out.append({"key": key, "recipe": meta.get("recipe", "?"), "size": int(meta.get("size", 0)),
                        "created": meta.get("created"), "last_used": last, "workspace": meta.get("workspace")})
        return out

    def gc(self, *, max_bytes: int | None, max_age: float | None, now: float | None = None) -> list[str]:
        """Delete snapshots unused for ``max_age`` s, then LRU ones above ``max_bytes``; also stale
        job directories and scratch left by crashed warm-ups. Returns the deleted keys."""
        now = time.time() if now is None else now
        entries = []
        for e in self.entries():
            with self._file_lock(e["key"], fcntl.LOCK_EX) as free:
                entries.append(CacheEntry(e["key"], e["size"], e["last_used"], in_use=not free))
        doomed = gc_plan(entries, now=now, max_bytes=max_bytes, max_age=max_age)
        for key in doomed:
            with self._file_lock(key, fcntl.LOCK_EX) as free:
                if free:
                    shutil.rmtree(self.cache_dir(key), ignore_errors=True)
        for sub, age in (("caches", 3600.0), ("jobs", 86400.0)):
            base = self.root / sub
            if not base.is_dir():
                continue
            for p in base.iterdir():
                stale = (sub == "jobs" or ".tmp-" in p.name) and now - p.stat().st_mtime > age
                if stale:
                    shutil.rmtree(p, ignore_errors=True)
        return doomed


def _base_env(env: Mapping[str, str] | None) -> dict[str, str]:
    return dict(os.environ if env is None else env)


def warm_boot(recipe: Recipe, workspace: str | os.PathLike[str], *, enabled: bool = True, timeout: float = 600.0,
              cache: WarmCache | None = None, env: Mapping[str, str] | None = None) -> WarmReport:
    """Warm ``recipe``'s cache for ``workspace``; SKIPPED, WARMED or UNAVAILABLE, never raises or hangs.

    ``enabled=False`` touches nothing. ``env`` is the tool's environment (default: this process's);
    its ``PATH`` decides whether the tool exists.
    """
    start = time.monotonic()
    if not enabled:
        return WarmReport(WarmStatus.SKIPPED, "warm boot disabled (speculative off)")
    try:
        base = _base_env(env)
        if shutil.which(recipe.tool, path=base.get("PATH")) is None:
            return WarmReport(WarmStatus.UNAVAILABLE, f"{recipe.tool} not found on PATH", seconds=time.monotonic() - start)
        ws = Path(workspace).resolve()
        if not ws.is_dir():
            return WarmReport(WarmStatus.UNAVAILABLE, f"{ws} is not a directory", seconds=time.monotonic() - start)
        why = recipe.not_a_project(ws)
        if why is not None:
            return WarmReport(WarmStatus.UNAVAILABLE, why, seconds=time.monotonic() - start)
        budget = _Budget(timeout)
        key = content_key(recipe.name, recipe.key_inputs(ws, base, budget))
        cache = cache if cache is not None else WarmCache()
        return cache.warm(recipe, ws, key, base, budget)
    except _Unavailable as err:
        return WarmReport(WarmStatus.UNAVAILABLE, str(err), seconds=time.monotonic() - start)
    except Exception as err:  # never raises: a broken cache or tool is "unavailable", not a crash
        return WarmReport(WarmStatus.UNAVAILABLE, f"{type(err).__name__}: {err}", seconds=time.monotonic() - start)


@dataclass
class PreparedJob:
    """A job's own build directory and the environment that points the tool at it."""

    build_dir: Path
    env: dict[str, str]
    seeded: str
    report: WarmReport


def prepare_job(recipe: Recipe, worktree: str | os.PathLike[str], config: WorkerConfig, *,
                cache: WarmCache, name: str = "job", warm_from: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> PreparedJob:
    """Give one job its own directory: seeded from the warm snapshot when ``config.speculative`` and
    the warm-up (shared, single flight) succeeded; empty otherwise. Never a shared directory."""
    base = _base_env(env)
    report = warm_boot(recipe, warm_from or worktree, enabled=config.speculative, timeout=config.warm_timeout,
                       cache=cache, env=base)
    seed = report.key if report.warm else None
    build_dir, how = cache.job_dir(name, seed_from=seed, mode=recipe.seed_mode)
    extra = recipe.isolate(build_dir.parent, base) if how != "empty" else {}
    return PreparedJob(build_dir, {**base, **recipe.build_env(build_dir), **extra}, how, report)
