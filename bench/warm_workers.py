"""Warm command workers vs cold ones vs korg's shared target directory, on a real cargo workspace.

The workspace (``warpmesh.examples.cargo_workspace``) has two crates of its own and several real
dependencies (Debian's packaged crate sources: syn with "full", quote, proc-macro2, libc, memchr...),
all offline. Prints two JSON lines:

* ``warm_workers.check``: ``cargo check`` of one worktree, median seconds over ``--repeats`` runs,
  warm (a fresh directory seeded from the warm snapshot, seeding included) vs cold (an empty
  directory), with cargo's own rebuilt/fresh counts. Target: warm/cold <= 0.3.
* ``warm_workers.concurrent``: 4 worktrees (each with its own edit) checked at once. Ours: each
  worker in its own seeded directory; the peer, korg SP3's way: one shared, pre-warmed
  ``CARGO_TARGET_DIR``. Wall time vs the slowest single worker of the same run, the count of
  "Blocking waiting for file lock" lines (target 0), and whether the shared directory let a
  worktree with an old-mtime type error pass (``peer_false_pass``).

    python bench/warm_workers.py [--repeats 5] [--workers 4] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from warpmesh.examples.cargo_workspace import make_workspace, make_worktree
from warpmesh.workers.subproc import CommandResult, run_process
from warpmesh.workers.warm import CargoRecipe, WarmCache, warm_boot
from warpmesh.workers.warmcore import count_lock_waits, parse_cargo_messages

CHECK = ["cargo", "check", "--message-format=json"]


def cargo_check(worktree: Path, target: Path, *, seeded: bool = False) -> CommandResult:
    """``cargo check`` in ``worktree`` into ``target``; ``seeded``: a warm job's private, offline home."""
    env = {**os.environ, "CARGO_TARGET_DIR": str(target), "CARGO_TERM_COLOR": "never"}
    if seeded:
        env.update(CargoRecipe().isolate(target.parent, os.environ))
    return run_process(CHECK, cwd=worktree, env=env, deadline=900, capture=64 << 20)


