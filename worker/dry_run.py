"""``capillary-aep run --dry-run``: consume, transform and validate; print, never send or commit.

It reads the configured topics with the worker's settings under a throwaway consumer group
(partitions assigned directly: nothing joins or disturbs the real group, and nothing is ever
committed), takes each record through the worker's own decisions (decode, orgId allow-list,
routes, input schema, then for each target the mapping, XDM validation and size check of
``worker.rendering.render``) and writes one JSON line per outcome:

* ``{"source", "event", "eventId", "target", "url", "message"}``: the message the worker would
  send (for a raw route, the raw body), PII masked unless ``show_pii``;
* ``{"source", "event", "target", "deadLetter": {stage, errorClass, errorKind, reason, path}}``:
  what the worker would dead-letter, and why (value-free);
* ``{"source", "filtered": reason}``: what the worker would skip on purpose.

Not simulated: AEP's answers, and profile ordering across records (each record stands alone).
With ``kafka.start_position = "earliest"`` it reads every partition from its start to the end
it had when the run began; with ``"latest"``, new records until ``idle_timeout_s`` passes
without one. ``max_records`` bounds either.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition

from worker.config import Settings
from worker.dlq import DeadLetter
from worker.events import DecodeError, decode
from worker.mapping import DEFAULT_FAMILIES, MAPPERS, MappingContext
from worker.rendering import RenderError, render
from worker.routing import RouteTable, Target, build_routes
from worker.schemas import SchemaStore
from worker.tools.pii import mask

__all__ = ["DryRun", "DryRunSummary", "consume_topics"]


@dataclass(slots=True)
class DryRunSummary:
    records: int = 0
    messages: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)  # "stage/kind" -> count
    filtered: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.dead_letters

    def line(self) -> str:
        dead = sum(self.dead_letters.values())
        text = f"dry run: {self.records} records, {self.messages} messages to send"
        text += f", {dead} would be dead-lettered"
        if dead:
            text += " (" + ", ".join(f"{k}: {n}" for k, n in sorted(self.dead_letters.items()))
            text += ")"
        if self.filtered:
            text += ", filtered: " + ", ".join(
                f"{k}: {n}" for k, n in sorted(self.filtered.items())
            )
        return text


class DryRun:
    """The worker's per-record decisions, writing outcomes instead of acting on them."""

    def __init__(self, settings: Settings, out: BinaryIO, *, show_pii: bool = False) -> None:
        self.settings = settings
        self.out = out
        self.show_pii = show_pii
        # Raises SchemaLoadError / RoutingError on bad configuration, like the worker.
        self.schemas = SchemaStore(user_xdm=settings.xdm.schemas_dir)
        targets, routes = build_routes(settings, self.schemas, MAPPERS.keys(), DEFAULT_FAMILIES)
        self.targets: dict[str, Target] = targets
        self.routes: RouteTable = routes
        self.ctx = MappingContext.from_settings(settings.mapping)
        allowed = settings.policy.allowed_org_ids
        self.allowed = None if allowed is None else frozenset(allowed)
        self.summary = DryRunSummary()

    def process(self, topic: str, partition: int, offset: int, value: bytes | None) -> None:
        source = {"topic": topic, "partition": partition, "offset": offset}
        self.summary.records += 1
        policy = self.settings.policy
        if value is None:
            self._policy(source, "tombstone", policy.tombstone, "")
            return
        try:
            event = decode(value)
        except DecodeError as exc:
            self._dead(source, "", DeadLetter("decode", "DecodeError", exc.kind, str(exc),
                                              path=exc.path))
            return
        if self.allowed is not None and event.org_id not in self.allowed:
            self._filtered(source, "org-not-allowed")
            return
        targets = self.routes.lookup(event.org_id, event.name)
        if not targets:
            self._policy(source, "unknown-event", policy.unknown_event, event.name)
            return
        validator = self.schemas.capillary(event.name)
        violation = None if validator is None else validator.first_violation(event.data)
        if violation is not None:
            self._dead(source, event.name, DeadLetter(
                "validate", "SchemaViolation", violation.keyword, str(violation),
                path="/data" + violation.path, event_name=event.name,
            ))
            return
        for target in targets:
            try:
                payload = render(event, target, self.ctx)
            except RenderError as exc:
                self._dead(source, event.name, exc.why)
                continue
            self.summary.messages += 1
            message: Any = orjson.Fragment(payload)
            if not self.show_pii:
                message = mask(orjson.loads(payload))
            self._write({
                "source": source, "event": event.name, "eventId": event.event_id,
                "target": target.name, "url": target.url, "message": message,
            })

    def _policy(self, source: dict[str, Any], what: str, policy: str, event: str) -> None:
        if policy == "filter":
            self._filtered(source, what)
            return
        reason = "no route for this org and event name" if what == "unknown-event" else what
        self._dead(source, event, DeadLetter("validate", "Policy", what, reason))

    def _filtered(self, source: dict[str, Any], reason: str) -> None:
        self.summary.filtered[reason] += 1
        self._write({"source": source, "filtered": reason})

    def _dead(self, source: dict[str, Any], event: str, why: DeadLetter) -> None:
        self.summary.dead_letters[f"{why.stage}/{why.error_kind}"] += 1
        self._write({
            "source": source, "event": event or None, "target": why.target or None,
            "deadLetter": {
                "stage": why.stage, "errorClass": why.error_class, "errorKind": why.error_kind,
                "reason": why.reason, "path": why.path or None,
            },
        })

    def _write(self, doc: dict[str, Any]) -> None:
        self.out.write(orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE))


