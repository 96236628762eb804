"""Fast production of realistic Capillary streams for the benchmarks.

``generate_samples`` costs ~60 µs per event: too slow for a million-record backlog. A
``SamplePool`` generates a few thousand samples once and replays them: every copy gets a fresh
eventId (same length, so the value keeps its size) and its epoch-millisecond times shifted one
pool span later per round, so Capillary ``createdAt`` keeps rising (profile updates stay newer
than what was delivered, as in real traffic) and every XDM ``_id`` is new. The invalid samples
(``invalid_share``) are replayed too, at the same share.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from worker.tools.samples import generate_samples

# An epoch-millisecond value after a JSON colon (2020..2030): createdAt, timeStamp, expiryAt...
_EPOCH_MS = re.compile(rb":(\s*)(1[5-9]\d{11})(?=[.,}\]\s])")
_CREATED_AT = re.compile(rb'"createdAt":\s*(\d{13})')
_ID = object()  # placeholder for the eventId in a template


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int
    invalid: int
    mean_bytes: float


class SamplePool:
    """Templates of sample values: literal bytes, the eventId slot, epoch-ms integer slots."""

    def __init__(self, size: int, *, seed: int, invalid_share: float) -> None:
        self.templates: list[tuple[bytes, list[Any]]] = []
        invalid = 0
        total = 0
        first = last = None
        for s in generate_samples(size, seed=seed, invalid_share=invalid_share):
            invalid += not s.valid
            total += len(s.value)
            parts: list[Any] = []
            for i, chunk in enumerate(s.value.split(s.event_id.encode())):
                if i:
                    parts.append(_ID)
                pos = 0
                for m in _EPOCH_MS.finditer(chunk):
                    parts.append(chunk[pos : m.start(2)])
                    parts.append(int(m.group(2)))
                    pos = m.end(2)
                parts.append(chunk[pos:])
            self.templates.append((s.key, parts))
            created = _CREATED_AT.search(s.value)
            if created is not None:
                ms = int(created.group(1))
                first = ms if first is None else min(first, ms)
                last = ms if last is None else max(last, ms)
        self.span_ms = (last or 0) - (first or 0) + 1000
        self.stats = PoolStats(size, invalid, total / max(size, 1))
        # eventIds: a random UUID v4 prefix per pool, then a counter in the last 12 hex digits
        r = os.urandom(9).hex()
        self._id_prefix = f"{r[:8]}-{r[8:12]}-4{r[12:15]}-8{r[15:18]}-"

    def record(self, n: int) -> tuple[bytes, bytes, str]:
        """The ``n``-th record of the endless replay: (key, value, eventId)."""
        key, parts = self.templates[n % len(self.templates)]
        shift = (n // len(self.templates)) * self.span_ms
        event_id = f"{self._id_prefix}{n:012x}"
        eid = event_id.encode()
        out = [
            p if type(p) is bytes else eid if p is _ID else str(p + shift).encode() for p in parts
        ]
        return key, b"".join(out), event_id


def create_topics(
    bootstrap: str, topics: dict[str, int], config: dict[str, str] | None = None
) -> None:
    """Create ``{name: partitions}`` (LogAppendTime unless ``config`` says otherwise)."""
    conf = {"message.timestamp.type": "LogAppendTime", **(config or {})}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=p, replication_factor=1, config=conf) for t, p in topics.items()]
    )
    for fut in futures.values():
        fut.result(60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = admin.list_topics(timeout=10).topics
        if all(t in meta and len(meta[t].partitions) == p for t, p in topics.items()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topics not visible: {sorted(topics)}")


def producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": "lz4",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "acks": "all",
        }
    )


def produce_backlog(
    bootstrap: str, topic: str, pool: SamplePool, count: int, start: int = 0
) -> float:
    """Produce ``count`` records as fast as possible; returns the seconds it took."""
    p = producer(bootstrap)
    produce = p.produce
    record = pool.record
    started = time.monotonic()
    for n in range(start, start + count):
        key, value, _ = record(n)
        while True:
            try:
                produce(topic, value, key)
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(120)
    if left:
        raise RuntimeError(f"{left} records not acknowledged by the broker")
    return time.monotonic() - started


def produce_paced(
    bootstrap: str,
    topic: str,
    pool: SamplePool,
    count: int,
    rate: float | None,
    *,
    start: int = 0,
    on_tick: Callable[[int], None] | None = None,
) -> tuple[float, list[str]]:
    """Produce ``count`` records live at ``rate`` per second (None: as fast as possible), in
    10 ms ticks. Returns (seconds, eventIds produced)."""
    # Live: a short linger, so the producer adds almost nothing to the measured latency.
    p_live = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 2, "compression.type": "lz4", "acks": "all"}
    )
    ids: list[str] = []
    tick = 0.01
    started = time.monotonic()
    n = start
    end = start + count
    while n < end:
        if rate is None:
            due = end
        else:
            due = min(end, start + int((time.monotonic() - started) * rate) + 1)
        while n < due:
            key, value, event_id = pool.record(n)
            try:
                p_live.produce(topic, value, key)
            except BufferError:
                p_live.poll(0.01)
                continue
            ids.append(event_id)
            n += 1
            if rate is None and n % 1000 == 0:
                p_live.poll(0)
        p_live.poll(0)
        if on_tick is not None:
            on_tick(n - start)
        if rate is not None:
            next_at = started + (n - start + 1) / rate
            time.sleep(max(0.0, min(tick, next_at - time.monotonic())))
    left = p_live.flush(60)
    if left:
        raise RuntimeError(f"{left} live records not acknowledged by the broker")
    return time.monotonic() - started, ids
