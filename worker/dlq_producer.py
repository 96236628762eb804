"""Writes dead letters and reports each one only once the broker acknowledged it.

A record's offset may complete on a dead-letter only after the broker's ack, so a failed
produce is retried (with backoff) for as long as it takes; while any is failing the producer
reports itself unavailable and the pipeline pauses. A fatal producer error (idempotence
broken) recreates the producer and re-sends what was outstanding.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from worker.config import KafkaSettings
from worker.dlq import DeadLetter, Header, SourceRecord, build_headers, record_size, truncate
from worker.logs import get_logger

log = get_logger(__name__)

BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


@dataclass(slots=True)
class _Entry:
    id: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    token: Any
    attempts: int = 0
    epoch: int = 0


def topic_max_message_bytes(
    settings: KafkaSettings, topics: list[str], errors: dict[str, str] | None = None
) -> dict[str, int]:
    """max.message.bytes per topic. Topics left out are missing, or, when ``errors`` is given
    and names them, could not be described (e.g. the broker refused our credentials)."""
    admin = AdminClient(settings.client_config())
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics]
    out: dict[str, int] = {}
    for res, fut in admin.describe_configs(resources, request_timeout=10).items():
        try:
            entries = fut.result(timeout=15)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            missing = isinstance(err, KafkaError) and err.code() in (
                KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC
            )
            if errors is not None and not missing:
                errors[res.name] = str(err)[:200]
            continue
        entry = entries.get("max.message.bytes")
        if entry is not None and entry.value is not None:
            out[res.name] = int(entry.value)
    return out


class DeadLetterProducer:
    def __init__(
        self,
        settings: KafkaSettings,
        loop: asyncio.AbstractEventLoop,
        *,
        max_record_bytes: int,
        on_acked: Callable[[Any], None],
        on_availability: Callable[[bool], None],
        retry_base_s: float = 0.5,
        retry_max_s: float = 15.0,
        on_client_error: Callable[[KafkaError], None] | None = None,
        topic: str | None = None,
        message_timeout_ms: int | None = None,
        name: str = "dlq",
    ) -> None:
        """``topic``/``message_timeout_ms``/``name`` (log events and thread): the same
        machinery for another acked topic (``worker.receipts``); the DLQ's by default."""
        self.settings = settings
        self.topic = topic or settings.dlq_topic
        self.name = name
        self._message_timeout_ms = message_timeout_ms or settings.dlq_message_timeout_ms
        self.max_record_bytes = max_record_bytes
        self._loop = loop
        self._on_acked = on_acked
        self._on_availability = on_availability
        self._on_client_error = on_client_error  # e.g. SASL authentication -> reload password
        self._retry_base = retry_base_s
        self._retry_max = retry_max_s
        self._ids = itertools.count()
        self._outstanding: dict[int, _Entry] = {}
        self._failing: set[int] = set()
        self._epoch = 0
        self._running = True
        self.produced = 0
        self.failures = 0
        self.recreated = 0
        self.truncated = 0
        self._producer = self._new_producer()
        self._poller = threading.Thread(target=self._poll_forever, name=f"{name}-poll", daemon=True)
        self._poller.start()

    def _new_producer(self) -> Producer:
        conf = self.settings.client_config()
        conf.update(
            {
                "acks": "all",
                "enable.idempotence": True,
                "compression.type": "zstd",
                "linger.ms": 5,
                "message.timeout.ms": self._message_timeout_ms,
                "message.max.bytes": max(self.max_record_bytes, 1_000_000),
                "error_cb": self._on_error,
            }
        )
        # Consumer-only passthrough settings would make the producer warn; keep the common ones.
        for key in list(conf):
            if key.startswith(("group.", "fetch.", "auto.", "session.", "max.poll")):
                del conf[key]
        return Producer(conf)

    @property
    def pending(self) -> int:
        return len(self._outstanding)

    @property
    def available(self) -> bool:
        return not self._failing

    def send(self, src: SourceRecord, why: DeadLetter, token: Any) -> None:
        """Queue a dead letter; ``on_acked(token)`` runs on the loop once the broker has it."""
        headers = build_headers(src, why)
        value = src.value
        if record_size(src.key, value, headers) > self.max_record_bytes:
            value, headers = truncate(src.key, value, headers, self.max_record_bytes)
            self.truncated += 1
        entry = _Entry(next(self._ids), src.key, value, headers, token)
        self._outstanding[entry.id] = entry
        self._produce(entry)

    # -- internals (loop thread unless noted) ------------------------------------------------

    def _produce(self, entry: _Entry) -> None:
        entry.attempts += 1
        entry.epoch = self._epoch
        epoch = self._epoch

        def delivered(err: KafkaError | None, _msg: Any) -> None:  # poll thread
            self._report(entry, epoch, err)

        try:
            self._producer.produce(
                self.topic,
                value=entry.value,
                key=entry.key,
                headers=list[tuple[str, str | bytes | None]](entry.headers),
                on_delivery=delivered,
            )
        except BufferError:
            self._retry_later(entry, "local-queue-full")
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            code = err.code() if isinstance(err, KafkaError) else None
            if code == KafkaError.MSG_SIZE_TOO_LARGE:
                self._shrink(entry)
                self._retry_later(entry, "message-too-large", delay=0.0)
            else:
                self._retry_later(entry, str(code))

    def _report(self, entry: _Entry, epoch: int, err: KafkaError | None) -> None:  # poll thread
        self._loop.call_soon_threadsafe(self._delivered, entry, epoch, err)

    def _delivered(self, entry: _Entry, epoch: int, err: KafkaError | None) -> None:
        if entry.id not in self._outstanding or epoch != entry.epoch:
            return  # re-sent after a producer recreation; the newer attempt decides
        if err is None:
            del self._outstanding[entry.id]
            self.produced += 1
            if entry.id in self._failing:
                self._failing.discard(entry.id)
                if not self._failing:
                    log.info(f"{self.name}_available_again", topic=self.topic)
                    self._on_availability(True)
            self._on_acked(entry.token)
            return
        self.failures += 1
        if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            self._shrink(entry)
            self._retry_later(entry, err.name(), delay=0.0)
        elif err.fatal():
            self._recreate(err)
        else:
            self._retry_later(entry, err.name())

    def _shrink(self, entry: _Entry) -> None:
        """The broker refused the size: halve the allowance and truncate again."""
        self.max_record_bytes = max(self.max_record_bytes // 2, 4096)
        entry.value, entry.headers = truncate(
            entry.key, entry.value, entry.headers, self.max_record_bytes
        )
        self.truncated += 1

    def _retry_later(self, entry: _Entry, cause: str, delay: float | None = None) -> None:
        if delay is None:
            delay = min(self._retry_base * 2 ** min(entry.attempts - 1, 10), self._retry_max)
        if not self._failing and delay > 0:
            log.error(f"{self.name}_unavailable", topic=self.topic, cause=cause, retry_in_s=delay)
            self._failing.add(entry.id)
            self._on_availability(False)
        elif delay > 0:
            self._failing.add(entry.id)
        self._loop.call_later(delay, self._resend, entry.id)

    def _resend(self, entry_id: int) -> None:
        entry = self._outstanding.get(entry_id)
        if entry is not None and self._running:
            self._produce(entry)

    def _recreate(self, err: KafkaError) -> None:
        log.error(
            f"{self.name}_producer_fatal", error=err.name(), outstanding=len(self._outstanding)
        )
        old = self._producer
        self._epoch += 1
        self.recreated += 1
        self._producer = self._new_producer()
        with contextlib.suppress(Exception):  # the old producer is beyond use anyway
            old.purge()
        for entry in list(self._outstanding.values()):
            self._produce(entry)

    def set_sasl_credentials(self, username: str, password: str) -> None:
        """Credentials for the next connection (a rotated password). Not from a callback."""
        self._producer.set_sasl_credentials(username, password)

    def _on_error(self, err: KafkaError) -> None:  # poll thread
        if self._on_client_error is not None:
            self._on_client_error(err)
        if err.fatal():
            self._loop.call_soon_threadsafe(self._recreate, err)
        else:
            log.warning(f"{self.name}_producer_error", error=err.name())

    def _poll_forever(self) -> None:  # poll thread: delivery reports arrive continuously
        while self._running:
            try:
                self._producer.poll(0.1)
            except Exception as exc:  # pragma: no cover
                log.error(f"{self.name}_poll_failed", error=type(exc).__name__)

    async def flush(self, deadline_s: float) -> int:
        """Wait until every dead letter is acknowledged or the deadline passes; returns left."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while self._outstanding and loop.time() < end:
            await loop.run_in_executor(None, self._producer.flush, 0.2)
            await asyncio.sleep(0)
        return len(self._outstanding)

    def close(self) -> None:
        self._running = False
        self._poller.join(timeout=2)
        self._producer.flush(1)
