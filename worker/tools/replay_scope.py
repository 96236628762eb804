"""What a replay covers: which topics and partitions, and whether profile targets are in it."""

from __future__ import annotations

import click

from worker.offsets import TP
from worker.tools.groups import Cluster, ToolError

PROFILE_SKIPPED = (
    "Profile targets: the replayed offsets go to ExperienceEvent targets only; their profile "
    "updates are skipped because they may be older than what AEP holds now "
    "(--include-profile sends them too)."
)
PROFILE_INCLUDED = (
    "Profile targets included (--include-profile): replayed profile updates may overwrite "
    "newer profile data in AEP."
)


def parse_topic_specs(specs: tuple[str, ...]) -> dict[str, set[int] | None]:
    """``orders`` or ``orders:0,2`` -> {topic: partitions (None = all)}."""
    out: dict[str, set[int] | None] = {}
    for spec in specs:
        topic, _, parts = spec.partition(":")
        if not topic:
            raise click.BadParameter(
                f"{spec!r}: expected TOPIC or TOPIC:P1,P2", param_hint="--topic"
            )
        if not parts.strip():
            out[topic] = None
            continue
        try:
            chosen = {int(p) for p in parts.split(",") if p.strip()}
        except ValueError:
            raise click.BadParameter(
                f"{spec!r}: partitions must be numbers, e.g. {topic}:0,1", param_hint="--topic"
            ) from None
        if topic in out and out[topic] is None:
            continue  # the whole topic was asked for already
        out[topic] = (out.get(topic) or set()) | chosen
    return out


def select_partitions(cluster: Cluster, specs: dict[str, set[int] | None]) -> list[TP]:
    tps = cluster.partitions(specs)
    chosen: list[TP] = []
    for topic, wanted in specs.items():
        have = {p for t, p in tps if t == topic}
        if wanted is None:
            chosen.extend((topic, p) for p in sorted(have))
            continue
        unknown = sorted(wanted - have)
        if unknown:
            raise ToolError(
                f"topic {topic} has partitions {sorted(have)}; no partition {unknown}"
            )
        chosen.extend((topic, p) for p in sorted(wanted))
    return chosen
