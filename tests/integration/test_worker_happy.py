"""The worker end to end: real broker, real sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.fixture_events import expected_deliveries, valid_events
from tests.integration.worker_harness import (
    committed,
    delivered_event_ids,
    end_offsets,
    make_settings,
    produce,
    read_all,
    run_inline,
)

pytestmark = pytest.mark.integration

DATASETS = ("ds-loyalty-events", "ds-profile-customer", "ds-profile-tier")


async def test_happy_path_every_event_delivered_once_and_committed(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=3)
    dlq = kafka_topic("dlq")
    events = valid_events(600)
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in events))
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq
    )
    result = await run_inline(settings, timeout=90)
    assert result.exit_code == 0, result.error

    ids = delivered_event_ids(sandbox, DATASETS)
    expected = expected_deliveries(events, {r.family for r in settings.routes})
    assert sorted(ids) == sorted(expected)  # exact: nothing lost, no duplicate, every fan-out
    stats = sandbox.stats()
    entity_ids = [r["xdmEntity"]["_id"] for ds in DATASETS for r in sandbox.records(ds, 10_000)]
    assert len(set(entity_ids)) == len(entity_ids) == len(expected)
    assert stats is not None
    assert read_all(kafka_bootstrap, dlq, idle_s=1) == []
    assert committed(kafka_bootstrap, settings.kafka.group_id, topic, 3) == end_offsets(
        kafka_bootstrap, topic, 3
    )
