"""Collects one outcome per scenario and renders the lines and the README table."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from tests.chaos.ledger import Outcome
from tests.chaos.sizes import Sizes

RESULTS: list[Outcome] = []


def record(outcome: Outcome) -> None:
    RESULTS.append(outcome)


def lines() -> list[str]:
    return [o.line() for o in RESULTS]


def markdown(sizes: Sizes) -> str:
    cpus = os.cpu_count() or 0
    head = (
        f"Latest `make chaos` ({sizes.name} sizes), {time.strftime('%Y-%m-%d')}, "
        f"{cpus} cores, Python {platform.python_version()}; load = 1-minute load average "
        "at the start and end of the scenario.\n\n"
        "| scenario | produced | delivered (unique) | duplicates | dead-lettered (by reason) "
        "| filtered | superseded | lost | wall time | load | notes |\n"
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|\n"
    )
    rows = []
    for o in RESULTS:
        dup = f"{o.duplicates}" + (f" (+{o.dlq_duplicates} DLQ)" if o.dlq_duplicates else "")
        dead = f"{o.dead_total:,}: {o.reasons()}" if o.dead_total else "0"
        rows.append(
            f"| {o.scenario} | {o.produced:,} | {o.delivered:,} | {dup} | "
            f"{dead} | {o.filtered} | {o.superseded} | **{len(o.lost)}** | "
            f"{o.wall_s:.0f} s | {o.load[0]:.1f}→{o.load[1]:.1f} | {'; '.join(o.all_notes)} |"
        )
    return head + "\n".join(rows) + "\n"


def write(path: Path, sizes: Sizes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(sizes))
