"""Delivery receipts (``[receipts]``) and ``capillary-aep trace``: real broker, real sandbox."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from tests.integration.fixture_events import expected_deliveries, invalid_schema_events, valid_events
from tests.integration.worker_harness import (
    committed,
    end_offsets,
    make_settings,
    produce,
    read_all,
    run_inline,
)
from worker.events import decode
from worker.receipts import receipt_id

pytestmark = pytest.mark.integration

DATASETS = ("ds-loyalty-events", "ds-profile-customer", "ds-profile-tier")


def _receipts(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, Any], int | None]]:
    """(key, receipt, Kafka timestamp) of every record of the receipts topic."""
    out = []
    for msg in read_all(bootstrap, topic, idle_s=1.5):
        out.append((msg.key(), orjson.loads(msg.value()), msg.timestamp()[1]))
    return out


async def test_receipts_match_the_stored_records_one_to_one(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=3)
    dlq = kafka_topic("dlq")
    receipts_topic = kafka_topic("receipts", partitions=2, config={"cleanup.policy": "delete"})
    events = valid_events(300)
    invalid = invalid_schema_events()
    records: list[tuple[bytes | None, bytes | None]] = [(k, v) for _, k, v in events]
    records += [(b"bad", v) for _, v in invalid]
    produce(kafka_bootstrap, topic, records)
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        receipts={"enabled": True, "topic": receipts_topic},
    )
    result = await run_inline(settings, timeout=120)
    assert result.exit_code == 0, result.error

    stored = {
        rec["xdmEntity"]["_id"]: (ds, rec)
        for ds in DATASETS for rec in sandbox.records(ds, limit=100_000)
    }
    expected = expected_deliveries(events, {r.family for r in settings.routes})
    assert len(stored) == len(expected)
    got = _receipts(kafka_bootstrap, receipts_topic)
    assert len(got) == len(stored)  # counts equal, and (below) one receipt per stored record
    by_id = Counter(r["_id"] for _, r, _ in got)
    assert set(by_id) == set(stored) and set(by_id.values()) == {1}
    dead_ids = {decode(v).event_id for _, v in invalid}
    assert len(read_all(kafka_bootstrap, dlq, idle_s=1)) == len(invalid)
    names = {r.name: r.dataset_id for r in settings.routes}
    offsets = {}
    for msg in read_all(kafka_bootstrap, topic, idle_s=1):
        offsets[(msg.partition(), msg.offset())] = (msg.value(), msg.timestamp()[1])
    for key, r, _ts in got:
        ds, rec = stored[r["_id"]]
        assert key == r["eventId"].encode()
        assert r["eventId"] not in dead_ids  # dead-lettered records get no receipt
        assert r["dataset"] == ds == names[r["target"]]
        assert r["xactionId"] == rec["xactionId"]
        assert r["batchId"] == rec["xactionId"].rsplit(":", 1)[0]  # xactionId = batchId:index
        assert r["topic"] == topic
        value, kafka_ts = offsets[(r["partition"], r["offset"])]
        event = decode(value)
        assert (event.event_id, event.name) == (r["eventId"], r["event"])
        assert r["_id"] == receipt_id(event.org_id, event.name, event.event_id, r["target"])
        assert r["kafkaTs"] == kafka_ts
        assert r["latencyMs"] == r["acceptedMs"] - kafka_ts >= 0
        assert abs(r["acceptedMs"] - rec["receivedTimeMs"]) < 60_000
    metrics = result.metrics
    assert metrics.by_label(metrics.receipts, "result").get("produced") == len(got)
    assert committed(kafka_bootstrap, settings.kafka.group_id, topic, 3) == end_offsets(
        kafka_bootstrap, topic, 3
    )


async def test_missing_receipts_topic_fails_start_naming_the_setting(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in")
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in valid_events(3)))
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(),
        dlq_topic=kafka_topic("dlq"),
        receipts={"enabled": True, "topic": kafka_names.topic("no-such-receipts")},
    )
    result = await run_inline(settings, timeout=60)
    assert result.exit_code == 2
    assert result.error is not None and "receipts.topic" in result.error
    assert sandbox.accepted() == 0  # nothing was delivered before the check
    assert committed(kafka_bootstrap, settings.kafka.group_id, topic, 1) == {0: -1001}
