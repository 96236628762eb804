"""Probes and metrics over HTTP, against the real broker and the AEP sandbox.

Each worker runs on its own thread (``probes.WorkerThread``); the test reads ``/livez``,
``/readyz`` and ``/metrics`` like a kubelet and Prometheus would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import structlog

from tests.integration.fixture_events import invalid_schema_events, valid_events
from tests.integration.probes import (
    Samples,
    WorkerThread,
    free_port,
    probe,
    scrape,
    value,
    wait_for,
)
from tests.integration.worker_harness import (
    committed,
    end_offsets,
    make_settings,
    produce,
    read_all,
)
from worker.dlq import header_map

pytestmark = pytest.mark.integration

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _scrape_when(port: int, condition: Callable[[Samples], bool]) -> Samples | None:
    try:
        samples = scrape(port)
    except OSError:  # not listening yet
        return None
    return samples if condition(samples) else None


def _ready(port: int) -> tuple[int, str]:
    status, body = probe(port, "/readyz")
    return status, str(body.get("reason", ""))


def test_probes_follow_the_worker_through_its_life(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=1)
    dlq = kafka_topic("dlq")
    group = kafka_names.group()
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in valid_events(20, ("pointsIssued",))))
    sandbox.set_faults(latency_ms=2000, targets=["ims"])  # a slow start: probes answer meanwhile

    def settings(port: int) -> Any:
        return make_settings(
            kafka_bootstrap, sandbox, topics=[topic], group=group, dlq_topic=dlq,
            health={"port": port, "liveness_timeout_s": 1.5},
            delivery={"blocked_probe_interval_s": 1.0},
        )

    a = WorkerThread(settings(free_port())).start()
    b: WorkerThread | None = None
    try:
        # Starting: the probe port answers at once, live but not ready.
        status, reason = wait_for(lambda: (r := _ready(a.port))[0] and r, 20, "probe port")
        assert (status, reason) == (503, "not yet a member of the consumer group")
        assert probe(a.port, "/livez")[0] == 200
        wait_for(lambda: _ready(a.port)[0] == 200, 60, "A ready after joining")
        sandbox.clear_faults()
        wait_for(lambda: value(scrape(a.port), "capaep_assigned_partitions") == 1, 10, "A: 1")

        # A second replica of the group gets no partition (one only): ready all the same.
        b = WorkerThread(settings(free_port())).start()
        wait_for(lambda: _ready(b.port)[0] == 200, 60, "B ready with no partition")
        time.sleep(1.5)  # one gauge refresh (1 s) after B's assignment
        assert value(scrape(b.port), "capaep_assigned_partitions") == 0
        assert value(scrape(a.port), "capaep_assigned_partitions") == 1
        b.stop()
        assert b.join(60).exit_code == 0
        b = None

        # A request-level 404 (unknown inlet): paused for configuration, not ready; then back.
        wait_for(lambda: value(scrape(a.port), "capaep_in_flight_records") == 0, 60, "idle")
        sandbox.set_faults(next=[{"status": 404}] * 3)
        produce(kafka_bootstrap, topic, ((k, v) for _, k, v in valid_events(5, ("pointsIssued",))))
        status, reason = wait_for(
            lambda: (r := _ready(a.port))[0] == 503 and r, 30, "not ready while blocked"
        )
        assert reason.startswith("delivery blocked: inlet capillary-inlet")
        assert value(scrape(a.port), "capaep_paused", reason="aep-blocked") == 1
        wait_for(lambda: _ready(a.port)[0] == 200, 30, "ready again once the inlet answers")

        # A wedged event loop: /livez says so (the probe server has its own thread).
        a.wedge(4.0)
        status, body = wait_for(
            lambda: (r := probe(a.port, "/livez"))[0] == 503 and r, 10, "not live when wedged"
        )
        assert "event loop blocked" in body["reason"]
        wait_for(lambda: probe(a.port, "/livez")[0] == 200, 15, "live again after the wedge")

        # Draining at shutdown: not ready (still live) until the process is gone.
        sandbox.set_faults(latency_ms=3000)
        produce(kafka_bootstrap, topic, ((k, v) for _, k, v in valid_events(5, ("pointsIssued",))))
        wait_for(lambda: value(scrape(a.port), "capaep_requests_total") > 0 and
                 value(scrape(a.port), "capaep_in_flight_records") > 0, 30, "a request in flight")
        a.stop()
        assert wait_for(
            lambda: (r := _ready(a.port))[0] == 503 and r, 10, "not ready while draining"
        ) == (503, "draining for shutdown")
        assert probe(a.port, "/livez")[0] == 200
        result = a.join(60)
        assert result.exit_code == 0, result.error
        assert probe(a.port, "/readyz")[0] == 0  # the port closes with the worker
    finally:
        for w in (a, b):
            if w is not None and w.alive():
                w.stop()
                w.join(60)
    assert committed(kafka_bootstrap, group, topic, 1) == end_offsets(kafka_bootstrap, topic, 1)
    assert sandbox.accepted("ds-loyalty-events") == 30


def test_metrics_follow_records_through_broker_and_sandbox(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq")
    group = kafka_names.group()
    good = valid_events(40, ("pointsIssued", "transactionAdded"))
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in good))
    poison = [(b"poison", b'{"eventName": "pointsIssued", '),
              (b"poison", invalid_schema_events(("pointsIssued",))[0][1])]
    produce(kafka_bootstrap, topic, poison, headers=[("traceparent", TRACEPARENT.encode())])
    sandbox.set_faults(next=[{"status": 404}] * 3)  # held back at first: lag and age show it
    port = free_port()
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=group, dlq_topic=dlq,
        health={"port": port},
        delivery={"blocked_probe_interval_s": 1.5},
        kafka={"properties": {"statistics.interval.ms": "300"}},
    )
    started = time.time()
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        w = WorkerThread(settings).start()
        try:
            held = wait_for(
                lambda: _scrape_when(
                    port, lambda m: value(m, "capaep_delivery_blocked") == 1
                    and value(m, "capaep_consumer_lag") > 0
                    and value(m, "capaep_oldest_unfinished_age_seconds") > 0,
                ),
                60, "blocked, with lag and an unfinished record",
            )
            assert value(held, "capaep_paused_partitions") == 2
            assert value(held, "capaep_requests_total", status="404") >= 1
            done = wait_for(
                lambda: _scrape_when(
                    port, lambda m: value(m, "capaep_consumer_lag") == 0
                    and value(m, "capaep_in_flight_records") == 0
                    # refreshed by the once-a-second watchdog, so it may trail in-flight
                    and value(m, "capaep_oldest_unfinished_age_seconds") == 0
                    and len([k for k in m if k[0] == "capaep_consumer_lag"]) == 2,
                ),
                90, "everything delivered, committed and reported by librdkafka",
            )
        finally:
            w.stop()
            result = w.join(60)
    assert result.exit_code == 0, result.error

    n_good, n_all = len(good), len(good) + len(poison)
    assert value(done, "capaep_records_consumed_total", topic=topic) == n_all
    # every good event went to each of its targets (fan-out), each counted once
    delivered = value(done, "capaep_records_delivered_total")
    assert delivered == sandbox.accepted() and delivered >= n_good
    points = sum(1 for _, _, v in good if b'"pointsIssued"' in v)
    assert value(done, "capaep_records_delivered_total", event="pointsIssued",
                 target="loyalty-events") == points > 0
    assert value(done, "capaep_records_dead_lettered_total", stage="decode",
                 error_class="DecodeError", error_kind="invalid-json") == 1
    assert value(done, "capaep_records_dead_lettered_total", stage="validate",
                 error_class="SchemaViolation") == 1
    assert value(done, "capaep_requests_total", status="207") >= 1
    assert value(done, "capaep_request_duration_seconds_count") == value(
        done, "capaep_requests_total"
    )
    assert value(done, "capaep_batch_records_sum") == delivered
    assert value(done, "capaep_batch_bytes_count") == value(
        done, "capaep_batches_dispatched_total"
    )
    assert value(done, "capaep_retries_total") >= 1
    for since in ("event_created", "kafka_append"):
        assert value(done, "capaep_end_to_end_seconds_count", since=since) == delivered
    # from Kafka append: seconds (held ~4.5 s by the 404s); from createdAt: the fixtures' 2024
    assert 0 < value(done, "capaep_end_to_end_seconds_sum", since="kafka_append") < 300 * delivered
    assert value(done, "capaep_end_to_end_seconds_bucket", since="event_created",
                 le="21600.0") == 0
    assert value(done, "capaep_commit_duration_seconds_count") >= 1
    assert value(done, "capaep_last_commit_timestamp_seconds") >= started
    assert value(done, "capaep_token_refreshes_total") >= 1
    assert value(done, "capaep_oldest_unfinished_age_seconds") == 0
    assert value(done, "capaep_paused_partitions") == 0
    assert committed(kafka_bootstrap, group, topic, 2) == end_offsets(kafka_bootstrap, topic, 2)

    # The traceparent of the dead-lettered records reached their log lines and DLQ records.
    dead = read_all(kafka_bootstrap, dlq, idle_s=1)
    assert len(dead) == 2
    for msg in dead:
        assert header_map(msg.headers())["trace-id"] == TRACEPARENT.split("-")[1]
        assert ("traceparent", TRACEPARENT.encode()) in msg.headers()
    lines = [e for e in logs if e["event"] == "record_dead_lettered"]
    assert len(lines) == 2
    assert {e["trace_id"] for e in lines} == {TRACEPARENT.split("-")[1]}
    assert {e["stage"] for e in lines} == {"decode", "validate"}
    assert all(e["topic"] == topic and "offset" in e for e in lines)
