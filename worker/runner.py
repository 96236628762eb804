"""Builds a worker from settings and runs it until SIGTERM/SIGINT (or drained, on request).

Exit codes: 0 clean stop; 2 configuration error (bad setting, IMS rejected the credentials,
unknown schema); 3 a ``fail`` policy fired or the consumer cannot continue.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from worker.aep.client import HttpSettings
from worker.aep.delivery import Deliverer, DeliveryPolicy
from worker.aep.flow import FlowControl
from worker.compiled import build_kind
from worker.config import ConfigError, Settings
from worker.connections import AepConnections
from worker.dlq_producer import (
    BROKER_DEFAULT_MAX_MESSAGE_BYTES,
    DeadLetterProducer,
    topic_max_message_bytes,
)
from worker.health import HealthServer, HealthState
from worker.kafka import ConsumerOwner
from worker.kafka_stats import statistics_handler
from worker.logs import get_logger
from worker.mapping import DEFAULT_FAMILIES, MAPPERS
from worker.metered_transport import MeteredTransport
from worker.metrics import Metrics
from worker.pipeline import Part, Pipeline
from worker.rate_limit import RateLimit
from worker.receipts import ReceiptProducer, check_receipts_topic
from worker.routing import RoutingError, build_routes
from worker.run_bounds import RunBounds
from worker.schemas import SchemaLoadError, SchemaStore
from worker.secret_rotation import SaslCredentials
from worker.watchdog import watch

log = get_logger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_FATAL = 3


@dataclass(slots=True)
class RunResult:
    exit_code: int
    metrics: Metrics
    seconds: float
    error: str | None = None
    health_port: int | None = None
    extra: dict[str, float] = field(default_factory=dict)


def _check_dlq_topic(settings: Settings) -> int:
    """The DLQ must take what the inputs take (plus headers); warn if not. Returns its limit."""
    k = settings.kafka
    errors: dict[str, str] = {}
    limits = topic_max_message_bytes(k, [k.dlq_topic, *k.topics], errors)
    dlq_limit = limits.get(k.dlq_topic)
    if dlq_limit is None and k.dlq_topic in errors:
        log.error("dlq_topic_check_failed", topic=k.dlq_topic, error=errors[k.dlq_topic])
        return BROKER_DEFAULT_MAX_MESSAGE_BYTES
    if dlq_limit is None:
        log.error(
            "dlq_topic_missing",
            topic=k.dlq_topic,
            hint="create it (same or larger max.message.bytes than the inputs); dead letters "
            "wait, and the worker pauses, until it can be written",
        )
        return BROKER_DEFAULT_MAX_MESSAGE_BYTES
    for topic in k.topics:
        limit = limits.get(topic)
        if limit is not None and limit > dlq_limit:
            log.warning(
                "dlq_topic_smaller_than_input",
                dlq_topic=k.dlq_topic,
                dlq_max_message_bytes=dlq_limit,
                input_topic=topic,
                input_max_message_bytes=limit,
                effect="oversized dead letters are truncated (payload-truncated header)",
            )
    return dlq_limit


def _schema_drift_task(
    settings: Settings, targets: Any, schemas: SchemaStore, conns: AepConnections,
    metrics: Metrics,
) -> asyncio.Task[None] | None:
    """Local vs Schema Registry schemas every aep.schema_drift_interval_s (worker.preflight)."""
    interval = settings.aep.schema_drift_interval_s
    if not interval:
        return None
    from worker.preflight import SchemaDriftWatcher

    watcher = SchemaDriftWatcher(
        settings, targets, schemas, conns.providers, conns.session, metrics, interval
    )

    async def run() -> None:
        try:
            await watcher.run()
        finally:
            await watcher.close()

    return asyncio.create_task(run())


async def run_worker(
    settings: Settings,
    *,
    reset_dlq_guard: bool = False,
    exit_when_drained: bool = False,
    stop: asyncio.Event | None = None,
    install_signals: bool = True,
    bounds: RunBounds | None = None,
    rate_limit: RateLimit | None = None,
    metrics: Metrics | None = None,
) -> RunResult:
    """Run until stopped; ``bounds`` and ``rate_limit`` make it a bounded, paced run (side
    replays); ``metrics`` lets the caller watch progress."""
    started = time.monotonic()
    metrics = metrics or Metrics()
    try:
        schemas = SchemaStore(user_xdm=settings.xdm.schemas_dir)
        targets, routes = build_routes(settings, schemas, MAPPERS.keys(), DEFAULT_FAMILIES)
    except (SchemaLoadError, RoutingError) as exc:
        return RunResult(EXIT_CONFIG, metrics, 0.0, error=str(exc))

    loop = asyncio.get_running_loop()
    d = settings.delivery
    health = HealthState(
        live_threshold_s=settings.health.live_threshold(settings.kafka.max_poll_interval_ms)
    )
    http = HttpSettings(
        trust_env=settings.aep.trust_env,
        ca_bundle=str(settings.aep.ca_bundle) if settings.aep.ca_bundle else None,
        request_timeout=d.request_timeout_s,
    )
    # One token provider per distinct credential set (routes may feed other AEP orgs).
    conns = AepConnections.build(settings, targets, http)
    health_server: HealthServer | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        if settings.health.enabled:  # first, so probes answer "not ready" while starting
            health_server = HealthServer(
                health, metrics, settings.health.host, settings.health.port
            )
            port = await health_server.start()
            log.info("health_listening", port=port)
        await conns.check_tokens()
        metrics.watch_tokens(*conns.providers.values())
        sasl = SaslCredentials(
            settings.kafka, loop, metrics, give_up_after_s=settings.kafka.auth_failure_timeout_s
        )

        pipeline = Pipeline(
            settings, schemas, targets, routes, metrics=metrics, health=health,
            reset_dlq_guard=reset_dlq_guard, exit_when_drained=exit_when_drained,
            bounds=bounds, rate_limit=rate_limit,
        )
        dlq_limit = await loop.run_in_executor(None, _check_dlq_topic, settings)
        if settings.receipts.enabled:  # missing topic: ConfigError naming receipts.topic
            await loop.run_in_executor(None, check_receipts_topic, settings)
        dlq = DeadLetterProducer(
            settings.kafka, loop, max_record_bytes=dlq_limit,
            on_acked=pipeline._dlq_acked, on_availability=pipeline._dlq_availability,
            on_client_error=sasl.error_cb("dlq-producer"),
        )
        sasl.register(dlq.set_sasl_credentials)
        receipts: ReceiptProducer | None = None
        if settings.receipts.enabled:
            receipts = ReceiptProducer(
                settings.kafka, settings.receipts, loop,
                on_acked=pipeline._receipt_acked,
                on_availability=pipeline._receipts_availability,
                on_counts=pipeline._receipt_counts,
                on_client_error=sasl.error_cb("receipts-producer"),
            )
            sasl.register(receipts.set_sasl_credentials)
        policy = DeliveryPolicy(
            max_retries=d.max_retries,
            base_delay=d.base_delay_s,
            max_delay=d.max_delay_s,
            retry_after_cap=d.retry_after_cap_s,
            server_error_retries=d.server_error_retries,
            blocked_probe_interval=d.blocked_probe_interval_s,
            request_timeout=d.request_timeout_s,
        )
        deliverer: Deliverer[Part] = Deliverer(
            MeteredTransport(conns.router, metrics), policy, pipeline,
            flow=flow_control(settings, metrics, rate_limit),
        )
        consumer = ConsumerOwner(
            settings.kafka, pipeline, loop,
            callback_timeout_s=settings.shutdown.revoke_drain_timeout_s + 30,
            error_cb=sasl.error_cb("consumer"),
            stats_cb=statistics_handler(
                metrics.set_lags, sasl.statistics, settings.kafka.start_position
            ),
        )
        sasl.register(consumer.set_sasl_credentials)
        pipeline.attach(consumer, dlq, deliverer, receipts)

        stop_event = stop or asyncio.Event()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop_event.set)

        async def relay_stop() -> None:
            await stop_event.wait()
            log.info("stop_requested")
            pipeline.stop()

        relay = asyncio.create_task(relay_stop())
        credentials_refused: list[str] = []

        def give_up(why: str) -> None:
            if not credentials_refused:
                credentials_refused.append(why)
                log.error("kafka_credentials_refused", error=why)
                pipeline.stop()

        watcher = asyncio.create_task(
            watch(health, pipeline, conns.providers.values(), sasl, give_up)
        )
        drift = _schema_drift_task(settings, targets, schemas, conns, metrics)
        log.info(
            "worker_started",
            topics=settings.kafka.topics or settings.kafka.topic_pattern,
            group=settings.kafka.group_id,
            targets=sorted(targets),
            events=routes.event_names(),
            build=build_kind(),
        )
        try:
            await pipeline.run()
        finally:
            relay.cancel()
            if drift is not None:
                drift.cancel()
        code = EXIT_CONFIG if credentials_refused else EXIT_FATAL if pipeline.fatal else EXIT_OK
        return RunResult(
            code, metrics, time.monotonic() - started,
            error=credentials_refused[0] if credentials_refused else pipeline.fatal,
            health_port=health_server.port if health_server else None,
            extra={"deliver_requests": float(deliverer.requests)},
        )
    except ConfigError as exc:
        return RunResult(EXIT_CONFIG, metrics, 0.0, error=str(exc))
    finally:
        if watcher is not None:
            watcher.cancel()
        if health_server is not None:
            await health_server.stop()
        await conns.close()


def flow_control(
    settings: Settings, metrics: Metrics, side_rate: RateLimit | None = None
) -> FlowControl:
    """The adaptive in-flight limit and the rate budget. The worker takes its share of
    (budget - reserved) at each rebalance; a side job (``side_rate``: a side replay) runs under
    its own fixed budget instead: its rate, and the reserved requests per second."""
    d, b = settings.delivery, settings.rate_budget

    def export(flow: FlowControl) -> None:
        metrics.concurrency_limit.set(flow.limit)
        metrics.rate_share.set(flow.share)
        metrics.rate_share_limit.labels("messages").set(flow.share_messages_per_s or 0.0)
        metrics.rate_share_limit.labels("requests").set(flow.share_requests_per_s or 0.0)
        rate = flow.messages_rate
        metrics.rate_ceiling.set(rate if rate is not None else 0.0)

    flow = FlowControl(
        concurrency=d.concurrency, min_concurrency=d.min_concurrency,
        max_concurrency=d.max_concurrency, adaptive=d.adaptive,
        messages_per_s=b.shared_messages_per_s if side_rate is None else side_rate.per_second,
        requests_per_s=(
            b.shared_requests_per_s if side_rate is None else b.reserved_requests_per_s
        ),
        burst_s=b.burst_s, shared=side_rate is None, on_change=export,
    )
    export(flow)
    return flow
