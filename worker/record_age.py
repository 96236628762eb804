"""Age of the oldest unfinished record per partition, without per-record bookkeeping.

The offset tracker knows each partition's oldest unfinished offset but not its timestamp, and
keeping a timestamp per record would cost the hot path. Instead the pipeline marks the first
record of every run of one partition in a consumed batch (one tuple comparison per record).
The mark at or below the oldest unfinished offset belongs to the same consumed run, so its
Kafka timestamp is that record's, or an earlier one's when timestamps follow offsets: the age
reported is exact or slightly high, never low. That is the safe side for the alert it feeds
("oldest unfinished record approaching the topic's retention").
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

TP = tuple[str, int]
MAX_MARKS = 4096  # per partition; beyond it every other mark is dropped (coarser, still safe)


class UnfinishedAges:
    __slots__ = ("_marks",)

    def __init__(self) -> None:
        self._marks: dict[TP, deque[tuple[int, float]]] = {}

    def mark(self, tp: TP, offset: int, msg: Message) -> None:
        """The first record of a run of ``tp`` in a consumed batch."""
        ts_type, ts = msg.timestamp()
        seconds = time.time() if ts_type == TIMESTAMP_NOT_AVAILABLE else ts / 1000
        self.mark_at(tp, offset, seconds)

    def mark_at(self, tp: TP, offset: int, timestamp_s: float) -> None:
        marks = self._marks.get(tp)
        if marks is None:
            marks = self._marks[tp] = deque()
        elif marks and offset <= marks[-1][0]:
            marks.clear()  # consumed again from an earlier offset (reassigned, repositioned)
        marks.append((offset, timestamp_s))
        if len(marks) > MAX_MARKS:
            first = marks[0]
            thinned = list(marks)[2::2]
            marks.clear()
            marks.append(first)
            marks.extend(thinned)

    def ages(self, oldest: Mapping[TP, int], owned: Iterable[TP], now_s: float) -> dict[TP, float]:
        """Seconds since the timestamp of each owned partition's oldest unfinished record.

        ``oldest`` is ``OffsetTracker.oldest_pending()``. Partitions with nothing unfinished
        report 0; marks of partitions no longer owned are dropped.
        """
        owned = set(owned)
        for tp in [tp for tp in self._marks if tp not in owned]:
            del self._marks[tp]
        out: dict[TP, float] = {}
        for tp in owned:
            marks = self._marks.get(tp)
            head = oldest.get(tp)
            if head is None or not marks:
                if marks:
                    marks.clear()  # everything consumed so far is finished
                out[tp] = 0.0
                continue
            while len(marks) > 1 and marks[1][0] <= head:
                marks.popleft()
            offset, ts = marks[0]
            out[tp] = max(now_s - ts, 0.0) if offset <= head else 0.0
        return out
