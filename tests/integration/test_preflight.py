"""``capillary-aep preflight`` and ``run --preflight`` against the real sandbox (real IMS flow,
real HTTP), and the schema-drift check of a running worker."""

from __future__ import annotations

import asyncio
import copy
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from tests.fixtures.sandbox import SandboxHandle
from tests.integration.worker_harness import (
    EE_SCHEMA,
    PROFILE_SCHEMA,
    ROOT,
    env_for,
    make_settings,
    settings_dict,
)
from worker.commands.preflight import run_preflight
from worker.metrics import Metrics
from worker.preflight import Check, failed

pytestmark = pytest.mark.integration


def _settings(sandbox: SandboxHandle, **sections: Any) -> dict[str, Any]:
    aep = {"platform_url": sandbox.platform_url, **sections.pop("aep", {})}
    return settings_dict(
        "127.0.0.1:1", sandbox, topics=["capillary"], group="g", dlq_topic="dlq",
        aep=aep, **sections,
    )


def _check(settings: dict[str, Any]) -> list[Check]:
    from worker.config import Settings

    return asyncio.run(run_preflight(Settings(**settings)))


def _problems(checks: list[Check]) -> list[tuple[str, str]]:
    return [(c.problem, c.subject) for c in failed(checks)]


def _preflight_cli(settings: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", "preflight", *args],
        env=env_for(settings), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def test_preflight_passes_against_a_correct_sandbox(sandbox: SandboxHandle) -> None:
    settings = _settings(sandbox)
    checks = _check(settings)
    assert failed(checks) == []
    kinds = {(c.check, c.status) for c in checks}
    assert {("ims", "ok"), ("inlet", "ok"), ("dataset", "ok"), ("registry", "ok"),
            ("schema", "ok")} <= kinds
    assert sum(1 for c in checks if c.check == "schema") == 3  # one per route
    # The probe ingested nothing.
    assert sandbox.stats()["messages"]["received"] == 0

    result = _preflight_cli(settings)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout
    result = _preflight_cli(settings, "--json")
    assert result.returncode == 0
    doc = orjson.loads(result.stdout)
    assert doc["ok"] is True and doc["problems"] == 0 and len(doc["checks"]) == len(checks)


def test_preflight_names_a_bad_secret_without_printing_it(sandbox: SandboxHandle) -> None:
    settings = _settings(sandbox, aep={"client_secret": "s3cr3t-wrong-value"})
    checks = _check(settings)
    problems = _problems(checks)
    assert problems[0][0] == "bad secret"
    # Nothing that needs a token is attempted: inlet and Platform checks are skipped.
    assert {c.check for c in checks if c.status == "skip"} >= {"inlet", "dataset"}
    result = _preflight_cli(settings)
    assert result.returncode == 1
    assert "bad secret" in result.stdout
    assert "s3cr3t-wrong-value" not in result.stdout + result.stderr
    doc = orjson.loads(_preflight_cli(settings, "--json").stdout)
    assert doc["ok"] is False and "s3cr3t-wrong-value" not in orjson.dumps(doc).decode()


def test_preflight_names_an_unknown_dataset_and_a_wrong_schema(sandbox: SandboxHandle) -> None:
    settings = _settings(sandbox)
    routes = copy.deepcopy(settings["routes"])
    routes[0]["dataset_id"] = "ds-does-not-exist"
    # A profile route pointed at an ExperienceEvent dataset.
    routes[1]["dataset_id"] = "ds-commerce-events"
    settings["routes"] = routes
    problems = _problems(_check(settings))
    assert ("unknown dataset", "route loyalty-events: dataset ds-does-not-exist") in problems
    wrong = [p for p in problems if p[0] == "wrong schema on dataset"]
    assert wrong == [("wrong schema on dataset", "route profile-customer: dataset "
                      "ds-commerce-events")]
    result = _preflight_cli(settings)
    assert result.returncode == 1
    assert "unknown dataset" in result.stdout and "wrong schema on dataset" in result.stdout


def test_preflight_names_schema_mismatch_paths(sandbox: SandboxHandle) -> None:
    registry = sandbox.registry_schema(EE_SCHEMA)
    changed = copy.deepcopy(registry)
    del changed["properties"]["loyalty"]["properties"]["pointsRedemption"]
    changed["properties"]["_capillary"]["properties"]["orgId"]["type"] = "string"
    sandbox.set_registry_schema(EE_SCHEMA, changed)
    checks = _check(_settings(sandbox))
    mismatch = [c for c in failed(checks) if c.problem == "schema mismatch"]
    assert len(mismatch) == 1 and mismatch[0].subject.startswith("route loyalty-events")
    assert "/loyalty/pointsRedemption" in mismatch[0].paths
    assert "/loyalty/pointsRedemption[]/value" not in mismatch[0].paths  # named once
    assert "/_capillary/orgId" in mismatch[0].paths
    assert "type integer != string" in mismatch[0].detail
    # The profile routes' schema is unchanged.
    assert all(c.status == "ok" for c in checks if c.check == "schema" and
               PROFILE_SCHEMA in c.subject)

    sandbox.remove_registry_schema(PROFILE_SCHEMA)
    problems = _problems(_check(_settings(sandbox)))
    assert ("schema not in registry",
            f"route profile-customer: schema {PROFILE_SCHEMA}") in problems


def test_preflight_names_unreachable_and_unknown_inlets(sandbox: SandboxHandle) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    settings = _settings(sandbox)
    routes = copy.deepcopy(settings["routes"])
    routes[0]["inlet_url"] = sandbox.inlet_url("no-such-inlet")
    routes[1]["inlet_url"] = f"http://127.0.0.1:{closed_port}/collection/capillary-inlet"
    settings["routes"] = routes
    problems = _problems(_check(settings))
    assert ("unknown inlet", f"inlet no-such-inlet ({sandbox.batch_url('no-such-inlet')})") in problems
    assert any(p == "unreachable inlet" and str(closed_port) in s for p, s in problems)
    assert sandbox.stats()["messages"]["received"] == 0


def test_run_preflight_fails_fast_without_streaming(
    sandbox: SandboxHandle, tmp_path: Path
) -> None:
    settings = _settings(sandbox)
    routes = copy.deepcopy(settings["routes"])
    routes[0]["dataset_id"] = "ds-gone"
    settings["routes"] = routes
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "run", "--preflight"],
        env=env_for(settings), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "preflight failed: unknown dataset (route loyalty-events: dataset ds-gone)" in proc.stderr
    assert "worker_started" not in proc.stderr  # never started consuming
    assert sandbox.stats()["messages"]["received"] == 0


