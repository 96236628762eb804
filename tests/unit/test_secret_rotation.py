"""Secret files re-read on rotation; SASL failure bookkeeping (give-up, recovery, reload).

The Kafka side is exercised against the real broker in tests/integration/
test_kafka_security.py; here the decisions, with an injected clock and real files.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog
from confluent_kafka import KafkaError

from worker.config import KafkaSettings
from worker.metrics import Metrics
from worker.secret_rotation import QUIET_RECOVERY_S, SaslCredentials, SecretFile, ims_secret


def _rotate(path: Path, value: str) -> None:
    """Like a Secret volume update: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value + "\n")
    tmp.replace(path)


async def test_secret_file_waits_for_a_different_value(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("old\n")
    secret = SecretFile(path, "aep.client_secret_file")
    assert secret.read() == "old"
    assert await secret.wait_for_change(0.2, interval_s=0.05) is False
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, _rotate, path, "new")
    assert await secret.wait_for_change(5, interval_s=0.02) is True
    assert secret.read() == "new"


async def test_unreadable_file_keeps_the_last_value(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("kept")
    secret = SecretFile(path, "aep.client_secret_file")
    assert secret.read() == "kept"
    path.unlink()
    assert secret.read() == "kept"


def test_ims_secret_inline_has_no_reload(tmp_path: Path) -> None:
    class Inline:
        client_secret_file = None

        def secret_value(self) -> str:
            return "inline"

    read, reload = ims_secret(Inline(), "aep.client_secret", 1)
    assert read() == "inline" and reload is None

    path = tmp_path / "s"
    path.write_text("from-file")

    class FromFile(Inline):
        client_secret_file = path

    read, reload = ims_secret(FromFile(), "aep.client_secret_file", 1)
    assert read() == "from-file" and reload is not None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sasl(tmp_path: Path, clock: Clock, **kw: Any) -> tuple[SaslCredentials, Path, Metrics]:
    path = tmp_path / "password"
    path.write_text("pw-1")
    settings = KafkaSettings(
        topics=["t"], security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc", sasl_password_file=path, **kw,
    )
    metrics = Metrics()
    creds = SaslCredentials(
        settings, asyncio.get_running_loop(), metrics, give_up_after_s=60, clock=clock
    )
    return creds, path, metrics


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


AUTH = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials")


async def test_auth_failure_reloads_a_changed_password_file(tmp_path: Path) -> None:
    clock = Clock()
    creds, path, metrics = _sasl(tmp_path, clock)
    calls: list[tuple[str, str]] = []
    creds.register(lambda u, p: calls.append((u, p)))

    async def async_setter(u: str, p: str) -> None:
        calls.append((u, "async:" + p))

    creds.register(async_setter)
    on_error = creds.error_cb("consumer")
    with structlog.testing.capture_logs() as logs:
        await asyncio.to_thread(on_error, AUTH)  # from a client thread, like librdkafka
        await _settle()
        assert creds.failing() is not None and calls == []  # same password: nothing to set
        _rotate(path, "pw-2")
        clock.now += 5
        await asyncio.to_thread(on_error, AUTH)
        await _settle()
    assert calls == [("svc", "pw-2"), ("svc", "async:pw-2")]
    assert creds.reloads == 1
    assert metrics.total(metrics.kafka_auth_failures) == 2
    assert metrics.total(metrics.kafka_credential_reloads) == 1
    events = [e["event"] for e in logs]
    assert "kafka_auth_failed" in events and "kafka_sasl_credentials_reloaded" in events
    assert not any("pw-" in str(v) for e in logs for v in e.values())


async def test_recovery_from_statistics_or_quiet(tmp_path: Path) -> None:
    clock = Clock()
    creds, _, _ = _sasl(tmp_path, clock)
    creds._auth_failed("consumer", "bad")
    creds._report(True)  # a failure since the previous report: not yet evidence
    assert creds.failing() is not None
    creds._report(True)  # a broker up and no failure since the previous report
    assert creds.failing() is None
    creds._auth_failed("consumer", "bad")
    clock.now += QUIET_RECOVERY_S + 1
    assert creds.failing() is None  # no statistics at all: a quiet spell is evidence too


async def test_gives_up_after_the_allowance_naming_the_settings(tmp_path: Path) -> None:
    clock = Clock()
    creds, _, _ = _sasl(tmp_path, clock)
    creds._auth_failed("consumer", "SASL authentication error: invalid credentials")
    clock.now += 30
    creds._auth_failed("consumer", "SASL authentication error: invalid credentials")
    assert creds.gave_up() is None
    clock.now += 29
    creds._auth_failed("consumer", "SASL authentication error: invalid credentials")
    clock.now += 2
    why = creds.gave_up()
    assert why is not None
    assert "kafka.sasl_password_file" in why and "'svc'" in why and "pw-1" not in why


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
async def test_not_sasl_never_fails_auth(tmp_path: Path, protocol: str) -> None:
    settings = KafkaSettings(topics=["t"], security_protocol=protocol)  # type: ignore[arg-type]
    creds = SaslCredentials(settings, asyncio.get_running_loop(), Metrics(), give_up_after_s=1)
    assert not creds.enabled and creds.failing() is None and creds.gave_up() is None
