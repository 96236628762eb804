"""Delivery receipts: one compact record per (source record, target) AEP accepted.

Off by default (``[receipts] enabled``). A receipt says where the record came from (topic,
partition, offset), what it was (Capillary eventId and event name), what AEP got (the XDM
``_id``, dataset, target) and AEP's answer (batchId of the 207, xactionId of the message), with
the acceptance time and the end-to-end latency (acceptance minus the Kafka record timestamp).
Key: the eventId, so every receipt of an event lands in one partition; the topic is a log
(``cleanup.policy=delete``): compaction would keep one target's receipt of a fanned-out event.

With receipts on, a record's offset completes only once AEP accepted it *and* Kafka acked its
receipts: a crash in between redelivers the record (same ``_id``, so AEP deduplicates the
Profile, and the receipt is written then). Receipts are produced by the dead-letter producer's
machinery (own poll thread, idempotent ``acks=all``, retries without end, recreation after a
fatal error); delivery reports reach the loop in one call per poll, not one per receipt.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from worker.config import ConfigError, KafkaSettings, ReceiptSettings, Settings
from worker.dlq_producer import DeadLetterProducer, _Entry
from worker.logs import get_logger
from worker.mapping import xdm_id_of

log = get_logger(__name__)

__all__ = [
    "ReceiptProducer", "check_receipts_topic", "check_topic", "decode", "encode", "receipt_id",
]

# Field names of a receipt (compact JSON, in this order).
FIELDS = (
    "eventId", "event", "_id", "target", "dataset", "batchId", "xactionId", "acceptedMs",
    "latencyMs", "topic", "partition", "offset", "kafkaTs",
)


def receipt_id(org_id: int, event: str, event_id: str, target: str) -> str:
    """The XDM ``_id`` the worker sent (``worker.mapping.xdm_id``, SPEC 2.5)."""
    return xdm_id_of(org_id, event, event_id, target)


def encode(
    *, topic: str, partition: int, offset: int, event_id: str, event: str, org_id: int,
    target: str, dataset: str, batch_id: str | None, xaction_id: str | None,
    accepted_ms: int, kafka_ts_ms: int | None,
) -> tuple[bytes, bytes]:
    """(key, value) of one receipt. ``latencyMs`` is None when the record has no timestamp."""
    value = orjson.dumps({
        "eventId": event_id,
        "event": event,
        "_id": receipt_id(org_id, event, event_id, target),
        "target": target,
        "dataset": dataset,
        "batchId": batch_id,
        "xactionId": xaction_id,
        "acceptedMs": accepted_ms,
        "latencyMs": None if kafka_ts_ms is None else accepted_ms - kafka_ts_ms,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "kafkaTs": kafka_ts_ms,
    })
    return event_id.encode(), value


def decode(value: bytes | None) -> dict[str, Any] | None:
    """A receipt from its record value; None if it is not one (another writer's record)."""
    if not value:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("eventId"), str) or "_id" not in doc:
        return None
    return doc


def check_topic(settings: KafkaSettings, topic: str) -> dict[str, str] | None:
    """The topic's configuration, or None if it does not exist. Other failures raise
    ``KafkaException`` (e.g. the broker refused our credentials)."""
    admin = AdminClient(settings.client_config())
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    fut = admin.describe_configs([res], request_timeout=10)[res]
    try:
        entries = fut.result(timeout=15)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() in (
            KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC
        ):
            return None
        raise
    return {name: e.value for name, e in entries.items() if e.value is not None}


def check_receipts_topic(settings: Settings) -> None:
    """At start, with receipts on: the topic must exist (ConfigError naming the setting);
    a compacted topic gets a warning (it would drop all but one target's receipt)."""
    topic = settings.receipts.topic
    try:
        config = check_topic(settings.kafka, topic)
    except KafkaException as exc:  # e.g. not authorised to describe: the producer will tell
        log.error("receipts_topic_check_failed", topic=topic, error=str(exc.args[0])[:200])
        return
    if config is None:
        raise ConfigError(
            f"receipts.topic: topic {topic!r} does not exist; create it "
            "(cleanup.policy=delete) or set receipts.enabled = false"
        )
    if "compact" in config.get("cleanup.policy", ""):
        log.warning(
            "receipts_topic_compacted", topic=topic, cleanup_policy=config["cleanup.policy"],
            effect="compaction keeps one receipt per eventId: other targets' receipts vanish",
        )


class ReceiptProducer(DeadLetterProducer):
    """Receipts to ``receipts.topic``; ``on_acked(token)`` runs on the loop once Kafka has
    the receipt. While producing fails, ``on_availability(False)`` (the pipeline pauses)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        receipts: ReceiptSettings,
        loop: asyncio.AbstractEventLoop,
        *,
        on_acked: Callable[[Any], None],
        on_availability: Callable[[bool], None],
        on_counts: Callable[[int, int], None] | None = None,
        on_client_error: Callable[[KafkaError], None] | None = None,
    ) -> None:
        self._reports: list[tuple[_Entry, int, KafkaError | None]] = []
        self._reports_lock = threading.Lock()
        self._on_counts = on_counts  # (produced, failed attempts) per drained poll
        super().__init__(
            kafka, loop, max_record_bytes=1_000_000, on_acked=on_acked,
            on_availability=on_availability, on_client_error=on_client_error,
            topic=receipts.topic, message_timeout_ms=receipts.message_timeout_ms,
            name="receipts",
        )

    def send_many(self, rows: Iterable[tuple[bytes, bytes, Any]]) -> None:
        """Queue receipts: (key, value, token) each."""
        ids = self._ids
        outstanding = self._outstanding
        for key, value, token in rows:
            entry = _Entry(next(ids), key, value, [], token)
            outstanding[entry.id] = entry
            self._produce(entry)

    def _shrink(self, entry: _Entry) -> None:
        """Never truncated (a cut receipt is no receipt): a topic refusing a few hundred bytes
        is misconfigured, and the receipt is retried with backoff (the pipeline pauses)."""

    def _retry_later(self, entry: _Entry, cause: str, delay: float | None = None) -> None:
        super()._retry_later(entry, cause, None)  # always with backoff (see _shrink)

    def _report(self, entry: _Entry, epoch: int, err: KafkaError | None) -> None:  # poll thread
        with self._reports_lock:
            self._reports.append((entry, epoch, err))
            first = len(self._reports) == 1
        if first:  # one loop callback per burst of reports
            self._loop.call_soon_threadsafe(self._drain_reports)

    def _drain_reports(self) -> None:
        with self._reports_lock:
            reports, self._reports = self._reports, []
        produced, failures = self.produced, self.failures
        for entry, epoch, err in reports:
            self._delivered(entry, epoch, err)
        if self._on_counts is not None:
            self._on_counts(self.produced - produced, self.failures - failures)
