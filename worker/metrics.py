"""Every Prometheus metric the worker exports, on one registry per worker.

Label values are bounded: topic, partition, target and inlet names come from configuration or
the broker's assignment, event names from the routed set (anything else is ``other``), stages,
error classes and kinds, causes and statuses from fixed codes. No ids, no free text.

The per-record paths (``accepted``) cache their labelled children: a ``labels()`` lookup takes
a lock and a dict probe, which is measurable at tens of thousands of records per second.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from worker import __version__

TP = tuple[str, int]

# End-to-end latency: AEP promises Profile < 15 min p95; replays can be days old (+Inf).
_E2E_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 21600)
_REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

SINCE_EVENT = "event_created"  # Capillary's createdAt (business time of the event)
SINCE_APPEND = "kafka_append"  # the Kafka record timestamp


class TokenCounters(Protocol):
    """What the token metrics read (``worker.aep.auth.TokenProvider`` has these)."""

    refreshes: int
    failures: int
    config_errors: int


class _TokenCollector(Collector):
    """Reads the token providers' own counters at scrape time (no double bookkeeping)."""

    def __init__(self) -> None:
        self.sources: tuple[TokenCounters, ...] = ()

    def collect(self) -> Iterator[Metric]:
        s = self.sources
        yield CounterMetricFamily(
            "capaep_token_refreshes", "IMS access tokens obtained",
            value=sum(p.refreshes for p in s),
        )
        yield CounterMetricFamily(
            "capaep_token_failures", "Failed IMS token requests (each attempt)",
            value=sum(p.failures for p in s),
        )
        yield CounterMetricFamily(
            "capaep_token_config_errors",
            "IMS refused the credentials (after a secret reload and retry)",
            value=sum(p.config_errors for p in s),
        )


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.info = Gauge("capaep_worker_info", "Worker version", ["version"], registry=r)
        self.info.labels(__version__).set(1)
        # -- records --------------------------------------------------------------------------
        self.consumed = Counter(
            "capaep_records_consumed", "Records consumed", ["topic"], registry=r
        )
        self.delivered = Counter(
            "capaep_records_delivered", "Records accepted by AEP", ["event", "target"], registry=r
        )
        self.dead_lettered = Counter(
            "capaep_records_dead_lettered",
            "Records acknowledged by the dead-letter topic",
            ["stage", "error_class", "error_kind"],
            registry=r,
        )
        self.filtered = Counter(
            "capaep_records_filtered", "Records deliberately skipped", ["reason"], registry=r
        )
        # -- batches and requests -----------------------------------------------------------------
        self.batches = Counter(
            "capaep_batches_dispatched", "Batches handed to delivery", ["target"], registry=r
        )
        self.batch_records = Histogram(
            "capaep_batch_records",
            "Messages per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 5000),
            registry=r,
        )
        self.batch_bytes = Histogram(
            "capaep_batch_bytes",
            "Body bytes per batch",
            buckets=(1e3, 1e4, 5e4, 1e5, 2.5e5, 5e5, 7.5e5, 1e6),
            registry=r,
        )
        self.requests = Counter(
            "capaep_requests",
            "DCS requests by answer: HTTP status, or the transport cause when none came",
            ["inlet", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "capaep_request_duration_seconds",
            "DCS request duration (answered or not)",
            ["inlet"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.retries = Counter("capaep_retries", "Delivery retries", ["cause"], registry=r)
        # -- flow ---------------------------------------------------------------------------------
        self.in_flight_records = Gauge(
            "capaep_in_flight_records", "Records consumed, not yet finished", registry=r
        )
        self.in_flight_bytes = Gauge(
            "capaep_in_flight_bytes", "Message bytes held in flight", registry=r
        )
        self.paused = Gauge(
            "capaep_paused", "1 while consumption is paused", ["reason"], registry=r
        )
        self.assigned_partitions = Gauge(
            "capaep_assigned_partitions", "Partitions assigned to this worker", registry=r
        )
        self.paused_partitions = Gauge(
            "capaep_paused_partitions", "Assigned partitions currently paused", registry=r
        )
        self.blocked = Gauge(
            "capaep_delivery_blocked", "1 while AEP configuration/outage blocks delivery",
            registry=r,
        )
        self.dlq_guard_tripped = Gauge(
            "capaep_dlq_guard_tripped", "1 once the DLQ guard tripped", registry=r
        )
        # -- commits and position -----------------------------------------------------------------
        self.commits = Counter("capaep_commits", "Offset commits", ["result"], registry=r)
        self.commit_duration = Histogram(
            "capaep_commit_duration_seconds", "Offset commit latency",
            buckets=_COMMIT_BUCKETS, registry=r,
        )
        self.last_commit = Gauge(
            "capaep_last_commit_timestamp_seconds", "Time of the last commit", registry=r
        )
        self.offset_out_of_range = Counter(
            "capaep_offset_out_of_range", "Committed offsets overtaken by retention", registry=r
        )
        self.consumer_lag = Gauge(
            "capaep_consumer_lag",
            "Records between the committed offset and the end of the partition (librdkafka "
            "statistics)",
            ["topic", "partition"],
            registry=r,
        )
        self.oldest_unfinished_age = Gauge(
            "capaep_oldest_unfinished_age_seconds",
            "Age (since its Kafka timestamp) of the oldest record consumed but not finished",
            ["topic", "partition"],
            registry=r,
        )
        # -- Kafka credentials --------------------------------------------------------------------
        self.kafka_auth_failures = Counter(
            "capaep_kafka_auth_failures", "Kafka SASL authentication failures", ["client"],
            registry=r,
        )
        self.kafka_credential_reloads = Counter(
            "capaep_kafka_credential_reloads",
            "SASL passwords re-read from their file and handed to a client",
            registry=r,
        )
        # -- latency ------------------------------------------------------------------------------
        self.e2e_latency = Histogram(
            "capaep_end_to_end_seconds",
            "From the event's time (since=event_created: Capillary createdAt; "
            "since=kafka_append: the Kafka timestamp) to AEP acceptance",
            ["event", "since"],
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.timestamps_clamped = Counter(
            "capaep_timestamps_clamped",
            "ExperienceEvent timestamps beyond now + mapping.max_future_skew_s, clamped",
            registry=r,
        )
        self._tokens = _TokenCollector()
        r.register(self._tokens)
        self._accepted: dict[tuple[str, str], tuple[Counter, Histogram, Histogram]] = {}
        self._lag_series: set[TP] = set()
        self._age_series: set[TP] = set()

    # -- wiring ----------------------------------------------------------------------------

    def watch_tokens(self, *sources: TokenCounters) -> None:
        """The token providers (one per credential set) whose counters are exported."""
        self._tokens.sources = sources

    # -- hot path ---------------------------------------------------------------------------

    def accepted(
        self, event: str, target: str, now_s: float, created_ms: int | None,
        appended_ms: int | None,
    ) -> None:
        """One record accepted by AEP for one target."""
        key = (event, target)
        children = self._accepted.get(key)
        if children is None:
            children = self._accepted[key] = (
                self.delivered.labels(event, target),
                self.e2e_latency.labels(event, SINCE_EVENT),
                self.e2e_latency.labels(event, SINCE_APPEND),
            )
        delivered, since_event, since_append = children
        delivered.inc()
        if created_ms is not None:
            since_event.observe(max(now_s - created_ms / 1000, 0.0))
        if appended_ms is not None:
            since_append.observe(max(now_s - appended_ms / 1000, 0.0))

    # -- per-partition gauges ----------------------------------------------------------------

    def set_lags(self, lags: Mapping[TP, int]) -> None:
        """Replace the lag series (partitions no longer assigned disappear)."""
        self._lag_series = _replace(self.consumer_lag, self._lag_series, lags)

    def set_unfinished_ages(self, ages: Mapping[TP, float]) -> None:
        self._age_series = _replace(self.oldest_unfinished_age, self._age_series, ages)

    # -- reading (summaries and tests) ----------------------------------------------------------

    def total(self, counter: Counter) -> float:
        """Sum of a counter over all its label values."""
        value = 0.0
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    value += sample.value
        return value

    def by_label(self, counter: Counter, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    key = sample.labels.get(label, "")
                    out[key] = out.get(key, 0.0) + sample.value
        return out


def _replace(gauge: Gauge, previous: set[TP], values: Mapping[TP, float]) -> set[TP]:
    for tp in previous - set(values):
        gauge.remove(tp[0], str(tp[1]))
    for (topic, partition), value in values.items():
        gauge.labels(topic, str(partition)).set(value)
    return set(values)


def metric_names(metrics: Metrics) -> Iterable[str]:
    """Every sample name the registry can expose (for the alert and dashboard checks)."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
    }
    for family in metrics.registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            yield family.name + suffix
