"""Bad input, AEP faults and an unwritable DLQ: nothing lost, nothing dead-lettered wrongly."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
import structlog

from tests.fixtures.kafka import create_topic
from tests.integration.fixture_events import (
    expected_deliveries,
    invalid_schema_events,
    valid_events,
)
from tests.integration.worker_harness import (
    committed,
    delivered_event_ids,
    end_offsets,
    make_settings,
    produce,
    read_all,
    run_inline,
)
from worker.dlq import header_map

pytestmark = pytest.mark.integration

DATASETS = ("ds-loyalty-events", "ds-profile-customer", "ds-profile-tier")
LEAK = "leak.me@example.com"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _by_offset(dlq_records: list[Any]) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for msg in dlq_records:
        h = header_map(msg.headers())
        out[int(h["source-offset"])] = msg
    return out


async def test_invalid_input_dead_lettered_with_reasons_valid_delivered(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=1, config={"max.message.bytes": "3000000"})
    dlq = kafka_topic("dlq", config={"max.message.bytes": "1048588"})
    good = valid_events(50)
    schema_bad = invalid_schema_events()
    # An invalid record carrying PII: its value must not leak into the DLQ headers.
    leaky = orjson.loads(schema_bad[0][1])
    leaky.setdefault("data", {})["leak"] = LEAK
    big = b'{"eventName": "pointsIssued", "pad": "' + b"x" * 2_000_000 + b'"'  # 2 MB, bad JSON
    poison: list[tuple[str, bytes | None]] = [
        ("invalid-json", b'{"eventName": "pointsIssued", '),
        ("invalid-utf8", b"\xff\xfe\xfa not utf-8"),
        ("not-an-object", b"[1, 2, 3]"),
        ("schema-registry-framed", b"\x00\x00\x00\x00\x07" + b"\x02\x10avro-bytes"),
        ("unknown-event", orjson.dumps({
            "eventName": "somethingNew", "eventId": "u-1", "orgId": 1, "createdAt": 1719999999123,
            "data": {"customerIdentifiers": {"customerId": 1}},
        })),
        ("big", big),
        ("leaky", orjson.dumps(leaky)),
        *[(name, value) for name, value in schema_bad],
    ]
    records: list[tuple[bytes | None, bytes | None]] = []
    expect: dict[int, str] = {}
    for i, (_eid, key, value) in enumerate(good):
        records.append((key, value))
        if i < len(poison):
            expect[len(records)] = poison[i][0]
            records.append((b"poison", poison[i][1]))
    records.append((b"tombstone", None))  # filtered by default policy
    produce(kafka_bootstrap, topic, records)

    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq
    )
    result = await run_inline(settings, timeout=90)
    assert result.exit_code == 0, result.error

    assert sorted(delivered_event_ids(sandbox, DATASETS)) == sorted(
        expected_deliveries(good, {r.family for r in settings.routes})
    )
    dead = _by_offset(read_all(kafka_bootstrap, dlq, idle_s=1))
    assert set(dead) == set(expect), "every poison record once in the DLQ, nothing else"
    originals = {i: v for i, (_, v) in enumerate(records)}
    for offset, name in expect.items():
        msg = dead[offset]
        h = header_map(msg.headers())
        assert h["source-topic"] == topic and h["source-partition"] == "0"
        assert h["stage"] in ("decode", "validate"), (name, h)
        assert h["error-class"] and h["error-kind"] and h["reason"], h
        assert h["attempt"] == "1" and h["worker-version"]
        assert msg.key() == b"poison"
        if name == "big":
            assert h["payload-truncated"] == "true"
            assert h["payload-length"] == str(len(big))
            assert h["payload-sha256"] == hashlib.sha256(big).hexdigest()
            assert big.startswith(msg.value()) and len(msg.value()) < len(big)
        else:
            assert msg.value() == originals[offset], name
        for _, hv in msg.headers():
            assert LEAK.encode() not in hv
    kinds = {expect[o]: header_map(dead[o].headers())["error-kind"] for o in expect}
    assert kinds["schema-registry-framed"] == "schema-registry-framed"
    assert kinds["invalid-json"] == "invalid-json"
    assert kinds["unknown-event"] == "unknown-event"
    assert header_map(dead[next(o for o, n in expect.items() if n == "leaky")].headers())[
        "stage"
    ] == "validate"
    assert result.metrics.total(result.metrics.filtered) == 1
    assert committed(kafka_bootstrap, settings.kafka.group_id, topic, 1) == end_offsets(
        kafka_bootstrap, topic, 1
    )


async def test_207_per_message_400_dead_lettered_503_retried_500_isolated(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq")
    events = valid_events(300, names=("pointsIssued", "transactionAdded"))
    ids = [e for e, _, _ in events]
    rejected, flaky, poison500 = ids[:5], ids[5:15], ids[15]
    sandbox.set_faults(
        message_faults=[{"contains": e, "status": 400, "times": None} for e in rejected]
        + [{"contains": e, "status": 503, "times": 2} for e in flaky]
        + [{"contains": poison500, "status": 500, "times": None}]
    )
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in events))
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        delivery={"server_error_retries": 1},
    )
    result = await run_inline(settings, timeout=120)
    assert result.exit_code == 0, result.error

    delivered = delivered_event_ids(sandbox, ["ds-loyalty-events"])
    assert sorted(delivered) == sorted(set(ids) - set(rejected) - {poison500})
    dead = read_all(kafka_bootstrap, dlq, idle_s=1)
    dead_ids = []
    for msg in dead:
        h = header_map(msg.headers())
        assert h["stage"] == "deliver" and h["target"] == "loyalty-events", h
        assert h["aep-status"] in ("400", "500")
        dead_ids.append(orjson.loads(msg.value()).get("eventId"))
    assert sorted(dead_ids) == sorted([*rejected, poison500])
    assert result.metrics.total(result.metrics.retries) > 0
    assert committed(kafka_bootstrap, settings.kafka.group_id, topic, 2) == end_offsets(
        kafka_bootstrap, topic, 2
    )


async def test_request_level_404_pauses_and_never_dead_letters(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in")
    dlq = kafka_topic("dlq")
    events = valid_events(100, names=("pointsIssued",))
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in events))
    sandbox.set_faults(next=[{"status": 404}] * 6)
    port = _free_port()
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        health={"port": port}, delivery={"blocked_probe_interval_s": 1.0},
    )
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(run_inline(settings, timeout=90))
        seen_not_ready = False
        for _ in range(100):
            await asyncio.sleep(0.1)
            if any(e["event"] == "delivery_blocked" for e in logs):
                seen_not_ready = await asyncio.to_thread(_readyz, port) == 503
                break
        result = await task
    assert result.exit_code == 0, result.error
    assert any(e["event"] == "delivery_blocked" for e in logs)
    assert any(e["event"] == "delivery_unblocked" for e in logs)
    assert seen_not_ready, "not ready while blocked"
    assert read_all(kafka_bootstrap, dlq, idle_s=1) == []
    assert sorted(delivered_event_ids(sandbox, ["ds-loyalty-events"])) == sorted(
        e for e, _, _ in events
    )


async def test_429_bursts_and_outage_pause_then_resume_without_loss(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq")
    events = valid_events(1500, names=("pointsIssued", "transactionAdded"))
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in events))
    sandbox.set_faults(
        next=[{"status": 429, "retry_after": "1"}] * 3 + [{"status": 503}] * 2,
        outage_seconds=3,
    )
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        flow={"max_in_flight_records": 200}, batching={"max_messages": 50, "linger_s": 0.05},
    )
    with structlog.testing.capture_logs() as logs:
        result = await run_inline(settings, timeout=120)
    assert result.exit_code == 0, result.error
    assert sorted(delivered_event_ids(sandbox, ["ds-loyalty-events"])) == sorted(
        e for e, _, _ in events
    )
    assert read_all(kafka_bootstrap, dlq, idle_s=1) == []
    names = [e["event"] for e in logs]
    assert "backpressure_pause" in names and "backpressure_resume" in names
    assert result.metrics.total(result.metrics.retries) >= 5


async def test_token_expiry_is_refreshed_during_a_run(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in")
    dlq = kafka_topic("dlq")
    sandbox.set_token_lifetime(1)
    sandbox.set_faults(latency_ms=150)
    events = valid_events(400, names=("pointsIssued",))
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in events))
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        batching={"max_messages": 10, "linger_s": 0.01}, delivery={"concurrency": 1},
    )
    result = await run_inline(settings, timeout=120)
    assert result.exit_code == 0, result.error
    assert sandbox.stats()["ims"]["tokens_issued"] >= 3
    assert sorted(delivered_event_ids(sandbox, ["ds-loyalty-events"])) == sorted(
        e for e, _, _ in events
    )
    assert read_all(kafka_bootstrap, dlq, idle_s=1) == []


async def test_wrong_client_secret_is_a_configuration_error(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in")
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic="dlq-x",
        aep={"client_secret": "definitely-wrong"},
    )
    result = await run_inline(settings, timeout=60)
    assert result.exit_code == 2
    assert result.error is not None and "client_secret" in result.error
    assert "definitely-wrong" not in result.error


async def test_unwritable_dlq_blocks_commit_past_poison_then_completes(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in")
    dlq = kafka_names.topic("dlq-later")  # not created yet; the broker does not auto-create
    events = valid_events(40, names=("pointsIssued",))
    records: list[tuple[bytes | None, bytes | None]] = [(k, v) for _, k, v in events[:20]]
    poison_offset = len(records)
    records.append((b"poison", b"{not json"))
    records += [(k, v) for _, k, v in events[20:]]
    produce(kafka_bootstrap, topic, records)
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq
    )
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(run_inline(settings, timeout=120))
        for _ in range(200):
            await asyncio.sleep(0.1)
            if any(e["event"] == "dlq_unavailable" for e in logs):
                break
        await asyncio.sleep(2)  # several commit ticks while the DLQ is down
        held = await asyncio.to_thread(
            committed, kafka_bootstrap, settings.kafka.group_id, topic, 1
        )
        assert held[0] <= poison_offset, "never committed past the record the DLQ lacks"
        assert not task.done()
        await asyncio.to_thread(create_topic, kafka_bootstrap, dlq)
        result = await task
    assert result.exit_code == 0, result.error
    assert any(e["event"] == "dlq_unavailable" for e in logs)
    assert any(e["event"] == "dlq_available_again" for e in logs)
    dead = read_all(kafka_bootstrap, dlq, idle_s=1)
    assert [header_map(m.headers())["source-offset"] for m in dead] == [str(poison_offset)]
    assert sorted(delivered_event_ids(sandbox, ["ds-loyalty-events"])) == sorted(
        e for e, _, _ in events
    )
    assert committed(kafka_bootstrap, settings.kafka.group_id, topic, 1) == end_offsets(
        kafka_bootstrap, topic, 1
    )
