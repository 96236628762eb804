"""Delivery receipts (``[receipts]``) and ``capillary-aep trace``: real broker, real sandbox."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from tests.integration.fixture_events import (
    expected_deliveries,
    invalid_schema_events,
    valid_events,
)
from tests.integration.tool_helpers import cli_process
from tests.integration.worker_harness import (
    committed,
    end_offsets,
    make_settings,
    produce,
    read_all,
    run_inline,
    settings_dict,
)
from worker.config import Settings
from worker.events import decode
from worker.mapping import DEFAULT_FAMILIES
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


# -- capillary-aep trace ----------------------------------------------------------------------

EMAIL = "jane.roe@example.com"
PHONE = "919812345678"


def _unroutable(event_id: str) -> bytes:
    """An event name no route takes (dead-lettered at validate), carrying an email and a phone."""
    return orjson.dumps({
        "eventName": "badgeEarned", "eventId": event_id, "orgId": 1655,
        "createdAt": 1719999999123, "data": {"customerIdentifiers": {
            "customerId": 4242, "instore": {"email": EMAIL, "mobile": PHONE}}},
    })


async def test_trace_finds_a_delivered_event_and_a_dead_lettered_one(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq")
    receipts_topic = kafka_topic("receipts", partitions=3)
    events = valid_events(40)
    dead_id = f"badge-{uuid.uuid4()}"
    records: list[tuple[bytes | None, bytes | None]] = [(k, v) for _, k, v in events]
    records.insert(7, (b"cust-x", _unroutable(dead_id)))
    produce(kafka_bootstrap, topic, records)
    raw = settings_dict(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        receipts={"enabled": True, "topic": receipts_topic},
    )
    settings = Settings(**raw)
    result = await run_inline(settings, timeout=120)
    assert result.exit_code == 0, result.error

    # A fanned-out event (tierUpgraded: an ExperienceEvent and the tier profile): both targets.
    routed = {r.family: r.name for r in settings.routes}
    fanned = next(
        (eid, v) for eid, _, v in events
        if sum(f in routed for f in DEFAULT_FAMILIES[decode(v).name]) == 2
    )
    event_id, value = fanned
    want_targets = sorted(routed[f] for f in DEFAULT_FAMILIES[decode(value).name] if f in routed)
    done = cli_process(raw, "trace", event_id, "--json")
    assert done.returncode == 0, done.stderr
    doc = orjson.loads(done.stdout)
    assert doc["found"] is True and doc["dead_letters"] == []
    assert sorted(r["target"] for r in doc["receipts"]) == want_targets
    stored_ids = {
        rec["xdmEntity"]["_id"]: rec["xactionId"]
        for ds in DATASETS for rec in sandbox.records(ds, limit=10_000)
    }
    for r in doc["receipts"]:
        assert r["eventId"] == event_id and stored_ids[r["_id"]] == r["xactionId"]
        assert r["topic"] == topic
    table = cli_process(raw, "trace", event_id)
    assert table.returncode == 0, table.stderr
    for target in want_targets:
        assert target in table.stdout

    # The dead-lettered event: its DLQ entry, PII masked unless --show-pii.
    dead = cli_process(raw, "trace", dead_id, "--json")
    assert dead.returncode == 0, dead.stderr
    ddoc = orjson.loads(dead.stdout)
    assert ddoc["receipts"] == [] and len(ddoc["dead_letters"]) == 1
    entry = ddoc["dead_letters"][0]
    assert entry["stage"] == "validate" and entry["error_kind"] == "unknown-event"
    assert entry["source"] == {"topic": topic, "partition": entry["source"]["partition"],
                               "offset": entry["source"]["offset"]}
    assert EMAIL not in dead.stdout and PHONE not in dead.stdout
    assert entry["record"]["payload"]["json"]["eventId"] == dead_id
    shown = cli_process(raw, "trace", dead_id, "--show-pii", "--json")
    assert shown.returncode == 0 and EMAIL in shown.stdout and PHONE in shown.stdout
    dead_table = cli_process(raw, "trace", dead_id)
    assert dead_table.returncode == 0 and "unknown-event" in dead_table.stdout
    assert EMAIL not in dead_table.stdout

    # Nothing found: exit 1. Misuse: exit 2 with usage.
    missing = cli_process(raw, "trace", f"no-such-{uuid.uuid4()}")
    assert missing.returncode == 1 and "nothing found" in missing.stdout
    for args in ((), (event_id, "--failed-batches"), (event_id, "--since", "yesterday"),
                 (event_id, "--dataset", "ds-loyalty-events")):
        bad = cli_process(raw, "trace", *args)
        assert bad.returncode == 2, (args, bad.stdout, bad.stderr)
        assert "Usage:" in bad.stderr


async def test_trace_failed_batches_lists_the_batch_and_its_source_records(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=2)
    receipts_topic = kafka_topic("receipts", partitions=2)
    events = valid_events(30, names=("pointsIssued", "tierUpgraded"))
    victim = next(eid for eid, _, v in events if decode(v).name == "tierUpgraded")
    # DCS accepts the victim's messages (both targets), then AEP fails them asynchronously.
    sandbox.set_faults(async_fail_substring=victim, async_fail_message="bad tier for jane@x.io")
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in events))
    raw = settings_dict(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(),
        dlq_topic=kafka_topic("dlq"), receipts={"enabled": True, "topic": receipts_topic},
        aep={"platform_url": sandbox.platform_url},
    )
    result = await run_inline(Settings(**raw), timeout=120)
    assert result.exit_code == 0, result.error
    positions = {
        decode(m.value()).event_id: (m.partition(), m.offset())
        for m in read_all(kafka_bootstrap, topic, idle_s=1)
    }

    done = cli_process(raw, "trace", "--failed-batches", "--since", "PT1H", "--json")
    assert done.returncode == 0, done.stderr
    doc = orjson.loads(done.stdout)
    batches = doc["failed_batches"]
    assert sorted(b["dataset_id"] for b in batches) == ["ds-loyalty-events", "ds-profile-tier"]
    for batch in batches:
        assert batch["status"] == "failed" and len(batch["records"]) == 1
        record = batch["records"][0]
        assert record["_id"] not in {
            e["_id"] for e in sandbox.entities(batch["dataset_id"], limit=10_000)
        }  # never stored: it failed after DCS accepted it
        assert "jane@x.io" not in done.stdout  # PII in AEP's error text is masked
        assert [(s["eventId"], s["event"], s["topic"], s["partition"], s["offset"])
                for s in record["sources"]] == [
            (victim, "tierUpgraded", topic, *positions[victim])]
        assert batch["redrive"].startswith(f"capillary-aep replay --topic {topic}:")

    table = cli_process(raw, "trace", "--failed-batches", "--since", "PT1H")
    assert table.returncode == 0, table.stderr
    assert "2 failed batch(es)" in table.stdout and victim in table.stdout
    assert "capillary-aep replay" in table.stderr  # the redrive hint is a note
    clean = cli_process(raw, "trace", "--failed-batches", "--dataset", "ds-profile-customer")
    assert clean.returncode == 1 and "0 failed batch(es)" in clean.stdout


async def test_an_unwritable_receipts_topic_holds_the_commit_and_the_restart_redelivers(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, kafka_admin: Any, sandbox: Any
) -> None:
    """At-least-once receipts: AEP accepted the records but Kafka refused their receipts, so
    no offset completes; the next run re-sends them (same ``_id``) and writes the receipts."""
    topic = kafka_topic("in")
    receipts_topic = kafka_topic("receipts", config={"max.message.bytes": "64"})
    events = valid_events(20, names=("pointsIssued", "tierUpgraded"))
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in events))
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(),
        dlq_topic=kafka_topic("dlq"),
        receipts={"enabled": True, "topic": receipts_topic, "message_timeout_ms": 1000},
        shutdown={"drain_timeout_s": 2},
    )
    expected = expected_deliveries(events, {r.family for r in settings.routes})
    first = await run_inline(settings, timeout=8)  # cannot drain: stopped at the timeout
    assert first.exit_code == 0, first.error
    assert sandbox.accepted() == len(expected)  # AEP accepted every message ...
    assert committed(kafka_bootstrap, settings.kafka.group_id, topic, 1)[0] <= 0  # ... held
    m = first.metrics
    assert m.by_label(m.receipts, "result").get("failed", 0) > 0
    assert "produced" not in m.by_label(m.receipts, "result")
    assert m.registry.get_sample_value("capaep_paused", {"reason": "receipts-unavailable"}) == 1
    assert read_all(kafka_bootstrap, receipts_topic, idle_s=1) == []

    entry = ConfigEntry("max.message.bytes", "1048588",
                        incremental_operation=AlterConfigOpType.SET)
    res = ConfigResource(ConfigResource.Type.TOPIC, receipts_topic, incremental_configs=[entry])
    for fut in kafka_admin.incremental_alter_configs([res]).values():
        fut.result(timeout=30)
    second = await run_inline(settings, timeout=60)
    assert second.exit_code == 0, second.error
    assert committed(kafka_bootstrap, settings.kafka.group_id, topic, 1) == end_offsets(
        kafka_bootstrap, topic, 1
    )
    stored = Counter(
        rec["xdmEntity"]["_id"] for ds in DATASETS for rec in sandbox.records(ds, 10_000)
    )
    assert set(stored.values()) == {2}  # every message re-sent once, under the same _id
    got = _receipts(kafka_bootstrap, receipts_topic)
    assert sorted(r["_id"] for _, r, _ in got) == sorted(stored)  # one receipt each
