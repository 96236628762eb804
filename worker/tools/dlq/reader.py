"""Scanning the dead-letter topic between offsets, by assignment (never joining a group).

A scan plan fixes each partition's start and end before reading (end: the first offset at or
after ``until``, or the log end when the scan starts), so a scan finishes even while the worker
keeps dead-lettering. A partition is finished when a record at or past its end arrives or the
consumer's position reaches the end (it can stop short of it at transaction markers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from worker.tools.dlq.record import DlqRecord
from worker.tools.groups import Cluster, ToolError

STALL_S = 30.0  # no record and no position change for this long: the scan gives up


@dataclass(frozen=True, slots=True)
class ScanPlan:
    topic: str
    ranges: dict[int, tuple[int, int]]  # partition -> [start, end)

    @property
    def total(self) -> int:
        return sum(max(e - s, 0) for s, e in self.ranges.values())


def plan_scan(
    cluster: Cluster, topic: str, since_ms: int | None = None, until_ms: int | None = None
) -> ScanPlan:
    tps = cluster.partitions([topic])
    marks = cluster.watermarks(tps)
    starts = cluster.offsets_for_time(tps, since_ms) if since_ms is not None else {}
    ends = cluster.offsets_for_time(tps, until_ms) if until_ms is not None else {}
    ranges: dict[int, tuple[int, int]] = {}
    for tp in tps:
        low, high = marks[tp]
        start = starts.get(tp, low)
        start = high if start < 0 else max(start, low)
        end = ends.get(tp, high)
        end = high if end < 0 else min(end, high)
        ranges[tp[1]] = (start, max(start, end))
    return ScanPlan(topic, ranges)


def scan(
    consumer: Consumer, plan: ScanPlan, *, on_progress: Callable[[int], None] | None = None,
    fetch: int = 500, accept: Callable[[bytes | None, bytes | None], bool] | None = None,
) -> Iterator[DlqRecord]:
    """Records of the plan, in offset order per partition. ``on_progress(n)``: n more offsets
    of the plan covered (records and the gaps between them). ``accept(key, value)``: a cheap
    test on the raw bytes; records it refuses are skipped before anything is decoded."""
    position = {p: s for p, (s, e) in plan.ranges.items() if e > s}
    ends = {p: plan.ranges[p][1] for p in position}
    if not position:
        return
    consumer.incremental_assign([TopicPartition(plan.topic, p, o) for p, o in position.items()])
    open_parts = set(position)
    last_move = time.monotonic()

    def advance(p: int, to: int) -> None:
        nonlocal last_move
        to = min(to, ends[p])
        if to > position[p]:
            if on_progress is not None:
                on_progress(to - position[p])
            position[p] = to
            last_move = time.monotonic()
        if to >= ends[p] and p in open_parts:
            open_parts.discard(p)
            consumer.incremental_unassign([TopicPartition(plan.topic, p)])

    try:
        while open_parts:
            try:
                msgs = consumer.consume(fetch, 0.5)
            except KafkaException as exc:
                raise ToolError(f"reading {plan.topic} failed: {exc.args[0]}") from None
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    if err.fatal() or err.code() == KafkaError._AUTO_OFFSET_RESET:
                        raise ToolError(f"reading {plan.topic} failed: {err.str()}")
                    continue  # transient: librdkafka retries
                p = msg.partition()
                offset = msg.offset()
                if p not in open_parts or p is None or offset is None:
                    continue
                if offset >= ends[p]:
                    advance(p, ends[p])
                    continue
                if accept is not None and not accept(msg.key(), msg.value()):
                    advance(p, offset + 1)
                    continue
                ts_type, ts = msg.timestamp()
                headers = cast(list[tuple[str, bytes]] | None, msg.headers())
                yield DlqRecord.of(
                    p, offset, ts if ts_type else None, msg.key(), msg.value(), headers
                )
                advance(p, offset + 1)
            if open_parts:
                got = consumer.position([TopicPartition(plan.topic, p) for p in open_parts])
                for tp in got:
                    if tp.offset >= 0:
                        advance(tp.partition, tp.offset)
            if open_parts and time.monotonic() - last_move > STALL_S:
                left = ", ".join(f"{plan.topic}[{p}]@{position[p]}<{ends[p]}" for p in open_parts)
                raise ToolError(f"the scan made no progress for {STALL_S:.0f}s ({left}); "
                                "is the cluster reachable?")
    finally:
        if open_parts:
            consumer.incremental_unassign([TopicPartition(plan.topic, p) for p in open_parts])
