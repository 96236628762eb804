"""Wires the stages: consume → decode → validate → transform → batch → deliver → commit.

All pipeline state lives on the asyncio loop thread. One coroutine (``run``) drives the
consumer through its owner thread; delivery tasks and dead-letter acks finish records in the
offset tracker; commits carry only the contiguous frontier of owned partitions.

The hot path (``_process``) is a plain loop over the consumed batch: no task, future or lock
per record; each message is serialized once and its bytes go straight into a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, Message
from prometheus_client import Counter

from worker import replay_mark, tracing
from worker.accepted_store import AcceptedStore
from worker.aep.delivery import Deliverer
from worker.batching import BODY_OVERHEAD, Batch, Batcher, MessageTooLarge
from worker.config import Settings
from worker.dlq import DeadLetter, SourceRecord
from worker.dlq_guard import DlqGuard
from worker.dlq_producer import DeadLetterProducer
from worker.events import CanonicalEvent, DecodeError, customer_id, decode
from worker.health import HealthState
from worker.kafka import GUARD_MARK, Assigned, ConsumerOwner, describe_error
from worker.logs import get_logger
from worker.mapping import MappingContext
from worker.metrics import Metrics
from worker.offsets import TP, OffsetTracker
from worker.profile_order import ProfileOrder
from worker.rate_limit import RateLimit
from worker.receipts import ReceiptProducer
from worker.receipts import encode as encode_receipt
from worker.record_age import UnfinishedAges
from worker.rendering import RenderError, render
from worker.routing import RouteTable, Target
from worker.run_bounds import RunBounds
from worker.schemas import SchemaStore

log = get_logger(__name__)


class FatalPipelineError(Exception):
    """A configured ``fail`` policy fired, or the consumer cannot go on."""


class Part:
    """One (record, target) in flight; a record fanning out to two targets has two parts.

    A plain slotted class: one is built per record and target, and a dataclass's generated
    ``__init__`` stays Python code when this module is compiled (worker.compiled)."""

    __slots__ = ("created_ms", "event", "event_id", "generation", "msg", "nbytes", "offset",
                 "order_key", "org_id", "target", "tp")  # fmt: skip

    def __init__(
        self, tp: TP, offset: int, generation: int, msg: Message, event: str, target: str,
        nbytes: int, created_ms: int | None = None,
        order_key: tuple[str, int, str] | None = None, event_id: str = "", org_id: int = 0,
    ) -> None:
        self.tp = tp
        self.offset = offset
        self.generation = generation
        self.msg = msg
        self.event = event
        self.target = target
        self.nbytes = nbytes
        self.created_ms = created_ms  # the event's createdAt, for end-to-end latency
        self.order_key = order_key  # (target, orgId, customerId): profiles only
        self.event_id = event_id  # Capillary's eventId and orgId: for delivery receipts
        self.org_id = org_id

    def __repr__(self) -> str:
        return (f"Part({self.tp[0]}[{self.tp[1]}]@{self.offset}, event={self.event!r}, "
                f"target={self.target!r})")  # fmt: skip


class _Queues:
    """Batches waiting for a delivery slot; raw single-message requests apart from batch
    requests (each with its own concurrency), so neither waits behind the other."""

    __slots__ = ("batches", "singles")

    def __init__(self) -> None:
        self.batches: deque[Batch[Part]] = deque()
        self.singles: deque[Batch[Part]] = deque()

    def __len__(self) -> int:
        return len(self.batches) + len(self.singles)


def source_record(msg: Message) -> SourceRecord:
    ts_type, ts = msg.timestamp()
    return SourceRecord(
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        timestamp_ms=None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
        key=msg.key(),
        value=msg.value(),
        headers=[(k, v or b"") for k, v in cast(list[tuple[str, bytes]], msg.headers() or [])],
    )


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        schemas: SchemaStore,
        targets: dict[str, Target],
        routes: RouteTable,
        *,
        metrics: Metrics,
        health: HealthState,
        reset_dlq_guard: bool = False,
        exit_when_drained: bool = False,
        bounds: RunBounds | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.settings = settings
        self.schemas = schemas
        self.targets = targets
        self.routes = routes
        self.metrics = metrics
        self._accepted_store: AcceptedStore = metrics.accepted_store  # typed: a direct call
        # ~40% of profile updates are superseded: labels() per update was 1.6% of the CPU.
        # Made at the first one (a series appears only once something was superseded).
        self._superseded_total: Counter | None = None
        # Counted here and added to the counter once per consume round, response and
        # observe(): its inc() takes a lock, and it ran for every superseded update.
        self._superseded_n = 0
        self.health = health
        self.reset_dlq_guard = reset_dlq_guard
        self.exit_when_drained = exit_when_drained
        self.bounds = bounds  # a bounded run (side replay): stop at these end offsets
        self.rate_limit = rate_limit
        self._bounds_paused: set[TP] = set()
        # Below a replay mark's offset, records go to ExperienceEvent targets only (replay_mark).
        self._replay_below: dict[TP, int] = {}
        self.replay_routes = routes.restricted(lambda t: not t.family.startswith("profile_"))
        self.ctx = MappingContext.from_settings(settings.mapping)
        b = settings.batching
        self.batcher: Batcher[Part] = Batcher(b.max_messages, b.max_bytes, b.linger_s)
        self.tracker = OffsetTracker()
        self.ages = UnfinishedAges()
        self.guard = DlqGuard(settings.dlq_guard)
        # AEP's verdicts arrive later than the consume-time ones; mixing both in one window
        # let a backlog's consume-time successes run ahead of its rejections, so a minority of
        # rejections tripped the guard. Each clock gets its own window; either trips the worker.
        self.aep_guard = DlqGuard(settings.dlq_guard)
        self.in_flight_bytes = 0
        self.pause_reasons: dict[str, str] = {}
        self._paused = False
        self._queue = _Queues()
        self._active: set[asyncio.Task[None]] = set()
        self._raw_active: set[asyncio.Task[None]] = set()  # the raw requests among _active
        allowed = settings.policy.allowed_org_ids
        self.allowed_orgs = None if allowed is None else frozenset(allowed)
        self.order: ProfileOrder[Part] = ProfileOrder(settings.profile_order.max_identities)
        self._draining = False  # revoking or shutting down: released updates go out at once
        self._stop = asyncio.Event()
        self.fatal: str | None = None
        self.closing = False
        self._share_total = -1  # the partition total the rate share was last computed with
        self._assigned_at: dict[TP, int] = {}
        self._clear_marks: set[TP] = set()  # partitions whose old trip mark must be overwritten
        self._seek_requests: list[tuple[TP, str]] = []
        self._generations = 1 << 40  # for re-tracking after a seek; above the consumer's counter
        # When the current consume call began: batches opened by its records linger from then.
        self._consume_started = 0.0
        self._taken_at: float | None = None
        # Closes batches at their linger deadline even while run() awaits a consume or a
        # commit (a synchronous commit holds the loop's consume/due cycle for its round trip):
        # at 2,000 events/s the p99 time a request's records were gathered went 411 -> 282 ms.
        self._linger_timer: asyncio.TimerHandle | None = None
        # Wired in attach(): they need the running loop.
        self.consumer: ConsumerOwner
        self.dlq: DeadLetterProducer
        self.deliverer: Deliverer[Part]
        # Delivery receipts (optional): accepted parts wait here for one flush per response.
        self.receipts: ReceiptProducer | None = None
        self._receipt_buf: list[tuple[Part, str | None, str | None]] = []

    def attach(
        self, consumer: ConsumerOwner, dlq: DeadLetterProducer, deliverer: Deliverer[Part],
        receipts: ReceiptProducer | None = None,
    ) -> None:
        self.consumer = consumer
        self.dlq = dlq
        self.deliverer = deliverer
        self.receipts = receipts

    def stop(self) -> None:
        self._stop.set()

    # -- the hot path --------------------------------------------------------------------------

    def _process(self, msgs: list[Message]) -> None:
        started = opened_at = self._taken_at = self._consume_started
        # A record appended while the loop was busy (a round, a commit) waited in librdkafka
        # before this consume call began: a batch it opens lingers from its append time, so
        # linger bounds its wait for batch-mates (p99 at 2,000/s, same load: 359 -> 287 ms).
        # Only for records younger than the linger: a backlog's old records open batches at
        # the consume start, as before, so they still fill up. min(): a broker clock ahead of
        # ours changes nothing.
        fresh_after = started - self.batcher.linger_s
        wall_to_mono = started - time.time()
        tracker = self.tracker
        policy = self.settings.policy
        consumed: dict[str, int] = {}
        bounds = self.bounds
        replay_below = self._replay_below
        last_tp: TP | None = None
        generation: int | None = None
        ctx = self.ctx
        clamps = ctx.clamps
        for msg in msgs:
            err = msg.error()
            if err is not None:
                self._consumer_error(msg, err)
                continue
            topic = msg.topic() or ""
            partition = msg.partition() or 0
            offset = msg.offset() or 0
            if last_tp is None or partition != last_tp[1] or topic != last_tp[0]:
                # First of a run of one partition: the timestamp for the oldest-unfinished
                # age, and the generation (rebalances cannot run inside this loop).
                tp = last_tp = (topic, partition)
                self.ages.mark(tp, offset, msg)
                generation = tracker.generation(tp)
                ts_type, ts = msg.timestamp()
                if ts_type != TIMESTAMP_NOT_AVAILABLE:
                    appended = ts / 1000 + wall_to_mono
                    if fresh_after < appended < opened_at:
                        opened_at = self._taken_at = appended
            consumed[topic] = consumed.get(topic, 0) + 1
            if generation is None or self.guard.tripped:
                # Not ours (any more), or the guard stopped us: never tracked, so never
                # committed past; it is consumed again after the operator's reset.
                continue
            if bounds is not None and bounds.beyond(tp, offset):
                continue  # past a bounded run's end: not ours to process, never committed
            value = msg.value()
            if value is None:
                self._policy(msg, tp, offset, generation, "tombstone", policy.tombstone)
                continue
            try:
                event = decode(value)
            except DecodeError as bad:
                tracker.add(tp, offset, generation, 1)
                self._dead_letter(
                    Part(tp, offset, generation, msg, "", "", len(value)),
                    DeadLetter("decode", "DecodeError", bad.kind, str(bad), path=bad.path),
                )
                continue
            if self.allowed_orgs is not None and event.org_id not in self.allowed_orgs:
                tracker.add(tp, offset, generation, 0)  # other organisations, on purpose
                self.metrics.filtered.labels("org-not-allowed").inc()
                continue
            routes = self.routes
            if replay_below and offset < replay_below.get(tp, -1):
                routes = self.replay_routes
            targets = routes.lookup(event.org_id, event.name)
            if targets is not None and not targets:  # profile-only event in a replay
                tracker.add(tp, offset, generation, 0)
                self.metrics.filtered.labels("replay-profile-skip").inc()
                continue
            if not targets:
                self._policy(
                    msg, tp, offset, generation, "unknown-event", policy.unknown_event,
                    event=event,
                )
                continue
            validator = self.schemas.capillary(event.name)
            violation = None if validator is None else validator.first_violation(event.data)
            if violation is not None:
                tracker.add(tp, offset, generation, 1)
                self._dead_letter(
                    Part(tp, offset, generation, msg, event.name, "", len(value)),
                    DeadLetter(
                        "validate", "SchemaViolation", violation.keyword, str(violation),
                        path="/data" + violation.path, event_name=event.name,
                    ),
                )
                continue
            tracker.add(tp, offset, generation, len(targets))
            valid = True
            clamps.record = msg  # a future createdAt is clamped to its timestamp
            for target in targets:
                part = Part(
                    tp, offset, generation, msg, event.name, target.name, len(value),
                    event.created_at_ms, None, event.event_id, event.org_id,
                )
                try:
                    payload = render(event, target, ctx)
                except RenderError as unrenderable:  # not "exc" again: see test_compiled_variant
                    self._dead_letter(part, unrenderable.why)
                    valid = False
                    continue
                part.nbytes = len(payload)
                self.in_flight_bytes += part.nbytes
                if target.ordered:
                    valid = self._offer(target, part, payload, event) and valid
                else:
                    valid = self._submit(target, part, payload) and valid
            if valid:
                self.guard.valid()
        for topic, n in consumed.items():
            self.metrics.consumed.labels(topic).inc(n)
        self._count_superseded()
        clamps.record = None
        clamped = clamps.take()
        if clamped:
            self.metrics.timestamps_clamped.inc(clamped)
        self._taken_at = None
        if opened_at < started and self._linger_timer is not None:
            # A batch opened before the deadline the armed timer was set for.
            self._linger_timer.cancel()
            self._linger_timer = None
            self._arm_linger()

    def _submit(self, target: Target, part: Part, payload: bytes) -> bool:
        """Into the target's batch (raw: a request of its own); False if dead-lettered."""
        if target.raw:
            self._enqueue(Batch(target.name, [part], [payload], len(payload) + BODY_OVERHEAD, 0))
            return True
        try:
            full = self.batcher.add(target.name, part, payload, self._taken_at)
        except MessageTooLarge as exc:
            self.in_flight_bytes -= part.nbytes
            part.nbytes = 0
            if part.order_key is not None:
                self.order.finished(part.order_key, part, delivered=False)
            self._dead_letter(
                part,
                DeadLetter(
                    "transform", "MessageTooLarge", "too-large", str(exc),
                    target=target.name, event_name=part.event,
                ),
            )
            return False
        if full is not None:
            self._enqueue(full)
        if self._linger_timer is None:
            self._arm_linger()
        return True

    def _arm_linger(self) -> None:
        """A timer for the earliest open batch's deadline. Batches open in time order, so a
        timer already armed is never later than any deadline opened since (a round that opened
        one from an earlier append time re-arms it: _process)."""
        due = self.batcher.next_deadline()
        if due is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside the loop (tools): run() checks deadlines itself
            return
        # +1 ms: the loop may run a timer a little early; the batch must be due by then.
        delay = max(due - time.monotonic(), 0.0) + 0.001
        self._linger_timer = loop.call_later(delay, self._linger_expired)

    def _linger_expired(self) -> None:
        self._linger_timer = None
        for batch in self.batcher.due():
            self._enqueue(batch)
        self._arm_linger()

    # -- profiles never go backwards (worker.profile_order) -------------------------------------

    def _offer(self, target: Target, part: Part, payload: bytes, event: CanonicalEvent) -> bool:
        cid = customer_id(event)
        if cid is None:  # no identity to order by (the input schema normally prevents it)
            return self._submit(target, part, payload)
        key = part.order_key = (target.name, event.org_id, cid)
        offer = self.order.offer(key, event.created_at_ms, part, payload)
        if offer.superseded is not None:
            self._superseded(offer.superseded)
        return self._submit(target, part, payload) if offer.send else True

    def _superseded(self, part: Part) -> None:
        """A newer update of the same identity replaces this one: it is never sent."""
        self._superseded_n += 1
        self._finish(part)
        part.nbytes = 0

    def _release(self, part: Part, delivered: bool) -> None:
        """``part`` (a profile update) left flight: send the update that waited for it."""
        assert part.order_key is not None
        released = self.order.finished(part.order_key, part, delivered)
        if released is None:
            return
        if not released.send:
            self._superseded(released.item)
            return
        target = self.targets[released.item.target]
        if self._submit(target, released.item, released.payload) and self._draining:
            for batch in self.batcher.flush(target.name):
                self._enqueue(batch)

    def _sendable(self, batch: Batch[Part]) -> Batch[Part] | None:
        """The batch without the updates superseded while it waited (None if none is left)."""
        order = self.order
        keep = [
            i for i, part in enumerate(batch.items)
            if part.order_key is None or order.sending(part.order_key, part)
        ]
        if len(keep) == len(batch.items):
            return batch
        return batch.subset(keep) if keep else None

    def _policy(
        self, msg: Message, tp: TP, offset: int, generation: int, what: str, policy: str,
        *, event: CanonicalEvent | None = None,
    ) -> None:
        name = event.name if event is not None else ""
        if policy == "filter":
            self.tracker.add(tp, offset, generation, 0)
            self.metrics.filtered.labels(what).inc()
            return
        if policy == "fail":
            # Never finished, so never committed past; the process stops loudly.
            self.tracker.add(tp, offset, generation, 1)
            self.fatal = f"{what} at {tp[0]}[{tp[1]}]@{offset} and policy is 'fail'"
            with tracing.bound(tracing.from_headers(msg.headers())):
                log.error("policy_fail", what=what, topic=tp[0], partition=tp[1], offset=offset)
            self._stop.set()
            return
        self.tracker.add(tp, offset, generation, 1)
        reason = "no route for this org and event name" if what == "unknown-event" else "tombstone"
        self._dead_letter(
            Part(tp, offset, generation, msg, name, "", len(msg.value() or b"")),
            DeadLetter("validate", "Policy", what, reason, event_name=name),
        )

    def _consumer_error(self, msg: Message, err: KafkaError) -> None:
        code = err.code()
        if code == KafkaError._PARTITION_EOF:
            return
        if code == KafkaError._AUTO_OFFSET_RESET:
            self.metrics.offset_out_of_range.inc()
            tp = (msg.topic() or "", msg.partition() or 0)
            policy = self.settings.kafka.offset_out_of_range
            log.error(
                "offset_out_of_range", topic=tp[0], partition=tp[1], policy=policy,
                error=describe_error(err),
            )
            if policy == "fail":
                self.fatal = (
                    f"committed offset of {tp[0]}[{tp[1]}] is out of range (retention overtook "
                    "the group); set kafka.offset_out_of_range or reset offsets with "
                    "'capillary-aep replay'"
                )
                self._stop.set()
            else:
                self._seek_requests.append((tp, policy))
            return
        if err.fatal():
            self.fatal = f"fatal consumer error: {describe_error(err)}"
            self._stop.set()
        else:
            log.warning("consumer_error", error=describe_error(err))

    # -- outcomes --------------------------------------------------------------------------

    def _finish(self, part: Part) -> None:
        self.in_flight_bytes -= part.nbytes if part.target else 0
        self.tracker.finish(part.tp, part.offset, part.generation)

    def _dead_letter(self, part: Part, why: DeadLetter) -> None:
        guard = self.aep_guard if why.stage == "deliver" else self.guard
        if self.guard.tripped or not guard.allow_invalid():
            if not self.guard.tripped:
                self.guard.trip(guard.reason)
            self._trip(f"{part.tp[0]}[{part.tp[1]}]@{part.offset}")
            return
        if part.target == "":
            part.nbytes = 0
        src = source_record(part.msg)
        trace = tracing.from_headers(src.headers)
        if trace is not None:
            why.extra["trace-id"] = trace.trace_id
        with tracing.bound(trace, topic=part.tp[0], partition=part.tp[1], offset=part.offset):
            log.warning(
                "record_dead_lettered", stage=why.stage, error_class=why.error_class,
                error_kind=why.error_kind, path=why.path or None, target=part.target or None,
                event_name=part.event or None,
            )
        self.dlq.send(src, why, (part, why.stage, why.error_class, why.error_kind))

    def _dlq_acked(self, token: Any) -> None:
        part, stage, error_class, kind = token
        self.metrics.dead_lettered.labels(stage, error_class, kind).inc()
        self._finish(part)

    def _dlq_availability(self, available: bool) -> None:
        self.health.dlq_down = not available
        self._set_pause("dlq-unavailable", None if available else "dead-letter topic unwritable")

    def _trip(self, where: str) -> None:
        if "dlq-guard" in self.pause_reasons:
            return
        self.metrics.dlq_guard_tripped.set(1)
        self.health.guard = self.guard.reason
        self._set_pause("dlq-guard", self.guard.reason)
        log.critical(
            "dlq_guard_tripped", reason=self.guard.reason, at=where,
            action="fix the cause, then restart once with --reset-dlq-guard",
        )

    # DeliverySink -------------------------------------------------------------------------

    def accepted(self, item: Part, xaction_id: str | None, batch_id: str | None = None) -> None:
        self.aep_guard.valid()
        ts_type, ts = item.msg.timestamp()
        self._accepted_store.add(
            item.event or "other", item.target, time.time(), item.created_ms,
            None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
        )
        if self.receipts is None:
            self._finish(item)
        else:  # finished once Kafka acked its receipt
            buf = self._receipt_buf
            buf.append((item, xaction_id, batch_id))
            if len(buf) == 1:  # the rest of this response joins before the flush runs
                asyncio.get_running_loop().call_soon(self._send_receipts)
        if item.order_key is not None:
            self._release(item, delivered=True)

    def rejected(
        self, item: Part, status: int | None, reason: str, batch_id: str | None
    ) -> None:
        self.in_flight_bytes -= item.nbytes
        item.nbytes = 0
        self._dead_letter(
            item,
            DeadLetter(
                "deliver", "AepRejected", f"aep-{status}" if status else "aep-rejected",
                reason[:300], target=item.target, event_name=item.event, aep_status=status,
                aep_batch_id=batch_id,
            ),
        )
        if item.order_key is not None:
            self._release(item, delivered=False)

    def _send_receipts(self) -> None:
        """One tight loop over the accepted parts buffered since the last flush."""
        buf, self._receipt_buf = self._receipt_buf, []
        if self.receipts is None or not buf:
            return
        now_ms = int(time.time() * 1000)
        targets = self.targets
        rows = []
        for part, xaction_id, batch_id in buf:
            ts_type, ts = part.msg.timestamp()
            key, value = encode_receipt(
                topic=part.tp[0], partition=part.tp[1], offset=part.offset,
                event_id=part.event_id, event=part.event, org_id=part.org_id,
                target=part.target, dataset=targets[part.target].dataset_id,
                batch_id=batch_id, xaction_id=xaction_id, accepted_ms=now_ms,
                kafka_ts_ms=None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
            )
            rows.append((key, value, part))
        self.receipts.send_many(rows)

    def _receipt_acked(self, part: Part) -> None:
        self._finish(part)

    def _receipts_availability(self, available: bool) -> None:
        self.health.receipts_down = not available
        self._set_pause("receipts-unavailable", None if available else "receipts topic unwritable")

    def _receipt_counts(self, produced: int, failed: int) -> None:
        if produced:
            self.metrics.receipts.labels("produced").inc(produced)
        if failed:
            self.metrics.receipts.labels("failed").inc(failed)

    def blocked(self, reason: str | None) -> None:
        self.health.blocked = reason
        self.metrics.blocked.set(0 if reason is None else 1)
        self._set_pause("aep-blocked", reason)
        if reason is not None:
            log.error("delivery_blocked", reason=reason)
        else:
            log.info("delivery_unblocked")

    def retrying(self, cause: str, delay: float) -> None:
        self.metrics.retries.labels(cause).inc()

    # -- batches and delivery tasks --------------------------------------------------------------

    def _enqueue(self, batch: Batch[Part]) -> None:
        if self.targets[batch.key].raw:
            self._queue.singles.append(batch)
        else:
            self._queue.batches.append(batch)
        self._pump()

    def _pump(self) -> None:
        d = self.settings.delivery
        # Delivery tasks: at least `concurrency` (a task backing off holds no request slot), up
        # to the adaptive in-flight limit, which the flow gate enforces on requests themselves.
        flow = self.deliverer.flow
        limit = d.concurrency if flow is None else max(d.concurrency, flow.limit)
        self._dispatch(self._queue.batches, limit, None)
        self._dispatch(self._queue.singles, d.raw_concurrency, self._raw_active)

    def _dispatch(
        self, queue: deque[Batch[Part]], limit: int, raw: set[asyncio.Task[None]] | None
    ) -> None:
        while queue and (
            len(raw) < limit if raw is not None else len(self._active) - len(self._raw_active)
            < limit
        ):
            batch = queue.popleft()
            target = self.targets[batch.key]
            if target.ordered:
                sendable = self._sendable(batch)
                if sendable is None:
                    continue
                batch = sendable
            # Counted here: superseded profile updates have left the batch by now.
            self.metrics.batches.labels(batch.key).inc()
            self.metrics.batch_records.observe(len(batch.items))
            self.metrics.batch_bytes.observe(batch.nbytes)
            task = asyncio.create_task(
                self.deliverer.deliver(target.url, batch, target.headers, gated=raw is None)
            )
            self._active.add(task)
            if raw is not None:
                raw.add(task)
            task.add_done_callback(self._delivered)

    def _delivered(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._raw_active.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # deliver() never raises by contract; if it does, its records stay unfinished
            # (never committed) and the loud log says why.
            log.error("delivery_task_failed", error=repr(task.exception())[:300])
        self._count_superseded()  # updates released by this response may have been superseded
        if not self.closing:
            self._pump()

    # -- pause, backpressure -----------------------------------------------------------------

    def _set_pause(self, reason: str, why: str | None) -> None:
        if why is None:
            self.pause_reasons.pop(reason, None)
        else:
            self.pause_reasons[reason] = why
        self.metrics.paused.labels(reason).set(0 if why is None else 1)

    def _backpressure(self) -> None:
        flow = self.settings.flow
        records = self.tracker.pending()
        nbytes = self.in_flight_bytes
        self.metrics.in_flight_records.set(records)
        self.metrics.in_flight_bytes.set(nbytes)
        if records >= flow.max_in_flight_records or nbytes >= flow.max_in_flight_bytes:
            if "backpressure" not in self.pause_reasons:
                log.info("backpressure_pause", records=records, bytes=nbytes)
            self._set_pause("backpressure", f"{records} records / {nbytes} bytes in flight")
        elif "backpressure" in self.pause_reasons and (
            records <= flow.max_in_flight_records * flow.resume_ratio
            and nbytes <= flow.max_in_flight_bytes * flow.resume_ratio
        ):
            self._set_pause("backpressure", None)
            log.info("backpressure_resume", records=records, bytes=nbytes)
        self._budget_backpressure(records)

    def _budget_backpressure(self, records: int) -> None:
        """Consume no further ahead than the rate share sends in half the revoke drain timeout
        (at least two batches): a revoked partition's backlog then drains before the hand-off
        instead of being delivered twice, and a small share holds little in memory."""
        flow = self.deliverer.flow
        rate = None if flow is None else flow.messages_rate
        held = "rate-budget" in self.pause_reasons
        if rate is None:
            if held:
                self._set_pause("rate-budget", None)
            return
        cap = max(
            rate * self.settings.shutdown.revoke_drain_timeout_s / 2,
            2.0 * self.settings.batching.max_messages,
        )
        if records >= cap and not held:
            why = f"{records} records ahead of a {rate:.0f} messages/s share"
            self._set_pause("rate-budget", why)
        elif held and records <= cap * self.settings.flow.resume_ratio:
            self._set_pause("rate-budget", None)

    def _count_superseded(self) -> None:
        n = self._superseded_n
        if n:
            self._superseded_n = 0
            counter = self._superseded_total
            if counter is None:
                counter = self._superseded_total = self.metrics.filtered.labels("superseded")
            counter.inc(n)

    def observe(self) -> None:
        """Refresh the gauges that are not updated on the way (called about once a second)."""
        self._count_superseded()
        owned = self.tracker.owned()
        self.metrics.set_unfinished_ages(
            self.ages.ages(self.tracker.oldest_pending(), owned, time.time())
        )
        self.metrics.assigned_partitions.set(len(owned))
        self.metrics.paused_partitions.set(len(owned) if self._paused else 0)

    async def _reconcile_pause(self) -> None:
        want = bool(self.pause_reasons)
        if want == self._paused:
            return
        tps = await self.consumer.assignment()
        if want:
            await self.consumer.pause(tps)
        else:
            bounds = self.bounds  # a bounded run's finished partitions stay paused
            await self.consumer.resume(
                [tp for tp in tps if bounds is None or not bounds.reached(tp)]
            )
        self._paused = want

    # -- rebalance (RebalanceListener, called on the loop from the owner thread) -----------------

    async def partitions_assigned(self, assigned: list[Assigned]) -> bool:
        self.health.member = True
        for a in assigned:
            self.tracker.assign(a.tp, a.generation)
            if a.start >= 0:
                self._assigned_at[a.tp] = a.start
            metadata, below = replay_mark.split(a.metadata)
            if below is not None and a.committed is not None and a.committed < below:
                self._replay_below[a.tp] = below
                log.info(
                    "replay_skips_profile_targets", topic=a.tp[0], partition=a.tp[1],
                    below=below, records=below - a.committed,
                )
            if metadata.startswith(GUARD_MARK):
                if self.reset_dlq_guard:
                    log.warning("dlq_guard_reset", topic=a.tp[0], partition=a.tp[1])
                    self._clear_marks.add(a.tp)  # recommit even if nothing moves here
                else:
                    self.guard.trip(metadata.removeprefix(GUARD_MARK).lstrip(":") or "earlier")
                    self._trip(f"{a.tp[0]}[{a.tp[1]}] (mark in the committed offset)")
        self._update_share()
        return bool(self.pause_reasons) or self.closing

    async def partitions_revoked(self, tps: list[TP]) -> dict[TP, tuple[int, str]]:
        if not self.closing:
            # Hand everything buffered to delivery, then wait (bounded) for these partitions.
            self._draining = True
            for batch in self.batcher.flush():
                self._enqueue(batch)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.shutdown.revoke_drain_timeout_s
            # Polled: completions arrive from delivery tasks and DLQ acks alike.
            while loop.time() < deadline and any(self.tracker.pending(t) for t in tps):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            self._draining = False
        self._forget_waiting(tps)
        offsets = self._commit_offsets(tps)
        for tp in tps:
            self.tracker.revoke(tp)
            self._clear_marks.discard(tp)
            self._assigned_at.pop(tp, None)
            self._replay_below.pop(tp, None)
        self._update_share()
        return offsets

    def _update_share(self) -> None:
        """This replica's share of the organisation's rate budget: its partitions out of the
        subscribed topics' total (cluster metadata, re-read by the consumer at each rebalance)."""
        flow = self.deliverer.flow
        self._share_total = self.consumer.total_partitions
        if flow is not None:
            flow.set_share(len(self.tracker.owned()), self._share_total)

    def _forget_waiting(self, tps: list[TP]) -> None:
        """Waiting profile updates of partitions we no longer own are not ours to send."""
        gone = set(tps)
        for part in self.order.forget_waiting(lambda p: p.tp in gone):
            self.in_flight_bytes -= part.nbytes
            part.nbytes = 0

    async def partitions_lost(self, tps: list[TP]) -> None:
        self._forget_waiting(tps)
        for tp in tps:
            self.tracker.revoke(tp)
            self._assigned_at.pop(tp, None)
            self._replay_below.pop(tp, None)
        self._update_share()

    # -- commits -----------------------------------------------------------------------------

    def _metadata(self) -> str:
        return f"{GUARD_MARK}:{self.guard.reason}" if self.guard.tripped else ""

    def _commit_offsets(self, only: Iterable[TP] | None = None) -> dict[TP, tuple[int, str]]:
        ready = self.tracker.committable()
        if only is not None:
            wanted = set(only)
            ready = {tp: o for tp, o in ready.items() if tp in wanted}
        meta = self._metadata()
        # A new trip mark must reach every owned partition, and a cleared one must be
        # overwritten everywhere, whether or not the partition's frontier moved.
        must = self.tracker.owned() if meta else self._clear_marks & self.tracker.owned()
        for tp in must:
            if only is None or tp in set(only):
                o = self.tracker.frontier(tp)
                if o is None:
                    o = self._assigned_at.get(tp)
                if o is not None:
                    ready.setdefault(tp, o)
        below = self._replay_below
        return {  # the replay mark rides along until the frontier passes it
            tp: (o, replay_mark.attach(meta, below[tp]) if o < below.get(tp, -1) else meta)
            for tp, o in ready.items()
        }

    async def commit(self) -> bool:
        """Commit the frontier; False when the broker refused it (retried next tick)."""
        offsets = self._commit_offsets()
        if not offsets:
            return True
        started = time.monotonic()
        ok = await self.consumer.commit(offsets)
        self.metrics.commit_duration.observe(time.monotonic() - started)
        if ok:
            self.tracker.mark_committed({tp: o for tp, (o, _) in offsets.items()})
            self._clear_marks.difference_update(offsets)
            for tp, (o, _) in offsets.items():
                if o >= self._replay_below.get(tp, o + 1):
                    self._replay_below.pop(tp)  # the replayed range is behind us
            self.metrics.commits.labels("ok").inc()
            self.metrics.last_commit.set(time.time())
        else:
            self.metrics.commits.labels("failed").inc()
        return ok

    # -- drained detection (make run, side replays) ---------------------------------------------

    async def drained(self) -> bool:
        if self.tracker.pending() or self._queue or self._active or self.batcher.open_counts()[0]:
            return False
        tps = list(self.tracker.owned())
        if not tps:
            return False
        marks = await self.consumer.watermarks(tps)
        # The consumer's position moves past transaction markers (e.g. after a DLQ redrive),
        # which the frontier (one past the last record) never reaches.
        positions = await self.consumer.positions(tps)
        for tp, (_low, high) in marks.items():
            pos = self.tracker.frontier(tp)
            if pos is None:
                pos = self._assigned_at.get(tp)
            if pos is None:
                pos = _low
            if max(pos, positions.get(tp, -1)) < high:
                return False
        return True

    # -- the driving coroutine -------------------------------------------------------------------

    async def _apply_seeks(self) -> None:
        while self._seek_requests:
            tp, policy = self._seek_requests.pop()
            low, high = (await self.consumer.watermarks([tp]))[tp]
            await self.consumer.reposition(tp, low if policy == "earliest" else high)
            self._generations += 1  # offsets restart lower: track them afresh
            self.tracker.assign(tp, self._generations)
            log.warning("offset_reset_by_policy", topic=tp[0], partition=tp[1], policy=policy)

    async def _consume(self) -> list[Message]:
        k = self.settings.kafka
        n = k.consume_batch_size
        if self.rate_limit is not None:
            n = min(n, self.rate_limit.allowance())
            if n < 1:
                await asyncio.sleep(min(self.rate_limit.wait_s(), 0.5))
                return []
        # Never wait past an open batch's linger: it is sent on time, not at the next return.
        wait = k.consume_timeout_s
        self._consume_started = now = time.monotonic()
        due = self.batcher.next_deadline()
        if due is not None:
            wait = min(wait, max(due - now, 0.0))
        msgs = await self.consumer.consume(n, wait)
        if self.rate_limit is not None:
            self.rate_limit.spend(len(msgs))
        return msgs

    async def _bounded_step(self) -> bool:
        """Pause partitions that reached their end; True once all did and all is finished."""
        bounds = self.bounds
        assert bounds is not None
        owned = [tp for tp in bounds.open() if self.tracker.is_owned(tp)]
        if owned:
            positions = await self.consumer.positions(owned)
            for tp in owned:
                start = self._assigned_at.get(tp)  # covers an empty window (start == end)
                bounds.reach(tp, max(positions.get(tp, -1), -1 if start is None else start))
        newly = [tp for tp in bounds.ends if bounds.reached(tp) and tp not in self._bounds_paused]
        if newly:
            await self.consumer.pause(newly)
            self._bounds_paused.update(newly)
        if bounds.open():
            return False
        return not (
            self.tracker.pending() or self._queue or self._active or self.batcher.open_counts()[0]
        )

    async def run(self) -> None:
        k = self.settings.kafka
        await self.consumer.subscribe()
        log.info("subscribed", group=k.group_id)
        loop = asyncio.get_running_loop()
        next_commit = loop.time() + k.commit_interval_s
        try:
            while not self._stop.is_set():
                await self._reconcile_pause()
                msgs = await self._consume()
                self.health.polled()
                if self.consumer.total_partitions != self._share_total:
                    self._update_share()  # the total is re-read after a rebalance's callbacks
                if msgs:
                    self._process(msgs)
                if self.bounds is not None and await self._bounded_step():
                    log.info("bounded_run_reached_end")
                    self._stop.set()
                for batch in self.batcher.due():
                    self._enqueue(batch)
                self._backpressure()
                if self._seek_requests:
                    await self._apply_seeks()
                if loop.time() >= next_commit:
                    await self.commit()
                    next_commit = loop.time() + k.commit_interval_s
                    if self.exit_when_drained and await self.drained():
                        log.info("drained")
                        self._stop.set()
        except Exception as exc:  # never leave without draining and committing what finished
            log.exception("pipeline_failed")
            self.fatal = f"internal error: {type(exc).__name__}: {str(exc)[:200]}"
        await self.shutdown()

    async def _commit_through_rebalance(self) -> None:
        """The final commit was refused, typically REBALANCE_IN_PROGRESS: a member joined or
        left while we drained without polling. Closing now would hand finished records to the
        next owner (its close-time revoke commit fails with _DESTROY). So keep serving the
        group with every partition paused: the revoke callback commits what moves away
        (``closing`` skips its drain), and the rest commits under the new generation."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.settings.shutdown.commit_retry_s
        attempts = 1
        while loop.time() < until:
            with contextlib.suppress(Exception):
                await self.consumer.pause(await self.consumer.assignment())
            # Nothing consumed here is tracked, so no commit can pass it.
            await self.consumer.consume(100, 0.2)
            attempts += 1
            if await self.commit():
                log.info("final_commit_after_rebalance", attempts=attempts)
                return
        log.warning(
            "final_commit_failed", attempts=attempts,
            unfinished_partitions=len(self._commit_offsets()),
        )

    async def shutdown(self) -> None:
        """Stop consuming → drain until the deadline → cancel → flush DLQ → commit → close."""
        self.health.draining = True
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown.drain_timeout_s
        for batch in self.batcher.flush():
            self._enqueue(batch)
        while (self._queue or self._active) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        self.closing = True
        for task in list(self._active):
            task.cancel()
        if self._active:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._active, return_exceptions=True)
        left = await self.dlq.flush(max(deadline - loop.time(), 1.0))
        receipts_left = 0
        if self.receipts is not None:
            self._send_receipts()
            receipts_left = await self.receipts.flush(max(deadline - loop.time(), 1.0))
        if not await self.commit():
            await self._commit_through_rebalance()
        self._count_superseded()
        log.info(
            "shutdown",
            unfinished_records=self.tracker.pending(),
            dlq_unacked=left,
            receipts_unacked=receipts_left if self.receipts is not None else None,
            undelivered_batches=len(self._queue),
        )
        await self.consumer.close()
        self.dlq.close()
        if self.receipts is not None:
            self.receipts.close()
