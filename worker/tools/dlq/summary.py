"""Counts of dead letters by stage, error class, AEP status, target, event and source (pure).

A source record dead-lettered twice at the same stage (a replay, a redrive that failed the
same way) counts once: the counts answer "how many records are broken", not "how many
times". The number of such repeats is reported beside them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from worker.tools.dlq.record import DlqRecord
from worker.tools.timespec import format_ms

DIMENSIONS: dict[str, str] = {
    "stage": "stage",
    "error class": "error-class",
    "error kind": "error-kind",
    "AEP status": "aep-status",
    "target": "target",
    "event": "event-name",
    "source topic": "source-topic",
}


@dataclass(slots=True)
class Summary:
    records: int = 0  # DLQ records read (after filters)
    unique: int = 0  # distinct (source topic, partition, offset, stage)
    first_ms: int | None = None
    last_ms: int | None = None
    counts: dict[str, Counter[str]] = field(
        default_factory=lambda: {name: Counter() for name in DIMENSIONS}
    )

    @property
    def repeats(self) -> int:
        return self.records - self.unique

    def as_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "unique": self.unique,
            "repeats": self.repeats,
            "first": format_ms(self.first_ms) if self.first_ms is not None else None,
            "last": format_ms(self.last_ms) if self.last_ms is not None else None,
            "by": {name: dict(c.most_common()) for name, c in self.counts.items()},
        }


def summarize(records: Iterable[DlqRecord]) -> Summary:
    out = Summary()
    seen: set[int] = set()  # hashes of source keys: bounded memory on a large DLQ
    for rec in records:
        out.records += 1
        ts = rec.timestamp_ms
        if ts is not None:
            out.first_ms = ts if out.first_ms is None else min(out.first_ms, ts)
            out.last_ms = ts if out.last_ms is None else max(out.last_ms, ts)
        key = hash(rec.source_key)
        if key in seen:
            continue
        seen.add(key)
        out.unique += 1
        for name, header in DIMENSIONS.items():
            out.counts[name][rec.get(header) or "-"] += 1
    return out
