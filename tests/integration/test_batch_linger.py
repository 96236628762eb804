"""The batch linger is counted from the Kafka append of the record that opens the batch.

A record that waited in librdkafka before the consume call that returned it (the loop was busy
with a round or a commit) must not wait a full linger on top: its batch closes ``linger_s``
after its append. A backlog's old records open batches at the consume start, as before, so
they still gather batch-mates. The producer sets the records' (CreateTime) timestamps, which
stands in for the wait deterministically: 3 s ago with a 4 s linger, and a minute ago.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.integration.fixture_events import valid_events
from tests.integration.worker_harness import make_settings
from worker.runner import run_worker

pytestmark = pytest.mark.integration

LINGER_S = 4.0
DATASET = "ds-loyalty-events"


def _produce_at(bootstrap: str, topic: str, key: bytes, value: bytes, timestamp_ms: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    producer.produce(topic, value=value, key=key, timestamp=timestamp_ms)
    assert producer.flush(10) == 0


async def _received_ms(sandbox: Any, count: int, timeout: float) -> int:
    """receivedTimeMs of the count-th record of the dataset, once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = sandbox.records(DATASET, limit=100)
        if len(records) >= count:
            return int(records[count - 1]["receivedTimeMs"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"record {count} of {DATASET} not received within {timeout} s")


async def test_linger_counts_from_the_append_of_a_fresh_record_not_of_an_old_one(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=1)
    dlq = kafka_topic("dlq")
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        batching={"max_messages": 500, "linger_s": LINGER_S},
    )
    (warm, fresh, old) = valid_events(3, names=("transactionAdded",))
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(settings, stop=stop, install_signals=False)
    )
    try:
        # Warm-up: group joined, token fetched, connection open (not measured).
        _produce_at(kafka_bootstrap, topic, warm[1], warm[2], int(time.time() * 1000))
        await _received_ms(sandbox, 1, 60)

        # Appended 3 s ago: its batch closes ~1 s after it is consumed, not 4 s.
        produced = time.time()
        _produce_at(kafka_bootstrap, topic, fresh[1], fresh[2], int(produced * 1000) - 3000)
        waited = (await _received_ms(sandbox, 2, 30)) / 1000 - produced
        assert waited < LINGER_S - 1.5, f"fresh record waited {waited:.2f} s"

        # Appended a minute ago (a backlog): a full linger from its consume call.
        produced = time.time()
        _produce_at(kafka_bootstrap, topic, old[1], old[2], int(produced * 1000) - 60_000)
        waited = (await _received_ms(sandbox, 3, 30)) / 1000 - produced
        assert waited > LINGER_S - 0.5, f"old record waited only {waited:.2f} s"
    finally:
        stop.set()
        result = await asyncio.wait_for(task, 60)
    assert result.exit_code == 0, result.error
