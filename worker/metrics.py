"""Every Prometheus metric the worker exports, on one registry per worker.

Label values are bounded: topic, partition, target and inlet names come from configuration or
the broker's assignment, event names from the routed set (anything else is ``other``), stages,
error classes and kinds, causes and statuses from fixed codes. No ids, no free text.

The per-record path (``accepted_store.add``: one call per record and target) does not use
prometheus_client's Counter and Histogram: each of their updates takes a lock, and a
``labels()`` lookup another, which measured several times the cost of everything else the
worker does per record. Delivered counts and end-to-end latencies are kept in plain integers
on the loop thread (worker/accepted_store.py: a bisect and a few increments) and exported at
scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from worker import __version__
from worker.accepted_store import AcceptedStore
from worker.compiled import build_kind

TP = tuple[str, int]

# No "<name>_created" series: they double the series count and no dashboard or alert reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

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


class _DeliveredCounter(Collector):
    def __init__(self, store: AcceptedStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "capaep_records_delivered", "Records accepted by AEP", labels=["event", "target"]
        )
        for (event, target), s in self._store.snapshot():
            family.add_metric([event, target], s.count)
        yield family


class _LatencyHistogram(Collector):
    def __init__(self, store: AcceptedStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "capaep_end_to_end_seconds",
            "From the event's time (since=event_created: Capillary createdAt; "
            "since=kafka_append: the Kafka timestamp) to AEP acceptance",
            labels=["event", "since"],
        )
        merged: dict[tuple[str, str], tuple[list[int], float]] = {}
        for (event, _target), s in self._store.snapshot():
            for since, counts, total in (
                (SINCE_EVENT, list(s.created), s.created_sum),
                (SINCE_APPEND, list(s.appended), s.appended_sum),
            ):
                prev = merged.get((event, since))
                if prev is None:
                    merged[(event, since)] = (counts, total)
                else:
                    merged[(event, since)] = (
                        [a + b for a, b in zip(prev[0], counts, strict=True)], prev[1] + total
                    )
        names = [repr(b) for b in self._store.bounds] + ["+Inf"]  # "0.1", "1.0": as Go prints
        for (event, since), (counts, total) in sorted(merged.items()):
            cumulative, running = [], 0
            for name, n in zip(names, counts, strict=True):
                running += n
                cumulative.append((name, float(running)))
            family.add_metric([event, since], cumulative, total)
        yield family


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.info = Gauge(
            "capaep_worker_info", "Worker version, and build: mypyc (compiled hot path) or python",
            ["version", "build"], registry=r,
        )
        self.info.labels(__version__, build_kind()).set(1)
        # -- records --------------------------------------------------------------------------
        self.consumed = Counter(
            "capaep_records_consumed", "Records consumed", ["topic"], registry=r
        )
        # Written once per accepted message by the pipeline (accepted_store.add), read here.
        self.accepted_store = AcceptedStore(_E2E_BUCKETS)
        self.delivered = _DeliveredCounter(self.accepted_store)
        r.register(self.delivered)
        self.dead_lettered = Counter(
            "capaep_records_dead_lettered",
            "Records acknowledged by the dead-letter topic",
            ["stage", "error_class", "error_kind"],
            registry=r,
        )
        self.receipts = Counter(
            "capaep_receipts",
            "Delivery receipts: produced (acked by Kafka) or failed (a produce attempt; retried)",
            ["result"],
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
        # -- flow control toward AEP (worker.aep.flow) -----------------------------------------
        self.concurrency_limit = Gauge(
            "capaep_delivery_concurrency_limit",
            "Batch requests allowed in flight now (adaptive: AIMD on AEP's answers)", registry=r,
        )
        self.rate_share = Gauge(
            "capaep_rate_share",
            "This replica's share of the organisation's rate budget (its partitions / total)",
            registry=r,
        )
        self.rate_share_limit = Gauge(
            "capaep_rate_share_per_second",
            "This replica's share of the rate budget: unit messages or requests per second",
            ["unit"], registry=r,
        )
        self.rate_ceiling = Gauge(
            "capaep_rate_enforced_messages_per_second",
            "Messages/s enforced now: the share, or lower once AEP throttled (429)", registry=r,
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
        self.e2e_latency = _LatencyHistogram(self.accepted_store)
        r.register(self.e2e_latency)
        self.timestamps_clamped = Counter(
            "capaep_timestamps_clamped",
            "ExperienceEvent timestamps beyond now + mapping.max_future_skew_s, clamped",
            registry=r,
        )
        self.schema_drift = Gauge(
            "capaep_schema_drift",
            "1 while the route's local XDM schema differs from the Schema Registry's "
            "(aep.schema_drift_interval_s)",
            ["route"],
            registry=r,
        )
        self._tokens = _TokenCollector()
        r.register(self._tokens)
        self._lag_series: set[TP] = set()
        self._age_series: set[TP] = set()

    # -- wiring ----------------------------------------------------------------------------

    def watch_tokens(self, *sources: TokenCounters) -> None:
        """The token providers (one per credential set) whose counters are exported."""
        self._tokens.sources = sources

    # -- per-partition gauges ----------------------------------------------------------------

    def set_lags(self, lags: Mapping[TP, int]) -> None:
        """Replace the lag series (partitions no longer assigned disappear)."""
        self._lag_series = _replace(self.consumer_lag, self._lag_series, lags)

    def set_unfinished_ages(self, ages: Mapping[TP, float]) -> None:
        self._age_series = _replace(self.oldest_unfinished_age, self._age_series, ages)

    # -- reading (summaries and tests) ----------------------------------------------------------

    def total(self, counter: Counter | Collector) -> float:
        """Sum of a counter over all its label values."""
        value = 0.0
        for metric in counter.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    value += sample.value
        return value

    def by_label(self, counter: Counter | Collector, label: str) -> dict[str, float]:
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
