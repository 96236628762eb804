"""Routing end to end (real broker, real sandbox): fan-out, profile ordering, multi-org, raw."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from tests.integration.org_events import flat_event
from tests.integration.worker_harness import (
    EE_SCHEMA,
    PROFILE_SCHEMA,
    committed,
    end_offsets,
    make_settings,
    produce,
    read_all,
    run_inline,
)
from worker.dlq import header_map
from worker.events import decode
from worker.mapping import xdm_id
from worker.mapping.convert import rfc3339_ms

pytestmark = pytest.mark.integration

BASE_MS = 1_719_792_000_000  # 2024-07-01, in the past as AEP wants


def _route(sandbox: Any, name: str, family: str, dataset: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "family": family, "inlet_url": sandbox.inlet_url(),
        "dataset_id": dataset, "schema_id": EE_SCHEMA if family == "experience_event"
        else PROFILE_SCHEMA, "flow_id": f"flow-{name}", **extra,
    }


def _event_ids(sandbox: Any, dataset: str, tenant: str = "_capillary") -> list[str]:
    out = []
    for rec in sandbox.records(dataset, limit=100_000):
        details = rec["xdmEntity"].get(tenant, {})
        out.append(details.get("eventId") or details.get("lastEventId"))
    return out


def _all_committed(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    return committed(bootstrap, group, topic, partitions) == end_offsets(
        bootstrap, topic, partitions
    )


async def test_fan_out_lands_in_both_datasets_and_a_rejecting_target_dead_letters_its_part(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq")
    events = [
        flat_event("pointsIssued", org_id=150956, customer_id=5_000 + i,
                   created_at=BASE_MS + i * 1000)
        for i in range(24)
    ]
    victim = decode(events[7][2])
    victim_profile_id = xdm_id(victim, "profile-points")
    sandbox.set_faults(
        message_faults=[{"contains": victim_profile_id, "status": 400, "times": None}]
    )
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in events))
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        routes=[
            _route(sandbox, "loyalty-events", "experience_event", "ds-loyalty-events",
                   events=["pointsIssued"]),
            _route(sandbox, "profile-points", "profile_points", "ds-profile-points",
                   events=["pointsIssued"]),
        ],
    )
    result = await run_inline(settings, timeout=90)
    assert result.exit_code == 0, result.error

    ids = [e for e, _, _ in events]
    assert sorted(_event_ids(sandbox, "ds-loyalty-events")) == sorted(ids)
    assert sorted(_event_ids(sandbox, "ds-profile-points")) == sorted(
        e for e in ids if e != victim.event_id
    )
    event_ids = {r["xdmEntity"]["_id"] for r in sandbox.records("ds-loyalty-events")}
    profile_ids = {r["xdmEntity"]["_id"] for r in sandbox.records("ds-profile-points")}
    assert len(event_ids) == 24 and len(profile_ids) == 23 and not event_ids & profile_ids
    assert sandbox.stats()["all_datasets"]["duplicate_ids"] == 0

    dead = read_all(kafka_bootstrap, dlq, idle_s=1)
    assert len(dead) == 1
    h = header_map(dead[0].headers())
    assert h["stage"] == "deliver" and h["target"] == "profile-points"
    assert h["aep-status"] == "400" and h["event-name"] == "pointsIssued"
    assert dead[0].value() == events[7][2]
    assert _all_committed(kafka_bootstrap, settings.kafka.group_id, topic, 2)


async def test_tier_burst_through_partial_207_failures_leaves_the_newest_tier(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any
) -> None:
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq")
    customer = 777_001
    burst = [
        flat_event(
            "tierUpgraded", org_id=50261, customer_id=customer, created_at=BASE_MS + i * 60_000,
            data={"previousTierNumber": i, "upgradedTierNumber": i + 1},
        )
        for i in range(12)
    ]
    others = [
        flat_event("tierUpgraded", org_id=50261, customer_id=800_000 + i,
                   created_at=BASE_MS + i * 1000)
        for i in range(30)
    ]
    # Every burst update gets 503s (1 or 2 times): retries reorder a burst that is in flight
    # together, so only "one in flight per identity" keeps the last write the newest.
    sandbox.set_faults(message_faults=[
        {"contains": xdm_id(decode(v), "profile-tier"), "status": 503, "times": 2 - i % 2}
        for i, (_, _, v) in enumerate(burst)
    ])
    rng = random.Random(4)
    mixed = burst + others
    rng.shuffle(mixed)
    for partition in (0, 1):  # the burst spread over both partitions, in arrival disorder
        produce(kafka_bootstrap, topic, ((k, v) for _, k, v in mixed[partition::2]),
                partition=partition)
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        kafka={"consume_batch_size": 4},
        batching={"max_messages": 5, "linger_s": 0.02},
        routes=[_route(sandbox, "profile-tier", "profile_tier", "ds-profile-tier",
                       events=["tierUpgraded"])],
    )
    result = await run_inline(settings, timeout=90)
    assert result.exit_code == 0, result.error

    writes = [
        r["xdmEntity"] for r in sandbox.records("ds-profile-tier", limit=10_000)
        if r["xdmEntity"]["_capillary"]["customerId"] == str(customer)
    ]
    stamps = [w["extSourceSystemAudit"]["lastUpdatedDate"] for w in writes]
    assert writes, "the customer's tier was written"
    assert stamps == sorted(stamps), "a profile update went backwards"
    newest = decode(burst[-1][2])
    assert stamps[-1] == rfc3339_ms(newest.created_at_ms)
    assert writes[-1]["_capillary"]["lastEventId"] == newest.event_id
    assert writes[-1]["_capillary"]["tierNumber"] == 12
    m = result.metrics
    superseded = m.by_label(m.filtered, "reason").get("superseded", 0)
    assert len(writes) + superseded == len(burst)
    assert m.total(m.retries) > 0 and sandbox.stats()["faults_injected"]
    others_written = {r["xdmEntity"]["_capillary"]["customerId"]
                      for r in sandbox.records("ds-profile-tier", limit=10_000)} - {str(customer)}
    assert len(others_written) == len(others)
    assert read_all(kafka_bootstrap, dlq, idle_s=1) == []
    assert _all_committed(kafka_bootstrap, settings.kafka.group_id, topic, 2)


async def test_two_orgs_to_two_sandboxes_with_own_credentials_and_a_third_org_filtered(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox_factory: Any
) -> None:
    first = sandbox_factory()
    second = sandbox_factory(
        org_id="SECONDORG0123456789@AdobeOrg",
        ims_clients=[{"client_id": "org-b-client", "client_secret": "org-b-secret-value"}],
    )
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq")
    by_org: dict[int, list[str]] = {100: [], 200: [], 300: []}
    records = []
    for i in range(45):
        org = (100, 200, 300)[i % 3]
        name = ("pointsIssued", "transactionAdded")[i % 2]
        event_id, key, value = flat_event(name, org_id=org, customer_id=10_000 + i,
                                          created_at=BASE_MS + i)
        by_org[org].append(event_id)
        records.append((key, value))
    produce(kafka_bootstrap, topic, records)
    events = ["pointsIssued", "transactionAdded"]
    settings = make_settings(
        kafka_bootstrap, first, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        policy={"allowed_org_ids": [100, 200]},
        routes=[
            _route(first, "org100-events", "experience_event", "ds-loyalty-events",
                   events=events, capillary_org_ids=[100]),
            {**_route(second, "org200-events", "experience_event", "ds-loyalty-events",
                      events=events, capillary_org_ids=[200],
                      ims_org_id=second.org_id, sandbox_name="org-b-prod"),
             "credentials": {"ims_url": second.ims_token_url, "client_id": second.client_id,
                             "client_secret": second.client_secret}},
        ],
    )
    result = await run_inline(settings, timeout=90)
    assert result.exit_code == 0, result.error

    assert sorted(_event_ids(first, "ds-loyalty-events")) == sorted(by_org[100])
    assert sorted(_event_ids(second, "ds-loyalty-events")) == sorted(by_org[200])
    assert {r["header"]["imsOrgId"] for r in second.records("ds-loyalty-events")} == {
        second.org_id
    }
    assert {r["sandboxName"] for r in second.records("ds-loyalty-events")} == {"org-b-prod"}
    assert first.stats()["ims"]["tokens_issued"] >= 1
    assert second.stats()["ims"]["tokens_issued"] >= 1
    m = result.metrics
    assert m.by_label(m.filtered, "reason") == {"org-not-allowed": len(by_org[300])}
    assert read_all(kafka_bootstrap, dlq, idle_s=1) == []
    assert _all_committed(kafka_bootstrap, settings.kafka.group_id, topic, 2)


async def test_raw_routes_post_source_shaped_json_to_the_single_endpoint(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox_factory: Any
) -> None:
    sandbox = sandbox_factory(raw_flows=[
        {"id": "flow-raw-events", "dataset": "ds-commerce-events"},
        {"id": "flow-raw-tier", "dataset": "ds-profile-tier"},
    ])
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq")
    txns = [flat_event("transactionAdded", org_id=150956, customer_id=30_000 + i,
                       created_at=BASE_MS + i) for i in range(30)]
    tiers = [flat_event("tierUpgraded", org_id=150956, customer_id=40_000 + i,
                        created_at=BASE_MS + i) for i in range(10)]
    refused = decode(txns[5][2]).event_id
    sandbox.set_faults(message_faults=[{"contains": refused, "status": 400, "times": None}])
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in txns + tiers))
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        delivery={"raw_concurrency": 8, "blocked_probe_interval_s": 0.3},
        routes=[
            {**_route(sandbox, "raw-events", "experience_event", "ds-commerce-events",
                      events=["transactionAdded"], format="raw"), "flow_id": "flow-raw-events"},
            {**_route(sandbox, "raw-tier", "profile_tier", "ds-profile-tier",
                      events=["tierUpgraded"], format="raw", upsert=True),
             "flow_id": "flow-raw-tier"},
        ],
    )
    result = await run_inline(settings, timeout=90)
    assert result.exit_code == 0, result.error

    stats = sandbox.stats()
    assert stats["requests"]["by_endpoint"].get("batch", 0) == 0
    assert stats["requests"]["by_endpoint"]["single"] >= len(txns) + len(tiers)
    events = sandbox.records("ds-commerce-events")
    assert sorted(_event_ids(sandbox, "ds-commerce-events")) == sorted(
        e for e, _, _ in txns if e != refused
    )
    assert {r["flowIdHeader"] for r in events} == {"flow-raw-events"}
    assert {r["operation"] for r in events} == {"create"}
    tier_records = sandbox.records("ds-profile-tier")
    assert sorted(_event_ids(sandbox, "ds-profile-tier")) == sorted(e for e, _, _ in tiers)
    assert {r["operation"] for r in tier_records} == {"merge"}
    # What went over the wire is the source shape, not a DCS XDM envelope.
    single = [q for q in sandbox.requests(limit=1000) if q.get("flowId") == "flow-raw-events"]
    assert single and all(q["path"] == "/collection/capillary-inlet" for q in single)

    dead = read_all(kafka_bootstrap, dlq, idle_s=1)
    assert len(dead) == 1
    h = header_map(dead[0].headers())
    assert (h["stage"], h["target"], h["aep-status"]) == ("deliver", "raw-events", "400")
    assert orjson.loads(dead[0].value())["eventId"] == refused
    assert _all_committed(kafka_bootstrap, settings.kafka.group_id, topic, 2)
