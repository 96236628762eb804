"""The IMS client secret as a mounted file, rotated under a running worker (sandbox IMS)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.integration.fixture_events import valid_events
from tests.integration.worker_harness import (
    delivered_event_ids,
    make_settings,
    produce,
    run_inline,
)

pytestmark = pytest.mark.integration


def _rotate(path: Path, value: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(value + "\n")
    tmp.replace(path)


async def test_rotated_ims_secret_file_is_picked_up_without_restart(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox_factory: Any,
    tmp_path: Path,
) -> None:
    # IMS already knows only the new secret; the worker's file still holds the old one.
    sandbox = sandbox_factory(ims_clients=[{"client_id": "rot-client", "client_secret": "new-2"}])
    topic = kafka_topic("in")
    dlq = kafka_topic("dlq")
    events = valid_events(10, ("pointsIssued",))
    produce(kafka_bootstrap, topic, ((k, v) for _, k, v in events))
    secret = tmp_path / "client_secret"
    secret.write_text("old-1\n")
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        aep={"client_secret": None, "client_secret_file": str(secret),
             "secret_reload_wait_s": 60},
    )
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(run_inline(settings, timeout=90))
        for _ in range(300):
            if any(e["event"] == "secret_file_waiting_for_rotation" for e in logs):
                break
            await asyncio.sleep(0.1)
        assert not task.done(), "the worker waits for the rotated file instead of exiting"
        _rotate(secret, "new-2")
        result = await task
    assert result.exit_code == 0, result.error
    assert sorted(delivered_event_ids(sandbox, ["ds-loyalty-events"])) == sorted(
        e for e, _, _ in events
    )
    seen = [e["event"] for e in logs]
    assert "ims.token.reloading_secret" in seen and "secret_file_rotated" in seen
    assert not any(s in str(v) for e in logs for v in e.values() for s in ("old-1", "new-2"))


async def test_never_rotated_ims_secret_is_a_configuration_error(
    kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any, sandbox: Any, tmp_path: Path,
) -> None:
    secret = tmp_path / "client_secret"
    secret.write_text("stale-secret-9")
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[kafka_topic("in")], group=kafka_names.group(),
        dlq_topic=kafka_topic("dlq"),
        aep={"client_secret": None, "client_secret_file": str(secret),
             "secret_reload_wait_s": 1},
    )
    result = await run_inline(settings, timeout=60)
    assert result.exit_code == 2
    assert result.error is not None and "invalid_client" in result.error
    assert "aep.client_secret_file" in result.error and "stale-secret-9" not in result.error
