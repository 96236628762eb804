"""Accepted records per dataset: kept in memory (bounded), appended to JSONL, or only counted."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from worker.sandbox.config import StoreMode


@dataclass(slots=True)
class DatasetCounts:
    accepted: int = 0
    rejected: int = 0
    stored: int = 0
    dropped: int = 0  # accepted but pushed out of memory by newer records
    duplicate_ids: int = 0
    ids: set[int] = field(default_factory=set)

    def to_json(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "stored": self.stored,
            "dropped": self.dropped,
            "distinct_ids": len(self.ids),
            "duplicate_ids": self.duplicate_ids,
        }


class RecordStore:
    """Per-dataset storage of accepted records.

    ``memory``: the newest ``max_per_dataset`` records per dataset (older ones dropped, counted);
    ``jsonl``: the same, and every accepted record appended as one line to a file;
    ``count``: nothing kept, only counts (for benchmarks).

    Records are kept as their JSON bytes, not as object trees: a hundred thousand stored dicts
    would make Python's cyclic GC rescan them over and over (it tripled the cost per message);
    bytes are not GC-tracked, and the records endpoint can join them without re-encoding.

    ``_id`` bookkeeping keeps one 64-bit hash per distinct ``_id``: enough to count distinct ids
    and duplicates, per dataset and across datasets (the Profile store dedupes across datasets).
    """

    def __init__(
        self,
        mode: StoreMode,
        max_per_dataset: int,
        jsonl_path: Path | None = None,
        track_ids: bool = True,
    ) -> None:
        self.mode = mode
        self.max_per_dataset = max_per_dataset
        self.jsonl_path = jsonl_path
        self.track_ids = track_ids
        self._records: dict[str, deque[bytes]] = {}
        self._counts: dict[str, DatasetCounts] = {}
        self._all_ids: set[int] = set()
        self._all_duplicates = 0
        self._file: IO[bytes] | None = None
        self._pending = False

    @property
    def keeps_records(self) -> bool:
        return self.mode != "count"

    def counts(self, dataset_id: str) -> DatasetCounts:
        found = self._counts.get(dataset_id)
        if found is None:
            found = self._counts[dataset_id] = DatasetCounts()
        return found

    def add(self, dataset_id: str, entity_id: Any, record: bytes | None) -> None:
        """Count an accepted message; keep ``record`` (one JSON object, as bytes)."""
        counts = self.counts(dataset_id)
        counts.accepted += 1
        if self.track_ids and isinstance(entity_id, str):
            key = hash(entity_id)
            if key in counts.ids:
                counts.duplicate_ids += 1
            else:
                counts.ids.add(key)
            if key in self._all_ids:
                self._all_duplicates += 1
            else:
                self._all_ids.add(key)
        if record is None or self.mode == "count":
            return
        if self.max_per_dataset > 0:
            kept = self._records.get(dataset_id)
            if kept is None:
                kept = self._records[dataset_id] = deque(maxlen=self.max_per_dataset)
            if len(kept) == self.max_per_dataset:
                counts.dropped += 1
            else:
                counts.stored += 1
            kept.append(record)
        else:
            counts.dropped += 1
        if self.mode == "jsonl" and self.jsonl_path is not None:
            if self._file is None:
                self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.jsonl_path.open("ab")
            self._file.write(record + b"\n")
            self._pending = True

    def reject(self, dataset_id: str) -> None:
        self.counts(dataset_id).rejected += 1

    def flush(self) -> None:
        if self._file is not None and self._pending:
            self._file.flush()
            self._pending = False

    def records(self, dataset_id: str, limit: int, offset: int = 0) -> list[bytes]:
        """Kept records (JSON objects as bytes), oldest first."""
        kept = self._records.get(dataset_id)
        if not kept:
            return []
        end = min(len(kept), offset + limit)
        return list(itertools.islice(kept, offset, end))

    def records_json(self, dataset_id: str, limit: int, offset: int = 0) -> bytes:
        """The same as one JSON array, without decoding anything."""
        return b"[" + b",".join(self.records(dataset_id, limit, offset)) + b"]"

    def stats(self) -> dict[str, Any]:
        return {
            "datasets": {ds: c.to_json() for ds, c in sorted(self._counts.items())},
            "all_datasets": {
                "distinct_ids": len(self._all_ids),
                "duplicate_ids": self._all_duplicates,
            },
        }

    def reset(self) -> None:
        self._records.clear()
        self._counts.clear()
        self._all_ids.clear()
        self._all_duplicates = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
