"""Secrets that rotate under a running worker (Kubernetes Secret volumes), without a restart.

``SecretFile``: the IMS client secret as a file, read on every token request. When IMS answers
``invalid_client``, the token provider calls ``wait_for_change`` once: it waits (bounded) for
the file to hold something else than what was just refused, since a Secret volume is updated
some time after the Secret itself; then the provider retries once before giving up.

``SaslCredentials``: on an authentication failure reported by a Kafka client (error_cb
``_AUTHENTICATION``), the SASL password is read again from ``kafka.sasl_password_file`` and,
if it changed, handed to every registered client (``set_sasl_credentials``; librdkafka uses it
for its next connection). If authentication keeps failing for ``kafka.auth_failure_timeout_s``
with no broker connection up, the worker gives up with a configuration error naming the
settings to check. Success evidence is a statistics report with a broker connection up and no
authentication failure since the previous report (or, without statistics, a quiet spell).

librdkafka callbacks run on client threads, inside a client call; calling back into the
client from there aborts the process (confluent-kafka's call state), so every reaction is
moved to the asyncio loop first. Passwords never appear in logs, metrics or errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from confluent_kafka import KafkaError

from worker.config import KafkaSettings
from worker.logs import get_logger
from worker.metrics import Metrics

log = get_logger(__name__)

# librdkafka retries a failed connection after at most reconnect.backoff.max.ms (10 s by
# default): three times that without a new failure means the credentials work.
QUIET_RECOVERY_S = 30.0

CredentialSetter = Callable[[str, str], Awaitable[None] | None]


class SecretFile:
    """A secret kept in a file; every read goes to the file (it may have been rotated)."""

    def __init__(self, path: Path, setting: str) -> None:
        self.path = path
        self.setting = setting
        self._last: str | None = None

    def _read(self) -> str | None:
        try:
            return self.path.read_text().strip()
        except OSError as exc:  # mid-swap or unmounted: keep what we had, say which setting
            log.warning("secret_file_unreadable", setting=self.setting, error=type(exc).__name__)
            return self._last

    def read(self) -> str | None:
        value = self._read()
        self._last = value
        return value

    async def wait_for_change(self, timeout_s: float, interval_s: float = 0.5) -> bool:
        """Wait until the file holds something else than the last value read."""
        refused = self._last
        log.warning(
            "secret_file_waiting_for_rotation", setting=self.setting, timeout_s=timeout_s
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            current = self._read()
            if current and current != refused:
                log.info("secret_file_rotated", setting=self.setting)
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(min(interval_s, max(deadline - loop.time(), 0.0)))


class _SecretSettings(Protocol):
    @property
    def client_secret_file(self) -> Path | None: ...

    def secret_value(self) -> str | None: ...


def ims_secret(
    source: _SecretSettings, setting: str, wait_s: float
) -> tuple[Callable[[], str | None], Callable[[], Awaitable[None]] | None]:
    """``(client_secret, reload_secret)`` for a ``TokenProvider`` from the ``aep`` section or
    a route's ``credentials``: an inline secret has nothing to reload."""
    path = source.client_secret_file
    if path is None:
        return source.secret_value, None
    secret = SecretFile(path, setting)

    async def reload() -> None:
        await secret.wait_for_change(wait_s)

    return secret.read, reload


