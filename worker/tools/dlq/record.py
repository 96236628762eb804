"""One dead-letter record as the tools see it: the Kafka record and what our headers say."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.dlq import PREFIX, Header, header_map

REDRIVE_COUNT = "redrive-count"


@dataclass(frozen=True, slots=True)
class DlqRecord:
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    info: dict[str, str] = field(default_factory=dict)  # our headers, decoded

    @classmethod
    def of(
        cls, partition: int, offset: int, timestamp_ms: int | None, key: bytes | None,
        value: bytes | None, headers: list[Header] | None,
    ) -> DlqRecord:
        hs = tuple((k, v or b"") for k, v in headers or [])
        return cls(partition, offset, timestamp_ms, key, value, hs, header_map(list(hs)))

    def get(self, name: str) -> str:
        return self.info.get(name, "")

    @property
    def stage(self) -> str:
        return self.get("stage")

    @property
    def source_topic(self) -> str:
        return self.get("source-topic")

    def _int(self, name: str) -> int | None:
        try:
            return int(self.get(name))
        except ValueError:
            return None

    @property
    def source_partition(self) -> int | None:
        return self._int("source-partition")

    @property
    def source_offset(self) -> int | None:
        return self._int("source-offset")

    @property
    def redrive_count(self) -> int:
        return self._int(REDRIVE_COUNT) or 0

    @property
    def truncated(self) -> bool:
        return self.get("payload-truncated") == "true"

    @property
    def source_key(self) -> tuple[str, int, int, str]:
        """Identity of the failure: the same source record failing at the same stage again
        (e.g. after a replay) is the same dead letter."""
        sp, so = self.source_partition, self.source_offset
        if sp is None or so is None:  # not written by the worker: only itself
            return (f"dlq[{self.partition}]", self.partition, self.offset, self.stage)
        return (self.source_topic, sp, so, self.stage)

    def original_headers(self) -> list[Header]:
        return [(k, v) for k, v in self.headers if not k.startswith(PREFIX)]
