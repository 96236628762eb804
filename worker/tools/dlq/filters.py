"""Which dead letters a command selects (pure): every given criterion must match."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from worker.tools.dlq.record import DlqRecord


@dataclass(frozen=True, slots=True)
class RecordFilter:
    stages: frozenset[str] = frozenset()
    reason: str | None = None  # substring of the reason or error kind, any case
    kinds: frozenset[str] = frozenset()
    event_names: frozenset[str] = frozenset()
    targets: frozenset[str] = frozenset()
    source_topic: str | None = None
    source_partition: int | None = None
    source_offsets: tuple[int, int] | None = None  # inclusive
    since_ms: int | None = None  # dead-lettered at or after
    until_ms: int | None = None  # dead-lettered before

    def matches(self, rec: DlqRecord) -> bool:
        if self.stages and rec.stage not in self.stages:
            return False
        if self.kinds and rec.get("error-kind") not in self.kinds:
            return False
        if self.reason is not None:
            needle = self.reason.lower()
            if needle not in rec.get("reason").lower() and needle not in rec.get(
                "error-kind"
            ).lower():
                return False
        if self.event_names and rec.get("event-name") not in self.event_names:
            return False
        if self.targets and rec.get("target") not in self.targets:
            return False
        if self.source_topic is not None and rec.source_topic != self.source_topic:
            return False
        if self.source_partition is not None and rec.source_partition != self.source_partition:
            return False
        if self.source_offsets is not None:
            so = rec.source_offset
            if so is None or not self.source_offsets[0] <= so <= self.source_offsets[1]:
                return False
        ts = rec.timestamp_ms
        if self.since_ms is not None and (ts is None or ts < self.since_ms):
            return False
        return not (self.until_ms is not None and (ts is None or ts >= self.until_ms))

    def fingerprint(self) -> str:
        """Stable short id of the selection (a redrive job must keep the one it started with)."""
        return hashlib.sha256(repr(self._canonical()).encode()).hexdigest()[:16]

    def _canonical(self) -> tuple[object, ...]:
        return (
            sorted(self.stages), self.reason, sorted(self.kinds), sorted(self.event_names),
            sorted(self.targets), self.source_topic, self.source_partition, self.source_offsets,
            self.since_ms, self.until_ms,
        )

    def describe(self) -> str:
        parts = []
        for name, value in (
            ("stage", sorted(self.stages)), ("reason", self.reason), ("kind", sorted(self.kinds)),
            ("event", sorted(self.event_names)), ("target", sorted(self.targets)),
            ("source-topic", self.source_topic), ("source-partition", self.source_partition),
            ("source-offset", self.source_offsets),
        ):
            if value not in (None, []):
                parts.append(f"{name}={value}")
        return ", ".join(parts) or "all records"
