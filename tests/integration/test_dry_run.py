"""``capillary-aep run --dry-run`` against the real broker: prints, never sends, never commits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.fixture_events import expected_deliveries
from tests.integration.org_events import flat_event
from tests.integration.worker_harness import (
    ROOT,
    committed,
    env_for,
    produce,
    settings_dict,
)

pytestmark = pytest.mark.integration


def _cli(settings: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "run", *args], env=env_for(settings), cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )


def test_dry_run_prints_every_outcome_and_touches_neither_aep_nor_the_group(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any, tmp_path: Path
) -> None:
    topic = kafka_topic("in", partitions=2)
    good = [flat_event(name, org_id=150956, customer_id=60_000 + i, created_at=1_719_792_000_000)
            for i, name in enumerate(["pointsIssued", "transactionAdded", "tierUpgraded",
                                      "customerAdded"])]
    produce(kafka_bootstrap, topic, [(k, v) for _, k, v in good] + [(b"bad", b"{broken")])
    group = kafka_names.group()
    settings = settings_dict(kafka_bootstrap, sandbox, topics=[topic], group=group,
                             dlq_topic="unused-dlq")
    out = tmp_path / "dry.jsonl"
    done = _cli(settings, "--dry-run", "--output", str(out))
    assert done.returncode == 1, done.stderr  # one record would be dead-lettered
    assert "dry run: 5 records" in done.stderr and "decode/invalid-json: 1" in done.stderr

    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    sent = [r for r in rows if "message" in r]
    # Each event once per routed target it feeds (tierUpgraded: its event and the tier profile).
    families = {r["family"] for r in settings["routes"]}
    assert sorted(r["eventId"] for r in sent) == sorted(expected_deliveries(good, families))
    assert all(r["message"]["header"]["datasetId"] for r in sent)
    assert [r["deadLetter"]["errorKind"] for r in rows if "deadLetter" in r] == ["invalid-json"]
    # Nothing reached AEP, nothing was committed, no consumer group was created.
    assert sandbox.stats()["requests"]["total"] == 0
    assert committed(kafka_bootstrap, group, topic, 2) == {0: -1001, 1: -1001}
    groups = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_consumer_groups().result()
    assert not [g.group_id for g in groups.valid if g.group_id.startswith(group)]

    limited = _cli(settings, "--dry-run", "--max-records", "2", "--show-pii")
    assert limited.returncode == 0, limited.stderr
    assert "dry run: 2 records" in limited.stderr
    assert all("message" in orjson.loads(line) for line in limited.stdout.splitlines())