async def test_schema_drift_detected_while_running(
    sandbox: SandboxHandle, kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any
) -> None:
    topic = kafka_topic("in")
    dlq = kafka_topic("dlq")
    settings = make_settings(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        aep={"platform_url": sandbox.platform_url, "schema_drift_interval_s": 1},
    )
    metrics = Metrics()
    stop = asyncio.Event()
    from worker.runner import run_worker

    def drift_value(route: str) -> float | None:
        return metrics.registry.get_sample_value("capaep_schema_drift", {"route": route})

    with capture_logs() as logs:
        task = asyncio.create_task(run_worker(
            settings, stop=stop, install_signals=False, metrics=metrics
        ))
        try:
            for _ in range(100):
                if drift_value("loyalty-events") == 0:
                    break
                await asyncio.sleep(0.1)
            assert drift_value("loyalty-events") == 0
            changed = copy.deepcopy(await asyncio.to_thread(sandbox.registry_schema, EE_SCHEMA))
            changed["properties"]["timestamp"]["format"] = "date"
            await asyncio.to_thread(sandbox.set_registry_schema, EE_SCHEMA, changed)
            for _ in range(100):
                if drift_value("loyalty-events") == 1:
                    break
                await asyncio.sleep(0.1)
            assert drift_value("loyalty-events") == 1
            assert drift_value("profile-customer") == 0
        finally:
            stop.set()
            result = await asyncio.wait_for(task, 60)
    assert result.exit_code == 0, result.error
    drift_logs = [e for e in logs if e["event"] == "schema_drift"]
    assert drift_logs and drift_logs[0]["log_level"] == "warning"
    assert drift_logs[0]["route"] == "loyalty-events"
    assert drift_logs[0]["paths"] == ["/timestamp"]
    assert b"capaep_schema_drift" in generate_latest(metrics.registry)


def test_run_preflight_passes_then_streams(
    sandbox: SandboxHandle, kafka_bootstrap: str, kafka_topic: Any, kafka_names: Any
) -> None:
    topic = kafka_topic("in")
    dlq = kafka_topic("dlq")
    settings = settings_dict(
        kafka_bootstrap, sandbox, topics=[topic], group=kafka_names.group(), dlq_topic=dlq,
        aep={"platform_url": sandbox.platform_url},
    )
    proc = subprocess.run(
        [sys.executable, "-m", "worker", "run", "--preflight", "--exit-when-drained"],
        env=env_for(settings), cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = [orjson.loads(line)["event"] for line in proc.stderr.splitlines()
              if line.startswith("{")]
    assert events.index("preflight_passed") < events.index("worker_started")


def test_preflight_checks_each_routes_own_credentials(sandbox: SandboxHandle) -> None:
    settings = _settings(sandbox)
    routes = copy.deepcopy(settings["routes"])
    routes[2]["credentials"] = {"client_id": sandbox.client_id, "client_secret": "nope-123"}
    # Routes sharing an inlet URL must share credentials: the same inlet, spelled with a "/".
    routes[2]["inlet_url"] = sandbox.inlet_url() + "/"
    settings["routes"] = routes
    checks = _check(settings)
    ims = {c.subject: (c.status, c.problem) for c in checks if c.check == "ims"}
    assert ims[f"aep (client_id={sandbox.client_id})"] == ("ok", "")
    assert ims[f"routes[profile-tier].credentials (client_id={sandbox.client_id})"] == (
        "fail", "bad secret")
    # The route's Platform checks need its own token: skipped, not wrongly passed.
    tier = [c for c in checks if c.subject.startswith("route profile-tier")]
    assert tier and all(c.status == "skip" for c in tier)
    assert "nope-123" not in orjson.dumps([c.to_json() for c in checks]).decode()
