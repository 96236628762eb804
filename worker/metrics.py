"""Every Prometheus metric the worker exports, on one registry per worker.

Label values are bounded: topic and target names come from configuration, event names from
the supported set (anything else is ``other``), stages and error kinds from fixed codes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.consumed = Counter(
            "capaep_records_consumed", "Records consumed", ["topic"], registry=r
        )
        self.delivered = Counter(
            "capaep_records_delivered", "Records accepted by AEP", ["event", "target"], registry=r
        )
        self.dead_lettered = Counter(
            "capaep_records_dead_lettered",
            "Records acknowledged by the dead-letter topic",
            ["stage", "error_kind"],
            registry=r,
        )
        self.filtered = Counter(
            "capaep_records_filtered", "Records deliberately skipped", ["reason"], registry=r
        )
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
        self.retries = Counter("capaep_retries", "Delivery retries", ["cause"], registry=r)
        self.in_flight_records = Gauge(
            "capaep_in_flight_records", "Records consumed, not yet finished", registry=r
        )
        self.in_flight_bytes = Gauge(
            "capaep_in_flight_bytes", "Message bytes held in flight", registry=r
        )
        self.paused = Gauge(
            "capaep_paused", "1 while consumption is paused", ["reason"], registry=r
        )
        self.commits = Counter("capaep_commits", "Offset commits", ["result"], registry=r)
        self.last_commit = Gauge(
            "capaep_last_commit_timestamp_seconds", "Time of the last commit", registry=r
        )
        self.offset_out_of_range = Counter(
            "capaep_offset_out_of_range", "Committed offsets overtaken by retention", registry=r
        )
        self.dlq_guard_tripped = Gauge(
            "capaep_dlq_guard_tripped", "1 once the DLQ guard tripped", registry=r
        )
        self.blocked = Gauge(
            "capaep_delivery_blocked", "1 while AEP configuration/outage blocks delivery",
            registry=r,
        )
        self.e2e_latency = Histogram(
            "capaep_end_to_end_seconds",
            "Kafka append time to AEP acceptance",
            ["event"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.timestamps_clamped = Counter(
            "capaep_timestamps_clamped",
            "ExperienceEvent timestamps beyond now + mapping.max_future_skew_s, clamped",
            registry=r,
        )

    def total(self, counter: Counter) -> float:
        """Sum of a counter over all its label values (summaries and tests)."""
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