def edit(worktree: Path, i: int) -> None:
    lib = worktree / "core" / "src" / "lib.rs"
    lib.write_text(lib.read_text() + f"\npub fn edit_{i}() -> u32 {{ {i} }}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="light dependencies, 1 repeat, 2 workers (smoke test)")
    args = ap.parse_args()
    if shutil.which("cargo") is None:
        print("bench/warm_workers.py: cargo is not installed", file=sys.stderr)
        return 1
    repeats, nworkers = (1, 2) if args.quick else (max(args.repeats, 1), args.workers)
    tmp = Path(tempfile.mkdtemp(prefix="warpmesh-warm-bench-"))
    try:
        base = make_workspace(tmp / "base", heavy=not args.quick)
        cache = WarmCache(tmp / "warm")
        t0 = time.monotonic()
        rep = warm_boot(CargoRecipe(), base, cache=cache, timeout=900)
        warm_up = time.monotonic() - t0
        if not rep.warm or rep.key is None:
            print(f"warm boot failed: {rep.reason}", file=sys.stderr)
            return 1
        wt = make_worktree(base, tmp / "wt")
        edit(wt, 0)

        cold_s, warm_s, counts = [], [], {}
        for r in range(repeats):
            res = cargo_check(wt, tmp / f"cold-{r}")
            assert res.exit_code == 0, res.stderr[-2000:]
            cold_s.append(res.seconds)
            counts["cold"] = parse_cargo_messages(res.stdout)
            start = time.monotonic()
            job, _how = cache.job_dir(f"warm-{r}", seed_from=rep.key)
            res = cargo_check(wt, job, seeded=True)
            assert res.exit_code == 0, res.stderr[-2000:]
            warm_s.append(time.monotonic() - start)
            counts["warm"] = parse_cargo_messages(res.stdout)
            cache.release(job)
            shutil.rmtree(tmp / f"cold-{r}", ignore_errors=True)
        cold, warm = statistics.median(cold_s), statistics.median(warm_s)
        print(json.dumps({
            "bench": "warm_workers.check", "ours": round(warm, 3), "peer": round(cold, 3),
            "peer_name": "cold check (empty per-worker directory)", "ratio": round(warm / cold, 3), "unit": "s",
            "runs": repeats, "target_ratio": 0.3, "warm_up_s": round(warm_up, 3),
            "warm_runs_s": [round(x, 3) for x in warm_s], "cold_runs_s": [round(x, 3) for x in cold_s],
            "warm_rebuilt": counts["warm"].rebuilt, "warm_fresh": counts["warm"].fresh,
            "warm_rebuilt_deps": len(counts["warm"].rebuilt_deps), "cold_rebuilt": counts["cold"].rebuilt,
            "cold_fresh": counts["cold"].fresh,
        }), flush=True)

        trees = []
        for i in range(nworkers):
            t = make_worktree(base, tmp / f"c{i}")
            edit(t, i + 1)
            trees.append(t)

        def concurrently(targets: list[Path], seeded: bool) -> tuple[float, list[CommandResult]]:
            results: list[Any] = [None] * len(trees)

            def one(i: int) -> None:
                results[i] = cargo_check(trees[i], targets[i], seeded=seeded)

            start = time.monotonic()
            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(trees))]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            return time.monotonic() - start, results

        ours_wall, peer_wall, ours_slowest = [], [], []
        locks: dict[str, list[int]] = {f"{who}_{what}": [] for who in ("ours", "peer") for what in ("all", "dir", "pkg")}

        def count(who: str, results: list[CommandResult]) -> None:
            for what, on in (("all", ""), ("dir", "build directory"), ("pkg", "package cache")):
                locks[f"{who}_{what}"].append(sum(count_lock_waits(x.stderr, on) for x in results))

        for r in range(repeats):
            jobs = [cache.job_dir(f"conc-{r}-{i}", seed_from=rep.key)[0] for i in range(nworkers)]
            start = time.monotonic()
            wall, results = concurrently(jobs, True)
            assert all(x.exit_code == 0 for x in results)
            ours_wall.append(time.monotonic() - start)
            ours_slowest.append(max(x.seconds for x in results))
            count("ours", results)
            for j in jobs:
                cache.release(j)
            # korg SP3: every worker shares one pre-warmed target directory.
            shared = tmp / f"shared-{r}"
            shutil.copytree(Path(rep.cache_dir or ""), shared, symlinks=True)
            wall, results = concurrently([shared] * nworkers, False)
            peer_wall.append(wall)
            count("peer", results)
            if r < repeats - 1:
                shutil.rmtree(shared, ignore_errors=True)
        # The false pass in the shared directory: an old-mtime type error after a clean sibling.
        bad = make_worktree(base, tmp / "bad", broken=True, mtime=time.time() - 30 * 86400)
        peer_false_pass = cargo_check(bad, shared).exit_code == 0
        seeded = cache.job_dir("bad", seed_from=rep.key)[0]
        ours_false_pass = cargo_check(bad, seeded, seeded=True).exit_code == 0
        ow, pw = statistics.median(ours_wall), statistics.median(peer_wall)
        print(json.dumps({
            "bench": "warm_workers.concurrent", "ours": round(ow, 3), "peer": round(pw, 3),
            "peer_name": "korg-style shared CARGO_TARGET_DIR", "ratio": round(ow / pw, 3), "unit": "s",
            "runs": repeats, "workers": nworkers, "slowest_single_s": round(statistics.median(ours_slowest), 3),
            "wall_over_slowest": round(ow / statistics.median(ours_slowest), 3),
            "lock_waits": max(locks["ours_all"]), "peer_lock_waits": max(locks["peer_all"]),
            "build_dir_lock_waits": max(locks["ours_dir"]), "peer_build_dir_lock_waits": max(locks["peer_dir"]),
            "package_cache_lock_waits": max(locks["ours_pkg"]), "peer_package_cache_lock_waits": max(locks["peer_pkg"]),
            "false_pass": ours_false_pass, "peer_false_pass": peer_false_pass,
        }), flush=True)
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
