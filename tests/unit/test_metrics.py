"""The worker's metrics as Prometheus reads them: names, labels, histogram consistency, and
the per-record path (plain Python, exported at scrape) agreeing with prometheus_client."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from worker.metrics import _E2E_BUCKETS, Metrics, metric_names


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_accepted_records_and_latency_match_a_prometheus_histogram() -> None:
    m = Metrics()
    reference = Histogram("ref", "ref", buckets=_E2E_BUCKETS, registry=CollectorRegistry())
    now = 1_800_000_000.0
    ages = [0.0, 0.05, 0.1, 0.1000001, 1, 59.9, 900, 900.5, 50_000, -3]
    for i, age in enumerate(ages):
        target = "events" if i % 2 else "profile"
        m.accepted_store.add("pointsIssued", target, now, int((now - age - 1) * 1000),
                   int((now - age) * 1000))
        reference.observe(max(age, 0.0))
    m.accepted_store.add("tierUpgraded", "events", now, None, None)  # no timestamps: counted only
    got = _samples(m)
    assert got[("capaep_records_delivered_total",
                (("event", "pointsIssued"), ("target", "events")))] == 5
    assert m.total(m.delivered) == len(ages) + 1
    assert m.by_label(m.delivered, "event") == {"pointsIssued": 10, "tierUpgraded": 1}
    ref = {s.labels.get("le"): s.value for f in reference.collect() for s in f.samples
           if s.name == "ref_bucket"}
    for le, value in ref.items():  # same bucket names and counts as prometheus_client's own
        key = ("capaep_end_to_end_seconds_bucket",
               (("event", "pointsIssued"), ("le", le), ("since", "kafka_append")))
        assert got[key] == value, le
    count = got[("capaep_end_to_end_seconds_count",
                 (("event", "pointsIssued"), ("since", "event_created")))]
    assert count == len(ages)
    assert ("capaep_end_to_end_seconds_count",
            (("event", "tierUpgraded"), ("since", "kafka_append"))) in got
    assert got[("capaep_end_to_end_seconds_sum",
                (("event", "pointsIssued"), ("since", "event_created")))] > sum(
        max(a, 0) for a in ages)


def test_scrapes_while_records_are_counted() -> None:
    m = Metrics()
    stop = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            while not stop.is_set():
                generate_latest(m.registry)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=scrape)
    t.start()
    for i in range(20_000):
        m.accepted_store.add(f"e{i % 50}", f"t{i % 7}", 1e9, 0, 0)
    stop.set()
    t.join()
    assert not errors
    assert m.total(m.delivered) == 20_000


def test_partition_series_follow_the_assignment() -> None:
    m = Metrics()
    m.set_lags({("t", 0): 5, ("t", 1): 0})
    m.set_lags({("t", 1): 2})
    lags = {k: v for k, v in _samples(m).items() if k[0] == "capaep_consumer_lag"}
    assert lags == {("capaep_consumer_lag", (("partition", "1"), ("topic", "t"))): 2}


def test_metric_names_are_the_exposed_sample_names() -> None:
    m = Metrics()
    m.accepted_store.add("e", "t", 1e9, 0, 0)
    m.consumed.labels("t").inc()
    exposed = {name for name, _ in _samples(m)}
    assert exposed <= set(metric_names(m))
    assert "capaep_paused_total" not in set(metric_names(m))
