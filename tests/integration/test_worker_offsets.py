"""Offsets the worker did not expect: a committed offset retention overtook."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.integration.fixture_events import valid_events
from tests.integration.worker_harness import (
    committed,
    delivered_event_ids,
    make_settings,
    produce,
    run_inline,
)

pytestmark = pytest.mark.integration


def _commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    consumer.close()


@pytest.mark.parametrize("policy", ["fail", "earliest"])
async def test_out_of_range_offset_is_loud_and_follows_the_policy(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any, policy: str
) -> None:
    topic = kafka_topic("in")
    dlq = kafka_topic("dlq")
    group = kafka_names.group()
    events = valid_events(20, names=("pointsIssued",))
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in events))
    _commit(kafka_bootstrap, group, topic, 10_000)  # as if retention had deleted the log
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=group, dlq_topic=dlq,
        kafka={"offset_out_of_range": policy},
    )
    result = await run_inline(settings, timeout=60)
    assert result.metrics.total(result.metrics.offset_out_of_range) >= 1
    if policy == "fail":
        assert result.exit_code == 3
        assert result.error is not None and "out of range" in result.error
        assert delivered_event_ids(sandbox, ["ds-loyalty-events"]) == []
        assert committed(kafka_bootstrap, group, topic, 1) == {0: 10_000}, "no silent jump"
    else:
        assert result.exit_code == 0, result.error
        assert sorted(delivered_event_ids(sandbox, ["ds-loyalty-events"])) == sorted(
            e for e, _, _ in events
        )
        assert committed(kafka_bootstrap, group, topic, 1) == {0: 20}
