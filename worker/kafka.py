"""The consumer and its one owner thread.

librdkafka consumers are not safe for concurrent calls, and rebalance callbacks run inside
``consume``. So every consumer call (consume, pause, resume, seek, commit, close) runs on one
dedicated thread, submitted by one coroutine at a time. Rebalance callbacks hand their work to
the asyncio loop (where all pipeline state lives) and wait for the answer, then commit from
inside the callback, on the owner thread.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from worker.config import KafkaSettings
from worker.logs import get_logger
from worker.offsets import TP

log = get_logger(__name__)
R = TypeVar("R")

GUARD_MARK = "capillary-aep:dlq-guard-tripped"
STATS_INTERVAL_MS = 5000  # librdkafka statistics (consumer lag) when a stats_cb is given


@dataclass(frozen=True, slots=True)
class Assigned:
    tp: TP
    generation: int
    committed: int | None  # committed offset, None when the group has none
    metadata: str  # commit metadata (carries the DLQ guard's trip mark)
    start: int  # the committed offset, else start_position resolved (-1 if that failed)


class RebalanceListener(Protocol):
    """Implemented by the pipeline; called on the asyncio loop."""

    async def partitions_assigned(self, assigned: list[Assigned]) -> bool:
        """Returns True when the new partitions must start paused."""

    async def partitions_revoked(self, tps: list[TP]) -> dict[TP, tuple[int, str]]:
        """Drain the partitions; returns (offset, metadata) to commit for them."""

    async def partitions_lost(self, tps: list[TP]) -> None: ...


def consumer_config(settings: KafkaSettings) -> dict[str, Any]:
    conf = settings.client_config()
    conf.update(
        {
            "group.id": settings.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # Never a silent jump: no committed offset is handled in on_assign, out of range
            # surfaces as an error with a configured policy.
            "auto.offset.reset": "error",
            "session.timeout.ms": settings.session_timeout_ms,
            "max.poll.interval.ms": settings.max_poll_interval_ms,
        }
    )
    conf.setdefault("partition.assignment.strategy", "cooperative-sticky")
    conf.setdefault("group.protocol", "classic")
    conf.setdefault("statistics.interval.ms", 0)
    # librdkafka prefetches up to 64 MB by default: with a backlog that is resident memory on
    # top of the in-flight caps. 16 MB is over a second of input at full speed (measured: no
    # throughput change, peak RSS -50 MB draining a backlog).
    conf.setdefault("queued.max.messages.kbytes", 16384)
    if settings.group_instance_id:
        conf["group.instance.id"] = settings.group_instance_id
    return conf


def subscription(settings: KafkaSettings) -> list[str]:
    subs = list(settings.topics)
    if settings.topic_pattern:
        pattern = settings.topic_pattern
        subs.append(pattern if pattern.startswith("^") else "^" + pattern)
    return subs


class ConsumerOwner:
    def __init__(
        self,
        settings: KafkaSettings,
        listener: RebalanceListener,
        loop: asyncio.AbstractEventLoop,
        *,
        callback_timeout_s: float,
        error_cb: Callable[[KafkaError], None] | None = None,
        stats_cb: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._listener = listener
        self._loop = loop
        self._callback_timeout = callback_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-consumer")
        self._generation = 0
        self.closing = False
        self.cooperative = True
        self.rebalance_errors = 0
        # Partitions of the subscribed topics, re-read from cluster metadata after every
        # rebalance (the rate budget's share; 0: not known yet). Not inside the rebalance
        # callback: list_topics there ends the enclosing consume()'s call state, and the next
        # callback of that consume() then aborts the process (confluent-kafka CallState_get).
        self.total_partitions = 0
        self._rebalanced = False
        conf = consumer_config(settings)
        self.cooperative = conf.get("partition.assignment.strategy") == "cooperative-sticky"
        if error_cb is not None:
            conf["error_cb"] = error_cb
        if stats_cb is not None:
            conf["stats_cb"] = stats_cb
            if "statistics.interval.ms" not in settings.properties:  # the user's (even 0) wins
                conf["statistics.interval.ms"] = STATS_INTERVAL_MS
        self._consumer = Consumer(conf)

    # -- the owner thread ------------------------------------------------------------------

    async def _call(self, fn: Callable[..., R], *args: Any) -> R:
        return await self._loop.run_in_executor(self._executor, fn, *args)

    def _bridge(self, coro: Coroutine[Any, Any, R]) -> R:
        """From a rebalance callback (owner thread): run on the loop and wait."""
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout=self._callback_timeout)

    def _refresh_total(self, consumer: Consumer) -> None:
        """How many partitions the subscribed topics have now (added partitions count)."""
        try:
            md = consumer.list_topics(timeout=5)
        except KafkaException as exc:
            log.warning("partition_count_unavailable", error=str(exc)[:200])
            return
        explicit = set(self.settings.topics)
        pattern = self.settings.topic_pattern
        matcher = None
        if pattern:
            matcher = re.compile(pattern if pattern.startswith("^") else "^" + pattern)
        total = sum(
            len(t.partitions)
            for name, t in md.topics.items()
            if t.error is None
            and (name in explicit or (matcher is not None and matcher.match(name) is not None))
        )
        if total:
            self.total_partitions = total

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._rebalanced = True
        try:
            committed = consumer.committed(partitions, timeout=30) if partitions else []
            earliest = self.settings.start_position == "earliest"
            default_start = OFFSET_BEGINNING if earliest else OFFSET_END
            assigned: list[Assigned] = []
            to_assign: list[TopicPartition] = []
            for tp in committed:
                self._generation += 1
                has_offset = tp.offset >= 0 and tp.offset != OFFSET_INVALID
                logical = tp.offset if has_offset else default_start
                start = tp.offset if has_offset else -1
                if not has_offset:
                    # A number too, so a commit (e.g. the DLQ guard's mark) can name this
                    # partition before anything was consumed from it. Consumption itself starts
                    # at the logical offset: retention may move the low watermark meanwhile.
                    try:
                        low, high = consumer.get_watermark_offsets(
                            TopicPartition(tp.topic, tp.partition), timeout=10, cached=False
                        )
                        start = low if earliest else high
                    except KafkaException as exc:
                        log.warning("watermarks_unavailable", topic=tp.topic, error=str(exc)[:200])
                assigned.append(
                    Assigned(
                        (tp.topic, tp.partition),
                        self._generation,
                        tp.offset if has_offset else None,
                        tp.metadata or "",
                        start,
                    )
                )
                to_assign.append(TopicPartition(tp.topic, tp.partition, logical))
            if self.cooperative:
                consumer.incremental_assign(to_assign)
            else:
                consumer.assign(to_assign)
            start_paused = self._bridge(self._listener.partitions_assigned(assigned))
            if start_paused and to_assign:
                consumer.pause(to_assign)
            log.info(
                "partitions_assigned",
                partitions=[f"{a.tp[0]}[{a.tp[1]}]@{a.committed}" for a in assigned],
                paused=start_paused,
            )
        except Exception as exc:  # a callback exception must not kill the loop
            self.rebalance_errors += 1
            log.error("on_assign_failed", error=type(exc).__name__, detail=str(exc)[:300])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._rebalanced = True
        try:
            offsets = self._bridge(self._listener.partitions_revoked(tps))
            if offsets:
                self._commit_now(consumer, offsets)
                log.info("committed", on="revoke", partitions=_described(offsets))
        except Exception as exc:
            self.rebalance_errors += 1
            log.error("on_revoke_failed", error=type(exc).__name__, detail=str(exc)[:300])
        finally:
            if self.cooperative:
                consumer.incremental_unassign(partitions)
            else:
                consumer.unassign()
            log.info("partitions_revoked", partitions=[f"{t}[{p}]" for t, p in tps])

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._rebalanced = True
        try:
            self._bridge(self._listener.partitions_lost(tps))
        except Exception as exc:
            self.rebalance_errors += 1
            log.error("on_lost_failed", error=type(exc).__name__, detail=str(exc)[:300])
        finally:
            if self.cooperative:
                consumer.incremental_unassign(partitions)
            else:
                consumer.unassign()
            log.warning("partitions_lost", partitions=[f"{t}[{p}]" for t, p in tps])

    @staticmethod
    def _commit_now(consumer: Consumer, offsets: dict[TP, tuple[int, str]]) -> None:
        tps = [
            TopicPartition(t, p, o, metadata=m) if m else TopicPartition(t, p, o)
            for (t, p), (o, m) in offsets.items()
        ]
        consumer.commit(offsets=tps, asynchronous=False)

    # -- API for the single driving coroutine ------------------------------------------------

    async def subscribe(self) -> None:
        await self._call(
            lambda: self._consumer.subscribe(
                subscription(self.settings),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        )

    async def consume(self, n: int, wait_s: float) -> list[Message]:
        msgs: list[Message] = await self._call(self._consume, n, wait_s)
        return msgs

    def _consume(self, n: int, wait_s: float) -> list[Message]:
        msgs: list[Message] = self._consumer.consume(n, wait_s)
        if self._rebalanced:  # on the owner thread, outside any callback
            self._rebalanced = False
            self._refresh_total(self._consumer)
        return msgs

    async def pause(self, tps: Iterable[TP]) -> None:
        parts = [TopicPartition(t, p) for t, p in tps]
        if parts:
            await self._call(self._consumer.pause, parts)

    async def resume(self, tps: Iterable[TP]) -> None:
        parts = [TopicPartition(t, p) for t, p in tps]
        if parts:
            await self._call(self._consumer.resume, parts)

    async def set_sasl_credentials(self, username: str, password: str) -> None:
        """Credentials for the next connection (a rotated password); on the owner thread
        because calling the client from inside its own callbacks is not allowed."""
        await self._call(self._consumer.set_sasl_credentials, username, password)

    async def assignment(self) -> list[TP]:
        parts: list[TopicPartition] = await self._call(self._consumer.assignment)
        return [(p.topic, p.partition) for p in parts]

    async def reposition(self, tp: TP, offset: int) -> None:
        """Move a partition that hit an error (out of range): a plain seek is refused then."""

        def move() -> None:
            part = TopicPartition(tp[0], tp[1], offset)
            if self.cooperative:
                self._consumer.incremental_unassign([TopicPartition(tp[0], tp[1])])
                self._consumer.incremental_assign([part])
            else:
                others = [p for p in self._consumer.assignment() if (p.topic, p.partition) != tp]
                self._consumer.assign([*others, part])

        await self._call(move)

    async def commit(self, offsets: dict[TP, tuple[int, str]]) -> bool:
        """Synchronous commit on the owner thread; False (retry next tick) on failure."""
        if not offsets:
            return True
        try:
            await self._call(self._commit_now, self._consumer, offsets)
            log.info("committed", on="tick", partitions=_described(offsets))
            return True
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            log.warning("commit_failed", error=str(err)[:200], partitions=len(offsets))
            return False

    async def watermarks(self, tps: Iterable[TP]) -> dict[TP, tuple[int, int]]:
        def read() -> dict[TP, tuple[int, int]]:
            out: dict[TP, tuple[int, int]] = {}
            for t, p in tps:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(t, p), timeout=5, cached=False
                )
                out[(t, p)] = (low, high)
            return out

        return await self._call(read)

    async def positions(self, tps: Iterable[TP]) -> dict[TP, int]:
        """Next offset to fetch per partition, past transaction markers (-1: not known yet)."""
        parts = [TopicPartition(t, p) for t, p in tps]
        if not parts:
            return {}
        got: list[TopicPartition] = await self._call(self._consumer.position, parts)
        return {(p.topic, p.partition): max(p.offset, -1) for p in got}

    async def close(self) -> None:
        self.closing = True
        try:
            await self._call(self._consumer.close)
        finally:
            self._executor.shutdown(wait=False)


def _described(offsets: dict[TP, tuple[int, str]]) -> list[str]:
    return [f"{t}[{p}]@{o}" for (t, p), (o, _) in sorted(offsets.items())]


def describe_error(err: KafkaError) -> str:
    return f"{err.name()}: {err.str()}"
