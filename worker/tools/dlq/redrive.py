"""Redrive: re-publish selected dead letters, exactly once per named job, even when interrupted.

Each job has a progress group (``capillary-aep-redrive.<job>``) holding how far it read each DLQ
partition, and a transactional id of the same name. One Kafka transaction covers a chunk's
produces *and* the progress offsets after it, so a chunk is either entirely published and
recorded, or not at all. A rerun of the same job first fences any earlier run (a killed one's
open transaction is aborted), then reads its progress and continues; it reuses the job's end
offsets and time window (kept in the progress metadata), so its selection is the one the job
started with. Consumers of the target topics must read with ``isolation.level=read_committed``
(librdkafka's default, and the worker's).

A redriven record carries the original key, value and headers, its ``attempt`` header (the
worker raises it if the record fails again), and ``capillary-aep.redrive-count``, which the
worker keeps when it dead-letters the record again: records at ``--max-redrives`` are refused,
so a record that keeps failing cannot loop. Records go back to their source partition when
redriven to their source topic (keeping per-key order); to another topic, by key hash
(murmur2, as Java producers do).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from confluent_kafka import KafkaException, Producer, TopicPartition

from worker.config import KafkaSettings
from worker.dlq import PREFIX, Header, record_size
from worker.dlq_producer import topic_max_message_bytes
from worker.rate_limit import RateLimit
from worker.tools.dlq.filters import RecordFilter
from worker.tools.dlq.reader import ScanPlan, plan_scan, scan
from worker.tools.dlq.record import REDRIVE_COUNT, DlqRecord
from worker.tools.dlq.retest import Retester
from worker.tools.groups import Cluster, ToolError

PROGRESS_PREFIX = "capillary-aep-redrive."
META_PREFIX = "capillary-aep:redrive:"
TXN_TIMEOUT_S = 60.0

Action = Literal["redrive", "refuse", "skip", "still-failing"]


@dataclass(frozen=True, slots=True)
class RedriveOptions:
    job: str
    dlq_topic: str
    filter: RecordFilter
    to_topic: str | None = None
    max_redrives: int = 3
    chunk_size: int = 100
    rate: float | None = None
    only_passing: bool = False

    @property
    def progress_group(self) -> str:
        return PROGRESS_PREFIX + self.job

    def fingerprint(self) -> str:
        """The selection, minus the time window (which the job stores resolved)."""
        base = dataclasses.replace(self.filter, since_ms=None, until_ms=None).fingerprint()
        return f"{base}:{self.to_topic or ''}:{int(self.only_passing)}"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: str = ""
    topic: str = ""
    partition: int | None = None


@dataclass(slots=True)
class RedriveReport:
    job: str
    execute: bool
    resumed: bool = False
    complete: bool = False
    scanned: int = 0
    redriven: Counter[str] = field(default_factory=Counter)  # by target topic
    refused: Counter[str] = field(default_factory=Counter)  # by reason
    still_failing: Counter[str] = field(default_factory=Counter)  # by reason (--only-passing)
    skipped: int = 0  # not selected by the filters
    chunks: int = 0
    examples: list[tuple[DlqRecord, Decision]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "execute": self.execute,
            "resumed": self.resumed,
            "complete": self.complete,
            "scanned": self.scanned,
            "redriven" if self.execute else "would_redrive": dict(self.redriven),
            "refused": dict(self.refused),
            "still_failing": dict(self.still_failing),
            "not_selected": self.skipped,
            "chunks_committed": self.chunks,
        }


@dataclass(slots=True)
class JobState:
    ranges: dict[int, tuple[int, int]]  # partition -> [next to read, end)
    since_ms: int | None
    until_ms: int | None
    resumed: bool


def redrive_headers(rec: DlqRecord) -> list[Header]:
    """Original headers, the attempt count, and the redrive count raised by one."""
    headers = rec.original_headers()
    attempt = rec.get("attempt")
    if attempt:
        headers.append((PREFIX + "attempt", attempt.encode()))
    headers.append((PREFIX + REDRIVE_COUNT, str(rec.redrive_count + 1).encode()))
    return headers


class Redrive:
    def __init__(
        self, cluster: Cluster, kafka: KafkaSettings, opts: RedriveOptions,
        retester: Retester | None = None,
    ) -> None:
        self.cluster = cluster
        self.kafka = kafka
        self.opts = opts
        self.retester = retester
        self._topics: dict[str, tuple[int, int] | None] = {}  # partitions, max.message.bytes

    # -- what to do with one record ---------------------------------------------------------

    def _topic(self, name: str) -> tuple[int, int] | None:
        if name not in self._topics:
            try:
                parts = len(self.cluster.partitions([name]))
            except ToolError:
                self._topics[name] = None
            else:
                limit = topic_max_message_bytes(self.kafka, [name]).get(name, 1_048_588)
                self._topics[name] = (parts, limit)
        return self._topics[name]

    def decide(self, rec: DlqRecord) -> Decision:
        opts = self.opts
        if not opts.filter.matches(rec):
            return Decision("skip")
        if rec.truncated:
            return Decision("refuse", "payload truncated in the DLQ (original value not kept)")
        if rec.redrive_count >= opts.max_redrives:
            return Decision(
                "refuse",
                f"redriven {rec.redrive_count} times already (limit --max-redrives "
                f"{opts.max_redrives})",
            )
        topic = opts.to_topic or rec.source_topic
        if not topic:
            return Decision("refuse", "no source-topic header: give --to-topic")
        if topic == opts.dlq_topic:
            return Decision("refuse", "the target is the DLQ topic itself")
        info = self._topic(topic)
        if info is None:
            return Decision("refuse", f"target topic {topic} does not exist")
        partitions, limit = info
        headers = redrive_headers(rec)
        if record_size(rec.key, rec.value, headers) > limit:
            return Decision("refuse", f"larger than {topic}'s max.message.bytes ({limit})")
        if opts.only_passing and self.retester is not None:
            verdict = self.retester.check(rec)
            if verdict.outcome != "pass":
                return Decision("still-failing", f"{verdict.stage}/{verdict.kind}")
        sp = rec.source_partition
        same = topic == rec.source_topic and sp is not None and 0 <= sp < partitions
        return Decision("redrive", topic=topic, partition=sp if same else None)

    # -- job state ------------------------------------------------------------------------

    def _meta(self, end: int, since_ms: int | None, until_ms: int | None) -> str:
        return META_PREFIX + orjson.dumps({
            "v": 1, "job": self.opts.job, "selection": self.opts.fingerprint(), "end": end,
            "since": since_ms, "until": until_ms,
        }).decode()

    def load_state(self) -> JobState:
        opts = self.opts
        tps = self.cluster.partitions([opts.dlq_topic])
        try:
            committed = self.cluster.committed(opts.progress_group, tps)
        except ToolError as exc:
            # Reading waits for an open transaction that writes these offsets to end.
            raise ToolError(
                f"{exc}: a chunk of job {opts.job!r} may still be open (a run of it is going "
                f"on, or was killed less than {TXN_TIMEOUT_S:.0f} s ago); running the job "
                "again with --execute rolls it back and continues"
            ) from None
        stored: dict[int, dict[str, Any]] = {}
        for (_, p), (offset, meta) in committed.items():
            line = next((x for x in meta.split("\n") if x.startswith(META_PREFIX)), None)
            if offset is None or line is None:
                continue
            try:
                doc = orjson.loads(line.removeprefix(META_PREFIX))
            except orjson.JSONDecodeError:
                continue
            doc["offset"] = offset
            stored[p] = doc
        if not stored:
            f = opts.filter
            plan = plan_scan(self.cluster, opts.dlq_topic, f.since_ms, f.until_ms)
            return JobState(plan.ranges, f.since_ms, f.until_ms, resumed=False)
        first = next(iter(stored.values()))
        if first.get("selection") != opts.fingerprint():
            raise ToolError(
                f"job {opts.job!r} was started with other filters or target; finish it with "
                "the same options, or start a new job with another --job name"
            )
        marks = self.cluster.watermarks(tps)
        ranges: dict[int, tuple[int, int]] = {}
        for (_, p) in tps:
            doc = stored.get(p)
            if doc is None:  # no progress recorded: the job never covered it (new partition)
                ranges[p] = (marks[(opts.dlq_topic, p)][1],) * 2
            else:
                ranges[p] = (int(doc["offset"]), max(int(doc["end"]), int(doc["offset"])))
        return JobState(ranges, first.get("since"), first.get("until"), resumed=True)

    # -- the job ----------------------------------------------------------------------------

    def run(
        self, execute: bool, *, on_start: Callable[[JobState, int], None] | None = None,
        on_progress: Callable[[int], None] | None = None, examples: int = 0,
    ) -> RedriveReport:
        opts = self.opts
        report = RedriveReport(opts.job, execute)
        producer: Producer | None = None
        if execute:
            producer = Producer({
                **self.kafka.client_config(),
                "transactional.id": PROGRESS_PREFIX + opts.job,
                "acks": "all",
                "partitioner": "murmur2_random",
                "linger.ms": 20,
                "message.max.bytes": 1_000_000_000,
                "transaction.timeout.ms": int(TXN_TIMEOUT_S * 1000),
            })
            try:  # fences an earlier run of this job and aborts its open transaction
                producer.init_transactions(TXN_TIMEOUT_S)
            except KafkaException as exc:
                raise ToolError(f"cannot start job {opts.job!r}: {exc.args[0]}") from None
        state = self.load_state()  # after fencing: no earlier run can still move it
        report.resumed = state.resumed
        if state.resumed:
            # The job's own window, whatever --since/--until say now (durations move).
            self.opts = opts = dataclasses.replace(opts, filter=dataclasses.replace(
                opts.filter, since_ms=state.since_ms, until_ms=state.until_ms))
        plan = ScanPlan(opts.dlq_topic, state.ranges)
        if on_start is not None:
            on_start(state, plan.total)
        if plan.total == 0:
            report.complete = True
            return report
        consumer = self.cluster.consumer(opts.progress_group)
        meta = {
            p: self._meta(e, state.since_ms, state.until_ms) for p, (_, e) in plan.ranges.items()
        }
        next_offset = {p: s for p, (s, _) in plan.ranges.items()}
        rate = RateLimit(opts.rate) if opts.rate else None
        in_chunk = 0
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        def commit_chunk(last: bool = False) -> None:
            nonlocal in_chunk
            assert producer is not None
            offsets = [
                TopicPartition(opts.dlq_topic, p, o, metadata=meta[p])
                for p, o in next_offset.items()
            ]
            try:
                producer.send_offsets_to_transaction(
                    offsets, consumer.consumer_group_metadata(), TXN_TIMEOUT_S
                )
                self._commit(producer)
            except KafkaException as exc:
                self._abort(producer, exc, failures)
            report.chunks += 1
            in_chunk = 0
            if not last:
                producer.begin_transaction()

        if producer is not None:
            producer.begin_transaction()
        try:
            for rec in scan(consumer, plan, on_progress=on_progress):
                report.scanned += 1
                decision = self.decide(rec)
                self._count(report, rec, decision, examples)
                if decision.action == "redrive" and producer is not None:
                    if rate is not None:
                        while not rate.allowance():
                            producer.poll(min(rate.wait_s(), 0.5))
                        rate.spend(1)
                    self._produce(producer, rec, decision, delivered)
                    in_chunk += 1
                next_offset[rec.partition] = rec.offset + 1
                if producer is not None and in_chunk >= opts.chunk_size:
                    commit_chunk()
            if producer is not None:  # the scan's end is the job's end in every partition
                next_offset = {p: e for p, (_, e) in plan.ranges.items()}
                commit_chunk(last=True)
            report.complete = True
        except KeyboardInterrupt:
            if producer is not None:
                self._abort(producer, None, ["interrupted"])
            raise
        return report

    @staticmethod
    def _commit(producer: Producer) -> None:
        for attempt in range(3):
            try:
                producer.commit_transaction(TXN_TIMEOUT_S)
                return
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                retriable = err is not None and err.retriable()
                if not retriable or attempt == 2:
                    raise

    @staticmethod
    def _produce(
        producer: Producer, rec: DlqRecord, decision: Decision, delivered: Callable[..., None]
    ) -> None:
        kwargs: dict[str, Any] = {
            "key": rec.key, "value": rec.value, "headers": redrive_headers(rec),
            "on_delivery": delivered,
        }
        if decision.partition is not None:
            kwargs["partition"] = decision.partition
        while True:
            try:
                producer.produce(decision.topic, **kwargs)
                return
            except BufferError:
                producer.poll(0.1)

    def _abort(self, producer: Producer, exc: KafkaException | None, failures: list[str]) -> None:
        err = exc.args[0] if exc is not None and exc.args else None
        why = str(err) if err is not None else "; ".join(failures[:3]) or "unknown"
        fenced = err is not None and getattr(err, "fatal", lambda: False)()
        if not fenced:
            # If this fails too, the broker aborts it at the transaction timeout.
            with contextlib.suppress(KafkaException):
                producer.abort_transaction(TXN_TIMEOUT_S)
        if fenced:
            raise ToolError(
                f"another run of job {self.opts.job!r} took over (this one was fenced): {why}"
            )
        raise ToolError(
            f"a chunk of job {self.opts.job!r} failed and was rolled back (nothing of it is "
            f"published): {why}. Run the same command again to continue."
        )

    @staticmethod
    def _count(report: RedriveReport, rec: DlqRecord, decision: Decision, examples: int) -> None:
        if decision.action == "skip":
            report.skipped += 1
            return
        if decision.action == "redrive":
            report.redriven[decision.topic] += 1
        elif decision.action == "refuse":
            report.refused[decision.reason] += 1
        else:
            report.still_failing[decision.reason] += 1
        if len(report.examples) < examples:
            report.examples.append((rec, decision))