class SaslCredentials:
    """Reloads the SASL password after authentication failures; decides when to give up."""

    def __init__(
        self,
        settings: KafkaSettings,
        loop: asyncio.AbstractEventLoop,
        metrics: Metrics,
        *,
        give_up_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._loop = loop
        self._metrics = metrics
        self._give_up_after = give_up_after_s
        self._clock = clock
        self._setters: list[CredentialSetter] = []
        self._applied: str | None = None
        if settings.sasl_mechanism:
            # Unreadable: the clients' own configuration reports it; a later reload may fix it.
            with contextlib.suppress(OSError):
                self._applied = settings.sasl_password_value()
        self.failing_since: float | None = None
        self._last_failure = 0.0
        self._failures_since_stats = 0
        self._detail = ""
        self.reloads = 0

    @property
    def enabled(self) -> bool:
        return self.settings.security_protocol.startswith("SASL")

    def register(self, setter: CredentialSetter) -> None:
        self._setters.append(setter)

    # -- client threads -----------------------------------------------------------------------

    def error_cb(self, client: str) -> Callable[[KafkaError], None]:
        """An ``error_cb`` for one client: auth failures go to the loop, the rest is logged."""

        def on_error(err: KafkaError) -> None:
            if err.code() == KafkaError._AUTHENTICATION:
                self._loop.call_soon_threadsafe(self._auth_failed, client, err.str())
            elif err.fatal():
                log.error("kafka_client_fatal", client=client, error=err.name())
            else:
                log.debug("kafka_client_error", client=client, error=err.name())

        return on_error

    def statistics(self, brokers_up: bool) -> None:
        """From a client thread, after each statistics report."""
        self._loop.call_soon_threadsafe(self._report, brokers_up)

    # -- loop ---------------------------------------------------------------------------------

    def _report(self, brokers_up: bool) -> None:
        if self.failing_since is not None and brokers_up and self._failures_since_stats == 0:
            self._recovered()
        self._failures_since_stats = 0

    def _recovered(self) -> None:
        since = self.failing_since or self._clock()
        log.info("kafka_auth_recovered", failing_for_s=round(self._clock() - since, 1))
        self.failing_since = None

    def _auth_failed(self, client: str, detail: str) -> None:
        now = self._clock()
        self._metrics.kafka_auth_failures.labels(client).inc()
        self._failures_since_stats += 1
        self._last_failure = now
        self._detail = detail[:300]
        if self.failing_since is None:
            self.failing_since = now
            log.error(
                "kafka_auth_failed",
                client=client,
                user=self.settings.sasl_username,
                mechanism=self.settings.sasl_mechanism,
                detail=self._detail,
                action="re-reading the SASL password; giving up after "
                f"{self._give_up_after:.0f}s",
            )
        if self.settings.sasl_password_file is None or not self.settings.sasl_mechanism:
            return
        try:
            password = self.settings.sasl_password_value()
        except OSError as exc:
            log.warning(
                "secret_file_unreadable", setting="kafka.sasl_password_file",
                error=type(exc).__name__,
            )
            return
        if not password or password == self._applied:
            return
        self._applied = password
        self.reloads += 1
        self._metrics.kafka_credential_reloads.inc()
        self.failing_since = now  # fresh credentials get a fresh allowance
        log.warning("kafka_sasl_credentials_reloaded", user=self.settings.sasl_username)
        user = self.settings.sasl_username or ""
        for setter in self._setters:
            result = setter(user, password)
            if inspect.isawaitable(result):
                self._loop.create_task(_settle(result))

    # -- decisions ----------------------------------------------------------------------------

    def failing(self) -> str | None:
        """Why Kafka authentication is failing now (for readiness), or None."""
        if self.failing_since is None:
            return None
        if self._clock() - self._last_failure > QUIET_RECOVERY_S:
            self._recovered()
            return None
        return f"Kafka SASL authentication failing: {self._detail}"

    def gave_up(self) -> str | None:
        """The configuration error to stop with, once failures outlasted the allowance."""
        if self.failing() is None or self.failing_since is None:
            return None
        if self._clock() - self.failing_since < self._give_up_after:
            return None
        source = (
            "kafka.sasl_password_file" if self.settings.sasl_password_file else
            "kafka.sasl_password"
        )
        return (
            f"Kafka rejected the SASL credentials of user {self.settings.sasl_username!r} "
            f"(mechanism {self.settings.sasl_mechanism}) for "
            f"{self._clock() - self.failing_since:.0f}s: {self._detail}; check "
            f"kafka.sasl_username, {source} and kafka.sasl_mechanism"
        )


async def _settle(result: Awaitable[None]) -> None:
    try:
        await result
    except Exception as exc:  # a closed client during shutdown: nothing left to authenticate
        log.warning("kafka_set_credentials_failed", error=type(exc).__name__)
