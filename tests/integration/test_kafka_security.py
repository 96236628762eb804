"""The worker over the real broker's SASL listener (PLAIN and SCRAM), wrong credentials, and a
SASL password file rotated under a running worker.

Topics are created and records produced and read on the PLAINTEXT listener of the same
broker; only the worker (consumer, dead-letter producer, admin check) goes through SASL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from tests.integration.fixture_events import valid_events
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


def _rotate(path: Path, value: str) -> None:
    """As a Kubernetes Secret volume does: a new file swapped in atomically."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(value + "\n")
    tmp.replace(path)


def _sasl_kafka(bootstrap: str, mechanism: str, user: str, password_file: Path,
                **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap, "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism, "sasl_username": user,
        "sasl_password_file": str(password_file), **extra,
    }


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
async def test_worker_over_sasl_delivers_dead_letters_and_commits(
    kafka_bootstrap: str, kafka_sasl: Any, kafka_topic: Any, kafka_names: Any, sandbox: Any,
    tmp_path: Path, mechanism: str,
) -> None:
    topic = kafka_topic("in", partitions=2)
    dlq = kafka_topic("dlq")
    events = valid_events(20, ("pointsIssued",))
    produce(kafka_bootstrap, topic, [*((k, v) for _, k, v in events), (b"p", b"{not json")])
    secret = tmp_path / "kafka-password"
    secret.write_text(kafka_sasl.users["alice"] + "\n")
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        kafka=_sasl_kafka(kafka_sasl.bootstrap_servers, mechanism, "alice", secret),
    )
    with structlog.testing.capture_logs() as logs:
        result = await run_inline(settings, timeout=90)
    assert result.exit_code == 0, result.error
    assert sorted(delivered_event_ids(sandbox, DATASETS)) == sorted(e for e, _, _ in events)
    dead = read_all(kafka_bootstrap, dlq, idle_s=1)
    assert [header_map(m.headers())["error-kind"] for m in dead] == ["invalid-json"]
    assert committed(kafka_bootstrap, settings.kafka.group_id, topic, 2) == end_offsets(
        kafka_bootstrap, topic, 2
    )
    assert not any(e["event"] == "kafka_auth_failed" for e in logs)


async def test_wrong_sasl_password_stops_with_a_clear_configuration_error(
    kafka_bootstrap: str, kafka_sasl: Any, kafka_topic: Any, kafka_names: Any, sandbox: Any,
    tmp_path: Path,
) -> None:
    topic = kafka_topic("in")
    dlq = kafka_topic("dlq")
    wrong = "not-the-password-7f3a"
    secret = tmp_path / "kafka-password"
    secret.write_text(wrong)
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        kafka=_sasl_kafka(kafka_sasl.bootstrap_servers, "SCRAM-SHA-256", "alice", secret,
                          auth_failure_timeout_s=3),
    )
    with structlog.testing.capture_logs() as logs:
        result = await run_inline(settings, timeout=60)
    assert result.exit_code == 2, result.error
    assert result.error is not None
    assert "SASL credentials of user 'alice'" in result.error
    assert "kafka.sasl_password_file" in result.error and "SCRAM-SHA-256" in result.error
    assert "Authentication failed" in result.error  # the broker's own words, no secret
    assert wrong not in result.error
    assert not any(wrong in str(v) for e in logs for v in e.values())
    assert any(e["event"] == "kafka_auth_failed" for e in logs)
    assert result.metrics.total(result.metrics.kafka_auth_failures) >= 1


async def test_rotated_sasl_password_file_is_picked_up_without_restart(
    kafka_bootstrap: str, kafka_sasl: Any, kafka_topic: Any, kafka_names: Any, sandbox: Any,
    tmp_path: Path,
) -> None:
    # A SCRAM user whose password the broker has already rotated; the worker's mounted
    # Secret still holds the old one, and is updated a little later (as kubelet does).
    user = kafka_names.group("svc")[-40:].lstrip("-")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    for fut in admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(user, info, b"rotated-password-2")]
    ).values():
        fut.result(30)
    topic = kafka_topic("in")
    dlq = kafka_topic("dlq")
    events = valid_events(10, ("pointsIssued",))
    produce(kafka_bootstrap, topic, [*((k, v) for _, k, v in events), (b"p", b"[1]")])
    secret = tmp_path / "kafka-password"
    secret.write_text("old-password-1")
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        kafka=_sasl_kafka(kafka_sasl.bootstrap_servers, "SCRAM-SHA-512", user, secret,
                          auth_failure_timeout_s=60),
    )
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(run_inline(settings, timeout=120))
        for _ in range(300):
            if any(e["event"] == "kafka_auth_failed" for e in logs) or task.done():
                break
            await asyncio.sleep(0.1)
        assert not task.done(), "the worker must keep running on a stale password"
        _rotate(secret, "rotated-password-2")
        result = await task
    assert result.exit_code == 0, result.error
    assert sorted(delivered_event_ids(sandbox, DATASETS)) == sorted(e for e, _, _ in events)
    assert len(read_all(kafka_bootstrap, dlq, idle_s=1)) == 1  # the producer switched too
    events_seen = [e["event"] for e in logs]
    assert "kafka_sasl_credentials_reloaded" in events_seen
    assert result.metrics.total(result.metrics.kafka_credential_reloads) >= 1
    for e in logs:
        for v in e.values():
            assert "password-1" not in str(v) and "password-2" not in str(v)