def consume_topics(
    settings: Settings,
    dry: DryRun,
    *,
    max_records: int | None = None,
    idle_timeout_s: float = 5.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Feed ``dry`` from the configured topics, under a throwaway group; never commits."""
    k = settings.kafka
    conf: dict[str, Any] = {
        **k.client_config(),
        "group.id": f"{k.group_id}-dry-run-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": k.start_position,
    }
    consumer = Consumer(conf)
    try:
        ends = _assign(consumer, settings)
        next_offsets = {tp: start for tp, (start, _) in ends.items()}
        last_seen = time.monotonic()
        while not should_stop():
            if max_records is not None and dry.summary.records >= max_records:
                return
            if k.start_position == "earliest" and all(
                next_offsets[tp] >= end for tp, (_, end) in ends.items()
            ):
                return
            want = 500 if max_records is None else min(500, max_records - dry.summary.records)
            msgs = consumer.consume(want, 0.2)
            if not msgs:
                if k.start_position == "latest" and time.monotonic() - last_seen > idle_timeout_s:
                    return
                continue
            last_seen = time.monotonic()
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise KafkaException(err)
                    continue
                tp = (msg.topic() or "", msg.partition() or 0)
                offset = msg.offset() or 0
                next_offsets[tp] = offset + 1
                dry.process(tp[0], tp[1], offset, msg.value())
    finally:
        consumer.close()


def _assign(consumer: Consumer, settings: Settings) -> dict[tuple[str, int], tuple[int, int]]:
    """Assign every partition of the input topics; (start, end at start) per partition."""
    k = settings.kafka
    meta = consumer.list_topics(timeout=10)
    names = [t for t in k.topics if t in meta.topics]
    missing = [t for t in k.topics if t not in meta.topics]
    if missing:
        raise KafkaException(f"topics not found: {', '.join(missing)}")
    if k.topic_pattern:
        pattern = re.compile(k.topic_pattern)  # anchored at the start, like librdkafka's "^..."
        names += sorted(
            t for t in meta.topics
            if pattern.match(t) and t not in names and t != k.dlq_topic and not t.startswith("__")
        )
    ends: dict[tuple[str, int], tuple[int, int]] = {}
    assignment = []
    for name in names:
        for partition in sorted(meta.topics[name].partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(name, partition), timeout=10
            )
            start = low if k.start_position == "earliest" else high
            ends[(name, partition)] = (start, high)
            assignment.append(TopicPartition(name, partition, start))
    consumer.assign(assignment)
    return ends
