"""Run ``warpmesh ARGS...`` (normally ``node ...``) under cProfile and write the stats on exit.

    python bench/profile_node.py OUT.prof node --id peer-1 --listen 127.0.0.1:0 ...

``bench/warp_vs_peers.py --profile DIR`` starts its peer processes through this wrapper. Read the
output with ``python -m pstats OUT.prof`` (``sort cumulative``, ``stats 40``) or
``python bench/profile_node.py --show OUT.prof [N]``. The stats are written when the node stops
gracefully (``quit`` on its control channel, SIGINT or SIGTERM); a SIGKILLed node writes nothing.

With ``WARPMESH_PROFILE_CLOCK=cpu`` in the environment, times are the main thread's CPU time, not
wall time: on a loaded machine (a pool's workers busy on both cores) wall time charges a call for
the time the node waited for a core, which hides where its own CPU goes.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import sys
import time


def show(path: str, top: int = 40, sort: str = "cumulative") -> str:
    """The ``top`` entries of a profile, sorted by ``sort``, as text."""
    out = io.StringIO()
    pstats.Stats(path, stream=out).strip_dirs().sort_stats(sort).print_stats(top)
    return out.getvalue()


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--show":
        print(show(argv[1], int(argv[2]) if len(argv) > 2 else 40))
        return 0
    if len(argv) < 2:
        print("usage: profile_node.py OUT.prof WARPMESH-ARGS... | profile_node.py --show OUT.prof [N]",
              file=sys.stderr)
        return 2
    out, args = argv[0], argv[1:]
    from warpmesh.cli.app import main as warpmesh_main

    cpu = os.environ.get("WARPMESH_PROFILE_CLOCK") == "cpu"
    prof = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
    code = 0
    prof.enable()
    try:
        warpmesh_main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        prof.disable()
        prof.dump_stats(out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
