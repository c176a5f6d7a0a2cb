"""Seed sweeps: run a workload over many seeds, collect reports, and name the replay command.

A workload is a function ``run(seed, **params) -> SimReport``. Everything it does must follow from
the seed (see :mod:`warpmesh.sim.loop` for the rules), so a failing seed is reproduced by running
that one seed again, with the command in :attr:`SimReport.replay`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SimReport:
    """The outcome of one simulated run."""

    workload: str
    seed: int
    params: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: A digest of the run's observable history: equal seeds must give equal digests.
    trace: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def replay(self) -> str:
        return replay_command(self.workload, self.seed, self.params)

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "seed": self.seed,
            "ok": self.ok,
            "failures": self.failures,
            "metrics": self.metrics,
            "trace": self.trace,
            "replay": self.replay,
        }


def replay_command(workload: str, seed: int, params: dict[str, Any]) -> str:
    """The one command that replays exactly this run."""
    parts = ["warpmesh", "sim", workload, "--seed", str(seed)]
    for key, value in sorted(params.items()):
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if value:
                parts.append(flag)
        else:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def sweep(
    run: Callable[[int], SimReport],
    seeds: Iterable[int],
    *,
    on_report: Callable[[SimReport], None] | None = None,
    fail_fast: bool = False,
) -> list[SimReport]:
    """Run ``run(seed)`` for each seed; a crash inside a run is reported as that seed's failure."""
    reports: list[SimReport] = []
    for seed in seeds:
        report = run(seed)
        reports.append(report)
        if on_report is not None:
            on_report(report)
        if fail_fast and not report.ok:
            break
    return reports
